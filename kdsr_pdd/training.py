"""Reliable ``kdsr-pdd train`` runs: BasicSR's loop (``basicsr.train.train_pipeline``, unmodified) with what it
calls replaced for the duration of one run (:func:`run`).

* **Faithful resume.** A run that stopped (at its end, on a signal, killed) and is resumed with
  ``--auto_resume`` reaches the same weights, bit for bit, as an uninterrupted run with the same thread
  count. Training states carry the random states, the model's extra state and the loader position
  (:mod:`kdsr_pdd.resume`). The resumed epoch's loader iterator is created under the random states its
  epoch started with (it draws the same worker base seed), fetches the batches already trained, so that
  worker-side randomness replays, and only then are the saved random states restored. Validation leaves
  the training random states untouched (it draws loader seeds, metrics may draw numbers).
* **Interruptions.** SIGINT / SIGTERM let the current iteration finish, then networks and training state are
  saved and the run ends with one line saying what was saved and how to resume (exit 130 / 143). A second
  signal, or one before the first iteration, stops at once: saves are atomic, nothing is corrupted.
* **Non-finite guard.** An optimizer step whose gradients hold NaN / inf is not applied. An iteration with a
  non-finite loss or gradient ends the run with one line (iteration, the values, the last good checkpoint),
  exit 1, unless ``train.max_nonfinite_steps`` allows that many such steps to be skipped (each one logged).
  Networks with non-finite weights are never written (:mod:`kdsr_pdd.checkpoints`).
* **Full disk.** A checkpoint or state that cannot be written ends the run with one line naming the file and
  the last complete checkpoint, exit 1; files written before are left as they are.
* **Progress.** The ETA of the log lines is the mean time of the timed iterations times the iterations left
  (BasicSR 1.4.2 counts one iteration too few: ``-1 day, 23:59:59`` at the last one).

What is replaced in ``basicsr.train``: ``load_resume_state`` (remembered for the run), ``build_model`` (the
model's ``optimize_parameters``, ``save``, ``save_training_state`` and ``validation`` and its optimizers'
``step`` are wrapped), ``CPUPrefetcher`` / ``CUDAPrefetcher`` (:class:`ResumablePrefetcher`,
:class:`ResumableCUDAPrefetcher`) and ``MessageLogger`` (:class:`ProgressLogger`). Limits: ``prefetch_mode:
cuda`` loads the next batch ahead, so its resume is exact only with data-loader workers; ``prefetch_mode:
cpu`` with ``num_worker_per_gpu: 0`` loads batches in a thread and is not reproducible even uninterrupted;
``persistent_workers`` keep their random states across epochs; distributed runs keep the default signal
handling and only rank 0's random states are saved (the other ranks are not restored).
"""
import functools
import logging
import math
import os
import os.path as osp
import shlex
import signal
import threading
import time

import torch
from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
from basicsr.utils import MessageLogger, get_root_logger

from kdsr_pdd import resume
from kdsr_pdd.checkpoints import CheckpointError, NonFiniteError, NoSpaceError

_REPLACED = ('load_resume_state', 'build_model', 'CPUPrefetcher', 'CUDAPrefetcher', 'MessageLogger')
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(Exception):
    """The run ended before its last iteration: ``str()`` is the one line for the user, ``status`` the exit status."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------------------------ loop pieces
class _Resumable:
    """The part the two prefetchers share: the run creates each epoch's iterator and counts its batches."""

    def reset(self):
        self.loader = self.run.epoch_iterator(self.ori_loader)
        self._after_reset()

    def _after_reset(self):
        """What follows the iterator's creation (the CUDA prefetcher loads its first batch)."""

    def next(self):
        self.run.before_batch()
        batch = super().next()
        if batch is not None:
            self.run.batches += 1
        return batch


class ResumablePrefetcher(_Resumable, CPUPrefetcher):
    """BasicSR's CPUPrefetcher whose epochs start at :meth:`TrainingRun.epoch_iterator` (the loop calls ``reset``
    before its first ``next``, so no iterator is created here)."""

    def __init__(self, loader, run):
        self.ori_loader, self.loader, self.run = loader, iter(()), run


