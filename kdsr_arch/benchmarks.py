"""KDSR's classic test sets, written once to disk from an HR folder (BasicSR's PairedImageDataset reads them).

* :func:`build_gaussian8`: isotropic Gaussian blur with the 8 widths of Gaussian8 (KDSR Table 1);
* :func:`build_aniso_noise`: one anisotropic blur + noise setting (KDSR Table 2).

Both write ``out_root/HR/<name>.png`` (HR cropped to a multiple of the scale) and one LR folder per
setting with the same file names, so ``dataroot_gt: out_root/HR`` pairs with any LR folder using
``filename_tmpl: '{}'``. The files are a deterministic function of the HR images.
"""
import math
import os.path as osp

import cv2
import numpy as np
import torch
from basicsr.data.data_util import paths_from_folder
from basicsr.data.transforms import mod_crop
from basicsr.utils import img2tensor, imwrite, tensor2img
from tqdm import tqdm

from kdsr_arch.degradations import anisotropic_gaussian_kernels, classic_degrade, isotropic_gaussian_kernels

# Gaussian8 test kernel widths (IKC, Gu et al. 2019): 8 evenly spaced values per scale.
GAUSSIAN8_SIGMAS = {
    2: (0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6),
    3: (1.35, 1.5, 1.65, 1.8, 1.95, 2.1, 2.25, 2.4),
    4: (1.8, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0, 3.2),
}


def read_hr_images(hr_dir, scale):
    """Yield (png file name, HR uint8 BGR image cropped to a multiple of ``scale``), sorted by name."""
    if not osp.isdir(hr_dir):
        raise ValueError(f'HR folder not found: {hr_dir}')
    paths = sorted(paths_from_folder(hr_dir))
    if not paths:
        raise ValueError(f'no images in HR folder {hr_dir}')
    for path in paths:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f'cannot read image {path}')
        yield osp.splitext(osp.basename(path))[0] + '.png', mod_crop(img, scale)


def _write_benchmark(hr_dir, out_root, scale, settings, device):
    """Write ``out_root/HR`` and one LR folder per ``(folder name, kernel [1,k,k], noise or None, seed)``.

    The noise of a setting comes from torch's RNG seeded with its seed, images in sorted order; the
    caller's RNG state is left untouched.
    """
    images = list(read_hr_images(hr_dir, scale))
    for name, hr in images:
        imwrite(hr, osp.join(out_root, 'HR', name))
    lr_dirs = []
    for folder, kernel, noise, seed in settings:
        lr_dirs.append(osp.join(out_root, folder))
        with torch.random.fork_rng(devices=[torch.device(device)] if torch.device(device).type == 'cuda' else []):
            torch.manual_seed(seed)
            for name, hr in tqdm(images, desc=folder, unit='image', leave=False):
                x = img2tensor(hr.astype(np.float32) / 255., bgr2rgb=True).unsqueeze(0).to(device)
                levels = None if not noise else torch.tensor([float(noise)], device=device)
                lq = classic_degrade(x, kernel.to(device), scale, levels)
                imwrite(tensor2img(lq[0]), osp.join(lr_dirs[-1], name))
    return lr_dirs


def build_gaussian8(hr_dir, out_root, scale, device='cpu'):
    """Write the Gaussian8 benchmark (isotropic blur, no noise) of one HR set.

    Kernel widths: x2 0.9:0.1:1.6, x3 1.35:0.15:2.40, x4 1.8:0.2:3.2 (kernel 21x21); LR folders
    ``LR_x4_sig1.8`` ... HR/ depends on the scale (mod crop): use one ``out_root`` per scale.
    Returns the list of LR folders, in sigma order.
    """
    if scale not in GAUSSIAN8_SIGMAS:
        raise ValueError(f'Gaussian8 is defined for scales {sorted(GAUSSIAN8_SIGMAS)}, got {scale}')
    settings = [(f'LR_x{scale}_sig{sigma:g}', isotropic_gaussian_kernels(torch.tensor([sigma])), None, 0)
                for sigma in GAUSSIAN8_SIGMAS[scale]]
    return _write_benchmark(hr_dir, out_root, scale, settings, device)


def build_aniso_noise(hr_dir, out_root, scale, lambda1, lambda2, theta_deg, noise, seed=0, device='cpu'):
    """Write one anisotropic-blur + noise test set (KDSR Table 2 style) of one HR set.

    The kernel is :func:`anisotropic_gaussian_kernels` (21x21) with stds ``lambda1``, ``lambda2`` and
    angle ``theta_deg`` in degrees; ``noise`` is the noise std in 0-255 units, drawn from torch's RNG
    seeded with ``seed``. The LR folder is named e.g. ``LR_x4_aniso_l3.5_l1.5_t30_n10``.
    Returns the list holding that LR folder.
    """
    if noise < 0:
        raise ValueError(f'noise must be >= 0 (0-255 units), got {noise}')
    kernel = anisotropic_gaussian_kernels(torch.tensor([float(lambda1)]), torch.tensor([float(lambda2)]),
                                          torch.tensor([math.radians(theta_deg)]))
    name = f'LR_x{scale}_aniso_l{lambda1:g}_l{lambda2:g}_t{theta_deg:g}_n{noise:g}'
    return _write_benchmark(hr_dir, out_root, scale, [(name, kernel, noise, seed)], device)
