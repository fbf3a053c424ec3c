"""PDDMixedDataset and camera_domain_degradation (pdd_model/data.py)."""
import copy
import os
import random
from collections import Counter

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataloader
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY

import kdsr_pdd.plugin  # noqa: F401  (registers the plugin into BasicSR)
from kdsr_pdd.demo_data import camera_domain_degradation
from pdd_model.data import PDDMixedDataset

GT, SCALE, LQ = 24, 4, 6
CV2_MODES = {'bicubic': cv2.INTER_CUBIC, 'bilinear': cv2.INTER_LINEAR, 'area': cv2.INTER_AREA}


def _write_images(folder, count, shape, seed):
    """Random uint8 BGR images written as PNG; returns {path: array}."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = {}
    for i in range(count):
        path = os.path.join(str(folder), f'img{i:02d}.png')
        images[path] = rng.integers(0, 256, shape, dtype=np.uint8)
        cv2.imwrite(path, images[path])
    return images


@pytest.fixture
def folders(tmp_path):
    hr = _write_images(tmp_path / 'hr', 3, (40, 36, 3), seed=1)
    real = _write_images(tmp_path / 'real', 4, (12, 15, 3), seed=2)
    return tmp_path, hr, real


def _opt(tmp_path, **kw):
    opt = dict(dataroot_gt=str(tmp_path / 'hr'), dataroot_lq_real=str(tmp_path / 'real'), gt_size=GT, scale=SCALE,
               phase='train', io_backend={'type': 'disk'})
    opt.update(kw)
    return opt


def _hwc(t):
    """[3, h, w] RGB tensor -> [h, w, 3] RGB float32 array."""
    return np.ascontiguousarray(t.permute(1, 2, 0).numpy())


def _quantize(x):
    return np.clip(np.round(x * 255.), 0, 255) / 255.


def _dihedral_match(src, out):
    """(hflip, vflip, transpose) such that `out` is that transform of a crop of `src`, else None."""
    size = out.shape[0]
    for top in range(src.shape[0] - size + 1):
        for left in range(src.shape[1] - size + 1):
            crop = src[top:top + size, left:left + size]
            for h in (0, 1):
                for v in (0, 1):
                    for t in (0, 1):
                        x = crop[:, ::-1] if h else crop
                        x = x[::-1] if v else x
                        x = x.transpose(1, 0, 2) if t else x
                        if np.array_equal(x, out):
                            return h, v, t
    return None


def _to_bgr_uint8(t):
    return np.round(_hwc(t)[..., ::-1] * 255).astype(np.uint8)


def test_item_keys_shapes_registry_and_options_untouched(folders):
    tmp_path, hr, _ = folders
    assert DATASET_REGISTRY.get('PDDMixedDataset') is PDDMixedDataset
    opt = _opt(tmp_path)
    frozen = copy.deepcopy(opt)
    ds = PDDMixedDataset(opt)
    assert len(ds) == len(hr)
    item = ds[2]
    assert set(item) == {'gt', 'lq', 'lq_real', 'gt_path', 'lq_real_path'}
    assert item['gt'].shape == (3, GT, GT)
    assert item['lq'].shape == item['lq_real'].shape == (3, LQ, LQ)
    assert all(item[k].dtype == torch.float32 for k in ('gt', 'lq', 'lq_real'))
    assert item['gt_path'] == sorted(hr)[2]
    assert opt == frozen


def test_crops_are_flipped_transposed_windows_of_their_files(folders):
    tmp_path, hr, real = folders
    random.seed(0)
    seen_gt, seen_real = set(), set()
    ds = PDDMixedDataset(_opt(tmp_path))
    for i in range(16):
        item = ds[i % len(ds)]
        key = _dihedral_match(hr[item['gt_path']], _to_bgr_uint8(item['gt']))
        key_real = _dihedral_match(real[item['lq_real_path']], _to_bgr_uint8(item['lq_real']))
        assert key is not None and key_real is not None
        seen_gt.add(key)
        seen_real.add(key_real)
    assert len(seen_gt) > 3 and len(seen_real) > 3  # hflip, vflip and transpose are all drawn

    ds = PDDMixedDataset(_opt(tmp_path, use_hflip=False, use_rot=False))
    for i in range(6):
        item = ds[i % len(ds)]
        assert _dihedral_match(hr[item['gt_path']], _to_bgr_uint8(item['gt'])) == (0, 0, 0)
        assert _dihedral_match(real[item['lq_real_path']], _to_bgr_uint8(item['lq_real'])) == (0, 0, 0)


@pytest.mark.parametrize('mode', ['bicubic', 'bilinear', 'area'])
def test_random_resize_equals_cv2_resize_of_gt(folders, mode):
    tmp_path, _, _ = folders
    random.seed(1)
    ds = PDDMixedDataset(_opt(tmp_path, resize_modes=[mode]))
    for i in range(4):
        item = ds[i % len(ds)]
        expected = _quantize(cv2.resize(_hwc(item['gt']), (LQ, LQ), interpolation=CV2_MODES[mode]))
        np.testing.assert_allclose(_hwc(item['lq']), expected, rtol=0, atol=1e-7)


def test_resize_probs_are_followed(folders):
    tmp_path, _, _ = folders
    random.seed(2)
    ds = PDDMixedDataset(_opt(tmp_path, resize_probs=['1/3', '2/3', 0]))
    counts = Counter()
    for i in range(240):
        item = ds[i % len(ds)]
        gt, lq = _hwc(item['gt']), _hwc(item['lq'])
        used = [m for m, flag in CV2_MODES.items()
                if np.allclose(lq, _quantize(cv2.resize(gt, (LQ, LQ), interpolation=flag)), atol=1e-7)]
        assert len(used) == 1
        counts[used[0]] += 1
    assert counts['area'] == 0
    assert 130 <= counts['bilinear'] <= 190  # Binomial(240, 2/3): mean 160, std 7.3


def test_matlab_bicubic_equals_basicsr_imresize_of_gt(folders):
    tmp_path, _, _ = folders
    random.seed(3)
    ds = PDDMixedDataset(_opt(tmp_path, lq_synthesis='matlab_bicubic'))
    for i in range(3):
        item = ds[i]
        gt = _hwc(item['gt'])
        expected = _quantize(imresize(gt, 1 / SCALE))
        np.testing.assert_allclose(_hwc(item['lq']), expected, rtol=0, atol=1e-7)
        cv2_cubic = _quantize(cv2.resize(gt, (LQ, LQ), interpolation=cv2.INTER_CUBIC))
        assert not np.allclose(expected, cv2_cubic, atol=1e-7)


@pytest.mark.parametrize('synthesis', ['random_resize', 'matlab_bicubic'])
def test_synthetic_lr_is_8bit_quantised(folders, synthesis):
    tmp_path, _, _ = folders
    random.seed(4)
    ds = PDDMixedDataset(_opt(tmp_path, lq_synthesis=synthesis))
    for i in range(3):
        lq = ds[i]['lq'].numpy().astype(np.float64) * 255
        np.testing.assert_allclose(lq, np.round(lq), rtol=0, atol=1e-4)
        assert lq.min() >= 0 and lq.max() <= 255


def test_real_list_is_cycled_when_longer_than_hr_list(tmp_path):
    _write_images(tmp_path / 'hr', 2, (30, 30, 3), seed=5)
    real = _write_images(tmp_path / 'real', 7, (8, 8, 3), seed=6)
    ds = PDDMixedDataset(_opt(tmp_path))
    assert len(ds) == 2
    random.seed(7)
    used = Counter(ds[i % 2]['lq_real_path'] for i in range(140))
    assert set(used) == set(real)


def test_short_real_list_does_not_truncate_hr_list(tmp_path):
    hr = _write_images(tmp_path / 'hr', 6, (30, 30, 3), seed=8)
    real = _write_images(tmp_path / 'real', 2, (8, 8, 3), seed=9)
    ds = PDDMixedDataset(_opt(tmp_path))
    assert len(ds) == 6
    items = [ds[i] for i in range(len(ds))]
    assert [it['gt_path'] for it in items] == sorted(hr)
    assert {it['lq_real_path'] for it in items} <= set(real)


def test_real_choice_changes_with_epoch_order_under_identical_reseeding(tmp_path):
    """BasicSR re-seeds workers identically each epoch; the sampler's new index order must still vary the real picks."""
    _write_images(tmp_path / 'hr', 8, (30, 30, 3), seed=10)
    _write_images(tmp_path / 'real', 8, (8, 8, 3), seed=11)
    ds = PDDMixedDataset(_opt(tmp_path))

    def epoch(order):
        random.seed(123)
        return [ds[i]['lq_real_path'] for i in order]

    assert epoch(range(8)) == epoch(range(8))
    assert epoch(range(8)) != epoch([3, 1, 7, 0, 6, 2, 5, 4])


