"""A BasicSR dataset extension shared by the methods: Real-ESRGAN's dataset with a smaller HR crop."""
import random

from basicsr.data.realesrgan_dataset import RealESRGANDataset
from basicsr.utils.registry import DATASET_REGISTRY

from kdsr_pdd.schema import CropPadSize


@DATASET_REGISTRY.register()
class RealESRGANCropDataset(RealESRGANDataset):
    """BasicSR's RealESRGANDataset with its hard-coded 400 x 400 HR crop made the option ``crop_pad_size``.

    The second-order degradation is synthesised on the whole crop in the model's ``feed_data``, so a
    smaller crop (>= the model's ``gt_size``) makes each step much cheaper (the demo and the tests use
    it on CPU). The crop is cut uniformly (python ``random``) from BasicSR's 400 x 400 one, which BasicSR
    reflect-pads from images smaller than 400 pixels. Item: as BasicSR's (``gt`` [3, s, s], the three
    kernels, ``gt_path``).
    """

    def __init__(self, opt):
        super().__init__(opt)
        self.crop_pad_size = CropPadSize.model_validate(opt).crop_pad_size

    def __getitem__(self, index):
        item = super().__getitem__(index)
        size = self.crop_pad_size
        h, w = item['gt'].shape[-2:]
        top, left = random.randint(0, max(h - size, 0)), random.randint(0, max(w - size, 0))
        item['gt'] = item['gt'][:, top:top + size, left:left + size].contiguous()
        return item
