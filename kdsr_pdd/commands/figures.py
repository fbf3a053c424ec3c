"""Paper-style figures: ``kdsr-pdd figures {scatter,idr} ...``.

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


def _new_figure(size=(5.0, 4.0)):
    from matplotlib.figure import Figure
    fig = Figure(figsize=size, layout='constrained')
    return fig, fig.subplots()


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


def plot_scatter(points, x_title, y_title, title, out):
    """Draw labelled points ``[(label, x, y), ...]`` and save them to ``out`` (format from the suffix)."""
    fig, ax = _new_figure()
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    ax.scatter(xs, ys, s=36, zorder=3)
    for label, x, y in points:
        ax.annotate(label, (x, y), textcoords='offset points', xytext=(5, 5), fontsize=8)
    ax.set_xlabel(x_title)
    ax.set_ylabel(y_title)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.margins(0.15)
    fig.savefig(out, dpi=150)


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

    from kdsr_arch.archs import KDSRTeacher
    from kdsr_arch.degradations import classic_degrade, isotropic_gaussian_kernels

    if len(sigmas) == 0 or not hr_images:
        raise FigureError('need at least one HR image and one sigma.')
    device = _model_device(model)
    kernels = isotropic_gaussian_kernels(torch.tensor([float(s) for s in sigmas], device=device), kernel_size)
    rows, names = [], []
    for index, item in enumerate(hr_images):
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


def plot_idr(points, sigmas, title, out, method):
    """Scatter ``points`` [N, 2] coloured by ``sigmas`` [N] with a colourbar; save to ``out``."""
    fig, ax = _new_figure((5.5, 4.5))
    dots = ax.scatter(points[:, 0], points[:, 1], c=sigmas, cmap='viridis', s=18, edgecolors='none')
    fig.colorbar(dots, ax=ax, label='kernel width σ')
    axis = 'PC' if method == 'pca' else 't-SNE '
    ax.set_xlabel(f'{axis}1')
    ax.set_ylabel(f'{axis}2')
    ax.set_title(title)
    fig.savefig(out, dpi=150)


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
    return parser


def run_scatter(args):
    experiments, overrides = load_from_args(args)
    dataset, points = scatter_points(experiments, args.x, args.y, args.dataset)
    directions = resolve_directions([args.x, args.y], experiments, overrides)
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
    title = f'{type(net).__name__} IDR, {len(images)} images x {len(args.sigmas)} sigmas'
    plot_idr(points, samples.sigmas, title, args.out, args.method)
    if args.csv:
        write_idr_csv(samples, points, args.csv)
    if len(set(args.sigmas)) > 1:
        correlation = sigma_correlation(samples)
        print(f'Spearman rho(sigma, PC1 of the IDR): per image |mean| {correlation.abs_rho:.4f} '
              f'(sign {correlation.sign:+d}), all images pooled {correlation.pooled_rho:+.4f}')


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        (run_scatter if args.command == 'scatter' else run_idr)(args)
    except (ValueError, FileNotFoundError) as err:  # FigureError, LogError, NetworkError, CheckpointError
        fail(err)
    print(f'wrote {args.out}', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(main())
