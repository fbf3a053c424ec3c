"""BasicSR logs as results: which log of an experiment to read, its validation blocks, metric directions.

A log holds one validation block per dataset and validation run, as BasicSR's
``SRModel._log_validation_metric_values`` writes it::

    2026-11-23 15:40:01,123 INFO: Validation Set5
    \t # psnr: 28.1234\tBest: 28.1234 @ test_name iter
    \t # ssim: 0.7890\tBest: 0.7890 @ test_name iter

In an experiment folder the newest ``test_*.log`` is read (``kdsr-pdd test`` writes it under
``results/<name>/``), else the newest ``train_*.log`` (``experiments/<name>/``); a training log repeats
the blocks every ``val_freq`` iterations. A metric's direction (higher or lower is better) comes from, in
this order: explicit overrides; the ``better:`` key of its ``val.metrics`` entry in the option dump at the
top of the log; the :data:`LOWER_IS_BETTER` / :data:`HIGHER_IS_BETTER` names (matched on the metric key
or its prefix before ``_`` / ``-``, e.g. ``lpips_alex``).
"""
import math
import re
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


class LogError(ValueError):
    """A log, folder or choice of metrics / datasets that cannot be read or combined; the message says which."""


class Experiment(NamedTuple):
    """One row: ``results[dataset][metric] -> value`` read from ``log``; ``better[metric]`` from its options.

    ``members[dataset]``: the sorted log entries averaged into ``dataset`` (:func:`average_by_prefix`).
    """
    label: str
    log: Path
    results: dict
    better: dict
    members: dict = None


