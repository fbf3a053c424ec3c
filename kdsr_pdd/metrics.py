"""Perceptual and no-reference image-quality metrics from pyiqa 0.1.16, registered for BasicSR's ``val.metrics``.

BasicSR calls every metric as ``fn(img=sr, img2=gt, **options)`` with uint8 BGR HWC images (``tensor2img``
outputs). Each function here crops ``crop_border`` pixels from every edge (as BasicSR does), turns the images
into RGB float tensors (1, 3, H, W) in [0, 1] on CUDA when available, else CPU, and evaluates a pyiqa network
that is built once per (metric, options) and cached. Defaults follow pyiqa's own defaults for the metric, which
the PDD paper used for its evaluation (e.g. Y channels come from YIQ unless ``color_space: ycbcr``). The option
``better`` ('higher' / 'lower') is accepted and ignored: only BasicSR's best-metric tracking reads it, so set
``better: lower`` in the YAML for LPIPS, DISTS and NIQE.

Nothing is downloaded. Every weight file comes from an option or from the cache folder where pyiqa / torchvision
would have stored it (``HUB = torch.hub.get_dir()``, i.e. ``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``);
a missing file raises one line naming the option and the expected file before pyiqa is touched.

=========================  ==========================  =====================================================
function                   option                      file (default location)
=========================  ==========================  =====================================================
calculate_lpips            weights_path                v0.1 linear heads ``lin0..lin4`` (pip ``lpips`` package:
                                                       ``lpips/weights/v0.1/{alex,vgg}.pth``)
                           backbone_weights_path       torchvision ImageNet weights, full or ``features.*`` only
                                                       (``HUB/checkpoints/alexnet-owt-7be5be79.pth`` for
                                                       ``net: alex``, ``HUB/checkpoints/vgg16-397923af.pth`` for
                                                       ``net: vgg``)
calculate_dists            weights_path                ``alpha`` / ``beta`` (``HUB/pyiqa/DISTS_weights-f5e65c96.pth``)
                           backbone_weights_path       torchvision VGG16 (``HUB/checkpoints/vgg16-397923af.pth``)
calculate_musiq            weights_path                MUSIQ state dict (``HUB/pyiqa/musiq_koniq_ckpt-e95806b9.pth``)
calculate_nrqm             weights_path                ``HUB/pyiqa/NRQM_model.mat``
calculate_pyiqa_niqe       weights_path (optional)     .mat with ``mu_prisparam`` / ``cov_prisparam``; default:
                                                       the official pristine model bundled with BasicSR
                                                       (``basicsr/metrics/niqe_pris_params.npz``), the model of
                                                       the LIVE release that pyiqa's niqe_modelparameters.mat
                                                       also holds (not compared byte-wise: no download)
calculate_pyiqa_psnr       none
calculate_pyiqa_ssim       none
=========================  ==========================  =====================================================

Which implementation reproduces which paper: PDD reports pyiqa's metrics (its README: IQA-PyTorch), so its SSIM
is :func:`calculate_pyiqa_ssim` (pyiqa's ``ssim``: Y of YIQ, no downsampling). KDSR's classic tables come from the
authors' own MATLAB-style SSIM on Y (BT.601 with a 16 offset), which BasicSR's ``calculate_ssim`` with
``test_y_channel: true`` follows closely (the project measured +3.4e-4 to +6.3e-4 above the authors' evaluation on
Set5 Gaussian8); KDSR's real-world tables used BasicSR's ``calculate_psnr`` / ``calculate_ssim`` directly.
"""
import contextlib
import functools
import importlib.util
import os.path as osp

import numpy as np
import torch
from basicsr.metrics.metric_util import reorder_image
from basicsr.utils import img2tensor
from basicsr.utils.registry import METRIC_REGISTRY
from torchvision import models as tv_models

from kdsr_pdd.checkpoints import CheckpointError, load_weights, read_state_dict
from kdsr_pdd.weights import LocalTorchvisionModels, WeightsNotFoundError

