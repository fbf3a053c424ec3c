"""Shared command-line plumbing: check an option file before BasicSR reads it.

BasicSR answers a wrong path deep inside a worker process; here a missing option file, an
unreadable YAML or a missing data folder / pretrained checkpoint ends the run with one line that
names the option to fix.
"""
import argparse
import os.path as osp
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


def check_option_file(opt_path):
    """Read ``opt_path`` and check that every input path it names exists; raise OptionError if not."""
    if not osp.isfile(opt_path):
        raise OptionError(f'-opt {opt_path}: no such option file.')
    try:
        with open(opt_path, encoding='utf-8') as f:
            opt = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise OptionError(f'-opt {opt_path}: not valid YAML ({err}).') from err
    if not isinstance(opt, dict):
        raise OptionError(f'-opt {opt_path}: expected a mapping of options at the top level.')
    for name, path in _walk_paths(opt):
        if not osp.exists(path):
            raise OptionError(f'{opt_path}: {name} = {path!r} does not exist; '
                              'set it to your local copy (see README, "Data and weights").')
    return opt


def run_pipeline(pipeline, root_path):
    """Check the ``-opt`` file named on the command line, then run a BasicSR pipeline."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt', type=str)
    known, _ = parser.parse_known_args()
    if known.opt is None:
        sys.exit('error: -opt OPTIONS.yml is required (see options/ for examples).')
    try:
        check_option_file(known.opt)
    except OptionError as err:
        sys.exit(f'error: {err}')
    pipeline(root_path)
    _leave_process_group()


def _leave_process_group():
    """End a torch.distributed run in step: a rank that exits while another still saves can abort."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
