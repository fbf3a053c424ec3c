"""Paper-style results tables from BasicSR logs: ``python -m kdsr_pdd.tables EXP [EXP ...] [options]``.

Each EXP is an experiment folder or a log file. In a folder the newest ``test_*.log`` is read (what
``python -m kdsr_pdd.test`` writes under ``results/<name>/``), else the newest ``train_*.log``
(``experiments/<name>/``). A log holds one validation block per dataset and validation run, as
BasicSR's ``SRModel._log_validation_metric_values`` writes it::

    2026-11-23 15:40:01,123 INFO: Validation Set5
    \t # psnr: 28.1234\tBest: 28.1234 @ test_name iter
    \t # ssim: 0.7890\tBest: 0.7890 @ test_name iter

A training log repeats the blocks every ``val_freq`` iterations: ``--last`` (default) takes each
dataset's last block, ``--best`` each metric's best value over the blocks.

The table has one row per experiment, one column group per dataset and one sub-column per metric
(KDSR Table 1: methods x Set5 / Set14 / B100 / Urban100 / Manga109 PSNR / SSIM). The best value of
each column is in bold: the highest for higher-is-better metrics, the lowest for the others. A
metric's direction comes from, in this order: ``--higher-better`` / ``--lower-better``; the
``better:`` key of its ``val.metrics`` entry in the option dump at the top of the log; the
:data:`LOWER_IS_BETTER` / :data:`HIGHER_IS_BETTER` names (matched on the metric key or its prefix
before ``_`` / ``-``, e.g. ``lpips_alex``). ``--average-by-prefix`` merges Gaussian8-style entries
(``Set5_sig1.8`` ... ``Set5_sig3.2``) into one column per benchmark holding their mean, the number
KDSR reports.

Output: the markdown table on stdout, and with ``--out PREFIX`` also ``PREFIX.md`` and ``PREFIX.csv``.
The CSV has two header rows (dataset, metric), the row label in the first column, and the values
unrounded (empty where missing): ``pandas.read_csv(path, header=[0, 1], index_col=0)`` reads it back.
"""
import argparse
import csv
import math
import re
import sys
from pathlib import Path
from typing import NamedTuple

LOWER_IS_BETTER = frozenset({'lpips', 'dists', 'niqe', 'ilniqe', 'brisque', 'pi', 'fid', 'pieapp', 'gmsd', 'nlpd'})
HIGHER_IS_BETTER = frozenset({'psnr', 'ssim', 'ms_ssim', 'nrqm', 'musiq', 'maniqa', 'clipiqa', 'nima', 'topiq',
                              'fsim', 'vif'})
METRIC_DECIMALS = {'psnr': 2}  # by metric base name; every other metric gets DEFAULT_DECIMALS
DEFAULT_DECIMALS = 4
GAUSSIAN8_SEPARATOR = '_sig'

_LOG_LINE = re.compile(r'^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} \w+: ')
_VALIDATION = re.compile(r'^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} INFO: Validation (.+?)\s*$')
_METRIC = re.compile(r'^\t # ([^:\t]+): (\S+)')
_LOG_TIME = re.compile(r'_(\d{8}_\d{6})\.log$')


class TableError(ValueError):
    """A log, folder or choice of metrics / datasets that cannot make a table; the message says which."""


class Experiment(NamedTuple):
    """One row: ``results[dataset][metric] -> value`` read from ``log``; ``better[metric]`` from its options.

    ``members[dataset]``: the sorted log entries averaged into ``dataset`` (:func:`average_by_prefix`).
    """
    label: str
    log: Path
    results: dict
    better: dict
    members: dict = None


class Table(NamedTuple):
    """``values[i][j]``: row ``labels[i]``, column ``columns[j] = (dataset, metric)``; None where missing."""
    labels: list
    columns: list
    values: list
    directions: dict  # metric -> 'higher' | 'lower'