BACKBONE_FILES = {'alex': 'alexnet-owt-7be5be79.pth', 'vgg': 'vgg16-397923af.pth'}
DISTS_FILE = 'DISTS_weights-f5e65c96.pth'
MUSIQ_FILE = 'musiq_koniq_ckpt-e95806b9.pth'
NRQM_FILE = 'NRQM_model.mat'
NIQE_BLOCK = 96  # NIQE's block size: smaller images have no block to measure


# ------------------------------------------------------------------------------------------------ weight files
def _checkpoint_dir():
    return osp.join(torch.hub.get_dir(), 'checkpoints')


def _pyiqa_dir():
    return osp.join(torch.hub.get_dir(), 'pyiqa')


def _lpips_package_heads(net):
    spec = importlib.util.find_spec('lpips')
    if spec is None or not spec.submodule_search_locations:
        return None
    return osp.join(spec.submodule_search_locations[0], 'weights', 'v0.1', f'{net}.pth')


def _weight_file(metric, option, given, default, what):
    """Return the file given by ``option`` (or ``default`` when the option is unset); one-line error if absent."""
    if given is not None:
        if osp.isfile(given):
            return osp.abspath(given)
        raise WeightsNotFoundError(f'{metric}: {option} = {given!r} does not exist; expected {what}. '
                                   'Nothing is downloaded.')
    if default is not None and osp.isfile(default):
        return default
    looked = f' (looked for {default})' if default else ''
    raise WeightsNotFoundError(f'{metric}: set the option {option} to a local {what}{looked}. Nothing is downloaded.')


def _backbone_file(metric, net, given):
    name = {'alex': 'torchvision AlexNet', 'vgg': 'torchvision VGG16'}[net]
    return _weight_file(metric, 'backbone_weights_path', given, osp.join(_checkpoint_dir(), BACKBONE_FILES[net]),
                        f'{name} ImageNet weights ({BACKBONE_FILES[net]})')


def default_weight_files():
    """{what: the file a metric reads when its option is unset} (the table of the module docstring)."""
    checkpoints, pyiqa_dir = _checkpoint_dir(), _pyiqa_dir()
    return {
        'LPIPS heads (alex)': _lpips_package_heads('alex'),
        'LPIPS / DISTS backbones: AlexNet': osp.join(checkpoints, BACKBONE_FILES['alex']),
        'LPIPS / DISTS backbones: VGG16': osp.join(checkpoints, BACKBONE_FILES['vgg']),
        'DISTS alpha / beta': osp.join(pyiqa_dir, DISTS_FILE),
        'MUSIQ': osp.join(pyiqa_dir, MUSIQ_FILE),
        'NRQM': osp.join(pyiqa_dir, NRQM_FILE),
    }


def _read_entries(path, keys, metric):
    """The entries ``keys`` of the state dict in ``path`` (other entries are ignored)."""
    state, _ = read_state_dict(path)
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f'{metric}: {path} lacks {", ".join(missing)}.')
    return {k: state[k] for k in keys}


@contextlib.contextmanager
def _torchvision_from(arch_module, path):
    original = arch_module.models
    arch_module.models = LocalTorchvisionModels(tv_models, lambda name: path)
    try:
        yield
    finally:
        arch_module.models = original


# ------------------------------------------------------------------------------------------------ cached networks
def _device():
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def _ready(model, device):
    model.requires_grad_(False)
    return model.to(device).eval()


@functools.cache
def _lpips_net(net, heads_path, backbone_path, device):
    from pyiqa.archs import lpips_arch
    heads = _read_entries(heads_path, [f'lin{i}.model.1.weight' for i in range(5)], 'calculate_lpips')
    with _torchvision_from(lpips_arch, backbone_path):
        model = lpips_arch.LPIPS(pretrained=False, net=net, version='0.1')
    model.load_state_dict(heads, strict=False)
    return _ready(model, device)


@functools.cache
def _dists_net(weights_path, backbone_path, device):
    from pyiqa.archs import dists_arch
    weights = _read_entries(weights_path, ['alpha', 'beta'], 'calculate_dists')
    with _torchvision_from(dists_arch, backbone_path):
        model = dists_arch.DISTS(pretrained=False)
    model.load_state_dict(weights, strict=False)
    return _ready(model, device)


