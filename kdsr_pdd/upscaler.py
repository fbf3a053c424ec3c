"""Running an SR network on whole images: device / precision, optional tiles.

:class:`Upscaler` takes LR float32 [B,3,h,w] in [0,1] on the CPU and returns SR [B,3,s*h,s*w] float32 on
the CPU; the network runs on ``device`` (fp16 when ``half``). With ``tile > 0`` the LR is processed in
tiles with ``tile_pad`` pixels of context (see :mod:`kdsr_pdd.tiling`); the arch family decides how one
image is run (:meth:`kdsr_pdd.networks.Family.image_function`, e.g. a KDSR student's IDR once per image).
"""
import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from kdsr_pdd.networks import NetworkError, family_of
from kdsr_pdd.tiling import tiled_map, tiled_spatial_mean


class Upscaler:
    """LR [B,3,h,w] -> SR [B,3,s*h,s*w] with ``net`` (described by ``info``, a NetworkInfo).

    Args:
        net: the network, in eval mode.
        info: its :class:`kdsr_pdd.networks.NetworkInfo`.
        device: where it runs. half: fp16 weights and inputs.
        tile: tile size in LR pixels (0: whole image). tile_pad: context around each tile.
        multiple: inputs are padded (replicate) to a multiple of this and the output is cropped back.
    """

    def __init__(self, net, info, device='cpu', half=False, tile=0, tile_pad=16, multiple=1):
        if info.needs_hr:
            raise NetworkError(f'{info.arch}: the KDSR teacher needs the HR image at test time (its encoder sees LR '
                               'and HR); use the student checkpoint (KDSRStudent) for inference.')
        self.device = torch.device(device)
        self.dtype = torch.float16 if half else torch.float32
        self.net = net.to(self.device, self.dtype).eval()
        self.family = family_of(info.arch)
        self.scale, self.multiple = info.scale, math.lcm(multiple, info.size_multiple)
        self.tile = math.ceil(tile / self.multiple) * self.multiple
        self.tile_pad = math.ceil(tile_pad / self.multiple) * self.multiple

    def to_device(self, x):
        return x.to(self.device, self.dtype)

    def spatial_mean(self, fn, x, pad):
        """Tile-wise spatial mean of ``fn(x)`` (float32 [B, C]) with ``pad`` pixels of context per tile."""
        return tiled_spatial_mean(fn, x, self.tile, pad, self.device, self.dtype)

    @torch.no_grad()
    def __call__(self, lq):
        h, w = lq.shape[-2:]
        image_fn = self.family.image_function(self.net, lq, self)
        x = F.pad(lq, (0, -w % self.multiple, 0, -h % self.multiple), mode='replicate')
        if self.tile:
            sr = tiled_map(image_fn, x, self.scale, self.tile, self.tile_pad, self.device, self.dtype)
        else:
            sr = image_fn(self.to_device(x)).float().cpu()
        return sr[:, :, :self.scale * h, :self.scale * w]


def upscale_image(upscaler, image, color_correction=False):
    """SR of a :class:`kdsr_pdd.images.LoadedImage`: an array for ``cv2.imwrite`` (gray, BGR or BGRA, input dtype)."""
    from pdd_model.color import color_correct

    lq = torch.from_numpy(np.ascontiguousarray(image.rgb.transpose(2, 0, 1)))[None]
    sr = upscaler(lq)
    if color_correction:
        sr = color_correct(sr, lq)
    out = sr[0].clamp(0, 1).permute(1, 2, 0).numpy()
    out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY if image.gray else cv2.COLOR_RGB2BGR)
    if image.alpha is not None:
        alpha = cv2.resize(image.alpha, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_CUBIC)
        out = np.dstack([out, alpha.clip(0, 1)])
    return np.rint(out * np.iinfo(image.dtype).max).astype(image.dtype)
