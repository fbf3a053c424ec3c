"""The KDSR evidence study's verdicts, README and option files, on fabricated probe numbers (no training)."""
import glob
import os.path as osp

import pytest

from kdsr_pdd import evidence_kdsr as study
from kdsr_pdd.schema import read_option_file, validate_options

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
OPTION_FILES = sorted(glob.glob(osp.join(REPO, 'options', 'evidence', 'kdsr', '*.yml')))


def fabricated(teacher_r2=0.95, student_r2=0.85, cosine=0.97, nokd=True):
    runs = {'teacher': [{'iter': 2000, 'r2': 0.0001, 'ratio': 1.5e-7}, {'iter': 4000, 'r2': teacher_r2, 'ratio': 3.4}],
            'student': [{'iter': 2000, 'r2': 0.3, 'ratio': 0.2, 'cosine': 0.8},
                        {'iter': 4000, 'r2': student_r2, 'ratio': 3.0, 'cosine': cosine}]}
    if nokd:
        runs['student_nokd'] = [{'iter': 4000, 'r2': -0.01, 'ratio': 1e-3, 'cosine': 0.84}]
    return {'runs': runs, 'constant_cosine': 0.838}


def readme(probe):
    steps = [('teacher', 'kdsr-pdd train -opt teacher_x4.yml', 0.0, 0.0, True),
             ('student', 'kdsr-pdd train -opt student_x4.yml', 60.0, 58.0, False)]
    return study.readme_text(probe, {'teacher': 25.7, 'student': 25.6}, steps, ['- threads: 1'], (120.0, 100.0))


def test_all_targets_reached():
    verdicts = study.target_verdicts(fabricated())
    assert [v[1:] for v in verdicts] == [(0.9, 0.95, True), (0.8, 0.85, True), (0.9, 0.97, True)]
    text = readme(fabricated())
    assert 'All targets reached: **yes**' in text
    assert '| teacher R² (held-out ridge probe of sigma from the IDR) | >= 0.9 | 0.950 | yes |' in text
    assert 'reaches cosine 0.838 on the same probe set.' in text
    assert 'cosine 0.970 is above that constant baseline' in text
    probe = fabricated(cosine=0.89)
    probe['constant_cosine'] = 0.902
    weak = readme(probe)
    assert 'would pass the cosine target by itself' in weak and 'cosine 0.890 is **not** above' in weak
    assert '| 4,000 | 0.950 | 3.4 | 0.850 | 3 | 0.970 | -0.010 | 0.001 | 0.840 |' in text
    assert '| 2,000 | 1.00e-04 | 1.5e-07 | 0.300 | 0.2 | 0.800 | - | - | - |' in text
    assert '| KDSR student | 25.60 |' in text and '| reused | reused |' in text and '| 60 | 58 |' in text
    assert '- threads: 1' in text and '2.0 min wall, 1.7 min CPU' in text


def test_a_missed_target_and_a_missing_run_are_named():
    text = readme(fabricated(teacher_r2=0.83, cosine=0.95))
    assert '| 0.830 | **no** |' in text and 'All targets reached: **no**' in text
    probe = fabricated()
    del probe['runs']['student']
    verdicts = study.target_verdicts(probe)
    assert verdicts[1][2:] == (None, False) and verdicts[2][2:] == (None, False)
    assert '| - | not run |' in readme(probe)
    assert study.target_verdicts(fabricated(student_r2=0.8))[1][3]  # the threshold itself counts as reached


def test_length_overrides_scale_milestones_and_the_warm_up():
    from kdsr_pdd.recipes import length_overrides

    option_file = osp.join(REPO, 'options', 'evidence', 'kdsr', 'student_x4.yml')
    assert length_overrides(None, option_file) == []
    force = length_overrides(240, option_file, checkpoints=4)
    assert force[0] == '--force_yml'
    assert {'train:total_iter=240', 'logger:save_checkpoint_freq=60', 'train:scheduler:milestones=[230]',
            'train:encoder_warmup_iters=200', 'train:encoder_warmup_milestones=[160]'} <= set(force[1:])


@pytest.mark.parametrize('path', OPTION_FILES, ids=osp.basename)
def test_option_files_validate(path):
    opt = read_option_file(path)
    opt['is_train'] = not osp.basename(path).startswith('test_')
    assert validate_options(opt, path).model_type == opt['model_type']


def test_the_recipe_names_match_the_option_files():
    names = {osp.basename(p): read_option_file(p)['name'] for p in OPTION_FILES}
    for _, _, option_file, name in study.TRAININGS + tuple((k, r, f, n) for k, r, f, n in study.TESTS):
        assert names[option_file] == name
    teacher = read_option_file(osp.join(REPO, 'options', 'evidence', 'kdsr', 'teacher_x4.yml'))
    for option_file in ('student_x4.yml', 'student_nokd_x4.yml'):
        path = read_option_file(osp.join(REPO, 'options', 'evidence', 'kdsr', option_file))['path']
        assert path['pretrain_network_teacher'] == f'experiments/{teacher["name"]}/models/net_g_latest.pth'


def test_probe_set_and_checkpoint_listing(tmp_path):
    items, photo_ids = study.probe_items()
    assert len(items) == 4 * len(study.HELDOUT_PHOTOS) and photo_ids.tolist() == sorted(photo_ids.tolist())
    assert {tuple(hr.shape) for _, hr in items} == {(3, study.PROBE_CROP, study.PROBE_CROP)}
    assert 0 <= min(float(hr.min()) for _, hr in items) and max(float(hr.max()) for _, hr in items) <= 1
    assert not set(study.HELDOUT_PHOTOS) & set(study.TRAIN_PHOTOS)
    models = tmp_path / 'models'
    models.mkdir()
    for name in ('net_g_10000.pth', 'net_g_2000.pth', 'net_g_latest.pth', 'net_d_2000.pth'):
        (models / name).write_bytes(b'')
    assert [i for i, _ in study.checkpoints(str(tmp_path))] == [2000, 10000]
    assert study.checkpoints(str(tmp_path / 'missing')) == []