def test_build_dataloader_with_enlarged_sampler_on_two_ranks(tmp_path):
    hr = _write_images(tmp_path / 'hr', 4, (30, 30, 3), seed=12)
    _write_images(tmp_path / 'real', 3, (8, 8, 3), seed=13)
    opt = _opt(tmp_path, batch_size_per_gpu=2, num_worker_per_gpu=1, use_shuffle=True)
    ds = PDDMixedDataset(opt)
    paths = {}
    for rank in (0, 1):
        sampler = EnlargedSampler(ds, num_replicas=2, rank=rank, ratio=1)
        sampler.set_epoch(3)
        loader = build_dataloader(ds, opt, num_gpu=1, dist=True, sampler=sampler, seed=0)
        batches = list(loader)
        assert len(batches) == 1
        assert batches[0]['gt'].shape == (2, 3, GT, GT)
        assert batches[0]['lq'].shape == batches[0]['lq_real'].shape == (2, 3, LQ, LQ)
        paths[rank] = set(batches[0]['gt_path'])
    assert paths[0].isdisjoint(paths[1])
    assert paths[0] | paths[1] == set(hr)

    sampler = EnlargedSampler(ds, num_replicas=2, rank=1, ratio=3)
    loader = build_dataloader(ds, opt, num_gpu=1, dist=True, sampler=sampler, seed=0)
    assert sum(1 for _ in loader) == 3  # ceil(4 * 3 / 2) = 6 items per rank, batches of 2


