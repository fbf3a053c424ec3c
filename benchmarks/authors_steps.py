"""The authors' training steps, reconstructed from the reference fact sheets for side-by-side benchmarks.

Written from ``shared/reference/pdd_reference_facts.md`` (sections 2.2, 3, 4) and
``kdsr_reference_facts.md`` (section 4.3), not from the authors' code. What matters here is the
*structure* of their computation -- what runs under autograd, what is stacked, how many VGG passes
there are, which graphs stay alive -- so that time and memory can be compared with this plugin's
models on equal numbers. The maths is the authors'; the building blocks are BasicSR's where the
authors' fork uses the same maths (RRDBNet, U-Net discriminator, ``VGGFeatureExtractor``,
``PerceptualLoss``, ``GANLoss``) and the plugin's KDSR networks (same layers, same order).

* :class:`AuthorsPDDStep`: ``SRGANRefModel.optimize_parameters`` of the EMA configuration past the
  warm-ups (full objective), followed by the EMA update:

  1. D frozen; G grads zeroed;
  2. reference forward under ``no_grad`` on ``cat[lq_s, lq_t]``, chunked;
  3. student forward on ``cat[lq_s, lq_t]`` with autograd, chunked;
  4. ``DistillationLoss(out_t, ref_t, out_s, ref_s)``: one VGG pass per image set, four passes,
     each a separate call under autograd (the references detached), then the inter (gram change,
     Frobenius) and intra (l1 distance maps, channel cross-entropy over ``(n h w) c`` rows) terms;
  5. ``WeightedWvtLoss(out_s, gt)`` with the slicing Haar split; BasicSR's ``PerceptualLoss(out_s, gt)``
     with its own VGG19 (two more passes: the distillation and the perceptual loss each have a copy);
  6. ``GANLoss(D(cat[out_s, out_t]), real)``; one backward of the sum; ``optimizer_g.step()``;
  7. D step: BCE(D(gt), real) backward, BCE(D(out_s.detach()), fake) backward, ``optimizer_d.step()``;
  8. loss values logged (``.item()``), EMA update of the reference.

* :class:`AuthorsKDSRStudentStep`: the classic stage-4 student iteration: the teacher encoder runs with
  autograd on (its parameters keep ``requires_grad``, no ``no_grad``), so its graph lives until the
  step ends; ``sr, S = student(lr)``; ``L1(sr, hr) + KL(log_softmax(S/T), softmax(T_fea.detach()/T))``
  (batchmean, no T^2); ``|S - T|`` computed for the log only; one backward; Adam step.

A step is one function call; its locals die when it returns (in the authors' loops they live until
the next iteration rebinds them, which would only add to their memory).
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from basicsr.archs.vgg_arch import VGGFeatureExtractor
from basicsr.losses.basic_loss import PerceptualLoss
from basicsr.losses.gan_loss import GANLoss
from torch import nn

from kdsr_pdd.weights import vgg19_weights


# ------------------------------------------------------------------------------------------------ PDD
def authors_gram(feat):
    """(n, c, h, w) -> (n, c, c): f f^T over the h*w positions / (c h w), as a batched matmul."""
    n, c, h, w = feat.size()
    f = feat.view(n, c, h * w)
    return f.bmm(f.transpose(1, 2)) / (c * h * w)


def authors_channel_ce(pred, target, eps=1e-6):
    """The fork's ``CrossEntropyLoss(one_hot=False, S2B=True)``: rows (n h w), softmax over channels c."""
    c = pred.size(1)
    pred = pred.permute(0, 2, 3, 1).reshape(-1, c)
    target = target.permute(0, 2, 3, 1).reshape(-1, c)
    return torch.mean(-torch.sum(F.softmax(target, dim=1) * torch.log(F.softmax(pred, dim=1) + eps), dim=1))


