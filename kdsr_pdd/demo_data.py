"""The embedded demo data set, made from photos that scikit-image ships (no download).

Layout under ``root`` (default ``datasets/demo``)::

    train/hr/*.png            training HR photos (halved with area interpolation, ~150-500 px)
    train/meta_info.txt       their names, for BasicSR's Real-ESRGAN dataset
    val/hr/*.png              two held-out 128x128 HR crops
    val/lr_bicubic_x4/*.png   their MATLAB-bicubic x4 LR (BasicSR's imresize)
    val/gaussian8_x4/         KDSR's Gaussian8 x4 set of the held-out crops (kdsr_arch.data.build_gaussian8)
    real/train_lr/*.png       the "real" target domain for PDD: the training photos degraded by one fixed,
                              seeded camera-like pipeline (:func:`camera_domain_degradation`);
                              used unpaired, as unlabeled real LR
    real/val/{hr,lr}/*.png    the held-out crops and their camera-domain LR (paired, for PSNR/SSIM)

:func:`build_evidence_data` writes, for the PDD evidence study (``kdsr-pdd evidence pdd``), under its own root
(default ``datasets/evidence_pdd``)::

    specialist_train/{hr,lr}/*.png   the training photos (as train/hr, cropped to a multiple of 4) and their
                                     MATLAB-bicubic x4 LR: the paired data a bicubic specialist is tuned on
    heldout/hr/*.png                 more held-out 128x128 crops (:data:`HELDOUT_CROPS`, none of the training
                                     photos): the most textured cells of a grid over each halved photo
    heldout/target_lr/*.png          their camera-domain LR (the target domain, :func:`camera_lr`)
    heldout/bicubic_lr/*.png         their MATLAB-bicubic LR (the synthetic domain)

Every file is a deterministic function of the shipped photos; building twice writes the same bytes.
"""
import math
import os.path as osp

import cv2
import numpy as np
import skimage
from basicsr.data.degradations import bivariate_Gaussian
from basicsr.utils import imwrite
from basicsr.utils.matlab_functions import imresize

from kdsr_arch.benchmarks import build_gaussian8

TRAIN_PHOTOS = ('astronaut.png', 'chelsea.png', 'rocket.jpg', 'hubble_deep_field.jpg', 'motorcycle_left.png',
                'ihc.png')
VAL_PHOTOS = ('coffee.png', 'retina.jpg')
VAL_SIZE = 128
SCALE = 4
# Held-out photos of the evidence test sets (none in TRAIN_PHOTOS; motorcycle_right, the other view of
# motorcycle_left, is left out) -> number of crops. scikit-image ships few colour photos: most are gray.
HELDOUT_CROPS = {'coffee.png': 2, 'retina.jpg': 3, 'camera.png': 3, 'brick.png': 2, 'gravel.png': 2, 'grass.png': 2,
                 'moon.png': 1, 'coins.png': 1}
HELDOUT_SEED = 100  # camera-domain noise seeds of the held-out crops: HELDOUT_SEED + crop number


# Fixed parameters of camera_domain_degradation (see its docstring).
CAMERA_BLUR_SIGMAS_PER_SCALE = (0.4, 0.2)  # anisotropic Gaussian std (HR pixels) per unit of scale
CAMERA_BLUR_THETA = math.pi / 6  # orientation of the long axis, radians
CAMERA_SHOT_NOISE = 1.6e-3  # signal-dependent variance slope: var = a * x + b**2
CAMERA_READ_NOISE = 0.01  # signal-independent std b
CAMERA_JPEG_QUALITY = 70


def camera_domain_degradation(img, scale, seed):
    """Fixed camera-like degradation: HR [H, W, 3] float32 RGB [0, 1] -> LR [H//s, W//s, 3] float32 RGB [0, 1].

    Pipeline (parameters are the module constants ``CAMERA_*``):
    1. optics: anisotropic Gaussian blur, std (0.4 s, 0.2 s) HR pixels rotated by 30 degrees
       (BasicSR ``bivariate_Gaussian``, kernel 2*ceil(3*0.4 s)+1, reflect-101 borders);
    2. sensor sampling: bottom/right remainder cropped to a multiple of ``s``, then ``s`` x ``s``
       box averaging (``cv2.INTER_AREA``);
    3. sensor noise, Poisson-Gaussian-like: x + n * sqrt(1.6e-3 * x + 0.01**2), n ~ N(0, 1)
       i.i.d. per pixel and channel from ``numpy.random.default_rng(seed)``, clipped to [0, 1];
    4. camera output: 8-bit JPEG at quality 70 (``cv2.imencode`` / ``cv2.imdecode``).
    Only the noise depends on ``seed``; the same (img, scale, seed) always gives the same LR.
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'camera_domain_degradation: expected an [H, W, 3] RGB image, got shape {img.shape}.')
    if int(scale) != scale or scale < 1:
        raise ValueError(f'camera_domain_degradation: scale must be a positive integer, got {scale}.')
    scale = int(scale)
    h, w = img.shape[0] // scale, img.shape[1] // scale
    if h == 0 or w == 0:
        raise ValueError(f'camera_domain_degradation: image {img.shape[:2]} is smaller than scale {scale}.')

    sig_x, sig_y = (s * scale for s in CAMERA_BLUR_SIGMAS_PER_SCALE)
    kernel = bivariate_Gaussian(2 * math.ceil(3 * sig_x) + 1, sig_x, sig_y, CAMERA_BLUR_THETA, isotropic=False)
    blurred = cv2.filter2D(img.astype(np.float32), -1, kernel.astype(np.float32))
    lr = cv2.resize(blurred[:h * scale, :w * scale], (w, h), interpolation=cv2.INTER_AREA)

    rng = np.random.default_rng(seed)
    lr = np.clip(lr, 0, 1)
    std = np.sqrt(CAMERA_SHOT_NOISE * lr + CAMERA_READ_NOISE**2)
    lr = np.clip(lr + rng.standard_normal(lr.shape) * std, 0, 1)

    bgr = cv2.cvtColor(np.round(lr * 255.).astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode('.jpg', bgr, [int(cv2.IMWRITE_JPEG_QUALITY), CAMERA_JPEG_QUALITY])
    if not ok:
        raise RuntimeError('camera_domain_degradation: JPEG encoding failed.')
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.


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


def bicubic_lr(img_uint8, scale):
    """MATLAB-style antialiased bicubic downscale of a uint8 image, rounded back to uint8."""
    lr = imresize(img_uint8.astype(np.float32) / 255., 1 / scale)
    return np.clip(np.round(lr * 255.), 0, 255).astype(np.uint8)


def camera_lr(img_bgr_uint8, seed):
    """The demo's "real" target-domain LR of a uint8 BGR image (camera-like pipeline, fixed seed)."""
    rgb = img_bgr_uint8[..., ::-1].astype(np.float32) / 255.
    lr = camera_domain_degradation(rgb, SCALE, seed)
    return np.clip(np.round(lr[..., ::-1] * 255.), 0, 255).astype(np.uint8)


