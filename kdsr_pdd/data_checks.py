"""Data hygiene: cheap checks of the images a dataset will read, and skipping of images that fail to decode.

Checked when a dataset of the plugin is built (its constructor) and, for every ``datasets`` section,
BasicSR's own datasets included, before ``kdsr-pdd train|test`` builds or writes anything
(:func:`check_datasets`, called by :func:`kdsr_pdd.commands.cli.check_pipeline_options`):

* every image's header is read with PIL (``Image.open``: format and size, no pixel decode), so a file that
  is empty, not an image, or cut inside its header is named, with the other bad files of the folder;
* images smaller than the crop cut from them (``gt_size``; ``gt_size / scale`` for PDD's real LR) are
  refused, with their sizes;
* BasicSR's Real-ESRGAN list (``meta_info``): every listed file that is missing is named;
* paired LQ / GT data (BasicSR's ``PairedImageDataset``): a GT without its LQ or an LQ without its GT is
  named, and every pair whose LQ is not the GT divided by ``scale`` (rounded down, as BasicSR's crop of
  the GT allows) is refused with both sizes: an x2 network on x4 pairs would otherwise be scored against a
  corner of each GT;
* lmdb backends (``io_backend: {type: lmdb}``): the keys of ``meta_info.txt`` are looked up in
  ``data.mdb`` (a missing key is named) and the header of each stored image is read from its first bytes.

Not checked before the loader decodes an image: its pixel data (a PNG truncated after its header, a
corrupt JPEG scan), which only a full decode finds. Such an image is skipped in the loader by
:class:`DecodeGuard`: a warning names it, and the next image of the sorted list (the next index, wrapping
around) that decodes replaces it, which keeps runs reproducible. More than ``max(10, 1% of the images)``
such files stop training with one error naming them.

Every problem is one line naming the option, the files and what to do; the entry points print
:class:`DataError` s without a traceback.
"""
import io
import logging
import os.path as osp
import warnings

import cv2
import torch
from basicsr.data.data_util import paths_from_folder, paths_from_lmdb
from basicsr.utils import imfrombytes, scandir
from PIL import Image, UnidentifiedImageError

MAX_NAMED = 5  # files named per problem; the count covers the others
HEADER_BYTES = 1 << 16  # read from an lmdb value to parse its header (retried with the whole value if short)
MIN_SKIP_LIMIT = 10  # the loader skips up to max(MIN_SKIP_LIMIT, 1% of the images) undecodable files


class DataError(ValueError):
    """Problems of a dataset's files, one line each (``problems``).

    torch's DataLoader re-raises an exception of a worker as ``type(message)``, where ``message`` is the
    worker's whole traceback; the problems are then recovered from its last lines, so a DataError raised in
    a worker still prints as its one-line problems.
    """

    def __init__(self, problems):
        if isinstance(problems, str):
            marker = f'{type(self).__module__}.{type(self).__qualname__}: '
            if problems.startswith('Caught ') and marker in problems:
                problems = problems.rsplit(marker, 1)[1]
            problems = problems.strip().splitlines()
        self.problems = list(problems)
        super().__init__('\n'.join(self.problems))


class UndecodableImage(Exception):
    """A dataset's image whose bytes did not decode (raised by :func:`decode_image`, handled by DecodeGuard)."""


def raise_problems(problems):
    """Raise a DataError listing ``problems`` if there are any."""
    if problems:
        raise DataError(problems)


def section_of(opt):
    """``'datasets.<phase>'`` for a dataset's option dict (BasicSR sets ``phase``), ``''`` without one."""
    return f"datasets.{opt['phase']}" if opt.get('phase') else ''


def option_label(section, key):
    """``'datasets.train.dataroot_gt'`` (or just ``key`` without a section)."""
    return f'{section}.{key}' if section else key


def name_list(items):
    """``'a, b, c'``, or the first MAX_NAMED items and ``'and N more'``."""
    items = list(items)
    shown = ', '.join(items[:MAX_NAMED])
    return shown + (f' and {len(items) - MAX_NAMED} more' if len(items) > MAX_NAMED else '')


def _size(hw):
    return f'{hw[0]}x{hw[1]}'


