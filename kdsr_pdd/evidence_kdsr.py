"""KDSR evidence study: does the IDR encode the blur? (``run_kdsr(workdir, threads, iters)``).

On CPU and from photos that scikit-image ships (no download), every training / test one of the project's own
commands run by :class:`kdsr_pdd.recipes.Recipe`:

1. the study data (:func:`build_kdsr_data`): 11 training photos, 6 held-out photos (never trained on) and their
   Gaussian8 x4 set;
2. the recipe of ``options/evidence/kdsr/``: a tiny KDSR teacher trained long enough for its IDR to leave the
   content-only plateau (28k iterations), a student distilled from it (20k iterations of encoder-only KD
   warm-up at lr 1e-3, then 4k of joint L1 + KD) and the same student without KD (the ablation: KD weight 0, the
   same 24k iterations end to end with L1, since the warm-up's only loss is the KD term);
3. every saved checkpoint probed on the held-out photos (:mod:`kdsr_pdd.idr_probe`: leave-one-photo-out
   ridge R^2 of sigma from the IDR, within/between variation ratio, student-teacher cosine), the final
   models tested on Gaussian8;
4. ``results/evidence_kdsr/README.md``: the probe curves, the targets and whether each was reached, the
   thread count, versions and time; ``probe.json`` the numbers.
"""
import os
import os.path as osp

import cv2

from kdsr_pdd.demo_data import read_shipped_photo

TRAIN_PHOTOS = ('rocket.jpg', 'hubble_deep_field.jpg', 'motorcycle_left.png', 'motorcycle_right.png', 'ihc.png',
                'retina.jpg', 'brick.png', 'gravel.png', 'moon.png', 'cell.png', 'page.png')
HELDOUT_PHOTOS = ('coffee.png', 'chelsea.png', 'astronaut.png', 'camera.png', 'coins.png', 'grass.png')
SCALE = 4
HELDOUT_SIZE = 256  # held-out photos: centre crop of at most this size (a multiple of SCALE)
DATA = osp.join('datasets', 'evidence_kdsr')


def load_photo(name):
    """uint8 BGR of a shipped photo (gray replicated to 3 channels), halved with area interpolation unless its
    short side is under 256 px."""
    img = read_shipped_photo(name)
    h, w = img.shape[:2]
    if min(h, w) >= 256:
        img = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return img


def heldout_photo(name):
    """The held-out photo as the study uses it: centre crop to at most HELDOUT_SIZE px, a multiple of SCALE."""
    img = load_photo(name)
    h, w = img.shape[:2]
    ch, cw = min(h, HELDOUT_SIZE) // SCALE * SCALE, min(w, HELDOUT_SIZE) // SCALE * SCALE
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw]


def build_kdsr_data(root=DATA):
    """Write ``root``/train_hr/*.bmp (the training photos; BMP decodes ~30x faster than PNG, and the HR dataset
    decodes a whole photo per sample), heldout_hr/*.png and heldout_g8/ (their Gaussian8 x4 set); return root.

    Deterministic: building twice writes the same bytes.
    """
    from kdsr_arch.benchmarks import build_gaussian8

    os.makedirs(osp.join(root, 'train_hr'), exist_ok=True)
    os.makedirs(osp.join(root, 'heldout_hr'), exist_ok=True)
    for photo in TRAIN_PHOTOS:
        cv2.imwrite(osp.join(root, 'train_hr', osp.splitext(photo)[0] + '.bmp'), load_photo(photo))
    for photo in HELDOUT_PHOTOS:
        cv2.imwrite(osp.join(root, 'heldout_hr', osp.splitext(photo)[0] + '.png'), heldout_photo(photo))
    build_gaussian8(osp.join(root, 'heldout_hr'), osp.join(root, 'heldout_g8'), SCALE)
    return root


# --- the recipe -------------------------------------------------------------------------------------------------

