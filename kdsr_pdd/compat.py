"""Mends for BasicSR 1.4.2 on today's stack (torch 2.x, torchvision >= 0.17, CPU-only machines).

Every mend is applied once, at import time of :mod:`kdsr_pdd`, by :func:`apply`. Each one has a
one-line reason here and a test in ``tests/test_compat.py`` that fails on plain BasicSR 1.4.2.
Nothing in site-packages is edited.
"""
import copy
import functools
import os
import os.path as osp
import sys
import tempfile

import torch

_APPLIED = False


def _alias_functional_tensor():
    """torchvision >= 0.17 removed ``transforms.functional_tensor``; basicsr.data.degradations imports it."""
    name = 'torchvision.transforms.functional_tensor'
    if name not in sys.modules:
        try:
            import torchvision.transforms.functional_tensor  # noqa: F401  (old torchvision: nothing to do)
        except ImportError:
            from torchvision.transforms import _functional_tensor
            sys.modules[name] = _functional_tensor


def atomic_torch_save(obj, path):
    """Write ``obj`` with :func:`torch.save` to a temporary file and rename it into place.

    A crash or a full disk mid-write leaves the previous file (if any) untouched instead of a
    truncated checkpoint.
    """
    directory = osp.dirname(osp.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix='.tmp_', suffix=osp.basename(path), dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise


def _bare_state_dict(net):
    """State dict of a (possibly DDP/DP-wrapped) network on CPU, without ``module.`` prefixes."""
    net = net.module if hasattr(net, 'module') else net
    return {k[7:] if k.startswith('module.') else k: v.cpu() for k, v in net.state_dict().items()}


def _save_network(self, net, net_label, current_iter, param_key='params'):
    """BaseModel.save_network (rank 0 only), written atomically and raising on failure (1.4.2 silently skips)."""
    if self.opt.get('rank', 0) != 0:
        return
    label = 'latest' if current_iter == -1 else current_iter
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    if len(nets) != len(keys):
        raise ValueError(f'save_network: {len(nets)} networks but {len(keys)} param keys')
    save_dict = {key: _bare_state_dict(n) for n, key in zip(nets, keys)}
    atomic_torch_save(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth'))


def _save_training_state(self, epoch, current_iter):
    """BaseModel.save_training_state (rank 0 only), written atomically and raising on failure."""
    if current_iter == -1 or self.opt.get('rank', 0) != 0:
        return
    state = {
        'epoch': epoch,
        'iter': current_iter,
        'optimizers': [o.state_dict() for o in self.optimizers],
        'schedulers': [s.state_dict() for s in self.schedulers],
    }
    atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))


def _load_network(self, net, load_path, strict=True, param_key='params'):
    """BaseModel.load_network fails on raw state dicts (BSRGAN, KDSR releases); read every format, strictly."""
    from basicsr.utils import get_root_logger

    from kdsr_pdd.checkpoints import load_weights

    key = load_weights(net, osp.expanduser(load_path), param_key, strict)
    get_root_logger().info(f'Loading {type(self.get_bare_model(net)).__name__} from {load_path} '
                           f'[{key or "raw state dict"}].')


def _load_resume_state_on_any_device(opt):
    """basicsr.train.load_resume_state maps storages with ``.cuda()``; map to CPU so resume works everywhere."""
    from basicsr.utils import check_resume, scandir

    resume_state_path = None
    if opt['auto_resume']:
        state_dir = osp.join('experiments', opt['name'], 'training_states')
        if osp.isdir(state_dir):
            states = [float(v.split('.state')[0]) for v in scandir(state_dir, suffix='state', recursive=False)]
            if states:
                resume_state_path = osp.join(state_dir, f'{max(states):.0f}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']

    if resume_state_path is None:
        return None
    if not osp.isfile(resume_state_path):
        raise FileNotFoundError(f'path.resume_state: no training state at {resume_state_path!r}; '
                                'fix the path or drop the option to start from scratch.')
    # Training states hold optimizer/scheduler dicts (Counter etc.): a trusted local file, not weights only.
    # Optimizer.load_state_dict moves the tensors onto the parameters' device.
    resume_state = torch.load(resume_state_path, map_location='cpu', weights_only=False)
    check_resume(opt, resume_state['iter'])
    return resume_state


