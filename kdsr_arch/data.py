"""Classic blind-SR degradations of KDSR (ICLR 2023, Sec. 4.1) and the data built on them.

The classic setting degrades a clean HR image ``x`` as ``y = Q((x * k) down_s + n)``:

* ``k``: a 21x21 Gaussian blur kernel, isotropic (std ``sigma``) or anisotropic (stds ``lambda1``,
  ``lambda2`` along axes rotated by ``theta``), applied with reflection padding;
* ``down_s``: MATLAB-style antialiased bicubic downsampling by the integer scale ``s``;
* ``n``: white Gaussian noise with std ``level / 255``;
* ``Q``: 8-bit quantisation (clamp to [0, 1], round to a multiple of 1/255).

Everything here is batched torch on the device and dtype of its inputs. Training synthesises
LR on the fly from HR crops (:class:`KDSRHRDataset` + :class:`ClassicDegradation` in the model's
``feed_data``); evaluation uses fixed LR folders written by :func:`build_gaussian8` and
:func:`build_aniso_noise`.
"""
import functools
import math
import os.path as osp
import random

import cv2
import numpy as np
import torch
from basicsr.data.data_util import paths_from_folder, paths_from_lmdb
from basicsr.data.transforms import augment, mod_crop
from basicsr.utils import FileClient, imfrombytes, img2tensor, imwrite, tensor2img
from basicsr.utils.img_process_util import filter2D
from basicsr.utils.matlab_functions import calculate_weights_indices
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data as data

# Training ranges of the isotropic kernel width per scale: x4 from the paper, x2/x3 as in DASR/IKC.
DEFAULT_SIGMA_RANGES = {2: (0.2, 2.0), 3: (0.2, 3.0), 4: (0.2, 4.0)}

# Gaussian8 test kernel widths (IKC, Gu et al. 2019): 8 evenly spaced values per scale.
GAUSSIAN8_SIGMAS = {
    2: (0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6),
    3: (1.35, 1.5, 1.65, 1.8, 1.95, 2.1, 2.25, 2.4),
    4: (1.8, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0, 3.2),
}

# Stds at or below this give a delta kernel (no blur), as sigma = 0 does in the authors' code;
# above it the Gaussian is already a delta to float precision, so no real kernel changes.
_MIN_STD = 1e-2


