"""PDD training model (ECCV 2024): adapt a specialist SR network to unlabeled real LR images.

One BasicSR model class (``model_type: PDDModel``, options :class:`pdd_model.options.PDDOptions`), driven
by BasicSR's unmodified training loop: every batch of :class:`pdd_model.data.PDDMixedDataset` holds HR
crops ``gt``, their synthetic LR ``lq`` and unlabeled real LR crops ``lq_real``. The static and EMA
configurations differ only in the reference network (:meth:`PDDModel._build_reference`).
"""
import weakref
from collections import OrderedDict
from itertools import accumulate

import torch
from basicsr.archs import build_network
from basicsr.archs.vgg_arch import VGGFeatureExtractor
from basicsr.losses import build_loss
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch.overrides import TorchFunctionMode

from kdsr_pdd.checkpoints import load_weights
from kdsr_pdd.model_mixins import DiscriminatorStepMixin, PluginModelMixin
from kdsr_pdd.weights import vgg19_weights
from pdd_model.color import color_correct
from pdd_model.losses import PairwiseDistanceDistillationLoss, feature_perceptual_loss
from pdd_model.options import PDDOptions


class ConcatsRebuiltInBackward:
    """Within the block, a ``torch.cat`` output that autograd saves (e.g. as a convolution's input) is kept
    as its input tensors and concatenated again when the backward needs it.

    In a dense block (RRDBNet's ``cat(x, x1, ...)``) the graph saves those inputs anyway, so the saved
    concatenations were copies: they are about half of an RRDBNet's activation memory. The rebuilt
    tensor is an exact copy, so values and gradients do not change; the backward pays one more copy per
    concatenation. Inputs that are views, or outputs the backward would get modified in place, are
    saved as usual (the latter raise, as autograd does). Under autocast (``train.amp``) the
    concatenations of lower-precision activations are rebuilt alike (the rebuild's type promotion
    is autocast's); where autocast casts a concatenation before the save, the cast tensor is saved
    and left alone.
    """
    _CATS = (torch.cat, torch.concat, torch.concatenate)

    def __init__(self):
        self._recorded = {}  # id(output) -> (weakref to output, inputs, dim)

    def __enter__(self):
        self._mode = _RecordConcats(self._record)
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
        self._mode.__enter__()
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        self._mode.__exit__(*exc)
        self._recorded.clear()

    def _record(self, output, inputs, dim):
        if torch.is_grad_enabled() and output.requires_grad and all(t._base is None for t in inputs):
            self._recorded[id(output)] = (weakref.ref(output), inputs, dim)

    def _pack(self, tensor):
        entry = self._recorded.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            return tensor
        _, inputs, dim = entry
        return _Concat(inputs, dim, tuple(t._version for t in inputs))


class _Concat(tuple):
    """A saved concatenation: (inputs, dim, their versions when it was saved)."""

    def __new__(cls, inputs, dim, versions):
        return super().__new__(cls, (inputs, dim, versions))


def _unpack(packed):
    if not isinstance(packed, _Concat):
        return packed
    inputs, dim, versions = packed
    if tuple(t._version for t in inputs) != versions:
        raise RuntimeError('an input of a concatenation saved for the backward was modified in place')
    return torch.cat([t.detach() for t in inputs], dim)


class _RecordConcats(TorchFunctionMode):
    """Reports every ``torch.cat`` (``concat``, ``concatenate``) call: output, input tensors, dim."""

    def __init__(self, report):
        super().__init__()
        self.report = report

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        if func in ConcatsRebuiltInBackward._CATS and isinstance(output, torch.Tensor):
            tensors = args[0] if args else kwargs['tensors']
            dim = args[1] if len(args) > 1 else kwargs.get('dim', 0)
            self.report(output, tuple(tensors), dim)
        return output


