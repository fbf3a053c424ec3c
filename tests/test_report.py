"""Model report: rows and de-duplication from option files, parameter counts, MACs against hand formulas and the
authors' published figures, latency / peak-memory columns and error messages."""
import os

import pytest
import torch
import yaml
from basicsr.archs.rrdbnet_arch import RRDBNet
from torch import nn

from kdsr_arch.archs import KDSRStudent
from kdsr_pdd import measure as measures
from kdsr_pdd.commands import report
from kdsr_pdd.commands.report import Variant, measure
from kdsr_pdd.measure import count_macs

KDSR_TINY = dict(n_feats=8, n_blocks=2, n_encoder_res=1)
RRDB_TINY = dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, num_grow_ch=4, scale=4)
LR = (8, 12)


def _write(path, opt):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(opt, sort_keys=False), encoding='utf-8')


@pytest.fixture
def options_dir(tmp_path):
    """a: student + teacher; b: the same teacher with scale left at its default; c: RRDBNet as network_g and
    network_reference; sub/d: a x2 student; sub/e: only a discriminator; f: no network at all."""
    root = tmp_path / 'options'
    _write(root / 'a.yml', {'name': 'a', 'network_g': dict(type='KDSRStudent', **KDSR_TINY, scale=4),
                            'network_teacher': dict(type='KDSRTeacher', **KDSR_TINY, scale=4)})
    _write(root / 'b.yml', {'network_g': dict(type='KDSRTeacher', n_encoder_res=1, n_blocks=2, n_feats=8)})
    _write(root / 'c.yml', {'network_g': RRDB_TINY, 'network_reference': dict(RRDB_TINY)})
    _write(root / 'sub' / 'd.yml', {'network_g': dict(type='KDSRStudent', **KDSR_TINY, scale=2)})
    _write(root / 'sub' / 'e.yml', {'network_d': {'type': 'VGGStyleDiscriminator', 'num_in_ch': 3, 'num_feat': 8}})
    _write(root / 'f.yml', {'name': 'nothing'})
    return root


def _table(text):
    """Data rows of the markdown table as lists of cells."""
    lines = [line for line in text.splitlines() if line.startswith('| ') and not line.startswith('| #')]
    return [[cell.strip() for cell in line.strip('|').split('|')] for line in lines]


def _run(options_dir, tmp_path, *extra):
    out = tmp_path / 'report.md'
    assert report.main(['--options-glob', str(options_dir / '**' / '*.yml'), '--lr-size', f'{LR[0]}x{LR[1]}',
                        '--out', str(out), *extra]) == 0
    return out.read_text(encoding='utf-8')


def _conv_macs(c_in, c_out, h, w, k=3):
    return c_in * c_out * k * k * h * w


def _rrdb_macs(num_feat, num_block, num_grow_ch, h, w):
    """Hand count of BasicSR's RRDBNet at x4: every conv is 3x3 with padding 1."""
    f, g = num_feat, num_grow_ch
    rdb = sum(_conv_macs(f + i * g, g, h, w) for i in range(4)) + _conv_macs(f + 4 * g, f, h, w)
    return (_conv_macs(3, f, h, w) + num_block * 3 * rdb + _conv_macs(f, f, h, w)  # conv_first, trunk, conv_body
            + _conv_macs(f, f, 2 * h, 2 * w) + 2 * _conv_macs(f, f, 4 * h, 4 * w)  # conv_up1, conv_up2, conv_hr
            + _conv_macs(f, 3, 4 * h, 4 * w))  # conv_last


