"""Reliability of ``kdsr-pdd train`` (kdsr_pdd.training, kdsr_pdd.resume) through the entry point, on CPU.

Tiny versions of the demo option files (a KDSR classic student, the Real-ESRGAN-degradation generalist with
its training-pair queue, PDD-EMA) are trained for T = 2 K iterations uninterrupted (the references) and
stopped / interrupted / killed, then resumed with ``--auto_resume``: every tensor of the final checkpoints
must be equal, bit for bit. Epochs have 3 iterations, so K = 4 stops mid-epoch; validation runs every 3.
"""
import copy
import glob
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO, load_options, write_options

from kdsr_pdd import resume, training
from kdsr_pdd.checkpoints import read_state_dict
from kdsr_pdd.resume import read_training_state

K, T = 4, 8
VAL_FREQ = 3


# ----------------------------------------------------------------------------------------------- data, options
def _write_images(folder, count, size, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):  # smooth random images
        small = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f'{i:03d}.png'), cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC))
    return folder


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """Six 48 x 48 HR images (3 iterations per epoch at batch 2), real LR, one paired validation image, the
    random-VGG19 stand-in, a KDSR teacher and a generalist checkpoint (random weights)."""
    from basicsr.archs import build_network

    from kdsr_arch.archs import KDSRTeacher
    from kdsr_pdd.weights import random_vgg19_features_file

    root = tmp_path_factory.mktemp('reliability')
    hr = _write_images(root / 'hr', 6, 48, 0)
    (root / 'meta_info.txt').write_text(''.join(f'{p.name}\n' for p in sorted(hr.iterdir())))
    _write_images(root / 'real', 3, 16, 1)
    val_hr = _write_images(root / 'val_hr', 1, 32, 2)
    (root / 'val_lr').mkdir()
    cv2.imwrite(str(root / 'val_lr' / '000.png'),
                cv2.resize(cv2.imread(str(val_hr / '000.png')), (8, 8), interpolation=cv2.INTER_AREA))
    torch.manual_seed(0)
    torch.save({'params': KDSRTeacher(**KDSR_NET).state_dict()}, root / 'teacher.pth')
    torch.save({'params_ema': build_network(RRDB).state_dict()}, root / 'generalist.pth')
    random_vgg19_features_file(root / 'vgg19.pth')
    return root


KDSR_NET = dict(n_feats=8, n_blocks=2, n_encoder_res=1, scale=4)
RRDB = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 4, 'num_feat': 4, 'num_block': 1,
        'num_grow_ch': 4}


def _common(opt, name, data, workers):
    opt.update(name=name, num_gpu=0)
    opt['datasets']['train'].update(dataroot_gt=str(data / 'hr'), gt_size=32, batch_size_per_gpu=2,
                                    num_worker_per_gpu=workers, dataset_enlarge_ratio=1)
    opt['datasets']['val'].update(dataroot_gt=str(data / 'val_hr'), dataroot_lq=str(data / 'val_lr'))
    opt['train'].update(total_iter=T, scheduler={'type': 'MultiStepLR', 'milestones': [3], 'gamma': 0.5})
    opt['val'].update(val_freq=VAL_FREQ, save_img=False)
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2)
    return opt


def kdsr_student(data):
    """options/demo/kdsr_student_x4.yml, tiny; one data-loader worker; with an EMA."""
    opt = _common(load_options('options/demo/kdsr_student_x4.yml'), 'kdsr_student', data, workers=1)
    opt['network_g'].update(KDSR_NET)
    opt['network_teacher'].update(KDSR_NET)
    opt['path']['pretrain_network_teacher'] = str(data / 'teacher.pth')
    opt['train']['ema_decay'] = 0.9
    return opt


def generalist(data):
    """options/demo/pdd_generalist_x4.yml (RealESRNetModel_basicsr, RealESRGANCropDataset), tiny; no worker."""
    opt = _common(load_options('options/demo/pdd_generalist_x4.yml'), 'generalist', data, workers=0)
    opt['gt_size'], opt['queue_size'] = 32, 4
    opt['datasets']['train'].update(crop_pad_size=80, meta_info=str(data / 'meta_info.txt'))
    opt['network_g'] = dict(RRDB)
    return opt


