"""Small pieces shared by the plugin's BasicSR models (KDSR and PDD); each is one behaviour in a super() chain."""
from collections import OrderedDict

import torch

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
        l_d_real.backward()
        fake_pred = self.net_d(fake.detach())
        l_d_fake = self.cri_gan(fake_pred, False, is_disc=True)
        l_d_fake.backward()
        self.optimizer_d.step()
        return OrderedDict(l_d_real=l_d_real, out_d_real=real_pred.detach().mean(), l_d_fake=l_d_fake,
                           out_d_fake=fake_pred.detach().mean())


def average_gradients(params):
    """All-reduce the gradients of ``params`` to their mean over the distributed processes."""
    world_size = torch.distributed.get_world_size()
    for p in params:
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(world_size)
