"""The embedded demo: ``kdsr-pdd demo`` (what ``make demo`` runs).

On CPU, in minutes, with data made from photos that scikit-image ships (no download):

1. build the demo data (:mod:`kdsr_pdd.demo_data`);
2. KDSR: train a tiny teacher, then a student by knowledge distillation of the teacher's IDR;
   test the student on a Gaussian8 x4 set;
3. PDD: train a tiny generalist with Real-ESRGAN degradations, adapt it to the demo's "real"
   camera-like domain with PDD-EMA, and test both on that domain (PSNR/SSIM before and after);
4. report: the model table of the demo archs, the results table of the demo's tests, and the IDR
   figure of the KDSR student.

Every step is one of the project's own commands, run from ``--workdir`` (default: the current folder);
the commands are printed so they can be rerun one by one.
"""

import glob
import os
import os.path as osp
import subprocess
import sys

from kdsr_pdd.commands.cli import CommandParser
from kdsr_pdd.logs import load_experiment
from kdsr_pdd.resources import options_dir

OPTIONS = str(options_dir() / 'demo')
TRAIN_STAGES = (  # (title, option file, experiment name)
    ('KDSR teacher', 'kdsr_teacher_x4.yml', 'demo_kdsr_teacher_x4'),
    ('KDSR student (KD)', 'kdsr_student_x4.yml', 'demo_kdsr_student_x4'),
    ('PDD generalist (Real-ESRGAN degradations)', 'pdd_generalist_x4.yml', 'demo_pdd_generalist_x4'),
    ('PDD-EMA specialist', 'pdd_ema_x4.yml', 'demo_pdd_ema_x4'),
)
TESTS = (  # (title, option file, result name)
    ('KDSR teacher (sees HR), Gaussian8 x4', 'test_kdsr_teacher_x4.yml', 'demo_test_kdsr_teacher_x4'),
    ('KDSR student, Gaussian8 x4', 'test_kdsr_student_x4.yml', 'demo_test_kdsr_student_x4'),
    ('generalist on the target domain (before PDD)', 'test_generalist_real_x4.yml', 'demo_test_generalist_real_x4'),
    ('PDD-EMA on the target domain (after PDD)', 'test_pdd_ema_real_x4.yml', 'demo_test_pdd_ema_real_x4'),
)


