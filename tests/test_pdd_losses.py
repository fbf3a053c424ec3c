"""PDD losses against independent oracles: PyWavelets, hand-computed values, numpy re-implementations."""
import math

import numpy as np
import pytest
import pywt
import torch
from basicsr.losses import build_loss

import pdd_model  # noqa: F401  (registers the losses)
from pdd_model.losses import (
    HaarWaveletLoss,
    NaiveDistillationLoss,
    PairwiseDistanceDistillationLoss,
    feature_perceptual_loss,
    haar_dwt,
    inter_distance_loss,
    intra_distance_loss,
)


def _feats(seed, shapes, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, generator=gen, dtype=torch.float64).requires_grad_(requires_grad)
            for k, s in shapes.items()}


# ----------------------------------------------------------------------------------------- Haar

def test_haar_equals_pywt_dwt2_per_channel():
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    ll, hl, lh, hh = haar_dwt(x)
    for b in range(2):
        for c in range(3):
            ca, (ch, cv, cd) = pywt.dwt2(x[b, c].numpy(), 'haar')
            np.testing.assert_allclose(ll[b, c].numpy(), ca, atol=1e-12)
            np.testing.assert_allclose(hl[b, c].numpy(), cv, atol=1e-12)
            np.testing.assert_allclose(lh[b, c].numpy(), ch, atol=1e-12)
            np.testing.assert_allclose(hh[b, c].numpy(), cd, atol=1e-12)


def test_haar_float32_and_no_channel_mixing():
    x = torch.zeros(1, 2, 2, 2)
    x[0, 1] = torch.tensor([[1., 2.], [3., 4.]])
    ll, hl, lh, hh = haar_dwt(x)
    assert ll.dtype == torch.float32 and ll.shape == (1, 2, 1, 1)
    assert torch.count_nonzero(torch.stack([ll, hl, lh, hh])[:, :, 0]) == 0  # channel 0 stays zero
    # 2x2 block [[a, b], [c, d]] -> LL (a+b+c+d)/2, HL (a-b+c-d)/2, LH (a+b-c-d)/2, HH (a-b-c+d)/2
    got = [float(t[0, 1, 0, 0]) for t in (ll, hl, lh, hh)]
    assert got == pytest.approx([5.0, -1.0, -2.0, 0.0], abs=1e-6)


@pytest.mark.parametrize('shape', [(1, 3, 5, 4), (1, 3, 4, 7)])
def test_haar_odd_size_raises(shape):
    odd = shape[2] if shape[2] % 2 else shape[3]
    with pytest.raises(ValueError, match=rf'{shape[2]}x{shape[3]}.*crop') as err:
        haar_dwt(torch.zeros(shape))
    assert str(odd) in str(err.value)
    with pytest.raises(ValueError, match='crop'):
        HaarWaveletLoss()(torch.zeros(shape), torch.zeros(shape))


def test_wavelet_loss_hand_example():
    pred = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1., 2.], [3., 4.]]]])
    # bands of target: LL 5, HL -1, LH -2, HH 0 -> 0.5 * (1*5 + 0.1*mean(1, 2) + 0.01*0)
    assert float(HaarWaveletLoss()(pred, target)) == pytest.approx(0.5 * (5 + 0.1 * 1.5), rel=1e-6)
    # 'sum' sums the M band's two entries instead of averaging them
    loss_sum = HaarWaveletLoss(reduction='sum')(pred, target)
    assert float(loss_sum) == pytest.approx(0.5 * (5 + 0.1 * 3), rel=1e-6)


def test_wavelet_loss_matches_pywt_oracle():
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 8, 6, generator=gen, dtype=torch.float64).unbind(0)
    pred, target = pred[None].repeat(2, 1, 1, 1), target[None].repeat(2, 1, 1, 1) * 0.7
    loss = HaarWaveletLoss(loss_weight=2.0, band_weights=(1.0, 0.5, 0.25))(pred, target)

    def bands(img):
        out = [pywt.dwt2(img[b, c], 'haar') for b in range(img.shape[0]) for c in range(img.shape[1])]
        low = np.stack([o[0] for o in out])
        mid = np.stack([o[1][k] for o in out for k in (0, 1)])
        high = np.stack([o[1][2] for o in out])
        return low, mid, high

    expected = 2.0 * sum(w * np.abs(p - t).mean()
                         for w, p, t in zip((1.0, 0.5, 0.25), bands(pred.numpy()), bands(target.numpy())))
    assert float(loss) == pytest.approx(expected, rel=1e-10)


