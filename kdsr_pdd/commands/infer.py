"""Super-resolve image files: ``kdsr-pdd infer INPUT -o OUT_DIR -m CHECKPOINT [options]``.

INPUT is an image file or a folder (``--recursive`` to descend; sub-folders are mirrored under
OUT_DIR). Each result is written as ``OUT_DIR/<stem>_<suffix>.png`` (suffix ``out`` by default).

The network comes from ``--opt OPTIONS.yml`` (its ``network_g``), ``--arch NAME [--arch-args JSON]``
(a preset such as ``realesrgan-x4`` or ``kdsr-m-x4``, or a registered arch type), the YAML next to the
checkpoint, or the checkpoint's own keys (see :mod:`kdsr_pdd.networks`). Weights: ``params_ema`` >
``params`` > raw state dict, or ``--param-key``; loaded strictly. The KDSR teacher is refused: its
encoder needs the HR image.

Tiling (``--tile T --tile-pad P``) bounds memory (:mod:`kdsr_pdd.tiling`); a KDSR student computes its
IDR once per image. Grayscale inputs are run as RGB and written grayscale; an alpha channel is resized
with bicubic interpolation and merged back; 16-bit inputs are written as 16-bit PNG. Unreadable files get
one line on stderr and are skipped. Exit status: 0 when at least one image was written or already
existed (``--skip-existing``), 1 when every image failed, 2 on a usage error.
"""
import argparse
import sys
from pathlib import Path


def build_parser():
    parser = argparse.ArgumentParser(prog='kdsr-pdd infer', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('input', help='image file or folder of images')
    parser.add_argument('-o', '--output', required=True, help='output folder')
    parser.add_argument('-m', '--model', required=True, help='checkpoint (.pth/.pt)')
    parser.add_argument('--opt', help='option YAML whose network_g describes the network')
    parser.add_argument('--arch', help='arch type or preset (realesrgan-x4, realesrgan-x2, kdsr-m-x4, kdsr-l-x4, '
                                       'kdsr-gan-x4)')
    parser.add_argument('--arch-args', help='JSON object of arch keyword arguments (override a preset)')
    parser.add_argument('--param-key', help='checkpoint key to load (default: params_ema, params, raw)')
    parser.add_argument('--tile', type=int, default=0, help='tile size in LR pixels (0: whole image)')
    parser.add_argument('--tile-pad', type=int, default=16, help='context around each tile in LR pixels')
    parser.add_argument('--pad-multiple', type=int, default=1,
                        help='pad inputs to a multiple of this (combined with what the network needs)')
    parser.add_argument('--device', default='auto', help='torch device: cpu, cuda, cuda:N or auto (default)')
    parser.add_argument('--fp16', action='store_true', help='half precision (CUDA only)')
    parser.add_argument('--color-correction', action='store_true',
                        help='match each output channel mean/std to the input (PDD inference)')
    parser.add_argument('-r', '--recursive', action='store_true', help='descend into sub-folders')
    parser.add_argument('--skip-existing', action='store_true', help='skip images whose output exists')
    parser.add_argument('--suffix', default='out', help='output name <stem>_<suffix>.png')
    return parser


def make_upscaler(args):
    import torch

    import kdsr_pdd.plugin  # noqa: F401  (registers the archs and their families)
    from kdsr_pdd.networks import NetworkError, load_network, resolve_network_opt
    from kdsr_pdd.upscaler import Upscaler

    if args.tile < 0 or args.tile_pad < 0 or args.pad_multiple < 1:
        raise NetworkError('--tile and --tile-pad must be >= 0 and --pad-multiple >= 1.')
    device = ('cuda' if torch.cuda.is_available() else 'cpu') if args.device == 'auto' else args.device
    try:
        device = torch.device(device)
    except RuntimeError:
        raise NetworkError(f'--device {args.device}: not a torch device (cpu, cuda, cuda:0, ...).') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise NetworkError(f'--device {args.device}: CUDA is not available here; use --device cpu.')
    if args.fp16 and device.type != 'cuda':
        raise NetworkError(f'--fp16 needs a CUDA device (got --device {device}); drop --fp16 on CPU.')
    network_opt, source = resolve_network_opt(args.model, args.opt, args.arch, args.arch_args)
    net, info = load_network(args.model, network_opt, args.param_key, source)
    return Upscaler(net, info, device, args.fp16, args.tile, args.tile_pad, args.pad_multiple)


def main(argv=None):
    """Run the command; return the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    import cv2
    import torch
    from tqdm import tqdm

    from kdsr_pdd.images import IMAGE_EXTENSIONS, list_inputs, read_image
    from kdsr_pdd.upscaler import upscale_image

    try:
        inputs = list_inputs(args.input, args.recursive)
        if not inputs:
            raise ValueError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {args.input}.')
        upscaler = make_upscaler(args)
    except (ValueError, FileNotFoundError) as err:  # NetworkError, CheckpointError, bad inputs
        print(f'error: {err}', file=sys.stderr)
        return 2
    written = skipped = failed = 0
    for path, folder in tqdm(inputs, desc='infer', unit='img'):
        target = Path(args.output) / folder / f'{path.stem}_{args.suffix}.png'
        if args.skip_existing and target.exists():
            skipped += 1
            continue
        try:
            out = upscale_image(upscaler, read_image(path), args.color_correction)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(target), out):
                raise ValueError(f'cannot write {target}')
        except (ValueError, cv2.error, torch.cuda.OutOfMemoryError) as err:
            hint = ' (try --tile)' if isinstance(err, torch.cuda.OutOfMemoryError) else ''
            tqdm.write(f'{path}: {err}{hint}; skipped', file=sys.stderr)
            failed += 1
            continue
        written += 1
    print(f'wrote {written}, skipped {skipped} existing, failed {failed}; output in {args.output}')
    return 1 if failed and not (written or skipped) else 0


if __name__ == '__main__':
    sys.exit(main())
