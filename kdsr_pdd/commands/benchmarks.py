"""Benchmark test sets from HR (or HR/LR) folders: ``kdsr-pdd benchmarks {gaussian8,aniso,crops} ...``.

* ``gaussian8 --hr DIR --out DIR --scale S``: KDSR's Gaussian8 set (isotropic blur, 8 widths), written by
  :func:`kdsr_arch.benchmarks.build_gaussian8` to ``out/HR`` and ``out/LR_xS_sig<sigma>``.
* ``aniso --hr DIR --out DIR --scale S --lambda1 L1 --lambda2 L2 --theta DEG --noise N``: one
  anisotropic-blur + noise set (KDSR Table 2), written by :func:`kdsr_arch.benchmarks.build_aniso_noise`.
* ``crops --hr DIR --lr DIR --out DIR --scale S --size P``: DRealSR-style test crops of a real paired
  set: every LR image is cut into non-overlapping P x P crops from the top-left corner (a remainder that
  does not fill a whole crop is dropped), each with the matching (P*S) x (P*S) HR crop. Both are written
  as ``<stem>_<row>_<col>.png`` to ``out/HR`` and ``out/LR``, so BasicSR's PairedImageDataset pairs them
  with ``filename_tmpl: '{}'``. HR and LR files pair by stem once ``--hr-suffix`` / ``--lr-suffix`` are
  removed (DRealSR: ``--hr-suffix _x4 --lr-suffix _x1``; RealSR: ``--hr-suffix _HR --lr-suffix _LR4``),
  and every HR must be exactly S times its LR in both sides. Pixels are copied unchanged (bit depth and
  channels kept).
"""
import os.path as osp
import sys

from kdsr_pdd.checkpoints import few_names
from kdsr_pdd.commands.cli import CommandParser, fail, resolve_device
from kdsr_pdd.images import IMAGE_EXTENSIONS


class BenchmarkError(ValueError):
    """Input folders or values that cannot make a benchmark; the message names the file or option."""


def _index_images(folder, suffix, option):
    """``{stem without suffix: path}`` of the images in ``folder``."""
    if not osp.isdir(folder):
        raise BenchmarkError(f'{option} {folder}: no such folder.')
    from basicsr.utils import scandir

    index = {}
    for name in sorted(scandir(folder, suffix=IMAGE_EXTENSIONS)):
        stem = osp.splitext(name)[0]
        if not stem.endswith(suffix):
            raise BenchmarkError(f'{option} {folder}: {name} does not end with the suffix {suffix!r}.')
        key = stem[:len(stem) - len(suffix)]
        if key in index:
            raise BenchmarkError(f'{option} {folder}: {name} and {osp.basename(index[key])} have the same stem.')
        index[key] = osp.join(folder, name)
    if not index:
        raise BenchmarkError(f'{option} {folder}: no images ({", ".join(IMAGE_EXTENSIONS)}).')
    return index


def pair_images(hr_dir, lr_dir, hr_suffix='', lr_suffix=''):
    """``[(stem, hr_path, lr_path)]`` sorted by stem; BenchmarkError when the two folders do not pair."""
    hr, lr = _index_images(hr_dir, hr_suffix, '--hr'), _index_images(lr_dir, lr_suffix, '--lr')
    no_lr, no_hr = sorted(set(hr) - set(lr)), sorted(set(lr) - set(hr))
    if no_lr or no_hr:
        problems = [f'{len(no_lr)} HR image(s) without LR in {lr_dir}: {few_names(no_lr)}'] if no_lr else []
        problems += [f'{len(no_hr)} LR image(s) without HR in {hr_dir}: {few_names(no_hr)}'] if no_hr else []
        raise BenchmarkError(f'HR and LR names do not pair (stems after removing --hr-suffix {hr_suffix!r} / '
                             f'--lr-suffix {lr_suffix!r}): ' + '; '.join(problems) + '.')
    return [(stem, hr[stem], lr[stem]) for stem in sorted(hr)]


def _read(path):
    import cv2
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise BenchmarkError(f'cannot read image {path}')
    return img


