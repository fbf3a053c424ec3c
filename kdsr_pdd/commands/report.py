"""Model report: ``kdsr-pdd report [--options-glob GLOB] [--lr-size HxW] [--out report.md] ...``.

Every distinct network configured in the option files (sections ``network_g``, ``network_teacher`` and
``network_reference``; discriminators are left out) becomes one row of a markdown table: parameters
(total and trainable), MACs, latency and peak memory at one LR input size (default 180x320, the size of
the papers' tables: x4 gives a 720x1280 output). Two sections are the same network when their type and
keyword arguments, with the arch's defaults filled in, are equal; a row lists every option file (and
section, when not ``network_g``) that configures it.

Conventions:

* MACs = FLOPs / 2 from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts convolutions and
  matrix products (a conv: ``C_out * H_out * W_out * C_in / groups * k_h * k_w`` MACs; bias additions,
  activations and other element-wise work are not counted). The network and its input are built on the
  ``meta`` device, so counting costs no memory and no arithmetic at any input size.
* Latency: batch 1, float32, random weights and input, ``torch.inference_mode``, ``--repeats`` runs after
  ``--warmup`` runs: the median wall time and, on CPU, the smallest process CPU time of one run
  (``time.process_time``: all threads together; far less sensitive than wall time to other processes
  on the machine). The table notes give torch's intra-op thread count (``--threads`` sets it). On CUDA each run is
  bracketed by ``torch.cuda.synchronize`` and the CPU column is '—'.
* Peak memory: the memory the network, its input and the runs need above what the process held before.
  On CUDA ``torch.cuda.max_memory_allocated`` (after resetting the peak); on CPU the peak resident set
  size (``VmHWM`` of ``/proc/self/status``, reset through ``/proc/self/clear_refs``) minus the resident
  size before the network was built, which includes allocator overhead. Where that cannot be read
  (not Linux) the cell is '—'.
* KDSR teachers (``forward(lq, gt)``) are fed a random HR of ``scale`` times the LR size as well.

Large networks at 180x320 take seconds per run on a CPU: ``--lr-size`` reduces the size (the table
header states the size used) and ``--no-latency`` keeps only the counts, which need no real compute.
"""
import glob
import inspect
import os.path as osp
import sys
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from kdsr_pdd.commands.cli import CommandParser, fail, parse_size, positive_int
from kdsr_pdd.measure import Latency, build_network, count_macs, count_parameters, example_inputs, measure_latency
from kdsr_pdd.networks import network_scale
from kdsr_pdd.resources import options_dir

SECTIONS = ('network_g', 'network_teacher', 'network_reference')  # the generator sections of the option files
UNAVAILABLE = '—'


class ReportError(ValueError):
    """An option file, network section or command-line value that cannot be reported; the message says which."""


@dataclass
class Variant:
    """One distinct network: its section as first written (``type`` + keyword arguments) and where it occurs.

    ``sources`` maps an option file's stem to the sections of that file that configure this network.
    """
    network_opt: dict
    sources: dict = field(default_factory=dict)

    @property
    def where(self):
        return ', '.join(stem if sections == ['network_g'] else f'{stem} ({", ".join(sections)})'
                         for stem, sections in self.sources.items())

    @property
    def label(self):
        kwargs = ', '.join(f'{k}={v}' for k, v in self.network_opt.items() if k != 'type')
        return f'{self.network_opt["type"]}({kwargs})'


# ------------------------------------------------------------------------------------- option files
def canonical_key(network_opt, where):
    """The identity of a network section: its type and all constructor arguments, defaults filled in."""
    from kdsr_pdd.schema import Arch

    if not isinstance(network_opt, dict) or 'type' not in network_opt:
        raise ReportError(f'{where}: expected a mapping with a type.')
    try:
        cls = Arch._lookup(network_opt['type'])
    except ValueError as err:
        raise ReportError(f'{where}: {err}') from None
    kwargs = {k: v for k, v in network_opt.items() if k != 'type'}
    try:
        bound = inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise ReportError(f'{where}: bad arguments for {network_opt["type"]}: {err}') from err
    bound.apply_defaults()
    return network_opt['type'], tuple(sorted((k, repr(v)) for k, v in bound.arguments.items()))


def _read_yaml(path):
    from kdsr_pdd.schema import OptionsError, read_option_file
    try:
        return read_option_file(path)
    except OptionsError as err:
        raise ReportError(str(err)) from None


def collect_variants(paths):
    """Distinct networks of the option files ``paths``, in order of first appearance (see the module doc)."""
    variants = {}
    for path in paths:
        opt = _read_yaml(path)
        stem = osp.splitext(osp.basename(path))[0]
        for section in SECTIONS:
            if opt.get(section) is None:
                continue
            key = canonical_key(opt[section], f'{path}: {section}')
            variant = variants.setdefault(key, Variant(dict(opt[section])))
            variant.sources.setdefault(stem, []).append(section)
    return list(variants.values())


# ------------------------------------------------------------------------------------------ table
@dataclass
class Row:
    """One line of the report."""
    variant: Variant
    params: int
    trainable: int
    macs: int
    latency: Latency = None
    peak_bytes: int = None