# ------------------------------------------------------------------------------------------ reading
def find_log(path):
    """The log to read for ``path``: the file itself, or a folder's newest test log, else newest train log."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise TableError(f'{path}: no such experiment folder or log file.')
    for pattern in ('test_*.log', 'train_*.log'):
        logs = sorted(path.glob(pattern), key=_log_age)
        if logs:
            return logs[-1]
    raise TableError(f'{path}: no BasicSR log in this folder (expected test_*.log from kdsr_pdd.test, '
                     'or train_*.log from training).')


def _log_age(log):
    """Sort key: the time stamp BasicSR puts in the file name, then the modification time."""
    stamp = _LOG_TIME.search(log.name)
    return (stamp.group(1) if stamp else '', log.stat().st_mtime)


def parse_validation_blocks(lines):
    """``[(dataset, {metric: value}), ...]`` in log order, one entry per validation block."""
    blocks, current = [], None
    for line in lines:
        line = line.rstrip('\n')
        header = _VALIDATION.match(line)
        metric = _METRIC.match(line) if current is not None else None
        if header:
            current = {}
            blocks.append((header.group(1), current))
        elif metric:
            current[metric.group(1).strip()] = float(metric.group(2))
        else:
            current = None
    return [(dataset, values) for dataset, values in blocks if values]


def parse_metric_directions(lines):
    """``{metric: 'higher' | 'lower'}`` from the ``better:`` keys of ``val.metrics`` in the first option dump.

    BasicSR logs the options with ``dict2str``: two spaces per level, ``key:[`` opens a mapping, ``]``
    closes it. Metrics without an explicit ``better`` are left out.
    """
    better, path, in_dump = {}, [], False
    for line in lines:
        line = line.rstrip('\n')
        if _LOG_LINE.match(line):
            if in_dump:  # the dump is one log message: it ends where the next message starts
                break
            continue
        depth = (len(line) - len(line.lstrip(' '))) // 2
        text = line.strip()
        if text == ']':
            path = path[:depth - 1]
        elif text.endswith(':['):
            path, in_dump = path[:depth - 1] + [text[:-2]], True
        elif path[:2] == ['val', 'metrics'] and len(path) == 3 and depth == 4 and text.startswith('better: '):
            better[path[2]] = text[len('better: '):].strip()
    return better


def load_experiment(path, label=None, pick='last', overrides=None):
    """Read the log of ``path`` (see :func:`find_log`) into an :class:`Experiment`.

    ``pick='last'``: each dataset's last validation block; ``pick='best'``: each metric's best value
    over all blocks of that dataset (direction from ``overrides``, the log, or the known names).
    """
    if pick not in ('last', 'best'):
        raise TableError(f"pick must be 'last' or 'best', got {pick!r}")
    log = find_log(path)
    with open(log, encoding='utf-8', errors='replace') as f:
        lines = f.readlines()
    blocks = parse_validation_blocks(lines)
    if not blocks:
        raise TableError(f'{log}: no validation results in this log (did the run finish, with val.metrics set?).')
    better = parse_metric_directions(lines)
    results = {}
    for dataset, values in blocks:
        merged = results.setdefault(dataset, {})
        for metric, value in values.items():
            if pick == 'best' and metric in merged:
                lower = metric_direction(metric, better, overrides) == 'lower'
                value = min(value, merged[metric]) if lower else max(value, merged[metric])
            merged[metric] = value
    path = Path(path)
    return Experiment(label or (path.name if path.is_dir() else log.parent.name), log, results, better, {})


# --------------------------------------------------------------------------------------- directions
def _base_names(metric):
    """The metric key in lower case, then its prefixes before each ``_`` / ``-`` (longest first)."""
    name = metric.lower()
    cuts = [m.start() for m in re.finditer(r'[_-]', name)]
    return [name] + [name[:cut] for cut in reversed(cuts)]


def metric_direction(metric, better=None, overrides=None):
    """'higher' or 'lower': ``overrides`` first, then ``better`` (from a log), then the known names."""
    for source in (overrides or {}, better or {}):
        if metric in source:
            if source[metric] not in ('higher', 'lower'):
                raise TableError(f"metric {metric!r}: better must be 'higher' or 'lower', got {source[metric]!r}")
            return source[metric]
    for name in _base_names(metric):
        if name in LOWER_IS_BETTER:
            return 'lower'
        if name in HIGHER_IS_BETTER:
            return 'higher'
    raise TableError(f'cannot tell whether a higher or a lower {metric!r} is better: '
                     f'pass --higher-better {metric} or --lower-better {metric}.')


def resolve_directions(metrics, experiments, overrides=None):
    """``{metric: direction}`` for the table; the logs' ``better`` keys must agree with each other."""
    directions = {}
    for metric in metrics:
        if overrides and metric in overrides:
            directions[metric] = metric_direction(metric, overrides=overrides)
            continue
        found = {exp.better[metric] for exp in experiments if metric in exp.better}
        if len(found) > 1:
            raise TableError(f'the logs disagree on val.metrics.{metric}.better ({sorted(found)}): '
                             f'pass --higher-better {metric} or --lower-better {metric}.')
        directions[metric] = metric_direction(metric, {metric: found.pop()} if found else None)
    return directions