# ------------------------------------------------------------------------------------------ reading
def find_log(path):
    """The log to read for ``path``: the file itself, or a folder's newest test log, else newest train log."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise LogError(f'{path}: no such experiment folder or log file.')
    for pattern in ('test_*.log', 'train_*.log'):
        logs = sorted(path.glob(pattern), key=_log_age)
        if logs:
            return logs[-1]
    raise LogError(f'{path}: no BasicSR log in this folder (expected test_*.log from kdsr_pdd.test, '
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


def parse_option_dump(lines):
    """The options BasicSR logged at the start of a run (``dict2str``: two spaces per level, ``key:[`` opens a
    mapping, ``]`` closes it), as a nested dict of strings; ``{}`` when the log has none."""
    root, stack, in_dump = {}, [], False
    for line in lines:
        line = line.rstrip('\n')
        if _LOG_LINE.match(line):
            if in_dump:  # the dump is one log message: it ends where the next message starts
                break
            continue
        depth = (len(line) - len(line.lstrip(' '))) // 2
        text = line.strip()
        if depth < 1 or not text:
            continue
        del stack[depth - 1:]
        parent = stack[-1] if stack else root
        if text == ']':
            continue
        if text.endswith(':['):
            parent[text[:-2]] = child = {}
            stack.append(child)
            in_dump = True
        elif ': ' in text:
            key, value = text.split(': ', 1)
            parent[key] = value
            in_dump = True
    return root


def parse_metric_directions(lines):
    """``{metric: 'higher' | 'lower'}`` from the ``better:`` keys of ``val.metrics`` in the option dump.

    Metrics without an explicit ``better`` are left out.
    """
    metrics = (parse_option_dump(lines).get('val') or {}).get('metrics') or {}
    return {name: opt['better'].strip() for name, opt in metrics.items() if isinstance(opt, dict) and 'better' in opt}


def load_experiment(path, label=None, pick='last', overrides=None):
    """Read the log of ``path`` (see :func:`find_log`) into an :class:`Experiment`.

    ``pick='last'``: each dataset's last validation block; ``pick='best'``: each metric's best value
    over all blocks of that dataset (direction from ``overrides``, the log, or the known names).
    """
    if pick not in ('last', 'best'):
        raise LogError(f"pick must be 'last' or 'best', got {pick!r}")
    log = find_log(path)
    with open(log, encoding='utf-8', errors='replace') as f:
        lines = f.readlines()
    blocks = parse_validation_blocks(lines)
    if not blocks:
        raise LogError(f'{log}: no validation results in this log (did the run finish, with val.metrics set?).')
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
def base_names(metric):
    """The metric key in lower case, then its prefixes before each ``_`` / ``-`` (longest first)."""
    name = metric.lower()
    cuts = [m.start() for m in re.finditer(r'[_-]', name)]
    return [name] + [name[:cut] for cut in reversed(cuts)]


def metric_direction(metric, better=None, overrides=None):
    """'higher' or 'lower': ``overrides`` first, then ``better`` (from a log), then the known names."""
    for source in (overrides or {}, better or {}):
        if metric in source:
            if source[metric] not in ('higher', 'lower'):
                raise LogError(f"metric {metric!r}: better must be 'higher' or 'lower', got {source[metric]!r}")
            return source[metric]
    for name in base_names(metric):
        if name in LOWER_IS_BETTER:
            return 'lower'
        if name in HIGHER_IS_BETTER:
            return 'higher'
    raise LogError(f'cannot tell whether a higher or a lower {metric!r} is better: '
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
            raise LogError(f'the logs disagree on val.metrics.{metric}.better ({sorted(found)}): '
                             f'pass --higher-better {metric} or --lower-better {metric}.')
        directions[metric] = metric_direction(metric, {metric: found.pop()} if found else None)
    return directions


def direction_overrides(higher=(), lower=()):
    """``{metric: direction}`` from the command-line lists; a metric named in both is an error."""
    both = sorted(set(higher) & set(lower))
    if both:
        raise LogError(f'metric(s) {both} given in both --higher-better and --lower-better.')
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
                raise LogError(f'{experiment.log}: cannot average {prefix}: {dataset} has metrics '
                                 f'{sorted(values)}, {members[0][0]} has {sorted(metrics)}.')
        results[prefix] = {m: math.fsum(v[m] for _, v in members) / len(members) for m in members[0][1]}
        averaged[prefix] = sorted(d for d, _ in members)
    return experiment._replace(results=results, members=averaged)


def metric_title(metric, direction):
    """Column title, e.g. ``PSNR↑`` / ``LPIPS↓`` (upper case for the known metric names)."""
    known = any(n in LOWER_IS_BETTER or n in HIGHER_IS_BETTER for n in base_names(metric))
    return (metric.upper() if known else metric) + ('↑' if direction == 'higher' else '↓')


_ITER = re.compile(r'\[epoch:\s*\d+, iter:\s*([\d,]+), lr:\([^)]*\)\](.*)$')
_LOSS = re.compile(r'(\w+): ([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))')
_RESUME = re.compile(r'Resuming training from epoch: \d+, iter: (\d+)')
_END = 'End of training.'


class Curves(NamedTuple):
    """Training curves of one log: ``losses[name]`` and ``validation['<dataset> <metric>']`` -> [(iter, value)]."""
    losses: dict
    validation: dict


def _as_int(text, default=None):
    try:
        return int(float(str(text)))
    except (TypeError, ValueError):
        return default


def training_curves(lines):
    """The :class:`Curves` of a BasicSR training log (its lines).

    Loss values come from the logged iterations (every ``print_freq``). A validation block carries no iteration:
    it is the first multiple of ``val.val_freq`` (from the option dump) after the previous validation that is at
    or after the last logged iteration; the blocks after "End of training" belong to ``train.total_iter``.
    """
    dump = parse_option_dump(lines)
    val_freq = _as_int((dump.get('val') or {}).get('val_freq'))
    total = _as_int((dump.get('train') or {}).get('total_iter'))
    losses, validation = {}, {}
    last_iter = last_val = 0
    seen, ended, current, run_iter = set(), False, None, None
    for line in lines:
        line = line.rstrip('\n')
        if (match := _RESUME.search(line)) is not None:
            last_iter = int(match.group(1))
            last_val = last_iter - last_iter % val_freq if val_freq else last_iter
        elif (match := _ITER.search(line)) is not None:
            last_iter = int(match.group(1).replace(',', ''))
            rest = match.group(2).split(']')[-1]
            for name, value in _LOSS.findall(rest):
                losses.setdefault(name, []).append((last_iter, float(value)))
        elif _END in line:
            ended = True
        if (header := _VALIDATION.match(line)) is not None:
            dataset = header.group(1)
            if run_iter is None or dataset in seen:  # a new validation run
                if ended and total is not None:
                    run_iter = total
                elif val_freq:
                    rounded = -(-last_iter // val_freq) * val_freq
                    run_iter = max(rounded, last_val + val_freq)
                else:
                    run_iter = last_iter
                last_val, seen = run_iter, set()
            seen.add(dataset)
            current = dataset
            continue
        metric = _METRIC.match(line) if current is not None else None
        if metric:
            validation.setdefault(f'{current} {metric.group(1).strip()}', []).append((run_iter, float(metric.group(2))))
        else:
            current = None
    return Curves(losses, validation)
