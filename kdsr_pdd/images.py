"""Image files for the commands: which files are images, and reading them with what writing back needs."""
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


class LoadedImage(NamedTuple):
    """An input image: ``rgb`` float32 [H,W,3] in [0,1], ``alpha`` [H,W] or None, and how to write it back."""
    rgb: np.ndarray
    alpha: np.ndarray
    gray: bool
    dtype: np.dtype


def read_image(path):
    """Read an 8/16-bit gray, BGR or BGRA file (OpenCV reads gray+alpha as BGRA); ValueError if unusable."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError('cannot read it as an image')
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f'unsupported pixel type {img.dtype} (8- or 16-bit images only)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels not in (1, 3, 4):
        raise ValueError(f'unsupported channel count {channels}')
    pixels = img.astype(np.float32) / np.iinfo(img.dtype).max
    alpha = pixels[:, :, 3] if channels == 4 else None
    if channels == 1:
        rgb = np.repeat(pixels[:, :, None], 3, axis=2)
    else:
        rgb = cv2.cvtColor(pixels[:, :, :3], cv2.COLOR_BGR2RGB)
    return LoadedImage(rgb, alpha, channels == 1, img.dtype)


def list_inputs(input_path, recursive=False):
    """``[(file, folder relative to the input)]``; a single file is taken whatever its extension."""
    input_path = Path(input_path)
    if input_path.is_file():
        return [(input_path, Path())]
    if not input_path.is_dir():
        raise ValueError(f'input {input_path} does not exist.')
    pattern = '**/*' if recursive else '*'
    files = sorted(p for p in input_path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    return [(p, p.parent.relative_to(input_path)) for p in files]