def _kernel_grid(size, like):
    """Offsets from the kernel centre: ``(x, y)``, each [size, size]; x = column (right), y = row (down)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f'kernel_size must be a positive odd number, got {size}')
    ax = torch.arange(size, device=like.device, dtype=like.dtype) - size // 2
    y, x = torch.meshgrid(ax, ax, indexing='ij')
    return x, y


def _normalised(log_k):
    """exp of the log-kernel [B,k,k] (0 at the centre), scaled to unit sum per kernel."""
    k = torch.exp(log_k)
    return k / k.sum(dim=(1, 2), keepdim=True)


def isotropic_gaussian_kernels(sigma, size=21):
    """Isotropic Gaussian kernels ``exp(-(x^2 + y^2) / (2 sigma^2))``, unit sum.

    Args:
        sigma (Tensor): [B] standard deviations in pixels (floating point). Values <= 0.01 give a
            delta kernel (no blur).
        size (int): odd kernel size.

    Returns:
        Tensor: [B, size, size] on ``sigma``'s device and dtype.
    """
    x, y = _kernel_grid(size, sigma)
    var = sigma.clamp_min(_MIN_STD).square().view(-1, 1, 1)
    return _normalised(-(x * x + y * y) / (2 * var))


def anisotropic_gaussian_kernels(lambda1, lambda2, theta, size=21):
    """Anisotropic Gaussian kernels ``exp(-v^T S^-1 v / 2)``, unit sum.

    The covariance is ``S = R(theta) diag(lambda1^2, lambda2^2) R(theta)^T`` with the rotation
    ``R = [[cos, -sin], [sin, cos]]`` acting on ``v = (x, y)``, x = column offset (to the right) and
    y = row offset (downwards). So ``lambda1`` is the std along the direction at angle ``theta`` from
    the x axis, and ``theta`` and ``theta + pi`` give the same kernel.

    Args:
        lambda1 (Tensor): [B] std along the first principal axis (pixels); values <= 0.01 act as 0.
        lambda2 (Tensor): [B] std along the second principal axis (pixels).
        theta (Tensor): [B] rotation in radians.
        size (int): odd kernel size.

    Returns:
        Tensor: [B, size, size] on ``lambda1``'s device and dtype.
    """
    x, y = _kernel_grid(size, lambda1)
    cos, sin = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    u = cos * x + sin * y  # coordinates in the principal frame: R^T v
    w = -sin * x + cos * y
    var1 = lambda1.clamp_min(_MIN_STD).square().view(-1, 1, 1)
    var2 = lambda2.clamp_min(_MIN_STD).square().view(-1, 1, 1)
    return _normalised(-(u * u / var1 + w * w / var2) / 2)


def blur(x, kernels):
    """Blur each sample with its own kernel (correlation; Gaussians are point-symmetric), reflection padding.

    Args:
        x (Tensor): [B, C, H, W].
        kernels (Tensor): [B, k, k], k odd; the same kernel is used for every channel of a sample.

    Returns:
        Tensor: [B, C, H, W].
    """
    b, _, h, w = x.shape
    if kernels.dim() != 3 or kernels.shape[0] != b or kernels.shape[1] != kernels.shape[2] \
            or kernels.shape[1] % 2 == 0:
        raise ValueError(f'blur: kernels must be [B={b}, k, k] with k odd, got {tuple(kernels.shape)}')
    pad = kernels.shape[1] // 2
    if pad >= h or pad >= w:
        raise ValueError(f'blur: a {kernels.shape[1]}x{kernels.shape[1]} kernel needs images larger than '
                         f'{pad} pixels per side for reflection padding, got {h}x{w}')
    return filter2D(x, kernels.to(x.dtype))  # BasicSR's per-sample reflection-padded blur


@functools.lru_cache(maxsize=32)
def _bicubic_taps(in_length, scale, device, dtype):
    """BasicSR's MATLAB bicubic weights for downsampling ``in_length`` by ``scale``.

    Returns ``(weights [out, p], indices [out, p])`` where ``indices`` point into the un-padded
    signal: BasicSR's indices refer to a symmetrically padded copy; they are mapped back here with the
    same half-sample symmetric extension (``-1 -> 0``, ``n -> n-1``), for any padding length.
    """
    weights, indices, sym_len_start, _ = calculate_weights_indices(in_length, in_length // scale, 1 / scale,
                                                                   'cubic', 4, True)
    idx = indices.long() - sym_len_start
    idx = idx.remainder(2 * in_length)
    idx = torch.where(idx >= in_length, 2 * in_length - 1 - idx, idx)
    return weights.to(device=device, dtype=dtype), idx.to(device)


def bicubic_downsample(x, scale):
    """MATLAB ``imresize(x, 1/scale)`` (bicubic, antialiased), batched on ``x``'s device.

    Matches :func:`basicsr.utils.matlab_functions.imresize` (whose weights and indices it reuses),
    including MATLAB's symmetric (mirror) border extension. The KDSR authors' port clamps border
    indices instead (replicate); outputs differ only within a few pixels of the border.

    Args:
        x (Tensor): [B, C, H, W], H and W multiples of ``scale``.
        scale (int): integer downsampling factor.

    Returns:
        Tensor: [B, C, H/scale, W/scale].
    """
    if x.dim() != 4:
        raise ValueError(f'bicubic_downsample: expected [B, C, H, W], got shape {tuple(x.shape)}')
    h, w = x.shape[-2:]
    if int(scale) != scale or scale < 1 or h % scale or w % scale:
        raise ValueError(f'bicubic_downsample: image size {h}x{w} must be a multiple of the integer scale {scale}')
    scale = int(scale)
    weights_h, idx_h = _bicubic_taps(h, scale, x.device, x.dtype)
    weights_w, idx_w = _bicubic_taps(w, scale, x.device, x.dtype)
    rows = torch.einsum('bcopw,op->bcow', x[:, :, idx_h, :], weights_h)
    return torch.einsum('bchoq,oq->bcho', rows[:, :, :, idx_w], weights_w)


def add_gaussian_noise(x, levels, generator=None):
    """Add white Gaussian noise with std ``levels[b] / 255`` to sample b.

    Args:
        x (Tensor): [B, C, H, W] in [0, 1].
        levels (Tensor): [B] noise stds in 0-255 units.
        generator (torch.Generator, optional): for reproducible noise (must live on ``x.device``).

    Returns:
        Tensor: [B, C, H, W], not clipped.
    """
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + noise * (levels.to(x.dtype) / 255).view(-1, 1, 1, 1)


def quantize_8bit(x):
    """Clamp to [0, 1] and round to the nearest multiple of 1/255 (ties to even); same shape as ``x``."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def classic_degrade(hr, kernels, scale, noise_levels=None, generator=None):
    """``quantize_8bit(bicubic_downsample(blur(hr, kernels), scale) + noise)``.

    Args:
        hr (Tensor): [B, C, H, W] in [0, 1], H and W multiples of ``scale``.
        kernels (Tensor): [B, k, k] blur kernels.
        scale (int): downsampling factor.
        noise_levels (Tensor, optional): [B] noise stds in 0-255 units; None for no noise.
        generator (torch.Generator, optional): source of the noise sample.

    Returns:
        Tensor: [B, C, H/scale, W/scale], multiples of 1/255 in [0, 1].
    """
    lq = bicubic_downsample(blur(hr, kernels), scale)
    if noise_levels is not None:
        lq = add_gaussian_noise(lq, noise_levels, generator)
    return quantize_8bit(lq)


