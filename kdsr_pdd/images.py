"""Image files for the commands: which files are images, and reading them with what writing back needs.

:func:`read_image` decodes a file completely with Pillow first, so a truncated or damaged file fails
(OpenCV alone returns a partly grey image for a JPEG cut in the middle) and its mode and EXIF orientation
are known; the pixels then come from OpenCV, which keeps 16-bit colour. The EXIF orientation is applied
(the image is upright as viewers show it; outputs carry no orientation tag). Gray + alpha files (Pillow
mode ``LA``, which OpenCV reads as BGRA) are read as gray with alpha.
"""
import os
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
EXIF_ORIENTATION = 0x0112
_GRAY_ALPHA_MODES = ('LA', 'La', 'PA')


class LoadedImage(NamedTuple):
    """An input image: ``rgb`` float32 [H,W,3] in [0,1], ``alpha`` [H,W] or None, and how to write it back."""
    rgb: np.ndarray
    alpha: np.ndarray
    gray: bool
    dtype: np.dtype


def orient(pixels, orientation):
    """``pixels`` [H,W,...] as displayed under EXIF ``orientation`` 1-8 (the transforms of
    ``PIL.ImageOps.exif_transpose``); other values leave it as stored."""
    transforms = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
                  5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, -1)[::-1],
                  8: lambda a: np.rot90(a, 1)}
    transform = transforms.get(orientation)
    return pixels if transform is None else np.ascontiguousarray(transform(pixels))


def _inspect(path):
    """``(Pillow mode, EXIF orientation)`` after decoding the whole file; ``(None, 1)`` when Pillow does not know
    the format (OpenCV may). ValueError when the file is truncated or damaged."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            image.load()
            return image.mode, image.getexif().get(EXIF_ORIENTATION, 1)
    except UnidentifiedImageError:
        return None, 1
    except (PermissionError, FileNotFoundError, IsADirectoryError) as err:
        raise ValueError(f'cannot open it ({err.strerror})') from None
    except Image.DecompressionBombError as err:
        raise ValueError(f'too large to decode safely ({err})') from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ValueError(f'truncated or damaged ({str(err).strip() or type(err).__name__}); not decoded') from None


def read_image(path):
    """Read an 8/16-bit gray, gray + alpha, colour or colour + alpha file; ValueError (one line) if unusable."""
    mode, orientation = _inspect(path)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError('cannot read it as an image')
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f'unsupported pixel type {img.dtype} (8- or 16-bit images only)')
    img = orient(img, orientation)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels not in (1, 3, 4):
        raise ValueError(f'unsupported channel count {channels}')
    pixels = img.astype(np.float32) / np.iinfo(img.dtype).max
    alpha = pixels[:, :, 3] if channels == 4 else None
    gray = channels == 1 or mode in _GRAY_ALPHA_MODES
    if channels == 1:
        rgb = np.repeat(pixels[:, :, None], 3, axis=2)
    elif gray:  # gray + alpha, read as BGRA with B = G = R
        rgb = np.repeat(pixels[:, :, :1], 3, axis=2)
    else:
        rgb = cv2.cvtColor(pixels[:, :, :3], cv2.COLOR_BGR2RGB)
    return LoadedImage(rgb, alpha, gray, img.dtype)


def list_inputs(input_path, recursive=False, skip=None):
    """``[(file, folder relative to the input)]``; a single file is taken whatever its extension.

    ``skip(path)`` -> True leaves a file or (with ``recursive``) a whole folder out.
    """
    input_path = Path(input_path)
    if input_path.is_file():
        return [(input_path, Path())]
    if not input_path.is_dir():
        raise ValueError(f'input {input_path} does not exist.')
    skip = skip or (lambda path: False)
    files = []
    for folder, subfolders, names in os.walk(input_path):
        folder = Path(folder)
        subfolders[:] = [d for d in subfolders if recursive and not skip(folder / d)]
        files += [folder / n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS and not skip(folder / n)]
    return [(p, p.parent.relative_to(input_path)) for p in sorted(files)]
