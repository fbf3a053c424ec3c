"""KDSR classic degradations, HR dataset and benchmark builders, checked against closed forms and BasicSR."""
import math
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY

import kdsr_pdd.plugin  # noqa: F401  (registers the plugin into BasicSR)
from kdsr_arch.benchmarks import build_aniso_noise, build_gaussian8
from kdsr_arch.degradations import (
    ClassicDegradation,
    anisotropic_gaussian_kernels,
    bicubic_downsample,
    blur,
    classic_degrade,
    isotropic_gaussian_kernels,
    quantize_8bit,
)

D = torch.float64


def _grid(size=21):
    ax = torch.arange(size, dtype=D) - size // 2
    y, x = torch.meshgrid(ax, ax, indexing='ij')
    return x, y


def _second_moments(k):
    """E[x^2], E[x y], E[y^2] of a kernel read as a distribution over (x = column, y = row) offsets."""
    x, y = _grid(k.shape[-1])
    return (k * x * x).sum().item(), (k * x * y).sum().item(), (k * y * y).sum().item()


# ----------------------------------------------------------------------------------------------- kernels
def test_isotropic_kernels_unit_sum_symmetric_and_variance():
    sigma = torch.tensor([0.2, 1.5, 4.0], dtype=D)
    k = isotropic_gaussian_kernels(sigma)
    assert k.shape == (3, 21, 21) and k.dtype == D
    torch.testing.assert_close(k.sum(dim=(1, 2)), torch.ones(3, dtype=D))
    torch.testing.assert_close(k, k.transpose(1, 2))
    torch.testing.assert_close(k, k.flip(1))
    torch.testing.assert_close(k, k.flip(2))
    # sigma = 1.5: the 21x21 window spans 6.7 sigma, so the discrete moments equal the continuous ones.
    exx, exy, eyy = _second_moments(k[1])
    assert exx == pytest.approx(1.5**2, rel=1e-6) and eyy == pytest.approx(1.5**2, rel=1e-6)
    assert abs(exy) < 1e-12
    # closed form of one entry: k(x=3, y=-2) / k(0, 0) = exp(-13 / (2 sigma^2))
    assert (k[1, 10 - 2, 10 + 3] / k[1, 10, 10]).item() == pytest.approx(math.exp(-13 / (2 * 1.5**2)), rel=1e-12)