def make_crops(hr_dir, lr_dir, out_root, scale, size, hr_suffix='', lr_suffix=''):
    """Write the paired crops (see the module docstring); return the number of crop pairs written."""
    if scale < 1 or size < 1:
        raise BenchmarkError(f'--scale and --size must be positive, got {scale} and {size}.')
    from basicsr.utils import imwrite
    from tqdm import tqdm

    pairs = pair_images(hr_dir, lr_dir, hr_suffix, lr_suffix)
    hr_out, lr_out = osp.join(out_root, 'HR'), osp.join(out_root, 'LR')
    count = 0
    for stem, hr_path, lr_path in tqdm(pairs, desc='crops', unit='image'):
        hr, lr = _read(hr_path), _read(lr_path)
        h, w = lr.shape[:2]
        if hr.shape[:2] != (scale * h, scale * w):
            raise BenchmarkError(f'{hr_path} is {hr.shape[1]}x{hr.shape[0]} (WxH) but its LR {lr_path} is {w}x{h}: '
                                 f'at --scale {scale} the HR must be {scale * w}x{scale * h}.')
        hr_size = size * scale
        for row in range(h // size):
            for col in range(w // size):
                name = f'{stem}_{row}_{col}.png'
                lr_rows, lr_cols = slice(row * size, (row + 1) * size), slice(col * size, (col + 1) * size)
                hr_rows, hr_cols = slice(row * hr_size, (row + 1) * hr_size), slice(col * hr_size, (col + 1) * hr_size)
                imwrite(lr[lr_rows, lr_cols], osp.join(lr_out, name))
                imwrite(hr[hr_rows, hr_cols], osp.join(hr_out, name))
                count += 1
    return count


def build_parser():
    parser = CommandParser('benchmarks', description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)

    def command(name, help_text):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument('--hr', required=True, help='folder of HR images')
        sub.add_argument('-o', '--out', '--output', required=True, help='output root')
        sub.add_argument('--scale', type=int, default=4, help='upscaling factor (default %(default)s)')
        return sub

    gaussian8 = command('gaussian8', 'isotropic Gaussian blur, 8 kernel widths, bicubic x scale (KDSR Table 1)')
    aniso = command('aniso', 'one anisotropic Gaussian blur + noise setting (KDSR Table 2)')
    aniso.add_argument('--lambda1', type=float, required=True, help='std along the first axis')
    aniso.add_argument('--lambda2', type=float, required=True, help='std along the second axis')
    aniso.add_argument('--theta', type=float, required=True, help='rotation angle in degrees')
    aniso.add_argument('--noise', type=float, default=0.0, help='Gaussian noise std, 0-255 units (default 0)')
    aniso.add_argument('--seed', type=int, default=0, help='noise seed (default %(default)s)')
    for sub in (gaussian8, aniso):
        sub.add_argument('--device', default='cpu', help='device of the degradation (default cpu: the noise, and so '
                         'the files, are the same on every machine)')
    crops = command('crops', 'non-overlapping LR crops with the matching HR crops (DRealSR protocol)')
    crops.add_argument('--lr', required=True, help='folder of LR images paired with --hr')
    crops.add_argument('--size', type=int, default=512, help='LR crop side (default %(default)s)')
    crops.add_argument('--hr-suffix', default='', help="suffix of HR stems to remove for pairing, e.g. '_x4'")
    crops.add_argument('--lr-suffix', default='', help="suffix of LR stems to remove for pairing, e.g. '_x1'")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from kdsr_arch.benchmarks import build_aniso_noise, build_gaussian8

    try:
        if args.command == 'gaussian8':
            folders = build_gaussian8(args.hr, args.out, args.scale, device=resolve_device(args.device))
        elif args.command == 'aniso':
            folders = build_aniso_noise(args.hr, args.out, args.scale, args.lambda1, args.lambda2, args.theta,
                                        args.noise, seed=args.seed, device=resolve_device(args.device))
        else:
            count = make_crops(args.hr, args.lr, args.out, args.scale, args.size, args.hr_suffix, args.lr_suffix)
            print(f'wrote {count} crop pairs to {osp.join(args.out, "HR")} and {osp.join(args.out, "LR")}')
            return 0
    except ValueError as err:  # BenchmarkError and the builders' ValueError
        fail(err)
    print(f'wrote {osp.join(args.out, "HR")} and ' + ', '.join(folders))
    return 0


if __name__ == '__main__':
    sys.exit(main())
