"""Tiled evaluation of fully convolutional networks, so that memory stays bounded on large images.

The input [B, C, H, W] is cut into a grid of ``tile`` x ``tile`` cores. Each core is grown by half the
``overlap`` towards its neighbours (its *kept* region) and run with ``pad`` more pixels of context on
every side (clipped at the image border, where the network's own padding applies as in a whole-image
pass); only the kept region of the output is used. Where kept regions overlap they are blended with
linear ramps that sum to one, so no seam is a hard cut. For a network whose receptive-field radius (in
input pixels) is at most ``pad``, the stitched result equals the whole-image result up to floating-point
rounding, with or without overlap.

Deep networks have receptive fields far larger than their effective reach (Real-ESRGAN x4plus: 351
pixels by count; on photos a cut changes the output by less than 1/255 beyond ~60-70 pixels), so
:func:`measure_context` measures the reach once per network: the output of a probe image is compared with
the output of the probe cut in half, which gives the error at each distance from a cut
(:func:`edge_error_profile`), and :func:`choose_context` takes the cheapest ``(pad, overlap)`` whose
predicted seam error is below a tolerance. The probe (:func:`probe_image`) is textured noise, which moves
GAN-trained networks more than photos do, so the measured pad errs on the safe side (x4plus: 82).

The input may stay on the CPU: each context crop is moved to ``device`` / ``dtype`` on its own and
each kept output part comes back as float32 on the input's device.
"""
from typing import NamedTuple

import torch

OVERLAPS = (0, 8, 16, 24, 32)  # the blend widths choose_context considers (input pixels)


class Span(NamedTuple):
    """One tile along one axis (input pixels, end exclusive): its core, kept region and context."""
    core: tuple
    kept: tuple
    context: tuple


def tile_spans(length, tile, pad, overlap=0):
    """The :class:`Span` s that cover ``length`` pixels with cores of ``tile`` (the last one shorter).

    Kept regions reach ``overlap // 2`` past a core towards its neighbours; contexts reach ``pad`` further,
    clipped to ``[0, length)``.
    """
    if tile <= 0 or pad < 0 or overlap < 0:
        raise ValueError(f'tile must be > 0 and pad, overlap >= 0, got tile={tile}, pad={pad}, overlap={overlap}.')
    half, spans = overlap // 2, []
    for start in range(0, length, tile):
        end = min(start + tile, length)
        kept = (max(start - half, 0), min(end + half, length))
        spans.append(Span((start, end), kept, (max(kept[0] - pad, 0), min(kept[1] + pad, length))))
    return spans


