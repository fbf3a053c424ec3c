"""The training dataset of KDSR's classic models: random HR crops, degraded batch-wise in the model."""
import random

import numpy as np
from basicsr.data.transforms import augment
from basicsr.utils import FileClient, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from kdsr_arch.options import KDSRHRDatasetOptions
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


def _hr_images(options, section):
    """(HR image paths, their problems): every header readable, no image smaller than ``gt_size``."""
    return image_folder_problems(option_label(section, 'dataroot_gt'), options.dataroot_gt, options.io_backend.type,
                                 options.gt_size, f'gt_size {options.gt_size}')


@DATASET_REGISTRY.register()
class KDSRHRDataset(data.Dataset):
    """HR-only random crops for on-the-fly degradation (options: :class:`kdsr_arch.options.KDSRHRDatasetOptions`).

    Item: ``{'gt': Tensor [3, gt_size, gt_size] RGB float in [0, 1], 'gt_path': str}``, randomly flipped /
    transposed (``use_hflip``, ``use_rot``).

    The images are checked when the dataset is built (:mod:`kdsr_pdd.data_checks`: every header readable,
    none smaller than ``gt_size``); an image whose pixel data does not decode in the loader is skipped with
    a warning and replaced by the next one (:class:`kdsr_pdd.data_checks.DecodeGuard`).
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.options = dataset_keys(KDSRHRDatasetOptions, opt)
        self.backend = self.options.io_backend.type
        folder = self.options.dataroot_gt
        self.client_options = dict(db_paths=[folder], client_keys=['gt']) if self.backend == 'lmdb' else {}
        self.paths, problems = _hr_images(self.options, section_of(opt))
        raise_problems(problems)
        self.guard = DecodeGuard(option_label(section_of(opt), 'dataroot_gt'),
                                 [display_name(p, folder, self.backend) for p in self.paths])
        self.file_client = None

    @staticmethod
    def file_problems(options, section):
        """Problems of the files of ``datasets.<section>`` (run by :func:`kdsr_pdd.data_checks.check_datasets`)."""
        return _hr_images(options, section)[1]

    def _read(self, index):
        if self.file_client is None:  # created lazily: lmdb environments do not survive worker forks
            self.file_client = FileClient(self.backend, **self.client_options)
        path = self.paths[index]
        return path, decode_image(self.file_client.get(path, 'gt'), path)

    def __getitem__(self, index):
        gt_path, img = self.guard.load(index, self._read)
        img = img.astype(np.float32) / 255.
        h, w = img.shape[:2]
        size = self.options.gt_size
        top, left = random.randint(0, h - size), random.randint(0, w - size)
        img = augment(img[top:top + size, left:left + size], self.options.use_hflip, self.options.use_rot)
        return {'gt': img2tensor(img, bgr2rgb=True, float32=True), 'gt_path': gt_path}

    def __len__(self):
        return len(self.paths)