def test_wavelet_loss_bad_options():
    with pytest.raises(ValueError, match='band_weights'):
        HaarWaveletLoss(band_weights=(1.0, 0.1))
    with pytest.raises(ValueError, match='reduction'):
        HaarWaveletLoss(reduction='none')


# ----------------------------------------------------------------------------------------- intra

def _intra_hand_features():
    """[1, 2, 1, 2] maps with d_student = (pos0 [1, 0], pos1 [0, 0]) and d_ref = (pos0 [0, 0], pos1 [2, 0])."""
    stu_syn = {'a': torch.zeros(1, 2, 1, 2)}
    stu_real = {'a': torch.tensor([[[[-1., 0.]], [[0., 0.]]]])}
    ref_syn = {'a': torch.tensor([[[[0., 2.]], [[0., 0.]]]])}
    ref_real = {'a': torch.zeros(1, 2, 1, 2)}
    return stu_syn, stu_real, ref_syn, ref_real


def test_intra_ce_hand_example():
    eps = 1e-6
    e = math.e
    # row 0: target softmax [.5, .5], pred softmax [e/(e+1), 1/(e+1)]
    row0 = -(0.5 * math.log(e / (e + 1) + eps) + 0.5 * math.log(1 / (e + 1) + eps))
    # row 1: pred softmax [.5, .5], target softmax sums to 1 -> -log(.5 + eps)
    row1 = -math.log(0.5 + eps)
    loss = intra_distance_loss(*_intra_hand_features(), {'a': 0.5}, criterion='ce', eps=eps)
    assert float(loss) == pytest.approx(0.5 * (row0 + row1) / 2, rel=1e-6)


def test_intra_l1_l2_hand_example():
    feats = _intra_hand_features()
    # d_student - d_ref over the 4 entries: [1, 0] and [-2, 0]
    assert float(intra_distance_loss(*feats, {'a': 1.0}, criterion='l1')) == pytest.approx(3 / 4)
    assert float(intra_distance_loss(*feats, {'a': 1.0}, criterion='l2')) == pytest.approx(5 / 4)


def _np_softmax(x):
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _np_intra(s_syn, s_real, g_syn, g_real, criterion, eps=1e-6):
    d_s, d_r = np.abs(s_real - s_syn), np.abs(g_real - g_syn)
    if criterion == 'ce':
        return float((-(_np_softmax(d_r) * np.log(_np_softmax(d_s) + eps)).sum(axis=1)).mean())
    return float(np.abs(d_s - d_r).mean() if criterion == 'l1' else ((d_s - d_r)**2).mean())


@pytest.mark.parametrize('criterion', ['ce', 'l1', 'l2'])
def test_intra_random_matches_numpy_with_layer_weights(criterion):
    shapes = {'x': (2, 4, 3, 5), 'y': (2, 6, 2, 2), 'unused': (2, 1, 1, 1)}
    feats = [_feats(seed, shapes) for seed in range(4)]
    weights = {'x': 0.3, 'y': 1.5}
    expected = sum(w * _np_intra(*(f[k].numpy() for f in feats), criterion) for k, w in weights.items())
    assert float(intra_distance_loss(*feats, weights, criterion=criterion)) == pytest.approx(expected, rel=1e-9)


def test_intra_stationary_when_student_is_reference():
    shapes = {'x': (2, 5, 3, 3)}
    ref_syn, ref_real = _feats(1, shapes), _feats(2, shapes)
    stu_syn = {k: v.clone().requires_grad_(True) for k, v in ref_syn.items()}
    stu_real = {k: v.clone().requires_grad_(True) for k, v in ref_real.items()}
    eps = 1e-6
    loss = intra_distance_loss(stu_syn, stu_real, ref_syn, ref_real, {'x': 1.0}, eps=eps)
    p = _np_softmax(np.abs(ref_real['x'].numpy() - ref_syn['x'].numpy()))
    entropy = float((-(p * np.log(p + eps)).sum(axis=1)).mean())
    assert loss.item() == pytest.approx(entropy, rel=1e-9)
    loss.backward()
    for grad in (stu_syn['x'].grad, stu_real['x'].grad):
        assert torch.isfinite(grad).all()
        assert grad.abs().max() < 1e-6  # zero up to the O(eps) shift of log(softmax + eps)
    for criterion in ('l1', 'l2'):
        assert float(intra_distance_loss(stu_syn, stu_real, ref_syn, ref_real, {'x': 1.0}, criterion)) == 0


