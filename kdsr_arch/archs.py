"""KDSR networks (ICLR 2023): IDR-DDC, IDR-DCRB, the KD-IDE encoder, the SR net G, teacher and student.

Module names follow the authors' layout, so their checkpoints (classic ``BlindSR`` state dicts and the
KDSR-GAN BasicSR files) load with ``strict=True``: ``G.sub_mean``, ``G.head.0``,
``G.body.0.body.{i}.da_conv1.kernel.{0,2}``, ``G.body.0.body.{i}.conv1``, ``G.body.1``, ``G.tail.0.*``,
``G.tail.1``, ``G.add_mean`` and ``E.*`` (teacher) / ``E_st.*`` (student) with ``E``, ``mlp``, ``compress``.

Images are RGB in [0, 1]. Every activation is LeakyReLU(0.1).
"""
import math

import torch
import torch.nn.functional as F
from basicsr.archs.arch_util import Upsample
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

NEGATIVE_SLOPE = 0.1
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def _lrelu():
    return nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)


def _conv3x3(in_channels, out_channels):
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


def _exporting():
    """True while a graph is being captured for export (ONNX, ``torch.jit.trace``, ``torch.export``)."""
    torch_export = getattr(getattr(torch, 'compiler', None), 'is_exporting', None)  # torch >= 2.5
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or bool(torch_export and torch_export())


def depthwise_conv2d_per_sample(x, kernels):
    """Depthwise 'same' cross-correlation with a different kernel for every sample, no bias.

    Args:
        x: [B, C, H, W], any memory layout (contiguous, channels_last, strided views).
        kernels: [B, C, k, k] with k odd; ``kernels[b, c]`` filters channel ``c`` of sample ``b``.

    Returns:
        [B, C, H, W] with zero padding of k // 2.

    Eager calls run one grouped convolution over the batch folded into channels (groups = B*C), the
    fastest form in PyTorch's kernels. While a graph is captured for export, the same sum is written as
    k*k shifted multiply-adds (:func:`_depthwise_by_shifts`), whose graph has no batch-dependent group
    count and so stays valid for any batch size.
    """
    if _exporting():
        return _depthwise_by_shifts(x, kernels)
    if x.dim() != 4 or kernels.dim() != 4 or kernels.shape[:2] != x.shape[:2] or kernels.shape[2] != kernels.shape[3]:
        raise ValueError(f'expected x [B,C,H,W] and kernels [B,C,k,k], got {tuple(x.shape)} and {tuple(kernels.shape)}')
    if kernels.shape[-1] % 2 == 0:
        raise ValueError(f'kernel size must be odd, got {kernels.shape[-1]}')
    return _depthwise_batch_folded(x, kernels)