@functools.cache
def _musiq_net(weights_path, num_class, device):
    from pyiqa.archs import musiq_arch
    model = musiq_arch.MUSIQ(pretrained=False, num_class=num_class)
    load_weights(model, weights_path)
    return _ready(model, device)


@functools.cache
def _nrqm_net(weights_path, test_y_channel, color_space):
    from pyiqa.archs import nrqm_arch
    return nrqm_arch.NRQM(test_y_channel=test_y_channel, color_space=color_space, pretrained_model_path=weights_path)


@functools.cache
def _niqe_net(weights_path, test_y_channel, color_space):
    """pyiqa's NIQE with its pristine model from a .mat file, or from BasicSR's bundled parameters."""
    from pyiqa.archs import niqe_arch
    if weights_path is not None:
        return niqe_arch.NIQE(test_y_channel=test_y_channel, color_space=color_space,
                              pretrained_model_path=weights_path)
    import basicsr.metrics
    params = np.load(osp.join(osp.dirname(basicsr.metrics.__file__), 'niqe_pris_params.npz'))
    mu, cov = torch.from_numpy(params['mu_pris_param'].ravel()), torch.from_numpy(params['cov_pris_param'])
    return functools.partial(niqe_arch.calculate_niqe, crop_border=0, test_y_channel=test_y_channel,
                             color_space=color_space, mu_pris_param=mu, cov_pris_param=cov)


@functools.cache
def _psnr_net(test_y_channel, color_space):
    from pyiqa.archs import psnr_arch
    return psnr_arch.PSNR(test_y_channel=test_y_channel, color_space=color_space)


@functools.cache
def _ssim_net(test_y_channel, color_space, downsample):
    from pyiqa.archs import ssim_arch
    return ssim_arch.SSIM(test_y_channel=test_y_channel, color_space=color_space, downsample=downsample)


# ------------------------------------------------------------------------------------------------ evaluation
def _to_tensor(img, crop_border, input_order, device):
    """BGR image (H, W, C) in [0, 255] -> RGB tensor (1, 3, H', W') in [0, 1] with ``crop_border`` removed."""
    img = reorder_image(img, input_order=input_order)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return img2tensor(img.astype(np.float32) / 255., bgr2rgb=True, float32=True).unsqueeze(0).to(device)


def _score(model, device, crop_border, input_order, *images):
    tensors = [_to_tensor(img, crop_border, input_order, device) for img in images]
    with torch.no_grad():
        return float(model(*tensors).item())


def _pair(metric, img, img2):
    if img2 is None:
        raise ValueError(f'{metric} is a full-reference metric: the validation set needs ground-truth images.')
    if img.shape != img2.shape:
        raise ValueError(f'{metric}: image shapes differ: {img.shape} vs {img2.shape}.')
    return img, img2


@METRIC_REGISTRY.register()
def calculate_lpips(img, img2=None, crop_border=0, input_order='HWC', net='alex', weights_path=None,
                    backbone_weights_path=None, better=None):
    """LPIPS v0.1 (lower is better; identical images give 0), ``net`` 'alex' or 'vgg'.

    Images are fed in RGB order, as pyiqa and pip ``lpips`` expect (the PDD authors' in-training LPIPS fed BGR).
    """
    if net not in BACKBONE_FILES:
        raise ValueError(f'calculate_lpips: net must be one of {sorted(BACKBONE_FILES)}, got {net!r}.')
    heads = _weight_file('calculate_lpips', 'weights_path', weights_path, _lpips_package_heads(net),
                         f'LPIPS v0.1 linear heads for {net} (lpips/weights/v0.1/{net}.pth of the pip lpips package)')
    backbone = _backbone_file('calculate_lpips', net, backbone_weights_path)
    device = _device()
    model = _lpips_net(net, heads, backbone, device)
    return _score(model, device, crop_border, input_order, *_pair('calculate_lpips', img, img2))


@METRIC_REGISTRY.register()
def calculate_dists(img, img2=None, crop_border=0, input_order='HWC', weights_path=None, backbone_weights_path=None,
                    better=None):
    """DISTS (lower is better; identical images give 0 up to rounding) on RGB images."""
    weights = _weight_file('calculate_dists', 'weights_path', weights_path, osp.join(_pyiqa_dir(), DISTS_FILE),
                           f'DISTS alpha/beta weights ({DISTS_FILE})')
    backbone = _backbone_file('calculate_dists', 'vgg', backbone_weights_path)
    device = _device()
    model = _dists_net(weights, backbone, device)
    return _score(model, device, crop_border, input_order, *_pair('calculate_dists', img, img2))


