"""Running an SR network on whole images: device / precision, padding, tiles, the image's channels.

:class:`Upscaler` takes LR float32 [B,3,h,w] in [0,1] on the CPU and returns SR [B,3,s*h,s*w] float32 on
the CPU; the network runs on ``device`` (fp16 when ``half``). The arch family decides how one image is
run (:meth:`kdsr_pdd.networks.Family.image_function`, e.g. a KDSR student's IDR once per image).

Tiles (:mod:`kdsr_pdd.tiling`): ``tile=None`` tiles an image of more than :data:`AUTO_TILE_PIXELS` LR
pixels with :data:`AUTO_TILE` tiles (measured on CPU: docs/inference.md), ``0`` never tiles, ``N`` tiles of N.
Without an explicit ``tile_pad`` the context is derived once per network: the family's receptive-field
radius when it can count one of at most :data:`REACH` pixels (tiles are then exact), else measured with a
probe (:func:`kdsr_pdd.tiling.measure_context`): the cheapest pad and blend whose predicted seam error is
under :data:`SEAM_TOLERANCE`. An explicit ``tile_pad`` is the context as Real-ESRGAN's (no blend).

``pre_pad`` reflect-pads the bottom and right of the LR by that many pixels before the network and crops
the result after (Real-ESRGAN's ``--pre_pad``); inputs are also padded (replicate) to the size multiple the
network needs.
"""
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from kdsr_pdd.memory import release_free_memory
from kdsr_pdd.network_info import NetworkError
from kdsr_pdd.networks import family_of
from kdsr_pdd.tiling import measure_context, tile_count, tiled_map, tiled_spatial_mean

# Measured with Real-ESRGAN x4plus on CPU (docs/inference.md): a whole pass peaks at ~1.1 GB + 15 KB per LR pixel
# (~8.5 GB at 500,000 pixels, ~34 GB at 1500x1500); 400-pixel tiles with their context peak at ~6 GB.
AUTO_TILE_PIXELS = 500_000
AUTO_TILE = 400
REACH = 96
SEAM_TOLERANCE = 1 / 255


@dataclass(frozen=True)
class Tiler:
    """How one image is run: ``tile`` (0: whole) on ``device`` / ``dtype``; what families use to run parts of it."""
    tile: int
    device: torch.device
    dtype: torch.dtype

    def to_device(self, x):
        return x.to(self.device, self.dtype)

    def spatial_mean(self, fn, x, pad):
        """Tile-wise spatial mean of ``fn(x)`` (float32 [B, C]) with ``pad`` pixels of context per tile."""
        return tiled_spatial_mean(fn, x, self.tile, pad, self.device, self.dtype)