def pdd_ema(data):
    """options/demo/pdd_ema_x4.yml, tiny; one data-loader worker; VGG19 stand-in through KDSR_PDD_VGG19."""
    opt = _common(load_options('options/demo/pdd_ema_x4.yml'), 'pdd_ema', data, workers=1)
    opt['datasets']['train']['dataroot_lq_real'] = str(data / 'real')
    opt['network_g'] = dict(RRDB)
    opt['network_d']['num_feat'] = 8
    opt['path']['pretrain_network_g'] = str(data / 'generalist.pth')
    opt['train'].update(net_d_init_iters=1, distill_warmup_iters=1)
    return opt


MODELS = {'kdsr_student': kdsr_student, 'generalist': generalist, 'pdd_ema': pdd_ema}


# ----------------------------------------------------------------------------------------------- running
def _env(data, extra_path=None):
    env = dict(os.environ, OMP_NUM_THREADS='1', KDSR_PDD_VGG19=str(data / 'vgg19.pth'))
    env.pop('CUDA_VISIBLE_DEVICES', None)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (extra_path, REPO, os.environ.get('PYTHONPATH')) if p)
    return env


def train(cwd, data, *args, extra_path=None, env=None):
    """``python -m kdsr_pdd train *args`` in ``cwd``; the CompletedProcess (any exit status)."""
    return subprocess.run([sys.executable, '-m', 'kdsr_pdd', 'train', *args], cwd=cwd, capture_output=True, text=True,
                          env={**_env(data, extra_path), **(env or {})}, timeout=600)


def train_ok(cwd, data, *args):
    result = train(cwd, data, *args)
    assert result.returncode == 0, f'{args}:\n{result.stderr[-4000:]}'
    return result


def start_train(cwd, data, *args):
    """The same as a background process in its own process group (the run and its data-loader workers)."""
    return subprocess.Popen([sys.executable, '-m', 'kdsr_pdd', 'train', *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(data), start_new_session=True)


def wait_for(condition, process, what, timeout=300):
    start = time.time()
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f'the run ended (status {process.returncode}) before {what}:\n'
                                 f'{process.stderr.read()[-3000:]}')
        assert time.time() - start < timeout, f'timed out waiting for {what}'
        time.sleep(0.02)


def logged_iteration(experiment, iteration):
    def seen():
        return any(f'iter:{iteration:8,d},' in open(p).read() for p in glob.glob(str(experiment / 'train_*.log')))
    return seen


def experiment(cwd, name):
    return Path(cwd) / 'experiments' / name


def last_line(result):
    return result.stderr.strip().splitlines()[-1]


def final_weights(exp):
    """{file: {key: {tensor name: tensor}}} of the final checkpoints (net_*_latest.pth) of experiment ``exp``."""
    files = sorted(glob.glob(str(exp / 'models' / 'net_*_latest.pth')))
    assert files, f'no final checkpoint in {exp}'
    return {os.path.basename(f): torch.load(f, map_location='cpu', weights_only=True) for f in files}


def max_diffs(a, b):
    """``{'net_g_latest.pth:params': max |a - b|, ...}`` over every tensor; the key sets must be equal."""
    assert a.keys() == b.keys()
    diffs = {}
    for name in a:
        assert a[name].keys() == b[name].keys(), name
        for key in a[name]:
            assert a[name][key].keys() == b[name][key].keys(), (name, key)
            diffs[f'{name}:{key}'] = max((a[name][key][k].double() - b[name][key][k].double()).abs().max().item()
                                         for k in a[name][key])
    return diffs


def assert_same_weights(exp, reference_exp):
    diffs = max_diffs(final_weights(exp), final_weights(reference_exp))
    print(f'{exp.name}: max diff vs uninterrupted: {diffs}')
    assert set(diffs.values()) == {0.0}, diffs
    return diffs