def display_name(path, root, backend):
    """What a message calls an image: its path relative to ``root`` (the lmdb key with io_backend lmdb)."""
    return path if backend == 'lmdb' else osp.relpath(path, root)


# ------------------------------------------------------------------------------------------------ headers
def _pil_header(source):
    """(height, width) from the header of ``source`` (a path or a file object), or why it cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
    except Image.DecompressionBombError:
        return None  # readable, too large for PIL's guard to report a size; OpenCV decodes it
    except UnidentifiedImageError:
        return 'not an image'
    except FileNotFoundError:
        return 'missing'
    except PermissionError:
        return 'permission denied'
    except (OSError, EOFError, SyntaxError, ValueError) as err:  # PIL's plugins signal a cut header thus
        return 'truncated header' if 'truncat' in str(err).lower() else f'unreadable header ({err})'
    if height < 1 or width < 1:
        return f'empty image ({height}x{width})'
    return height, width


def _disk_header(path):
    if osp.isfile(path) and osp.getsize(path) == 0:
        return 'empty file'
    return _pil_header(path)


def _lmdb_header(txn, key):
    try:
        value = txn.get(key.encode('ascii'))
    except UnicodeEncodeError:
        return 'key is not ASCII (BasicSR encodes lmdb keys as ASCII)'
    if value is None:
        return 'missing from data.mdb (listed in meta_info.txt)'
    if len(value) == 0:
        return 'empty value'
    header = _pil_header(io.BytesIO(bytes(value[:HEADER_BYTES])))
    if header == 'truncated header' and len(value) > HEADER_BYTES:  # a header longer than the prefix
        header = _pil_header(io.BytesIO(bytes(value)))
    return header


def read_headers(paths, root, backend):
    """``{path: (height, width) | None | reason}`` for image files (``backend`` 'disk') or the keys of the
    lmdb folder ``root``; ``None``: readable but of a size PIL does not report (over its pixel guard)."""
    if backend != 'lmdb':
        return {path: _disk_header(path) for path in paths}
    import lmdb
    with lmdb.open(root, readonly=True, lock=False, readahead=False) as env, env.begin(buffers=True) as txn:
        return {key: _lmdb_header(txn, key) for key in paths}


# ------------------------------------------------------------------------------------------------ problems
def header_problems(label, headers, root, backend, min_size=None, crop=None):
    """Lines for the unreadable images of ``headers`` and, with ``min_size``, for those smaller than the
    ``min_size`` x ``min_size`` crop described by ``crop`` (e.g. 'gt_size 64')."""
    total = len(headers)
    bad = [f'{display_name(p, root, backend)} ({h})' for p, h in headers.items() if isinstance(h, str)]
    problems = []
    if bad:
        problems.append(f'{label}: {len(bad)} of {total} images cannot be read: {name_list(bad)}; remove or replace '
                        'them')
    small = small_images(headers, min_size, root, backend) if min_size else []
    if small:
        problems.append(f'{label}: {len(small)} of {total} images are smaller than the {min_size}x{min_size} crop '
                        f'({crop}): {name_list(small)} (height x width); remove them or lower gt_size')
    return problems


def small_images(headers, min_size, root, backend):
    """``'name HxW'`` for each image of ``headers`` whose height or width is below ``min_size``."""
    return [f'{display_name(p, root, backend)} {_size(h)}' for p, h in headers.items()
            if isinstance(h, tuple) and min(h) < min_size]


def list_images(label, root, backend):
    """(sorted image paths of the folder ``root`` (lmdb: the keys of its meta_info.txt), problems)."""
    if not osp.isdir(root):
        return [], [f'{label}: {root!r} is not a folder']
    if backend == 'lmdb':
        if not root.endswith('.lmdb'):
            return [], [f'{label}: {root!r}: with io_backend lmdb, point it to an .lmdb folder']
        if not osp.isfile(osp.join(root, 'meta_info.txt')):
            return [], [f'{label}: {root!r} has no meta_info.txt (the list of its keys that BasicSR reads); '
                        "write it with BasicSR's make_lmdb_from_imgs"]
        paths = paths_from_lmdb(root)
    else:
        paths = sorted(paths_from_folder(root))
    if not paths:
        return [], [f'{label}: {root!r} contains no images']
    return paths, []


def image_folder_problems(label, root, backend, min_size=None, crop=None):
    """(image paths of ``root``, the problems of its listing and headers); see :func:`header_problems`."""
    paths, problems = list_images(label, root, backend)
    if problems:
        return paths, problems
    return paths, header_problems(label, read_headers(paths, root, backend), root, backend, min_size, crop)


def meta_info_problems(section, root, meta_info, backend):
    """(headers of the images BasicSR's RealESRGANDataset reads, problems): listed names that are blank or
    missing under ``root``, unreadable images. With lmdb, the keys are those of ``root``/meta_info.txt."""
    label, list_label = option_label(section, 'dataroot_gt'), option_label(section, 'meta_info')
    problems = []
    if backend == 'lmdb':
        paths, problems = list_images(label, root, backend)
    elif not osp.isfile(meta_info or ''):
        return {}, [f'{list_label}: {meta_info!r}: no such file (the list of the HR images to read)']
    else:
        with open(meta_info, encoding='utf-8') as f:
            names = [line.strip().split(' ')[0] for line in f]
        blank = [str(number) for number, name in enumerate(names, 1) if not name]
        if blank:
            problems.append(f'{list_label}: {meta_info}: blank lines {name_list(blank)} (BasicSR would read the '
                            'folder itself); remove them')
        listed = [osp.join(root, name) for name in names if name]
        paths = [p for p in listed if osp.isfile(p)]
        if len(paths) < len(listed):
            missing = [display_name(p, root, backend) for p in listed if not osp.isfile(p)]
            hint = ' (the names must be relative to dataroot_gt)' if not paths else ''
            problems.append(f'{list_label}: {len(missing)} of {len(listed)} listed images are not in dataroot_gt '
                            f'{root!r}{hint}: {name_list(missing)}; restore them or remove their lines from '
                            f'{meta_info}')
    headers = read_headers(paths, root, backend)
    return headers, problems + header_problems(label, headers, root, backend)


def _lmdb_keys(root):
    """The keys BasicSR reads from the lmdb folder ``root``, or None if it is not one."""
    if not (root.endswith('.lmdb') and osp.isfile(osp.join(root, 'meta_info.txt'))):
        return None
    return paths_from_lmdb(root)


def _lmdb_pairs(options, section):
    gt_label, lq_label = option_label(section, 'dataroot_gt'), option_label(section, 'dataroot_lq')
    gt_keys, lq_keys = _lmdb_keys(options.dataroot_gt), _lmdb_keys(options.dataroot_lq)
    problems = [f'{label}: with io_backend lmdb, point it to an .lmdb folder with its meta_info.txt'
                for label, keys in ((gt_label, gt_keys), (lq_label, lq_keys)) if keys is None]
    if problems:
        return [], problems
    gt_keys, lq_keys = set(gt_keys), set(lq_keys)
    for label, own, other, kind, other_kind in ((lq_label, gt_keys, lq_keys, 'GT', 'LQ'),
                                                (gt_label, lq_keys, gt_keys, 'LQ', 'GT')):
        unmatched = sorted(own - other)
        if unmatched:
            problems.append(f'{label}: {len(unmatched)} of {len(own)} {kind} keys have no {other_kind}: '
                            f'{name_list(unmatched)}; add the {other_kind} images or remove these')
    return [(key, key) for key in sorted(gt_keys & lq_keys)], problems


def _pairs(options, section):
    """(``[(gt_path, lq_path)]`` as BasicSR's PairedImageDataset pairs them, problems of the pairing)."""
    if options.io_backend.type == 'lmdb':
        return _lmdb_pairs(options, section)
    gt_root, lq_root, tmpl = options.dataroot_gt, options.dataroot_lq, options.filename_tmpl

    def lq_name(gt_name):  # as BasicSR names it: from the GT's base name, directly in dataroot_lq
        stem, ext = osp.splitext(osp.basename(gt_name))
        return f'{tmpl.format(stem)}{ext}'

    problems = []
    if options.meta_info_file:  # BasicSR reads the listed GT names, and ignores other files
        with open(options.meta_info_file, encoding='utf-8') as f:
            gt_names = [line.strip().split(' ')[0] for line in f if line.strip()]
        missing = [n for n in gt_names if not osp.isfile(osp.join(gt_root, n))]
        if missing:
            problems.append(f'{option_label(section, "meta_info_file")}: {len(missing)} of {len(gt_names)} listed GT '
                            'images are not in '
                            f'{gt_root!r}: {name_list(missing)}; restore them or remove their lines')
        gt_names = [n for n in gt_names if n not in missing]
        lq_names = {lq_name(n) for n in gt_names if osp.isfile(osp.join(lq_root, lq_name(n)))}
    else:  # BasicSR pairs every file of the two folders
        gt_names, lq_names = sorted(scandir(gt_root)), set(scandir(lq_root))
        orphans = sorted(lq_names - {lq_name(n) for n in gt_names})
        if orphans:
            problems.append(f'{option_label(section, "dataroot_lq")}: {len(orphans)} of {len(lq_names)} LQ images of '
                            f'{lq_root!r} have no GT (BasicSR needs one per LQ): {name_list(orphans)}; add their GT or '
                            'remove them')
    no_lq = [f'{lq_name(n)} (for GT {n})' for n in gt_names if lq_name(n) not in lq_names]
    if no_lq:
        problems.append(f'{option_label(section, "dataroot_lq")}: {len(no_lq)} of {len(gt_names)} GT images have no '
                        f'LQ in {lq_root!r} (LQ names from filename_tmpl {tmpl!r}): {name_list(no_lq)}; add them or '
                        'remove the GT')
    pairs = [(osp.join(gt_root, n), osp.join(lq_root, lq_name(n))) for n in gt_names if lq_name(n) in lq_names]
    return pairs, problems


def _apparent_scale(gt_hw, lq_hw):
    """The integer k with LQ = GT // k in both dimensions, or None."""
    k = gt_hw[0] // lq_hw[0]
    return k if k and all(g // k == q for g, q in zip(gt_hw, lq_hw)) else None


def pair_problems(options, section):
    """Problems of a PairedImageDataset section: pairing (see :func:`_pairs`), headers, and sizes: LQ must be
    GT // scale (validation / test; BasicSR crops the GT to LQ x scale) or exactly GT / scale (training)."""
    gt_root, lq_root, backend = options.dataroot_gt, options.dataroot_lq, options.io_backend.type
    gt_label, lq_label = option_label(section, 'dataroot_gt'), option_label(section, 'dataroot_lq')
    pairs, problems = _pairs(options, section)
    gt_headers = read_headers([gt for gt, _ in pairs], gt_root, backend)
    lq_headers = read_headers([lq for _, lq in pairs], lq_root, backend)
    training = options.phase == 'train'
    crop = (options.gt_size, f'gt_size {options.gt_size}') if training else ()
    problems += header_problems(gt_label, gt_headers, gt_root, backend, *crop)
    problems += header_problems(lq_label, lq_headers, lq_root, backend)
    scale, wrong, apparent = options.scale or 1, [], set()
    for gt, lq in pairs:
        gt_hw, lq_hw = gt_headers[gt], lq_headers[lq]
        if not (isinstance(gt_hw, tuple) and isinstance(lq_hw, tuple)):
            continue
        if not all(g == q * scale if training else g // scale == q for g, q in zip(gt_hw, lq_hw)):
            wrong.append(f'{display_name(gt, gt_root, backend)} (LQ {_size(lq_hw)}, GT {_size(gt_hw)})')
            apparent.add(_apparent_scale(gt_hw, lq_hw))
    if wrong:
        rule = f'GT = LQ x {scale}' if training else f'LQ = GT / {scale}, rounded down'
        guess = apparent.pop() if len(apparent) == 1 else None
        hint = f'; they look like x{guess} pairs' if guess and guess != scale else ''
        problems.append(f'{lq_label}: {len(wrong)} of {len(pairs)} pairs do not fit scale {scale} ({rule}): '
                        f'{name_list(wrong)}{hint}; check scale and dataroot_lq')
    return problems


def single_image_problems(options, section):
    """Problems of a SingleImageDataset section: the headers of its LQ images."""
    root, backend = options.dataroot_lq, options.io_backend.type
    return image_folder_problems(option_label(section, 'dataroot_lq'), root, backend)[1]


def realesrgan_problems(options, section):
    """Problems of a RealESRGANDataset section: its meta_info list and the headers of the listed images."""
    return meta_info_problems(section, options.dataroot_gt, options.meta_info, options.io_backend.type)[1]


BASICSR_DATASET_CHECKS = {  # BasicSR's datasets, checked here; the plugin's have a ``file_problems`` method
    'PairedImageDataset': pair_problems,
    'SingleImageDataset': single_image_problems,
    'RealESRGANDataset': realesrgan_problems,
    'RealESRGANDataset_basicsr': realesrgan_problems,
}


def check_datasets(options):
    """The data problems of every ``datasets`` section of the typed ``options`` (one line each; ``[]``: none).

    A dataset class of the plugin checks its files with its ``file_problems(options, section)``, which its
    constructor also runs; BasicSR's datasets with the functions of ``BASICSR_DATASET_CHECKS``.
    """
    from basicsr.utils.registry import DATASET_REGISTRY

    problems = []
    for key, dataset in options.datasets.items():
        check = BASICSR_DATASET_CHECKS.get(dataset.type)
        if check is None and dataset.type in DATASET_REGISTRY:
            check = getattr(DATASET_REGISTRY.get(dataset.type), 'file_problems', None)
        if check is not None:
            problems += check(dataset, f'datasets.{key}')
    return problems


# ------------------------------------------------------------------------------------------------ loading
def decode_image(content, name):
    """The BGR uint8 image of ``content`` (BasicSR's ``imfrombytes``); UndecodableImage naming ``name``."""
    img = None
    if content:
        try:
            img = imfrombytes(content, float32=False)
        except cv2.error:
            img = None
    if img is None:
        raise UndecodableImage(name)
    return img


class DecodeGuard:
    """Skips the images of one folder that fail to decode in the loader, deterministically, up to a limit.

    :meth:`load` reads sample ``index``; when its image does not decode, it warns (BasicSR's ``basicsr``
    logger, so the training log records it) and reads the next index, wrapping around, skipping images
    already known not to decode: the replacement depends only on the index and the set of bad files, so a
    seeded run stays reproducible. The bad files are flagged in a shared-memory tensor, so the count covers
    every data-loader worker and epoch of the process (each rank of a distributed run counts its own). When
    more than ``max(10, 1% of the images)`` files have failed, a DataError names them.
    """

    def __init__(self, label, names):
        self.label, self.names = label, list(names)
        self.limit = max(MIN_SKIP_LIMIT, -(-len(self.names) // 100))
        self.failed = torch.zeros(len(self.names), dtype=torch.bool).share_memory_()

    def load(self, index, read):
        """``read(i)`` for the first ``i`` of index, index + 1, ... (mod N) whose image decodes."""
        count = len(self.names)
        for step in range(count):
            candidate = (index + step) % count
            if self.failed[candidate]:
                continue
            try:
                return read(candidate)
            except UndecodableImage:
                self._record(candidate, index)
        raise DataError([f'{self.label}: none of the {count} images decodes; check the files '
                         f'(e.g. open them in an image viewer) and replace them'])

    def _record(self, candidate, index):
        self.failed[candidate] = True
        failed = [self.names[i] for i in torch.nonzero(self.failed).flatten().tolist()]
        logger = logging.getLogger('basicsr')
        if len(failed) > self.limit:
            message = (f'{self.label}: {len(failed)} of {len(self.names)} images failed to decode while loading, '
                       f'more than the {self.limit} skipped at most: {name_list(failed)}; their headers are fine, '
                       'their pixel data is not: replace or remove them')
            logger.error(message)
            raise DataError([message])
        logger.warning(f'{self.label}: {self.names[candidate]} cannot be decoded (corrupt or truncated pixel data); '
                       f'skipped, sample {index} uses the next image that decodes ({len(failed)} of at most '
                       f'{self.limit} skipped files)')
