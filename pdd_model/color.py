"""Colour correction of SR outputs (PDD Sec. 3.4, after Real-ESRGAN): per-channel mean/std matched to the LR."""
import torch


def color_correct(sr, lq, eps=1e-6):
    """Match each channel's mean and unbiased std of ``sr`` to those of ``lq``, per image.

    sr' = (sr - mean_sr) * std_lq / std_sr + mean_lq. A flat SR channel (std_sr <= eps) becomes the LR
    channel mean instead of dividing by zero. No clamping to [0, 1] (image writers clamp later).

    Args:
        sr: [B, C, H, W] super-resolved output.
        lq: [B, C, h, w] its LR input (same B and C, at least 2 pixels).
    Returns:
        [B, C, H, W] corrected output, dtype of ``sr``.
    """
    if sr.dim() != 4 or lq.dim() != 4:
        raise ValueError(f'color_correct expects [B, C, H, W] tensors, got sr {tuple(sr.shape)} and '
                         f'lq {tuple(lq.shape)}.')
    if sr.shape[:2] != lq.shape[:2]:
        raise ValueError(f'color_correct: sr {tuple(sr.shape)} and lq {tuple(lq.shape)} differ in batch or '
                         'channel count.')
    if min(sr.shape[2] * sr.shape[3], lq.shape[2] * lq.shape[3]) < 2:
        raise ValueError('color_correct needs at least 2 pixels per image for an unbiased std, got sr '
                         f'{tuple(sr.shape)} and lq {tuple(lq.shape)}.')
    sr_std, sr_mean = torch.std_mean(sr, dim=(2, 3), keepdim=True)
    lq_std, lq_mean = torch.std_mean(lq.to(sr), dim=(2, 3), keepdim=True)
    scale = torch.where(sr_std > eps, lq_std / sr_std.clamp_min(eps), torch.zeros_like(sr_std))
    return (sr - sr_mean) * scale + lq_mean
