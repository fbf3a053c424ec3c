"""PDD losses: Haar wavelet L1 (Eq. 10), intra/inter-model distance distillation (Eqs. 5-8),
naive distillation (Eq. 3) and a perceptual L1 on precomputed features.

Feature arguments are dicts ``layer name -> [B, C, h, w]`` (e.g. from BasicSR's
``VGGFeatureExtractor``), so a model extracts each image's features once and shares them.
"Student" is the network being trained, "reference" the frozen/EMA model; ``syn`` and ``real``
are its predictions on synthetic and real-world LR inputs. Reference features are always detached.
"""
from collections.abc import Sequence

import pywt
import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

# Layer weights of the authors' option files (VGG19 pre-ReLU features).
INTER_LAYER_WEIGHTS = {'conv2_1': 0.25, 'conv3_1': 0.25, 'conv4_1': 0.25, 'conv5_1': 0.25}
INTRA_LAYER_WEIGHTS = {'conv2_2': 0.1, 'conv3_4': 0.3, 'conv4_4': 1.0, 'conv5_4': 1.0}

INTER_MODES = ('gram_change', 'gram', 'l1')
INTRA_CRITERIA = ('ce', 'l1', 'l2')
_PAIR_CRITERIA = {'l1': F.l1_loss, 'l2': F.mse_loss}


def _check_choice(option, value, choices):
    if value not in choices:
        raise ValueError(f'{option} must be one of {list(choices)}, got {value!r}.')


def _haar_kernels():
    """Cross-correlation kernels [4, 1, 2, 2] for (LL, HL, LH, HH) from PyWavelets' Haar filters.

    pywt convolves (flips the filter) and keeps every second sample, so the equivalent stride-2
    correlation kernel is the reversed filter; kernel = outer(filter along H, filter along W).
    Correspondence with ``pywt.dwt2 -> (cA, (cH, cV, cD))``:
    LL = cA; HL = cV (high-pass along width: vertical edges); LH = cH (high-pass along height:
    horizontal edges); HH = cD.
    """
    wavelet = pywt.Wavelet('haar')
    lo = torch.tensor(wavelet.dec_lo[::-1], dtype=torch.float64)
    hi = torch.tensor(wavelet.dec_hi[::-1], dtype=torch.float64)
    along_h_w = ((lo, lo), (lo, hi), (hi, lo), (hi, hi))
    return torch.stack([torch.outer(h, w) for h, w in along_h_w]).unsqueeze(1)


_HAAR_KERNELS = _haar_kernels()


