"""Device-agnostic versions of BasicSR's Real-ESRGAN training models.

BasicSR 1.4.2's ``RealESRNetModel`` / ``RealESRGANModel`` synthesise the second-order degradation
batch-wise in ``feed_data`` but build DiffJPEG, USMSharp and the training-pair queue with
``.cuda()``, so they cannot run on CPU. The classes here reuse all of BasicSR's degradation code
(``feed_data`` and the queue logic are inherited unchanged) and only create those three things on
``self.device``. Our real-world KDSR models subclass them; they are also registered so that any
BasicSR arch can be trained with Real-ESRGAN degradations on CPU or CUDA.
"""
import torch
from basicsr.models.realesrgan_model import RealESRGANModel
from basicsr.models.realesrnet_model import RealESRNetModel
from basicsr.models.sr_model import SRModel
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import DiffJPEG, USMSharp
from basicsr.utils.registry import MODEL_REGISTRY


class DegradationOnDeviceMixin:
    """Creates the JPEG simulator, the USM sharpener and the pair queue on ``self.device``.

    Option ``pre_degradation_crop`` (int, default off): BasicSR's Real-ESRGAN dataset always yields
    400x400 crops, and synthesising the degradation at that size dominates a CPU step. With this
    option set, one random window of that size (>= gt_size) is cut from the batch before synthesis;
    the degradation itself is unchanged (its operations are local; resizes are relative).
    """

    def _init_degradation_tools(self, opt):
        self.jpeger = DiffJPEG(differentiable=False).to(self.device)
        self.usm_sharpener = USMSharp().to(self.device)
        self.queue_size = opt.get('queue_size', 180)

    def crop_before_degradation(self, data):
        """Apply ``pre_degradation_crop`` to a training batch (returns the batch unchanged when off)."""
        size = self.opt.get('pre_degradation_crop')
        if not (self.is_train and size and 'kernel1' in data):
            return data
        if size < self.opt['gt_size']:
            raise ValueError(f'pre_degradation_crop ({size}) must be >= gt_size ({self.opt["gt_size"]}).')
        h, w = data['gt'].shape[-2:]
        top = int(torch.randint(0, max(h - size, 0) + 1, ()))
        left = int(torch.randint(0, max(w - size, 0) + 1, ()))
        return dict(data, gt=data['gt'][..., top:top + size, left:left + size])

    @torch.no_grad()
    def feed_data(self, data):
        super().feed_data(self.crop_before_degradation(data))

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """Validate on paired data. BasicSR's Real-ESRGAN models set ``is_train = True`` afterwards, even
        in a test run, so a second test set went through the training synthesis; restore the flag."""
        is_train, self.is_train = self.is_train, False
        try:
            SRModel.nondist_validation(self, dataloader, current_iter, tb_logger, save_img)
        finally:
            self.is_train = is_train

    @torch.no_grad()
    def _dequeue_and_enqueue(self):
        if not hasattr(self, 'queue_lr'):
            b, c, h, w = self.lq.size()
            _, c_gt, h_gt, w_gt = self.gt.size()
            if self.queue_size % b != 0:
                raise ValueError(f'queue_size {self.queue_size} must be divisible by the batch size {b}: '
                                 'change queue_size or datasets.train.batch_size_per_gpu.')
            self.queue_lr = torch.zeros(self.queue_size, c, h, w, device=self.device)
            self.queue_gt = torch.zeros(self.queue_size, c_gt, h_gt, w_gt, device=self.device)
            self.queue_ptr = 0
        super()._dequeue_and_enqueue()


@MODEL_REGISTRY.register()
class DeviceAgnosticRealESRNetModel(DegradationOnDeviceMixin, RealESRNetModel):
    """RealESRNetModel (L1 stage, second-order degradations) that runs on CPU and CUDA."""

    def __init__(self, opt):
        SRModel.__init__(self, opt)
        self._init_degradation_tools(opt)


@MODEL_REGISTRY.register()
class DeviceAgnosticRealESRGANModel(DegradationOnDeviceMixin, RealESRGANModel):
    """RealESRGANModel (GAN stage, second-order degradations) that runs on CPU and CUDA."""

    def __init__(self, opt):
        SRGANModel.__init__(self, opt)
        self._init_degradation_tools(opt)