def direction_overrides(higher=(), lower=()):
    """``{metric: direction}`` from the command-line lists; a metric named in both is an error."""
    both = sorted(set(higher) & set(lower))
    if both:
        raise TableError(f'metric(s) {both} given in both --higher-better and --lower-better.')
    return {**{m: 'higher' for m in higher}, **{m: 'lower' for m in lower}}


# -------------------------------------------------------------------------------------- processing
def average_by_prefix(experiment, separator=GAUSSIAN8_SEPARATOR):
    """Merge datasets named ``<prefix><separator><anything>`` into ``<prefix>``: the mean of each metric.

    A dataset without the separator stays as it is. Every member of a group must have the same metrics.
    """
    groups = {}
    for dataset, values in experiment.results.items():
        prefix = dataset.rsplit(separator, 1)[0] if separator in dataset else dataset
        groups.setdefault(prefix, []).append((dataset, values))
    results, averaged = {}, {}
    for prefix, members in groups.items():
        metrics = set(members[0][1])
        for dataset, values in members:
            if set(values) != metrics:
                raise TableError(f'{experiment.log}: cannot average {prefix}: {dataset} has metrics '
                                 f'{sorted(values)}, {members[0][0]} has {sorted(metrics)}.')
        results[prefix] = {m: math.fsum(v[m] for _, v in members) / len(members) for m in members[0][1]}
        averaged[prefix] = sorted(d for d, _ in members)
    return experiment._replace(results=results, members=averaged)


def _check_same_members(experiments):
    """Averages are comparable only over the same entries (e.g. all 8 Gaussian8 kernels)."""
    first = experiments[0]
    for exp in experiments[1:]:
        for dataset in set(first.results) & set(exp.results):
            a, b = (first.members or {}).get(dataset), (exp.members or {}).get(dataset)
            if a != b:
                raise TableError(f'{dataset} averages different entries in {first.log} ({a}) and {exp.log} ({b}).')


def _first_seen(lists):
    seen = {}
    for items in lists:
        for item in items:
            seen.setdefault(item, None)
    return list(seen)


def build_table(experiments, metrics=None, datasets=None, overrides=None, allow_missing=False):
    """The :class:`Table` of ``experiments`` (rows) x ``datasets`` x ``metrics`` (columns).

    Defaults: all datasets in order of appearance; the metrics of the first experiment's first dataset.
    A missing dataset or metric is an error unless ``allow_missing`` (then the cell is None).
    """
    if not experiments:
        raise TableError('no experiments given.')
    labels = [exp.label for exp in experiments]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise TableError(f'several experiments are labelled {duplicates}: give --labels.')
    _check_same_members(experiments)
    datasets = list(datasets or _first_seen(exp.results for exp in experiments))
    if metrics is None:
        first = experiments[0].results
        metrics = list(first.get(datasets[0], next(iter(first.values()))))
    metrics = list(metrics)
    directions = resolve_directions(metrics, experiments, overrides)
    values = []
    for exp in experiments:
        row = []
        for dataset in datasets:
            found = exp.results.get(dataset)
            if found is None and not allow_missing:
                raise TableError(f'{exp.log}: no validation results for dataset {dataset!r} '
                                 f'(it has {sorted(exp.results)}); choose --datasets or --allow-missing.')
            for metric in metrics:
                if found is not None and metric not in found and not allow_missing:
                    raise TableError(f'{exp.log}: metric {metric!r} missing for dataset {dataset!r} '
                                     f'(it has {sorted(found)}); choose --metrics or --allow-missing.')
                row.append(None if found is None else found.get(metric))
        values.append(row)
    columns = [(dataset, metric) for dataset in datasets for metric in metrics]
    return Table(labels, columns, values, directions)


# ------------------------------------------------------------------------------------------ writing
def metric_decimals(metric, decimals=None):
    if decimals is not None:
        return decimals
    return next((METRIC_DECIMALS[n] for n in _base_names(metric) if n in METRIC_DECIMALS), DEFAULT_DECIMALS)


def metric_title(metric, direction):
    """Column title, e.g. ``PSNR↑`` / ``LPIPS↓`` (upper case for the known metric names)."""
    known = any(n in LOWER_IS_BETTER or n in HIGHER_IS_BETTER for n in _base_names(metric))
    return (metric.upper() if known else metric) + ('↑' if direction == 'higher' else '↓')


def best_cells(table, decimals=None):
    """``{(row, column)}`` holding the best shown (rounded) value of their column; ties are all best.

    A column with fewer than two values has no best.
    """
    best = set()
    for j, (_, metric) in enumerate(table.columns):
        digits = metric_decimals(metric, decimals)
        shown = {i: round(row[j], digits) for i, row in enumerate(table.values) if row[j] is not None}
        if len(shown) < 2:
            continue
        pick = min if table.directions[metric] == 'lower' else max
        target = pick(shown.values())
        best |= {(i, j) for i, v in shown.items() if v == target}
    return best


