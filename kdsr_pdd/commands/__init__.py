"""The command-line interface: ``kdsr-pdd <command> ...`` (or ``python -m kdsr_pdd <command> ...``).

Each command is a module of this package with a ``main(argv)``; only the chosen one is imported, and it
imports heavy libraries (BasicSR, pyiqa, onnx, matplotlib) only once its arguments are parsed.
"""
import importlib
import sys

COMMANDS = {
    'train': 'train a model from an option file (BasicSR train_pipeline)',
    'test': 'test a model from an option file (BasicSR test_pipeline)',
    'infer': 'super-resolve image files with a checkpoint',
    'demo': 'the embedded demo: KDSR and PDD end to end on CPU',
    'evidence': 'evidence studies on CPU: pdd (the PDD ablation), kdsr (does the IDR encode the blur)',
    'report': 'parameters, MACs, latency and memory of configured networks',
    'tables': 'paper-style results tables from BasicSR logs',
    'figures': 'figures: fidelity-perception scatter, KDSR IDR analysis',
    'export': 'ONNX export of an SR network',
    'convert': 'ncnn Real-ESRGAN models to BasicSR checkpoints',
    'schema': 'JSON schemas of the option files, for editors',
    'benchmarks': 'write benchmark test sets (Gaussian8, aniso+noise, DRealSR crops)',
    'selfcheck': 'after install: environment, weights, training steps with AMP, inference precision, latency',
}


def _version():
    from kdsr_pdd import __version__
    return __version__


def usage():
    width = max(map(len, COMMANDS))
    lines = ['usage: kdsr-pdd <command> [options]   (kdsr-pdd <command> --help for its options)', '', 'commands:']
    lines += [f'  {name:<{width}}  {text}' for name, text in COMMANDS.items()]
    return '\n'.join(lines)


def main(argv=None):
    """Dispatch ``argv`` (default: sys.argv[1:]) to a command; return its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(usage())
        return 0 if argv else 2
    if argv[0] == '--version':
        print(f'kdsr-pdd {_version()}')
        return 0
    if argv[0] not in COMMANDS:
        from difflib import get_close_matches
        close = get_close_matches(argv[0], COMMANDS, n=1)
        print(f'error: unknown command {argv[0]!r}' + (f'; did you mean {close[0]}?' if close else '') +
              ' (kdsr-pdd --help lists them)', file=sys.stderr)
        return 2
    module = importlib.import_module(f'kdsr_pdd.commands.{argv[0]}')
    return module.main(argv[1:]) or 0
