"""Tiled evaluation of fully convolutional networks, so that memory stays bounded on large images.

The input [B, C, H, W] is cut into ``tile`` x ``tile`` cores; each core is run with ``pad`` pixels of
context on every side (clipped at the image border, where the network's own zero padding applies as
in a whole-image pass) and only the core's part of the output is kept. For a network whose receptive
field radius (in input pixels) is at most ``pad``, the stitched result equals the whole-image result
up to floating-point rounding; with a smaller ``pad`` the seams differ slightly.

The input may stay on the CPU: each context crop is moved to ``device`` / ``dtype`` on its own and
each kept output part comes back as float32 on the input's device.
"""
import torch


def tile_boxes(height, width, tile, pad):
    """Yield ``(core, context)`` boxes, each ``(top, bottom, left, right)``, covering ``height`` x ``width``.

    Cores are ``tile`` x ``tile`` (smaller at the bottom/right edges) and do not overlap; a context is
    its core grown by ``pad`` on every side and clipped to the image.
    """
    if tile <= 0 or pad < 0:
        raise ValueError(f'tile must be > 0 and pad >= 0, got tile={tile}, pad={pad}.')
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            context = (max(top - pad, 0), min(bottom + pad, height), max(left - pad, 0), min(right + pad, width))
            yield (top, bottom, left, right), context


def _core_outputs(fn, x, scale, tile, pad, device, dtype):
    """Yield ``(core, out)``: ``out`` is ``fn``'s output on the core's context, cut to the core (scaled)."""
    for core, (ct, cb, cl, cr) in tile_boxes(x.shape[2], x.shape[3], tile, pad):
        out = fn(x[:, :, ct:cb, cl:cr].to(device=device, dtype=dtype))
        top, bottom, left, right = ((v - o) * scale for v, o in zip(core, (ct, ct, cl, cl)))
        yield core, out[:, :, top:bottom, left:right].to(device=x.device, dtype=torch.float32)


def tiled_map(fn, x, scale, tile, pad, device=None, dtype=None):
    """Stitch ``fn`` over tiles of ``x`` [B,C,H,W]: returns float32 [B, C_out, scale*H, scale*W].

    ``fn`` maps [B,C,h,w] to [B,C_out,scale*h,scale*w] for any h, w of the context crops.
    """
    device, dtype = device or x.device, dtype or x.dtype
    result = None
    for (top, bottom, left, right), out in _core_outputs(fn, x, scale, tile, pad, device, dtype):
        if result is None:
            result = x.new_zeros((x.shape[0], out.shape[1], scale * x.shape[2], scale * x.shape[3]),
                                 dtype=torch.float32)
        result[:, :, scale * top:scale * bottom, scale * left:scale * right] = out
    return result


def tiled_spatial_mean(fn, x, tile, pad, device=None, dtype=None):
    """Spatial mean of ``fn(x)`` computed tile by tile: float32 [B, C_out].

    ``fn`` maps [B,C,h,w] to [B,C_out,h,w] (same size); the full feature map is never held at once.
    Equals ``fn(x).mean((2, 3))`` when ``fn``'s receptive field radius is at most ``pad``.
    """
    device, dtype = device or x.device, dtype or x.dtype
    total = 0
    for _, out in _core_outputs(fn, x, 1, tile, pad, device, dtype):
        total = total + out.sum(dim=(2, 3))
    return total / (x.shape[2] * x.shape[3])
