"""The discriminator update shared by the GAN-stage models (KDSR-GAN, PDD)."""


def discriminator_step(model, real, fake):
    """One update of ``model.net_d`` with ``model.cri_gan``: ``real`` [B,3,H,W] -> real, ``fake`` -> fake.

    ``fake`` is detached here, so only the discriminator learns. Returns the log entries
    ``l_d_real, out_d_real, l_d_fake, out_d_fake`` (BasicSR's names).
    """
    model.net_d.requires_grad_(True)
    model.optimizer_d.zero_grad()
    real_pred = model.net_d(real)
    l_d_real = model.cri_gan(real_pred, True, is_disc=True)
    l_d_real.backward()
    fake_pred = model.net_d(fake.detach())
    l_d_fake = model.cri_gan(fake_pred, False, is_disc=True)
    l_d_fake.backward()
    model.optimizer_d.step()
    return dict(l_d_real=l_d_real, out_d_real=real_pred.detach().mean(), l_d_fake=l_d_fake,
                out_d_fake=fake_pred.detach().mean())
