"""PDD training data: one dataset that yields a labeled (HR, synthetic LR) pair and an unlabeled real LR.

Also :func:`camera_domain_degradation`, a fixed camera-like degradation used by the demo to build a
"real" target domain that differs from the generalist's training degradations.
"""
import math
import os.path as osp
import random
from fractions import Fraction

import cv2
import numpy as np
from torch.utils import data

from basicsr.data.data_util import paths_from_folder, paths_from_lmdb
from basicsr.data.degradations import bivariate_Gaussian
from basicsr.data.transforms import augment
from basicsr.utils import FileClient, imfrombytes, img2tensor
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY

_CV2_RESIZE_MODES = {'bicubic': cv2.INTER_CUBIC, 'bilinear': cv2.INTER_LINEAR, 'area': cv2.INTER_AREA}
_LQ_SYNTHESES = ('random_resize', 'matlab_bicubic')


def quantize_8bit(img):
    """Round a [0, 1] float image to the 8-bit grid: round(x * 255) clipped to [0, 255], divided by 255."""
    return (np.clip(np.round(img * 255.), 0, 255) / 255.).astype(np.float32)


def _random_crop(img, size, path, option):
    """Uniformly placed ``size`` x ``size`` crop (python ``random``); clear error when the image is too small."""
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f'PDDMixedDataset: image {path!r} is {h}x{w}, smaller than the {size}x{size} crop '
                         f'required by {option}.')
    top = random.randint(0, h - size)
    left = random.randint(0, w - size)
    return img[top:top + size, left:left + size, ...]


def _parse_probs(probs, modes):
    """Normalised probabilities from numbers or 'a/b' strings (as in the authors' option files)."""
    if probs is None:
        return [1.0 / len(modes)] * len(modes)
    if len(probs) != len(modes):
        raise ValueError(f'PDDMixedDataset: resize_probs has {len(probs)} entries but resize_modes has '
                         f'{len(modes)} ({modes}).')
    try:
        values = [float(Fraction(str(p))) for p in probs]
    except (ValueError, ZeroDivisionError) as err:
        raise ValueError(f'PDDMixedDataset: resize_probs {probs} must be numbers or "a/b" fractions.') from err
    if min(values) < 0 or sum(values) <= 0:
        raise ValueError(f'PDDMixedDataset: resize_probs {probs} must be non-negative with a positive sum.')
    return [v / sum(values) for v in values]


