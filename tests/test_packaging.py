"""The wheel: option files and schemas inside, console scripts, and commands that work from another folder in a
fresh virtual environment (dependencies taken from the test environment, the package from the wheel)."""
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest
from conftest import REPO


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    """The wheel built from a clean copy of the sources (setuptools' build/ folder keeps stale files)."""
    source, out = tmp_path_factory.mktemp('source') / 'kdsr-pdd', tmp_path_factory.mktemp('wheel')
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns('.venv', '.git', 'build', 'dist', '*.egg-info',
                                                                'experiments', 'results', 'datasets', 'tb_logger',
                                                                '__pycache__', '.pytest_cache'))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(out),
                    str(source)], check=True, capture_output=True, text=True, timeout=600)
    (path, ) = out.glob('kdsr_pdd-*.whl')
    return path


def test_wheel_holds_the_packages_option_files_and_console_scripts(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ('kdsr_pdd/commands/', 'kdsr_arch/', 'pdd_model/'):
        assert any(n.startswith(folder) and n.endswith('.py') for n in names), folder
    options = {n for n in names if n.startswith('kdsr_pdd/options/')}
    options_root = os.path.join(REPO, 'options')
    shipped = {'kdsr_pdd/options/' + os.path.relpath(os.path.join(root, f), options_root).replace(os.sep, '/')
               for root, _, files in os.walk(options_root) for f in files}
    assert shipped == options and len(options) > 40
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith('entry_points.txt'))).decode()
    from kdsr_pdd.commands import COMMANDS
    assert 'kdsr-pdd = kdsr_pdd.commands:main' in entry_points
    for command in COMMANDS:  # and one script per command
        assert f'kdsr-pdd-{command} = kdsr_pdd.commands.{command}:main' in entry_points
    assert not any(n.startswith(('tests/', 'benchmarks/')) for n in names)


@pytest.fixture(scope='module')
def fresh_venv(tmp_path_factory, wheel):
    """A new venv with the wheel installed in it; the test environment's site-packages serve its dependencies."""
    venv = tmp_path_factory.mktemp('venv')
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True, timeout=120)
    python = venv / 'bin' / 'python'
    site = subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, 'test_dependencies.pth'), 'w', encoding='utf-8') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    subprocess.run([sys.executable, '-m', 'pip', '--python', str(python), 'install', '--no-deps', '-q', str(wheel)],
                   check=True, capture_output=True, text=True, timeout=600)
    return venv, site


def test_installed_commands_work_from_another_folder(fresh_venv, tmp_path):
    venv, site = fresh_venv
    env = dict(os.environ, OMP_NUM_THREADS='1')
    script = venv / 'bin' / 'kdsr-pdd'

    def run(*args):
        result = subprocess.run([str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout + result.stderr

    assert run('--version').strip().startswith('kdsr-pdd ')
    where = subprocess.run([str(venv / 'bin' / 'python'), '-c',
                            'import kdsr_pdd.resources as r; print(r.options_dir())'],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(site) and os.path.isfile(os.path.join(where, 'demo', 'kdsr_teacher_x4.yml'))
    assert '"KDSRStudentModel options"' in run('schema', 'KDSRStudentModel')
    run('demo', '--build-only')
    assert (tmp_path / 'datasets' / 'demo' / 'train' / 'hr' / 'astronaut.png').is_file()  # built here, not in site
    assert not os.path.exists(os.path.join(site, 'datasets'))
    report = run('report', '--no-latency', '--options-glob', os.path.join(where, 'demo', '*.yml'), '--lr-size', '8x8')
    assert 'KDSRStudent(n_feats=16' in report