TRAININGS = (  # (key, title, option file, experiment name)
    ('teacher', 'KDSR teacher (encoder sees LR + HR), L1', 'teacher_x4.yml', 'evidence_kdsr_teacher_x4'),
    ('student', 'KDSR student: encoder-only KD warm-up (lr 1e-3), then joint L1 + KD', 'student_x4.yml',
     'evidence_kdsr_student_x4'),
    ('student_nokd', 'No-KD student (ablation): KD weight 0, the same length trained end to end with L1',
     'student_nokd_x4.yml', 'evidence_kdsr_student_nokd_x4'),
)
TESTS = (  # (key, table row, option file, result name)
    ('teacher', 'KDSR teacher (sees the HR)', 'test_teacher_x4.yml', 'evidence_kdsr_test_teacher_x4'),
    ('student', 'KDSR student', 'test_student_x4.yml', 'evidence_kdsr_test_student_x4'),
    ('student_nokd', 'No-KD student', 'test_student_nokd_x4.yml', 'evidence_kdsr_test_student_nokd_x4'),
)
LABELS = {'teacher': 'teacher', 'student': 'KD student', 'student_nokd': 'no-KD student'}
TARGETS = (  # (run, quantity, threshold, description): reached when the final checkpoint's value >= threshold
    ('teacher', 'r2', 0.9, 'teacher R² (held-out ridge probe of sigma from the IDR)'),
    ('student', 'r2', 0.8, 'KD student R²'),
    ('student', 'cosine', 0.9, 'KD student-teacher cosine'),
)
PROBE_SIGMAS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
PROBE_CROP = 128  # every held-out photo gives a 2x2 grid of crops of this size
REPORT = osp.join('results', 'evidence_kdsr')


def _options():
    from kdsr_pdd.resources import options_dir

    return options_dir() / 'evidence' / 'kdsr'


def _option(option_file):
    from kdsr_pdd.schema import read_option_file

    return read_option_file(str(_options() / option_file))


def _final_checkpoint(workdir, name, iters):
    return osp.join(workdir, 'experiments', name, 'models', f'net_g_{iters}.pth')


# --- the probe --------------------------------------------------------------------------------------------------

def probe_items():
    """``[(name, hr [3, 128, 128] RGB float in [0, 1])]``: 2x2 grid crops of every held-out photo, and the
    photo id [n_items] of each."""
    import numpy as np
    import torch

    items, photo_ids = [], []
    for index, photo in enumerate(HELDOUT_PHOTOS):
        img = load_photo(photo)[..., ::-1]
        h, w = img.shape[:2]
        for k, (top, left) in enumerate((t, left) for t in np.linspace(0, h - PROBE_CROP, 2).round().astype(int)
                                        for left in np.linspace(0, w - PROBE_CROP, 2).round().astype(int)):
            crop = np.ascontiguousarray(img[top:top + PROBE_CROP, left:left + PROBE_CROP]).astype(np.float32) / 255.
            items.append((f'{osp.splitext(photo)[0]}#{k}', torch.from_numpy(crop).permute(2, 0, 1).contiguous()))
            photo_ids.append(index)
    return items, np.asarray(photo_ids)


def checkpoints(experiment):
    """``[(iteration, path)]`` of ``experiment``/models/net_g_<iteration>.pth, sorted."""
    import re

    models = osp.join(experiment, 'models')
    found = []
    for name in os.listdir(models) if osp.isdir(models) else []:
        match = re.fullmatch(r'net_g_(\d+)\.pth', name)
        if match:
            found.append((int(match.group(1)), osp.join(models, name)))
    return sorted(found)


def _network(option_file, path):
    from kdsr_arch.archs import KDSRStudent, KDSRTeacher
    from kdsr_pdd.checkpoints import load_weights

    opt = dict(_option(option_file)['network_g'])
    net = {'KDSRTeacher': KDSRTeacher, 'KDSRStudent': KDSRStudent}[opt.pop('type')](**opt)
    load_weights(net, path, 'params')
    return net.eval()


