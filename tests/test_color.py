"""Colour correction: per-image, per-channel mean/std of the output equal the LR's (numpy oracle)."""
import numpy as np
import pytest
import torch

from pdd_model.color import color_correct


def _stats(img):
    """numpy per-channel mean and unbiased std of a [C, H, W] array."""
    flat = img.reshape(img.shape[0], -1).astype(np.float64)
    return flat.mean(axis=1), flat.std(axis=1, ddof=1)


def test_output_matches_lr_stats_per_sample():
    gen = torch.Generator().manual_seed(0)
    sr = torch.rand(2, 3, 16, 16, generator=gen) * torch.tensor([0.2, 0.8]).view(2, 1, 1, 1) + 0.1
    lq = torch.rand(2, 3, 4, 4, generator=gen)
    lq[1] = lq[1] * 0.3 + 0.6  # very different statistics in the second image
    out = color_correct(sr, lq)
    assert out.shape == sr.shape and out.dtype == sr.dtype
    for b in range(2):
        out_mean, out_std = _stats(out[b].numpy())
        lq_mean, lq_std = _stats(lq[b].numpy())
        np.testing.assert_allclose(out_mean, lq_mean, atol=1e-5)
        np.testing.assert_allclose(out_std, lq_std, atol=1e-5)
        # each image is corrected with its own statistics only
        torch.testing.assert_close(out[b:b + 1], color_correct(sr[b:b + 1], lq[b:b + 1]))
        # the correction is an affine map per channel: numpy oracle of the formula
        sr_mean, sr_std = _stats(sr[b].numpy())
        expected = (sr[b].numpy() - sr_mean[:, None, None]) / sr_std[:, None, None] * lq_std[:, None, None] \
            + lq_mean[:, None, None]
        np.testing.assert_allclose(out[b].numpy(), expected, atol=1e-5)


def test_flat_channels_give_finite_sensible_output():
    gen = torch.Generator().manual_seed(1)
    sr = torch.rand(1, 3, 8, 8, generator=gen)
    sr[0, 0] = 0.3  # flat SR channel
    lq = torch.rand(1, 3, 4, 4, generator=gen)
    lq[0, 1] = 0.7  # flat LR channel
    out = color_correct(sr, lq)
    assert torch.isfinite(out).all()
    lq_mean, lq_std = _stats(lq[0].numpy())
    # flat SR channel -> constant LR mean; flat LR channel -> constant 0.7
    np.testing.assert_allclose(out[0, 0].numpy(), np.full((8, 8), lq_mean[0]), atol=1e-6)
    np.testing.assert_allclose(out[0, 1].numpy(), np.full((8, 8), 0.7), atol=1e-6)
    out_mean, out_std = _stats(out[0, 2:].numpy())
    np.testing.assert_allclose([out_mean[0], out_std[0]], [lq_mean[2], lq_std[2]], atol=1e-5)
    # both flat
    both = color_correct(torch.full((1, 1, 4, 4), 0.2), torch.full((1, 1, 2, 2), 0.9))
    torch.testing.assert_close(both, torch.full((1, 1, 4, 4), 0.9))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match='channel'):
        color_correct(torch.rand(1, 3, 8, 8), torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match='batch'):
        color_correct(torch.rand(2, 3, 8, 8), torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match='2 pixels'):
        color_correct(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 1, 1))
    with pytest.raises(ValueError, match=r'\[B, C, H, W\]'):
        color_correct(torch.rand(3, 8, 8), torch.rand(3, 4, 4))