def test_intra_rejects_mismatched_sizes_and_bad_criterion():
    syn = {'x': torch.zeros(1, 2, 4, 4)}
    real = {'x': torch.zeros(1, 2, 2, 2)}
    with pytest.raises(ValueError, match='same size'):
        intra_distance_loss(syn, real, syn, real, {'x': 1.0})
    with pytest.raises(ValueError, match='intra criterion'):
        intra_distance_loss(syn, syn, syn, syn, {'x': 1.0}, criterion='kl')


# ----------------------------------------------------------------------------------------- inter

def _np_gram(f):
    n, c, h, w = f.shape
    m = f.reshape(n, c, h * w)
    return np.einsum('nip,njp->nij', m, m) / (c * h * w)


def _np_inter(s_syn, s_real, g_syn, g_real, mode):
    if mode == 'gram_change':
        d_syn, d_real = _np_gram(s_syn - g_syn), _np_gram(s_real - g_real)
    elif mode == 'gram':
        d_syn, d_real = _np_gram(s_syn) - _np_gram(g_syn), _np_gram(s_real) - _np_gram(g_real)
    else:
        d_syn, d_real = np.abs(s_syn - g_syn), np.abs(s_real - g_real)
    return float(np.sqrt(((d_syn - d_real)**2).sum()))


@pytest.mark.parametrize('mode', ['gram_change', 'gram', 'l1'])
def test_inter_matches_numpy_with_layer_weights(mode):
    shapes = {'x': (2, 3, 4, 5), 'y': (2, 4, 2, 2)}
    feats = [_feats(seed, shapes) for seed in range(10, 14)]
    weights = {'x': 0.25, 'y': 2.0}
    expected = sum(w * _np_inter(*(f[k].numpy() for f in feats), mode) for k, w in weights.items())
    assert float(inter_distance_loss(*feats, weights, mode=mode)) == pytest.approx(expected, rel=1e-9)


def test_inter_gram_change_allows_different_real_size_and_sums_over_batch():
    syn_shapes, real_shapes = {'x': (3, 2, 4, 4)}, {'x': (3, 2, 3, 5)}
    s_syn, g_syn = _feats(0, syn_shapes), _feats(1, syn_shapes)
    s_real, g_real = _feats(2, real_shapes), _feats(3, real_shapes)
    loss = inter_distance_loss(s_syn, s_real, g_syn, g_real, {'x': 1.0})
    per_sample = [_np_inter(*(f['x'][b:b + 1].numpy() for f in (s_syn, s_real, g_syn, g_real)), 'gram_change')
                  for b in range(3)]
    # one Frobenius norm over the whole batch, not a mean of per-sample norms
    assert float(loss) == pytest.approx(math.sqrt(sum(v * v for v in per_sample)), rel=1e-9)
    with pytest.raises(ValueError, match='same size'):
        inter_distance_loss(s_syn, s_real, g_syn, g_real, {'x': 1.0}, mode='l1')


def test_inter_zero_with_zero_gradient_when_student_is_reference():
    shapes = {'x': (2, 3, 4, 4), 'y': (2, 2, 2, 2)}
    ref_syn, ref_real = _feats(5, shapes), _feats(6, shapes)
    stu_syn = {k: v.clone().requires_grad_(True) for k, v in ref_syn.items()}
    stu_real = {k: v.clone().requires_grad_(True) for k, v in ref_real.items()}
    for mode in ('gram_change', 'gram', 'l1'):
        loss = inter_distance_loss(stu_syn, stu_real, ref_syn, ref_real, {'x': 0.25, 'y': 1.0}, mode=mode)
        assert float(loss) == 0
        if mode == 'gram_change':
            loss.backward()
            for t in (*stu_syn.values(), *stu_real.values()):
                assert torch.equal(t.grad, torch.zeros_like(t))  # not NaN


def test_inter_rejects_bad_mode_and_missing_layer():
    f = {'x': torch.zeros(1, 2, 2, 2)}
    with pytest.raises(ValueError, match='inter mode'):
        inter_distance_loss(f, f, f, f, {'x': 1.0}, mode='fro')
    with pytest.raises(KeyError, match="'conv9_9'"):
        inter_distance_loss(f, f, f, f, {'conv9_9': 1.0})
    with pytest.raises(ValueError, match='layer_weights is empty'):
        inter_distance_loss(f, f, f, f, {})


# ----------------------------------------------------------------------------------------- module

