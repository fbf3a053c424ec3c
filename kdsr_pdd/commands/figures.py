"""Figures: ``kdsr-pdd figures {scatter,idr,curves,compare} ...``.

``curves``: training losses and validation metrics of one or more runs against the iteration, read from
their training logs (:func:`kdsr_pdd.logs.training_curves`).

``compare``: one test image side by side, LR (nearest-upscaled) / each method / HR, with an enlarged window,
from the SR images ``kdsr-pdd test`` writes (``results/<name>/visualization/<dataset>``).

``scatter``: fidelity vs perception (e.g. PSNR vs LPIPS) of several experiments on one dataset, one
labelled point per experiment, read from BasicSR logs as in :mod:`kdsr_pdd.tables`.

``idr``: the KDSR IDR visualisation (the paper's Fig. 6). For every HR image of a folder (cropped to a
multiple of the scale, optionally centre-cropped) and every kernel width sigma, the LR image is made
with the classic degradation (isotropic 21x21 Gaussian blur, bicubic down, no noise, 8 bit;
:func:`kdsr_arch.degradations.classic_degrade`); the student encodes ``encode(lq)``, the teacher
``encode(lq, hr)``, and the 4C IDRs are projected to 2-D (PCA, or t-SNE as in the paper when
scikit-learn is installed) and drawn coloured by sigma. :func:`idr_sigma_spearman` summarises how
well the IDR orders the degradations: the Spearman correlation between sigma and the IDRs' first
principal component.

Figures are drawn with matplotlib's object API on the Agg canvas (no display needed).
"""
import argparse
import csv
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kdsr_pdd.commands.cli import CommandParser, add_source_arguments, fail, load_from_args, resolve_device
from kdsr_pdd.logs import metric_title, resolve_directions

DEFAULT_SIGMAS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
IDR_NETWORKS = ('KDSRStudent', 'KDSRTeacher')  # the archs with an encode() giving the 4C IDR


class FigureError(ValueError):
    """A choice of inputs that cannot make the figure; the message names the option to fix."""


# ---------------------------------------------------------------------------------------- scatter
def scatter_points(experiments, x_metric, y_metric, dataset=None):
    """``(dataset, [(label, x, y), ...])`` of the experiments; ``dataset`` may be omitted when there is one."""
    if dataset is None:
        names = {d for exp in experiments for d in exp.results}
        if len(names) != 1:
            raise FigureError(f'the logs hold several datasets ({sorted(names)}): choose one with --dataset.')
        dataset = names.pop()
    points = []
    for exp in experiments:
        values = exp.results.get(dataset)
        if values is None:
            raise FigureError(f'{exp.log}: no validation results for dataset {dataset!r} '
                              f'(it has {sorted(exp.results)}).')
        for metric in (x_metric, y_metric):
            if metric not in values:
                raise FigureError(f'{exp.log}: metric {metric!r} missing for dataset {dataset!r} '
                                  f'(it has {sorted(values)}).')
        points.append((exp.label, values[x_metric], values[y_metric]))
    return dataset, points


# -------------------------------------------------------------------------------------------- IDR
class IDRSamples(NamedTuple):
    """``idrs`` [N, 4C] float64; row i: the LR of ``image_names[image_index[i]]`` blurred with ``sigmas[i]``."""
    idrs: np.ndarray
    sigmas: np.ndarray
    image_index: np.ndarray
    image_names: list


class SigmaCorrelation(NamedTuple):
    """How well the first principal component (PC1) of the IDRs orders the LR images by sigma.

    ``abs_rho`` and ``sign``: |mean| and sign of the per-image Spearman rho(sigma, PC1), one PCA fitted on
    all IDRs; 1 means PC1 is monotone in sigma for every image. ``pooled_rho``: Spearman rho over all
    images together, which also needs PC1 to agree across image contents; with several images its
    magnitude stays below 1 even then, as sigma has ties. Signs follow the orientation fixed by :func:`pca_2d`.
    """
    abs_rho: float
    sign: int
    pooled_rho: float


def _model_device(model):
    import torch
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device('cpu')