class ResumableCUDAPrefetcher(_Resumable, CUDAPrefetcher):
    """BasicSR's CUDAPrefetcher, likewise; it loads each batch ahead (see the module docstring)."""

    def __init__(self, loader, opt, run):
        self.ori_loader, self.loader, self.opt, self.run, self.batch = loader, iter(()), opt, run, None
        self.stream = torch.cuda.Stream()
        self.device = torch.device('cuda' if opt['num_gpu'] != 0 else 'cpu')

    def _after_reset(self):
        self.preload()


class ProgressLogger(MessageLogger):
    """BasicSR's MessageLogger with an ETA that is the mean time of the timed iterations times those left.

    BasicSR computes ``(now - start_time) / (iter - start_iter + 1) * (max_iters - iter - 1)``; each call sets
    these three attributes so that the formula gives that value (0:00:00 at the last iteration). Timing starts
    after iteration 1 (the loop's ``reset_start_time``) or when a resumed run has skipped to its position.
    """

    def __init__(self, opt, start_iter=1, tb_logger=None, run=None):
        super().__init__(opt, start_iter, tb_logger)
        self.total_iters = self.max_iters
        self.restart_timing(start_iter)
        if run is not None:
            run.progress = self

    def restart_timing(self, done_iters):
        """Time the iterations after ``done_iters`` from now."""
        self.timer_start, self.timer_iters = time.time(), done_iters

    def reset_start_time(self):
        """Called by the loop after iteration 1."""
        self.restart_timing(1)

    def __call__(self, log_vars):
        current = log_vars['iter']
        timed = current - self.timer_iters
        per_iter = (time.time() - self.timer_start) / timed if timed > 0 else log_vars.get('time', 0.0)
        self.start_time, self.start_iter, self.max_iters = time.time() - per_iter, current, self.total_iters + 1
        super().__call__(log_vars)


