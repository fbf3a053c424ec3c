"""Shared helpers of the inference tests: tiny random-weight networks, images and checkpoints on disk."""
import json

import cv2
import numpy as np
import torch
from basicsr.archs.rrdbnet_arch import RRDBNet

import kdsr_pdd.plugin  # noqa: F401  (registers the plugin into BasicSR)
from kdsr_arch.archs import KDSRStudent

TINY_RRDB = dict(num_feat=8, num_block=1, num_grow_ch=4)
TINY_KDSR = dict(n_feats=8, n_blocks=2, n_encoder_res=1, scale=4)
# Receptive-field radii in LR pixels: tiny RRDBNet 17 LR convs + 4 convs at x2/x4 (< 19); tiny KDSR G < 8.
RRDB_PAD, KDSR_PAD = 20, 8


def rrdb(scale=4, bias=0.5, seed=0):
    """Tiny RRDBNet whose output sits around ``bias`` (random init alone gives values near 0)."""
    torch.manual_seed(seed)
    net = RRDBNet(3, 3, scale=scale, **TINY_RRDB).eval()
    with torch.no_grad():
        net.conv_last.bias.fill_(bias)
        net.conv_last.weight.mul_(20)
    return net


def kdsr(seed=0):
    """Tiny KDSR student; the encoder and the IDR-to-kernel MLPs are scaled up so that the IDR visibly
    matters (at random init a different IDR changes the output by only ~1e-6)."""
    torch.manual_seed(seed)
    net = KDSRStudent(**TINY_KDSR).eval()
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith('E_st.') or '.kernel.' in name:
                param.mul_(2)
    return net


def kdsr_checkpoint(path, seed=0):
    net = kdsr(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'params': net.state_dict()}, path)
    return net


def image(h, w, seed=0, low=0.0, high=1.0):
    """Smooth-ish random RGB image [1,3,h,w] in [low, high]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, h // 4 + 1, w // 4 + 1, generator=g), size=(h, w),
                                        mode='bilinear', align_corners=False)
    return low + (high - low) * (x + 0.1 * torch.rand(1, 3, h, w, generator=g)) / 1.1


def write_rgb(path, x):
    """Write [1,3,h,w] in [0,1] as an 8-bit PNG; return the float image that was actually stored."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.rint(x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert cv2.imwrite(str(path), arr[:, :, ::-1])
    return torch.from_numpy(arr.astype(np.float32) / 255).permute(2, 0, 1)[None]


def read_rgb(path):
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return arr[:, :, ::-1].astype(np.int32)


def to_uint8(sr):
    return np.rint(sr[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.int32)


KDSR_FLAGS = ['--arch', 'KDSRStudent', '--arch-args', json.dumps(TINY_KDSR)]