class AuthorsDistillationLoss(nn.Module):
    """``DistillationLoss`` of the fork (gram_change / fro inter, l1 / ce intra, VGG19 pre-ReLU features).

    forward(x1, ref1, x2, ref2) with the authors' call order (SR_t, REF_t, SR_s, REF_s) ->
    (inter_loss, intra_loss). One VGG pass per argument.
    """

    def __init__(self, inter_weights, intra_weights, rinter_weight=1.0, rintra_weight=1.0, eps=1e-6):
        super().__init__()
        self.inter_weights, self.intra_weights = dict(inter_weights), dict(intra_weights)
        self.rinter_weight, self.rintra_weight, self.eps = rinter_weight, rintra_weight, eps
        layers = sorted(set(self.inter_weights) | set(self.intra_weights))
        self.vgg = VGGFeatureExtractor(layers, vgg_type='vgg19', use_input_norm=True, range_norm=False)

    def forward(self, x1, ref1, x2, ref2):
        f_x1 = self.vgg(x1)
        f_r1 = self.vgg(ref1.detach())
        f_x2 = self.vgg(x2)
        f_r2 = self.vgg(ref2.detach())
        inter_loss = 0
        for k, w in self.inter_weights.items():
            d_t = authors_gram(f_x1[k] - f_r1[k])
            d_s = authors_gram(f_x2[k] - f_r2[k])
            inter_loss = inter_loss + w * torch.norm(d_t - d_s, 'fro')
        inter_loss = inter_loss * self.rinter_weight
        intra_loss = 0
        for k, w in self.intra_weights.items():
            d_student = torch.abs(f_x1[k] - f_x2[k])
            d_ref = torch.abs(f_r1[k] - f_r2[k])
            intra_loss = intra_loss + w * authors_channel_ce(d_student, d_ref, self.eps)
        intra_loss = intra_loss * self.rintra_weight
        return inter_loss, intra_loss


def authors_haar_split(x):
    """``DWT_Haar_split`` (hh=False): per-channel orthonormal Haar by strided slicing -> (LL, cat(HL, LH), HH)."""
    a = x[:, :, 0::2, 0::2] / 2
    b = x[:, :, 1::2, 0::2] / 2
    c = x[:, :, 0::2, 1::2] / 2
    d = x[:, :, 1::2, 1::2] / 2
    ll = a + b + c + d
    hl = -a - b + c + d
    lh = -a + b - c + d
    hh = a - b - c + d
    return ll, torch.cat((hl, lh), dim=1), hh


class AuthorsWeightedWvtLoss(nn.Module):
    """``WeightedWvtLoss``: sum_i w_i * loss_weight * mean|band_i(pred) - band_i(target)|."""

    def __init__(self, loss_weight=0.5, weights=(1.0, 0.1, 0.01)):
        super().__init__()
        self.loss_weight, self.weights = loss_weight, tuple(weights)

    def forward(self, pred, target):
        bands = zip(self.weights, authors_haar_split(pred), authors_haar_split(target))
        loss = 0
        for w, p, t in bands:
            loss = loss + w * (self.loss_weight * F.l1_loss(p, t))
        return loss


class AuthorsPDDStep:
    """One iteration of the authors' ``SRGANRefModel`` (EMA configuration, full objective) + EMA update.

    ``net_g`` (trained), ``net_ref`` (the EMA reference, updated here), ``net_d`` (trained) are used as
    given; the optimizers are Adam with the option files' settings. ``vgg_file``: the VGG19 weights both
    VGG copies load. ``opt``: the ``train`` section of an option file (BasicSR dict form), from which the
    loss weights come. ``step(lq_s, gt_s, lq_t)`` returns the logged losses (floats).
    """

    def __init__(self, net_g, net_ref, net_d, opt, vgg_file):
        self.net_g, self.net_ref, self.net_d = net_g, net_ref.eval(), net_d
        self.ema_decay = opt['ema_decay']
        with vgg19_weights(vgg_file):
            distill, vgg_opt = opt['distill_opt'], opt['vgg_opt']
            self.cri_domain = AuthorsDistillationLoss(distill['inter_layer_weights'], distill['intra_layer_weights'],
                                                      distill.get('inter_weight', 1.0),
                                                      distill.get('intra_weight', 1.0))
            self.cri_perceptual = PerceptualLoss(vgg_opt['perceptual_layer_weights'], vgg_type='vgg19',
                                                 use_input_norm=True, range_norm=False,
                                                 perceptual_weight=vgg_opt['perceptual_weight'], style_weight=0.,
                                                 criterion='l1')
        pix = opt['pixel_opt']
        self.cri_pix = AuthorsWeightedWvtLoss(pix['loss_weight'], pix['band_weights'])
        gan = opt['gan_opt']
        self.cri_gan = GANLoss(gan['gan_type'], gan['real_label_val'], gan['fake_label_val'], gan['loss_weight'])
        self.optimizer_g = _adam(net_g.parameters(), opt['optim_g'])
        self.optimizer_d = _adam(net_d.parameters(), opt['optim_d'])

    def step(self, lq_s, gt_s, lq_t):
        """One training iteration on a synthetic batch (lq_s, gt_s) and a real LR batch lq_t of the same size."""
        for p in self.net_d.parameters():
            p.requires_grad = False
        self.optimizer_g.zero_grad()
        with torch.no_grad():
            out_s_ref, out_t_ref = self.net_ref(torch.cat([lq_s, lq_t], dim=0)).chunk(2)
        out_s, out_t = self.net_g(torch.cat([lq_s, lq_t], dim=0)).chunk(2)

        loss_dict = OrderedDict()
        l_g_total = 0
        l_inter, l_intra = self.cri_domain(out_t, out_t_ref, out_s, out_s_ref)
        l_g_total = l_g_total + l_inter + l_intra
        loss_dict['l_inter'], loss_dict['l_intra'] = l_inter, l_intra
        l_g_pix = self.cri_pix(out_s, gt_s)
        l_g_total = l_g_total + l_g_pix
        loss_dict['l_g_pix'] = l_g_pix
        l_g_percep, _ = self.cri_perceptual(out_s, gt_s)
        l_g_total = l_g_total + l_g_percep
        loss_dict['l_g_percep'] = l_g_percep
        fake_g_pred = self.net_d(torch.cat([out_s, out_t], dim=0))
        l_g_gan = self.cri_gan(fake_g_pred, True, is_disc=False)
        l_g_total = l_g_total + l_g_gan
        loss_dict['l_g_gan'] = l_g_gan
        l_g_total.backward()
        self.optimizer_g.step()

        for p in self.net_d.parameters():
            p.requires_grad = True
        self.optimizer_d.zero_grad()
        real_d_pred = self.net_d(gt_s)
        l_d_real = self.cri_gan(real_d_pred, True, is_disc=True)
        loss_dict['l_d_real'], loss_dict['out_d_real'] = l_d_real, torch.mean(real_d_pred.detach())
        l_d_real.backward()
        fake_d_pred = self.net_d(out_s.detach())
        l_d_fake = self.cri_gan(fake_d_pred, False, is_disc=True)
        loss_dict['l_d_fake'], loss_dict['out_d_fake'] = l_d_fake, torch.mean(fake_d_pred.detach())
        l_d_fake.backward()
        self.optimizer_d.step()

        log = OrderedDict((k, v.mean().item()) for k, v in loss_dict.items())
        _ema_update(self.net_ref, self.net_g, self.ema_decay)
        return log