def _depthwise_batch_folded(x, kernels):
    b, c, h, w = x.shape
    k = kernels.shape[-1]
    out = F.conv2d(x.reshape(1, b * c, h, w), kernels.reshape(b * c, 1, k, k), padding=k // 2, groups=b * c)
    return out.reshape(b, c, h, w)


def _depthwise_by_shifts(x, kernels):
    # Unbinding gives the tap count as a Python int even while tracing, so every slice below is static
    # (negative ends): the graph depends on neither the batch size nor the input's height and width.
    taps = kernels.flatten(2)[..., None, None].unbind(2)  # k*k tensors [B, C, 1, 1], row-major
    k = math.isqrt(len(taps))
    p = k // 2
    padded = F.pad(x, (p, p, p, p))
    out = None
    for i in range(k):
        for j in range(k):
            window = padded[:, :, i:(i - k + 1) or None, j:(j - k + 1) or None]
            tap = taps[i * k + j]
            out = window * tap if out is None else out.addcmul(window, tap)
    return out


class MeanShift(nn.Conv2d):
    """Frozen 1x1 conv adding (sign=+1) or subtracting (sign=-1) the DIV2K RGB mean: [B,3,H,W] -> [B,3,H,W].

    Weight and bias are parameters with ``requires_grad=False`` (not buffers) so that the state-dict
    keys ``*.weight`` / ``*.bias`` of the authors' checkpoints exist.
    """

    def __init__(self, sign, rgb_mean=DIV2K_RGB_MEAN, rgb_std=(1.0, 1.0, 1.0), rgb_range=1.0):
        super().__init__(3, 3, kernel_size=1)
        std = torch.tensor(rgb_std, dtype=torch.float32)
        with torch.no_grad():
            self.weight.copy_(torch.diag(1.0 / std).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(rgb_mean, dtype=torch.float32) / std)
        self.requires_grad_(False)


class IDRDDC(nn.Module):
    """IDR-based dynamic depthwise conv: x [B,C,H,W], z [B,C] -> [B,C,H,W].

    The per-sample kernels come from ``kernel`` = Linear(C,C) -> LeakyReLU(0.1) -> Linear(C,C*k*k), both
    bias-free; channel c uses elements [c*k*k, (c+1)*k*k) of the output in row-major k x k order. No bias.
    """

    def __init__(self, channels, kernel_size=3):
        super().__init__()
        self.kernel_size = kernel_size
        self.kernel = nn.Sequential(
            nn.Linear(channels, channels, bias=False), _lrelu(),
            nn.Linear(channels, channels * kernel_size * kernel_size, bias=False))

    def forward(self, x, z):
        kernels = self.kernel(z).unflatten(1, (x.shape[1], self.kernel_size, self.kernel_size))
        return depthwise_conv2d_per_sample(x, kernels)


class IDRDCRB(nn.Module):
    """IDR-based dynamic conv residual block: x [B,C,H,W], z [B,C] -> conv1(lrelu(da_conv1(x, z))) + x."""

    def __init__(self, channels, kernel_size=3):
        super().__init__()
        self.da_conv1 = IDRDDC(channels, kernel_size)
        self.conv1 = _conv3x3(channels, channels)
        self.relu = _lrelu()

    def forward(self, x, z):
        return self.conv1(self.relu(self.da_conv1(x, z))) + x


class IDRDCRBGroup(nn.Module):
    """The single group of ``n_blocks`` IDR-DCRBs (the authors' "DAG"), all fed the same z; no own skip.

    x [B,C,H,W], z [B,C] -> [B,C,H,W].
    """

    def __init__(self, channels, n_blocks):
        super().__init__()
        self.body = nn.ModuleList(IDRDCRB(channels) for _ in range(n_blocks))

    def forward(self, x, z):
        for block in self.body:
            x = block(x, z)
        return x


class ResBlock(nn.Module):
    """Encoder residual block: x + conv(lrelu(conv(x))), [B,C,H,W] -> [B,C,H,W] (no res scale)."""

    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(_conv3x3(channels, channels), _lrelu(), _conv3x3(channels, channels))

    def forward(self, x):
        return self.body(x) + x


class KDIDE(nn.Module):
    """Knowledge-distillation-based implicit degradation estimator.

    x [B,in_channels,h,w] (LR resolution) -> (z [B,C], idr [B,4C]) with C = n_feats. ``idr`` is the 4C
    representation after ``mlp`` that KDSR distils; ``z = compress(idr)`` drives every IDR-DDC.
    The teacher gets ``in_channels = 3 + 3*s^2`` (LR and pixel-unshuffled HR), the student 3.
    """

    def __init__(self, in_channels, n_feats=64, n_encoder_res=9):
        super().__init__()
        c = n_feats
        self.E = nn.Sequential(
            _conv3x3(in_channels, c), _lrelu(),
            *(ResBlock(c) for _ in range(n_encoder_res)),
            _conv3x3(c, 2 * c), _lrelu(),
            _conv3x3(2 * c, 2 * c), _lrelu(),
            _conv3x3(2 * c, 4 * c), _lrelu(),
            nn.AdaptiveAvgPool2d(1))
        self.mlp = nn.Sequential(nn.Linear(4 * c, 4 * c), _lrelu(), nn.Linear(4 * c, 4 * c), _lrelu())
        self.compress = nn.Sequential(nn.Linear(4 * c, c), _lrelu())

    def forward(self, x):
        idr = self.mlp(self.E(x).flatten(1))
        return self.compress(idr), idr


class KDSRGenerator(nn.Module):
    """The KDSR SR network "G": lq [B,3,h,w] in [0,1], z [B,C] -> sr [B,3,s*h,s*w] (not clamped).

    sub_mean -> head conv -> n_blocks IDR-DCRBs -> conv (+ head output) -> Upsampler -> conv -> add_mean.
    """

    def __init__(self, n_feats=64, n_blocks=53, scale=4):
        super().__init__()
        self.sub_mean = MeanShift(-1)
        self.head = nn.Sequential(_conv3x3(3, n_feats))
        self.body = nn.ModuleList([IDRDCRBGroup(n_feats, n_blocks), _conv3x3(n_feats, n_feats)])
        self.tail = nn.Sequential(Upsample(scale, n_feats), _conv3x3(n_feats, 3))
        self.add_mean = MeanShift(+1)

    def forward(self, lq, z):
        x = self.head(self.sub_mean(lq))
        res = self.body[1](self.body[0](x, z))
        return self.add_mean(self.tail(res + x))


def _check_sizes(name, **sizes):
    bad = {k: v for k, v in sizes.items() if not (isinstance(v, int) and not isinstance(v, bool) and v > 0)}
    if bad:
        raise ValueError(f'{name}: ' + ', '.join(f'{k} must be a positive integer, got {v!r}' for k, v in bad.items()))
    if sizes.get('scale') not in (None, 2, 3, 4):
        raise ValueError(f'{name}: scale must be 2, 3 or 4, got {sizes["scale"]}')


@ARCH_REGISTRY.register()
class KDSRTeacher(nn.Module):
    """KDSR teacher (KDSR_T): the encoder ``E`` sees LR and HR; lq [B,3,h,w], gt [B,3,s*h,s*w] in [0,1].

    ``forward(lq, gt) -> sr [B,3,s*h,s*w]``, or ``(sr, idr [B,4C])`` with ``return_idr=True``;
    ``encode(lq, gt) -> (z [B,C], idr [B,4C])``. Train and eval mode compute the same thing.

    Args:
        n_feats: width C of G and of the encoder. Default: 64 (classic M size).
        n_blocks: IDR-DCRBs in G. Default: 53.
        n_encoder_res: ResBlocks in the encoder. Default: 9.
        scale: upscaling factor, 2, 3 or 4. Default: 4.
    """

    def __init__(self, n_feats: int = 64, n_blocks: int = 53, n_encoder_res: int = 9, scale: int = 4):
        super().__init__()
        _check_sizes('KDSRTeacher', n_feats=n_feats, n_blocks=n_blocks, n_encoder_res=n_encoder_res, scale=scale)
        self.scale = scale
        self.G = KDSRGenerator(n_feats, n_blocks, scale)
        self.E = KDIDE(3 + 3 * scale * scale, n_feats, n_encoder_res)

    def encode(self, lq, gt):
        b, _, h, w = lq.shape
        expected = (b, 3, self.scale * h, self.scale * w)
        if tuple(gt.shape) != expected:
            raise ValueError(f'KDSRTeacher at x{self.scale}: gt must have shape {expected} for lq of shape '
                             f'{tuple(lq.shape)}, got {tuple(gt.shape)}')
        return self.E(torch.cat([lq, F.pixel_unshuffle(gt, self.scale)], dim=1))

    def forward(self, lq, gt, return_idr=False):
        z, idr = self.encode(lq, gt)
        sr = self.G(lq, z)
        return (sr, idr) if return_idr else sr


@ARCH_REGISTRY.register()
class KDSRStudent(nn.Module):
    """KDSR student (KDSR_S): the encoder ``E_st`` sees only the LR; lq [B,3,h,w] in [0,1].

    ``forward(lq) -> sr [B,3,s*h,s*w]``, or ``(sr, idr [B,4C])`` with ``return_idr=True`` (what the
    distillation loss needs, also through a DDP wrapper); ``encode(lq) -> (z [B,C], idr [B,4C])``.

    Args:
        n_feats: width C. Default: 64 (classic M; L: 128, KDSR-GAN: 128).
        n_blocks: IDR-DCRBs in G. Default: 53 (L: 28, KDSR-GAN: 42).
        n_encoder_res: ResBlocks in the encoder. Default: 9 (L: 5, KDSR-GAN: 6).
        scale: upscaling factor, 2, 3 or 4. Default: 4.
    """

    def __init__(self, n_feats: int = 64, n_blocks: int = 53, n_encoder_res: int = 9, scale: int = 4):
        super().__init__()
        _check_sizes('KDSRStudent', n_feats=n_feats, n_blocks=n_blocks, n_encoder_res=n_encoder_res, scale=scale)
        self.scale = scale
        self.G = KDSRGenerator(n_feats, n_blocks, scale)
        self.E_st = KDIDE(3, n_feats, n_encoder_res)

    def encode(self, lq):
        return self.E_st(lq)

    def forward(self, lq, return_idr=False):
        z, idr = self.encode(lq)
        sr = self.G(lq, z)
        return (sr, idr) if return_idr else sr