def to_markdown(table, decimals=None):
    """Markdown table; column titles ``<dataset> <METRIC>↑``, best values in bold, missing as ``-``."""
    bold = best_cells(table, decimals)
    titles = [f'{dataset} {metric_title(metric, table.directions[metric])}' for dataset, metric in table.columns]
    lines = ['| Method | ' + ' | '.join(titles) + ' |', '|:--|' + '--:|' * len(titles)]
    for i, (label, row) in enumerate(zip(table.labels, table.values)):
        cells = []
        for j, ((_, metric), value) in enumerate(zip(table.columns, row)):
            text = '-' if value is None else f'{value:.{metric_decimals(metric, decimals)}f}'
            cells.append(f'**{text}**' if (i, j) in bold else text)
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def write_csv(table, path):
    """Two header rows (dataset, metric), then ``label, values...`` unrounded; empty where missing."""
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['dataset'] + [dataset for dataset, _ in table.columns])
        writer.writerow(['metric'] + [metric for _, metric in table.columns])
        for label, row in zip(table.labels, table.values):
            writer.writerow([label] + ['' if v is None else repr(v) for v in row])


# -------------------------------------------------------------------------------------------- CLI
def add_source_arguments(parser):
    """The options shared with :mod:`kdsr_pdd.figures` that select logs and values."""
    parser.add_argument('experiments', nargs='+', help='experiment folders (results/<name>, experiments/<name>) '
                        'or log files')
    parser.add_argument('--labels', nargs='+', help='row labels, one per experiment (default: folder names)')
    pick = parser.add_mutually_exclusive_group()
    pick.add_argument('--last', dest='pick', action='store_const', const='last', default='last',
                      help="each dataset's last validation block (default)")
    pick.add_argument('--best', dest='pick', action='store_const', const='best',
                      help="each metric's best value over the log's validation blocks")
    parser.add_argument('--average-by-prefix', nargs='?', const=GAUSSIAN8_SEPARATOR, metavar='SEP',
                        help=f'average datasets named <prefix>SEP<...> into <prefix> (SEP default '
                        f'{GAUSSIAN8_SEPARATOR!r}: Gaussian8 Set5_sig1.8 ... -> Set5)')
    parser.add_argument('--higher-better', nargs='+', default=[], metavar='METRIC')
    parser.add_argument('--lower-better', nargs='+', default=[], metavar='METRIC')


def load_from_args(args):
    """The experiments and direction overrides named by the :func:`add_source_arguments` options."""
    if args.labels and len(args.labels) != len(args.experiments):
        raise TableError(f'--labels gives {len(args.labels)} labels for {len(args.experiments)} experiments.')
    labels = args.labels or [None] * len(args.experiments)
    overrides = direction_overrides(args.higher_better, args.lower_better)
    experiments = [load_experiment(path, label, args.pick, overrides) for path, label in zip(args.experiments, labels)]
    if args.average_by_prefix:
        experiments = [average_by_prefix(exp, args.average_by_prefix) for exp in experiments]
    return experiments, overrides


def build_parser():
    parser = argparse.ArgumentParser(prog='python -m kdsr_pdd.tables', description=__doc__.split('\n\n')[0])
    add_source_arguments(parser)
    parser.add_argument('--metrics', nargs='+', help='metric keys of val.metrics, in column order '
                        '(default: those of the first experiment)')
    parser.add_argument('--datasets', nargs='+', help='datasets in column order (default: all, as they appear)')
    parser.add_argument('--allow-missing', action='store_true', help='show a missing value as "-" instead of failing')
    parser.add_argument('--decimals', type=int, help='digits after the point for every metric '
                        f'(default: PSNR {METRIC_DECIMALS["psnr"]}, others {DEFAULT_DECIMALS})')
    parser.add_argument('--out', help='write OUT.md and OUT.csv (folders are created)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        experiments, overrides = load_from_args(args)
        table = build_table(experiments, args.metrics, args.datasets, overrides, args.allow_missing)
    except TableError as err:
        sys.exit(f'error: {err}')
    markdown = to_markdown(table, args.decimals)
    sys.stdout.write(markdown)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_name(out.name + '.md').write_text(markdown, encoding='utf-8')
        write_csv(table, out.with_name(out.name + '.csv'))
        print(f'wrote {out}.md and {out}.csv', file=sys.stderr)


if __name__ == '__main__':
    main()