def _check_range(name, value, low_bound=0.0):
    """``value`` as a (lo, hi) float pair with low_bound < lo <= hi, else a ValueError naming ``name``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f'{name} must be a pair [low, high] of numbers, got {value!r}') from None
    if not low_bound < lo <= hi:
        raise ValueError(f'{name} must satisfy {low_bound} < low <= high, got {value!r}')
    return lo, hi


class ClassicDegradation:
    """KDSR classic degradation: blur (iso / aniso Gaussian) -> bicubic down x``scale`` -> noise -> 8 bit.

    Calling it on HR [B, 3, H, W] in [0, 1] (H, W multiples of ``scale``) returns LR
    [B, 3, H/scale, W/scale], drawing kernels and noise levels from torch's global RNG on
    ``hr.device``:

    * iso: sigma ~ U[sigma_range]; aniso: lambda1, lambda2 ~ U[lambda_range] independently, theta ~ U[0, pi);
    * noise std ~ U[0, noise_max] / 255 (``noise_max`` in 0-255 units; 0 means no noise).

    ``per_sample=True`` (the default) draws a kernel and a noise level for every sample, so each step
    shows B different degradations and the IDR encoder has to tell them apart within a batch.
    ``per_sample=False`` draws one per batch, as the authors' training code did.

    Args:
        scale (int): downsampling factor.
        kernel (str): 'iso' or 'aniso'.
        sigma_range (pair, optional): iso std range; default x2 [0.2, 2], x3 [0.2, 3], x4 [0.2, 4].
        lambda_range (pair): aniso std range per principal axis (paper: [0.2, 4]).
        noise_max (float): maximal noise std in 0-255 units (paper aniso+noise model: 25).
        kernel_size (int): odd blur kernel size (paper: 21).
        per_sample (bool): one degradation per sample (True) or per batch (False).
    """

    def __init__(self, scale=4, kernel='iso', sigma_range=None, lambda_range=(0.2, 4.0), noise_max=0.0,
                 kernel_size=21, per_sample=True):
        if int(scale) != scale or scale < 1:
            raise ValueError(f'scale must be a positive integer, got {scale!r}')
        if kernel not in ('iso', 'aniso'):
            raise ValueError(f"kernel must be 'iso' or 'aniso', got {kernel!r}")
        if sigma_range is None:
            if scale not in DEFAULT_SIGMA_RANGES:
                raise ValueError(f'no default sigma_range for scale {scale}; set sigma_range explicitly')
            sigma_range = DEFAULT_SIGMA_RANGES[scale]
        if not isinstance(noise_max, (int, float)) or noise_max < 0:
            raise ValueError(f'noise_max must be a number >= 0 (0-255 units), got {noise_max!r}')
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be a positive odd integer, got {kernel_size!r}')
        if not isinstance(per_sample, bool):
            raise ValueError(f'per_sample must be true or false, got {per_sample!r}')
        self.scale = int(scale)
        self.kernel = kernel
        self.sigma_range = _check_range('sigma_range', sigma_range)
        self.lambda_range = _check_range('lambda_range', lambda_range)
        self.noise_max = float(noise_max)
        self.kernel_size = kernel_size
        self.per_sample = per_sample

    @classmethod
    def from_options(cls, opt, scale):
        """Build from a YAML mapping whose keys are the constructor arguments other than ``scale``."""
        opt = dict(opt or {})
        allowed = ('kernel', 'sigma_range', 'lambda_range', 'noise_max', 'kernel_size', 'per_sample')
        unknown = sorted(set(opt) - set(allowed))
        if unknown:
            raise ValueError(f'unknown degradation option(s) {unknown}; allowed: {list(allowed)}')
        unused = {'iso': 'lambda_range', 'aniso': 'sigma_range'}.get(opt.get('kernel', 'iso'))
        if unused in opt:
            raise ValueError(f'{unused} has no effect with kernel {opt.get("kernel", "iso")}; remove it.')
        return cls(scale=scale, **opt)

    def _uniform(self, batch, low, high, device, dtype):
        """[batch] draws from U[low, high): one per sample, or one repeated when not per_sample."""
        draws = torch.rand(batch if self.per_sample else 1, device=device, dtype=dtype)
        return (low + (high - low) * draws).expand(batch)

    def sample_kernels(self, batch, device=None, dtype=torch.float32):
        """Random blur kernels [batch, k, k] from the configured distribution."""
        if self.kernel == 'iso':
            sigma = self._uniform(batch, *self.sigma_range, device, dtype)
            return isotropic_gaussian_kernels(sigma, self.kernel_size)
        lambda1 = self._uniform(batch, *self.lambda_range, device, dtype)
        lambda2 = self._uniform(batch, *self.lambda_range, device, dtype)
        theta = self._uniform(batch, 0.0, math.pi, device, dtype)
        return anisotropic_gaussian_kernels(lambda1, lambda2, theta, self.kernel_size)

    def sample_noise_levels(self, batch, device=None, dtype=torch.float32):
        """Random noise stds [batch] in 0-255 units, U[0, noise_max]."""
        return self._uniform(batch, 0.0, self.noise_max, device, dtype)

    def degrade(self, hr, kernels, noise_levels=None, generator=None):
        """Degrade HR [B, 3, H, W] with given kernels [B, k, k] and noise stds [B] (0-255 units, or None).

        Deterministic except for the noise sample (drawn from ``generator`` when given).
        Returns LR [B, 3, H/scale, W/scale], quantised to 8 bit.
        """
        return classic_degrade(hr, kernels, self.scale, noise_levels, generator)

    @torch.no_grad()
    def __call__(self, hr):
        batch = hr.shape[0]
        kernels = self.sample_kernels(batch, hr.device, hr.dtype)
        levels = self.sample_noise_levels(batch, hr.device, hr.dtype) if self.noise_max > 0 else None
        return self.degrade(hr, kernels, levels)


@DATASET_REGISTRY.register()
class KDSRHRDataset(data.Dataset):
    """HR-only random crops for on-the-fly degradation (KDSR classic training).

    Options:
        dataroot_gt (str): folder of HR images (or a ``.lmdb`` folder with io_backend type lmdb).
        gt_size (int): crop size; a multiple of ``scale`` when the options give one.
        use_hflip (bool): random horizontal flip. Default: True.
        use_rot (bool): random vertical flip + transpose (with hflip: all 8 dihedral transforms). Default: True.
        io_backend (dict): BasicSR file client options, ``type`` 'disk' or 'lmdb'.

    Item: ``{'gt': Tensor [3, gt_size, gt_size] RGB float in [0, 1], 'gt_path': str}``.
    """

    def __init__(self, opt):
        super().__init__()
        for key in ('dataroot_gt', 'gt_size', 'io_backend'):
            if opt.get(key) is None:
                raise ValueError(f'KDSRHRDataset: option {key!r} is required')
        self.opt = opt
        self.gt_size = opt['gt_size']
        if not isinstance(self.gt_size, int) or self.gt_size < 1:
            raise ValueError(f"KDSRHRDataset: option 'gt_size' must be a positive integer, got {self.gt_size!r}")
        scale = opt.get('scale')
        if scale is not None and self.gt_size % scale:
            raise ValueError(f"KDSRHRDataset: option 'gt_size' ({self.gt_size}) must be a multiple of scale {scale}")
        self.io_backend_opt = dict(opt['io_backend'])
        self.backend = self.io_backend_opt.pop('type')
        folder = opt['dataroot_gt']
        if self.backend == 'lmdb':
            self.io_backend_opt.update(db_paths=[folder], client_keys=['gt'])
            self.paths = paths_from_lmdb(folder)
        elif osp.isdir(folder):
            self.paths = sorted(paths_from_folder(folder))
        else:
            raise ValueError(f"KDSRHRDataset: option 'dataroot_gt' is not a folder: {folder}")
        if not self.paths:
            raise ValueError(f"KDSRHRDataset: no images in {folder} (option 'dataroot_gt')")
        self.file_client = None

    def __getitem__(self, index):
        if self.file_client is None:
            self.file_client = FileClient(self.backend, **self.io_backend_opt)
        gt_path = self.paths[index]
        img = imfrombytes(self.file_client.get(gt_path, 'gt'))
        if img is None:
            raise ValueError(f'KDSRHRDataset: cannot decode image {gt_path}')
        img = img.astype(np.float32) / 255.
        h, w = img.shape[:2]
        size = self.gt_size
        if h < size or w < size:
            raise ValueError(f"KDSRHRDataset: image {gt_path} is {h}x{w}, smaller than option 'gt_size' = {size}")
        top, left = random.randint(0, h - size), random.randint(0, w - size)
        img = augment(img[top:top + size, left:left + size], self.opt.get('use_hflip', True),
                      self.opt.get('use_rot', True))
        return {'gt': img2tensor(img, bgr2rgb=True, float32=True), 'gt_path': gt_path}

    def __len__(self):
        return len(self.paths)


def read_hr_images(hr_dir, scale):
    """Yield (png file name, HR uint8 BGR image cropped to a multiple of ``scale``), sorted by name."""
    if not osp.isdir(hr_dir):
        raise ValueError(f'HR folder not found: {hr_dir}')
    paths = sorted(paths_from_folder(hr_dir))
    if not paths:
        raise ValueError(f'no images in HR folder {hr_dir}')
    for path in paths:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f'cannot read image {path}')
        yield osp.splitext(osp.basename(path))[0] + '.png', mod_crop(img, scale)


def _write_benchmark(hr_dir, out_root, scale, settings, device):
    """Write ``out_root/HR`` and one LR folder per ``(folder name, kernel [1,k,k], noise or None, seed)``."""
    lr_dirs = [osp.join(out_root, name) for name, *_ in settings]
    generators = [torch.Generator(device).manual_seed(seed) for *_, seed in settings]
    for name, hr in read_hr_images(hr_dir, scale):
        imwrite(hr, osp.join(out_root, 'HR', name))
        x = img2tensor(hr.astype(np.float32) / 255., bgr2rgb=True).unsqueeze(0).to(device)
        for lr_dir, generator, (_, kernel, noise, _) in zip(lr_dirs, generators, settings):
            levels = None if not noise else torch.tensor([float(noise)], device=device)
            lq = classic_degrade(x, kernel.to(device), scale, levels, generator)
            imwrite(tensor2img(lq[0]), osp.join(lr_dir, name))
    return lr_dirs


def build_gaussian8(hr_dir, out_root, scale, device='cpu'):
    """Write the Gaussian8 benchmark (isotropic blur, no noise) of one HR set.

    Kernel widths: x2 0.9:0.1:1.6, x3 1.35:0.15:2.40, x4 1.8:0.2:3.2 (kernel 21x21). Layout::

        out_root/HR/<name>.png              HR cropped to a multiple of scale
        out_root/LR_x4_sig1.8/<name>.png    one folder per sigma, same file names

    so BasicSR's PairedImageDataset pairs ``dataroot_gt: out_root/HR`` with any LR folder using
    ``filename_tmpl: '{}'``. HR/ depends on the scale (mod crop): use one ``out_root`` per scale.
    Returns the list of LR folders, in sigma order.
    """
    if scale not in GAUSSIAN8_SIGMAS:
        raise ValueError(f'Gaussian8 is defined for scales {sorted(GAUSSIAN8_SIGMAS)}, got {scale}')
    settings = [(f'LR_x{scale}_sig{sigma:g}', isotropic_gaussian_kernels(torch.tensor([sigma])), None, 0)
                for sigma in GAUSSIAN8_SIGMAS[scale]]
    return _write_benchmark(hr_dir, out_root, scale, settings, device)


def build_aniso_noise(hr_dir, out_root, scale, lambda1, lambda2, theta_deg, noise, seed=0, device='cpu'):
    """Write one anisotropic-blur + noise test set (KDSR Table 2 style) of one HR set.

    The kernel is :func:`anisotropic_gaussian_kernels` (21x21) with stds ``lambda1``, ``lambda2`` and
    angle ``theta_deg`` in degrees; ``noise`` is the noise std in 0-255 units, drawn from a generator
    seeded with ``seed`` (files in sorted order), so repeated runs write identical files. Layout as in
    :func:`build_gaussian8`, with the LR folder named e.g. ``LR_x4_aniso_l3.5_l1.5_t30_n10``.
    Returns the list holding that LR folder.
    """
    if noise < 0:
        raise ValueError(f'noise must be >= 0 (0-255 units), got {noise}')
    kernel = anisotropic_gaussian_kernels(torch.tensor([float(lambda1)]), torch.tensor([float(lambda2)]),
                                          torch.tensor([math.radians(theta_deg)]))
    name = f'LR_x{scale}_aniso_l{lambda1:g}_l{lambda2:g}_t{theta_deg:g}_n{noise:g}'
    return _write_benchmark(hr_dir, out_root, scale, [(name, kernel, noise, seed)], device)
