"""The README's main job, `python -m kdsr_pdd.demo`, end to end with a few iterations per stage."""
import os
import subprocess
import sys

import cv2


def test_demo_runs_every_stage_and_writes_the_report(tmp_path):
    env = dict(os.environ, TORCH_HOME=str(tmp_path / 'torch_home'), OMP_NUM_THREADS='1')
    env.pop('KDSR_PDD_VGG19', None)
    out = subprocess.run([sys.executable, '-m', 'kdsr_pdd', 'demo', '--workdir', str(tmp_path), '--iters', '8'],
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert 'random-weight VGG19' in out.stdout  # no weights in this TORCH_HOME: announced stand-in
    for name in ('demo_kdsr_teacher_x4', 'demo_kdsr_student_x4', 'demo_pdd_generalist_x4', 'demo_pdd_ema_x4'):
        assert (tmp_path / 'experiments' / name / 'models' / 'net_g_latest.pth').is_file(), name
    pdd_log = next((tmp_path / 'experiments' / 'demo_pdd_ema_x4').glob('train_*.log')).read_text()
    assert 'l_inter' in pdd_log and 'l_intra' in pdd_log  # the distillation ran at iteration 8
    report = tmp_path / 'results' / 'demo_report'
    tables = {p.name for p in report.iterdir()}
    assert {'models.md', 'kdsr_gaussian8.md', 'kdsr_gaussian8.csv', 'pdd_target_domain.md',
            'kdsr_student_idr_pca.png'} <= tables
    assert '| KDSR student |' in (report / 'kdsr_gaussian8.md').read_text()
    assert '| PDD-EMA |' in out.stdout and '| generalist |' in out.stdout
    figure = cv2.imread(str(report / 'kdsr_student_idr_pca.png'))
    assert figure is not None and figure.std() > 0