def _centre_crop(hr, crop, scale, name):
    """Centre crop of HR [H, W, C] to ``crop`` x ``crop`` (a multiple of ``scale``); None keeps it whole."""
    if crop is None:
        return hr
    if crop <= 0 or crop % scale:
        raise FigureError(f'--crop {crop} must be a positive multiple of the scale {scale}.')
    h, w = hr.shape[:2]
    if h < crop or w < crop:
        raise FigureError(f'{name} is {h}x{w}, smaller than --crop {crop}.')
    top, left = (h - crop) // 2, (w - crop) // 2
    return hr[top:top + crop, left:left + crop]


def read_hr_folder(hr_dir, scale, crop=None, max_images=None):
    """``[(name, hr [3, H, W] RGB float32 in [0, 1])]``: the folder's images, sorted, cropped to a multiple of scale."""
    from basicsr.utils import img2tensor

    from kdsr_arch.benchmarks import read_hr_images

    images = []
    try:
        for name, img in read_hr_images(str(hr_dir), scale):
            if max_images is not None and len(images) >= max_images:
                break
            img = _centre_crop(img, crop, scale, name)
            images.append((name, img2tensor(img.astype(np.float32) / 255., bgr2rgb=True, float32=True)))
    except FigureError:
        raise
    except ValueError as err:  # from kdsr_arch.data: a missing folder, no images, an unreadable file
        raise FigureError(f'--hr: {err}') from err
    return images


def compute_idrs(model, hr_images, sigmas, scale, kernel_size=21):
    """The 4C IDR of every (image, sigma): LR from :func:`classic_degrade`, then the model's ``encode``.

    Args:
        model: a :class:`KDSRTeacher` (``encode(lq, hr)``) or anything with a student-style
            ``encode(lq) -> (z, idr [B, D])``.
        hr_images: RGB tensors [3, H, W] in [0, 1] (H, W multiples of ``scale``), or ``(name, tensor)`` pairs.
        sigmas: isotropic kernel widths in HR pixels.
        scale (int): downsampling factor.

    Returns:
        IDRSamples, rows ordered image-major then by sigma.
    """
    import torch
    from tqdm import tqdm

    from kdsr_arch.archs import KDSRTeacher
    from kdsr_arch.degradations import classic_degrade, isotropic_gaussian_kernels

    if len(sigmas) == 0 or not hr_images:
        raise FigureError('need at least one HR image and one sigma.')
    device = _model_device(model)
    kernels = isotropic_gaussian_kernels(torch.tensor([float(s) for s in sigmas], device=device), kernel_size)
    rows, names = [], []
    for index, item in enumerate(tqdm(hr_images, desc='IDRs', unit='image', leave=False)):
        name, hr = item if isinstance(item, tuple) else (f'image{index}', item)
        hr = hr.to(device=device, dtype=torch.float32).expand(len(sigmas), -1, -1, -1)
        with torch.no_grad():
            lq = classic_degrade(hr, kernels, scale)
            _, idr = model.encode(lq, hr) if isinstance(model, KDSRTeacher) else model.encode(lq)
        rows.append(idr.double().flatten(1).cpu())
        names.append(name)
    sigma_rows = np.tile(np.asarray(sigmas, dtype=np.float64), len(names))
    return IDRSamples(torch.cat(rows).numpy(), sigma_rows, np.repeat(np.arange(len(names)), len(sigmas)), names)


def pca_2d(x):
    """Scores [N, 2] of ``x`` [N, D] on its first two principal components (centred SVD).

    Each component is oriented so that its largest-magnitude loading is positive, so the result does not
    depend on the SVD's sign choice. A single feature (D = 1) gives a zero second column.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise FigureError(f'PCA needs at least 2 samples of shape [N, D], got {x.shape}.')
    centred = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, len(s))
    signs = np.sign(vt[np.arange(k), np.abs(vt[:k]).argmax(axis=1)])
    scores = u[:, :k] * s[:k] * signs
    return np.pad(scores, ((0, 0), (0, 2 - k)))


def tsne_2d(x, seed=0):
    """t-SNE embedding [N, 2] of ``x`` [N, D] (scikit-learn); perplexity min(30, (N - 1) / 3)."""
    try:
        from sklearn.manifold import TSNE
    except ImportError as err:
        raise FigureError('--method tsne needs scikit-learn (pip install scikit-learn); or use --method pca.') from err
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 4:
        raise FigureError(f't-SNE needs at least 4 samples, got {x.shape[0]}.')
    return TSNE(n_components=2, perplexity=min(30.0, (x.shape[0] - 1) / 3), init='pca',
                random_state=seed).fit_transform(x)


def spearman_rho(x, y):
    """Spearman's rank correlation of two [N] samples (scipy.stats.spearmanr); FigureError when undefined."""
    from scipy import stats

    if len(x) != len(y) or len(x) < 2:
        raise FigureError(f'Spearman correlation needs two samples of the same length >= 2, got {len(x)} and {len(y)}.')
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise FigureError('Spearman correlation is undefined: one of the samples is constant '
                          '(the IDRs do not vary, or a single sigma was given).')
    return float(stats.spearmanr(x, y).statistic)


