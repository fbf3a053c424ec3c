"""Start-up cost of the commands: ``python benchmarks/startup.py [--repeats N]``.

Runs, interleaved and ``--repeats`` times each (after one warm-up round), in fresh Python processes:

* ``import torch`` and a bare ``import basicsr`` (only the torchvision alias the plugin installs);
* ``import kdsr_arch`` (the KDSR registration);
* ``kdsr-pdd <command> --help`` for every command that does not need BasicSR to answer.

Prints the median wall and CPU time (user + sys of the child) and peak memory of each, and the ratios
the architecture issue sets: each ``--help`` against ``import torch`` (target <= 1.5) and ``import
kdsr_arch`` against the bare ``import basicsr`` (target <= 1.2), both by median CPU time. Use one thread
(``OMP_NUM_THREADS=1``) and an otherwise idle machine; the script sets nothing itself.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

HELP_COMMANDS = ('tables', 'figures', 'infer', 'export', 'report', 'benchmarks', 'convert')


def _cases():
    python = sys.executable
    cases = {'import torch': [python, '-c', 'import torch'],
             'import basicsr (alias only)': [python, '-c', 'import kdsr_pdd, basicsr'],
             'import kdsr_arch': [python, '-c', 'import kdsr_arch']}
    cases.update({f'{command} --help': [python, '-m', 'kdsr_pdd', command, '--help'] for command in HELP_COMMANDS})
    return cases


def _run(argv):
    """(wall s, CPU s, peak RSS MiB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args(argv)
    cases = _cases()
    samples = {name: [] for name in cases}
    for round_ in range(args.repeats + 1):
        for name, command in cases.items():
            result = _run(command)
            if round_:  # the first round warms the file cache
                samples[name].append(result)
    print(f'python {sys.version.split()[0]}, OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}, '
          f'{args.repeats} runs each (medians)')
    print('| command | wall (s) | CPU (s) | ratio (CPU) | target |\n|---|--:|--:|--:|--:|')
    cpu = {name: statistics.median(s[1] for s in runs) for name, runs in samples.items()}
    for name, runs in samples.items():
        if name.endswith('--help'):
            ratio, target = cpu[name] / cpu['import torch'], '<= 1.5 x import torch'
        elif name == 'import kdsr_arch':
            ratio, target = cpu[name] / cpu['import basicsr (alias only)'], '<= 1.2 x import basicsr'
        else:
            ratio, target = None, ''
        cell = f'{ratio:.2f}' if ratio is not None else ''
        print(f'| `{name}` | {statistics.median(s[0] for s in runs):.2f} | {cpu[name]:.2f} | {cell} | {target} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
