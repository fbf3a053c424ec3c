"""Running a recipe (the demo, an evidence study) as a sequence of the project's own commands.

Each step is ``kdsr-pdd <command> ...`` in a subprocess of the same Python, run from the work folder with a
fixed thread count (results are bit-identical only at a fixed thread count), its output streamed live and kept
in ``<report>/steps/NN_<command>.log``. A failing step stops the recipe with one line naming the step and its log.
"""
import os
import os.path as osp
import platform
import shlex
import subprocess
import sys
from importlib import metadata


class RecipeError(RuntimeError):
    """A step of a recipe failed; the message names the step and where its output is."""


class Recipe:
    """Steps of one recipe run in ``workdir``, logs and the environment note under ``report_dir``.

    Args:
        workdir: where datasets/, experiments/ and results/ go (the steps' working folder).
        report_dir: where the step logs and the written tables go.
        threads: OMP_NUM_THREADS / torch threads of every step.
        env: extra environment variables of every step (e.g. the VGG19 stand-in).
    """

    def __init__(self, workdir, report_dir, threads, env=None):
        self.workdir, self.report_dir, self.threads = workdir, report_dir, threads
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), **(env or {}))
        self.steps = 0
        os.makedirs(osp.join(report_dir, 'steps'), exist_ok=True)

    def run(self, *args):
        """Run ``kdsr-pdd <args>``, streaming its output (indented) and logging it; RecipeError if it fails."""
        self.steps += 1
        log_path = osp.join(self.report_dir, 'steps', f'{self.steps:02d}_{args[0]}.log')
        command = shlex.join(['kdsr-pdd', *map(str, args)])  # printed so that it can be pasted into a shell
        print(f'$ {command}', flush=True)
        with open(log_path, 'w', encoding='utf-8') as log, subprocess.Popen(
                [sys.executable, '-m', 'kdsr_pdd', *map(str, args)], cwd=self.workdir, env=self.env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as process:
            for line in process.stdout:
                log.write(line)
                sys.stdout.write('    ' + line)
                sys.stdout.flush()
        if process.returncode != 0:
            raise RecipeError(f'step {self.steps} failed (exit {process.returncode}): {command}; '
                              f'its output: {log_path}')

    def environment(self):
        """Markdown lines: what the figures depend on (thread count, versions, CPU / GPU)."""
        versions = ', '.join(f'{name} {_version(name)}' for name in ('torch', 'torchvision', 'basicsr', 'numpy',
                                                                       'opencv-python', 'scikit-image', 'kdsr-pdd'))
        import torch
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device (CPU)'
        return [f'- threads: {self.threads} (OMP_NUM_THREADS of every step)',
                f'- Python {platform.python_version()}, {versions}',
                f'- machine: {platform.machine()}, {_cpu_name()}, {os.cpu_count()} CPUs; {device}']


def _version(distribution):
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return 'not installed'


def _cpu_name():
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            return next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), 'CPU')
    except OSError:
        return platform.processor() or 'CPU'
