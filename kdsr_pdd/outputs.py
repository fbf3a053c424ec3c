"""Where ``kdsr-pdd infer`` writes: output names, clashes, its own earlier outputs, and safe writes.

Names follow Real-ESRGAN: ``OUT/<folder>/<stem>_<suffix>.<ext>`` (``<stem>.<ext>`` with an empty suffix),
``ext`` being the input's own with ``--ext auto``. Everything below is settled before the model is loaded:

* two inputs that would get one output file (``x.png`` and ``x.jpg`` with ``--ext png``; names compared
  without case, as macOS and Windows file systems do) or an output that would replace an input are
  refused (:func:`plan_outputs`);
* the command's own earlier outputs are not inputs (:func:`own_outputs_filter`): with ``-o`` inside the
  input tree that folder is left out; with ``-o`` the input folder itself, ``<stem>_<suffix>.<ext>`` is left
  out when an image ``<stem>.*`` sits beside it;
* ``-o`` must be a folder that can be created and written (:func:`check_output_folder`, with the OS reason).

An image is encoded in memory and written to a temporary file beside its target that is renamed into
place (:func:`write_atomic`), so an interrupted run or a full disk never leaves a partial image under an
output name. A result with alpha in a format without alpha (JPEG, BMP) is written as PNG, as Real-ESRGAN
does; a 16-bit result in an 8-bit-only format is rounded to 8 bits (and said so); gray + alpha is written
as an 8-bit PNG of mode ``LA`` (Pillow: OpenCV writes no 2-channel images), and as gray BGRA where that
cannot be (16 bits, WebP, TIFF).
"""
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from kdsr_pdd.images import IMAGE_EXTENSIONS

ALPHA_FORMATS = ('.png', '.tif', '.tiff', '.webp')
DEEP_FORMATS = ('.png', '.tif', '.tiff')  # hold 16-bit samples


class OutputError(ValueError):
    """An output that cannot be written as asked; the one-line message says which and what to do."""


def output_name(path, suffix, ext):
    """The output file name of the input ``path``: ``<stem>_<suffix>.<ext>`` (``ext`` 'auto': the input's)."""
    extension = Path(path).suffix if ext == 'auto' else f'.{ext}'
    return (f'{Path(path).stem}_{suffix}' if suffix else Path(path).stem) + extension


def plan_outputs(inputs, out_dir, suffix, ext):
    """``{input path: output path}`` for ``inputs`` (``[(file, folder relative to the input)]``).

    OutputError when two inputs map to one output or an output is one of the inputs.
    """
    sources = {Path(p).resolve() for p, _ in inputs}
    targets, claimed = {}, {}
    for path, folder in inputs:
        target = Path(out_dir) / folder / output_name(path, suffix, ext)
        key = str(target.resolve()).casefold()
        if key in claimed:
            hint = ' or use --ext auto (each output keeps its input\'s extension)' if ext != 'auto' else ''
            raise OutputError(f'{claimed[key]} and {path} would both be written to {target}: rename one of them{hint}.')
        if target.resolve() in sources:
            raise OutputError(f'{target} is an input and would be overwritten by the output of {path}: give -o '
                              'another folder or a non-empty --suffix.')
        claimed[key], targets[path] = path, target
    return targets


def own_outputs_filter(input_path, out_dir, suffix):
    """``skip(path)`` for :func:`kdsr_pdd.images.list_inputs`: True for the output folder inside the input tree
    and, when the output folder is the input folder, for files named like the outputs of images beside them."""
    root, out = Path(input_path).resolve(), Path(out_dir).resolve()
    marker = f'_{suffix}'

    def skip(path):
        resolved = path.resolve()
        if resolved.is_dir():
            return resolved == out and out != root
        if out != root or not suffix or not path.stem.endswith(marker):
            return False
        source_stem = path.stem[:-len(marker)]
        return any((path.parent / f'{source_stem}{e}').is_file() for e in IMAGE_EXTENSIONS + tuple(
            e.upper() for e in IMAGE_EXTENSIONS))

    return skip


def check_output_folder(out_dir):
    """OutputError (with the OS reason) unless files can be created in ``out_dir``, or in the folder that would
    hold it when it does not exist yet (it is created at the first write, so a refused run leaves nothing)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f'-o {out} is a file, not a folder: give a folder (it is created when missing).')
    existing = next(folder for folder in (out.absolute(), *out.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise OutputError(f'-o {out}: {existing} is a file, so the folder cannot be created.')
    try:
        fd, probe = tempfile.mkstemp(prefix='.kdsr-pdd-write-check-', dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise OutputError(f'-o {out}: cannot write in {existing} ({err.strerror or err}).') from None


def finish(target, image):
    """``(target, array, note)``: the file and pixels to write for ``image`` (gray [H,W], gray + alpha [H,W,2],
    BGR or BGRA; uint8 / uint16) under ``target``, after the format rules of the module docstring."""
    target, note = Path(target), ''
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels in (2, 4) and target.suffix.lower() not in ALPHA_FORMATS:
        target = target.with_suffix('.png')
    if image.dtype == np.uint16 and target.suffix.lower() not in DEEP_FORMATS:
        image = np.rint(image / 257.0).astype(np.uint8)
        note = f'16-bit result written with 8 bits ({target.suffix} holds no more)'
    if channels == 2 and (image.dtype == np.uint16 or target.suffix.lower() != '.png'):
        image = np.dstack([image[:, :, 0]] * 3 + [image[:, :, 1]])  # no gray + alpha there: gray BGRA
    return target, image, note


def encode(target, image):
    """The bytes of ``image`` in the format of ``target``'s extension; gray + alpha [H,W,2] as a PNG of mode LA
    (Pillow; OpenCV writes no 2-channel images). ValueError when it cannot be encoded."""
    if image.ndim == 3 and image.shape[2] == 2:
        import io

        from PIL import Image
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image), 'LA').save(buffer, format='PNG')
        return buffer.getvalue()
    ok, data = cv2.imencode(Path(target).suffix, image)
    if not ok:
        raise ValueError(f'OpenCV cannot encode a {image.dtype} image of shape {image.shape} as {Path(target).suffix}')
    return data.tobytes()


def write_atomic(target, data):
    """Write the bytes ``data`` to ``target`` through a temporary file beside it renamed into place.

    Creates the folder. On any failure (OSError with the OS reason, e.g. no space left) the temporary
    file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{target.name}.', suffix='.part', dir=target.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
