"""BasicSR 1.4.2 made ready for the plugin: the compat mends, then the plugin's additions to ``BaseModel``.

:func:`prepare_basicsr` is what the method packages (:mod:`kdsr_arch`, :mod:`pdd_model`) call before they
import BasicSR; it is idempotent and cheap after the first call. What it installs, and where it lives:

* :mod:`kdsr_pdd.compat`: mends of 1.4.2 breakage on today's stack;
* :mod:`kdsr_pdd.checkpoints`: networks read from every checkpoint format, written atomically, never with
  non-finite values;
* :mod:`kdsr_pdd.resume`: training states written atomically, with what an exact resume needs, and read
  on any device;
* :mod:`kdsr_pdd.weights`: VGG19 read from local files instead of downloaded;
* :func:`get_optimizer` below: any ``torch.optim`` optimizer by name (1.4.2 builds only Adam).

:mod:`kdsr_pdd.training` (faithful resume, signals, non-finite steps, full disks, ETA) is not installed
here: ``kdsr-pdd train`` puts it around BasicSR's loop for the duration of one run.
"""
import torch

_PREPARED = False


def get_optimizer(self, optim_type, params, lr, **kwargs):
    """BaseModel.get_optimizer for any ``torch.optim`` class by name (AdamW, SGD, ...)."""
    optimizer_class = getattr(torch.optim, optim_type, None)
    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, torch.optim.Optimizer)):
        raise ValueError(f'train.optim_*.type: {optim_type!r} is not a torch.optim optimizer (e.g. Adam, AdamW).')
    return optimizer_class(params, lr, **kwargs)


def prepare_basicsr():
    """Apply the compat mends and install the plugin's BaseModel additions (once)."""
    global _PREPARED
    if _PREPARED:
        return
    from kdsr_pdd import compat

    compat.apply()
    from basicsr.models.base_model import BaseModel

    from kdsr_pdd import checkpoints, resume, weights

    checkpoints.install()
    resume.install()
    weights.install()
    BaseModel.get_optimizer = get_optimizer
    _PREPARED = True