# ------------------------------------------------------------------------------------------------ one run
class TrainingRun:
    """The state of one training run that the replaced pieces share."""

    def __init__(self, resume_command):
        self.resume_command = resume_command
        self.pid = os.getpid()
        self.opt = self.model = self.resume_state = self.progress = None
        self.pending = None  # the loader position the first epoch resumes at
        self.epoch = self.epoch_rng = None
        self.batches = 0  # batches of this epoch handed to the loop
        self.trained_iter = 0
        self.saved_iter = None
        self.signal = None
        self.stopping = False  # saving the state of an interrupted run
        self.previous_handlers = {}  # signum -> the handler before the run (put back after it)
        self.in_loop = False
        self.nonfinite_steps = 0
        self.skipped_updates = []

    def install(self, module, build_model):
        """Replace the pieces of ``basicsr.train`` (``module``) named in the module docstring."""
        module.load_resume_state = self.load_resume_state
        module.build_model = functools.partial(self.build_model, build_model)
        module.CPUPrefetcher = functools.partial(ResumablePrefetcher, run=self)
        module.CUDAPrefetcher = functools.partial(ResumableCUDAPrefetcher, run=self)
        module.MessageLogger = functools.partial(ProgressLogger, run=self)

    # ----- resume
    def load_resume_state(self, opt):
        """kdsr_pdd.resume.load_resume_state, remembering the options and the state for the run."""
        self.opt = opt
        if opt['dist']:  # every rank would stop at its own iteration: keep the default handling
            restore_signal_handlers(self.previous_handlers)
        state = resume.load_resume_state(opt)
        if state is not None:
            self.resume_state, self.saved_iter, self.trained_iter = state, state['iter'], state['iter']
            self.epoch = state['epoch'] - 1  # the loop's first epoch is the state's
            self.pending = state.get('data')
        else:
            self.epoch = -1
        return state

    def epoch_iterator(self, loader):
        """The loader iterator of the loop's next epoch; a resumed epoch skips the batches already trained."""
        self.in_loop = True
        self.epoch += 1
        position, self.pending = self.pending, None
        logger = get_root_logger()
        if position is None:
            if self.resume_state is not None and self.epoch == self.resume_state['epoch']:
                logger.warning(f'{self.opt["path"]["resume_state"]} has no loader position (written by BasicSR or '
                               'an older kdsr-pdd): the epoch restarts from its first batch, so the run will differ '
                               'from an uninterrupted one.')
            self.epoch_rng, self.batches = resume.rng_states(), 0
            return iter(loader)
        primary = self.opt.get('rank', 0) == 0
        self.epoch_rng, self.batches = position['epoch_rng'], 0
        if primary:
            resume.set_rng_states(self.epoch_rng)
        iterator = iter(loader)
        for _ in range(position['batches']):
            if next(iterator, None) is None:
                logger.warning(f'epoch {self.epoch} has fewer than the {position["batches"]} batches trained before '
                               'the save: the data or the batch size changed, the run will differ.')
                break
            self.batches += 1
        if primary:
            resume.set_rng_states(self.resume_state['rng'])
        logger.info(f'Resumed at batch {self.batches} of epoch {self.epoch} with the saved random states.')
        if self.progress is not None:
            self.progress.restart_timing(self.trained_iter)
        return iterator

    def position(self):
        """The loader position saved with a training state (None before the first epoch started)."""
        return None if self.epoch_rng is None else {'epoch_rng': self.epoch_rng, 'batches': self.batches}

    # ----- the model
    def build_model(self, build_model, opt):
        """``basicsr.models.build_model`` and the wrappers of the module docstring."""
        model = build_model(opt)
        self.model, self.opt = model, opt
        self.max_nonfinite = int(opt['train'].get('max_nonfinite_steps', 0))
        names = {id(v): k for k, v in vars(model).items() if isinstance(v, torch.optim.Optimizer)}
        for i, optimizer in enumerate(model.optimizers):
            optimizer.step = self._finite_step(optimizer, names.get(id(optimizer), f'optimizers[{i}]'))
        model.optimize_parameters = self._guarded(model.optimize_parameters)
        model.save = self._reporting(model.save)
        model.save_training_state = lambda epoch, current_iter: resume.save_training_state(
            model, epoch, current_iter, data=self.position())
        model.validation = _keeping_random_states(model.validation)
        return model

    def _finite_step(self, optimizer, name):
        step = optimizer.step

        @functools.wraps(step)
        def finite_step(*args, **kwargs):
            grads = [p.grad for group in optimizer.param_groups for p in group['params'] if p.grad is not None]
            if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
                self.skipped_updates.append(name)
                return None
            return step(*args, **kwargs)

        return finite_step

    def _guarded(self, optimize_parameters):
        @functools.wraps(optimize_parameters)
        def guarded(current_iter):
            self.skipped_updates = []
            optimize_parameters(current_iter)
            self.trained_iter = current_iter
            bad = {k: v for k, v in getattr(self.model, 'log_dict', {}).items() if not math.isfinite(float(v))}
            if bad or self.skipped_updates:
                self._non_finite(current_iter, bad)

        return guarded

    def _non_finite(self, current_iter, bad_values):
        values = ', '.join(f'{k} = {float(v)}' for k, v in bad_values.items())
        grads = f'non-finite gradients of {", ".join(self.skipped_updates)}' if self.skipped_updates else ''
        what = '; '.join(part for part in (f'non-finite {values}' if values else '', grads) if part)
        self.nonfinite_steps += 1
        if self.nonfinite_steps <= self.max_nonfinite:
            skipped = f'update of {", ".join(self.skipped_updates)} skipped' if self.skipped_updates else (
                'no update skipped (the gradients were finite)')
            get_root_logger().warning(f'iteration {current_iter}: {what}: {skipped} ({self.nonfinite_steps} of '
                                      f'train.max_nonfinite_steps = {self.max_nonfinite}).')
            return
        raise TrainingStopped(f'error: iteration {current_iter}: {what}: training stopped, nothing of this iteration '
                              f'was saved; {self._last_checkpoint("last good checkpoint", hint=False)}.', 1)

    def _reporting(self, save):
        @functools.wraps(save)
        def reporting_save(epoch, current_iter):
            try:
                save(epoch, current_iter)
            except NoSpaceError as err:
                raise TrainingStopped(f'error: {err.strerror}; {self._last_checkpoint()}.', 1) from None
            except NonFiniteError as err:
                last = self._last_checkpoint('last good checkpoint', hint=False)
                raise TrainingStopped(f'error: {err} Training stopped; {last}.', 1) from None
            if current_iter != -1:
                self.saved_iter = current_iter

        return reporting_save

    def _last_checkpoint(self, label='last complete checkpoint', hint=True):
        """``'<label>: iteration N (files); resume with: ...'`` from the files on disk (the hint if ``hint``)."""
        for iteration, path in resume.state_files(self.opt['path']['training_states']):
            files = resume.network_files(self.opt, iteration)
            if all(osp.isfile(p) for p in files):
                found = f'{label}: iteration {iteration} ({", ".join(osp.relpath(p) for p in [*files, path])})'
                return f'{found}; resume with: {self.resume_command}' if hint else found
        return f'{label}: none (no complete checkpoint was written)'

    # ----- signals
    def on_signal(self, signum, frame):
        """First signal: stop after the current iteration; a second one, or one before the loop, stops at once."""
        if os.getpid() != self.pid:  # a data-loader worker forked with this handler: the main process decides
            return
        if self.signal is None and self.in_loop:
            self.signal = signum
            return
        self.signal = self.signal or signum
        name = signal.Signals(signum).name
        where = (f'while saving iteration {self.trained_iter}' if self.stopping else
                 f'during iteration {self.trained_iter + 1}' if self.in_loop else 'before the first iteration')
        checkpoint = self._last_checkpoint() if self.opt is not None else 'nothing was saved'
        raise TrainingStopped(f'stopped at once by {name} {where}; {checkpoint}.', 128 + signum)

    def before_batch(self):
        """Before the loop fetches a batch, i.e. once an iteration is complete: stop here after a signal."""
        if self.signal is None:
            return
        name = signal.Signals(self.signal).name
        if self.trained_iter == 0:
            raise TrainingStopped(f'interrupted by {name} before the first iteration: nothing to save.',
                                  128 + self.signal)
        if self.trained_iter != self.saved_iter:
            get_root_logger().info(f'{name}: saving iteration {self.trained_iter} before stopping.')
            self.stopping = True
            self.model.save(self.epoch, self.trained_iter)
        raise TrainingStopped(f'interrupted by {name} after iteration {self.trained_iter}; '
                              f'{self._last_checkpoint("saved")}.', 128 + self.signal)


