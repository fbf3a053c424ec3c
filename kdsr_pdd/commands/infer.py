"""Super-resolve image files; Real-ESRGAN's inference_realesrgan.py command line works unchanged.

  kdsr-pdd infer -n RealESRGAN_x4plus -i inputs -o results [-s 3.5] [-t 400] [--ext png] ...
  kdsr-pdd infer INPUT -o OUT -m CHECKPOINT [--opt X.yml | --arch NAME [--arch-args JSON]] ...

Input and output: INPUT (-i, default inputs) is an image file or a folder (-r descends, mirroring
sub-folders). Each result is OUT/<stem>_<suffix>.<ext> (--ext auto keeps the input's extension; an image
with alpha that JPEG/BMP cannot hold becomes PNG). Clashing names, an output that would replace an input
and an unusable OUT are refused before the network is loaded; earlier outputs in the input folder are
not taken as inputs; each image is written atomically (kdsr_pdd.outputs). Truncated files fail, EXIF
orientation is applied, gray and gray + alpha stay so, 16-bit stays 16-bit where the format allows.

Network: -n NAME is a Real-ESRGAN model (RealESRGAN_x4plus, RealESRNet_x4plus, RealESRGAN_x2plus,
RealESRGAN_x4plus_anime_6B, realesr-animevideov3, realesr-general-x4v3) read from weights/NAME.pth or
experiments/pretrained_models/NAME.pth; nothing is downloaded (kdsr_pdd.model_names). Without -m the
model is RealESRGAN_x4plus. -m/--model_path FILE takes any checkpoint; its network comes from -n,
--opt (network_g), --arch (a preset or a BasicSR arch), the YAML beside it, or its keys: KDSR and BasicSR
RRDBNet here, anything else spandrel knows (SwinIR, HAT, SRVGGNetCompact, ...; kdsr_pdd.networks).
Weights: params_ema > params > raw state dict, or --param-key; loaded strictly with weights_only=True.

Tiles (-t): by default images above 500,000 LR pixels (~700x700) are cut into 400-pixel tiles, each with
enough context that the result matches an untiled pass: the network's receptive field when it can be
counted, else measured once per network with a probe (kdsr_pdd.upscaler); --tile_pad P sets the context
as Real-ESRGAN does. Precision: fp32 on CPU; fp16 on CUDA unless --fp32 (or the network cannot).
glibc is told to keep freed memory for reuse (kdsr_pdd.memory: less than half the CPU time of a large
image on CPU); setting any MALLOC_* environment variable leaves malloc as configured there.
Refused in one line: --face_enhance (GFPGAN) and -dn mixing of realesr-general-x4v3 with its denoising
twin (-dn 1 runs the plain model); -s defaults to the network's scale (Real-ESRGAN's default is 4).

Errors are one line each. Exit status: 0 when every image was written or skipped (--skip-existing),
1 when any failed (the last line counts them), 2 on a usage, model or output-folder error.
"""
import argparse
import sys

from kdsr_pdd.commands.cli import CommandParser, resolve_device

_NOT_SUPPORTED = 'not supported here'


