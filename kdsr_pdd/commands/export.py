"""ONNX export of an SR network: ``kdsr-pdd export [--opt X.yml | --arch NAME] --model CKPT --out M.onnx``.

The network is chosen and loaded as by ``kdsr-pdd infer`` (:mod:`kdsr_pdd.networks`: ``--opt``'s
``network_g``, an ``--arch`` preset or registered type with ``--arch-args``, the YAML next to the
checkpoint, or its keys; ``params_ema`` > ``params`` > raw state dict). The KDSR teacher is refused: its
encoder needs the HR image.

The graph has one input ``lq`` [B,C,H,W] (float32, [0,1]) and one output ``sr`` [B,C,s*H,s*W], with batch,
height and width dynamic. It is captured with the TorchScript exporter (``dynamo=False``); while it is
captured the KDSR dynamic depthwise convolution switches to a form without batch-dependent groups
(:func:`kdsr_arch.archs.depthwise_conv2d_per_sample`). ``--check`` validates the file with ``onnx.checker``
and compares onnxruntime with torch on random inputs of the ``--check-sizes`` (the k-th size with
batch k, so the batch axis is exercised too), printing the max abs difference; exit status 1 when it
exceeds ``--atol``.
"""
import sys
import warnings

import torch

from kdsr_pdd.commands.cli import CommandParser, fail, parse_size
from kdsr_pdd.network_info import NetworkError
from kdsr_pdd.networks import load_network, resolve_network_opt


def export_onnx(net, out_path, opset=17, in_channels=3, multiple=1):
    """Write ``net`` (eval, CPU, float32) to ``out_path`` with dynamic batch, height and width."""
    side = 8 * multiple
    sample = torch.rand(1, in_channels, side, side)
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter is chosen on purpose (the dynamo one needs onnxscript), and its note that it
        # does not fold slices means nothing more
        warnings.filterwarnings('ignore', message='You are using the legacy TorchScript', category=DeprecationWarning)
        warnings.filterwarnings('ignore', message='Constant folding - Only steps=1', category=UserWarning)
        torch.onnx.export(
            net.eval(), (sample, ), out_path, dynamo=False, opset_version=opset, input_names=['lq'],
            output_names=['sr'], dynamic_axes={'lq': {0: 'batch', 2: 'height', 3: 'width'},
                                               'sr': {0: 'batch', 2: 'sr_height', 3: 'sr_width'}})


def compare_onnx(net, onnx_path, sizes, in_channels=3, seed=0):
    """Max abs difference between onnxruntime and torch per size ``(h, w)``; the k-th size runs batch k."""
    import onnx
    import onnxruntime

    onnx.checker.check_model(onnx_path)
    session = onnxruntime.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
    generator = torch.Generator().manual_seed(seed)
    diffs = []
    for batch, (h, w) in enumerate(sizes, 1):
        lq = torch.rand(batch, in_channels, h, w, generator=generator)
        with torch.no_grad():
            expected = net(lq)
        (got, ) = session.run(['sr'], {'lq': lq.numpy()})
        if tuple(got.shape) != tuple(expected.shape):
            raise NetworkError(f'{onnx_path}: output shape {tuple(got.shape)} for input {tuple(lq.shape)}, '
                             f'torch gives {tuple(expected.shape)}.')
        diffs.append(float((torch.from_numpy(got) - expected).abs().max()))
    return diffs


def build_parser():
    parser = CommandParser('export', description=__doc__.split('\n')[0])
    parser.add_argument('-m', '--model', required=True, help='checkpoint (.pth) to export')
    parser.add_argument('-o', '--out', '--output', required=True, help='ONNX file to write')
    parser.add_argument('-opt', '--opt', help='option file whose network_g describes the network')
    parser.add_argument('--arch', help='preset name or registered arch type (instead of --opt)')
    parser.add_argument('--arch-args', help='JSON keyword arguments for --arch')
    parser.add_argument('--param-key', help='checkpoint key to read first (default params_ema, then params)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (default %(default)s)')
    parser.add_argument('--check', action='store_true', help='compare onnxruntime with torch after export')
    parser.add_argument('--check-sizes', type=parse_size, nargs='+', default=[(24, 32), (20, 36)],
                        help='LR sizes for --check (default 24x32 20x36)')
    parser.add_argument('--atol', type=float, default=1e-3, help='largest accepted difference (default %(default)s)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    import kdsr_pdd.plugin  # noqa: F401  (registers the archs and their families)

    try:
        network_opt, source = resolve_network_opt(args.model, args.opt, args.arch, args.arch_args)
        net, info = load_network(args.model, network_opt, args.param_key, source)
        if info.needs_hr:
            raise NetworkError(f'{info.arch}: the KDSR teacher needs the HR image (its encoder sees LR and HR): export '
                               'the student.')
        net = net.float()
        in_channels = getattr(net, 'num_in_ch', 3)
        multiple = info.size_multiple
        bad = [f'{h}x{w}' for h, w in args.check_sizes if h % multiple or w % multiple]
        if args.check and bad:
            raise NetworkError(f'--check-sizes {" ".join(bad)}: {type(net).__name__} needs multiples of {multiple}.')
        export_onnx(net, args.out, args.opset, in_channels, multiple)
        print(f'wrote {args.out} ({info.arch} from {source}, opset {args.opset}, dynamic batch/height/width)')
        if not args.check:
            return 0
        diffs = compare_onnx(net, args.out, args.check_sizes, in_channels)
    except (FileNotFoundError, ValueError) as err:  # NetworkError, CheckpointError
        fail(err)
    for batch, ((h, w), diff) in enumerate(zip(args.check_sizes, diffs), 1):
        print(f'check {batch}x{in_channels}x{h}x{w}: max abs diff onnxruntime vs torch = {diff:.3g}')
    if max(diffs) > args.atol:
        print(f'error: difference above --atol {args.atol}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
