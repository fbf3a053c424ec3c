"""The embedded demo data set, made from photos that scikit-image ships (no download).

Layout under ``root`` (default ``datasets/demo``)::

    train/hr/*.png            training HR photos (halved with area interpolation, ~150-500 px)
    train/meta_info.txt       their names, for BasicSR's Real-ESRGAN dataset
    val/hr/*.png              two held-out 128x128 HR crops
    val/lr_bicubic_x4/*.png   their MATLAB-bicubic x4 LR (BasicSR's imresize)
    val/gaussian8_x4/         KDSR's Gaussian8 x4 set of the held-out crops (kdsr_arch.data.build_gaussian8)
    real/train_lr/*.png       the "real" target domain for PDD: the training photos degraded by one fixed,
                              seeded camera-like pipeline (pdd_model.data.camera_domain_degradation);
                              used unpaired, as unlabeled real LR
    real/val/{hr,lr}/*.png    the held-out crops and their camera-domain LR (paired, for PSNR/SSIM)

Every file is a deterministic function of the shipped photos; building twice writes the same bytes.
"""
import os
import os.path as osp

import cv2
import numpy as np
import skimage
from basicsr.utils.matlab_functions import imresize

from kdsr_arch.data import build_gaussian8
from pdd_model.data import camera_domain_degradation

TRAIN_PHOTOS = ('astronaut.png', 'chelsea.png', 'rocket.jpg', 'hubble_deep_field.jpg', 'motorcycle_left.png',
                'ihc.png')
VAL_PHOTOS = ('coffee.png', 'retina.jpg')
VAL_SIZE = 128
SCALE = 4


def read_shipped_photo(name):
    """Read one of scikit-image's bundled photos as uint8 BGR (the order BasicSR uses on disk)."""
    path = osp.join(osp.dirname(skimage.__file__), 'data', name)
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f'{path}: scikit-image photo missing; reinstall scikit-image.')
    return img


def _halve(img):
    h, w = img.shape[:2]
    return cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)


def _center_crop(img, size):
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size]


def _write(path, img):
    os.makedirs(osp.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, img):
        raise OSError(f'could not write {path}')


def bicubic_lr(img_uint8, scale):
    """MATLAB-style antialiased bicubic downscale of a uint8 image, rounded back to uint8."""
    lr = imresize(img_uint8.astype(np.float32) / 255., 1 / scale)
    return np.clip(np.round(lr * 255.), 0, 255).astype(np.uint8)


def camera_lr(img_bgr_uint8, seed):
    """The demo's "real" target-domain LR of a uint8 BGR image (camera-like pipeline, fixed seed)."""
    rgb = img_bgr_uint8[..., ::-1].astype(np.float32) / 255.
    lr = camera_domain_degradation(rgb, SCALE, seed)
    return np.clip(np.round(lr[..., ::-1] * 255.), 0, 255).astype(np.uint8)


def build_demo_data(root='datasets/demo'):
    """Write the demo data set under ``root`` (see module docstring); return ``root``."""
    names = []
    for seed, photo in enumerate(TRAIN_PHOTOS):
        name = osp.splitext(photo)[0] + '.png'
        hr = _halve(read_shipped_photo(photo))
        _write(osp.join(root, 'train', 'hr', name), hr)
        _write(osp.join(root, 'real', 'train_lr', name), camera_lr(hr, seed))
        names.append(name)
    with open(osp.join(root, 'train', 'meta_info.txt'), 'w', encoding='utf-8') as f:
        f.write(''.join(f'{n}\n' for n in names))
    for seed, photo in enumerate(VAL_PHOTOS, start=len(TRAIN_PHOTOS)):
        name = osp.splitext(photo)[0] + '.png'
        hr = _center_crop(_halve(read_shipped_photo(photo)), VAL_SIZE)
        _write(osp.join(root, 'val', 'hr', name), hr)
        _write(osp.join(root, 'val', f'lr_bicubic_x{SCALE}', name), bicubic_lr(hr, SCALE))
        _write(osp.join(root, 'real', 'val', 'hr', name), hr)
        _write(osp.join(root, 'real', 'val', 'lr', name), camera_lr(hr, seed))
    build_gaussian8(osp.join(root, 'val', 'hr'), osp.join(root, 'val', f'gaussian8_x{SCALE}'), SCALE)
    return root
