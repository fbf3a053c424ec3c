"""A BasicSR dataset extension shared by the methods: Real-ESRGAN's dataset with a smaller HR crop."""
import logging
import random

from basicsr.data.realesrgan_dataset import RealESRGANDataset
from basicsr.utils.registry import DATASET_REGISTRY

from kdsr_pdd.data_checks import (
    DecodeGuard,
    decode_image,
    display_name,
    meta_info_problems,
    name_list,
    option_label,
    raise_problems,
    realesrgan_problems,
    section_of,
    small_images,
)
from kdsr_pdd.schema import CropPadSize


@DATASET_REGISTRY.register()
class RealESRGANCropDataset(RealESRGANDataset):
    """BasicSR's RealESRGANDataset with its hard-coded 400 x 400 HR crop made the option ``crop_pad_size``.

    The second-order degradation is synthesised on the whole crop in the model's ``feed_data``, so a
    smaller crop (>= the model's ``gt_size``) makes each step much cheaper (the demo and the tests use
    it on CPU). The crop is cut uniformly (python ``random``) from BasicSR's 400 x 400 one, which BasicSR
    reflect-pads from images smaller than 400 pixels. Item: as BasicSR's (``gt`` [3, s, s], the three
    kernels, ``gt_path``).

    Data checks (:mod:`kdsr_pdd.data_checks`), when built: every image of ``meta_info`` exists (the missing
    ones are named together) and has a readable header. Images smaller than ``crop_pad_size`` are not
    refused, as BasicSR's dataset accepts them, but a warning names them: every crop of such an image holds
    part of BasicSR's reflect padding (mirrored content), so they should be few. An image whose pixel data
    does not decode in the loader is skipped with a warning and replaced by the next listed image
    (:class:`kdsr_pdd.data_checks.DecodeGuard`).
    """

    file_problems = staticmethod(realesrgan_problems)

    def __init__(self, opt):
        backend, root = opt['io_backend']['type'], opt['dataroot_gt']  # read first: BasicSR edits io_backend
        section = section_of(opt)
        headers, problems = meta_info_problems(section, root, opt.get('meta_info'), backend)
        raise_problems(problems)
        super().__init__(opt)
        self.crop_pad_size = CropPadSize.model_validate(opt).crop_pad_size
        small = small_images(headers, self.crop_pad_size, root, backend)
        label = option_label(section, 'dataroot_gt')
        if small:
            logging.getLogger('basicsr').warning(
                f'{label}: {len(small)} of {len(headers)} images are smaller than crop_pad_size '
                f'{self.crop_pad_size}: {name_list(small)} (height x width); '
                'BasicSR reflect-pads them to 400 px, so each of their crops holds mirrored content')
        self.guard = DecodeGuard(label, [display_name(p, root, backend) for p in self.paths])

    def _basicsr_item(self, index):
        """BasicSR's item ``index``; UndecodableImage when its image does not decode."""
        try:
            return super().__getitem__(index)
        except AttributeError:  # BasicSR's imfrombytes calls .astype on the None of cv2.imdecode
            path = self.paths[index]
            decode_image(self.file_client.get(path, 'gt'), path)  # raises UndecodableImage if that was the cause
            raise

    def __getitem__(self, index):
        item = self.guard.load(index, self._basicsr_item)
        size = self.crop_pad_size
        h, w = item['gt'].shape[-2:]
        top, left = random.randint(0, max(h - size, 0)), random.randint(0, max(w - size, 0))
        item['gt'] = item['gt'][:, top:top + size, left:left + size].contiguous()
        return item
