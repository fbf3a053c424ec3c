"""PDD training data: one dataset that yields a labeled (HR, synthetic LR) pair and an unlabeled real LR."""
import random

import cv2
import numpy as np
from basicsr.data.transforms import augment
from basicsr.utils import FileClient, img2tensor
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from kdsr_pdd.data_checks import (
    DecodeGuard,
    decode_image,
    display_name,
    image_folder_problems,
    option_label,
    raise_problems,
    section_of,
)
from kdsr_pdd.schema import dataset_keys
from pdd_model.options import PDDMixedDatasetOptions

_CV2_RESIZE_MODES = {'bicubic': cv2.INTER_CUBIC, 'bilinear': cv2.INTER_LINEAR, 'area': cv2.INTER_AREA}


def quantize_8bit(img):
    """Round a [0, 1] float image to the 8-bit grid: round(x * 255) clipped to [0, 255], divided by 255."""
    return (np.clip(np.round(img * 255.), 0, 255) / 255.).astype(np.float32)


def _random_crop(img, size):
    """Uniformly placed ``size`` x ``size`` crop (python ``random``; the images were checked to be large enough)."""
    h, w = img.shape[:2]
    top = random.randint(0, h - size)
    left = random.randint(0, w - size)
    return img[top:top + size, left:left + size, ...]


def _folders(options, section):
    """((HR paths, problems), (real LR paths, problems)) of a PDDMixedDataset section: every header readable,
    no HR image smaller than the ``gt_size`` crop, no real LR image smaller than the ``gt_size / scale`` one."""
    backend, scale = options.io_backend.type, options.scale
    return (image_folder_problems(option_label(section, 'dataroot_gt'), options.dataroot_gt, backend,
                                  options.gt_size, f'gt_size {options.gt_size}'),
            image_folder_problems(option_label(section, 'dataroot_lq_real'), options.dataroot_lq_real, backend,
                                  options.gt_size // scale, f'gt_size / scale = {options.gt_size} / {scale}'))


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

    Both folders are checked when the dataset is built (:mod:`kdsr_pdd.data_checks`: every header
    readable, no HR image smaller than ``gt_size``, no real LR image smaller than ``gt_size / scale``). An
    image whose pixel data does not decode in the loader is skipped with a warning and replaced by the next
    image of its folder (:class:`kdsr_pdd.data_checks.DecodeGuard`); the draws above are unchanged.

    Options: :class:`pdd_model.options.PDDMixedDatasetOptions`.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.options = dataset_keys(PDDMixedDatasetOptions, opt)
        self.gt_size, self.scale = self.options.gt_size, self.options.scale
        self.lq_size = self.gt_size // self.scale
        self.resize_probs = self.options.mode_probabilities()
        backend = self.options.io_backend.type
        self.client_options = {}
        if backend == 'lmdb':
            self.client_options = dict(db_paths=[self.options.dataroot_gt, self.options.dataroot_lq_real],
                                       client_keys=['gt', 'lq_real'])
        section = section_of(opt)
        (self.gt_paths, gt_problems), (self.real_paths, real_problems) = _folders(self.options, section)
        raise_problems(gt_problems + real_problems)
        self.gt_guard, self.real_guard = (
            DecodeGuard(option_label(section, key), [display_name(p, root, backend) for p in paths])
            for key, root, paths in (('dataroot_gt', self.options.dataroot_gt, self.gt_paths),
                                     ('dataroot_lq_real', self.options.dataroot_lq_real, self.real_paths)))
        self.file_client = None

    @staticmethod
    def file_problems(options, section):
        """Problems of the files of ``datasets.<section>`` (run by :func:`kdsr_pdd.data_checks.check_datasets`)."""
        return [problem for _, problems in _folders(options, section) for problem in problems]

    def _read(self, paths, client_key, index):
        """(path, BGR float32 [0, 1] image) of ``paths[index]``; UndecodableImage if it does not decode."""
        if self.file_client is None:  # created lazily: lmdb environments do not survive worker forks
            self.file_client = FileClient(self.options.io_backend.type, **self.client_options)
        path = paths[index]
        return path, decode_image(self.file_client.get(path, client_key), path).astype(np.float32) / 255.

    def _synthesize_lq(self, gt):
        if self.options.lq_synthesis == 'matlab_bicubic':
            lq = imresize(gt, 1 / self.scale)
        else:
            mode = random.choices(self.options.resize_modes, weights=self.resize_probs)[0]
            lq = cv2.resize(gt, (self.lq_size, self.lq_size), interpolation=_CV2_RESIZE_MODES[mode])
        return quantize_8bit(lq)

    def __getitem__(self, index):
        gt_path, gt = self.gt_guard.load(index, lambda i: self._read(self.gt_paths, 'gt', i))
        gt = _random_crop(gt, self.gt_size)
        gt = np.ascontiguousarray(augment(np.ascontiguousarray(gt), self.options.use_hflip, self.options.use_rot))
        lq = self._synthesize_lq(gt)

        real_index = (index + random.randrange(len(self.real_paths))) % len(self.real_paths)
        real_path, lq_real = self.real_guard.load(real_index, lambda i: self._read(self.real_paths, 'lq_real', i))
        lq_real = _random_crop(lq_real, self.lq_size)
        lq_real = np.ascontiguousarray(augment(np.ascontiguousarray(lq_real), self.options.use_hflip,
                                                  self.options.use_rot))

        gt, lq, lq_real = img2tensor([gt, lq, lq_real], bgr2rgb=True, float32=True)
        return {'gt': gt, 'lq': lq, 'lq_real': lq_real, 'gt_path': gt_path, 'lq_real_path': real_path}

    def __len__(self):
        return len(self.gt_paths)
