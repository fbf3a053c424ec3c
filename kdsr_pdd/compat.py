"""Mends of BasicSR 1.4.2 for today's stack (torch 2.x, torchvision >= 0.17, machines without CUDA).

Only breakage is mended here; what the plugin adds to BasicSR (atomic checkpoints, reading every
checkpoint format, any ``torch.optim`` optimizer, faithful resume) lives in :mod:`kdsr_pdd.runtime`
and the modules it names. :func:`apply` installs every mend once; each has its one-line reason
below and a test in ``tests/test_compat.py`` that fails on plain BasicSR 1.4.2. Nothing in
site-packages is edited.
"""
import functools
import importlib
import importlib.abc
import importlib.machinery
import os
import sys

_APPLIED = False
_FUNCTIONAL_TENSOR = 'torchvision.transforms.functional_tensor'


class _FunctionalTensorAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """torchvision >= 0.17 removed ``transforms.functional_tensor``; ``basicsr.data.degradations`` imports it.

    Consulted only after every other finder failed (an old torchvision still has the module), and only
    when the module is imported: nothing is loaded before BasicSR asks for it.
    """

    def find_spec(self, name, path=None, target=None):
        if name != _FUNCTIONAL_TENSOR:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        return importlib.import_module('torchvision.transforms._functional_tensor')

    def exec_module(self, module):
        """The module is torchvision's private ``_functional_tensor``, already executed."""


def install_functional_tensor_alias():
    """Put :class:`_FunctionalTensorAlias` at the end of ``sys.meta_path`` (once); ``kdsr_pdd`` does it on import."""
    if not any(isinstance(finder, _FunctionalTensorAlias) for finder in sys.meta_path):
        sys.meta_path.append(_FunctionalTensorAlias())


def _init_dist_any_backend(launcher, backend=None, **kwargs):
    """basicsr's init_dist divides by the CUDA device count and defaults to nccl; use gloo without CUDA."""
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    cuda = torch.cuda.is_available() and torch.cuda.device_count() > 0
    if backend is None or (backend == 'nccl' and not cuda):
        backend = 'nccl' if cuda else 'gloo'
    if launcher == 'pytorch':
        if cuda:
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', os.environ['RANK'])) % torch.cuda.device_count())
        dist.init_process_group(backend=backend, **kwargs)
    elif launcher == 'slurm':
        from basicsr.utils import dist_util
        if not cuda:
            raise RuntimeError('--launcher slurm needs CUDA devices; use --launcher pytorch (torchrun) on CPU.')
        dist_util._init_dist_slurm(backend, **kwargs)
    else:
        raise ValueError(f'--launcher {launcher!r}: use none, pytorch or slurm.')