def haar_dwt(x):
    """Single-level orthonormal Haar transform per channel, equal to ``pywt.dwt2(x[b, c], 'haar')``.

    Args:
        x: [B, C, H, W] with even H and W.
    Returns:
        (ll, hl, lh, hh), each [B, C, H/2, W/2]; ll = pywt cA, hl = cV, lh = cH, hh = cD.
    """
    if x.dim() != 4:
        raise ValueError(f'haar_dwt expects a [B, C, H, W] tensor, got shape {tuple(x.shape)}.')
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f'haar_dwt needs even height and width, got {h}x{w}; crop the images to even sizes '
                         '(e.g. a gt_size divisible by 2 * scale).')
    kernel = _HAAR_KERNELS.to(device=x.device, dtype=x.dtype).repeat(c, 1, 1, 1)
    bands = F.conv2d(x, kernel, stride=2, groups=c)
    return bands.view(b, c, 4, h // 2, w // 2).unbind(2)


@LOSS_REGISTRY.register()
class HaarWaveletLoss(nn.Module):
    """Weighted L1 on Haar sub-bands (Eq. 10): L = LL, M = cat(HL, LH) on channels, H = HH.

    loss = loss_weight * (w0 * L1(L) + w1 * L1(M) + w2 * L1(H)), each L1 reduced over its own band.
    forward(pred [B, C, H, W], target [B, C, H, W]) -> scalar; H and W must be even.
    """

    def __init__(self, loss_weight: float = 0.5, band_weights: Sequence[float] = (1.0, 0.1, 0.01),
                 reduction: str = 'mean'):
        super().__init__()
        _check_choice('reduction', reduction, ('mean', 'sum'))
        if len(band_weights) != 3:
            raise ValueError(f'band_weights needs 3 values (L, M, H), got {list(band_weights)}.')
        self.loss_weight = loss_weight
        self.band_weights = tuple(float(w) for w in band_weights)
        self.reduction = reduction

    @staticmethod
    def _split(x):
        ll, hl, lh, hh = haar_dwt(x)
        return ll, torch.cat((hl, lh), dim=1), hh

    def forward(self, pred, target):
        bands = zip(self.band_weights, self._split(pred), self._split(target))
        return self.loss_weight * sum(w * F.l1_loss(p, t, reduction=self.reduction) for w, p, t in bands)


def _weighted_layer_sum(layer_weights, feature_dicts, term):
    """sum_k w_k * term(d[k] for d in feature_dicts); clear errors for empty weights / missing layers."""
    if not layer_weights:
        raise ValueError('layer_weights is empty; give at least one layer name -> weight.')
    total = 0
    for name, weight in layer_weights.items():
        for feats in feature_dicts:
            if name not in feats:
                raise KeyError(f'feature dict lacks layer {name!r} (has {sorted(feats)}); extract the layers '
                               f'{sorted(layer_weights)}.')
        total = total + weight * term(*(feats[name] for feats in feature_dicts))
    return total


def _check_same_shape(what, a, b):
    if a.shape != b.shape:
        raise ValueError(f'{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}; synthetic and real '
                         'predictions must have the same size (use equal LR patch sizes).')


def channel_softmax_cross_entropy(pred, target, eps=1e-6):
    """Mean over positions (B*h*w rows) of -sum_c softmax(target)_c * log(softmax(pred)_c + eps).

    pred, target: [B, C, h, w]; the softmax runs over channels at each spatial position.
    """
    log_q = torch.log(torch.softmax(pred, dim=1) + eps)
    return -(torch.softmax(target, dim=1) * log_q).sum(dim=1).mean()


def intra_distance_loss(stu_syn, stu_real, ref_syn, ref_real, layer_weights, criterion='ce', eps=1e-6):
    """Intra-model distance distillation (Eqs. 5-6), weighted sum over layers.

    Per layer: d_student = |F(S_real) - F(S_syn)|, d_ref = |F(G_real) - F(G_syn)| (both [B, C, h, w],
    pairing synthetic and real images by batch index and position); criterion 'ce'
    (channel_softmax_cross_entropy(d_student, d_ref)), 'l1' or 'l2' (means). Returns a scalar.
    """
    _check_choice('intra criterion', criterion, INTRA_CRITERIA)

    def term(s_syn, s_real, g_syn, g_real):
        _check_same_shape('intra distance', s_syn, s_real)
        d_student = (s_real - s_syn).abs()
        d_ref = (g_real - g_syn).detach().abs()
        if criterion == 'ce':
            return channel_softmax_cross_entropy(d_student, d_ref, eps)
        return _PAIR_CRITERIA[criterion](d_student, d_ref)

    return _weighted_layer_sum(layer_weights, (stu_syn, stu_real, ref_syn, ref_real), term)


def gram_matrix(feat):
    """[B, C, h, w] -> [B, C, C]: f f^T over the h*w positions, divided by C*h*w."""
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def _inter_distance(student, ref, mode):
    if mode == 'gram_change':
        return gram_matrix(student - ref)
    if mode == 'gram':
        return gram_matrix(student) - gram_matrix(ref)
    return (student - ref).abs()


def inter_distance_loss(stu_syn, stu_real, ref_syn, ref_real, layer_weights, mode='gram_change'):
    """Inter-model distance distillation (Eqs. 7-8), weighted sum over layers.

    Per layer: D_dom = Gram(F(S_dom) - F(G_dom)) ('gram_change'), Gram(F(S_dom)) - Gram(F(G_dom))
    ('gram'), or |F(S_dom) - F(G_dom)| ('l1'); loss = Frobenius norm of D_syn - D_real over the whole
    tensor, batch included (not averaged). Returns a scalar; zero with zero gradient when S == G.
    """
    _check_choice('inter mode', mode, INTER_MODES)

    def term(s_syn, s_real, g_syn, g_real):
        d_syn = _inter_distance(s_syn, g_syn.detach(), mode)
        d_real = _inter_distance(s_real, g_real.detach(), mode)
        _check_same_shape(f'inter distance ({mode})', d_syn, d_real)
        return torch.linalg.vector_norm(d_syn - d_real)

    return _weighted_layer_sum(layer_weights, (stu_syn, stu_real, ref_syn, ref_real), term)


@LOSS_REGISTRY.register()
class PairwiseDistanceDistillationLoss(nn.Module):
    """PDD's distillation (Eqs. 5-8) on precomputed feature dicts (layer -> [B, C, h, w]).

    forward(stu_syn, stu_real, ref_syn, ref_real) -> (l_inter, l_intra), each a scalar, or None when
    its weight is <= 0 or it has no layers. ``layers`` lists the feature layers needed.
    Defaults follow the authors' option files (inter: conv2_1..conv5_1 at 0.25, gram_change;
    intra: conv2_2 .1, conv3_4 .3, conv4_4 1, conv5_4 1, cross-entropy).
    """

    def __init__(self, inter_layer_weights: dict[str, float] | None = None,
                 intra_layer_weights: dict[str, float] | None = None, inter_weight: float = 1.0,
                 intra_weight: float = 1.0, inter_mode: str = 'gram_change', intra_criterion: str = 'ce',
                 eps: float = 1e-6):
        super().__init__()
        _check_choice('inter_mode', inter_mode, INTER_MODES)
        _check_choice('intra_criterion', intra_criterion, INTRA_CRITERIA)
        self.inter_layer_weights = dict(INTER_LAYER_WEIGHTS if inter_layer_weights is None else inter_layer_weights)
        self.intra_layer_weights = dict(INTRA_LAYER_WEIGHTS if intra_layer_weights is None else intra_layer_weights)
        self.inter_weight = inter_weight
        self.intra_weight = intra_weight
        self.inter_mode = inter_mode
        self.intra_criterion = intra_criterion
        self.eps = eps

    @property
    def use_inter(self):
        return self.inter_weight > 0 and bool(self.inter_layer_weights)

    @property
    def use_intra(self):
        return self.intra_weight > 0 and bool(self.intra_layer_weights)

    @property
    def layers(self):
        names = set(self.inter_layer_weights) if self.use_inter else set()
        if self.use_intra:
            names |= set(self.intra_layer_weights)
        return sorted(names)

    def forward(self, stu_syn, stu_real, ref_syn, ref_real):
        feats = (stu_syn, stu_real, ref_syn, ref_real)
        l_inter = l_intra = None
        if self.use_inter:
            l_inter = self.inter_weight * inter_distance_loss(*feats, self.inter_layer_weights, self.inter_mode)
        if self.use_intra:
            l_intra = self.intra_weight * intra_distance_loss(*feats, self.intra_layer_weights,
                                                              self.intra_criterion, self.eps)
        return l_inter, l_intra


@LOSS_REGISTRY.register()
class NaiveDistillationLoss(nn.Module):
    """Naive distillation baseline (Eq. 3): the student imitates the reference on the same input.

    forward(pred [B, C, H, W], ref [B, C, H, W]) -> loss_weight * L1 or L2 (mean); ref is detached.
    Works on predictions or on one feature map.
    """

    def __init__(self, loss_weight: float = 1.0, criterion: str = 'l1'):
        super().__init__()
        _check_choice('criterion', criterion, tuple(_PAIR_CRITERIA))
        self.loss_weight = loss_weight
        self.criterion = criterion

    def forward(self, pred, ref):
        return self.loss_weight * _PAIR_CRITERIA[self.criterion](pred, ref.detach())


def feature_perceptual_loss(pred_feats, gt_feats, layer_weights):
    """sum_k w_k * mean|pred_feats[k] - gt_feats[k]| (BasicSR's L1 perceptual term, gt detached)."""
    return _weighted_layer_sum(layer_weights, (pred_feats, gt_feats),
                               lambda pred, gt: F.l1_loss(pred, gt.detach()))