def test_lmdb_backend(tmp_path):
    hr = _write_images(tmp_path / 'hr', 2, (30, 30, 3), seed=14)
    real = _write_images(tmp_path / 'real', 2, (8, 8, 3), seed=15)
    for name, images in (('hr', hr), ('real', real)):
        names = sorted(os.path.basename(p) for p in images)
        make_lmdb_from_imgs(str(tmp_path / name), str(tmp_path / f'{name}.lmdb'), names,
                            [n.split('.')[0] for n in names], map_size=1 << 22)
    ds = PDDMixedDataset(_opt(tmp_path, dataroot_gt=str(tmp_path / 'hr.lmdb'),
                              dataroot_lq_real=str(tmp_path / 'real.lmdb'), io_backend={'type': 'lmdb'}))
    random.seed(16)
    item = ds[1]
    assert item['gt_path'] == 'img01' and item['lq_real_path'] in {'img00', 'img01'}
    assert _dihedral_match(hr[str(tmp_path / 'hr' / 'img01.png')], _to_bgr_uint8(item['gt'])) is not None
    assert item['lq_real'].shape == (3, LQ, LQ)


@pytest.mark.parametrize('change, message', [
    (dict(gt_size=26), r'gt_size \(26\) must be a multiple of scale \(4\)'),
    (dict(lq_synthesis='nearest'), "lq_synthesis\n  Input should be 'random_resize' or 'matlab_bicubic'"),
    (dict(resize_modes=['bicubic', 'lanczos']), "resize_modes.1\n  Input should be 'bicubic', 'bilinear' or 'area'"),
    (dict(resize_probs=[0.5, 0.5]), 'resize_probs has 2 entries but resize_modes has 3'),
    (dict(resize_probs=['a third', 1, 1]), 'resize_probs'),
    (dict(resize_probs=[0, 0, 0]), 'resize_probs'),
    (dict(io_backend={'type': 'memcached'}), "io_backend.type\n  Input should be 'disk' or 'lmdb'"),
    (dict(scale=None), 'scale: missing'),
    (dict(dataroot_gt='/nonexistent/hr'), "^datasets.train.dataroot_gt: '/nonexistent/hr' is not a folder$"),
])
def test_option_errors(folders, change, message):
    tmp_path, _, _ = folders
    with pytest.raises(ValueError, match=message):
        PDDMixedDataset(_opt(tmp_path, **change))


