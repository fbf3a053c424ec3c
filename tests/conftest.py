"""Shared fixtures: the embedded demo data, option files in tmp folders, entry-point subprocesses."""
import os
import socket
import subprocess
import sys

import pytest
import yaml

import kdsr_pdd.plugin  # noqa: F401  (registers the plugin into BasicSR)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory):
    """The demo data set (kdsr_pdd.demo_data), built once per test session."""
    from kdsr_pdd.demo_data import build_demo_data
    return build_demo_data(str(tmp_path_factory.mktemp('demo') / 'demo'))


def load_options(relative_path):
    with open(os.path.join(REPO, relative_path), encoding='utf-8') as f:
        return yaml.safe_load(f)


def write_options(opt, path):
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_entry(args, cwd, timeout=600, env=None, nproc=None):
    """Run ``python -m <args>`` (or under torchrun with ``nproc`` processes) and return the result."""
    env = dict(os.environ, OMP_NUM_THREADS='1', **(env or {}))
    env.pop('CUDA_VISIBLE_DEVICES', None)
    prefix = [sys.executable]
    if nproc:
        prefix += ['-m', 'torch.distributed.run', f'--nproc_per_node={nproc}', f'--master_port={free_port()}']
    result = subprocess.run(prefix + ['-m'] + list(args), cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f'{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}'
    return result