def _textured_crops(img, size, count):
    """The ``count`` cells of the non-overlapping ``size`` grid (centred in ``img``) with the largest median
    gray-level gradient magnitude (detail all over the cell, not one strong edge), in grid order."""
    h, w = img.shape[:2]
    top0, left0 = (h % size) // 2, (w % size) // 2
    cells = [(top0 + i * size, left0 + j * size) for i in range(h // size) for j in range(w // size)]
    if len(cells) < count:
        raise ValueError(f'a {w}x{h} image has {len(cells)} cells of {size}x{size}, fewer than {count}.')
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gradient = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    texture = [np.median(gradient[t:t + size, x:x + size]) for t, x in cells]
    chosen = sorted(sorted(range(len(cells)), key=lambda k: -texture[k])[:count])
    return [img[cells[k][0]:cells[k][0] + size, cells[k][1]:cells[k][1] + size] for k in chosen]


def build_evidence_data(root='datasets/evidence_pdd'):
    """Write the evidence study's specialist training pairs and held-out test sets under ``root`` (see module
    docstring); return ``root``."""
    for photo in TRAIN_PHOTOS:
        name = osp.splitext(photo)[0] + '.png'
        hr = _halve(read_shipped_photo(photo))
        hr = hr[:hr.shape[0] // SCALE * SCALE, :hr.shape[1] // SCALE * SCALE]
        imwrite(hr, osp.join(root, 'specialist_train', 'hr', name))
        imwrite(bicubic_lr(hr, SCALE), osp.join(root, 'specialist_train', 'lr', name))
    number = 0
    for photo, count in HELDOUT_CROPS.items():
        for k, hr in enumerate(_textured_crops(_halve(read_shipped_photo(photo)), VAL_SIZE, count)):
            name = f'{osp.splitext(photo)[0]}_{k}.png'
            imwrite(hr, osp.join(root, 'heldout', 'hr', name))
            imwrite(camera_lr(hr, HELDOUT_SEED + number), osp.join(root, 'heldout', 'target_lr', name))
            imwrite(bicubic_lr(hr, SCALE), osp.join(root, 'heldout', 'bicubic_lr', name))
            number += 1
    return root


def build_demo_data(root='datasets/demo'):
    """Write the demo data set under ``root`` (see module docstring); return ``root``."""
    names = []
    for seed, photo in enumerate(TRAIN_PHOTOS):
        name = osp.splitext(photo)[0] + '.png'
        hr = _halve(read_shipped_photo(photo))
        imwrite(hr, osp.join(root, 'train', 'hr', name))
        imwrite(camera_lr(hr, seed), osp.join(root, 'real', 'train_lr', name))
        names.append(name)
    with open(osp.join(root, 'train', 'meta_info.txt'), 'w', encoding='utf-8') as f:
        f.write(''.join(f'{n}\n' for n in names))
    for seed, photo in enumerate(VAL_PHOTOS, start=len(TRAIN_PHOTOS)):
        name = osp.splitext(photo)[0] + '.png'
        hr = _center_crop(_halve(read_shipped_photo(photo)), VAL_SIZE)
        imwrite(hr, osp.join(root, 'val', 'hr', name))
        imwrite(bicubic_lr(hr, SCALE), osp.join(root, 'val', f'lr_bicubic_x{SCALE}', name))
        imwrite(hr, osp.join(root, 'real', 'val', 'hr', name))
        imwrite(camera_lr(hr, seed), osp.join(root, 'real', 'val', 'lr', name))
    build_gaussian8(osp.join(root, 'val', 'hr'), osp.join(root, 'val', f'gaussian8_x{SCALE}'), SCALE)
    return root