def measure(variant, lr_size, device=None, repeats=5, warmup=1):
    """The :class:`Row` of ``variant``: counts on the meta device, latency on ``device`` unless None."""
    try:
        net = build_network(variant.network_opt, 'meta')
        params, trainable = count_parameters(net)
        macs = count_macs(net, example_inputs(net, variant.network_opt, lr_size, 'meta'))
        row = Row(variant, params, trainable, macs)
        if device is not None:
            row.latency, row.peak_bytes = measure_latency(variant.network_opt, lr_size, device, repeats, warmup)
    except RuntimeError as err:
        raise ReportError(f'{variant.label} fails at LR {lr_size[0]}x{lr_size[1]} '
                          f'(configured in {variant.where}): {err}') from err
    return row


def format_table(rows, lr_size, device=None, repeats=5, warmup=1, scale=0):
    """The markdown report of ``rows`` (device None: counts only; scale: the factor they were filtered by)."""
    h, w = lr_size
    lines = [f'## Model report: LR input 1x3x{h}x{w}', '']
    if scale:
        lines.append(f'- Networks at x{scale} only (--scale 0 for all).')
    lines += [('- MACs: torch.utils.flop_counter on the meta device, FLOPs / 2 (convolutions and matrix products; '
              'bias, activations and element-wise operations not counted).'),
             '- Teachers are fed a random HR (gt) of scale x the LR size as well.']
    columns = ['#', 'configured in', 'network', 'params', 'trainable', f'MACs (G) @ {h}x{w}']
    if device is not None:
        cuda = torch.device(device).type == 'cuda'
        memory = ('peak CUDA memory allocated above the level before the network was built' if cuda else
                  'peak resident memory (VmHWM) above the resident size before the network was built')
        cpu_note = ('CPU time not measured on CUDA' if cuda else
                    f'CPU: the smallest process CPU time (all threads) of the {repeats} runs')
        lines += [f'- Latency: {repeats} runs after {warmup} warm-up, batch 1, float32, {device}, '
                  'torch.inference_mode' + (', synchronised' if cuda else '') + f'; wall: the median; {cpu_note}; '
                  f'torch.get_num_threads() = {torch.get_num_threads()}.',
                  f'- Peak memory: {memory} (network, input and the runs).']
        columns += [f'wall (ms) @ {h}x{w}', f'CPU (ms) @ {h}x{w}', 'peak memory (MiB)']
    lines += ['', '| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for i, row in enumerate(rows, 1):
        cells = [str(i), row.variant.where, f'`{row.variant.label}`', f'{row.params:,}',
                 f'{row.trainable:,}', f'{row.macs / 1e9:.2f}']
        if device is not None:
            peak = UNAVAILABLE if row.peak_bytes is None else f'{row.peak_bytes / 2**20:.0f}'
            cpu = UNAVAILABLE if row.latency.cpu_s is None else f'{row.latency.cpu_s * 1e3:.1f}'
            cells += [f'{row.latency.wall_s * 1e3:.1f}', cpu, peak]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


# -------------------------------------------------------------------------------------------- CLI
def build_parser():
    parser = CommandParser('report', description=__doc__.split('\n')[0])
    parser.add_argument('--options-glob', default=str(options_dir() / '**' / '*.yml'),
                        help='option files to read (recursive glob; default: the shipped option files)')
    parser.add_argument('--lr-size', type=parse_size, default=(180, 320),
                        help='LR input HEIGHTxWIDTH (default 180x320)')
    parser.add_argument('--scale', type=int, default=4,
                        help='report only networks with this upscaling factor; 0 for all (default %(default)s)')
    parser.add_argument('--device', default='auto', help='cpu, cuda, cuda:N or auto (default %(default)s)')
    parser.add_argument('--repeats', type=positive_int, default=5, help='timed runs per network (default %(default)s)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed runs first (default %(default)s)')
    parser.add_argument('--threads', type=positive_int,
                        help="torch's intra-op threads for the timed runs (default: torch's own choice)")
    parser.add_argument('--no-latency', action='store_true', help='parameters and MACs only (no real compute)')
    parser.add_argument('-o', '--out', '--output', help='also write the markdown report to this file')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    import kdsr_pdd.plugin  # noqa: F401  (registers the archs)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = None
    if not args.no_latency:
        device = ('cuda' if torch.cuda.is_available() else 'cpu') if args.device == 'auto' else args.device
    try:
        paths = sorted(glob.glob(args.options_glob, recursive=True))
        if not paths:
            raise ReportError(f'--options-glob {args.options_glob!r} matches no file.')
        variants = collect_variants(paths)
        if args.scale:
            variants = [v for v in variants if network_scale(build_network(v.network_opt, 'meta')) == args.scale]
        if not variants:
            raise ReportError(f'no network section with scale {args.scale} in {len(paths)} option files '
                              f'({", ".join(SECTIONS)}).')
        if device is not None:  # one small untimed run: one-time runtime set-up must not land on row 1
            measure(variants[0], tuple(min(n, 16) for n in args.lr_size), device, repeats=1, warmup=0)
        rows = [measure(v, args.lr_size, device, args.repeats, args.warmup)
                for v in tqdm(variants, desc='report', unit='network')]
    except ValueError as err:  # ReportError, NetworkError
        fail(err)
    report = format_table(rows, args.lr_size, device, args.repeats, args.warmup, args.scale)
    print(report, end='')
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            f.write(report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