def build_parser():
    """The argument parser: Real-ESRGAN's flags with their meanings, and this project's."""
    parser = CommandParser('infer', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    files = parser.add_argument_group('input and output')
    files.add_argument('input', nargs='?', help='image file or folder (the same as -i)')
    files.add_argument('-i', '--input', dest='input_option', metavar='INPUT',
                       help='image file or folder of images (default: inputs)')
    files.add_argument('-o', '--output', default='results', help='output folder (default: %(default)s)')
    files.add_argument('--suffix', default='out', help='outputs are <stem>_<suffix>.<ext>, <stem>.<ext> when empty '
                       '(default: %(default)s)')
    files.add_argument('--ext', choices=('auto', 'jpg', 'png'), default='auto',
                       help="output format; auto: the input's (default: %(default)s)")
    files.add_argument('-r', '--recursive', action='store_true', help='descend into sub-folders')
    files.add_argument('--skip-existing', action='store_true', help='skip images whose output exists')

    network = parser.add_argument_group('network')
    network.add_argument('-n', '--model_name', help='Real-ESRGAN model name, read from weights/NAME.pth or '
                         'experiments/pretrained_models/NAME.pth (default without -m: RealESRGAN_x4plus)')
    network.add_argument('-m', '--model_path', '--model', dest='model_path', metavar='CHECKPOINT',
                         help='checkpoint file (.pth, .pt, .safetensors)')
    network.add_argument('--opt', help='option YAML whose network_g describes the network')
    network.add_argument('--arch', help='arch preset (realesrgan-x4, realesrgan-x2, realesrgan-x4-anime-6b, '
                         'realesr-animevideov3, realesr-general-x4v3, kdsr-m-x4, kdsr-l-x4, kdsr-gan-x4) or '
                         'registered BasicSR arch type; omit it to detect the network from the checkpoint')
    network.add_argument('--arch-args', help='JSON object of arch keyword arguments (override a preset)')
    network.add_argument('--param-key', help='checkpoint key to load (default: params_ema, params, raw)')
    network.add_argument('-dn', '--denoise_strength', type=float,
                         help=f'Real-ESRGAN denoise strength of realesr-general-x4v3: only 1 (no mixing); '
                              f'{_NOT_SUPPORTED} otherwise')
    network.add_argument('--face_enhance', action='store_true', help=f'GFPGAN face enhancement: {_NOT_SUPPORTED}')

    running = parser.add_argument_group('running')
    running.add_argument('-s', '--outscale', type=float,
                         help="final scale (default: the network's); another value resizes with Lanczos-4")
    running.add_argument('-t', '--tile', type=int, help='tile size in LR pixels; 0: whole image (default: 400 '
                         'for images above 500,000 LR pixels)')
    running.add_argument('--tile_pad', '--tile-pad', dest='tile_pad', type=int,
                         help='context around each tile in LR pixels (default: from the network, so that tiles '
                              'match an untiled pass)')
    running.add_argument('--pre_pad', type=int, default=0,
                         help='reflect padding at the bottom/right edges, cropped after (default: %(default)s)')
    running.add_argument('--pad-multiple', type=int, default=1,
                         help='pad inputs to a multiple of this (combined with what the network needs)')
    running.add_argument('--alpha_upsampler', choices=('realesrgan', 'bicubic'), default='realesrgan',
                         help='alpha channels: through the network or resized bicubic (default: %(default)s)')
    running.add_argument('--color-correction', action='store_true',
                         help='match each output channel mean/std to the input (PDD inference)')
    precision = running.add_mutually_exclusive_group()
    precision.add_argument('--fp32', action='store_true', help='float32 on CUDA too (default there: fp16)')
    precision.add_argument('--fp16', action='store_true', help='half precision (CUDA only)')
    running.add_argument('--device', help='torch device: cpu, cuda, cuda:N (default: cuda when available)')
    running.add_argument('-g', '--gpu-id', type=int, help='CUDA device number (the same as --device cuda:N)')
    return parser


class UsageError(ValueError):
    """A combination of options that cannot work (one line)."""


def check_options(args):
    """UsageError for refused or contradictory options (a note for ignored ones); returns the input path."""
    from kdsr_pdd.model_names import DENOISE_MODEL, model_name

    if args.input and args.input_option and args.input != args.input_option:
        raise UsageError(f'two inputs given ({args.input} and -i {args.input_option}): give one.')
    if args.face_enhance:
        raise UsageError(f'--face_enhance (GFPGAN face restoration) is {_NOT_SUPPORTED}: run without it.')
    name = model_name(args.model_name) if args.model_name else None
    if name == DENOISE_MODEL and args.denoise_strength != 1:
        strength = 'by default (-dn 0.5)' if args.denoise_strength is None else f'at -dn {args.denoise_strength}'
        raise UsageError(f'-n {DENOISE_MODEL}: Real-ESRGAN mixes it with realesr-general-wdn-x4v3 {strength}; that '
                         f'mixing is {_NOT_SUPPORTED}: pass -dn 1 for the plain model.')
    if args.denoise_strength is not None and name != DENOISE_MODEL:
        print(f'note: -dn only changes {DENOISE_MODEL} (as in Real-ESRGAN); ignored here.', file=sys.stderr)
    if args.model_name and (args.opt or args.arch):
        raise UsageError('give -n or --opt / --arch, not both (-n fixes the network).')
    if args.device and args.gpu_id is not None:
        raise UsageError('give --device or -g/--gpu-id, not both.')
    for flag, value, low in (('--tile', args.tile, 0), ('--tile_pad', args.tile_pad, 0),
                             ('--pre_pad', args.pre_pad, 0), ('--pad-multiple', args.pad_multiple, 1),
                             ('-g/--gpu-id', args.gpu_id, 0)):
        if value is not None and value < low:
            raise UsageError(f'{flag} must be >= {low}, got {value}.')
    if args.outscale is not None and not args.outscale > 0:
        raise UsageError(f'-s/--outscale must be > 0, got {args.outscale}.')
    return args.input or args.input_option or 'inputs'


def choose_device(args):
    """The torch device of ``--device`` / ``-g`` (default: cuda when available); UsageError if unusable."""
    flag = '-g' if args.gpu_id is not None else '--device'
    try:
        device = resolve_device(f'cuda:{args.gpu_id}' if args.gpu_id is not None else args.device or 'auto', flag)
    except ValueError as err:
        raise UsageError(f'{err}.') from None
    if args.fp16 and device.type != 'cuda':
        raise UsageError(f'--fp16 needs a CUDA device (got {device}); drop --fp16 on CPU.')
    return device


def load_model(args):
    """``(net, NetworkInfo, checkpoint path, where the network description came from)`` for the options."""
    from kdsr_pdd.model_names import find_model_file, network_of
    from kdsr_pdd.networks import load_network, resolve_network_opt
    from kdsr_pdd.spandrel_networks import SpandrelNetwork

    name = args.model_name or (None if args.model_path else 'RealESRGAN_x4plus')
    path = args.model_path or find_model_file(name)
    network_opt, source = network_of(name) if name and not (args.opt or args.arch) else (None, None)
    if network_opt is None:
        network_opt, source = resolve_network_opt(path, args.opt, args.arch, args.arch_args)
    net, info = load_network(path, network_opt, args.param_key, source)
    if network_opt is None:
        source = f'detected {"by spandrel" if isinstance(net, SpandrelNetwork) else info.arch} from its keys'
    return net, info, path, source


def make_upscaler(args, device):
    """The :class:`kdsr_pdd.upscaler.Upscaler` of the options, and a line describing it."""
    from tqdm import tqdm

    import kdsr_pdd.plugin  # noqa: F401  (registers the archs and their families)
    from kdsr_pdd.upscaler import Upscaler

    net, info, path, source = load_model(args)
    half = args.fp16 or (device.type == 'cuda' and not args.fp32 and info.supports_half)
    upscaler = Upscaler(net, info, device, half, args.tile, args.tile_pad, args.pad_multiple, args.pre_pad,
                        progress=True, report=lambda line: tqdm.write(line, file=sys.stderr))
    line = f'{path}: {info.arch} x{info.scale} ({source}) on {device}, {"fp16" if half else "fp32"}'
    return upscaler, line


def prepare(args):
    """Everything before the images: ``(inputs, targets, upscaler)``; raises a one-line error when it cannot."""
    from kdsr_pdd.images import IMAGE_EXTENSIONS, list_inputs
    from kdsr_pdd.outputs import check_output_folder, own_outputs_filter, plan_outputs

    input_path = check_options(args)
    device = choose_device(args)
    inputs = list_inputs(input_path, args.recursive, own_outputs_filter(input_path, args.output, args.suffix))
    if not inputs:
        raise ValueError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {input_path}.')
    targets = plan_outputs(inputs, args.output, args.suffix, args.ext)
    check_output_folder(args.output)
    upscaler, line = make_upscaler(args, device)
    print(line, file=sys.stderr)
    return inputs, targets, upscaler


def upscale_file(args, path, target, upscaler, claimed):
    """Read ``path``, upscale it and write it to ``target`` (or its PNG twin, see :func:`kdsr_pdd.outputs.finish`);
    returns a note for the user ('' if none). ``claimed``: every planned or written output."""
    from kdsr_pdd.images import read_image
    from kdsr_pdd.outputs import encode, finish, write_atomic
    from kdsr_pdd.upscaler import upscale_image

    image = read_image(path)
    out = upscale_image(upscaler, image, args.color_correction, args.alpha_upsampler, args.outscale)
    final, out, note = finish(target, out)
    if final != target and final in claimed:
        raise ValueError(f'its alpha channel needs PNG, and {final} is the output of another input; rename one')
    try:
        write_atomic(final, encode(final, out))
    except OSError as err:
        raise OSError(f'cannot write {final} ({err.strerror or err})') from None
    claimed.add(final)
    return note


def run_images(args, inputs, targets, upscaler):
    """Upscale every input to its target with a progress bar; ``(written, skipped, failed)``; one line per failure."""
    import cv2
    import torch
    from tqdm import tqdm

    written = skipped = failed = 0
    claimed = set(targets.values())
    for path, _ in tqdm(inputs, desc='infer', unit='img'):
        target = targets[path]
        if args.skip_existing and target.exists():
            skipped += 1
            continue
        try:
            note = upscale_file(args, path, target, upscaler, claimed)
        except (ValueError, OSError, cv2.error) as err:
            tqdm.write(f'{path}: {err}; skipped', file=sys.stderr)
            failed += 1
            continue
        except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as err:
            reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            tqdm.write(f'{path}: the network failed ({reason}); try a smaller --tile; skipped', file=sys.stderr)
            failed += 1
            continue
        if note:
            tqdm.write(f'{path}: note: {note}', file=sys.stderr)
        written += 1
    return written, skipped, failed


def main(argv=None):
    """Run the command; return the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    from kdsr_pdd.memory import reuse_freed_memory
    reuse_freed_memory()  # CPU time: feature maps reuse freed memory instead of being page-faulted in again
    try:
        inputs, targets, upscaler = prepare(args)
    except (ValueError, FileNotFoundError) as err:  # Usage/Output/Network/Checkpoint/NonFinite errors
        print(f'error: {err}', file=sys.stderr)
        return 2
    written, skipped, failed = run_images(args, inputs, targets, upscaler)
    print(f'wrote {written}, skipped {skipped} existing, failed {failed}; output in {args.output}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