def test_pairwise_defaults_layers_and_registry():
    loss = build_loss({'type': 'PairwiseDistanceDistillationLoss'})
    assert isinstance(loss, PairwiseDistanceDistillationLoss)
    assert loss.layers == ['conv2_1', 'conv2_2', 'conv3_1', 'conv3_4', 'conv4_1', 'conv4_4', 'conv5_1', 'conv5_4']
    assert loss.inter_layer_weights == {'conv2_1': 0.25, 'conv3_1': 0.25, 'conv4_1': 0.25, 'conv5_1': 0.25}
    assert loss.intra_layer_weights == {'conv2_2': 0.1, 'conv3_4': 0.3, 'conv4_4': 1.0, 'conv5_4': 1.0}
    no_inter = PairwiseDistanceDistillationLoss(inter_weight=0)
    assert no_inter.layers == ['conv2_2', 'conv3_4', 'conv4_4', 'conv5_4']
    with pytest.raises(ValueError, match='inter_mode'):
        PairwiseDistanceDistillationLoss(inter_mode='fro')
    with pytest.raises(ValueError, match='intra_criterion'):
        PairwiseDistanceDistillationLoss(intra_criterion='cosine_sim')
    assert isinstance(build_loss({'type': 'HaarWaveletLoss'}), HaarWaveletLoss)
    assert isinstance(build_loss({'type': 'NaiveDistillationLoss'}), NaiveDistillationLoss)


def test_pairwise_values_none_terms_and_gradient_only_to_student():
    shapes = {'a': (2, 3, 4, 4), 'b': (2, 2, 2, 2)}
    stu_syn, stu_real = _feats(20, shapes, True), _feats(21, shapes, True)
    ref_syn, ref_real = _feats(22, shapes, True), _feats(23, shapes, True)
    loss = PairwiseDistanceDistillationLoss({'a': 0.5}, {'a': 0.1, 'b': 1.0}, inter_weight=0.5, intra_weight=2.0)
    l_inter, l_intra = loss(stu_syn, stu_real, ref_syn, ref_real)
    np_feats = [{k: v.detach().numpy() for k, v in f.items()} for f in (stu_syn, stu_real, ref_syn, ref_real)]
    assert float(l_inter) == pytest.approx(0.5 * 0.5 * _np_inter(*(f['a'] for f in np_feats), 'gram_change'))
    expected_intra = 2.0 * (0.1 * _np_intra(*(f['a'] for f in np_feats), 'ce') +
                            _np_intra(*(f['b'] for f in np_feats), 'ce'))
    assert float(l_intra) == pytest.approx(expected_intra)
    (l_inter + l_intra).backward()
    for f in (stu_syn, stu_real):
        assert all(t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0 for t in f.values())
    for f in (ref_syn, ref_real):
        assert all(t.grad is None for t in f.values())
    assert PairwiseDistanceDistillationLoss(inter_weight=0, intra_weight=0)(stu_syn, stu_real, ref_syn,
                                                                             ref_real) == (None, None)
    only_inter = PairwiseDistanceDistillationLoss({'b': 1.0}, {}, intra_weight=1.0)
    assert only_inter.layers == ['b'] and only_inter(stu_syn, stu_real, ref_syn, ref_real)[1] is None


@pytest.mark.parametrize('criterion,power', [('l1', 1), ('l2', 2)])
def test_naive_distillation(criterion, power):
    pred = torch.tensor([[[[1., -2.], [0.5, 3.]]]], requires_grad=True)
    ref = torch.tensor([[[[0., 0.], [1., 1.]]]], requires_grad=True)
    diffs = [1., 2., 0.5, 2.]
    loss = NaiveDistillationLoss(loss_weight=0.5, criterion=criterion)(pred, ref)
    assert float(loss) == pytest.approx(0.5 * sum(d**power for d in diffs) / 4)
    loss.backward()
    assert ref.grad is None and pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='criterion'):
        NaiveDistillationLoss(criterion='ce')


def test_feature_perceptual_loss():
    shapes = {'conv1_2': (1, 2, 4, 4), 'conv3_4': (1, 3, 2, 2)}
    pred, gt = _feats(30, shapes, True), _feats(31, shapes, True)
    weights = {'conv1_2': 0.1, 'conv3_4': 1.0}
    loss = feature_perceptual_loss(pred, gt, weights)
    expected = sum(w * np.abs(pred[k].detach().numpy() - gt[k].detach().numpy()).mean() for k, w in weights.items())
    assert float(loss) == pytest.approx(expected)
    loss.backward()
    assert all(t.grad is None for t in gt.values()) and all(t.grad is not None for t in pred.values())