class PDDTrainingMixin:
    """Pairwise distance distillation: student (specialist) ``net_g``, frozen reference (generalist), U-Net D.

    Batches: training ``{'gt': [B,3,H,W], 'lq': [B,3,H/s,W/s], 'lq_real': [B',3,H/s,W/s]}``;
    validation / test ``{'lq', 'gt'}`` (plain paired data). Each generator step runs the student once on
    ``cat[lq, lq_real]`` and the reference once (no grad) on the same batch, and VGG19 twice: without autograd on
    the stack ``[G_syn, G_real, GT]``, with autograd on ``[S_syn, S_real]``; the features feed the perceptual and
    both distance losses (:meth:`_generator_losses` says how the step keeps its memory low).

    Reference (``train.reference``): ``ema`` -- ``net_g_ema`` (``train.ema_decay``, paper 0.999), which starts
    equal to the student; ``static`` -- a frozen ``network_reference`` loaded from
    ``path.pretrain_network_reference``. D is trained on GT (real) vs S_syn (fake) only; the generator's GAN
    term also sees S_real once distilling (``train.gan_on_real``). ``val.color_correction`` matches each
    output channel's mean/std to the input at test time.
    """

    def init_training_settings(self):
        train = self.options.train
        with vgg19_weights(self.options.path.pretrain_network_vgg19):
            super().init_training_settings()  # net_g_ema (a copy of net_g), net_d, pixel / GAN losses, optimizers
            self.cri_distill = build_loss(train.distill_opt.as_dict()).to(self.device)
            self.net_ref = self._build_reference()
            self.vgg = self._build_feature_extractor()
        self.lq_real = None

    def _build_reference(self):
        """The reference network: net_g_ema (EMA mode) or a frozen pretrained network (static mode)."""
        logger = get_root_logger()
        if self.options.train.reference == 'ema':
            logger.info('PDD reference: EMA of the student.')
            net = self.net_g_ema
        else:
            path = self.options.path
            net = build_network(self.options.network_reference.as_dict()).to(self.device)
            key = load_weights(net, path.pretrain_network_reference, path.param_key_reference,
                               path.strict_load_reference)
            logger.info(f'PDD reference: frozen {type(net).__name__} from {path.pretrain_network_reference} '
                        f'(key {key or "raw"}).')
        return net.eval().requires_grad_(False)

    @property
    def perceptual_weight(self):
        return self.options.train.vgg_opt.perceptual_weight

    def _build_feature_extractor(self):
        """One VGG feature extractor over the union of the perceptual and distillation layers (None if unused)."""
        vgg_opt = self.options.train.vgg_opt
        layers = set(vgg_opt.perceptual_layer_weights) if self.perceptual_weight > 0 else set()
        if isinstance(self.cri_distill, PairwiseDistanceDistillationLoss):
            layers |= set(self.cri_distill.layers)
        if not layers:
            return None
        return VGGFeatureExtractor(sorted(layers), vgg_type=vgg_opt.vgg_type, use_input_norm=vgg_opt.use_input_norm,
                                   range_norm=vgg_opt.range_norm).to(self.device)

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
            distill = current_iter > self.net_d_init_iters + self.options.train.distill_warmup_iters
            self.output = self._optimize_generator(distill, loss_dict)
        else:  # no G update (D-only warm-up, or net_d_iters > 1): S(x_syn) only feeds D
            with torch.no_grad():
                self.output = self.net_g(self.lq)
        loss_dict.update(self.discriminator_step(self.gt, self.output))  # GT vs S(x_syn) only
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _optimize_generator(self, distill, loss_dict):
        """One student update; returns S(lq) [B,3,H,W]. Distillation terms only when ``distill``."""
        self.net_d.requires_grad_(False)
        self.optimizer_g.zero_grad()
        sr_syn = self._generator_losses(distill, loss_dict)
        self.backward(sum(loss_dict.values()))
        self.optimizer_step(self.optimizer_g)
        return sr_syn

    def _generator_losses(self, distill, loss_dict):
        """Run the reference and the student, add the generator's loss terms to ``loss_dict``; returns S(lq).

        Memory: what runs without autograd (reference, VGG of its outputs and of GT) runs before the
        student's graph exists; the student's forward keeps the inputs of its concatenations instead of
        their outputs (:class:`ConcatsRebuiltInBackward`); the VGG features are dropped once the loss
        terms are computed, before the discriminator's forward: the backward keeps only what the graphs
        saved. The values and gradients are those of the plain computation.
        """
        sizes = [self.lq.size(0), self.lq_real.size(0)]
        lq_all = torch.cat([self.lq, self.lq_real])
        pairwise = distill and isinstance(self.cri_distill, PairwiseDistanceDistillationLoss)
        percep_layers = list(self.options.train.vgg_opt.perceptual_layer_weights) if self.perceptual_weight > 0 else []
        distill_layers = self.cri_distill.layers if pairwise else []
        if distill:
            with torch.no_grad():
                ref_syn, ref_real = self.net_ref(lq_all).split(sizes)
        requests = OrderedDict()  # image -> (tensor, the VGG layers its loss terms read); no autograd
        if pairwise:
            requests.update(ref_syn=(ref_syn, distill_layers), ref_real=(ref_real, distill_layers))
        if percep_layers:
            requests['gt'] = (self.gt, percep_layers)
        feats = self._vgg_features(requests, with_grad=False)

        with ConcatsRebuiltInBackward():
            sr_syn, sr_real = self.net_g(lq_all).split(sizes)
        requests = OrderedDict()  # the student's outputs, with autograd
        if percep_layers or pairwise:
            requests['sr_syn'] = (sr_syn, sorted(set(percep_layers) | set(distill_layers)))
        if pairwise:
            requests['sr_real'] = (sr_real, distill_layers)
        feats.update(self._vgg_features(requests, with_grad=True))

        if self.cri_pix:
            loss_dict['l_g_pix'] = self.cri_pix(sr_syn, self.gt)
        if self.perceptual_weight > 0:
            loss_dict['l_g_percep'] = self.perceptual_weight * feature_perceptual_loss(
                feats['sr_syn'], feats['gt'], self.options.train.vgg_opt.perceptual_layer_weights)
        if pairwise:
            detach = self.options.train.detach_syn
            stu_syn = {k: v.detach() for k, v in feats['sr_syn'].items()} if detach else feats['sr_syn']
            l_inter, l_intra = self.cri_distill(stu_syn, feats['sr_real'], feats['ref_syn'], feats['ref_real'])
            loss_dict.update((k, v) for k, v in (('l_inter', l_inter), ('l_intra', l_intra)) if v is not None)
            del stu_syn, l_inter, l_intra
        elif distill:
            loss_dict['l_naive'] = self.cri_distill(sr_real, ref_real)
        del feats, requests  # the graphs keep what their backward needs; the rest of the features goes now
        fake = torch.cat([sr_syn, sr_real]) if distill and self.options.train.gan_on_real else sr_syn
        loss_dict['l_g_gan'] = self.cri_gan(self.net_d(fake), True, is_disc=False)
        return sr_syn

    def _vgg_features(self, requests, with_grad):
        """{name: ([B_i,3,H,W], layers)} -> {name: {layer: [B_i,C,h,w]}}: one VGG pass over the stacked
        images (autograd on or off), each image keeping its own layers only.

        The generator step makes two: without autograd over the reference outputs and GT, with autograd
        over the student's outputs, so that the backward keeps the VGG activations of the student's
        images only; the gradients equal those of separate passes.
        """
        if not requests:
            return {}
        names = list(requests)
        bounds = list(accumulate((requests[name][0].size(0) for name in names), initial=0))
        chunks = [(start, stop, set(requests[name][1])) for name, start, stop in zip(names, bounds, bounds[1:])]
        with torch.set_grad_enabled(with_grad):
            outputs = self._vgg_pass(torch.cat([requests[name][0] for name in names]), chunks)
        return dict(zip(names, outputs))

    def _vgg_pass(self, x, chunks):
        """BasicSR's VGGFeatureExtractor.forward on the stacked batch ``x``, keeping for every chunk
        ``(start, stop, layers)`` the features of ``x[start:stop]`` at its layers only (copies, since the
        ReLUs that follow work in place); stops after the last layer any chunk needs."""
        vgg = self.vgg
        if vgg.range_norm:
            x = (x + 1) / 2
        if vgg.use_input_norm:
            x = (x - vgg.mean) / vgg.std
        outputs = [{} for _ in chunks]
        remaining = set().union(*(layers for _, _, layers in chunks))
        for name, layer in vgg.vgg_net.named_children():
            if not remaining:
                break
            x = layer(x)
            if name in remaining:
                remaining.discard(name)
                for out, (start, stop, layers) in zip(outputs, chunks):
                    if name in layers:
                        out[name] = x[start:stop].clone()
        return outputs

    def test(self):
        """SRModel.test (net_g_ema when it exists), then optional colour correction to the input."""
        super().test()
        if self.options.val is not None and self.options.val.color_correction:
            self.output = color_correct(self.output, self.lq)


@MODEL_REGISTRY.register()
class PDDModel(PluginModelMixin, PDDTrainingMixin, DiscriminatorStepMixin, SRGANModel):
    """PDD's training and test model (:class:`PDDTrainingMixin`), trained in the precision of ``train.amp``."""
    options_schema = PDDOptions