def probe_runs(workdir, keys=('teacher', 'student', 'student_nokd')):
    """Probe every checkpoint of the trainings ``keys`` on the held-out photos.

    Returns ``{'runs': {key: [{'iter', 'r2', 'ratio'[, 'cosine']}]}, 'constant_cosine': float}``: R² is
    :func:`kdsr_pdd.idr_probe.loo_ridge_r2` (leave-one-photo-out), ratio :func:`variation_ratio` (content = crop),
    cosine :func:`mean_cosine` of a student's IDRs to those of the teacher's final checkpoint;
    ``constant_cosine`` is the cosine that the constant mean teacher IDR reaches (the floor that makes a cosine
    alone weak evidence).
    """
    import numpy as np

    from kdsr_pdd.commands.figures import compute_idrs
    from kdsr_pdd.idr_probe import loo_ridge_r2, mean_cosine, variation_ratio

    items, photo_of_item = probe_items()
    files = {key: (option_file, name) for key, _, option_file, name in TRAININGS}
    teacher_idrs = None
    out = {'runs': {}, 'constant_cosine': None}
    for key in ('teacher', *[k for k in keys if k != 'teacher']):
        option_file, name = files[key]
        rows = []
        found = checkpoints(osp.join(workdir, 'experiments', name))
        for iteration, path in found:
            samples = compute_idrs(_network(option_file, path), items, list(PROBE_SIGMAS), SCALE)
            row = {'iter': iteration,
                   'r2': loo_ridge_r2(samples.idrs, samples.sigmas, photo_of_item[samples.image_index]).r2,
                   'ratio': variation_ratio(samples.idrs, samples.image_index)}
            if key == 'teacher':
                teacher_idrs = samples.idrs
            elif teacher_idrs is not None:
                row['cosine'] = mean_cosine(samples.idrs, teacher_idrs)
            rows.append(row)
            print(f'   probe {LABELS[key]} iter {iteration}: ' +
                  ', '.join(f'{k} {v:.4g}' for k, v in row.items() if k != 'iter'), flush=True)
        if key == 'teacher' and teacher_idrs is not None:
            out['constant_cosine'] = mean_cosine(np.tile(teacher_idrs.mean(axis=0), (len(teacher_idrs), 1)),
                                                 teacher_idrs)
        if key in keys:
            out['runs'][key] = rows
    return out


# --- the README -------------------------------------------------------------------------------------------------

def _final(runs, key):
    rows = runs.get(key) or []
    return rows[-1] if rows else None


def target_verdicts(probe):
    """``[(description, threshold, value or None, reached)]`` of :data:`TARGETS` at the final checkpoints."""
    verdicts = []
    for key, quantity, threshold, description in TARGETS:
        final = _final(probe['runs'], key)
        value = None if final is None else final.get(quantity)
        verdicts.append((description, threshold, value, value is not None and value >= threshold))
    return verdicts


def _number(value, digits=3):
    if value is None:
        return '-'
    return f'{value:.2e}' if value != 0 and abs(value) < 10 ** -digits else f'{value:.{digits}f}'