def test_anisotropic_kernel_covariance_matches_rotated_diagonal():
    l1, l2, theta = 1.6, 1.1, 0.7
    k = anisotropic_gaussian_kernels(torch.tensor([l1], dtype=D), torch.tensor([l2], dtype=D),
                                     torch.tensor([theta], dtype=D))[0]
    assert k.sum().item() == pytest.approx(1.0, abs=1e-12)
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=D)
    cov = rot @ torch.diag(torch.tensor([l1**2, l2**2], dtype=D)) @ rot.T
    exx, exy, eyy = _second_moments(k)
    torch.testing.assert_close(torch.tensor([[exx, exy], [exy, eyy]], dtype=D), cov, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(k, k.flip(0).flip(1))  # point-symmetric, so correlation == convolution


def test_anisotropic_special_cases():
    lam = torch.tensor([0.7, 1.3, 2.5], dtype=D)
    theta = torch.tensor([0.0, 0.4, 2.0], dtype=D)
    torch.testing.assert_close(anisotropic_gaussian_kernels(lam, lam, theta), isotropic_gaussian_kernels(lam))
    l1, l2 = torch.tensor([2.0, 0.5, 3.0], dtype=D), torch.tensor([0.8, 1.9, 1.0], dtype=D)
    k = anisotropic_gaussian_kernels(l1, l2, theta)
    torch.testing.assert_close(anisotropic_gaussian_kernels(l1, l2, theta + math.pi), k)
    torch.testing.assert_close(anisotropic_gaussian_kernels(l1, l2, theta + math.pi / 2),
                               anisotropic_gaussian_kernels(l2, l1, theta))
    # theta = 0: axis-aligned, the long axis (lambda1 = 1.6 > 1.0) runs along x (columns)
    k0 = anisotropic_gaussian_kernels(torch.tensor([1.6], dtype=D), torch.tensor([1.0], dtype=D),
                                      torch.zeros(1, dtype=D))[0]
    exx, exy, eyy = _second_moments(k0)
    assert exx == pytest.approx(1.6**2, rel=1e-6) and eyy == pytest.approx(1.0, rel=1e-6) and abs(exy) < 1e-12


def test_zero_width_is_delta_and_bad_size_rejected():
    delta = torch.zeros(21, 21)
    delta[10, 10] = 1
    torch.testing.assert_close(isotropic_gaussian_kernels(torch.zeros(2))[0], delta)
    torch.testing.assert_close(anisotropic_gaussian_kernels(torch.zeros(1), torch.zeros(1), torch.ones(1))[0], delta)
    assert isotropic_gaussian_kernels(torch.ones(1), size=7).shape == (1, 7, 7)
    with pytest.raises(ValueError, match='odd'):
        isotropic_gaussian_kernels(torch.ones(1), size=20)


# -------------------------------------------------------------------------------------------------- blur
def test_blur_delta_is_identity():
    x = torch.rand(3, 3, 13, 16, dtype=D)
    kernels = torch.zeros(3, 21, 21, dtype=D)
    kernels[:, 10, 10] = 1
    torch.testing.assert_close(blur(x, kernels), x)


def test_blur_per_sample_box_matches_avg_pool_on_reflection_padded_input():
    x = torch.rand(3, 2, 14, 12, dtype=D)
    widths = (1, 3, 7)
    kernels = torch.zeros(3, 21, 21, dtype=D)
    for b, kb in enumerate(widths):
        r = kb // 2
        kernels[b, 10 - r:10 + r + 1, 10 - r:10 + r + 1] = 1 / kb**2
    out = blur(x, kernels)
    for b, kb in enumerate(widths):
        padded = F.pad(x[b:b + 1], (10, 10, 10, 10), mode='reflect')
        pooled = F.avg_pool2d(padded, kb, stride=1)
        start = 10 - kb // 2
        torch.testing.assert_close(out[b:b + 1], pooled[..., start:start + 14, start:start + 12])
    # batch size 1 and a different batch give the same per-sample result
    torch.testing.assert_close(blur(x[1:2], kernels[1:2]), out[1:2])


def test_blur_errors():
    with pytest.raises(ValueError, match='kernels must be'):
        blur(torch.rand(2, 3, 16, 16), torch.rand(1, 21, 21))
    with pytest.raises(ValueError, match='larger than 10 pixels'):
        blur(torch.rand(1, 3, 10, 16), torch.rand(1, 21, 21))


# ---------------------------------------------------------------------------------------------- bicubic
@pytest.mark.parametrize('scale,size', [(2, (26, 18)), (3, (27, 21)), (4, (28, 20)), (4, (12, 36))])
def test_bicubic_downsample_matches_basicsr_imresize(scale, size):
    gen = torch.Generator().manual_seed(scale)
    x = torch.rand(2, 3, *size, generator=gen)
    out = bicubic_downsample(x, scale)
    assert out.shape == (2, 3, size[0] // scale, size[1] // scale)
    for b in range(2):
        torch.testing.assert_close(out[b], imresize(x[b], 1 / scale), rtol=0, atol=1e-5)
    # float64 input keeps its dtype and agrees to float32-weight precision
    out64 = bicubic_downsample(x.double(), scale)
    assert out64.dtype == D
    torch.testing.assert_close(out64.float(), out, rtol=0, atol=1e-5)


def test_bicubic_downsample_preserves_constants_and_rejects_bad_sizes():
    torch.testing.assert_close(bicubic_downsample(torch.full((1, 3, 16, 16), 0.3), 4), torch.full((1, 3, 4, 4), 0.3))
    with pytest.raises(ValueError, match='multiple of the integer scale 4'):
        bicubic_downsample(torch.rand(1, 3, 18, 16), 4)


# ----------------------------------------------------------------------------------------- noise, quantise
def test_quantize_8bit_exact():
    x = torch.tensor([-0.1, 0.0, 0.4 / 255, 0.6 / 255, 0.5, 100.6 / 255, 1.0, 1.2])
    expected = torch.tensor([0, 0, 0, 1, 128, 101, 255, 255]) / 255  # 127.5 rounds half to even
    assert torch.equal(quantize_8bit(x), expected)


def test_gaussian_noise_std_per_sample():
    """classic_degrade adds BasicSR's add_gaussian_noise_pt noise, one std per sample, from torch's RNG."""
    delta = torch.zeros(4, 21, 21, dtype=D)
    delta[:, 10, 10] = 1  # no blur: the LR is the bicubic downscale of a constant image, plus the noise
    x = torch.full((4, 3, 256, 256), 128 / 255, dtype=D)  # on the 8-bit grid: quantisation keeps it
    levels = torch.tensor([0.0, 10.0, 20.0, 30.0], dtype=D)
    torch.manual_seed(0)
    noise = classic_degrade(x, delta, 4, levels) * 255 - 128
    assert torch.equal(noise[0], torch.zeros_like(noise[0]))
    for b in range(1, 4):
        assert noise[b].std().item() == pytest.approx(levels[b].item(), rel=0.04)
        assert abs(noise[b].mean().item()) < 0.05 * levels[b].item()
    torch.manual_seed(3)
    first = classic_degrade(x, delta, 4, levels)
    torch.manual_seed(3)
    assert torch.equal(first, classic_degrade(x, delta, 4, levels))


# ---------------------------------------------------------------------------------------- ClassicDegradation
def test_default_sigma_ranges_per_scale_and_option_errors():
    assert ClassicDegradation(scale=2).sigma_range == (0.2, 2.0)
    assert ClassicDegradation(scale=3).sigma_range == (0.2, 3.0)
    assert ClassicDegradation(scale=4).sigma_range == (0.2, 4.0)
    deg = ClassicDegradation.from_options({'kernel': 'aniso', 'noise_max': 25, 'lambda_range': [0.5, 3]}, scale=4)
    assert (deg.kernel, deg.noise_max, deg.lambda_range, deg.per_sample) == ('aniso', 25.0, (0.5, 3.0), False)
    assert ClassicDegradation.from_options(None, 2).sigma_range == (0.2, 2.0)
    with pytest.raises(ValueError, match=r"noise\n  unknown option; did you mean noise_max\?"):
        ClassicDegradation.from_options({'noise': 25}, 4)
    bad = [({'sigma_range': [3.0, 1.0]}, 'sigma_range'), ({'sigma_range': [0.0, 1.0]}, 'sigma_range'),
           ({'kernel': 'aniso', 'lambda_range': [1.0]}, 'lambda_range'), ({'kernel': 'gauss'}, 'kernel'),
           ({'lambda_range': [0.5, 3]}, 'lambda_range has no effect with kernel iso'),
           ({'kernel': 'aniso', 'sigma_range': [0.5, 3]}, 'sigma_range has no effect with kernel aniso'),
           ({'noise_max': -1}, 'noise_max'), ({'kernel_size': 20}, 'kernel_size'), ({'per_sample': 'no'}, 'per_sample')]
    for opt, name in bad:
        with pytest.raises(ValueError, match=name):
            ClassicDegradation.from_options(opt, 4)
    with pytest.raises(ValueError, match='sigma_range'):
        ClassicDegradation(scale=8)


def test_sampling_per_sample_and_per_batch():
    torch.manual_seed(0)
    for kernel in ('iso', 'aniso'):
        k = ClassicDegradation(kernel=kernel, per_sample=True).sample_kernels(5)
        assert k.shape == (5, 21, 21) and not torch.allclose(k[0], k[1])
        k = ClassicDegradation(kernel=kernel, per_sample=False).sample_kernels(5)
        assert all(torch.equal(k[0], k[b]) for b in range(5))
    levels = ClassicDegradation(noise_max=25, per_sample=True).sample_noise_levels(1000)
    assert 0 <= levels.min() and levels.max() <= 25 and levels.std() > 5
    levels = ClassicDegradation(noise_max=25, per_sample=False).sample_noise_levels(4)
    assert torch.equal(levels, levels[:1].expand(4))
    # the sampled widths stay inside sigma_range: centre weights bounded by those of the extremes
    centre = ClassicDegradation(sigma_range=(1.0, 2.0)).sample_kernels(200, dtype=D)[:, 10, 10]
    bounds = isotropic_gaussian_kernels(torch.tensor([2.0, 1.0], dtype=D))[:, 10, 10]
    assert (centre >= bounds[0]).all() and (centre <= bounds[1]).all()


def test_degradation_pipeline_matches_independent_reference():
    torch.manual_seed(1)
    hr = torch.rand(2, 3, 24, 28)
    deg = ClassicDegradation(scale=4, kernel='aniso')
    kernels = deg.sample_kernels(2)
    lq = deg.degrade(hr, kernels)
    assert lq.shape == (2, 3, 6, 7)
    for b in range(2):
        padded = F.pad(hr[b:b + 1], (10, 10, 10, 10), mode='reflect')
        blurred = torch.cat([F.conv2d(padded[:, c:c + 1], kernels[b][None, None]) for c in range(3)], 1)[0]
        ref = torch.round(imresize(blurred, 0.25).clamp(0, 1) * 255) / 255
        diff = (lq[b] - ref).abs()
        assert diff.max() <= 1 / 255 + 1e-6 and (diff > 0).float().mean() < 0.02  # only rounding ties differ


def test_call_draws_then_degrades_and_quantises():
    hr = torch.rand(3, 3, 32, 32)
    deg = ClassicDegradation(scale=4, noise_max=10)
    torch.manual_seed(5)
    lq = deg(hr)
    assert lq.shape == (3, 3, 8, 8)
    torch.testing.assert_close(lq * 255, torch.round(lq * 255), rtol=0, atol=1e-4)
    torch.manual_seed(5)
    kernels, levels = deg.sample_kernels(3), deg.sample_noise_levels(3)
    assert torch.equal(lq, deg.degrade(hr, kernels, levels))


def test_everything_stays_on_the_input_device():
    meta = torch.device('meta')  # shapes only: any tensor made on a fixed device would fail to combine
    hr = torch.empty(2, 3, 32, 32, device=meta)
    for deg in (ClassicDegradation(noise_max=25), ClassicDegradation(kernel='aniso', per_sample=False)):
        lq = deg(hr)
        assert lq.device == meta and lq.shape == (2, 3, 8, 8)


# -------------------------------------------------------------------------------------------------- builders
def _write_images(folder, sizes):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(osp.join(folder, f'img{i}.png'), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _files(folder):
    return {name: open(osp.join(folder, name), 'rb').read() for name in sorted(os.listdir(folder))}


def _as_tensor(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255
    return torch.from_numpy(img.copy()).permute(2, 0, 1)[None]


def test_build_gaussian8_layout_content_determinism_and_pairing(tmp_path):
    hr_dir = tmp_path / 'src'
    _write_images(hr_dir, [(27, 22), (24, 24)])
    lr_dirs = build_gaussian8(str(hr_dir), str(tmp_path / 'a'), 4)
    names = [osp.basename(d) for d in lr_dirs]
    assert names == [f'LR_x4_sig{s}' for s in ('1.8', '2', '2.2', '2.4', '2.6', '2.8', '3', '3.2')]
    hr = _files(tmp_path / 'a' / 'HR')
    assert list(hr) == ['img0.png', 'img1.png']
    assert cv2.imread(str(tmp_path / 'a' / 'HR' / 'img0.png')).shape == (24, 20, 3)
    for d in lr_dirs:
        assert sorted(os.listdir(d)) == ['img0.png', 'img1.png']
        assert cv2.imread(osp.join(d, 'img0.png')).shape == (6, 5, 3)
    # LR_x4_sig2.2 holds exactly the sigma = 2.2 degradation of the written HR
    x = _as_tensor(str(tmp_path / 'a' / 'HR' / 'img1.png'))
    expected = classic_degrade(x, isotropic_gaussian_kernels(torch.tensor([2.2])), 4)
    torch.testing.assert_close(_as_tensor(osp.join(lr_dirs[2], 'img1.png')), expected, rtol=0, atol=1e-6)
    # deterministic: a second run writes byte-identical files
    build_gaussian8(str(hr_dir), str(tmp_path / 'b'), 4)
    for sub in ['HR'] + names:
        assert _files(tmp_path / 'a' / sub) == _files(tmp_path / 'b' / sub)
    # BasicSR's PairedImageDataset pairs HR with an LR folder by file name
    pairs = PairedImageDataset({'dataroot_gt': str(tmp_path / 'a' / 'HR'), 'dataroot_lq': lr_dirs[0],
                                'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}, 'phase': 'val', 'scale': 4})
    assert len(pairs) == 2
    for item in (pairs[0], pairs[1]):
        assert osp.basename(item['lq_path']) == osp.basename(item['gt_path'])
        expected_gt = (3, 24, 20) if osp.basename(item['gt_path']) == 'img0.png' else (3, 24, 24)
        assert item['gt'].shape == expected_gt and item['lq'].shape == (3, expected_gt[1] // 4, expected_gt[2] // 4)


def test_build_gaussian8_other_scales_and_errors(tmp_path):
    hr_dir = tmp_path / 'src'
    _write_images(hr_dir, [(25, 23)])
    x2 = build_gaussian8(str(hr_dir), str(tmp_path / 'x2'), 2)
    assert [osp.basename(d) for d in x2] == [f'LR_x2_sig{s}' for s in
                                            ('0.9', '1', '1.1', '1.2', '1.3', '1.4', '1.5', '1.6')]
    x3 = build_gaussian8(str(hr_dir), str(tmp_path / 'x3'), 3)
    assert [osp.basename(d) for d in x3] == [f'LR_x3_sig{s}' for s in
                                            ('1.35', '1.5', '1.65', '1.8', '1.95', '2.1', '2.25', '2.4')]
    assert cv2.imread(osp.join(x3[0], 'img0.png')).shape == (8, 7, 3)
    with pytest.raises(ValueError, match='scales'):
        build_gaussian8(str(hr_dir), str(tmp_path / 'x5'), 5)
    with pytest.raises(ValueError, match='HR folder not found'):
        build_gaussian8(str(tmp_path / 'missing'), str(tmp_path / 'o'), 4)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no images'):
        build_gaussian8(str(tmp_path / 'empty'), str(tmp_path / 'o'), 4)


def test_build_aniso_noise_is_seeded_and_noisy(tmp_path):
    hr_dir = tmp_path / 'src'
    _write_images(hr_dir, [(48, 44), (32, 36)])
    (lr_dir,) = build_aniso_noise(str(hr_dir), str(tmp_path / 'a'), 4, 3.5, 1.5, 30, 10)
    assert osp.basename(lr_dir) == 'LR_x4_aniso_l3.5_l1.5_t30_n10'
    assert sorted(os.listdir(lr_dir)) == ['img0.png', 'img1.png']
    assert cv2.imread(osp.join(lr_dir, 'img0.png')).shape == (12, 11, 3)
    (again,) = build_aniso_noise(str(hr_dir), str(tmp_path / 'b'), 4, 3.5, 1.5, 30, 10)
    assert _files(lr_dir) == _files(again) and _files(tmp_path / 'a' / 'HR') == _files(tmp_path / 'b' / 'HR')
    (other_seed,) = build_aniso_noise(str(hr_dir), str(tmp_path / 'c'), 4, 3.5, 1.5, 30, 10, seed=1)
    assert _files(lr_dir) != _files(other_seed)
    # the residual against the noise-free degradation has std ~ 10 / 255
    x = _as_tensor(str(tmp_path / 'a' / 'HR' / 'img0.png'))
    kernel = anisotropic_gaussian_kernels(torch.tensor([3.5]), torch.tensor([1.5]), torch.tensor([math.pi / 6]))
    clean = bicubic_downsample(blur(x, kernel), 4)
    residual = (_as_tensor(osp.join(lr_dir, 'img0.png')) - clean) * 255
    assert 8 < residual.std().item() < 12
    with pytest.raises(ValueError, match='noise'):
        build_aniso_noise(str(hr_dir), str(tmp_path / 'd'), 4, 3.5, 1.5, 30, -1)


# -------------------------------------------------------------------------------------------------- dataset
def _dataset(folder, **extra):
    opt = {'dataroot_gt': str(folder), 'gt_size': 8, 'use_hflip': False, 'use_rot': False,
           'io_backend': {'type': 'disk'}}
    opt.update(extra)
    return DATASET_REGISTRY.get('KDSRHRDataset')(opt)


def test_dataset_crops_are_windows_of_the_rgb_image(tmp_path):
    _write_images(tmp_path, [(12, 15), (10, 9)])
    ds = _dataset(tmp_path)
    assert len(ds) == 2
    full = _as_tensor(str(tmp_path / 'img0.png'))[0]
    for _ in range(3):
        item = ds[0]
        assert item['gt'].shape == (3, 8, 8) and item['gt'].dtype == torch.float32
        assert item['gt_path'] == str(tmp_path / 'img0.png')
        windows = full.unfold(1, 8, 1).unfold(2, 8, 1)  # [3, 5, 8, 8, 8]
        assert any(torch.equal(windows[:, i, j], item['gt']) for i in range(5) for j in range(8))
    aug = _dataset(tmp_path, use_hflip=True, use_rot=True, scale=4)
    assert aug[1]['gt'].shape == (3, 8, 8)
    assert ds.opt['io_backend'] == {'type': 'disk'}  # options are not mutated


def test_dataset_lmdb_backend(tmp_path):
    _write_images(tmp_path / 'src', [(12, 12)])
    lmdb_path = str(tmp_path / 'hr.lmdb')
    make_lmdb_from_imgs(str(tmp_path / 'src'), lmdb_path, ['img0.png'], ['img0'], n_thread=1, map_size=1 << 20)
    ds = _dataset(lmdb_path, io_backend={'type': 'lmdb'})
    assert len(ds) == 1 and ds[0]['gt'].shape == (3, 8, 8)


def test_dataset_errors_name_file_and_option(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match=r"^dataroot_gt: '.*empty' contains no images$"):
        _dataset(tmp_path / 'empty')
    with pytest.raises(ValueError, match=r"^datasets.train.dataroot_gt: '.*missing' is not a folder$"):
        _dataset(tmp_path / 'missing', phase='train')
    with pytest.raises(ValueError, match="gt_size\n  Input should be a valid integer"):
        _dataset(tmp_path, gt_size=None)
    with pytest.raises(ValueError, match=r"gt_size \(10\) must be a multiple of scale 4"):
        _dataset(tmp_path, gt_size=10, scale=4)
    # refused when built, no longer when the item is loaded (kdsr_pdd.data_checks)
    (tmp_path / 'broken').mkdir()
    (tmp_path / 'broken' / 'notes.txt').write_text('not an image')
    with pytest.raises(ValueError, match=r'^dataroot_gt: 1 of 1 images cannot be read: notes.txt \(not an image\)'):
        _dataset(tmp_path / 'broken')
    _write_images(tmp_path / 'small', [(7, 20)])
    with pytest.raises(ValueError, match=r'^dataroot_gt: 1 of 1 images are smaller than the 8x8 crop \(gt_size 8\): '
                                         r'img0.png 7x20 \(height x width\); remove them or lower gt_size$'):
        _dataset(tmp_path / 'small')
