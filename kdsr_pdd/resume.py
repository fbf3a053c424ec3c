"""Training states: written atomically, found and read on any device.

:func:`install` replaces ``BaseModel.save_training_state`` (rank 0 only, atomic, raising on failure:
1.4.2 logs a failed save and goes on) and ``basicsr.train.load_resume_state`` (1.4.2 maps storages
with ``.cuda()``, so ``--auto_resume`` failed without CUDA).
"""
import os.path as osp

import torch

from kdsr_pdd.checkpoints import atomic_torch_save


def _save_training_state(self, epoch, current_iter):
    """BaseModel.save_training_state (rank 0 only), written atomically and raising on failure."""
    if current_iter == -1 or self.opt.get('rank', 0) != 0:
        return
    state = {
        'epoch': epoch,
        'iter': current_iter,
        'optimizers': [o.state_dict() for o in self.optimizers],
        'schedulers': [s.state_dict() for s in self.schedulers],
    }
    atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))


def load_resume_state(opt):
    """basicsr.train.load_resume_state, reading the state onto the CPU (optimizers move it to their device)."""
    from basicsr.utils import check_resume, scandir

    resume_state_path = None
    if opt['auto_resume']:
        state_dir = osp.join('experiments', opt['name'], 'training_states')
        if osp.isdir(state_dir):
            states = [float(v.split('.state')[0]) for v in scandir(state_dir, suffix='state', recursive=False)]
            if states:
                resume_state_path = osp.join(state_dir, f'{max(states):.0f}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']

    if resume_state_path is None:
        return None
    if not osp.isfile(resume_state_path):
        raise FileNotFoundError(f'path.resume_state: no training state at {resume_state_path!r}; '
                                'fix the path or drop the option to start from scratch.')
    # Training states hold optimizer/scheduler dicts (Counter etc.): a trusted local file, not weights only.
    resume_state = torch.load(resume_state_path, map_location='cpu', weights_only=False)
    check_resume(opt, resume_state['iter'])
    return resume_state


def install():
    """Put the functions above into BasicSR (see the module docstring)."""
    import basicsr.train
    from basicsr.models.base_model import BaseModel

    BaseModel.save_training_state = _save_training_state
    basicsr.train.load_resume_state = load_resume_state