@DATASET_REGISTRY.register()
class PDDMixedDataset(data.Dataset):
    """Labeled synthetic pairs plus unlabeled real LR crops for PDD, in one item.

    Per item (tensors RGB, float32, [0, 1], ``s`` = scale, ``g`` = gt_size):
        'gt': [3, g, g] random HR crop of ``dataroot_gt`` image ``index``, randomly h-flipped /
            v-flipped / transposed (BasicSR ``augment``: use_hflip, use_rot).
        'lq': [3, g/s, g/s] synthetic LR of that crop, quantised to 8 bits. ``lq_synthesis``:
            'random_resize': ``cv2.resize`` to exactly g/s with one of ``resize_modes``
            ('bicubic' INTER_CUBIC, 'bilinear' INTER_LINEAR, 'area' INTER_AREA) drawn per sample with
            ``resize_probs`` (default equal; numbers or 'a/b' strings);
            'matlab_bicubic': BasicSR's MATLAB-like antialiased bicubic ``imresize``.
        'lq_real': [3, g/s, g/s] random crop of an image of ``dataroot_lq_real``, augmented
            independently of 'gt'.
        'gt_path', 'lq_real_path': source files (lmdb keys for the lmdb backend).

    ``len`` is the number of HR images (BasicSR's ``dataset_enlarge_ratio`` enlarges an epoch).

    Choice of the real image: ``(index + random.randrange(N_real)) % N_real``, with Python's
    ``random``, which BasicSR seeds per dataloader worker (``num_workers * rank + worker_id +
    manual_seed``) and, in the main process, with ``manual_seed + rank``. So the choice is
    reproducible, differs between ranks and workers, and, since the draw is uniform, is uniform
    over the real images whatever the index: neither folder truncates the other. The draw alone
    would replay the same real sequence every epoch, because BasicSR re-seeds non-persistent workers
    identically at each epoch; adding the HR index, which ``EnlargedSampler`` reshuffles per
    epoch, makes the real choices change from epoch to epoch.

    Options: dataroot_gt, dataroot_lq_real (folders, or ``.lmdb`` folders with io_backend lmdb),
    gt_size, scale (filled in by BasicSR from the top-level option), lq_synthesis='random_resize',
    resize_modes=[bicubic, bilinear, area], resize_probs=None, use_hflip=True, use_rot=True,
    io_backend={'type': 'disk'} ('disk' or 'lmdb').
    """

    def __init__(self, opt):
        super().__init__()
        for key in ('dataroot_gt', 'dataroot_lq_real', 'gt_size', 'scale'):
            if opt.get(key) is None:
                raise ValueError(f'PDDMixedDataset: option {key!r} is required.')
        self.gt_size, self.scale = opt['gt_size'], opt['scale']
        if (not all(isinstance(v, int) and v > 0 for v in (self.gt_size, self.scale))
                or self.gt_size % self.scale):
            raise ValueError(f'PDDMixedDataset: gt_size ({opt["gt_size"]}) must be a positive multiple of '
                             f'scale ({opt["scale"]}).')
        self.lq_size = self.gt_size // self.scale

        self.lq_synthesis = opt.get('lq_synthesis', 'random_resize')
        if self.lq_synthesis not in _LQ_SYNTHESES:
            raise ValueError(f'PDDMixedDataset: unknown lq_synthesis {self.lq_synthesis!r}; '
                             f'choose one of {_LQ_SYNTHESES}.')
        modes = opt.get('resize_modes', list(_CV2_RESIZE_MODES))
        self.resize_modes = [modes] if isinstance(modes, str) else list(modes)
        unknown = [m for m in self.resize_modes if m not in _CV2_RESIZE_MODES]
        if unknown or not self.resize_modes:
            raise ValueError(f'PDDMixedDataset: resize_modes {self.resize_modes} must be a non-empty list of '
                             f'{list(_CV2_RESIZE_MODES)}.')
        self.resize_probs = _parse_probs(opt.get('resize_probs'), self.resize_modes)
        self.use_hflip = opt.get('use_hflip', True)
        self.use_rot = opt.get('use_rot', True)

        self.io_backend_opt = dict(opt.get('io_backend') or {'type': 'disk'})
        backend = self.io_backend_opt.get('type')
        roots = {'dataroot_gt': opt['dataroot_gt'], 'dataroot_lq_real': opt['dataroot_lq_real']}
        if backend == 'lmdb':
            self.io_backend_opt['db_paths'] = list(roots.values())
            self.io_backend_opt['client_keys'] = ['gt', 'lq_real']
            list_paths = paths_from_lmdb
        elif backend == 'disk':
            list_paths = paths_from_folder
        else:
            raise ValueError(f"PDDMixedDataset: io_backend type {backend!r} is not supported; use 'disk' or 'lmdb'.")
        self.gt_paths, self.real_paths = (self._list(option, root, list_paths) for option, root in roots.items())
        self.file_client = None

    @staticmethod
    def _list(option, root, list_paths):
        if not osp.isdir(root):
            raise ValueError(f'PDDMixedDataset: {option} {root!r} is not a folder.')
        paths = sorted(list_paths(root))
        if not paths:
            raise ValueError(f'PDDMixedDataset: {option} {root!r} contains no images.')
        return paths

    def _read(self, path, client_key):
        """BGR float32 [0, 1] image; clear error for an undecodable file."""
        if self.file_client is None:  # created lazily: lmdb environments do not survive worker forks
            io_opt = dict(self.io_backend_opt)
            self.file_client = FileClient(io_opt.pop('type'), **io_opt)
        img = imfrombytes(self.file_client.get(path, client_key), float32=False)
        if img is None:
            raise ValueError(f'PDDMixedDataset: cannot decode image {path!r}.')
        return img.astype(np.float32) / 255.

    def _synthesize_lq(self, gt):
        if self.lq_synthesis == 'matlab_bicubic':
            lq = imresize(gt, 1 / self.scale)
        else:
            mode = random.choices(self.resize_modes, weights=self.resize_probs)[0]
            lq = cv2.resize(gt, (self.lq_size, self.lq_size), interpolation=_CV2_RESIZE_MODES[mode])
        return quantize_8bit(lq)

    def __getitem__(self, index):
        gt_path = self.gt_paths[index]
        gt = _random_crop(self._read(gt_path, 'gt'), self.gt_size, gt_path, f'gt_size={self.gt_size}')
        gt = np.ascontiguousarray(augment(np.ascontiguousarray(gt), self.use_hflip, self.use_rot))
        lq = self._synthesize_lq(gt)

        real_path = self.real_paths[(index + random.randrange(len(self.real_paths))) % len(self.real_paths)]
        lq_real = _random_crop(self._read(real_path, 'lq_real'), self.lq_size, real_path,
                               f'gt_size/scale={self.lq_size}')
        lq_real = np.ascontiguousarray(augment(np.ascontiguousarray(lq_real), self.use_hflip, self.use_rot))

        gt, lq, lq_real = img2tensor([gt, lq, lq_real], bgr2rgb=True, float32=True)
        return {'gt': gt, 'lq': lq, 'lq_real': lq_real, 'gt_path': gt_path, 'lq_real_path': real_path}

    def __len__(self):
        return len(self.gt_paths)


