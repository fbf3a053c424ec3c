"""Training states: everything a run needs to continue exactly where it stopped, written atomically, found
and read on any device.

A state ``training_states/<iter>.state`` holds BasicSR's ``epoch``, ``iter``, ``optimizers`` and
``schedulers``, and:

* ``rng``: the python / numpy / torch (+ CUDA) random states at the save, the ones the next batch is
  drawn with (:func:`rng_states`);
* ``model``: what the model keeps between iterations besides networks, optimizers and schedulers: the
  Real-ESRGAN training-pair queue (``queue_lr``, ``queue_gt``, ``queue_ptr``) and, under ``hook``, what
  the model's optional ``extra_training_state()`` returns (handed back to its
  ``load_extra_training_state(extra)`` on resume);
* ``manual_seed``: the run's seed (the data-loader workers are seeded from it);
* ``data``: where the training data loader stands, written by :mod:`kdsr_pdd.training` (the random
  states when the epoch's loader iterator was created and the number of its batches already trained).

:func:`install` replaces ``BaseModel.save_training_state`` (rank 0 only, atomic, raising on failure: 1.4.2
logs a failed save and goes on), ``BaseModel.resume_training`` (also restores ``model``; one-line errors)
and ``basicsr.train.load_resume_state`` (:func:`load_resume_state`: 1.4.2 maps storages with ``.cuda()``,
so ``--auto_resume`` failed without CUDA, and it took the newest file ending in ``state``, whatever it held).
"""
import os
import os.path as osp
import pickle
import random
import re
import sys
import zipfile

import numpy as np
import torch

from kdsr_pdd.checkpoints import atomic_torch_save, error_reason, remove_stale_temporaries

STATE_NAME = re.compile(r'^(\d+)\.state$')
QUEUE_ATTRIBUTES = ('queue_lr', 'queue_gt', 'queue_ptr')
_STATE_KEYS = ('epoch', 'iter', 'optimizers', 'schedulers')


class ResumeError(ValueError):
    """A training state that cannot be resumed from (one-line message)."""


# ------------------------------------------------------------------------------------------------ random states
def rng_states():
    """The python, numpy and torch random states (and CUDA's, once CUDA is in use)."""
    states = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    """Restore what :func:`rng_states` returned."""
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


# ------------------------------------------------------------------------------------------------ writing
def model_extra_state(model):
    """The ``model`` entry of a state: the training-pair queue (when the model has one) and the model's hook."""
    extra = {name: getattr(model, name) for name in QUEUE_ATTRIBUTES if hasattr(model, name)}
    hook = getattr(model, 'extra_training_state', None)
    if hook is not None:
        extra['hook'] = hook()
    return extra


def save_training_state(model, epoch, current_iter, data=None):
    """Write ``training_states/<current_iter>.state`` of ``model`` (rank 0 only, atomic, raising on failure).

    ``data`` is the training loader's position (see the module docstring); without it a resumed run
    restarts the epoch from its first batch, as BasicSR does.
    """
    if current_iter == -1 or model.opt.get('rank', 0) != 0:
        return
    state = {
        'epoch': epoch,
        'iter': current_iter,
        'optimizers': [o.state_dict() for o in model.optimizers],
        'schedulers': [s.state_dict() for s in model.schedulers],
        'rng': rng_states(),
        'model': model_extra_state(model),
        'manual_seed': model.opt.get('manual_seed'),
    }
    if data is not None:
        state['data'] = data
    atomic_torch_save(state, osp.join(model.opt['path']['training_states'], f'{current_iter}.state'))


def _save_training_state(self, epoch, current_iter):
    """BaseModel.save_training_state: :func:`save_training_state` without a loader position."""
    save_training_state(self, epoch, current_iter)


def _resume_training(self, resume_state):
    """BaseModel.resume_training: optimizers, schedulers and the ``model`` entry (queue, hook) of the state."""
    for kind, saved, current in (('optimizers', resume_state['optimizers'], self.optimizers),
                                 ('schedulers', resume_state['schedulers'], self.schedulers)):
        if len(saved) != len(current):
            raise ResumeError(f'{self.opt["path"].get("resume_state")}: the state holds {len(saved)} {kind}, the '
                              f'model has {len(current)}: the options changed since it was saved.')
        for target, state in zip(current, saved):
            target.load_state_dict(state)
    extra = resume_state.get('model', {})
    for name in QUEUE_ATTRIBUTES:
        if name in extra:
            value = extra[name]
            setattr(self, name, value.to(self.device) if torch.is_tensor(value) else value)
    if 'hook' in extra:
        self.load_extra_training_state(extra['hook'])


