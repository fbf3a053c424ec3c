"""PDD training model (ECCV 2024): adapt a specialist SR network to unlabeled real LR images.

One BasicSR model class, driven by BasicSR's unmodified training loop: every batch of
:class:`pdd_model.data.PDDMixedDataset` holds HR crops ``gt``, their synthetic LR ``lq`` and
unlabeled real LR crops ``lq_real``.
"""
from collections import OrderedDict

import torch
from basicsr.archs import build_network
from basicsr.archs.vgg_arch import VGGFeatureExtractor
from basicsr.losses import build_loss
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from kdsr_pdd.checkpoints import load_weights
from kdsr_pdd.gan import discriminator_step
from kdsr_pdd.vgg import vgg19_weights
from pdd_model.color import color_correct
from pdd_model.losses import NaiveDistillationLoss, PairwiseDistanceDistillationLoss, feature_perceptual_loss

REFERENCE_MODES = ('ema', 'static')
# Real-ESRGAN's perceptual layers (pre-ReLU VGG19 features), used by the authors' option files.
PERCEPTUAL_LAYER_WEIGHTS = {'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_4': 1.0, 'conv4_4': 1.0, 'conv5_4': 1.0}


@MODEL_REGISTRY.register()
class PDDModel(SRGANModel):
    """Pairwise distance distillation: student (specialist) ``net_g``, frozen reference (generalist), U-Net D.

    Batches: training ``{'gt': [B,3,H,W], 'lq': [B,3,H/s,W/s], 'lq_real': [B',3,H/s,W/s]}``;
    validation / test ``{'lq', 'gt'}`` (plain paired data). Each generator step runs the student once on
    ``cat[lq, lq_real]`` and the reference once (no grad) on the same batch, and VGG19 once on the stack
    ``[S_syn, S_real, G_syn, G_real, GT]``, whose features feed the perceptual and both distance losses.

    Reference (``train.reference``):
        'ema'    -- the reference is ``net_g_ema`` (``train.ema_decay``, paper 0.999); it starts equal to
                    the student (both from ``path.pretrain_network_g``). Needs ``distill_warmup_iters > 0``.
        'static' -- a frozen network built from the top-level ``reference_network`` and loaded from
                    ``path.pretrain_network_reference`` (``path.reference_param_key``, default params_ema >
                    params > raw; ``path.strict_load_reference``, default True). BasicSR's resume rewrites
                    only ``pretrain_network_*`` of top-level ``network_*`` keys and flips ``param_key_*``, so
                    these names survive a resume, and its experiment-folder creation skips them.

    Other ``train`` options: ``pixel_opt`` (HaarWaveletLoss), ``gan_opt`` (GANLoss, for D and G),
    ``vgg_opt`` {vgg_type, use_input_norm, range_norm, perceptual_layer_weights, perceptual_weight},
    ``distill_opt`` (PairwiseDistanceDistillationLoss, or NaiveDistillationLoss on the real-input
    predictions: the paper's Eq. 3 baseline), ``net_d_iters``, ``net_d_init_iters`` (D-only warm-up),
    ``distill_warmup_iters`` (supervised-only steps after it), ``distill_detach_syn`` (detach S_syn in the
    distillation; default True for static, False for EMA), ``gan_on_real`` (generator GAN term on
    ``cat[S_syn, S_real]`` once distilling; default True). D is trained on GT (real) vs S_syn (fake) only.
    ``val.color_correction: true`` matches each output channel's mean/std to the input at test time.
    """

    def init_training_settings(self):
        train_opt = self.opt['train']
        self._check_training_options(train_opt)
        # BasicSR builds net_g_ema, net_d (+ pretrain_network_d), pixel and GAN losses, optimizers, schedulers.
        super().init_training_settings()
        self.distill_warmup_iters = train_opt.get('distill_warmup_iters', 0)
        self.detach_syn = train_opt.get('distill_detach_syn', self.reference_mode == 'static')
        self.gan_on_real = train_opt.get('gan_on_real', True)
        self.cri_distill = build_loss(train_opt['distill_opt']).to(self.device)
        if not isinstance(self.cri_distill, (PairwiseDistanceDistillationLoss, NaiveDistillationLoss)):
            raise ValueError(f'train.distill_opt.type {train_opt["distill_opt"]["type"]!r}: use '
                             'PairwiseDistanceDistillationLoss or NaiveDistillationLoss.')
        self.net_ref = self._build_reference()
        self._build_feature_extractor(dict(train_opt.get('vgg_opt') or {}))
        self.lq_real = None

    def _check_training_options(self, train_opt):
        self.reference_mode = train_opt.get('reference', 'ema')
        if self.reference_mode not in REFERENCE_MODES:
            raise ValueError(f'train.reference = {self.reference_mode!r}: use one of {REFERENCE_MODES}.')
        for key in ('gan_opt', 'distill_opt'):
            if not train_opt.get(key):
                raise ValueError(f'PDDModel needs train.{key}.')
        if train_opt.get('perceptual_opt'):
            raise ValueError('PDDModel computes the perceptual loss on VGG features shared with the distillation: '
                             'replace train.perceptual_opt by train.vgg_opt.perceptual_layer_weights and '
                             'train.vgg_opt.perceptual_weight.')
        if self.reference_mode == 'ema':
            if train_opt.get('ema_decay', 0) <= 0:
                raise ValueError('train.reference: ema needs train.ema_decay > 0 (the paper uses 0.999).')
            if train_opt.get('distill_warmup_iters', 0) <= 0:
                raise ValueError('train.reference: ema needs train.distill_warmup_iters > 0: the student starts equal '
                                 'to its EMA reference, where both distillation terms are stationary (zero '
                                 'gradient); a few supervised steps must move it first (the authors use 5).')
            if self.opt.get('reference_network') or self.opt['path'].get('pretrain_network_reference'):
                raise ValueError('reference_network / path.pretrain_network_reference are used only with '
                                 'train.reference: static; the EMA reference is net_g_ema.')

    def _build_reference(self):
        """The reference network: net_g_ema (EMA mode) or a frozen pretrained network (static mode)."""
        logger = get_root_logger()
        if self.reference_mode == 'ema':
            if not self.opt['path'].get('resume_state'):
                self.model_ema(0)  # the reference starts as an exact copy of the student
                logger.info('PDD reference: EMA of the student, initialised to the student.')
            net = self.net_g_ema
        else:
            path_opt = self.opt['path']
            net_opt, load_path = self.opt.get('reference_network'), path_opt.get('pretrain_network_reference')
            if net_opt is None or load_path is None:
                raise ValueError('train.reference: static needs the top-level reference_network (e.g. RRDBNet) and '
                                 'path.pretrain_network_reference (its checkpoint).')
            net = build_network(net_opt).to(self.device)
            key = load_weights(net, load_path, path_opt.get('reference_param_key'),
                               path_opt.get('strict_load_reference', True))
            logger.info(f'PDD reference: frozen {type(net).__name__} from {load_path} (key {key or "raw"}).')
        return net.eval().requires_grad_(False)

    def _build_feature_extractor(self, vgg_opt):
        """One VGG feature extractor over the union of the perceptual and distillation layers."""
        self.perceptual_layer_weights = dict(vgg_opt.pop('perceptual_layer_weights', PERCEPTUAL_LAYER_WEIGHTS))
        self.perceptual_weight = vgg_opt.pop('perceptual_weight', 1.0)
        layers = set(self.perceptual_layer_weights) if self.perceptual_weight > 0 else set()
        if isinstance(self.cri_distill, PairwiseDistanceDistillationLoss):
            layers |= set(self.cri_distill.layers)
        self.vgg = None
        if layers:
            with vgg19_weights(self.opt['path'].get('vgg19_weights')):
                self.vgg = VGGFeatureExtractor(sorted(layers), **vgg_opt).to(self.device)

    def feed_data(self, data):
        """Take ``lq`` (+ ``gt``) and, in training batches, ``lq_real`` of the same size as ``lq``."""
        super().feed_data(data)
        self.lq_real = data['lq_real'].to(self.device) if 'lq_real' in data else None
        if self.lq_real is not None and self.lq_real.shape[1:] != self.lq.shape[1:]:
            raise ValueError(f'lq_real {tuple(self.lq_real.shape[1:])} and lq {tuple(self.lq.shape[1:])} must have '
                             'the same size: both go through the student in one batch.')

    def optimize_parameters(self, current_iter):
        if self.lq_real is None or not hasattr(self, 'gt'):
            raise ValueError('PDDModel trains on batches with gt, lq and lq_real: use datasets.train.type '
                             'PDDMixedDataset.')
        loss_dict = OrderedDict()
        if current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters:
            distill = current_iter > self.net_d_init_iters + self.distill_warmup_iters
            self.output = self._optimize_generator(distill, loss_dict)
        else:  # no G update (D-only warm-up, or net_d_iters > 1): S(x_syn) only feeds D
            with torch.no_grad():
                self.output = self.net_g(self.lq)
        loss_dict.update(discriminator_step(self, self.gt, self.output))  # GT vs S(x_syn) only
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _optimize_generator(self, distill, loss_dict):
        """One student update; returns S(lq) [B,3,H,W]. Distillation terms only when ``distill``."""
        self.net_d.requires_grad_(False)
        self.optimizer_g.zero_grad()
        sizes = [self.lq.size(0), self.lq_real.size(0)]
        lq_all = torch.cat([self.lq, self.lq_real])
        sr_syn, sr_real = self.net_g(lq_all).split(sizes)
        pairwise = distill and isinstance(self.cri_distill, PairwiseDistanceDistillationLoss)
        if distill:
            with torch.no_grad():
                ref_syn, ref_real = self.net_ref(lq_all).split(sizes)

        images = OrderedDict()  # what the VGG pass needs this step, stacked in this order
        if self.perceptual_weight > 0 or pairwise:
            images['sr_syn'] = sr_syn
        if pairwise:
            images.update(sr_real=sr_real, ref_syn=ref_syn, ref_real=ref_real)
        if self.perceptual_weight > 0:
            images['gt'] = self.gt
        feats = self._vgg_features(images)

        if self.cri_pix:
            loss_dict['l_g_pix'] = self.cri_pix(sr_syn, self.gt)
        if self.perceptual_weight > 0:
            loss_dict['l_g_percep'] = self.perceptual_weight * feature_perceptual_loss(
                feats['sr_syn'], feats['gt'], self.perceptual_layer_weights)
        if pairwise:
            stu_syn = {k: v.detach() for k, v in feats['sr_syn'].items()} if self.detach_syn else feats['sr_syn']
            l_inter, l_intra = self.cri_distill(stu_syn, feats['sr_real'], feats['ref_syn'], feats['ref_real'])
            loss_dict.update((k, v) for k, v in (('l_inter', l_inter), ('l_intra', l_intra)) if v is not None)
        elif distill:
            loss_dict['l_naive'] = self.cri_distill(sr_real, ref_real)
        fake = torch.cat([sr_syn, sr_real]) if distill and self.gan_on_real else sr_syn
        loss_dict['l_g_gan'] = self.cri_gan(self.net_d(fake), True, is_disc=False)
        sum(loss_dict.values()).backward()
        self.optimizer_g.step()
        return sr_syn

    def _vgg_features(self, images):
        """{name: [B_i,3,H,W]} -> {name: {layer: [B_i,C,h,w]}} with ONE VGG forward on the stacked batch."""
        if not images:
            return {}
        stacked = self.vgg(torch.cat(list(images.values())))
        sizes = [img.size(0) for img in images.values()]
        chunks = {layer: feat.split(sizes) for layer, feat in stacked.items()}
        return {name: {layer: chunks[layer][i] for layer in chunks} for i, name in enumerate(images)}

    def test(self):
        """SRModel.test (net_g_ema when it exists), then optional colour correction to the input."""
        super().test()
        if (self.opt.get('val') or {}).get('color_correction', False):
            self.output = color_correct(self.output, self.lq)
