"""Classic blind-SR degradations of KDSR (ICLR 2023, Sec. 4.1) and the data built on them.

The classic setting degrades a clean HR image ``x`` as ``y = Q((x * k) down_s + n)``:

* ``k``: a 21x21 Gaussian blur kernel, isotropic (std ``sigma``) or anisotropic (stds ``lambda1``,
  ``lambda2`` along axes rotated by ``theta``), applied with reflection padding;
* ``down_s``: MATLAB-style antialiased bicubic downsampling by the integer scale ``s``;
* ``n``: white Gaussian noise with std ``level / 255``;
* ``Q``: 8-bit quantisation (clamp to [0, 1], round to a multiple of 1/255).

Everything here is batched torch on the device and dtype of its inputs. Training synthesises
LR on the fly from HR crops (:class:`kdsr_arch.data.KDSRHRDataset` + :class:`ClassicDegradation` in the
model's ``feed_data``); evaluation uses fixed LR folders written by :mod:`kdsr_arch.benchmarks`.
"""
import functools
import math

import torch
from basicsr.data.degradations import add_gaussian_noise_pt
from basicsr.utils.img_process_util import filter2D
from basicsr.utils.matlab_functions import calculate_weights_indices

from kdsr_arch.options import DEFAULT_SIGMA_RANGES, ClassicDegradationOptions

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


def quantize_8bit(x):
    """Clamp to [0, 1] and round to the nearest multiple of 1/255 (ties to even); same shape as ``x``."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def classic_degrade(hr, kernels, scale, noise_levels=None):
    """``quantize_8bit(bicubic_downsample(blur(hr, kernels), scale) + noise)``.

    Args:
        hr (Tensor): [B, C, H, W] in [0, 1], H and W multiples of ``scale``.
        kernels (Tensor): [B, k, k] blur kernels.
        scale (int): downsampling factor.
        noise_levels (Tensor, optional): [B] Gaussian noise stds in 0-255 units, drawn from torch's global
            RNG with BasicSR's ``add_gaussian_noise_pt``; None for no noise.

    Returns:
        Tensor: [B, C, H/scale, W/scale], multiples of 1/255 in [0, 1].
    """
    lq = bicubic_downsample(blur(hr, kernels), scale)
    if noise_levels is not None:
        lq = add_gaussian_noise_pt(lq, sigma=noise_levels.to(lq.dtype), clip=False, rounds=False)
    return quantize_8bit(lq)


class ClassicDegradation:
    """KDSR classic degradation: blur (iso / aniso Gaussian) -> bicubic down x``scale`` -> noise -> 8 bit.

    Calling it on HR [B, 3, H, W] in [0, 1] (H, W multiples of ``scale``) returns LR
    [B, 3, H/scale, W/scale], drawing kernels and noise levels from torch's global RNG on
    ``hr.device``:

    * iso: sigma ~ U[sigma_range]; aniso: lambda1, lambda2 ~ U[lambda_range] independently, theta ~ U[0, pi);
    * noise std ~ U[0, noise_max] / 255 (``noise_max`` in 0-255 units; 0 means no noise).

    With ``per_sample`` each sample gets its own kernel and noise level; otherwise one is drawn per
    batch, as in the authors' training code.

    Args:
        scale (int): downsampling factor.
        **options: the keys of :class:`kdsr_arch.options.ClassicDegradationOptions` (``kernel``,
            ``sigma_range``, ``lambda_range``, ``noise_max``, ``kernel_size``, ``per_sample``), which hold
            their defaults and checks.
    """

    def __init__(self, scale=4, **options):
        options = ClassicDegradationOptions(**options)
        if options.kernel == 'iso' and options.sigma_range is None and scale not in DEFAULT_SIGMA_RANGES:
            raise ValueError(f'no default sigma_range for scale {scale}; set sigma_range explicitly')
        self.scale = int(scale)
        self.kernel = options.kernel
        self.sigma_range = tuple(options.sigma_range or DEFAULT_SIGMA_RANGES[self.scale])
        self.lambda_range = tuple(options.lambda_range)
        self.noise_max = float(options.noise_max)
        self.kernel_size = options.kernel_size
        self.per_sample = options.per_sample

    @classmethod
    def from_options(cls, options, scale):
        """Build from a ``classic_degradation`` mapping (or its typed options; None: the defaults)."""
        if isinstance(options, ClassicDegradationOptions):
            options = options.model_dump(exclude_unset=True)
        return cls(scale, **(options or {}))

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

    def degrade(self, hr, kernels, noise_levels=None):
        """Degrade HR [B, 3, H, W] with given kernels [B, k, k] and noise stds [B] (0-255 units, or None).

        Deterministic except for the noise sample (torch's global RNG). Returns LR [B, 3, H/scale, W/scale].
        """
        return classic_degrade(hr, kernels, self.scale, noise_levels)

    @torch.no_grad()
    def __call__(self, hr):
        batch = hr.shape[0]
        kernels = self.sample_kernels(batch, hr.device, hr.dtype)
        levels = self.sample_noise_levels(batch, hr.device, hr.dtype) if self.noise_max > 0 else None
        return self.degrade(hr, kernels, levels)
