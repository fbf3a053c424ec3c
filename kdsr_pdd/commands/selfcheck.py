"""Self-check after install: ``kdsr-pdd selfcheck [--device auto|cpu|cuda] [--quick] [-o report.md]``.

Prints, as markdown tables (and writes them to ``--out``): the environment and the BasicSR mends in effect; the
local weight files the losses and metrics read; a few training steps of every registered training scheme on
tiny networks in fp32 and each autocast precision of the device; the released Real-ESRGAN x4plus in fp16 and
bf16 against fp32 on a photo crop; the papers' networks (params, MACs, latency, peak memory) at an LR size
(default 180x320, the papers'; ``--quick`` 32x48 and fewer steps, what CI runs). Details:
:mod:`kdsr_pdd.selfcheck`. Exit status 1 when a check fails; missing optional weights are listed, not failures.
"""
import sys
import tempfile

from kdsr_pdd.commands.cli import CommandParser, fail, parse_size, positive_int, resolve_device


def format_table(title, rows):
    """A markdown section: ``title`` and one line per :class:`kdsr_pdd.selfcheck.Row`."""
    columns = list(dict.fromkeys(k for row in rows for k in row.cells))
    lines = [f'## {title}', '', '| check | status | ' + ' | '.join(columns) + ' |',
             '|:--|:--|' + '--|' * len(columns)]
    for row in rows:
        cells = [str(row.cells.get(c, '')).replace('|', '\\|').replace('\n', ' ') for c in columns]
        lines.append(f'| {row.name} | {row.status} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = CommandParser('selfcheck', description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='auto', help='cpu, cuda, cuda:N or auto (default: CUDA when available)')
    parser.add_argument('--quick', action='store_true', help='small sizes and 2 training steps (CI)')
    parser.add_argument('--lr-size', type=parse_size, default=None, help='LR size HxW of the paper-network table '
                        '(default 180x320; 32x48 with --quick)')
    parser.add_argument('--steps', type=positive_int, default=None, help='training steps per case (default 3; '
                        '2 with --quick)')
    parser.add_argument('--skip', nargs='+', default=[], choices=['training', 'inference', 'networks'],
                        help='sections to leave out')
    parser.add_argument('-o', '--out', help='also write the tables to this markdown file')
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        fail(str(err), status=2)
    lr_size = args.lr_size or ((32, 48) if args.quick else (180, 320))
    steps = args.steps or (2 if args.quick else 3)

    from kdsr_pdd import selfcheck
    sections = [('Environment', lambda work: selfcheck.environment(device)),
                ('Weights (local files; nothing is downloaded)', lambda work: selfcheck.weights())]
    if 'training' not in args.skip:
        sections.append((f'Training: {steps} steps per scheme, tiny networks, {selfcheck.CROP}px crops, {device}',
                         lambda work: selfcheck.training(device, work, steps)))
    if 'inference' not in args.skip:
        size = 24 if args.quick else 64
        sections.append((f'Inference precision: the released x4plus, {device}',
                         lambda work: selfcheck.inference_precision(device, work, size)))
    if 'networks' not in args.skip:
        sections.append((f'Paper networks at LR {lr_size[0]}x{lr_size[1]} (x4), batch 1, fp32, {device}',
                         lambda work: selfcheck.paper_networks(device, lr_size, repeats=1 if args.quick else 3)))
    report, failed = [], 0
    for title, check in sections:
        print(f'... {title}', file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix='kdsr_pdd_selfcheck_') as work:
            rows = check(work)
        table = format_table(title, rows)
        print(table, flush=True)
        report.append(table)
        failed += sum(row.status == selfcheck.FAIL for row in rows)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write('# kdsr-pdd selfcheck\n\n' + '\n'.join(report))
        print(f'written: {args.out}')
    print(f'{failed} check(s) failed.' if failed else 'All checks passed.')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
