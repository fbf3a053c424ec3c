"""pyiqa metrics registered in BasicSR's METRIC_REGISTRY (kdsr_pdd.metrics), run through calculate_metric.

Oracles: BasicSR's calculate_psnr / calculate_niqe, the closed-form YIQ PSNR, the pip ``lpips`` package with the
same backbone weights, closed forms of hand-made NRQM random forests, and DISTS' symmetry. Weight-needing metrics
run on random weights written in the exact formats the wrappers read; the network is blocked in every test.
"""
import os.path as osp
import socket

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from basicsr.metrics import calculate_metric, calculate_niqe, calculate_psnr
from basicsr.utils.registry import METRIC_REGISTRY
from torchvision import models as tv_models

import kdsr_pdd.plugin  # noqa: F401  (registers the plugin into BasicSR)
from kdsr_pdd import metrics
from kdsr_pdd.checkpoints import CheckpointError
from kdsr_pdd.weights import WeightsNotFoundError


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Any network access fails loudly; the torch hub cache is an empty folder."""
    from pyiqa.utils import download_util

    def refuse(*args, **kwargs):
        raise AssertionError('network access attempted')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)
    monkeypatch.setattr(download_util, 'download_url_to_file', refuse)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))


def smooth_image(seed, size=32):
    """Smoothed uniform noise stretched to [0, 255], uint8 BGR (H, W, 3)."""
    img = cv2.GaussianBlur(np.random.default_rng(seed).random((size, size, 3)), (0, 0), 1.5)
    return np.round((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)


def noisy(img, seed, sigma=8.0):
    noise = np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.clip(img + noise, 0, 255).round().astype(np.uint8)


def metric(name, img, img2=None, **opt):
    data = {'img': img} if img2 is None else {'img': img, 'img2': img2}
    return calculate_metric(data, {'type': name, **opt})


def random_features_file(path, features, seed=0):
    """Features-only torchvision state dict (``features.*``) with random weights."""
    torch.manual_seed(seed)
    for module in features.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight)
            torch.nn.init.uniform_(module.bias, -0.1, 0.1)
    torch.save({f'features.{k}': v for k, v in features.state_dict().items()}, path)
    return str(path)


@pytest.fixture(scope='module')
def backbones(tmp_path_factory):
    folder = tmp_path_factory.mktemp('backbones')
    return {'alex': random_features_file(folder / 'alex.pth', tv_models.alexnet(weights=None).features),
            'vgg': random_features_file(folder / 'vgg16.pth',
                                        tv_models.vgg.make_layers(tv_models.vgg.cfgs['D']))}


def test_registered_without_shadowing_basicsr():
    for name in ('calculate_lpips', 'calculate_dists', 'calculate_musiq', 'calculate_nrqm', 'calculate_pyiqa_niqe',
                 'calculate_pyiqa_psnr', 'calculate_pyiqa_ssim'):
        assert METRIC_REGISTRY.get(name) is getattr(metrics, name)
    assert METRIC_REGISTRY.get('calculate_psnr') is calculate_psnr
    assert METRIC_REGISTRY.get('calculate_niqe') is calculate_niqe


# ------------------------------------------------------------------------------------------------ PSNR
@pytest.mark.parametrize('crop_border', [0, 4])
@pytest.mark.parametrize('test_y_channel', [False, True])
def test_pyiqa_psnr_equals_basicsr(test_y_channel, crop_border):
    gt = smooth_image(0)
    sr = noisy(gt, 1)
    ours = metric('calculate_pyiqa_psnr', sr, gt, crop_border=crop_border, test_y_channel=test_y_channel,
                  color_space='ycbcr', better='higher')
    reference = calculate_psnr(sr, gt, crop_border, test_y_channel=test_y_channel)
    assert abs(ours - reference) < 2e-4  # pyiqa adds eps 1e-8 to the MSE of [0, 1] images: 1.4e-4 dB at 35 dB
    with_eps = 10 * np.log10(1 / (10**(-reference / 10) + 1e-8))
    assert abs(ours - with_eps) < 2e-5
    chw = metric('calculate_pyiqa_psnr', sr.transpose(2, 0, 1), gt.transpose(2, 0, 1), crop_border=crop_border,
                 input_order='CHW', test_y_channel=test_y_channel, color_space='ycbcr')
    assert chw == pytest.approx(ours, abs=1e-9)


def test_pyiqa_psnr_default_y_is_yiq_luma_of_rgb():
    gt = smooth_image(2)
    sr = noisy(gt, 3)

    def luma(bgr):  # YIQ luma of the RGB image in [0, 1]
        return bgr[..., 2] / 255. * 0.299 + bgr[..., 1] / 255. * 0.587 + bgr[..., 0] / 255. * 0.114

    expected = 10 * np.log10(1 / (np.mean((luma(sr) - luma(gt))**2) + 1e-8))
    assert metric('calculate_pyiqa_psnr', sr, gt, test_y_channel=True) == pytest.approx(expected, abs=1e-4)


def test_pyiqa_psnr_crop_border_drops_the_border():
    gt = smooth_image(4)
    sr = gt.copy()
    sr[:4] = 255 - sr[:4]  # differences only inside the 4-pixel border
    assert metric('calculate_pyiqa_psnr', sr, gt, crop_border=4) == pytest.approx(80.0)  # pyiqa's eps 1e-8
    assert metric('calculate_pyiqa_psnr', sr, gt, crop_border=3) < 30


# ------------------------------------------------------------------------------------------------ SSIM
def test_pyiqa_ssim_is_the_standard_ssim_of_the_rounded_yiq_luma():
    """Oracle: scikit-image's SSIM (Gaussian window, sigma 1.5, population covariances, as Wang et al.) on the
    YIQ luma rounded to 8-bit levels, which pyiqa's ``ssim`` computes (PDD's evaluation)."""
    from skimage.metrics import structural_similarity

    gt = smooth_image(5)
    sr = noisy(gt, 6)

    def luma(bgr):
        return np.round(bgr[..., 2] * 0.299 + bgr[..., 1] * 0.587 + bgr[..., 0] * 0.114)

    expected = structural_similarity(luma(sr.astype(np.float64)), luma(gt.astype(np.float64)), gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False, data_range=255)
    assert metric('calculate_pyiqa_ssim', sr, gt, better='higher') == pytest.approx(expected, abs=1e-4)
    assert metric('calculate_pyiqa_ssim', gt, gt) == pytest.approx(1.0, abs=1e-9)
    cropped = gt.copy()
    cropped[:4] = 255 - cropped[:4]  # differences only inside the 4-pixel border
    assert metric('calculate_pyiqa_ssim', cropped, gt, crop_border=4) == pytest.approx(1.0, abs=1e-9)


# ------------------------------------------------------------------------------------------------ NIQE
@pytest.mark.parametrize('size, crop_border, blur', [(192, 0, 1.0), (200, 4, 2.5)])
def test_pyiqa_niqe_agrees_with_basicsr_on_ycbcr(size, crop_border, blur):
    img = cv2.GaussianBlur(np.random.default_rng(5).random((size, size, 3)) * 255, (0, 0), blur)
    img = noisy(img, 6, sigma=4)
    ours = metric('calculate_pyiqa_niqe', img, crop_border=crop_border, color_space='ycbcr')
    reference = calculate_niqe(img, crop_border)
    # same algorithm and pristine model; float32 RGB->Y rounding and pyiqa's torch resize leave ~1e-4 relative
    assert np.isfinite(ours) and ours == pytest.approx(reference, rel=1e-3)


def test_pyiqa_niqe_reads_a_mat_pristine_model(tmp_path):
    import basicsr.metrics
    params = np.load(osp.join(osp.dirname(basicsr.metrics.__file__), 'niqe_pris_params.npz'))
    mat = tmp_path / 'niqe_model.mat'
    scipy.io.savemat(mat, {'mu_prisparam': params['mu_pris_param'], 'cov_prisparam': params['cov_pris_param']})
    img = noisy(cv2.GaussianBlur(np.random.default_rng(7).random((192, 192, 3)) * 255, (0, 0), 1.5), 8)
    assert metric('calculate_pyiqa_niqe', img, weights_path=str(mat)) == pytest.approx(
        metric('calculate_pyiqa_niqe', img), rel=1e-12)
    with pytest.raises(ValueError, match='96x96'):
        metric('calculate_pyiqa_niqe', img[:100, :100], crop_border=4)


# ------------------------------------------------------------------------------------------------ LPIPS
@pytest.mark.parametrize('net', ['alex', 'vgg'])
def test_lpips_matches_pip_lpips_with_the_same_backbone(net, backbones):
    import lpips
    gt = smooth_image(10, size=64)
    sr, sr2 = noisy(gt, 11), noisy(gt, 12, sigma=20)
    opt = dict(net=net, backbone_weights_path=backbones[net], crop_border=4)  # heads: the pip lpips package
    value = metric('calculate_lpips', sr, gt, **opt)
    assert np.isfinite(value) and value > 0
    assert metric('calculate_lpips', gt, gt, **opt) == 0.0
    assert metric('calculate_lpips', sr2, gt, **opt) != pytest.approx(value, rel=1e-3)

    reference = lpips.LPIPS(net=net, version='0.1', pnet_rand=True, verbose=False).eval()
    features = torch.load(backbones[net], weights_only=True)
    for stage in range(1, 6):
        for index, layer in getattr(reference.net, f'slice{stage}').named_children():
            layer.load_state_dict({k: features[f'features.{index}.{k}'] for k in layer.state_dict()})

    def rgb(img):
        return torch.from_numpy(img[4:-4, 4:-4, ::-1].transpose(2, 0, 1) / 255.).float()[None]

    with torch.no_grad():
        expected = reference(rgb(sr), rgb(gt), normalize=True).item()
    assert value == pytest.approx(expected, rel=1e-5)


def test_lpips_network_is_built_once(backbones):
    gt = smooth_image(13, size=64)
    metric('calculate_lpips', gt, gt, backbone_weights_path=backbones['alex'])
    builds = metrics._lpips_net.cache_info().misses
    metric('calculate_lpips', noisy(gt, 14), gt, backbone_weights_path=backbones['alex'], crop_border=2)
    assert metrics._lpips_net.cache_info().misses == builds


def test_lpips_options_are_checked(backbones):
    gt = smooth_image(15)
    with pytest.raises(ValueError, match="net must be one of"):
        metric('calculate_lpips', gt, gt, net='squeeze')
    with pytest.raises(TypeError, match='backbone_weight_path'):  # a misspelt option is not silently ignored
        metric('calculate_lpips', gt, gt, backbone_weight_path=backbones['alex'])
    with pytest.raises(ValueError, match='ground-truth'):
        metric('calculate_lpips', gt, backbone_weights_path=backbones['alex'])


# ------------------------------------------------------------------------------------------------ DISTS
def test_dists_random_weights(tmp_path, backbones):
    torch.manual_seed(0)
    channels = 3 + 64 + 128 + 256 + 512 + 512
    weights = tmp_path / 'dists.pth'
    torch.save({'alpha': torch.rand(1, channels, 1, 1) + 0.05, 'beta': torch.rand(1, channels, 1, 1) + 0.05}, weights)
    opt = dict(weights_path=str(weights), backbone_weights_path=backbones['vgg'])
    gt = smooth_image(20, size=64)
    sr, sr2 = noisy(gt, 21), noisy(gt, 22, sigma=25)
    value = metric('calculate_dists', sr, gt, **opt)
    assert np.isfinite(value) and value > 0
    assert metric('calculate_dists', gt, gt, **opt) == pytest.approx(0.0, abs=1e-6)
    assert metric('calculate_dists', gt, sr, **opt) == pytest.approx(value, rel=1e-5)  # symmetric formula
    assert metric('calculate_dists', sr2, gt, **opt) > value

    torch.save({'alpha': torch.rand(1, channels, 1, 1)}, tmp_path / 'alpha_only.pth')
    with pytest.raises(CheckpointError, match='calculate_dists: .* lacks beta'):
        metric('calculate_dists', sr, gt, weights_path=str(tmp_path / 'alpha_only.pth'),
               backbone_weights_path=backbones['vgg'])


# ------------------------------------------------------------------------------------------------ MUSIQ
def test_musiq_random_weights(tmp_path):
    from pyiqa.archs.musiq_arch import MUSIQ
    torch.manual_seed(0)
    weights = tmp_path / 'musiq.pth'
    torch.save(MUSIQ(pretrained=False).state_dict(), weights)
    img = smooth_image(30, size=64)
    value = metric('calculate_musiq', img, weights_path=str(weights))
    assert np.isfinite(value)
    assert metric('calculate_musiq', img[..., ::-1].copy(), weights_path=str(weights)) != pytest.approx(value)


# ------------------------------------------------------------------------------------------------ NRQM
def nrqm_model_file(path, linear, forests):
    """A model in the layout of pyiqa's NRQM_model.mat: ``model.linear`` (4, 1) and ``model.rf``, three random
    forests of one depth-1 tree each, given as (1-based feature index, threshold, left leaf, right leaf)."""
    cell = np.empty((1, 3), dtype=object)
    for i, (attribute, threshold, left, right) in enumerate(forests):
        cell[0, i] = {'ldau': np.array([[2], [0], [0]]), 'rdau': np.array([[3], [0], [0]]),
                      'unused_2': np.zeros((3, 1)), 'unused_3': np.zeros((3, 1)),
                      'threshold': np.array([[threshold], [0.], [0.]]),
                      'prediction': np.array([[0.], [left], [right]]),
                      'attribute': np.array([[attribute], [1], [1]])}
    scipy.io.savemat(path, {'model': {'linear': np.array(linear, dtype=float).reshape(4, 1), 'rf': cell}})
    return str(path)


def test_nrqm_with_hand_made_forests(tmp_path, monkeypatch):
    from pyiqa.archs import nrqm_arch
    linear = [0.5, 1.0, 2.0, 3.0]
    constant = nrqm_model_file(tmp_path / 'constant.mat', linear, [(1, np.inf, 1.0, 9.0), (1, np.inf, 2.0, 9.0),
                                                                    (1, np.inf, 3.0, 9.0)])
    features = []
    original = nrqm_arch.random_forest_regression

    def spy(feat, *forest):
        features.append(feat[0].double().numpy())
        return original(feat, *forest)

    monkeypatch.setattr(nrqm_arch, 'random_forest_regression', spy)
    img_a, img_b = smooth_image(40, size=48), noisy(smooth_image(40, size=48), 41, sigma=30)  # NRQM needs 48
    for img in (img_a, img_b):  # every tree goes left: 0.5 + 1 * 1 + 2 * 2 + 3 * 3
        assert metric('calculate_nrqm', img, weights_path=constant) == pytest.approx(14.5, abs=1e-9)
    dct_a, dct_b = features[0], features[3]  # first forest (DCT features) of each image
    gaps = np.where(np.isfinite(dct_a) & np.isfinite(dct_b), np.abs(dct_a - dct_b), -1)
    j = int(np.argmax(gaps))
    assert gaps[j] > 0
    split = nrqm_model_file(tmp_path / 'split.mat', linear, [(j + 1, (dct_a[j] + dct_b[j]) / 2, 1.0, 5.0),
                                                             (1, np.inf, 2.0, 9.0), (1, np.inf, 3.0, 9.0)])
    for img, feature in ((img_a, dct_a[j]), (img_b, dct_b[j])):
        leaf = 1.0 if feature <= (dct_a[j] + dct_b[j]) / 2 else 5.0
        assert metric('calculate_nrqm', img, weights_path=split) == pytest.approx(0.5 + leaf + 4 + 9, abs=1e-9)


# ------------------------------------------------------------------------------------------------ missing weights
@pytest.mark.parametrize('name, opt, option, expected_file', [
    ('calculate_lpips', {}, 'backbone_weights_path', 'alexnet-owt-7be5be79.pth'),
    ('calculate_lpips', {'net': 'vgg'}, 'backbone_weights_path', 'vgg16-397923af.pth'),
    ('calculate_lpips', {'weights_path': 'nowhere/alex.pth'}, 'weights_path', 'nowhere/alex.pth'),
    ('calculate_dists', {}, 'weights_path', 'DISTS_weights-f5e65c96.pth'),
    ('calculate_dists', {'weights_path': 'EXISTING'}, 'backbone_weights_path', 'vgg16-397923af.pth'),
    ('calculate_musiq', {}, 'weights_path', 'musiq_koniq_ckpt-e95806b9.pth'),
    ('calculate_nrqm', {}, 'weights_path', 'NRQM_model.mat'),
    ('calculate_pyiqa_niqe', {'weights_path': 'nowhere/niqe.mat'}, 'weights_path', 'nowhere/niqe.mat'),
])
def test_missing_weights_give_one_line_naming_option_and_file(name, opt, option, expected_file, tmp_path):
    if opt.get('weights_path') == 'EXISTING':
        opt = {'weights_path': str(tmp_path / 'dists.pth')}
        torch.save({}, opt['weights_path'])
    img = smooth_image(50, size=192)
    with pytest.raises(WeightsNotFoundError) as error:
        metric(name, img, img, **opt)
    message = str(error.value)
    assert option in message and expected_file in message and '\n' not in message
    assert 'Nothing is downloaded' in message