@pytest.fixture(scope='module')
def runs(tmp_path_factory, data):
    """Per model, on first use: its option file and two finished runs in their own folders, ``reference``
    (T iterations, uninterrupted) and ``stopped`` (K iterations; not to be modified, copy it)."""
    cache = {}

    def get(model):
        if model not in cache:
            root = tmp_path_factory.mktemp(model)
            opt_path = write_options(MODELS[model](data), root / f'{model}.yml')
            for kind, total in (('reference', T), ('stopped', K)):
                (root / kind).mkdir()
                train_ok(root / kind, data, '-opt', opt_path, '--force_yml', f'train:total_iter={total}')
            cache[model] = opt_path, experiment(root / 'reference', model), experiment(root / 'stopped', model)
        return cache[model]

    return get


def copy_of(exp, tmp_path):
    """A copy of experiment folder ``exp`` under ``tmp_path`` (as ``experiments/<name>``); the new cwd."""
    shutil.copytree(exp, experiment(tmp_path, exp.name))
    return tmp_path


# ----------------------------------------------------------------------------------------------- 1. faithful resume
@pytest.mark.parametrize('model', list(MODELS))
def test_resume_after_k_iterations_matches_the_uninterrupted_run_bit_for_bit(model, runs, data, tmp_path):
    opt_path, reference, stopped = runs(model)
    cwd = copy_of(stopped, tmp_path)
    result = train_ok(cwd, data, '-opt', opt_path, '--auto_resume')
    assert f'Resuming training from epoch: 1, iter: {K}.' in result.stderr
    assert 'Resumed at batch 1 of epoch 1 with the saved random states.' in result.stderr
    assert_same_weights(experiment(cwd, model), reference)


def test_sigkill_then_auto_resume_matches_the_uninterrupted_run(runs, data, tmp_path):
    opt_path, reference, _ = runs('generalist')
    run = start_train(tmp_path, data, '-opt', opt_path, '--force_yml', 'train:total_iter=1000')
    exp = experiment(tmp_path, 'generalist')
    wait_for(lambda: (exp / 'training_states' / '2.state').is_file(), run, 'the state of iteration 2')
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate(timeout=60)
    assert run.returncode == -signal.SIGKILL
    newest = max(int(p.stem) for p in (exp / 'training_states').glob('*.state'))
    assert newest < T, f'killed too late (state {newest}): the comparison needs a state before {T}'
    train_ok(tmp_path, data, '-opt', opt_path, '--auto_resume')
    assert_same_weights(exp, reference)