def curve_table(probe):
    """Markdown table: iteration x (R², ratio[, cosine]) of every probed run."""
    keys = [key for key, *_ in TRAININGS if key in probe['runs']]
    iterations = sorted({row['iter'] for key in keys for row in probe['runs'][key]})
    header = ['iteration']
    for key in keys:
        header += [f'{LABELS[key]} R²', f'{LABELS[key]} ratio'] + ([f'{LABELS[key]} cosine'] if key != 'teacher'
                                                                    else [])
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '--:|' * len(header)]
    for iteration in iterations:
        cells = [f'{iteration:,}']
        for key in keys:
            row = next((r for r in probe['runs'][key] if r['iter'] == iteration), {})
            cells += [_number(row.get('r2')), '-' if row.get('ratio') is None else f'{row["ratio"]:.3g}']
            if key != 'teacher':
                cells.append(_number(row.get('cosine')))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def _target_lines(probe):
    """Markdown lines: the targets and whether each was reached, the cosine floor, the no-KD ablation."""
    verdicts = target_verdicts(probe)
    lines = ['## Targets (final checkpoints)', '', '| quantity | target | value | reached |', '|:--|--:|--:|:--|']
    for description, threshold, value, reached in verdicts:
        lines.append(f'| {description} | >= {threshold} | {_number(value)} | '
                     f'{"yes" if reached else ("not run" if value is None else "**no**")} |')
    lines += ['', f'All targets reached: **{"yes" if all(v[3] for v in verdicts) else "no"}**.', '']
    constant = probe.get('constant_cosine')
    if constant is not None:
        student = _final(probe['runs'], 'student')
        lines += [f'A cosine alone is weak evidence: the constant mean teacher IDR (no information at all, R² <= 0) '
                  f'reaches cosine {constant:.3f} on the same probe set'
                  + (' and would pass the cosine target by itself.' if constant >= 0.9 else '.')]
        if student is not None and student.get('cosine') is not None:
            above = student['cosine'] > constant
            lines.append(f'The KD student\'s cosine {student["cosine"]:.3f} is {"above" if above else "**not** above"} '
                         'that constant baseline.')
        lines.append('')
    nokd = _final(probe['runs'], 'student_nokd')
    if nokd is not None:
        lines += [f'Ablation, no-KD student at its final checkpoint: R² {_number(nokd["r2"])}, cosine '
                  f'{_number(nokd.get("cosine"))} (no target; the KD student\'s gain over it is what the '
                  'distillation does).', '']
    return lines


def _step_lines(steps):
    """Markdown lines: the steps' table and what "reused" means."""
    lines = ['## Steps', '', '| step | command | wall s | CPU s |', '|:--|:--|--:|--:|']
    for title, command, wall, cpu, reused in steps:
        lines.append(f'| {title} | `{command}` | {"reused" if reused else f"{wall:.0f}"} | '
                     f'{"reused" if reused else f"{cpu:.0f}"} |')
    if any(step[4] for step in steps):
        lines += ['', '"reused": the training\'s final checkpoint (and its `net_g_latest.pth`) was already in the work '
                  'folder\'s `experiments/`, so it was not run again here; where it came from is in the logs and the '
                  'option file kept in that experiment folder.']
    return lines


def readme_text(probe, psnr, steps, environment, elapsed):
    """The README of the study.

    Args:
        probe: :func:`probe_runs`'s result.
        psnr: ``{key: mean Gaussian8 PSNR}`` of the final models (missing keys: not tested).
        steps: ``[(title, command, wall s, CPU s, reused)]`` of the trainings and tests.
        environment: markdown lines (thread count, versions, machine).
        elapsed: ``(wall s, CPU s)`` of the whole study (its steps and the probe).
    """
    lines = ['# KDSR evidence: does the IDR encode the blur? (written by `kdsr_pdd.evidence_kdsr.run_kdsr`)', '',
             'A tiny KDSR teacher (its encoder sees LR + HR), a student distilled from it (encoder-only KD warm-up, '
             'then joint L1 + KD) and the same student without KD, trained with the project\'s `train` command on '
             f'{len(TRAIN_PHOTOS)} scikit-image photos (`options/evidence/kdsr/`), probed on '
             f'{len(HELDOUT_PHOTOS)} held-out photos that no training uses ({", ".join(HELDOUT_PHOTOS)}).', '',
             *_target_lines(probe)]
    lines += ['## Probe curves (every saved checkpoint)', '', *curve_table(probe), '',
              f'- **R²**: leave-one-photo-out ridge probe of sigma from the 4C IDR (`kdsr_pdd.idr_probe.loo_ridge_r2`; '
              'standardised on the training folds, alpha by nested leave-one-photo-out CV), pooled over the held-out '
              f'predictions. Probe set: each held-out photo (halved) gives a 2x2 grid of {PROBE_CROP}x{PROBE_CROP} '
              f'HR crops, each blurred with sigma in {{{", ".join(f"{s:g}" for s in PROBE_SIGMAS)}}} (isotropic '
              '21x21), bicubic x4, 8-bit (`compute_idrs`).',
              '- **ratio**: within-crop variance of the IDR across sigma over the variance of the per-crop mean IDRs '
              '(`variation_ratio`): << 1, the IDR encodes the photo; > 1, it follows the blur.',
              '- **cosine**: mean cosine of the student\'s IDR to the final teacher\'s, paired rows (`mean_cosine`).',
              '']
    if psnr:
        lines += ['## Gaussian8 x4 PSNR of the final models', '',
                  '| model | PSNR (Y, 4-px border, mean of the 8 kernel widths) |', '|:--|--:|']
        lines += [f'| {row} | {psnr[key]:.2f} |' for key, row, *_ in TESTS if key in psnr]
        lines += ['', f'Gaussian8 of the held-out photos (centre crops <= {HELDOUT_SIZE} px), `kdsr-pdd test`. '
                  'The teacher is given the HR: an upper bound for the students.', '']
    lines += _step_lines(steps)
    lines += ['', '## What the figures depend on', '', *environment,
              f'- time: {elapsed[0] / 60:.1f} min wall, {elapsed[1] / 60:.1f} min CPU (steps and probe)', '']
    return '\n'.join(lines)


