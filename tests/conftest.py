"""Shared fixtures: the embedded demo data, option files in tmp folders, entry-point subprocesses."""
import os
import socket
import subprocess
import sys

import pytest
import torch
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


@pytest.fixture(scope='module')
def one_thread():
    """Tiny tensors: one intra-op thread is fastest and avoids oversubscribing shared CI cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def minimal_sr_opt(tmp_path, name, train=True, **train_extra):
    """In-process options of BasicSR's SRModel with a tiny MSRResNet x2 (as parse_options returns them)."""
    return {
        'name': name, 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0, 'dist': False, 'rank': 0,
        'world_size': 1, 'is_train': train,
        'network_g': {'type': 'MSRResNet', 'num_feat': 4, 'num_block': 1, 'upscale': 2},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'models': str(tmp_path),
                 'training_states': str(tmp_path)},
        'train': {
            'ema_decay': 0,
            'optim_g': {'type': 'Adam', 'lr': 1e-3},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5},
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
            **train_extra,
        },
    }
