"""Results tables from BasicSR logs written by BasicSR's own logging code: parsing, best-value bold for
higher- and lower-is-better metrics, CSV round trip, Gaussian8 averaging and the error messages."""
import contextlib
import csv
import logging
import os
import re
from types import SimpleNamespace

import pytest
from basicsr.models.base_model import BaseModel
from basicsr.models.sr_model import SRModel
from basicsr.utils.logger import get_env_info
from basicsr.utils.options import dict2str

import kdsr_pdd.plugin  # noqa: F401  (registers the plugin into BasicSR)
from kdsr_pdd import logs
from kdsr_pdd.commands import tables
from kdsr_pdd.logs import LogError

BASICSR_FORMAT = '%(asctime)s %(levelname)s: %(message)s'  # basicsr.utils.logger.get_root_logger
METRICS = {
    'psnr': dict(type='calculate_psnr', crop_border=4, test_y_channel=True),
    'ssim': dict(type='calculate_ssim', crop_border=4, test_y_channel=True),
    'lpips': dict(type='pyiqa_lpips'),  # no 'better' key: the direction comes from the known names
}


@contextlib.contextmanager
def basicsr_log_file(path):
    """BasicSR's root logger writes to ``path`` (its format, INFO) within the block."""
    logger = logging.getLogger('basicsr')
    handler = logging.FileHandler(path, 'w')
    handler.setFormatter(logging.Formatter(BASICSR_FORMAT))
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(level)


def write_basicsr_log(path, blocks, metrics=METRICS, name='exp', iters=None):
    """Write a log as BasicSR's test/train pipelines do: env info, the option dump, then one validation
    block per ``(dataset, {metric: value})`` through ``SRModel._log_validation_metric_values``."""
    opt = {'name': name, 'model_type': 'KDSRStudentModel', 'scale': 4,
           'datasets': {f'test_{i}': {'name': d, 'type': 'PairedImageDataset'} for i, (d, _) in enumerate(blocks)},
           'val': {'save_img': False, 'metrics': metrics}, 'is_train': iters is not None}
    with basicsr_log_file(path) as logger:
        logger.info(get_env_info())
        logger.info(dict2str(opt))
        model = SimpleNamespace(opt=opt)
        for i, (dataset, values) in enumerate(blocks):
            current_iter = iters[i] if iters else name
            model.metric_results = dict(values)
            BaseModel._initialize_best_metric_results(model, dataset)
            for metric, value in values.items():
                BaseModel._update_best_metric_result(model, dataset, metric, value, current_iter)
            SRModel._log_validation_metric_values(model, current_iter, dataset, None)
    return path


