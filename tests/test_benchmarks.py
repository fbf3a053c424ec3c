"""Benchmark CLI: DRealSR-style crops against slicing of the originals, pairing and size errors, and the
gaussian8 / aniso sub-commands against direct calls of the kdsr_arch.data builders. The training-step
benchmark (benchmarks/train_steps.py): the authors' reconstructed steps against our models, and its quick run."""
import filecmp
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from kdsr_arch.benchmarks import build_aniso_noise, build_gaussian8
from kdsr_pdd.commands import benchmarks
from kdsr_pdd.weights import random_vgg19_features_file

SCALE, SIZE = 2, 3


def _save(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return img


@pytest.fixture
def paired(tmp_path):
    """'a': 8-bit BGR LR 10x13 (3 x 4 crops, remainders 1 and 1); 'b': 16-bit gray LR 7x4 (2 x 1 crops).
    DRealSR naming: HR ``<stem>_x4.png``, LR ``<stem>_x1.png``."""
    rng = np.random.default_rng(0)
    images = {}
    for stem, shape, dtype in (('a', (10, 13, 3), np.uint8), ('b', (7, 4), np.uint16)):
        top = np.iinfo(dtype).max
        lr = _save(tmp_path / 'LR' / f'{stem}_x1.png', rng.integers(0, top, shape, dtype=dtype, endpoint=True))
        hr_shape = (shape[0] * SCALE, shape[1] * SCALE) + shape[2:]
        hr = _save(tmp_path / 'HR' / f'{stem}_x4.png', rng.integers(0, top, hr_shape, dtype=dtype, endpoint=True))
        images[stem] = hr, lr
    return tmp_path, images


def _crops(tmp_path, out='out', **extra):
    argv = ['crops', '--hr', str(tmp_path / 'HR'), '--lr', str(tmp_path / 'LR'), '--out', str(tmp_path / out),
            '--scale', str(SCALE), '--size', str(SIZE), '--hr-suffix', '_x4', '--lr-suffix', '_x1']
    for key, value in extra.items():
        argv += [f'--{key.replace("_", "-")}', value]
    return benchmarks.main(argv)


def test_crops_count_sizes_and_content(paired, capsys):
    tmp_path, images = paired
    assert _crops(tmp_path) == 0
    assert 'wrote 14 crop pairs' in capsys.readouterr().out  # 3 * 4 + 2 * 1
    hr_names, lr_names = sorted(os.listdir(tmp_path / 'out' / 'HR')), sorted(os.listdir(tmp_path / 'out' / 'LR'))
    expected = sorted([f'a_{r}_{c}.png' for r in range(3) for c in range(4)] + ['b_0_0.png', 'b_1_0.png'])
    assert hr_names == lr_names == expected
    for name in expected:
        stem, row, col = name[:-4].split('_')
        row, col = int(row), int(col)
        hr, lr = images[stem]
        got_hr = cv2.imread(str(tmp_path / 'out' / 'HR' / name), cv2.IMREAD_UNCHANGED)
        got_lr = cv2.imread(str(tmp_path / 'out' / 'LR' / name), cv2.IMREAD_UNCHANGED)
        assert got_lr.dtype == lr.dtype and got_lr.shape[:2] == (SIZE, SIZE)
        assert got_hr.shape[:2] == (SIZE * SCALE, SIZE * SCALE)
        np.testing.assert_array_equal(got_lr, lr[SIZE * row:SIZE * (row + 1), SIZE * col:SIZE * (col + 1)])
        p = SIZE * SCALE
        np.testing.assert_array_equal(got_hr, hr[p * row:p * (row + 1), p * col:p * (col + 1)])


def test_crops_pair_with_basicsr_dataset(paired):
    from basicsr.data.paired_image_dataset import PairedImageDataset
    tmp_path, _ = paired
    _crops(tmp_path)
    out = tmp_path / 'out'
    dataset = PairedImageDataset({'dataroot_gt': str(out / 'HR'), 'dataroot_lq': str(out / 'LR'),
                                  'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}, 'phase': 'val',
                                  'scale': SCALE})
    assert len(dataset) == 14
    item = dataset[0]
    assert tuple(item['gt'].shape[-2:]) == (SIZE * SCALE, SIZE * SCALE) and tuple(item['lq'].shape[-2:]) == (SIZE, SIZE)


def test_crops_errors(paired):
    tmp_path, images = paired
    _save(tmp_path / 'HR' / 'a_x4.png', images['a'][0][:-1])  # one HR row short
    with pytest.raises(SystemExit) as exc:
        _crops(tmp_path)
    assert 'a_x4.png is 26x19 (WxH) but its LR' in str(exc.value) and 'the HR must be 26x20' in str(exc.value)

    os.remove(tmp_path / 'HR' / 'a_x4.png')
    _save(tmp_path / 'LR' / 'c_x1.png', images['b'][1])
    with pytest.raises(SystemExit) as exc:
        _crops(tmp_path)
    assert 'names do not pair' in str(exc.value) and '2 LR image(s) without HR' in str(exc.value)
    assert 'a, c' in str(exc.value)

    with pytest.raises(SystemExit, match="b_x4.png does not end with the suffix '_HR'"):
        _crops(tmp_path, hr_suffix='_HR')
    with pytest.raises(SystemExit, match='--lr .*missing: no such folder'):
        benchmarks.main(['crops', '--hr', str(tmp_path / 'HR'), '--lr', str(tmp_path / 'missing'),
                         '--out', str(tmp_path / 'o')])


def test_crops_cli_exit_status(paired):
    tmp_path, _ = paired
    result = subprocess.run([sys.executable, '-m', 'kdsr_pdd', 'benchmarks', 'crops', '--hr', str(tmp_path / 'HR'),
                             '--lr', str(tmp_path / 'LR'), '--out', str(tmp_path / 'o'), '--scale', '3'],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and 'error: HR and LR names do not pair' in result.stderr


@pytest.fixture
def hr_dir(tmp_path):
    rng = np.random.default_rng(1)
    for name, shape in (('x.png', (26, 22, 3)), ('y.png', (20, 24, 3))):
        _save(tmp_path / 'hr' / name, rng.integers(0, 256, shape, dtype=np.uint8))
    return tmp_path / 'hr'


def _same_tree(left, right):
    comparison = filecmp.dircmp(left, right)
    assert not comparison.left_only and not comparison.right_only
    for sub in comparison.common_dirs:
        files = sorted(os.listdir(os.path.join(left, sub)))
        match, mismatch, errors = filecmp.cmpfiles(os.path.join(left, sub), os.path.join(right, sub), files,
                                                   shallow=False)
        assert match == files and not mismatch and not errors


def test_gaussian8_subcommand(hr_dir, tmp_path):
    assert benchmarks.main(['gaussian8', '--hr', str(hr_dir), '--out', str(tmp_path / 'cli'), '--scale', '4']) == 0
    folders = sorted(os.listdir(tmp_path / 'cli'))
    assert folders == sorted(['HR'] + [f'LR_x4_sig{s:g}' for s in (1.8, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0, 3.2)])
    assert cv2.imread(str(tmp_path / 'cli' / 'LR_x4_sig2.4' / 'x.png')).shape == (6, 5, 3)
    build_gaussian8(str(hr_dir), str(tmp_path / 'direct'), 4)
    _same_tree(tmp_path / 'cli', tmp_path / 'direct')


def test_aniso_subcommand(hr_dir, tmp_path):
    assert benchmarks.main(['aniso', '--hr', str(hr_dir), '--out', str(tmp_path / 'cli'), '--scale', '2',
                            '--lambda1', '3.5', '--lambda2', '1.5', '--theta', '30', '--noise', '10']) == 0
    assert sorted(os.listdir(tmp_path / 'cli')) == ['HR', 'LR_x2_aniso_l3.5_l1.5_t30_n10']
    assert cv2.imread(str(tmp_path / 'cli' / 'LR_x2_aniso_l3.5_l1.5_t30_n10' / 'y.png')).shape == (10, 12, 3)
    build_aniso_noise(str(hr_dir), str(tmp_path / 'direct'), 2, 3.5, 1.5, 30, 10)
    _same_tree(tmp_path / 'cli', tmp_path / 'direct')
    with pytest.raises(SystemExit, match='noise must be >= 0'):
        benchmarks.main(['aniso', '--hr', str(hr_dir), '--out', str(tmp_path / 'bad'), '--lambda1', '1',
                         '--lambda2', '1', '--theta', '0', '--noise', '-1'])


# --------------------------------------------------------------------- training-step benchmark (benchmarks/)
BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks')


@pytest.fixture(scope='module')
def train_steps():
    """benchmarks/train_steps.py as a module (it imports benchmarks/authors_steps.py beside it)."""
    sys.path.insert(0, BENCHMARKS)
    try:
        import train_steps
        yield train_steps
    finally:
        sys.path.remove(BENCHMARKS)


@pytest.fixture(scope='module')
def vgg19_file(tmp_path_factory):
    return random_vgg19_features_file(str(tmp_path_factory.mktemp('vgg') / 'vgg19.pth'))


@pytest.mark.parametrize('method', ['pdd', 'kdsr'])
def test_authors_step_computes_what_ours_does(train_steps, method, vgg19_file, tmp_path, one_thread):
    """The authors' step (rebuilt from the fact sheets) and our model's: same losses and gradients (float64, tiny
    networks); a perturbed input on the authors' side is caught."""
    pair = train_steps.BUILDERS[method](train_steps.SIZES['quick'][method], str(tmp_path), vgg19_file)
    ok, lines = train_steps.check_equal(pair.to(torch.float64), pair.make_batch(0, check=True))
    assert ok, '\n'.join(lines)
    assert any('gradients' in line for line in lines)

    authors = pair.authors
    pair.authors = lambda batch: authors({**batch, 'gt': batch['gt'] * 0.999})
    ok, lines = train_steps.check_equal(pair, pair.make_batch(1, check=True))
    assert not ok and any('relative' in line for line in lines)


def test_train_steps_quick_prints_the_ratio_table(train_steps, vgg19_file, capsys, one_thread):
    assert train_steps.main(['--quick', '--steps', '1', '--no-progress', '--vgg19', vgg19_file]) == 0
    out = capsys.readouterr().out
    assert 'torch.get_num_threads() = 1' in out and 'RRDBNet(num_feat=8' in out
    assert out.count(': equal') == 2 and 'DIFFERENT' not in out
    for method in ('PDD (EMA)', 'KDSR student'):
        ratio = next(line for line in out.splitlines() if line.startswith(f'| {method} | **ours / authors**'))
        cells = [c.strip().strip('*') for c in ratio.strip('|').split('|')][2:]
        assert len(cells) == 4 and all(float(c) > 0 for c in cells), ratio