class Upscaler:
    """LR [B,3,h,w] -> SR [B,3,s*h,s*w] with ``net`` (described by ``info``, a NetworkInfo).

    Args:
        net: the network, in eval mode.
        info: its :class:`kdsr_pdd.network_info.NetworkInfo`.
        device: where it runs. half: fp16 weights and inputs.
        tile: tile size in LR pixels: None automatic, 0 whole image (see the module docstring).
        tile_pad: context around each tile in LR pixels; None derives it.
        multiple: inputs are padded (replicate) to a multiple of this and the output is cropped back.
        pre_pad: reflect padding at the bottom and right, cropped after.
        progress: show a progress bar over the tiles of an image cut into several.
        report: called once with a line on the tiles (size, context) when an image is first tiled, or None.
    """

    def __init__(self, net, info, device='cpu', half=False, tile=0, tile_pad=None, multiple=1, pre_pad=0,
                 progress=False, report=None):
        if info.needs_hr:
            raise NetworkError(f'{info.arch}: the KDSR teacher needs the HR image at test time (its encoder sees LR '
                               'and HR); use the student checkpoint (KDSRStudent) for inference.')
        if half and not info.supports_half:
            raise NetworkError(f'{info.arch} does not run in fp16 (spandrel says so): use --fp32.')
        self.info, self.device = info, torch.device(device)
        self.dtype = torch.float16 if half else torch.float32
        self.net = net.to(self.device, self.dtype).eval()
        self.family = family_of(info.arch)
        self.scale, self.multiple = info.scale, math.lcm(multiple, info.size_multiple)
        self.tile = tile and self._round(max(tile, info.min_size))  # None (automatic) and 0 stay as they are
        self.tile_pad, self.pre_pad, self.progress, self.report = tile_pad, pre_pad, progress, report
        self._context = None if tile_pad is None else (self._round(tile_pad), 0, None)

    def _round(self, pixels):
        return math.ceil(pixels / self.multiple) * self.multiple

    def tile_for(self, height, width):
        """The tile size for an LR image of ``height`` x ``width`` (0: whole image)."""
        if self.tile is not None:
            return self.tile if self.tile < max(height, width) else 0
        automatic = self.info.tiling == 'supported' and height * width > AUTO_TILE_PIXELS
        return self._round(AUTO_TILE) if automatic else 0

    @torch.no_grad()
    def context(self, tile):
        """``(pad, overlap, predicted error or None)`` for tiles of ``tile`` (the blend is at most a tile); derived
        once, for the first tile size asked (see the module docstring). The predicted error is None when the
        tiles are exact or the pad was given."""
        if self._context is None:
            if self.info.context is not None and self.info.context <= REACH:
                self._context = (self._round(self.info.context), 0, None)
            else:
                tiler = Tiler(0, self.device, self.dtype)
                pad, overlap, error = measure_context(
                    lambda probe: self.family.image_function(self.net, probe, tiler), 3, self.scale, REACH, tile,
                    SEAM_TOLERANCE, self.device, self.dtype, self.multiple)
                self._context = (self._round(pad), 2 * self._round(overlap // 2), error)
        return self._context

    def describe_context(self, tile):
        """One line on the tiles' context, e.g. for the command's start-up message."""
        pad, overlap, error = self.context(tile)
        if self.tile_pad is not None:
            return f'tile pad {pad} (given)'
        if error is None:
            return f'tile pad {pad} (the receptive field: tiles are exact)'
        above = '' if error < SEAM_TOLERANCE else f', more than {255 * SEAM_TOLERANCE:.0f}/255: raise --tile_pad'
        return (f'tile pad {pad} + blend {overlap} (measured: seams within {255 * error:.2f}/255 of an untiled pass '
                f'on a probe{above})')

    @torch.no_grad()
    def __call__(self, lq):
        h, w = lq.shape[-2:]
        x = lq
        if self.pre_pad:
            if self.pre_pad >= min(h, w):
                raise ValueError(f'--pre_pad {self.pre_pad} needs an image larger than that, got {w}x{h}')
            x = F.pad(x, (0, self.pre_pad, 0, self.pre_pad), mode='reflect')
        tile = self.tile_for(*x.shape[-2:])
        tiler = Tiler(tile, self.device, self.dtype)
        image_fn = self.family.image_function(self.net, x, tiler)
        ph, pw = x.shape[-2:]
        x = F.pad(x, (0, -pw % self.multiple, 0, -ph % self.multiple), mode='replicate')
        if tile:
            if self.report is not None:
                self.report(f'tiles of {tile} LR pixels, {self.describe_context(tile)}')
                self.report = None
            pad, overlap, _ = self.context(tile)
            count = tile_count(*x.shape[-2:], tile)
            bar = _tile_bar(count) if self.progress and count > 1 else None

            def tile_done():
                self._release()
                if bar is not None:
                    bar.update()

            try:
                sr = tiled_map(image_fn, x, self.scale, tile, pad, min(overlap, tile), self.device, self.dtype,
                               tile_done)
            finally:
                if bar:
                    bar.close()
        else:
            sr = image_fn(self.to_device(x)).float().cpu()
        self._release()
        return sr[:, :, :self.scale * h, :self.scale * w]

    def _release(self):
        """Between passes on the CPU: free heap pages go back to the system (:mod:`kdsr_pdd.memory`)."""
        if self.device.type == 'cpu':
            release_free_memory()

    def to_device(self, x):
        return x.to(self.device, self.dtype)


def _tile_bar(count):
    from tqdm import tqdm
    return tqdm(total=count, desc='tiles', unit='tile', leave=False)


def upscale_image(upscaler, image, color_correction=False, alpha_upsampler='realesrgan', outscale=None):
    """SR of a :class:`kdsr_pdd.images.LoadedImage`: gray [H,W], gray + alpha [H,W,2], BGR or BGRA, input dtype.

    Args:
        upscaler: an :class:`Upscaler`.
        image: the LR image.
        color_correction: match each output channel's mean / std to the input's (PDD inference).
        alpha_upsampler: ``'realesrgan'`` runs the alpha channel through the network too (as gray),
            ``'bicubic'`` resizes it (cv2 bicubic).
        outscale: the final scale (None: the network's); another value resizes the result with cv2 Lanczos-4
            to ``int(outscale * size)``, as Real-ESRGAN's ``--outscale``.
    """
    from pdd_model.color import color_correct

    lq = _tensor(image.rgb)
    sr = upscaler(lq)
    if color_correction:
        sr = color_correct(sr, lq)
    out = sr[0].clamp(0, 1).permute(1, 2, 0).numpy()
    out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY if image.gray else cv2.COLOR_RGB2BGR)
    if image.alpha is not None:
        if alpha_upsampler == 'realesrgan':
            alpha_sr = upscaler(_tensor(np.repeat(image.alpha[:, :, None], 3, axis=2)))[0].clamp(0, 1)
            alpha = cv2.cvtColor(alpha_sr.permute(1, 2, 0).numpy(), cv2.COLOR_RGB2GRAY)
        else:
            alpha = cv2.resize(image.alpha, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_CUBIC).clip(0, 1)
        out = np.dstack([out, alpha])
    out = np.rint(out * np.iinfo(image.dtype).max).astype(image.dtype)
    if outscale is not None and outscale != upscaler.scale:
        h, w = image.rgb.shape[:2]
        out = cv2.resize(out, (int(w * outscale), int(h * outscale)), interpolation=cv2.INTER_LANCZOS4)
    return out


def _tensor(pixels):
    """[H,W,3] float32 -> [1,3,H,W]."""
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
