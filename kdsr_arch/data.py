"""The training dataset of KDSR's classic models: random HR crops, degraded batch-wise in the model."""
import os.path as osp
import random

import numpy as np
from basicsr.data.data_util import paths_from_folder, paths_from_lmdb
from basicsr.data.transforms import augment
from basicsr.utils import FileClient, imfrombytes, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from kdsr_arch.options import KDSRHRDatasetOptions
from kdsr_pdd.schema import dataset_keys


@DATASET_REGISTRY.register()
class KDSRHRDataset(data.Dataset):
    """HR-only random crops for on-the-fly degradation (options: :class:`kdsr_arch.options.KDSRHRDatasetOptions`).

    Item: ``{'gt': Tensor [3, gt_size, gt_size] RGB float in [0, 1], 'gt_path': str}``, randomly flipped /
    transposed (``use_hflip``, ``use_rot``).
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.options = dataset_keys(KDSRHRDatasetOptions, opt)
        self.backend = self.options.io_backend.type
        folder = self.options.dataroot_gt
        self.client_options = {}
        if self.backend == 'lmdb':
            self.client_options = dict(db_paths=[folder], client_keys=['gt'])
            self.paths = paths_from_lmdb(folder)
        elif osp.isdir(folder):
            self.paths = sorted(paths_from_folder(folder))
        else:
            raise ValueError(f"KDSRHRDataset: option 'dataroot_gt' is not a folder: {folder}")
        if not self.paths:
            raise ValueError(f"KDSRHRDataset: no images in {folder} (option 'dataroot_gt')")
        self.file_client = None

    def __getitem__(self, index):
        if self.file_client is None:  # created lazily: lmdb environments do not survive worker forks
            self.file_client = FileClient(self.backend, **self.client_options)
        gt_path = self.paths[index]
        img = imfrombytes(self.file_client.get(gt_path, 'gt'))
        if img is None:
            raise ValueError(f'KDSRHRDataset: cannot decode image {gt_path}')
        img = img.astype(np.float32) / 255.
        h, w = img.shape[:2]
        size = self.options.gt_size
        if h < size or w < size:
            raise ValueError(f"KDSRHRDataset: image {gt_path} is {h}x{w}, smaller than option 'gt_size' = {size}")
        top, left = random.randint(0, h - size), random.randint(0, w - size)
        img = augment(img[top:top + size, left:left + size], self.options.use_hflip, self.options.use_rot)
        return {'gt': img2tensor(img, bgr2rgb=True, float32=True), 'gt_path': gt_path}

    def __len__(self):
        return len(self.paths)