def _keeping_random_states(validation):
    """``model.validation`` that leaves the python / numpy / torch random states as it found them."""

    @functools.wraps(validation)
    def wrapper(*args, **kwargs):
        states = resume.rng_states()
        try:
            return validation(*args, **kwargs)
        finally:
            resume.set_rng_states(states)

    return wrapper


def restore_signal_handlers(handlers):
    """Put back the handlers ``{signum: handler}`` (main thread only)."""
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def _log_to_file(message):
    """Write ``message`` to the run's log file only (the command prints it on stderr)."""
    logger = logging.getLogger('basicsr')
    record = logger.makeRecord('basicsr', logging.ERROR, __file__, 0, message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def resume_command(opt_file, force_yml=None):
    """The command line that resumes the run of ``opt_file`` (with its ``--force_yml`` entries)."""
    return shlex.join(['kdsr-pdd', 'train', '-opt', opt_file, '--auto_resume',
                       *(['--force_yml', *force_yml] if force_yml else [])])


def run(root_path, opt_file, force_yml=None):
    """BasicSR's ``train_pipeline(root_path)`` with the pieces of this module in place (removed afterwards).

    ``opt_file`` and ``force_yml`` name the run in the resume hints. Raises :class:`TrainingStopped` when the
    run ends early (a signal, a non-finite step, a full disk, a state or checkpoint that cannot be used).
    """
    import basicsr.train

    session = TrainingRun(resume_command(opt_file, force_yml))
    replaced = {name: getattr(basicsr.train, name) for name in _REPLACED}
    if threading.current_thread() is threading.main_thread():
        session.previous_handlers = {signum: signal.getsignal(signum) for signum in _SIGNALS}
        for signum in _SIGNALS:
            signal.signal(signum, session.on_signal)
    session.install(basicsr.train, replaced['build_model'])
    try:
        basicsr.train.train_pipeline(root_path)
    except (resume.ResumeError, CheckpointError, NonFiniteError) as err:
        _log_to_file(f'error: {err}')
        raise TrainingStopped(f'error: {err}', 1) from None
    except TrainingStopped as stop:
        _log_to_file(str(stop))
        raise
    finally:
        restore_signal_handlers(session.previous_handlers)
        for name, value in replaced.items():
            setattr(basicsr.train, name, value)