@METRIC_REGISTRY.register()
def calculate_musiq(img, img2=None, crop_border=0, input_order='HWC', weights_path=None, num_class=1,
                    better=None):
    """No-reference MUSIQ score of ``img`` (higher is better; ``img2`` is ignored).

    ``num_class``: 1 for the KonIQ / SPAQ / PaQ-2-PiQ checkpoints, 10 for the AVA one.
    """
    weights = _weight_file('calculate_musiq', 'weights_path', weights_path, osp.join(_pyiqa_dir(), MUSIQ_FILE),
                           f'MUSIQ checkpoint ({MUSIQ_FILE})')
    device = _device()
    return _score(_musiq_net(weights, num_class, device), device, crop_border, input_order, img)


@METRIC_REGISTRY.register()
def calculate_nrqm(img, img2=None, crop_border=0, input_order='HWC', test_y_channel=True, color_space='yiq',
                   weights_path=None, better=None):
    """No-reference NRQM (Ma et al.) of ``img`` (higher is better; ``img2`` is ignored). Needs >= 48x48 pixels."""
    weights = _weight_file('calculate_nrqm', 'weights_path', weights_path, osp.join(_pyiqa_dir(), NRQM_FILE),
                           f'NRQM model ({NRQM_FILE})')
    model = _nrqm_net(weights, test_y_channel, color_space)
    return _score(model, _device(), crop_border, input_order, img)


@METRIC_REGISTRY.register()
def calculate_pyiqa_niqe(img, img2=None, crop_border=0, input_order='HWC', test_y_channel=True, color_space='yiq',
                         weights_path=None, better=None):
    """No-reference NIQE of ``img`` computed by pyiqa (lower is better; ``img2`` is ignored).

    With ``color_space: ycbcr`` it agrees with BasicSR's ``calculate_niqe`` to about 1e-3 relative.
    """
    if weights_path is not None:
        weights_path = _weight_file('calculate_pyiqa_niqe', 'weights_path', weights_path, None,
                                    'NIQE pristine model (.mat with mu_prisparam, cov_prisparam)')
    size = reorder_image(img, input_order=input_order).shape[:2]
    if min(size) - 2 * crop_border < NIQE_BLOCK:
        raise ValueError(f'calculate_pyiqa_niqe: image {size} with crop_border {crop_border} is smaller than '
                         f'one {NIQE_BLOCK}x{NIQE_BLOCK} NIQE block.')
    model = _niqe_net(weights_path, test_y_channel, color_space)
    return _score(model, _device(), crop_border, input_order, img)


@METRIC_REGISTRY.register()
def calculate_pyiqa_psnr(img, img2=None, crop_border=0, input_order='HWC', test_y_channel=False, color_space='yiq',
                         better=None):
    """PSNR (dB) computed by pyiqa, to cross-check BasicSR's ``calculate_psnr``.

    With ``color_space: ycbcr`` the Y channel is BasicSR's; identical images give 80 dB (pyiqa's eps 1e-8 on the MSE
    of [0, 1] images) instead of inf.
    """
    model = _psnr_net(test_y_channel, color_space)
    return _score(model, _device(), crop_border, input_order, *_pair('calculate_pyiqa_psnr', img, img2))


@METRIC_REGISTRY.register()
def calculate_pyiqa_ssim(img, img2=None, crop_border=0, input_order='HWC', test_y_channel=True, color_space='yiq',
                         downsample=False, better=None):
    """SSIM computed by pyiqa (its ``ssim`` metric: Y of ``color_space``, 11x11 Gaussian window), as PDD reports it.

    Defaults are pyiqa's (``test_y_channel: true``, ``color_space: yiq``, no downsampling); identical images give 1.
    """
    model = _ssim_net(test_y_channel, color_space, downsample)
    return _score(model, _device(), crop_border, input_order, *_pair('calculate_pyiqa_ssim', img, img2))