def _adam(params, optim_opt):
    kwargs = {k: v for k, v in optim_opt.items() if k != 'type'}
    if optim_opt.get('type', 'Adam') != 'Adam':
        raise ValueError(f'the authors train with Adam, got {optim_opt["type"]}')
    return torch.optim.Adam(params, **kwargs)


@torch.no_grad()
def _ema_update(ema, net, decay):
    """BasicSR's ``model_ema``: ema <- decay * ema + (1 - decay) * net, parameters only."""
    net_params = dict(net.named_parameters())
    for k, v in ema.named_parameters():
        v.data.mul_(decay).add_(net_params[k].data, alpha=1 - decay)


# ----------------------------------------------------------------------------------------------- KDSR
class AuthorsKDSRStudentStep:
    """One iteration of the authors' classic stage-4 trainer (iso recipe: SR + KD from the first epoch).

    ``student``: a KDSRStudent (trained: G and E_st, every parameter with ``requires_grad``);
    ``teacher``: a KDSRTeacher whose encoder ``E`` is called as the authors do (parameters left
    trainable, autograd on, the output detached only inside the loss). ``step(lr, hr)`` returns the
    logged losses.
    """

    def __init__(self, student, teacher, scale, optim_opt, temperature=0.15):
        self.student, self.teacher, self.scale, self.temperature = student, teacher, scale, temperature
        self.teacher.requires_grad_(True)
        self.optimizer = _adam([p for p in student.parameters() if p.requires_grad], optim_opt)

    def step(self, lr, hr):
        """One training iteration on LR / HR [B,3,h,w] / [B,3,s*h,s*w]."""
        self.optimizer.zero_grad()
        _, t_fea = self.teacher.E(torch.cat([lr, F.pixel_unshuffle(hr, self.scale)], dim=1))
        sr, s_fea = self.student(lr, return_idr=True)
        loss_sr = F.l1_loss(sr, hr)
        loss_distill = F.kl_div(F.log_softmax(s_fea / self.temperature, dim=1),
                                F.softmax(t_fea.detach() / self.temperature, dim=1), reduction='batchmean')
        loss_l1 = torch.mean(torch.abs(s_fea - t_fea.detach()))  # logged only (its weight is commented out)
        loss = loss_sr + loss_distill
        loss.backward()
        self.optimizer.step()
        return OrderedDict(l_pix=loss_sr.item(), l_kd=loss_distill.item(), l_kd_l1=loss_l1.item())