def test_rows_dedupe_and_counts(options_dir, tmp_path):
    text = _run(options_dir, tmp_path, '--no-latency')
    assert f'LR input 1x3x{LR[0]}x{LR[1]}' in text and f'MACs (G) @ {LR[0]}x{LR[1]}' in text
    assert 'latency' not in text
    rows = {row[1]: row for row in _table(text)}
    # a's network_teacher and b's network_g are one network; c's two sections are one; d (x2) is filtered out
    assert set(rows) == {'a', 'a (network_teacher), b', 'c (network_g, network_reference)'}

    student = KDSRStudent(**KDSR_TINY, scale=4)
    total = sum(p.numel() for p in student.parameters())
    assert rows['a'][3:5] == [f'{total:,}', f'{total - 24:,}']  # the two MeanShift convs are frozen: 2 * (9 + 3)
    rrdb = RRDBNet(**{k: v for k, v in RRDB_TINY.items() if k != 'type'})
    total = sum(p.numel() for p in rrdb.parameters())
    assert rows['c (network_g, network_reference)'][3:5] == [f'{total:,}', f'{total:,}']
    assert float(rows['c (network_g, network_reference)'][5]) == pytest.approx(
        _rrdb_macs(8, 1, 4, *LR) / 1e9, abs=0.006)


def test_teacher_gets_gt_and_macs_match_hand_counts():
    h, w = LR
    student = measure(Variant(dict(type='KDSRStudent', **KDSR_TINY)), LR)
    teacher = measure(Variant(dict(type='KDSRTeacher', **KDSR_TINY)), LR)
    # the teacher differs only in its first encoder conv, which also sees the 48 channels of the unshuffled HR
    assert teacher.macs - student.macs == _conv_macs(48, 8, h, w)
    rrdb = measure(Variant(dict(RRDB_TINY)), LR)
    assert rrdb.macs == _rrdb_macs(8, 1, 4, h, w)


@pytest.mark.parametrize('conv, size, expected', [
    (nn.Conv2d(3, 8, 3, padding=1), (5, 7), 8 * 5 * 7 * 3 * 3 * 3),  # C_out * H_out * W_out * C_in * k * k
    (nn.Conv2d(4, 6, 3, stride=2, groups=2), (9, 11), 6 * 4 * 5 * 2 * 3 * 3),  # C_in / groups, strided output
    (nn.Conv2d(2, 5, (1, 3), bias=False), (4, 6), 5 * 4 * 4 * 2 * 1 * 3),
])
def test_conv_macs_hand_formula(conv, size, expected):
    assert count_macs(conv, (torch.rand(1, conv.in_channels, *size), )) == expected
    assert count_macs(conv.to('meta'), (torch.empty(1, conv.in_channels, *size, device='meta'), )) == expected


@pytest.mark.parametrize('size, params, gmacs', [
    (dict(n_feats=64, n_blocks=53, n_encoder_res=9), 5_795_099, 228.64),  # KDSR_S-M
    (dict(n_feats=128, n_blocks=42, n_encoder_res=6), 18_846_107, 762.30),  # KDSR_S-GAN
])
def test_kdsr_students_match_reference_figures(size, params, gmacs):
    row = measure(Variant(dict(type='KDSRStudent', **size, scale=4)), (180, 320))  # meta device: no compute
    assert row.params == params and row.trainable == params - 24
    assert round(row.macs / 1e9, 2) == gmacs


def test_latency_and_memory_columns(options_dir, tmp_path):
    threads = torch.get_num_threads()
    try:
        text = _run(options_dir, tmp_path, '--device', 'cpu', '--repeats', '2', '--scale', '0', '--threads', '1')
    finally:
        torch.set_num_threads(threads)
    assert '2 runs after 1 warm-up' in text and 'wall: the median' in text and 'Networks at x' not in text
    assert 'CPU: the smallest process CPU time (all threads) of the 2 runs' in text
    assert 'torch.get_num_threads() = 1' in text
    header = next(line for line in text.splitlines() if line.startswith('| #'))
    assert [c.strip() for c in header.strip('|').split('|')][6:] == [
        f'wall (ms) @ {LR[0]}x{LR[1]}', f'CPU (ms) @ {LR[0]}x{LR[1]}', 'peak memory (MiB)']
    rows = _table(text)
    assert {row[1] for row in rows} == {'a', 'a (network_teacher), b', 'c (network_g, network_reference)', 'd'}
    for row in rows:
        assert len(row) == 9 and float(row[6]) > 0 and float(row[7]) > 0
        assert row[8] == report.UNAVAILABLE or float(row[8]) >= 0