def idr_sigma_spearman(model, hr_images, sigmas, scale, kernel_size=21):
    """:class:`SigmaCorrelation` between sigma and the first principal component of the IDRs.

    The IDRs of all images and sigmas (:func:`compute_idrs`) share one PCA; ``abs_rho`` = 1 means its
    first component orders every image's LRs by their blur.
    """
    return sigma_correlation(compute_idrs(model, hr_images, sigmas, scale, kernel_size))


def sigma_correlation(samples):
    """:class:`SigmaCorrelation` of :class:`IDRSamples`: Spearman's rho of sigma and the IDRs' first PCA score."""
    pc1 = pca_2d(samples.idrs)[:, 0]
    per_image = [spearman_rho(samples.sigmas[rows], pc1[rows])
                 for rows in (samples.image_index == i for i in range(len(samples.image_names)))]
    rho = float(np.mean(per_image))
    return SigmaCorrelation(abs(rho), 1 if rho >= 0 else -1, spearman_rho(samples.sigmas, pc1))


def write_idr_csv(samples, points, path):
    """One row per LR: image, sigma, the 2-D point, then the IDR's components."""
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['image', 'sigma', 'x', 'y'] + [f'idr_{i}' for i in range(samples.idrs.shape[1])])
        for index, sigma, point, idr in zip(samples.image_index, samples.sigmas, points, samples.idrs):
            numbers = [sigma, point[0], point[1], *idr]
            writer.writerow([samples.image_names[index]] + [repr(float(v)) for v in numbers])


def load_idr_network(model_path, opt_path=None, arch=None, arch_args=None, param_key=None):
    """A KDSR teacher or student (options as for ``kdsr-pdd infer``, or detected), weights loaded, eval mode."""
    import kdsr_pdd.plugin  # noqa: F401  (registers the archs and their families)
    from kdsr_pdd.networks import load_network, resolve_network_opt

    network_opt, source = resolve_network_opt(model_path, opt_path, arch, arch_args)
    if network_opt is not None and network_opt['type'] not in IDR_NETWORKS:
        raise FigureError(f'{source}: network type {network_opt["type"]!r} has no IDR; use '
                          f'{" or ".join(IDR_NETWORKS)}.')
    net, info = load_network(model_path, network_opt, param_key, source)
    if info.arch not in IDR_NETWORKS:
        raise FigureError(f'{source}: network type {info.arch!r} has no IDR; use {" or ".join(IDR_NETWORKS)}.')
    return net


# ------------------------------------------------------------------------------------- comparison
def _find_image(folder, stem, option):
    """The image of ``folder`` for the test image ``stem``: ``<stem>.<ext>`` or BasicSR's ``<stem>_<suffix>.png``."""
    from kdsr_pdd.images import IMAGE_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise FigureError(f'{option} {folder}: no such folder.')
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                   and (p.stem == stem or p.stem.startswith(f'{stem}_')))
    if not found:
        raise FigureError(f'{option} {folder}: no image for {stem!r} ({stem}.png or {stem}_<suffix>.png).')
    return found[0]


