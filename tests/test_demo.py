"""The README's main job, `kdsr-pdd demo` (`make demo`), end to end with a few iterations per stage."""
import os
import subprocess
import sys

import cv2


def test_demo_runs_every_stage_and_writes_the_report(tmp_path):
    env = dict(os.environ, TORCH_HOME=str(tmp_path / 'torch_home'), OMP_NUM_THREADS='1')
    env.pop('KDSR_PDD_VGG19', None)
    out = subprocess.run([sys.executable, '-m', 'kdsr_pdd', 'demo', '--workdir', str(tmp_path), '--iters', '8',
                          '--threads', '1'],
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert 'random-weight VGG19' in out.stdout  # no weights in this TORCH_HOME: announced stand-in
    for name in ('demo_kdsr_teacher_x4', 'demo_kdsr_student_x4', 'demo_pdd_ema_x4plus'):
        assert (tmp_path / 'experiments' / name / 'models' / 'net_g_latest.pth').is_file(), name
    pdd_log = next((tmp_path / 'experiments' / 'demo_pdd_ema_x4plus').glob('train_*.log')).read_text()
    assert 'l_inter' in pdd_log and 'l_intra' in pdd_log  # the distillation ran at iteration 8
    report = tmp_path / 'results' / 'demo_report'
    tables = {p.name for p in report.iterdir()}
    assert {'README.md', 'models.md', 'kdsr_gaussian8.md', 'kdsr_gaussian8.csv', 'pdd_target_domain.md',
            'kdsr_student_idr_pca.png', 'training_curves.png', 'pdd_coffee_side_by_side.png'} <= tables
    assert '| KDSR student |' in (report / 'kdsr_gaussian8.md').read_text()
    readme = (report / 'README.md').read_text()
    assert '| x4plus after PDD-EMA |' in readme and '| Real-ESRGAN x4plus (generalist) |' in readme
    assert '- threads: 1' in readme and 'torch 2.' in readme  # the figures say what they depend on
    assert (report / 'steps').is_dir() and len(list((report / 'steps').glob('*.log'))) >= 10
    for figure_name in ('kdsr_student_idr_pca.png', 'training_curves.png', 'pdd_coffee_side_by_side.png'):
        figure = cv2.imread(str(report / figure_name))
        assert figure is not None and figure.std() > 0, figure_name
