"""Paper-style results tables from BasicSR logs: ``kdsr-pdd tables EXP [EXP ...] [options]``.

Each EXP is an experiment folder (``results/<name>``, ``experiments/<name>``) or a log file, read as
:mod:`kdsr_pdd.logs` describes; ``--last`` (default) takes each dataset's last validation block, ``--best``
each metric's best value over the blocks.

The table has one row per experiment, one column group per dataset and one sub-column per metric
(KDSR Table 1: methods x Set5 / Set14 / B100 / Urban100 / Manga109 PSNR / SSIM). The best value of
each column is in bold: the highest for higher-is-better metrics, the lowest for the others
(``--higher-better`` / ``--lower-better`` override the directions). ``--average-by-prefix`` merges
Gaussian8-style entries (``Set5_sig1.8`` ... ``Set5_sig3.2``) into one column per benchmark holding
their mean, the number KDSR reports.

Output: the markdown table on stdout, and with ``--out PREFIX`` also ``PREFIX.md`` and ``PREFIX.csv``.
The CSV has two header rows (dataset, metric), the row label in the first column, and the values
unrounded (empty where missing): ``pandas.read_csv(path, header=[0, 1], index_col=0)`` reads it back.
"""
import csv
import sys
from pathlib import Path
from typing import NamedTuple

from kdsr_pdd.commands.cli import CommandParser, add_source_arguments, fail, load_from_args
from kdsr_pdd.logs import DEFAULT_DECIMALS, METRIC_DECIMALS, LogError, base_names, metric_title, resolve_directions


class Table(NamedTuple):
    """``values[i][j]``: row ``labels[i]``, column ``columns[j] = (dataset, metric)``; None where missing."""
    labels: list
    columns: list
    values: list
    directions: dict  # metric -> 'higher' | 'lower'


def _check_same_members(experiments):
    """Averages are comparable only over the same entries (e.g. all 8 Gaussian8 kernels)."""
    first = experiments[0]
    for exp in experiments[1:]:
        for dataset in set(first.results) & set(exp.results):
            a, b = (first.members or {}).get(dataset), (exp.members or {}).get(dataset)
            if a != b:
                raise LogError(f'{dataset} averages different entries in {first.log} ({a}) and {exp.log} ({b}).')


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
        raise LogError('no experiments given.')
    labels = [exp.label for exp in experiments]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise LogError(f'several experiments are labelled {duplicates}: give --labels.')
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
                raise LogError(f'{exp.log}: no validation results for dataset {dataset!r} '
                                 f'(it has {sorted(exp.results)}); choose --datasets or --allow-missing.')
            for metric in metrics:
                if found is not None and metric not in found and not allow_missing:
                    raise LogError(f'{exp.log}: metric {metric!r} missing for dataset {dataset!r} '
                                     f'(it has {sorted(found)}); choose --metrics or --allow-missing.')
                row.append(None if found is None else found.get(metric))
        values.append(row)
    columns = [(dataset, metric) for dataset in datasets for metric in metrics]
    return Table(labels, columns, values, directions)


# ------------------------------------------------------------------------------------------ writing
def metric_decimals(metric, decimals=None):
    if decimals is not None:
        return decimals
    return next((METRIC_DECIMALS[n] for n in base_names(metric) if n in METRIC_DECIMALS), DEFAULT_DECIMALS)


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



def build_parser():
    parser = CommandParser('tables', description=__doc__.split('\n\n')[0])
    add_source_arguments(parser)
    parser.add_argument('--metrics', nargs='+', help='metric keys of val.metrics, in column order '
                        '(default: those of the first experiment)')
    parser.add_argument('--datasets', nargs='+', help='datasets in column order (default: all, as they appear)')
    parser.add_argument('--allow-missing', action='store_true', help='show a missing value as "-" instead of failing')
    parser.add_argument('--decimals', type=int, help='digits after the point for every metric '
                        f'(default: PSNR {METRIC_DECIMALS["psnr"]}, others {DEFAULT_DECIMALS})')
    parser.add_argument('-o', '--out', '--output', help='write OUT.md and OUT.csv (folders are created)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        experiments, overrides = load_from_args(args)
        table = build_table(experiments, args.metrics, args.datasets, overrides, args.allow_missing)
    except LogError as err:
        fail(err)
    markdown = to_markdown(table, args.decimals)
    sys.stdout.write(markdown)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_name(out.name + '.md').write_text(markdown, encoding='utf-8')
        write_csv(table, out.with_name(out.name + '.csv'))
        print(f'wrote {out}.md and {out}.csv', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(main())