def _read_rgb(path):
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FigureError(f'{path}: cannot read it as an image.')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def comparison_panels(lq_dir, gt_dir, methods, image=None):
    """``(stem, [(title, RGB uint8 at the GT size)])``: the LR (nearest-upscaled), each method's SR and the GT.

    ``methods`` is ``[(label, folder)]``, e.g. the ``visualization/<dataset>`` folders of ``kdsr-pdd test``.
    """
    import cv2

    from kdsr_pdd.images import IMAGE_EXTENSIONS

    gt_dir = Path(gt_dir)
    stems = sorted(p.stem for p in gt_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if gt_dir.is_dir() else []
    if not stems:
        raise FigureError(f'--gt {gt_dir}: no images.')
    stem = image or stems[0]
    gt = _read_rgb(_find_image(gt_dir, stem, '--gt'))
    lq = _read_rgb(_find_image(lq_dir, stem, '--lq'))
    panels = [('LR', cv2.resize(lq, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_NEAREST))]
    for label, folder in methods:
        sr = _read_rgb(_find_image(folder, stem, f'--methods {label}='))
        if sr.shape != gt.shape:
            raise FigureError(f'{label}: the SR of {stem} is {sr.shape[1]}x{sr.shape[0]}, the GT '
                              f'{gt.shape[1]}x{gt.shape[0]}.')
        panels.append((label, sr))
    return stem, panels + [('HR', gt)]


def _method(text):
    label, sep, folder = text.partition('=')
    if not sep or not label or not folder:
        raise argparse.ArgumentTypeError(f'expected LABEL=FOLDER, got {text!r}')
    return label, folder


def _crop_box(text):
    try:
        top, left, size = (int(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected TOP,LEFT,SIZE in HR pixels, got {text!r}') from None
    return top, left, size


# -------------------------------------------------------------------------------------------- CLI
def build_parser():
    parser = CommandParser('figures', description=__doc__.split('\n\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)

    scatter = commands.add_parser('scatter', help='fidelity vs perception scatter of experiments on one dataset')
    add_source_arguments(scatter)
    scatter.add_argument('--x', default='psnr', help='metric on the x axis (default psnr)')
    scatter.add_argument('--y', default='lpips', help='metric on the y axis (default lpips)')
    scatter.add_argument('--dataset', help='dataset name as logged (may be omitted when the logs hold one)')
    scatter.add_argument('-o', '--out', '--output', required=True, help='image file to write (e.g. fig.png)')

    idr = commands.add_parser('idr', help='KDSR IDRs of LR images blurred with several sigmas, projected to 2-D')
    idr.add_argument('-m', '--model', required=True, help='teacher or student checkpoint')
    idr.add_argument('-opt', '--opt', help='option file whose network_g describes the checkpoint')
    idr.add_argument('--arch', help='preset or arch type (as for kdsr-pdd infer), instead of --opt')
    idr.add_argument('--arch-args', help='JSON keyword arguments of --arch')
    idr.add_argument('--param-key', help='checkpoint key (default params_ema, then params, then raw)')
    idr.add_argument('--hr', required=True, help='folder of HR images (e.g. B100/HR)')
    idr.add_argument('--scale', type=int, help="downsampling factor (default: the network's)")
    idr.add_argument('--sigmas', type=float, nargs='+', default=list(DEFAULT_SIGMAS), help='isotropic kernel widths')
    idr.add_argument('--kernel-size', type=int, default=21)
    idr.add_argument('--crop', type=int, help='centre-crop each HR image to CROP x CROP (a multiple of the scale)')
    idr.add_argument('--max-images', type=int, help='use only the first N images (sorted by name)')
    idr.add_argument('--method', choices=('pca', 'tsne'), default='pca')
    idr.add_argument('--device', default='auto', help='torch device: cpu, cuda, cuda:N or auto (default)')
    idr.add_argument('-o', '--out', '--output', required=True, help='image file to write (e.g. fig.png)')
    idr.add_argument('--csv', help='also write the IDRs and their 2-D points to this CSV file')

    curves = commands.add_parser('curves', help='training losses and validation metrics against the iteration')
    curves.add_argument('experiments', nargs='+', help='experiment folders (experiments/<name>) or training logs')
    curves.add_argument('--labels', nargs='+', help='one label per experiment (default: folder names)')
    curves.add_argument('-o', '--out', '--output', required=True, help='image file to write (e.g. curves.png)')

    compare = commands.add_parser('compare', help='one test image side by side: LR, each method, HR (+ a zoom)')
    compare.add_argument('--lq', required=True, help='folder of the LR test images')
    compare.add_argument('--gt', required=True, help='folder of the HR test images')
    compare.add_argument('--methods', type=_method, nargs='+', required=True, metavar='LABEL=FOLDER',
                         help="SR image folders, e.g. results/<name>/visualization/<dataset> of 'kdsr-pdd test'")
    compare.add_argument('--image', help='stem of the image to show (default: the first)')
    compare.add_argument('--crop', type=_crop_box, metavar='TOP,LEFT,SIZE',
                         help='zoomed window in HR pixels (default: a centred quarter of the shorter side)')
    compare.add_argument('-o', '--out', '--output', required=True, help='image file to write (e.g. compare.png)')
    return parser


def run_scatter(args):
    experiments, overrides = load_from_args(args)
    dataset, points = scatter_points(experiments, args.x, args.y, args.dataset)
    directions = resolve_directions([args.x, args.y], experiments, overrides)
    from kdsr_pdd.plots import plot_scatter

    plot_scatter(points, metric_title(args.x, directions[args.x]), metric_title(args.y, directions[args.y]),
                 dataset, args.out)


def run_idr(args):
    net = load_idr_network(args.model, args.opt, args.arch, args.arch_args, args.param_key)
    net = net.to(resolve_device(args.device))
    scale = args.scale or net.scale
    if scale != net.scale:
        raise FigureError(f'--scale {scale} differs from the network scale {net.scale}.')
    images = read_hr_folder(args.hr, scale, args.crop, args.max_images)
    samples = compute_idrs(net, images, args.sigmas, scale, args.kernel_size)
    points = pca_2d(samples.idrs) if args.method == 'pca' else tsne_2d(samples.idrs)
    from kdsr_pdd.plots import plot_embedding

    title = f'{type(net).__name__} IDR, {len(images)} images x {len(args.sigmas)} sigmas'
    plot_embedding(points, samples.sigmas, 'kernel width σ', title, args.out, 'PC' if args.method == 'pca' else
                   't-SNE ', markers=(samples.image_names, samples.image_index))
    if args.csv:
        write_idr_csv(samples, points, args.csv)
    if len(set(args.sigmas)) > 1:
        correlation = sigma_correlation(samples)
        print(f'Spearman rho(sigma, PC1 of the IDR): per image |mean| {correlation.abs_rho:.4f} '
              f'(sign {correlation.sign:+d}), all images pooled {correlation.pooled_rho:+.4f}')


def _training_log(path):
    """``path`` itself (a log file), or the newest ``train_*.log`` of an experiment folder."""
    path = Path(path)
    if path.is_file():
        return path
    logs = sorted(path.glob('train_*.log')) if path.is_dir() else []
    if not logs:
        raise FigureError(f'{path}: no such training log, or no train_*.log in this folder.')
    return logs[-1]


def run_curves(args):
    from kdsr_pdd.logs import training_curves
    from kdsr_pdd.plots import plot_curves

    if args.labels and len(args.labels) != len(args.experiments):
        raise FigureError(f'--labels gives {len(args.labels)} labels for {len(args.experiments)} experiments.')
    runs = []
    for path, label in zip(args.experiments, args.labels or [None] * len(args.experiments)):
        log = _training_log(path)
        with open(log, encoding='utf-8', errors='replace') as f:
            curves = training_curves(f.readlines())
        if not curves.losses:
            raise FigureError(f'{log}: no logged training iterations (is it a training log?).')
        runs.append((label or Path(path).name, curves))
    plot_curves(runs, args.out)


def run_compare(args):
    from kdsr_pdd.plots import plot_comparison

    stem, panels = comparison_panels(args.lq, args.gt, args.methods, args.image)
    h, w = panels[-1][1].shape[:2]
    size = min(h, w) // 4
    top, left, size = args.crop or ((h - size) // 2, (w - size) // 2, size)
    if size < 1 or top < 0 or left < 0 or top + size > h or left + size > w:
        raise FigureError(f'--crop {top},{left},{size} does not fit the {w}x{h} image {stem}.')
    plot_comparison(panels, args.out, (top, left, size))


COMMANDS = {'scatter': run_scatter, 'idr': run_idr, 'curves': run_curves, 'compare': run_compare}


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as err:  # FigureError, LogError, NetworkError, CheckpointError
        fail(err)
    print(f'wrote {args.out}', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(main())