class _Draws(torch.utils.data.Dataset):
    """Item i: its index and a python ``random`` draw (a dataset's own randomness)."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return {'i': torch.tensor(i), 'r': torch.tensor(random.random())}


def _prefetcher(kind, loader, run):
    return training.ResumablePrefetcher(loader, run) if kind == 'cpu' else training.ResumableCUDAPrefetcher(
        loader, {'num_gpu': 0}, run)


@pytest.mark.parametrize('kind, workers', [('cpu', 0), ('cuda', 1)])
def test_resumed_epoch_continues_at_the_saved_batch(kind, workers, monkeypatch):
    """In-process: the prefetchers skip the batches trained before the save and restore the random states.
    ``cuda`` (BasicSR's CUDAPrefetcher, streams faked on CPU) loads a batch ahead: exact with a worker."""
    import contextlib

    if kind == 'cuda':
        stream = type('Stream', (), {'wait_stream': lambda self, other: None})
        monkeypatch.setattr(torch.cuda, 'Stream', stream)
        monkeypatch.setattr(torch.cuda, 'current_stream', stream)
        monkeypatch.setattr(torch.cuda, 'stream', lambda s: contextlib.nullcontext())
    loader = torch.utils.data.DataLoader(_Draws(), batch_size=2, shuffle=True, num_workers=workers)

    def new_run(state=None):
        run = training.TrainingRun('')
        run.opt, run.epoch, run.resume_state = {'rank': 0}, -1, state
        run.pending = state and state['data']
        return run

    torch.manual_seed(0)
    run = new_run()
    prefetcher = _prefetcher(kind, loader, run)
    prefetcher.reset()
    prefetcher.next(), prefetcher.next()  # two iterations trained, then a save
    state = {'epoch': 0, 'iter': 2, 'rng': resume.rng_states(), 'data': run.position()}
    expected = prefetcher.next()

    torch.manual_seed(1), random.seed(1)  # what a new process would have
    run = new_run(state)
    prefetcher = _prefetcher(kind, loader, run)
    prefetcher.reset()
    batch = prefetcher.next()
    assert run.batches == 3 and run.epoch == 0
    assert torch.equal(batch['i'], expected['i']) and torch.equal(batch['r'], expected['r'])


def test_models_keep_their_queue_and_hook_state_across_a_resume(tmp_path):
    """The Real-ESRGAN training-pair queue and a model's ``extra_training_state`` hook go into the state."""
    from basicsr.models.sr_model import SRModel

    class Counting(SRModel):
        def extra_training_state(self):
            return {'seen': self.seen}

        def load_extra_training_state(self, extra):
            self.seen = extra['seen']

    opt = {'name': 'hook', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0, 'dist': False, 'rank': 0,
           'world_size': 1, 'is_train': True, 'manual_seed': 3,
           'network_g': {'type': 'MSRResNet', 'num_feat': 4, 'num_block': 1, 'upscale': 2},
           'path': {'pretrain_network_g': None, 'strict_load_g': True, 'models': str(tmp_path),
                    'training_states': str(tmp_path), 'resume_state': str(tmp_path / '3.state')},
           'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5},
                     'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}}
    model = Counting(copy.deepcopy(opt))  # BasicSR pops entries of opt
    model.seen, model.queue_lr, model.queue_gt, model.queue_ptr = 5, torch.rand(2, 3, 4, 4), torch.rand(2, 3, 8, 8), 2
    model.save_training_state(0, 3)
    state = read_training_state(str(tmp_path / '3.state'))
    assert state['manual_seed'] == 3 and set(state['rng']) == {'python', 'numpy', 'torch'}

    fresh = Counting(copy.deepcopy(opt))
    fresh.resume_training(state)
    assert fresh.seen == 5 and fresh.queue_ptr == 2
    assert torch.equal(fresh.queue_lr, model.queue_lr) and torch.equal(fresh.queue_gt, model.queue_gt)
    state['optimizers'].append(state['optimizers'][0])
    with pytest.raises(resume.ResumeError, match='3.state: the state holds 2 optimizers, the model has 1: the '
                                                 'options changed since it was saved'):
        fresh.resume_training(state)


# ----------------------------------------------------------------------------------------------- 2. interruptions
def interrupt(cwd, data, opt_path, overrides, name, after_iteration, signum):
    """Start a run, send ``signum`` once iteration ``after_iteration`` is logged; its stderr and saved iteration.
    SIGINT goes to the process group (Ctrl-C: the data-loader worker gets it too), SIGTERM to the run."""
    run = start_train(cwd, data, '-opt', opt_path, '--auto_resume', '--force_yml', *overrides)
    wait_for(logged_iteration(experiment(cwd, name), after_iteration), run, f'iteration {after_iteration}')
    (os.killpg if signum == signal.SIGINT else os.kill)(run.pid, signum)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 128 + signum, stderr[-3000:]
    assert 'Traceback' not in stderr
    newest = max(int(p.stem) for p in (experiment(cwd, name) / 'training_states').glob('*.state'))
    assert after_iteration <= newest < T, f'stopped at {newest}: the comparison needs a state before {T}'
    return stderr, newest


def test_sigint_and_sigterm_save_a_resumable_state_and_exit_without_traceback(runs, data, tmp_path):
    """PDD-EMA (G and D): interrupted by SIGINT, resumed and interrupted by SIGTERM, resumed to the end."""
    opt_path, reference, _ = runs('pdd_ema')
    overrides = ['train:total_iter=1000', 'logger:save_checkpoint_freq=1000']
    stopped = 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        stderr, n = interrupt(tmp_path, data, opt_path, overrides, 'pdd_ema', stopped + 2, signum)
        assert stderr.strip().splitlines()[-1] == (
            f'interrupted by {signal.Signals(signum).name} after iteration {n}; saved: iteration {n} '
            f'(experiments/pdd_ema/models/net_g_{n}.pth, experiments/pdd_ema/models/net_d_{n}.pth, '
            f'experiments/pdd_ema/training_states/{n}.state); resume with: kdsr-pdd train -opt {opt_path} '
            f'--auto_resume --force_yml {" ".join(overrides)}.')
        stopped = n
    result = train_ok(tmp_path, data, '-opt', opt_path, '--auto_resume')  # the file's total_iter: T
    assert f'iter: {stopped}.' in result.stderr
    assert_same_weights(experiment(tmp_path, 'pdd_ema'), reference)


def test_second_signal_or_one_before_training_stops_at_once(tmp_path):
    run = training.TrainingRun('kdsr-pdd train -opt x.yml --auto_resume')
    with pytest.raises(training.TrainingStopped, match='stopped at once by SIGTERM before the first iteration; '
                                                       'nothing was saved') as stop:
        run.on_signal(signal.SIGTERM, None)
    assert stop.value.status == 143

    run = training.TrainingRun('kdsr-pdd train -opt x.yml --auto_resume')
    run.opt = {'path': {'training_states': str(tmp_path), 'models': str(tmp_path)}, 'network_g': {}}
    run.in_loop, run.trained_iter = True, 6
    run.on_signal(signal.SIGINT, None)  # the first one only asks to stop after the iteration
    assert run.signal == signal.SIGINT
    with pytest.raises(training.TrainingStopped, match='stopped at once by SIGINT during iteration 7; last complete '
                                                       r'checkpoint: none \(no complete checkpoint was written\)'):
        run.on_signal(signal.SIGINT, None)
    run.stopping = True  # a second signal while the interrupted run saves: the save is abandoned (atomic)
    with pytest.raises(training.TrainingStopped, match='stopped at once by SIGTERM while saving iteration 6; '):
        run.on_signal(signal.SIGTERM, None)

    run = training.TrainingRun('')
    run.pid, run.in_loop = -1, False  # in a forked data-loader worker the handler does nothing
    run.on_signal(signal.SIGINT, None)
    assert run.signal is None


# ----------------------------------------------------------------------------------------------- 3. --auto_resume
def test_auto_resume_skips_stray_names_unreadable_states_and_removes_temporaries(runs, data, tmp_path):
    opt_path, reference, stopped = runs('generalist')
    cwd = copy_of(stopped, tmp_path)
    exp = experiment(cwd, 'generalist')
    states, models = exp / 'training_states', exp / 'models'
    good = (states / f'{K}.state').read_bytes()
    (states / '20_backup.state').write_bytes(good)  # BasicSR 1.4.2: ValueError (float('20_backup'))
    (states / 'latest.state').write_bytes(good)
    (states / '6.state').write_bytes(good[:len(good) // 2])  # truncated, its networks exist
    shutil.copy(models / f'net_g_{K}.pth', models / 'net_g_6.pth')
    (states / '7.state').write_bytes(good)  # readable, but net_g_7.pth is missing
    for folder in (states, models):
        (folder / '.tmp_x1y2net_g_8.pth').write_bytes(b'partial')

    result = train_ok(cwd, data, '-opt', opt_path, '--auto_resume')
    warnings = [line for line in result.stderr.splitlines() if line.startswith('warning: ')]
    assert warnings[:3] == [
        'warning: removed 1 temporary file(s) of an interrupted save from experiments/generalist/models.',
        'warning: removed 1 temporary file(s) of an interrupted save from experiments/generalist/training_states.',
        'warning: experiments/generalist/training_states/7.state: skipped, its network checkpoint '
        'experiments/generalist/models/net_g_7.pth is missing; trying an earlier state.'], warnings
    assert len(warnings) == 4 and warnings[3].startswith(
        'warning: experiments/generalist/training_states/6.state: cannot be read as a training state (truncated or '
        'not a state: ') and warnings[3].endswith('; skipped, trying an earlier state.'), warnings
    assert f'Resuming training from epoch: 1, iter: {K}.' in result.stderr
    assert not list(exp.glob('*/.tmp_*'))
    assert (states / '20_backup.state').is_file() and (states / 'latest.state').is_file()  # ignored, kept
    assert_same_weights(exp, reference)


# ----------------------------------------------------------------------------------------------- 4. non-finite
def test_diverging_run_stops_with_one_line_and_writes_no_nan_checkpoint(runs, data, tmp_path):
    opt_path, _, _ = runs('generalist')
    result = train(tmp_path, data, '-opt', opt_path, '--force_yml', 'train:optim_g:lr=1000000.0',
                   'logger:save_checkpoint_freq=1')
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    exp = experiment(tmp_path, 'generalist')
    assert last_line(result) == (
        'error: iteration 2: non-finite l_pix = nan; non-finite gradients of optimizer_g: training stopped, nothing '
        'of this iteration was saved; last good checkpoint: iteration 1 (experiments/generalist/models/net_g_1.pth, '
        'experiments/generalist/training_states/1.state).')
    assert sorted(p.name for p in (exp / 'models').iterdir()) == ['net_g_1.pth']
    assert sorted(p.name for p in (exp / 'training_states').iterdir()) == ['1.state']
    for key in ('params', 'params_ema'):
        read_state_dict(str(exp / 'models' / 'net_g_1.pth'), key)  # refuses non-finite weights
    log = ''.join(p.read_text() for p in exp.glob('train_*.log'))
    assert 'error: iteration 2: non-finite l_pix' in log

    from kdsr_pdd.commands import main
    status = main(['infer', str(data / 'val_lr'), '-o', str(tmp_path / 'sr'), '-m', str(exp / 'models' / 'net_g_1.pth'),
                   '--opt', opt_path, '--device', 'cpu'])
    assert status == 0 and cv2.imread(str(tmp_path / 'sr' / '000_out.png')).shape == (32, 32, 3)


def test_skipped_non_finite_steps_are_logged_then_training_stops(tmp_path):
    """``train.max_nonfinite_steps`` (in-process, any model: the guard wraps what the loop calls)."""
    from basicsr.models import build_model

    opt = {'name': 'nan', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0, 'dist': False, 'rank': 0,
           'world_size': 1, 'is_train': True,
           'network_g': {'type': 'MSRResNet', 'num_feat': 4, 'num_block': 1, 'upscale': 2},
           'path': {'pretrain_network_g': None, 'strict_load_g': True, 'models': str(tmp_path),
                    'training_states': str(tmp_path)},
           'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5},
                     'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}, 'max_nonfinite_steps': 1}}
    run = training.TrainingRun('kdsr-pdd train -opt nan.yml --auto_resume')
    model = run.build_model(build_model, opt)
    before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    lq = torch.rand(1, 3, 8, 8)
    lq[0, 0, 0, 0] = float('nan')
    model.feed_data({'lq': lq, 'gt': torch.rand(1, 3, 16, 16)})
    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger('basicsr').addHandler(handler)  # BasicSR's logger does not propagate (no caplog)
    try:
        model.optimize_parameters(1)  # skipped, logged
    finally:
        logging.getLogger('basicsr').removeHandler(handler)
    assert logged[-1] == ('iteration 1: non-finite l_pix = nan; non-finite gradients of optimizer_g: update of '
                          'optimizer_g skipped (1 of train.max_nonfinite_steps = 1).')
    for k, v in model.net_g.state_dict().items():
        assert torch.equal(v, before[k]), k  # the update was not applied
    with pytest.raises(training.TrainingStopped, match='error: iteration 2: non-finite l_pix = nan.*last good '
                                                       r'checkpoint: none') as stop:
        model.optimize_parameters(2)
    assert stop.value.status == 1


# ----------------------------------------------------------------------------------------------- 5. full disk
SITECUSTOMIZE = '''"""Test helper: the disk is full after KDSR_TEST_ENOSPC_AFTER calls of torch.save."""
import errno
import os

import torch

_real_save, _calls = torch.save, [0]


def _save(obj, f, *args, **kwargs):
    _calls[0] += 1
    if _calls[0] > int(os.environ['KDSR_TEST_ENOSPC_AFTER']):
        f.write(b'partial')
        raise OSError(errno.ENOSPC, 'No space left on device')
    return _real_save(obj, f, *args, **kwargs)


torch.save = _save
'''


def test_full_disk_during_a_state_write_ends_with_one_line_and_keeps_the_previous_files(runs, data, tmp_path):
    opt_path, _, _ = runs('generalist')
    site = tmp_path / 'site'
    site.mkdir()
    (site / 'sitecustomize.py').write_text(SITECUSTOMIZE)
    # saves: net_g_2.pth, 2.state, net_g_4.pth, then 4.state fails
    result = train(tmp_path, data, '-opt', opt_path, extra_path=str(site), env={'KDSR_TEST_ENOSPC_AFTER': '3'})
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    exp = experiment(tmp_path, 'generalist')
    assert last_line(result) == (
        f'error: no space left on the device to write {exp}/training_states/4.state (nothing was written); free some '
        'space and resume; last complete checkpoint: iteration 2 (experiments/generalist/models/net_g_2.pth, '
        f'experiments/generalist/training_states/2.state); resume with: kdsr-pdd train -opt {opt_path} '
        '--auto_resume.')
    assert sorted(p.name for p in (exp / 'training_states').iterdir()) == ['2.state']
    assert sorted(p.name for p in (exp / 'models').iterdir()) == ['net_g_2.pth', 'net_g_4.pth']
    assert read_training_state(str(exp / 'training_states' / '2.state'))['iter'] == 2
    read_state_dict(str(exp / 'models' / 'net_g_2.pth'), 'params_ema')


# ----------------------------------------------------------------------------------------------- 6. progress
def test_eta_is_right_at_the_last_iteration(runs, monkeypatch):
    """BasicSR's formula shows ``-1 day, 23:59:59`` at the last iteration once an iteration takes a second."""
    from basicsr.utils import MessageLogger

    clock = [0.0]
    monkeypatch.setattr(time, 'time', lambda: clock[0])
    opt = {'name': 'eta', 'logger': {'print_freq': 1, 'use_tb_logger': False}, 'train': {'total_iter': 10}}

    def lines(logger_class):
        logger = logger_class(opt, 0)
        logged = []
        logger.logger = type('Capture', (), {'info': staticmethod(logged.append)})
        for it in range(1, 11):  # each iteration takes 2 s
            clock[0] = 2.0 * it
            if it == 1:
                logger.reset_start_time()
            logger({'epoch': 0, 'iter': it, 'lrs': [1e-3], 'time': 2.0, 'data_time': 0.1, 'l_pix': 0.5})
        return logged

    assert 'eta: -1 day, 23:59:59' in lines(MessageLogger)[-1]
    progress = lines(training.ProgressLogger)
    assert progress[-1].startswith('[eta..][epoch:  0, iter:      10, lr:(1.000e-03,)] [eta: 0:00:00, ')
    assert '[eta: 0:00:18, ' in progress[0]  # 9 iterations left at 2 s (the loop's mean iteration time)
    assert '[eta: 0:00:10, ' in progress[4]  # 5 left at the mean time of iterations 2..5

    _, reference, _ = runs('generalist')  # and in a real run's log
    log = ''.join(p.read_text() for p in reference.glob('train_*.log'))
    assert f'iter:{T:8,d}, lr:(2.500e-04,)] [eta: 0:00:00, ' in log