# ------------------------------------------------------------------------------------------------ finding, reading
def state_files(state_dir):
    """``(iter, path)`` of the ``<iter>.state`` files in ``state_dir``, newest first; other names are ignored."""
    if not osp.isdir(state_dir):
        return []
    found = ((STATE_NAME.match(name), name) for name in os.listdir(state_dir))
    return sorted(((int(m.group(1)), osp.join(state_dir, name)) for m, name in found if m), reverse=True)


def network_files(opt, iteration):
    """The checkpoints a resume from ``iteration`` loads (BasicSR's ``check_resume``: every ``network_*`` but the
    ``path.ignore_resume_networks``)."""
    ignored = opt['path'].get('ignore_resume_networks') or ()
    return [osp.join(opt['path']['models'], f'net_{key[len("network_"):]}_{iteration}.pth')
            for key in opt if key.startswith('network_') and key not in ignored]


def read_training_state(path):
    """The training state in ``path``, on the CPU; ResumeError (one line) when it cannot be read."""
    try:
        # Training states hold optimizer/scheduler dicts (Counter etc.): a trusted local file, not weights only.
        state = torch.load(path, map_location='cpu', weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise ResumeError(f'{path}: cannot be read as a training state (truncated or not a state: '
                          f'{error_reason(err)})') from None
    if not isinstance(state, dict) or not all(key in state for key in _STATE_KEYS):
        raise ResumeError(f'{path}: is not a training state (it lacks {", ".join(_STATE_KEYS)})')
    return state


def _warn(message):
    print(f'warning: {message}', file=sys.stderr)  # BasicSR's logger is set up only after the state is read


def newest_resumable_state(opt, state_dir):
    """``(path, state)`` of the newest state of ``state_dir`` that reads and whose networks exist, or None.

    Each newer state that is skipped gets one warning line naming it; ResumeError when states exist but none
    can be used.
    """
    files = state_files(state_dir)
    for iteration, path in files:
        missing = [p for p in network_files(opt, iteration) if not osp.isfile(p)]
        if missing:
            _warn(f'{path}: skipped, its network checkpoint {osp.relpath(missing[0])} is missing; trying an earlier '
                  'state.')
            continue
        try:
            return path, read_training_state(path)
        except ResumeError as err:
            _warn(f'{err}; skipped, trying an earlier state.')
    if files:
        raise ResumeError(f'--auto_resume: none of the {len(files)} training states in {state_dir} can be resumed '
                          'from (see the warnings above); move them away to start from scratch.')
    return None


def load_resume_state(opt):
    """basicsr.train.load_resume_state, reading the state onto the CPU and choosing it robustly.

    Temporary files of interrupted saves in the experiment's ``models`` / ``training_states`` are removed
    first. ``--auto_resume`` takes the newest ``<iter>.state`` that reads and whose networks exist (see
    :func:`newest_resumable_state`). A resumed run keeps the seed of the run it continues.
    """
    from basicsr.utils import check_resume

    experiment = osp.join('experiments', opt['name'])
    state_dir = osp.join(experiment, 'training_states')
    if opt.get('rank', 0) == 0:
        for folder in (osp.join(experiment, 'models'), state_dir):
            removed = remove_stale_temporaries(folder)
            if removed:
                _warn(f'removed {len(removed)} temporary file(s) of an interrupted save from {folder}.')

    resume_state = None
    if opt['auto_resume']:
        found = newest_resumable_state(opt, state_dir)
        if found:
            opt['path']['resume_state'], resume_state = found
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
        if not osp.isfile(path):
            raise ResumeError(f'path.resume_state: no training state at {path!r}; fix the path or drop the option '
                              'to start from scratch.')
        resume_state = read_training_state(path)
        missing = [p for p in network_files(opt, resume_state['iter']) if not osp.isfile(p)]
        if missing:
            raise ResumeError(f'path.resume_state: {path} needs the network checkpoint {osp.relpath(missing[0])}, '
                              'which is missing.')
    if resume_state is None:
        return None
    check_resume(opt, resume_state['iter'])
    seed = resume_state.get('manual_seed')
    if seed is not None and seed != opt.get('manual_seed'):
        _warn(f'manual_seed: {opt.get("manual_seed")} -> {seed}, the seed of the run that is resumed.')
        opt['manual_seed'] = seed
    return resume_state


def install():
    """Put the functions above into BasicSR (see the module docstring)."""
    import basicsr.train
    from basicsr.models.base_model import BaseModel

    BaseModel.save_training_state = _save_training_state
    BaseModel.resume_training = _resume_training
    basicsr.train.load_resume_state = load_resume_state
