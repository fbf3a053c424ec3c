"""``kdsr-pdd selfcheck``: the CPU run of CI (every training scheme in fp32 and bf16, x4plus precisions, the paper
networks), the mends it reports, and its exit status when a check fails."""
import os
import re
import subprocess
import sys

import pytest

from kdsr_pdd import selfcheck
from kdsr_pdd.commands import selfcheck as command


def test_quick_selfcheck_on_cpu_passes_and_reports_every_section(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', TORCH_HOME=str(tmp_path / 'torch_home'))
    env.pop('KDSR_PDD_VGG19', None)
    out = subprocess.run([sys.executable, '-m', 'kdsr_pdd', 'selfcheck', '--device', 'cpu', '--quick', '-o',
                          str(tmp_path / 'selfcheck.md')], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    report = (tmp_path / 'selfcheck.md').read_text()
    for scheme, _ in selfcheck.TRAINING_CASES:
        for precision in ('fp32', 'bf16'):
            row = re.search(rf'^\| {re.escape(scheme)}, {precision} \| ok \| [0-9.]+ \| (.*) \|$', report, re.M)
            assert row and 'l_' in row.group(1), (scheme, precision)
    assert '| VGG19 (perceptual and PDD losses) | missing |' in report  # this TORCH_HOME has none
    assert re.search(r'^\| BasicSR mend: .* \| ok \|', report, re.M) and '| FAIL |' not in report
    for precision in ('fp16', 'bf16'):
        half = re.search(rf'^\| x4plus {precision}, .* \| ok \| ([0-9.]+) \|', report, re.M)
        assert half and float(half.group(1)) >= selfcheck.HALF_MIN_PSNR, precision
    gan = re.search(r'here: (\d+)% of x4plus\'s MACs', report)
    assert gan and 70 <= int(gan.group(1)) <= 80  # the KDSR paper: 75% of Real-ESRGAN's FLOPs
    assert 'All checks passed.' in out.stdout


def test_mends_are_reported_absent_on_plain_basicsr():
    code = ('import json; from kdsr_pdd import compat; import basicsr.train; '
            'print(json.dumps(compat.mends_in_effect()))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    import json
    mends = json.loads(out.stdout.strip().splitlines()[-1])
    assert mends.pop('torchvision functional_tensor alias')  # installed on import of kdsr_pdd
    assert mends and not any(mends.values()), mends


def test_a_failed_check_makes_the_exit_status_1(monkeypatch, capsys):
    monkeypatch.setattr(selfcheck, 'weights', lambda: [selfcheck.Row('VGG19', selfcheck.FAIL, {'value': 'broken'})])
    assert command.main(['--device', 'cpu', '--skip', 'training', 'inference', 'networks']) == 1
    out = capsys.readouterr().out
    assert '| VGG19 | FAIL | broken |' in out and '1 check(s) failed.' in out


@pytest.mark.parametrize('argv, message', [(['--device', 'tpu'], 'not a torch device'),
                                           (['--lr-size', '0x5'], 'lr-size')])
def test_bad_arguments_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        command.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and 'Traceback' not in err
