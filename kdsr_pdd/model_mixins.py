"""Small pieces shared by the plugin's BasicSR models (KDSR and PDD); each is one behaviour in a super() chain."""
from collections import OrderedDict

import torch
from basicsr.utils import get_root_logger

from kdsr_pdd.schema import validate_options


class TypedOptionsMixin:
    """Reads the option dict into ``self.options``, an instance of the class's ``options_schema``.

    The schema is what the model code reads; BasicSR's base classes keep reading ``self.opt``.
    """
    options_schema = None

    def __init__(self, opt):
        self.options = validate_options(opt, opt.get('name', type(self).__name__), schema=self.options_schema)
        super().__init__(opt)


class EMAStartsAsNetGMixin:
    """With an EMA, ``net_g_ema`` starts as an exact copy of ``net_g``, also when ``net_g`` came from a file
    whose ``params_ema`` differ (BasicSR loads those into the EMA); a resumed run keeps its saved EMA."""

    def init_training_settings(self):
        super().init_training_settings()
        if self.ema_decay > 0 and not self.options.path.resume_state:
            self.model_ema(0)


class MixedPrecisionMixin:
    """``train.amp`` and ``train.channels_last`` for the plugin's training models.

    ``fp16`` / ``bf16``: each ``optimize_parameters`` runs under ``torch.autocast`` (forward passes and losses
    of every network, discriminators included; backward passes outside it). ``fp16`` scales the losses with a
    ``GradScaler``: a step whose scaled gradients overflow is not applied and is logged, the scale is lowered,
    and the scaler's state travels with the training state. The model code calls :meth:`backward` and
    :meth:`optimizer_step` where it would call ``loss.backward()`` and ``optimizer.step()``.
    ``channels_last``: every network of the model (and so its activations) in channels-last memory format.
    """

    def init_training_settings(self):
        super().init_training_settings()
        train = self.options.train
        self.amp_dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(train.amp)
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=train.amp == 'fp16')
        if train.channels_last:
            for value in vars(self).values():
                if isinstance(value, torch.nn.Module):
                    value.to(memory_format=torch.channels_last)
        if train.amp != 'none' or train.channels_last:
            get_root_logger().info(f'Mixed precision: {train.amp}; channels_last: {train.channels_last}.')

    def optimize_parameters(self, current_iter):
        scale = self.grad_scaler.get_scale() if self.grad_scaler.is_enabled() else None
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            super().optimize_parameters(current_iter)
        if scale is not None:
            self.grad_scaler.update()
            if self.grad_scaler.get_scale() < scale:
                get_root_logger().warning(f'iteration {current_iter}: fp16 gradients overflowed at loss scale '
                                          f'{scale:g}: update not applied, scale now {self.grad_scaler.get_scale():g}.')

    def backward(self, loss):
        """``loss.backward()``, of the scaled loss under fp16, outside autocast."""
        with torch.autocast(self.device.type, enabled=False):
            self.grad_scaler.scale(loss).backward()

    def optimizer_step(self, optimizer):
        """``optimizer.step()``; under fp16 on unscaled gradients, skipped when they overflowed."""
        self.grad_scaler.step(optimizer)

    def extra_training_state(self):
        """What :mod:`kdsr_pdd.resume` saves with the training state: the fp16 gradient scaler."""
        return {'grad_scaler': self.grad_scaler.state_dict()} if self.grad_scaler.is_enabled() else {}

    def load_extra_training_state(self, extra):
        if self.grad_scaler.is_enabled() and extra.get('grad_scaler'):
            self.grad_scaler.load_state_dict(extra['grad_scaler'])


class PluginModelMixin(TypedOptionsMixin, EMAStartsAsNetGMixin, MixedPrecisionMixin):
    """What every training model of the plugin has first in its chain: typed options, an EMA that starts as
    ``net_g``, ``train.amp`` / ``train.channels_last``."""


class DiscriminatorStepMixin:
    """The discriminator update of the GAN-stage models."""

    def discriminator_step(self, real, fake):
        """One update of ``net_d`` with ``cri_gan``: ``real`` [B,3,H,W] -> real, ``fake`` -> fake (detached here).

        Returns the log entries ``l_d_real, out_d_real, l_d_fake, out_d_fake`` (BasicSR's names).
        """
        self.net_d.requires_grad_(True)
        self.optimizer_d.zero_grad()
        real_pred = self.net_d(real)
        l_d_real = self.cri_gan(real_pred, True, is_disc=True)
        self.backward(l_d_real)
        fake_pred = self.net_d(fake.detach())
        l_d_fake = self.cri_gan(fake_pred, False, is_disc=True)
        self.backward(l_d_fake)
        self.optimizer_step(self.optimizer_d)
        return OrderedDict(l_d_real=l_d_real, out_d_real=real_pred.detach().mean(), l_d_fake=l_d_fake,
                           out_d_fake=fake_pred.detach().mean())


def average_gradients(params):
    """All-reduce the gradients of ``params`` to their mean over the distributed processes."""
    world_size = torch.distributed.get_world_size()
    for p in params:
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(world_size)
