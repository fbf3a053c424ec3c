"""Plumbing shared by the commands: argument types, one-line errors, and BasicSR's train / test pipelines.

:func:`run_basicsr_pipeline` is what ``kdsr-pdd train`` and ``kdsr-pdd test`` run: it takes BasicSR's own
flags (``-opt``, ``--launcher``, ``--auto_resume``, ``--debug``, ``--local_rank``, ``--force_yml``) plus
``--check`` (validate and stop), reads the option file as BasicSR does, applies ``--force_yml`` with
BasicSR's semantics, validates the result against the model's typed schema, checks the data of every
dataset section (:mod:`kdsr_pdd.data_checks`; every problem of the file and its data, one line each;
nothing is built or written when one is found), and only then hands over to BasicSR's ``train_pipeline``
(through :func:`kdsr_pdd.training.run`: resume, interruptions, non-finite steps, full disks; a run that ends
early prints one line and exits non-zero) / ``test_pipeline``; a data problem found there (a dataset refusing
its files, too many images failing to decode) also ends the run with its one-line messages.
"""
import argparse
import os
import re
import sys

from kdsr_pdd.logs import GAUSSIAN8_SEPARATOR, LogError, average_by_prefix, direction_overrides, load_experiment


class CommandParser(argparse.ArgumentParser):
    """The argument parser of every command: ``prog`` ``kdsr-pdd <command>``, ``--version``, and each long option
    in both spellings (``--tile-pad`` and ``--tile_pad``, as BasicSR and Real-ESRGAN users type them)."""

    def __init__(self, command=None, **kwargs):
        if command is not None:  # sub-command parsers get their prog from argparse
            kwargs['prog'] = f'kdsr-pdd {command}'
        super().__init__(**kwargs)
        from kdsr_pdd import __version__
        self.add_argument('--version', action='version', version=f'kdsr-pdd {__version__}')

    def _spelling(self, token):
        """``token`` with the option name in the spelling this parser knows (unchanged if it knows it)."""
        if not token.startswith('--') or token == '--':
            return token
        name, eq, value = token.partition('=')
        known = self._option_string_actions
        if name in known:
            return token
        for other in (name.replace('_', '-'), '--' + name[2:].replace('-', '_')):
            if other in known:
                return other + eq + value
        return token

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args([self._spelling(a) for a in args], namespace)


def parse_size(text):
    """argparse type: ``'180x320'`` -> (180, 320)."""
    match = re.fullmatch(r'(\d+)x(\d+)', text)
    if not match or 0 in (int(match.group(1)), int(match.group(2))):
        raise argparse.ArgumentTypeError(f'expected HEIGHTxWIDTH with positive integers, e.g. 180x320, got {text!r}')
    return int(match.group(1)), int(match.group(2))


def resolve_device(text, flag='--device'):
    """``--device`` value -> torch.device: ``auto`` is CUDA when available, else CPU; ValueError (one line, naming
    ``flag``) when it is not a usable device here."""
    import torch

    name = ('cuda' if torch.cuda.is_available() else 'cpu') if text == 'auto' else text
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f'{flag} {text}: not a torch device (cpu, cuda, cuda:0, auto)') from None
    if device.type not in ('cpu', 'cuda'):
        raise ValueError(f'{flag} {text}: only cpu and cuda devices are supported')
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'{flag} {text}: CUDA is not available here; use --device cpu')
    if device.type == 'cuda' and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f'{flag} {text}: there are {torch.cuda.device_count()} CUDA devices')
    return device


def positive_int(text):
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text!r}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text}')
    return value


def add_source_arguments(parser):
    """The options of ``tables`` and ``figures scatter`` that select logs and values."""
    parser.add_argument('experiments', nargs='+', help='experiment folders (results/<name>, experiments/<name>) '
                        'or log files')
    parser.add_argument('--labels', nargs='+', help='row labels, one per experiment (default: folder names)')
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument('--last', dest='pick', action='store_const', const='last', default='last',
                      help="each dataset's last validation block (default)")
    pick.add_argument('--best', dest='pick', action='store_const', const='best',
                      help="each metric's best value over the log's validation blocks")
    parser.add_argument('--average-by-prefix', nargs='?', const=GAUSSIAN8_SEPARATOR, metavar='SEP',
                        help=f'average datasets named <prefix>SEP<...> into <prefix> (SEP default '
                        f'{GAUSSIAN8_SEPARATOR!r}: Gaussian8 Set5_sig1.8 ... -> Set5)')
    parser.add_argument('--higher-better', nargs='+', default=[], metavar='METRIC')
    parser.add_argument('--lower-better', nargs='+', default=[], metavar='METRIC')