@pytest.mark.parametrize('option', ['dataroot_gt', 'dataroot_lq_real'])
def test_empty_folder_error(folders, option):
    tmp_path, _, _ = folders
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match=f"^datasets.train.{option}: '.*empty' contains no images$"):
        PDDMixedDataset(_opt(tmp_path, **{option: str(tmp_path / 'empty')}))


def test_small_and_undecodable_images_are_refused_when_built(tmp_path):
    """Refused by the constructor (kdsr_pdd.data_checks), no longer when an item is loaded."""
    _write_images(tmp_path / 'hr', 1, (20, 40, 3), seed=17)
    _write_images(tmp_path / 'real', 1, (12, 12, 3), seed=18)
    with pytest.raises(ValueError, match=r'^datasets.train.dataroot_gt: 1 of 1 images are smaller than the 24x24 crop '
                                         r'\(gt_size 24\): img00.png 20x40 \(height x width\)'):
        PDDMixedDataset(_opt(tmp_path))

    _write_images(tmp_path / 'hr', 1, (30, 30, 3), seed=19)
    _write_images(tmp_path / 'real', 1, (5, 12, 3), seed=20)
    with pytest.raises(ValueError, match=r'^datasets.train.dataroot_lq_real: 1 of 1 images are smaller than the 6x6 '
                                         r'crop \(gt_size / scale = 24 / 4\): img00.png 5x12'):
        PDDMixedDataset(_opt(tmp_path))

    _write_images(tmp_path / 'real', 1, (12, 12, 3), seed=21)
    (tmp_path / 'hr' / 'img00.png').write_text('not an image')
    with pytest.raises(ValueError, match=r'^datasets.train.dataroot_gt: 1 of 1 images cannot be read: img00.png '
                                         r'\(not an image\); remove or replace them$'):
        PDDMixedDataset(_opt(tmp_path))


def test_camera_domain_degradation_seeded_shape_and_range():
    img = np.random.default_rng(22).random((66, 50, 3)).astype(np.float32)
    a, b = camera_domain_degradation(img, 4, seed=0), camera_domain_degradation(img, 4, seed=0)
    c = camera_domain_degradation(img, 4, seed=1)
    assert a.shape == (16, 12, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_allclose(a * 255, np.round(a * 255), rtol=0, atol=1e-4)  # 8-bit JPEG output
    assert camera_domain_degradation(img, 2, seed=0).shape == (33, 25, 3)


def test_camera_domain_degradation_keeps_flat_level_and_adds_mild_noise():
    lr = camera_domain_degradation(np.full((128, 128, 3), 0.5, np.float32), 4, seed=3)
    assert abs(lr.mean() - 0.5) < 2 / 255  # blur, box downscale and zero-mean noise keep the level
    # pre-JPEG noise std is sqrt(1.6e-3 * 0.5 + 1e-4) = 0.03; JPEG q70 smooths part of it away
    assert 0.008 < lr.std() < 0.035


@pytest.mark.parametrize('img, scale, message', [
    (np.zeros((8, 8), np.float32), 2, r'\[H, W, 3\]'),
    (np.zeros((8, 8, 3), np.float32), 1.5, 'positive integer'),
    (np.zeros((3, 8, 3), np.float32), 4, 'smaller than scale 4'),
])
def test_camera_domain_degradation_errors(img, scale, message):
    with pytest.raises(ValueError, match=message):
        camera_domain_degradation(img, scale, seed=0)