def _run(args, workdir, env):
    print('$ kdsr-pdd ' + ' '.join(args), flush=True)
    result = subprocess.run([sys.executable, '-m', 'kdsr_pdd'] + args, cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        sys.stdout.write(result.stdout[-6000:])
        sys.exit(f'demo: step failed: kdsr-pdd {" ".join(args)}')
    return result.stdout


def _vgg_environment(workdir):
    """Real VGG19 weights if the user has them; otherwise a clearly announced random stand-in."""
    from kdsr_pdd.weights import WeightsNotFoundError, find_vgg19_weights, random_vgg19_features_file

    env = dict(os.environ)
    try:
        print(f'VGG19 weights: {find_vgg19_weights()}')
    except WeightsNotFoundError:
        stand_in = osp.join(workdir, 'datasets', 'demo', 'vgg19_random_features.pth')
        if not osp.isfile(stand_in):
            random_vgg19_features_file(stand_in)
        env['KDSR_PDD_VGG19'] = stand_in
        print('VGG19 ImageNet weights not found (path.vgg19_weights / KDSR_PDD_VGG19 / torch hub cache):\n'
              f'  the demo uses random-weight VGG19 features ({stand_in}) for the perceptual and PDD\n'
              '  distance losses. Real runs need the real weights; nothing is downloaded.')
    return env


def _length_overrides(iters, option_file):
    """``--force_yml`` entries that shorten a training to ``iters`` iterations (none when ``iters`` is None)."""
    if iters is None:
        return []
    force = [f'train:total_iter={iters}', f'val:val_freq={iters}', f'logger:save_checkpoint_freq={iters}',
             f'logger:print_freq={iters}']
    if option_file == 'pdd_ema_x4.yml':  # PDD distils after net_d_init_iters + distill_warmup_iters (5)
        force.append(f'train:net_d_init_iters={max(iters // 4, 1)}')
    return ['--force_yml', *force]


def _print_metrics(label, folder):
    """One line per dataset with the last validation figures of ``folder``'s newest BasicSR log."""
    for dataset, values in load_experiment(folder).results.items():
        print(f'   {label} [{dataset}]: ' + ', '.join(f'{k} {v:.4f}' for k, v in values.items()))


def main(argv=None):
    parser = CommandParser('demo', description=__doc__.split('\n')[0])
    parser.add_argument('--workdir', default='.', help='where datasets/, experiments/ and results/ go '
                        '(default: the current folder)')
    parser.add_argument('--build-only', action='store_true', help='only build the demo data')
    parser.add_argument('--iters', type=int, default=None,
                        help='override every training length (quick checks; the defaults make the demo)')
    args = parser.parse_args(argv)
    workdir = osp.abspath(args.workdir)
    from kdsr_pdd.demo_data import build_demo_data

    print(f'Building demo data in {osp.join(workdir, "datasets", "demo")} ...', flush=True)
    build_demo_data(osp.join(workdir, 'datasets', 'demo'))
    if args.build_only:
        return
    env = _vgg_environment(workdir)
    for title, option_file, name in TRAIN_STAGES:
        print(f'\n== {title}', flush=True)
        _run(['train', '-opt', osp.join(OPTIONS, option_file)] + _length_overrides(args.iters, option_file), workdir,
             env)
        exp = osp.join(workdir, 'experiments', name)
        _print_metrics('validation', exp)
        print(f'   checkpoint: {osp.join(exp, "models", "net_g_latest.pth")}')

    print('\n== Tests', flush=True)
    for title, option_file, name in TESTS:
        _run(['test', '-opt', osp.join(OPTIONS, option_file)], workdir, env)
        _print_metrics(title, osp.join(workdir, 'results', name))
        print(f'   SR images: {osp.join(workdir, "results", name, "visualization")}')

    print('\n== Report, tables, figure', flush=True)
    out = osp.join(workdir, 'results', 'demo_report')
    os.makedirs(out, exist_ok=True)
    _run(['report', '--options-glob', osp.join(OPTIONS, '*.yml'), '--lr-size', '45x80',
          '--out', osp.join(out, 'models.md')], workdir, env)
    results = [osp.join(workdir, 'results', name) for _, _, name in TESTS]
    tables = (  # (result folders, row labels, extra options, output name)
        (results[:2], ['KDSR teacher', 'KDSR student'], ['--average-by-prefix'], 'kdsr_gaussian8'),
        (results[2:], ['generalist', 'PDD-EMA'], [], 'pdd_target_domain'),
    )
    for folders, labels, extra, table in tables:
        _run(['tables'] + folders + ['--labels'] + labels + ['--metrics', 'psnr', 'ssim'] + extra +
             ['--out', osp.join(out, table)], workdir, env)
    _run(['figures', 'idr', '--opt', osp.join(OPTIONS, 'kdsr_student_x4.yml'), '--model',
          osp.join(workdir, 'experiments', 'demo_kdsr_student_x4', 'models', 'net_g_latest.pth'), '--hr',
          osp.join(workdir, 'datasets', 'demo', 'val', 'hr'), '--scale', '4', '--out',
          osp.join(out, 'kdsr_student_idr_pca.png')], workdir, env)
    for path in sorted(glob.glob(osp.join(out, '*'))):
        print(f'   {path}')
    for table in ('models', 'kdsr_gaussian8', 'pdd_target_domain'):
        print('\n' + open(osp.join(out, f'{table}.md'), encoding='utf-8').read())


if __name__ == '__main__':
    main()