def load_from_args(args):
    """The experiments and direction overrides named by the :func:`add_source_arguments` options."""
    if args.labels and len(args.labels) != len(args.experiments):
        raise LogError(f'--labels gives {len(args.labels)} labels for {len(args.experiments)} experiments.')
    labels = args.labels or [None] * len(args.experiments)
    overrides = direction_overrides(args.higher_better, args.lower_better)
    experiments = [load_experiment(path, label, args.pick, overrides) for path, label in zip(args.experiments, labels)]
    if args.average_by_prefix:
        experiments = [average_by_prefix(exp, args.average_by_prefix) for exp in experiments]
    return experiments, overrides


def fail(*lines, status=1):
    """Exit with ``error: <line>`` for each line on stderr and ``status`` (1: the message is the SystemExit's)."""
    message = '\n'.join(f'error: {line}' for line in lines)
    if status == 1:
        raise SystemExit(message)
    print(message, file=sys.stderr)
    raise SystemExit(status)


def pipeline_parser(kind):
    """The argument parser of ``train`` / ``test``: BasicSR's flags and ours."""
    parser = CommandParser(
        kind, description=f'{kind.capitalize()} with BasicSR\'s {kind}_pipeline from an option file, after '
        'checking the file against the typed schema of its model_type.')
    parser.add_argument('-opt', '--opt', dest='opt', required=True, metavar='OPTIONS.yml', help='option YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='job launcher (BasicSR): pytorch for torchrun, slurm')
    if kind == 'train':
        parser.add_argument('--auto_resume', action='store_true',
                            help='resume from the newest training state of experiments/<name>')
    parser.add_argument('--debug', action='store_true', help="BasicSR's debug mode (name prefixed with debug_)")
    parser.add_argument('--local_rank', type=int, default=0, help='set by older torch.distributed launchers')
    parser.add_argument('--force_yml', nargs='+', default=None, metavar='KEY:SUB=VALUE',
                        help='override options, e.g. train:total_iter=1000 (BasicSR semantics)')
    parser.add_argument('--check', action='store_true', help='check the option file and stop (nothing is written)')
    return parser


def _basicsr_argv(args, kind):
    argv = [f'kdsr-pdd {kind}', '-opt', args.opt, '--launcher', args.launcher, '--local_rank', str(args.local_rank)]
    if getattr(args, 'auto_resume', False):
        argv.append('--auto_resume')
    if args.debug:
        argv.append('--debug')
    if args.force_yml:
        argv += ['--force_yml', *args.force_yml]
    return argv


def check_pipeline_options(opt_path, overrides, is_train):
    """The typed options of ``opt_path`` with ``--force_yml`` applied; OptionsError listing every problem of
    the file, then of the data of its dataset sections (:func:`kdsr_pdd.data_checks.check_datasets`)."""
    from kdsr_pdd.data_checks import check_datasets
    from kdsr_pdd.schema import OptionsError, apply_force_yml, read_option_file, validate_options

    opt = apply_force_yml(read_option_file(opt_path), overrides, opt_path)
    opt['is_train'] = is_train
    options = validate_options(opt, opt_path, check_paths=True)
    problems = check_datasets(options)
    if problems:
        raise OptionsError(opt_path, problems)
    return options


def run_basicsr_pipeline(kind, argv=None):
    """``kdsr-pdd train|test``: check the option file, then run BasicSR's pipeline on it (see the module doc)."""
    args = pipeline_parser(kind).parse_args(argv)
    import kdsr_pdd.plugin  # noqa: F401  (registers the plugin's parts into BasicSR)
    from kdsr_pdd.schema import OptionsError

    try:
        check_pipeline_options(args.opt, args.force_yml, kind == 'train')
    except OptionsError as err:
        if os.environ.get('RANK', '0') != '0':  # under torchrun every process checks; rank 0 reports
            raise SystemExit(2) from None
        fail(*(f'{err.source}: {problem}' for problem in err.problems), status=2)
    if args.check:
        print(f'{args.opt}: the options are valid.')
        return 0
    sys.argv = _basicsr_argv(args, kind)
    from kdsr_pdd import training
    from kdsr_pdd.data_checks import DataError

    try:
        if kind == 'train':
            training.run(os.getcwd(), args.opt, args.force_yml)  # train_pipeline with kdsr_pdd.training's pieces
        else:
            from basicsr.test import test_pipeline

            test_pipeline(os.getcwd())
    except DataError as err:  # refused when a dataset is built, or too many images failed to decode
        fail(*err.problems, status=2)
    except training.TrainingStopped as stop:
        print(stop, file=sys.stderr)
        raise SystemExit(stop.status) from None
    _leave_process_group()
    return 0


def _leave_process_group():
    """End a torch.distributed run in step: a rank that exits while another still saves can abort."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