def tile_count(height, width, tile):
    """How many tiles of ``tile`` pixels an image of ``height`` x ``width`` is cut into."""
    return -(-height // tile) * -(-width // tile)


def _blend_weights(spans, length, scale):
    """Per span, the weights [scale * kept length] of its output pixels along the axis; they sum to one.

    A kept region ramps up linearly from its start to twice its reach into the core (and down likewise at
    its end) where a neighbour overlaps it; the sum over spans is then normalised to one at every pixel.
    """
    centres = (torch.arange(scale * length, dtype=torch.float64) + 0.5) / scale
    weights = []
    for span in spans:
        (start, end), (low, high) = span.core, span.kept
        w = torch.ones(scale * length, dtype=torch.float64)
        if start > low:
            w = torch.minimum(w, (centres - low) / (2 * (start - low)))
        if high > end:
            w = torch.minimum(w, (high - centres) / (2 * (high - end)))
        w[:scale * low], w[scale * high:] = 0, 0
        weights.append(w)
    total = torch.stack(weights).sum(0)
    return [(w / total)[scale * s.kept[0]:scale * s.kept[1]].float() for w, s in zip(weights, spans)]


def tiled_map(fn, x, scale, tile, pad, overlap=0, device=None, dtype=None, progress=None):
    """Stitch ``fn`` over tiles of ``x`` [B,C,H,W]: returns float32 [B, C_out, scale*H, scale*W].

    Args:
        fn: maps [B,C,h,w] to [B,C_out,scale*h,scale*w] for any h, w of the context crops.
        scale: ``fn``'s upscaling factor. tile, pad, overlap: see :func:`tile_spans`.
        device, dtype: where and in what precision ``fn`` runs (default: those of ``x``).
        progress: called once per tile done (e.g. a tqdm bar's ``update``), or None.
    """
    device, dtype = device or x.device, dtype or x.dtype
    rows, cols = tile_spans(x.shape[2], tile, pad, overlap), tile_spans(x.shape[3], tile, pad, overlap)
    row_weights, col_weights = _blend_weights(rows, x.shape[2], scale), _blend_weights(cols, x.shape[3], scale)
    result = None
    for row, wy in zip(rows, row_weights):
        for col, wx in zip(cols, col_weights):
            (ct, cb), (cl, cr) = row.context, col.context
            out = fn(x[:, :, ct:cb, cl:cr].to(device=device, dtype=dtype))
            (kt, kb), (kl, kr) = row.kept, col.kept
            part = out[:, :, scale * (kt - ct):scale * (kb - ct), scale * (kl - cl):scale * (kr - cl)]
            part = part.to(device=x.device, dtype=torch.float32) * (wy[:, None] * wx[None, :])
            if result is None:
                result = x.new_zeros((x.shape[0], out.shape[1], scale * x.shape[2], scale * x.shape[3]),
                                     dtype=torch.float32)
            result[:, :, scale * kt:scale * kb, scale * kl:scale * kr] += part
            if progress is not None:
                progress()
    return result


def tiled_spatial_mean(fn, x, tile, pad, device=None, dtype=None):
    """Spatial mean of ``fn(x)`` computed tile by tile: float32 [B, C_out].

    ``fn`` maps [B,C,h,w] to [B,C_out,h,w] (same size); the full feature map is never held at once.
    Equals ``fn(x).mean((2, 3))`` when ``fn``'s receptive field radius is at most ``pad``.
    """
    device, dtype = device or x.device, dtype or x.dtype
    total = 0
    for row in tile_spans(x.shape[2], tile, pad):
        for col in tile_spans(x.shape[3], tile, pad):
            (ct, cb), (cl, cr) = row.context, col.context
            out = fn(x[:, :, ct:cb, cl:cr].to(device=device, dtype=dtype))
            (t, b), (left, right) = row.core, col.core
            total = total + out[:, :, t - ct:b - ct, left - cl:right - cl].float().sum(dim=(2, 3)).to(x.device)
    return total / (x.shape[2] * x.shape[3])


# ------------------------------------------------------------------------------------------ measuring the reach
def probe_image(channels, height, width, seed=0):
    """A deterministic textured probe [1, channels, height, width] in [0, 1]: smooth blobs plus fine noise, a
    harder case for GAN-trained networks than most photos (their output reacts strongly to texture)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, channels, max(height // 4, 2), max(width // 4, 2), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode='bicubic', align_corners=False)
    return (0.8 * smooth + 0.2 * torch.rand(1, channels, height, width, generator=g)).clamp(0, 1)


@torch.no_grad()
def edge_error_profile(fn, probe, scale):
    """Max abs change of ``fn``'s output [len W/2] at each distance (input pixels) from a cut.

    ``probe`` [1,C,H,W] is run whole and cut to its left half; entry ``d`` is the largest difference over the
    output pixels ``d`` input pixels left of the cut (both runs share the other borders).
    """
    half = probe.shape[3] // 2
    whole = fn(probe)[:, :, :, :scale * half].float().clamp(0, 1)
    cut = fn(probe[:, :, :, :half]).float().clamp(0, 1)
    per_column = (whole - cut).abs().amax(dim=(0, 1, 2)).view(half, scale).amax(1)
    return per_column.flip(0).cpu()


def predicted_seam_error(profile, pad, overlap):
    """The largest difference tiling with ``pad`` and ``overlap`` should make, from an edge error profile.

    Across a blend of width ``2h`` each of the two tiles contributes its weight times its error at its
    distance from its own cut; beyond the blend one tile alone counts, ``pad + 2h`` from its cut.
    """
    h = overlap // 2
    if pad + 2 * h >= len(profile):
        return float('inf')
    if h == 0:
        return float(profile[pad:].max())
    u = torch.arange(2 * h + 1, dtype=torch.float32)
    blended = (u / (2 * h)) * profile[pad + u.long()] + (1 - u / (2 * h)) * profile[pad + 2 * h - u.long()]
    return max(float(blended.max()), float(profile[pad + 2 * h:].max()))


def choose_context(profile, tile, tolerance):
    """``(pad, overlap, predicted error)`` with the least extra context per tile (``2 * pad + overlap``) whose
    predicted error is below ``tolerance``; the most accurate choice when none is."""
    choices = [(pad, overlap) for overlap in OVERLAPS if overlap <= tile for pad in range(len(profile))]
    scored = [(predicted_seam_error(profile, pad, overlap), pad, overlap) for pad, overlap in choices]
    good = [c for c in scored if c[0] < tolerance]
    error, pad, overlap = min(good, key=lambda c: (2 * c[1] + c[2], c[0])) if good else min(scored)
    return pad, overlap, error


def measure_context(function_for, channels, scale, reach, tile, tolerance, device=None, dtype=None, multiple=1):
    """``(pad, overlap, predicted error)`` for tiles of ``tile`` pixels (see the module docstring).

    ``function_for(probe)`` gives the function to measure for the probe image (a KDSR student's generator
    with the probe's IDR: the cut half is run with the same one, as the tiles of an image are). The probe is
    48 x 2 * ``reach`` pixels (rounded up to ``multiple``), so pads up to about ``reach`` are measurable;
    errors are in the output's [0, 1] units.
    """
    side = -(-reach // multiple) * multiple
    height = -(-48 // multiple) * multiple
    probe = probe_image(channels, height, 2 * side).to(device=device, dtype=dtype)
    return choose_context(edge_error_profile(function_for(probe), probe, scale), tile, tolerance)