# --- the runner -------------------------------------------------------------------------------------------------

def _timed_run(recipe, steps, title, *args):
    """Run one step; append ``(title, command, wall s, CPU s, reused=False)`` (the recipe's timing) to ``steps``."""
    from kdsr_pdd.recipes import command_line

    recipe.run(*args)
    _, wall, cpu = recipe.timings[-1]
    steps.append((title, command_line(*args), wall, cpu, False))


def _mean_psnr(workdir, name):
    from kdsr_pdd.logs import load_experiment

    results = load_experiment(osp.join(workdir, 'results', name)).results
    return sum(values['psnr'] for values in results.values()) / len(results)


def run_kdsr(workdir, threads, iters):
    """The ``kdsr`` evidence study (module docstring) in ``workdir`` with ``threads`` threads; ``iters``
    shortens every training (quick checks; None: the recipe's lengths). A training whose final checkpoint is
    already in ``workdir`` is reused (its command printed, not run). Returns the README's path."""
    import json
    import time

    import torch

    from kdsr_pdd.recipes import Recipe, children_cpu_seconds, command_line, length_overrides

    start_wall, start_cpu = time.time(), time.process_time() + children_cpu_seconds()
    print(f'Building the study data in {osp.join(workdir, DATA)} ...', flush=True)
    build_kdsr_data(osp.join(workdir, DATA))
    recipe = Recipe(workdir, osp.join(workdir, REPORT), threads)
    out, steps = recipe.report_dir, []
    for key, title, option_file, name in TRAININGS:
        print(f'\n== {title}', flush=True)
        option = _option(option_file)
        args = ('train', '-opt', _options() / option_file,
                *length_overrides(iters, _options() / option_file, checkpoints=4))
        final = _final_checkpoint(workdir, name, iters or option['train']['total_iter'])
        if osp.isfile(final) and osp.isfile(osp.join(osp.dirname(final), 'net_g_latest.pth')):
            print(f'   reused: {final} exists (the command would be: {command_line(*args)})')
            steps.append((title, command_line(*args), 0.0, 0.0, True))
        else:
            _timed_run(recipe, steps, title, *args)
    print('\n== Gaussian8 tests of the final models', flush=True)
    psnr = {}
    for key, row, option_file, name in TESTS:
        _timed_run(recipe, steps, f'test: {row}', 'test', '-opt', _options() / option_file)
        psnr[key] = _mean_psnr(workdir, name)
    print('\n== Probing every checkpoint on the held-out photos', flush=True)
    torch.set_num_threads(threads)
    probe = probe_runs(workdir)
    with open(osp.join(out, 'probe.json'), 'w', encoding='utf-8') as f:
        json.dump({**probe, 'gaussian8_psnr': psnr}, f, indent=1)
    elapsed = (time.time() - start_wall, time.process_time() + children_cpu_seconds() - start_cpu)
    readme = osp.join(out, 'README.md')
    with open(readme, 'w', encoding='utf-8') as f:
        f.write(readme_text(probe, psnr, steps, recipe.environment(), elapsed))
    print('\n' + open(readme, encoding='utf-8').read())
    return readme
