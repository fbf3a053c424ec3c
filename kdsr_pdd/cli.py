"""Shared command-line plumbing of the plugin's entry points.

* :func:`run_pipeline` checks an option file (with ``--force_yml`` applied) before BasicSR reads it:
  BasicSR answers a wrong path deep inside a worker process; here a missing option file, an
  unreadable YAML or a missing data folder / pretrained checkpoint ends the run with one line that
  names the option to fix.
* :func:`read_yaml_mapping`, :func:`arch_class` / :func:`instantiate_arch` and :func:`parse_size`
  serve the other commands (infer, export, report, figures) with the same clear errors.
"""
import argparse
import os.path as osp
import re
import sys

import yaml


class OptionError(ValueError):
    """An option file or one of its values that cannot work; the message names the option."""


def _walk_paths(opt):
    """Yield (dotted option name, path) for every data root, meta-info file and pretrained checkpoint."""
    for phase, dataset in (opt.get('datasets') or {}).items():
        for key, value in (dataset or {}).items():
            if (key.startswith('dataroot') or key in ('meta_info', 'meta_info_file')) and isinstance(value, str):
                yield f'datasets.{phase}.{key}', value
    for key, value in (opt.get('path') or {}).items():
        if (key.startswith('pretrain_') or key == 'vgg19_weights') and isinstance(value, str):
            yield f'path.{key}', value


def read_yaml_mapping(path):
    """The top-level mapping of the YAML file ``path``; OptionError if missing, unreadable or not a mapping."""
    if not osp.isfile(path):
        raise OptionError(f'{path}: no such option file.')
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise OptionError(f'{path}: cannot read it as YAML ({err}).') from err
    if not isinstance(opt, dict):
        raise OptionError(f'{path}: expected a mapping of options at the top level.')
    return opt


def arch_class(network_opt, source='network_g', error=OptionError):
    """The registered arch class of a ``network_g``-style mapping (BasicSR's ``_basicsr`` names too)."""
    from basicsr.utils.registry import ARCH_REGISTRY

    if not isinstance(network_opt, dict) or 'type' not in network_opt:
        raise error(f'{source}: expected a mapping with a type.')
    arch_type = network_opt['type']
    for name in (arch_type, f'{arch_type}_basicsr'):
        if name in ARCH_REGISTRY:
            return ARCH_REGISTRY.get(name)
    raise error(f'{source}: network type {arch_type!r} is not a registered arch.')


def instantiate_arch(network_opt, source='network_g', error=OptionError):
    """Build the arch of a ``network_g``-style mapping; ``error`` names ``source`` when it cannot."""
    cls = arch_class(network_opt, source, error)
    kwargs = {k: v for k, v in network_opt.items() if k != 'type'}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise error(f'{source}: bad arguments for {network_opt["type"]}: {err}') from err


def parse_size(text):
    """argparse type: ``'180x320'`` -> (180, 320)."""
    match = re.fullmatch(r'(\d+)x(\d+)', text)
    if not match or 0 in (int(match.group(1)), int(match.group(2))):
        raise argparse.ArgumentTypeError(f'expected HEIGHTxWIDTH with positive integers, e.g. 180x320, got {text!r}')
    return int(match.group(1)), int(match.group(2))


def apply_overrides(opt, entries):
    """Apply BasicSR's ``--force_yml key:sub=value`` entries to ``opt`` (its own value parsing)."""
    from basicsr.utils.options import _postprocess_yml_value

    for entry in entries or ():
        keys, sep, value = entry.partition('=')
        if not sep:
            raise OptionError(f'--force_yml {entry}: expected key:sub=value.')
        *parents, last = keys.strip().split(':')
        target = opt
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = _postprocess_yml_value(value.strip())
    return opt


def check_option_file(opt_path, overrides=None):
    """Read ``opt_path`` (with ``--force_yml`` ``overrides``) and check that every input path it names
    exists; raise OptionError if not."""
    opt = apply_overrides(read_yaml_mapping(opt_path), overrides)
    for name, path in _walk_paths(opt):
        if not osp.exists(path):
            raise OptionError(f'{opt_path}: {name} = {path!r} does not exist; '
                              'set it to your local copy (see README, "Data and weights").')
    return opt


def run_pipeline(pipeline, root_path):
    """Check the ``-opt`` file named on the command line, then run a BasicSR pipeline."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt', type=str)
    parser.add_argument('--force_yml', nargs='+', default=None)
    known, _ = parser.parse_known_args()
    if known.opt is None:
        sys.exit('error: -opt OPTIONS.yml is required (see options/ for examples).')
    try:
        check_option_file(known.opt, known.force_yml)
    except OptionError as err:
        sys.exit(f'error: -opt {err}')
    pipeline(root_path)
    _leave_process_group()


def _leave_process_group():
    """End a torch.distributed run in step: a rank that exits while another still saves can abort."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