def make_test_results(root, name, blocks, metrics=METRICS, stamp='20261123_154001'):
    """``root/name/test_<name>_<stamp>.log``, as ``kdsr-pdd test`` leaves it under results/."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    write_basicsr_log(folder / f'test_{name}_{stamp}.log', blocks, metrics, name)
    return folder


# Three methods on two datasets; expected bold (by hand): Set5 PSNR A and B tie at 30.00 shown,
# Set5 SSIM C, Set5 LPIPS B (lowest); Set14 PSNR C, Set14 SSIM A, Set14 LPIPS C.
RESULTS = {
    'expA': [('Set5', dict(psnr=30.0012, ssim=0.8612, lpips=0.2101)),
             ('Set14', dict(psnr=26.5011, ssim=0.7305, lpips=0.3000))],
    'expB': [('Set5', dict(psnr=29.9987, ssim=0.8600, lpips=0.1999)),
             ('Set14', dict(psnr=26.4000, ssim=0.7301, lpips=0.2950))],
    'expC': [('Set5', dict(psnr=29.1234, ssim=0.8700, lpips=0.2500)),
             ('Set14', dict(psnr=26.6000, ssim=0.7200, lpips=0.2800))],
}
BOLD = {('expA', 'Set5 PSNR↑'), ('expB', 'Set5 PSNR↑'), ('expC', 'Set5 SSIM↑'), ('expB', 'Set5 LPIPS↓'),
        ('expC', 'Set14 PSNR↑'), ('expA', 'Set14 SSIM↑'), ('expC', 'Set14 LPIPS↓')}


@pytest.fixture
def three_experiments(tmp_path):
    return [make_test_results(tmp_path / 'results', name, blocks) for name, blocks in RESULTS.items()]


def markdown_cells(markdown):
    """``{(row label, column title): cell text}`` of a markdown table."""
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in markdown.strip().splitlines()]
    titles = rows[0]
    return {(row[0], title): cell for row in rows[2:] for title, cell in zip(titles[1:], row[1:])}


def test_reads_the_values_basicsr_logged(three_experiments):
    exp = logs.load_experiment(three_experiments[0])
    assert exp.label == 'expA' and exp.log.name == 'test_expA_20261123_154001.log'
    assert exp.results == {d: v for d, v in RESULTS['expA']}
    assert exp.better == {}
    text = exp.log.read_text()
    block = r'^\S+ \S+ INFO: Validation Set5\n\t # psnr: 30\.0012\tBest: 30\.0012 @ expA iter$'
    assert re.search(block, text, re.MULTILINE)


def test_table_bold_marks_the_best_of_each_column(three_experiments):
    table = tables.build_table([logs.load_experiment(p) for p in three_experiments])
    assert table.columns == [(d, m) for d in ('Set5', 'Set14') for m in ('psnr', 'ssim', 'lpips')]
    assert table.directions == {'psnr': 'higher', 'ssim': 'higher', 'lpips': 'lower'}
    cells = markdown_cells(tables.to_markdown(table))
    assert cells[('expA', 'Set5 PSNR↑')] == '**30.00**' and cells[('expC', 'Set5 PSNR↑')] == '29.12'
    assert cells[('expB', 'Set14 LPIPS↓')] == '0.2950'
    assert {key for key, text in cells.items() if text.startswith('**')} == BOLD


def test_direction_override_and_log_better_key(tmp_path, three_experiments):
    experiments = [logs.load_experiment(p) for p in three_experiments]
    flipped = tables.build_table(experiments, metrics=['lpips'], overrides={'lpips': 'higher'})
    cells = markdown_cells(tables.to_markdown(flipped))
    bold = {k for k, t in cells.items() if t.startswith('**')}
    assert bold == {('expC', 'Set5 LPIPS↑'), ('expA', 'Set14 LPIPS↑')}
    # An unknown metric needs a direction: from the log's val.metrics.<m>.better, or the command line.
    custom = dict(METRICS, foo_score=dict(type='x', better='lower'))
    files = [make_test_results(tmp_path / 'custom', n, [('Set5', dict(psnr=30.0, ssim=0.8, lpips=0.2, foo_score=v))],
                               custom) for n, v in (('u', 1.5), ('v', 0.5))]
    loaded = [logs.load_experiment(p) for p in files]
    assert loaded[0].better == {'foo_score': 'lower'}
    cells = markdown_cells(tables.to_markdown(tables.build_table(loaded, metrics=['foo_score'])))
    assert cells[('v', 'Set5 foo_score↓')] == '**0.5000**' and cells[('u', 'Set5 foo_score↓')] == '1.5000'
    with pytest.raises(LogError, match='--higher-better foo_score or --lower-better foo_score'):
        tables.build_table(experiments[:1] + [loaded[0]._replace(better={}, label='w')], metrics=['foo_score'],
                           allow_missing=True)
    with pytest.raises(LogError, match=r'both --higher-better and --lower-better'):
        logs.direction_overrides(['lpips'], ['lpips'])


@pytest.mark.parametrize('metric,direction', [('psnr_y', 'higher'), ('ms_ssim', 'higher'), ('NRQM', 'higher'),
                                              ('lpips_alex', 'lower'), ('dists', 'lower'), ('niqe', 'lower')])
def test_known_metric_directions(metric, direction):
    assert logs.metric_direction(metric) == direction


def test_csv_round_trip_and_cli_outputs(three_experiments, tmp_path, capsys):
    out = tmp_path / 'tables' / 'kdsr'
    tables.main([str(p) for p in three_experiments] + ['--out', str(out), '--labels', 'A', 'B', 'C'])
    printed = capsys.readouterr().out
    assert printed == (tmp_path / 'tables' / 'kdsr.md').read_text()
    with open(tmp_path / 'tables' / 'kdsr.csv', newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['dataset'] + ['Set5'] * 3 + ['Set14'] * 3
    assert rows[1] == ['metric'] + ['psnr', 'ssim', 'lpips'] * 2
    for row, (label, name) in zip(rows[2:], (('A', 'expA'), ('B', 'expB'), ('C', 'expC')), strict=True):
        expected = [v for _, values in RESULTS[name] for v in values.values()]
        assert row[0] == label and [float(v) for v in row[1:]] == expected


def test_last_or_best_block_of_a_training_log(tmp_path):
    folder = tmp_path / 'experiments' / 'train_run'
    folder.mkdir(parents=True)
    blocks = [('Set5', dict(psnr=27.0, lpips=0.30)), ('Set5', dict(psnr=28.5, lpips=0.32)),
              ('Set5', dict(psnr=28.1, lpips=0.25)), ('Set14', dict(psnr=25.0, lpips=0.4))]
    metrics = {'psnr': METRICS['psnr'], 'lpips': METRICS['lpips']}
    write_basicsr_log(folder / 'train_train_run_20261123_100000.log', blocks, metrics, 'train_run',
                      iters=[1000, 2000, 3000, 3000])
    assert logs.load_experiment(folder).results == {'Set5': dict(psnr=28.1, lpips=0.25),
                                                      'Set14': dict(psnr=25.0, lpips=0.4)}
    assert logs.load_experiment(folder, pick='best').results['Set5'] == dict(psnr=28.5, lpips=0.25)
    # a newer test log in the same folder wins over the training log
    write_basicsr_log(folder / 'test_train_run_20261124_090000.log', [('Set5', dict(psnr=29.0, lpips=0.2))],
                      metrics, 'train_run')
    assert logs.load_experiment(folder).results == {'Set5': dict(psnr=29.0, lpips=0.2)}


def test_newest_test_log_is_read(tmp_path):
    folder = make_test_results(tmp_path, 'e', [('Set5', dict(psnr=1.0, ssim=0.1, lpips=0.5))],
                               stamp='20261124_090000')
    write_basicsr_log(folder / 'test_e_20261123_090000.log', [('Set5', dict(psnr=2.0, ssim=0.2, lpips=0.4))])
    os.utime(folder / 'test_e_20261123_090000.log')  # newer on disk, older by its BasicSR time stamp
    assert logs.load_experiment(folder).results['Set5']['psnr'] == 1.0


def test_average_by_prefix_gaussian8(tmp_path, capsys):
    def blocks(offset):
        return [(f'{d}_sig{s:g}', dict(psnr=base + offset + i, ssim=0.5 + offset / 10))
                for d, base in (('Set5', 30.0), ('Set14', 27.0)) for i, s in enumerate((1.8, 2.0, 2.2))]
    metrics = {m: METRICS[m] for m in ('psnr', 'ssim')}
    a = make_test_results(tmp_path, 'A', blocks(0.0), metrics)
    b = make_test_results(tmp_path, 'B', blocks(0.5), metrics)
    tables.main([str(a), str(b), '--average-by-prefix', '--out', str(tmp_path / 'g8')])
    with open(tmp_path / 'g8.csv', newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['dataset', 'Set5', 'Set5', 'Set14', 'Set14']
    assert [float(v) for v in rows[2][1:]] == pytest.approx([31.0, 0.5, 28.0, 0.5])  # mean of 30, 31, 32
    assert [float(v) for v in rows[3][1:]] == pytest.approx([31.5, 0.55, 28.5, 0.55])
    assert '**31.50**' in capsys.readouterr().out
    # averages over different kernel sets are not comparable
    c = make_test_results(tmp_path, 'C', blocks(0.0)[:2] + blocks(0.0)[3:], metrics)
    with pytest.raises(SystemExit, match=r"Set5 averages different entries"):
        tables.main([str(a), str(c), '--average-by-prefix'])


def test_clear_errors(tmp_path, three_experiments):
    empty = tmp_path / 'results' / 'empty'
    empty.mkdir()
    with pytest.raises(SystemExit, match=r'empty: no BasicSR log in this folder'):
        tables.main([str(three_experiments[0]), str(empty)])
    with pytest.raises(SystemExit, match=r'no such experiment folder or log file'):
        tables.main([str(tmp_path / 'missing')])
    unfinished = tmp_path / 'unfinished'
    unfinished.mkdir()
    (unfinished / 'test_unfinished_20261123_000000.log').write_text('2026-11-23 00:00:00,000 INFO: start\n')
    with pytest.raises(SystemExit, match=r'no validation results in this log'):
        tables.main([str(unfinished)])
    with pytest.raises(SystemExit, match=r"test_expA_20261123_154001.log: metric 'niqe' missing for dataset 'Set5'"):
        tables.main([str(p) for p in three_experiments] + ['--metrics', 'psnr', 'niqe'])
    with pytest.raises(SystemExit, match=r"no validation results for dataset 'Urban100'"):
        tables.main([str(p) for p in three_experiments] + ['--datasets', 'Urban100'])
    table = tables.build_table([logs.load_experiment(p) for p in three_experiments], metrics=['psnr', 'niqe'],
                               overrides={'niqe': 'lower'}, allow_missing=True)
    assert markdown_cells(tables.to_markdown(table))[('expA', 'Set5 NIQE↓')] == '-'
    with pytest.raises(SystemExit, match='several experiments are labelled'):
        tables.main([str(three_experiments[0]), str(three_experiments[0] / 'test_expA_20261123_154001.log')])