def _model_to_device(self, net):
    """BaseModel.model_to_device passes a CUDA device id to DDP; CPU DDP (gloo) needs device_ids=None."""
    import torch
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    net = net.to(self.device)
    if self.opt['dist']:
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(
            net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


def _contiguous_input(filter2d):
    """basicsr's filter2D ``.view``s its input, which fails on the non-contiguous tensors DiffJPEG returns."""

    @functools.wraps(filter2d)
    def wrapper(img, kernel):
        return filter2d(img.contiguous(), kernel)

    return wrapper


def _degradation_tools_on_device(cls):
    """RealESRNetModel / RealESRGANModel ``.cuda()`` their JPEG simulator and sharpener: build them on self.device."""
    from basicsr.utils import DiffJPEG, USMSharp

    def __init__(self, opt):
        super(cls, self).__init__(opt)
        self.jpeger = DiffJPEG(differentiable=False).to(self.device)
        self.usm_sharpener = USMSharp().to(self.device)
        self.queue_size = opt.get('queue_size', 180)

    return __init__


def _queue_on_device(dequeue_and_enqueue):
    """The Real-ESRGAN training-pair queue is created with ``.cuda()``: create it on self.device first."""

    import torch

    @functools.wraps(dequeue_and_enqueue)
    def wrapper(self):
        if not hasattr(self, 'queue_lr'):
            b, c, h, w = self.lq.size()
            if self.queue_size % b != 0:
                raise ValueError(f'queue_size {self.queue_size} must be divisible by the batch size {b}: '
                                 'change queue_size or datasets.train.batch_size_per_gpu.')
            self.queue_lr = torch.zeros(self.queue_size, c, h, w, device=self.device)
            self.queue_gt = torch.zeros(self.queue_size, *self.gt.shape[1:], device=self.device)
            self.queue_ptr = 0
        return dequeue_and_enqueue(self)

    return wrapper


def _validation_keeps_is_train(cls):
    """Real-ESRGAN models end validation with ``is_train = True``, so a second test set got training synthesis."""
    from basicsr.models.sr_model import SRModel

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        is_train, self.is_train = self.is_train, False
        try:
            SRModel.nondist_validation(self, dataloader, current_iter, tb_logger, save_img)
        finally:
            self.is_train = is_train

    nondist_validation.__doc__ = f'{cls.__name__}.nondist_validation without the synthesis, restoring is_train.'
    return nondist_validation


def _check_resume_keeps_ignored_keys(check_resume):
    """check_resume flips ``param_key_<net>`` to params even for networks in ``ignore_resume_networks``."""

    @functools.wraps(check_resume)
    def wrapper(opt, resume_iter):
        ignored = {name[len('network_'):] for name in opt['path'].get('ignore_resume_networks') or ()}
        kept = {f'param_key_{net}': opt['path'][f'param_key_{net}'] for net in ignored
                if f'param_key_{net}' in opt['path']}
        check_resume(opt, resume_iter)
        opt['path'].update(kept)

    return wrapper


def apply():
    """Apply every mend (idempotent). Called by :func:`kdsr_pdd.runtime.prepare_basicsr`."""
    global _APPLIED
    if _APPLIED:
        return
    install_functional_tensor_alias()

    import basicsr.models.realesrgan_model
    import basicsr.models.realesrnet_model
    import basicsr.train
    import basicsr.utils
    import basicsr.utils.dist_util
    import basicsr.utils.img_process_util
    import basicsr.utils.misc
    import basicsr.utils.options
    from basicsr.models.base_model import BaseModel

    basicsr.utils.dist_util.init_dist = _init_dist_any_backend
    basicsr.utils.options.init_dist = _init_dist_any_backend
    BaseModel.model_to_device = _model_to_device
    filter2d = _contiguous_input(basicsr.utils.img_process_util.filter2D)
    realesrgan_modules = (basicsr.models.realesrnet_model, basicsr.models.realesrgan_model)
    for module in (basicsr.utils.img_process_util, *realesrgan_modules):
        module.filter2D = filter2d
    for cls in (basicsr.models.realesrnet_model.RealESRNetModel, basicsr.models.realesrgan_model.RealESRGANModel):
        cls.__init__ = _degradation_tools_on_device(cls)
        cls._dequeue_and_enqueue = _queue_on_device(cls._dequeue_and_enqueue)
        cls.nondist_validation = _validation_keeps_is_train(cls)
    check_resume = _check_resume_keeps_ignored_keys(basicsr.utils.misc.check_resume)
    for module in (basicsr.utils.misc, basicsr.utils, basicsr.train):
        module.check_resume = check_resume
    _APPLIED = True


def mends_in_effect():
    """{mend: whether it is in effect now} -- what ``kdsr-pdd selfcheck`` reports (after :func:`apply`)."""
    import basicsr.models.realesrgan_model as realesrgan
    import basicsr.models.realesrnet_model as realesrnet
    import basicsr.train
    import basicsr.utils.dist_util
    import basicsr.utils.img_process_util
    from basicsr.models.base_model import BaseModel

    def ours(fn):  # defined in this file (functools.wraps copies __module__, not the code)
        return getattr(getattr(fn, '__code__', None), 'co_filename', None) == __file__

    models = (realesrnet.RealESRNetModel, realesrgan.RealESRGANModel)
    return {
        'torchvision functional_tensor alias': any(isinstance(f, _FunctionalTensorAlias) for f in sys.meta_path),
        'init_dist with the gloo backend': ours(basicsr.utils.dist_util.init_dist),
        'model_to_device without CUDA': ours(BaseModel.model_to_device),
        'filter2D on non-contiguous input': all(ours(m.filter2D) for m in (basicsr.utils.img_process_util,
                                                                            realesrnet, realesrgan)),
        'Real-ESRGAN synthesis and queue on the model device': all(
            ours(cls.__init__) and ours(cls._dequeue_and_enqueue) for cls in models),
        'Real-ESRGAN validation keeps is_train': all(ours(cls.nondist_validation) for cls in models),
        'check_resume keeps param keys of ignored networks': ours(basicsr.train.check_resume),
    }