def test_cpu_time_is_process_time(monkeypatch):
    """The CPU column is the smallest process-CPU interval of the timed runs, the wall column the median."""
    clock = {'cpu': 0.0, 'wall': 0.0}
    steps = iter([(1.0, 3.0), (0.5, 5.0), (0.25, 4.0), (0.75, 9.0)])  # (cpu, wall) of warm-up + 3 runs

    class Net(nn.Module):
        def forward(self, x):
            cpu, wall = next(steps)
            clock['cpu'] += cpu
            clock['wall'] += wall
            return x

    monkeypatch.setattr(measures, 'build_network', lambda opt, device: Net())
    monkeypatch.setattr(measures, 'example_inputs', lambda net, opt, size, device: (torch.zeros(1),))
    monkeypatch.setattr(measures.time, 'process_time', lambda: clock['cpu'])
    monkeypatch.setattr(measures.time, 'perf_counter', lambda: clock['wall'])
    latency, _ = measures.measure_latency({'type': 'Net'}, LR, 'cpu', repeats=3, warmup=1)
    assert latency.cpu_s == 0.25 and latency.wall_s == 5.0


def test_sections_are_those_of_the_shipped_option_files():
    """Every generator section of a shipped option file is one the report reads (discriminators are not)."""
    from kdsr_pdd.resources import options_dir
    sections = set()
    for path in options_dir().glob('**/*.yml'):
        sections |= {k for k in yaml.safe_load(path.read_text(encoding='utf-8')) if k.startswith('network_')}
    assert {'network_g', 'network_teacher', 'network_reference'} <= sections
    assert sections - {'network_d'} == set(report.SECTIONS)


def _one_block(mib, pins):
    return [torch.ones(mib * 2**18)]  # float32, touched


def _small_blocks(mib, pins):
    blocks = []
    for _ in range(16 * mib):
        blocks.append(torch.ones(2**14))  # 64 KiB from malloc's heap
        pins.append(torch.ones(4))  # kept: the heap cannot shrink from the top once the blocks are freed
    return blocks


@pytest.mark.skipif(not os.access('/proc/self/clear_refs', os.W_OK), reason='needs Linux /proc/self/clear_refs')
@pytest.mark.parametrize('allocate', [_one_block, _small_blocks])
def test_cpu_peak_memory_counts_an_allocation(allocate):
    pins = []
    # later measurements must hide neither behind the earlier high-water mark nor in freed pages malloc kept
    for mib in (32, 16, 16):
        with measures.CPUPeakMemory() as memory:
            blocks = allocate(mib, pins)
            del blocks
        assert (mib - 2) * 2**20 <= memory.peak < (mib + 8) * 2**20  # kernel RSS counters lag by a few pages


@pytest.mark.parametrize('section, message', [
    ({'type': 'NoSuchNet'}, "network_g: 'NoSuchNet' is not a registered arch"),
    ({'type': 'KDSRStudent', 'n_feat': 8}, 'network_g: bad arguments for KDSRStudent'),
    ({'n_feats': 8}, 'network_g: expected a mapping with a type'),
])
def test_bad_sections_name_file_and_section(tmp_path, capsys, section, message):
    _write(tmp_path / 'bad.yml', {'network_g': section})
    with pytest.raises(SystemExit) as exc:
        report.main(['--options-glob', str(tmp_path / '*.yml'), '--no-latency'])
    assert str(tmp_path / 'bad.yml') in str(exc.value) and message in str(exc.value)


def test_no_matching_files_or_networks(tmp_path):
    with pytest.raises(SystemExit, match='matches no file'):
        report.main(['--options-glob', str(tmp_path / '*.yml'), '--no-latency'])
    _write(tmp_path / 'x2.yml', {'network_g': dict(type='KDSRStudent', **KDSR_TINY, scale=2)})
    with pytest.raises(SystemExit, match='no network section with scale 4'):
        report.main(['--options-glob', str(tmp_path / '*.yml'), '--no-latency'])