_OUTPUT_FOLDERS = ('models', 'training_states', 'log', 'visualization')


def _make_output_dirs(opt):
    """make_exp_dirs makedirs() every other path option, so file options (weights) crash; make only output folders."""
    from basicsr.utils.misc import mkdir_and_rename

    if opt.get('rank', 0) != 0:  # rank 0 makes (and archives) the folders, as in BasicSR
        return
    mkdir_and_rename(opt['path']['experiments_root' if opt['is_train'] else 'results_root'])
    for key in _OUTPUT_FOLDERS:
        if opt['path'].get(key):
            os.makedirs(opt['path'][key], exist_ok=True)


def _init_dist_any_backend(launcher, backend=None, **kwargs):
    """basicsr's init_dist divides by the CUDA device count and defaults to nccl; use gloo without CUDA."""
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


def _contiguous_input(filter2d):
    """basicsr's filter2D ``.view``s its input, which fails on the non-contiguous tensors DiffJPEG returns."""

    @functools.wraps(filter2d)
    def wrapper(img, kernel):
        return filter2d(img.contiguous(), kernel)

    wrapper.__kdsr_pdd_compat__ = True
    return wrapper


def _model_to_device(self, net):
    """BaseModel.model_to_device passes a CUDA device id to DDP; CPU DDP (gloo) needs device_ids=None."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    net = net.to(self.device)
    if self.opt['dist']:
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(
            net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


def _get_optimizer(self, optim_type, params, lr, **kwargs):
    """BaseModel.get_optimizer accepts only Adam; accept any ``torch.optim`` class by name (AdamW, SGD, ...)."""
    optimizer_class = getattr(torch.optim, optim_type, None)
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
        raise ValueError(f'train.optim_*.type: {optim_type!r} is not a torch.optim optimizer (e.g. Adam, AdamW).')
    return optimizer_class(params, lr, **kwargs)


def _keep_train_options(method):
    """setup_optimizers/setup_schedulers pop ``type`` from opt['train']; run them on a copy instead."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        original = self.opt['train']
        self.opt['train'] = copy.deepcopy(original)
        try:
            return method(self, *args, **kwargs)
        finally:
            self.opt['train'] = original

    wrapper.__kdsr_pdd_compat__ = True
    return wrapper


def apply():
    """Apply every mend (idempotent). Called by ``import kdsr_pdd``."""
    global _APPLIED
    if _APPLIED:
        return
    _alias_functional_tensor()

    import basicsr.archs.vgg_arch
    import basicsr.models.realesrgan_model
    import basicsr.models.realesrnet_model
    import basicsr.test
    import basicsr.train
    import basicsr.utils
    import basicsr.utils.dist_util
    import basicsr.utils.img_process_util
    import basicsr.utils.misc
    import basicsr.utils.options
    from basicsr.models.base_model import BaseModel
    from basicsr.models.sr_model import SRModel
    from basicsr.models.srgan_model import SRGANModel

    from kdsr_pdd.vgg import local_basicsr_vgg

    # VGGFeatureExtractor downloads VGG19 when its one relative path is absent; read local weights instead.
    basicsr.archs.vgg_arch.vgg = local_basicsr_vgg()
    basicsr.train.load_resume_state = _load_resume_state_on_any_device
    for module in (basicsr.utils, basicsr.utils.misc, basicsr.train, basicsr.test):
        module.make_exp_dirs = _make_output_dirs
    filter2d = _contiguous_input(basicsr.utils.img_process_util.filter2D)
    for module in (basicsr.utils.img_process_util, basicsr.models.realesrnet_model, basicsr.models.realesrgan_model):
        module.filter2D = filter2d
    basicsr.utils.dist_util.init_dist = _init_dist_any_backend
    basicsr.utils.options.init_dist = _init_dist_any_backend
    BaseModel.model_to_device = _model_to_device
    BaseModel.get_optimizer = _get_optimizer
    BaseModel.load_network = _load_network
    BaseModel.save_network = _save_network
    BaseModel.save_training_state = _save_training_state
    BaseModel.setup_schedulers = _keep_train_options(BaseModel.setup_schedulers)
    for cls in (SRModel, SRGANModel):
        if 'setup_optimizers' in vars(cls):
            cls.setup_optimizers = _keep_train_options(vars(cls)['setup_optimizers'])
    _APPLIED = True