# Fixed parameters of camera_domain_degradation (see its docstring).
CAMERA_BLUR_SIGMAS_PER_SCALE = (0.4, 0.2)  # anisotropic Gaussian std (HR pixels) per unit of scale
CAMERA_BLUR_THETA = math.pi / 6  # orientation of the long axis, radians
CAMERA_SHOT_NOISE = 1.6e-3  # signal-dependent variance slope: var = a * x + b**2
CAMERA_READ_NOISE = 0.01  # signal-independent std b
CAMERA_JPEG_QUALITY = 70


def camera_domain_degradation(img, scale, seed):
    """Fixed camera-like degradation: HR [H, W, 3] float32 RGB [0, 1] -> LR [H//s, W//s, 3] float32 RGB [0, 1].

    Pipeline (parameters are the module constants ``CAMERA_*``):
    1. optics: anisotropic Gaussian blur, std (0.4 s, 0.2 s) HR pixels rotated by 30 degrees
       (BasicSR ``bivariate_Gaussian``, kernel 2*ceil(3*0.4 s)+1, reflect-101 borders);
    2. sensor sampling: bottom/right remainder cropped to a multiple of ``s``, then ``s`` x ``s``
       box averaging (``cv2.INTER_AREA``);
    3. sensor noise, Poisson-Gaussian-like: x + n * sqrt(1.6e-3 * x + 0.01**2), n ~ N(0, 1)
       i.i.d. per pixel and channel from ``numpy.random.default_rng(seed)``, clipped to [0, 1];
    4. camera output: 8-bit JPEG at quality 70 (``cv2.imencode`` / ``cv2.imdecode``).
    Only the noise depends on ``seed``; the same (img, scale, seed) always gives the same LR.
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'camera_domain_degradation: expected an [H, W, 3] RGB image, got shape {img.shape}.')
    if int(scale) != scale or scale < 1:
        raise ValueError(f'camera_domain_degradation: scale must be a positive integer, got {scale}.')
    scale = int(scale)
    h, w = img.shape[0] // scale, img.shape[1] // scale
    if h == 0 or w == 0:
        raise ValueError(f'camera_domain_degradation: image {img.shape[:2]} is smaller than scale {scale}.')

    sig_x, sig_y = (s * scale for s in CAMERA_BLUR_SIGMAS_PER_SCALE)
    kernel = bivariate_Gaussian(2 * math.ceil(3 * sig_x) + 1, sig_x, sig_y, CAMERA_BLUR_THETA, isotropic=False)
    blurred = cv2.filter2D(img.astype(np.float32), -1, kernel.astype(np.float32))
    lr = cv2.resize(blurred[:h * scale, :w * scale], (w, h), interpolation=cv2.INTER_AREA)

    rng = np.random.default_rng(seed)
    lr = np.clip(lr, 0, 1)
    std = np.sqrt(CAMERA_SHOT_NOISE * lr + CAMERA_READ_NOISE**2)
    lr = np.clip(lr + rng.standard_normal(lr.shape) * std, 0, 1)

    bgr = cv2.cvtColor(np.round(lr * 255.).astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode('.jpg', bgr, [int(cv2.IMWRITE_JPEG_QUALITY), CAMERA_JPEG_QUALITY])
    if not ok:
        raise RuntimeError('camera_domain_degradation: JPEG encoding failed.')
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.
