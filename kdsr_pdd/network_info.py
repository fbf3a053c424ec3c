"""What the commands need to know about an SR network, and the one error of choosing or loading one.

Shared by :mod:`kdsr_pdd.networks` (our arch families) and :mod:`kdsr_pdd.spandrel_networks` (anything
spandrel detects), so that neither imports the other for them.
"""
from dataclasses import dataclass


class NetworkError(ValueError):
    """A network choice, option file or checkpoint that cannot work; the message says which (one line)."""


@dataclass(frozen=True)
class NetworkInfo:
    """What running a network on images needs.

    Args:
        arch: registered arch type.
        scale: upscaling factor.
        size_multiple: input height and width must be multiples of this (the input is padded to it).
        needs_hr: the network's forward takes the HR too (KDSR teachers): it cannot upscale images.
        context: an upper bound of the receptive-field radius in input pixels, when the family can count it
            (tiles with this much context are exact); None when unknown.
        min_size: smallest input height / width the network takes (smaller inputs are padded).
        supports_half: the network runs in fp16.
        tiling: spandrel's advice, ``'supported'``, ``'discouraged'`` (relies on global image content: never
            tiled automatically) or ``'internal'`` (tiles itself: never tiled).
    """
    arch: str
    scale: int
    size_multiple: int = 1
    needs_hr: bool = False
    context: int | None = None
    min_size: int = 0
    supports_half: bool = True
    tiling: str = 'supported'
