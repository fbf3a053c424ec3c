"""Reading and writing network checkpoints.

Reading accepts the containers users already have: BasicSR / Real-ESRGAN files
(``{'params_ema': ..., 'params': ...}``), the other wrappers spandrel unwraps (``state_dict``,
``model_state_dict``, ``model``, ``net``, ``params-ema``), raw state dicts (KDSR classic releases, BSRGAN)
and ``.safetensors`` files. Files are read with ``weights_only=True``; a leading ``module.`` (DDP/DP) is
stripped and ESRGAN/BSRGAN layer names (``RRDB_trunk.*``, ``trunk_conv``, ``upconv*``, ``HRconv``) become
BasicSR RRDBNet names. Loading is strict by default, a mismatch names the missing and unexpected keys,
and weights that are not finite are refused.

Writing goes to a temporary file in the target folder that is renamed into place, so an interrupted or
failed save (a full disk) leaves the previous file untouched; networks with non-finite values are never
written. :func:`install` puts both into BasicSR's ``BaseModel`` (``load_network`` / ``save_network``).
"""
import errno
import logging
import os
import os.path as osp
import pickle
import re
import tempfile
import zipfile

import torch

DEFAULT_KEY_ORDER = ('params_ema', 'params')
OTHER_CONTAINER_KEYS = ('state_dict', 'model_state_dict', 'params-ema', 'model', 'net')  # as spandrel unwraps

# BSRGAN (and the original ESRGAN) name RRDBNet's layers differently; the maths is BasicSR's RRDBNet.
_ESRGAN_TO_BASICSR = ((re.compile(r'^RRDB_trunk\.(\d+)\.RDB(\d)\.'), r'body.\1.rdb\2.'),
                      (re.compile(r'^trunk_conv\.'), 'conv_body.'), (re.compile(r'^upconv(\d)\.'), r'conv_up\1.'),
                      (re.compile(r'^HRconv\.'), 'conv_hr.'))


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the network it is loaded into (one-line message)."""


class NonFiniteError(ValueError):
    """Weights with NaN or infinite values (a diverged run): never written, never loaded."""


class NoSpaceError(OSError):
    """A checkpoint could not be written because the disk is full (the previous file is kept)."""


def _torch_load(path):
    """``torch.load(path, weights_only=True)`` on CPU; one-line CheckpointError for anything unreadable."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist.')
    if osp.getsize(path) == 0:
        raise CheckpointError(f'{path}: the file is empty (an interrupted copy or download?).')
    if path.lower().endswith('.safetensors'):
        return _safetensors_load(path)
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f'{path}: holds Python objects other than tensors, so it is not a weights file; '
                              'it is not loaded (arbitrary objects are never unpickled).') from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f'{path}: cannot be read as a PyTorch checkpoint (truncated or not a checkpoint: '
                              f'{error_reason(err)}).') from None


def error_reason(err):
    """The first line of ``err``'s message (at most 120 characters), or its type name, for one-line messages."""
    text = str(err).strip()
    return text.splitlines()[0][:120] if text else type(err).__name__


def _safetensors_load(path):
    """The tensors of a ``.safetensors`` file (no code is run); one-line CheckpointError when unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path, device='cpu')
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f'{path}: cannot be read as a safetensors file ({str(err)[:120]}).') from None


def _is_state_dict(obj):
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def read_state_dict(path, param_key=None):
    """Return ``(state_dict, key_used)`` from ``path``.

    ``param_key`` first; when it is absent, ``params_ema`` falls back to ``params`` and back (as BasicSR
    does), any other key is an error naming the keys present. Without ``param_key``: ``params_ema``, then
    ``params``, then the other wrappers (:data:`OTHER_CONTAINER_KEYS`). A file of tensors is taken as a raw
    state dict (``key_used`` is None).
    """
    checkpoint = _torch_load(path)
    if _is_state_dict(checkpoint):
        state, used = checkpoint, None
    elif isinstance(checkpoint, dict):
        nested = [k for k, v in checkpoint.items() if _is_state_dict(v)]
        if param_key and param_key not in nested and param_key not in DEFAULT_KEY_ORDER:
            raise CheckpointError(f'{path}: no state dict under the key {param_key!r} '
                                  f'(it has {few_names(sorted(map(str, checkpoint)))}).')
        order = ((param_key, ) if param_key else ()) + DEFAULT_KEY_ORDER + OTHER_CONTAINER_KEYS
        used = next((k for k in order if k in nested), None)
        if used is None:
            raise CheckpointError(f'{path}: holds no network weights (no params_ema / params / state_dict state '
                                  f'dict; keys: {few_names(sorted(map(str, checkpoint)))}; --param-key KEY '
                                  'chooses one).')
        state = checkpoint[used]
    else:
        raise CheckpointError(f'{path}: expected a state dict or a dict of state dicts, '
                              f'got {type(checkpoint).__name__}.')
    state = {(k[7:] if k.startswith('module.') else k): v for k, v in state.items()}
    if any(k.startswith('RRDB_trunk.') for k in state):  # an ESRGAN / BSRGAN RRDBNet
        state = {_basicsr_rrdb_name(k): v for k, v in state.items()}
    bad = non_finite_entries(state)
    if bad:
        raise NonFiniteError(f'{path}: {len(bad)} weight tensors hold NaN or infinite values (e.g. {bad[0]}): '
                             'the run that wrote it diverged; use an earlier checkpoint.')
    return state, used


def _basicsr_rrdb_name(key):
    for pattern, replacement in _ESRGAN_TO_BASICSR:
        key = pattern.sub(replacement, key)
    return key


def non_finite_entries(state):
    """Names of the floating-point tensors of ``state`` that hold NaN or +-inf, sorted."""
    return sorted(k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))


def load_weights(net, path, param_key=None, strict=True):
    """Load weights from ``path`` into ``net`` (see :func:`read_state_dict`); return the key used."""
    state, used = read_state_dict(path, param_key)
    load_state(net, state, f'{path} (key {used or "raw"})', strict)
    return used


def load_state(net, state, source, strict=True):
    """Load the state dict ``state`` (read from ``source``, named in errors) into ``net``.

    Strict: any missing, unexpected or differently shaped entry raises CheckpointError naming them.
    Not strict: as BasicSR, entries of another shape are left out (logged) and the rest is loaded.
    """
    net = net.module if hasattr(net, 'module') else net
    current = net.state_dict()
    wrong_shape = sorted(k for k in state if k in current and current[k].shape != state[k].shape)
    if strict:
        missing, unexpected = sorted(set(current) - set(state)), sorted(set(state) - set(current))
        if missing or unexpected:
            raise CheckpointError(f'{source} does not fit {type(net).__name__}: '
                                  f'missing {few_names(missing)}; unexpected {few_names(unexpected)}.')
        if wrong_shape:
            k = wrong_shape[0]
            raise CheckpointError(f'{source}: shape mismatch for {len(wrong_shape)} keys, e.g. {k}: checkpoint '
                                  f'{tuple(state[k].shape)} vs network {tuple(current[k].shape)}.')
    elif wrong_shape:
        logging.getLogger('basicsr').warning(
            f'{source}: not loading {len(wrong_shape)} entries of another shape: {few_names(wrong_shape)}')
        state = {k: v for k, v in state.items() if k not in wrong_shape}
    net.load_state_dict(state, strict=strict)


def few_names(keys, n=5):
    """``'a, b, c (+2 more)'`` for messages; ``'none'`` for an empty list."""
    if not keys:
        return 'none'
    more = f' (+{len(keys) - n} more)' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


# ------------------------------------------------------------------------------------------------ writing
def atomic_torch_save(obj, path):
    """Write ``obj`` with :func:`torch.save` to a temporary file beside ``path`` and rename it into place.

    A crash or a full disk mid-write leaves the previous file (if any) untouched; the temporary file
    (``.tmp_*``) is removed. A full disk raises :class:`NoSpaceError` naming the file.
    """
    directory = osp.dirname(osp.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix='.tmp_', suffix=osp.basename(path), dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as err:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        if _is_disk_full(err):
            kept = 'the previous file is kept' if osp.exists(path) else 'nothing was written'
            raise NoSpaceError(errno.ENOSPC, f'no space left on the device to write {path} ({kept}); '
                                             'free some space and resume') from None
        raise


def _is_disk_full(err):
    """True for ENOSPC, also when torch's writer reports it as a RuntimeError ('... file write failed')."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(err, RuntimeError) and ('No space left' in str(err) or 'file write failed' in str(err))


def remove_stale_temporaries(folder):
    """Delete ``.tmp_*`` files an interrupted save left in ``folder``; return their names."""
    if not osp.isdir(folder):
        return []
    stale = sorted(name for name in os.listdir(folder) if name.startswith('.tmp_'))
    for name in stale:
        os.remove(osp.join(folder, name))
    return stale


def bare_state_dict(net):
    """State dict of a (possibly DDP/DP-wrapped) network on CPU, without ``module.`` prefixes."""
    net = net.module if hasattr(net, 'module') else net
    return {k[7:] if k.startswith('module.') else k: v.detach().cpu() for k, v in net.state_dict().items()}


def _save_network(self, net, net_label, current_iter, param_key='params'):
    """BaseModel.save_network: rank 0 only, atomic, raising on failure, refusing non-finite weights."""
    if self.opt.get('rank', 0) != 0:
        return
    label = 'latest' if current_iter == -1 else current_iter
    nets = net if isinstance(net, list) else [net]
    keys = param_key if isinstance(param_key, list) else [param_key]
    if len(nets) != len(keys):
        raise ValueError(f'save_network: {len(nets)} networks but {len(keys)} param keys')
    save_dict = {key: bare_state_dict(n) for n, key in zip(nets, keys)}
    for key, state in save_dict.items():
        bad = non_finite_entries(state)
        if bad:
            raise NonFiniteError(f'{net_label} ({key}) holds NaN or infinite weights (e.g. {bad[0]}) at iteration '
                                 f'{current_iter}: not saved.')
    atomic_torch_save(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth'))


def _load_network(self, net, load_path, strict=True, param_key='params'):
    """BaseModel.load_network for every checkpoint format (see :func:`read_state_dict`), strictly by default."""
    from basicsr.utils import get_root_logger

    key = load_weights(net, osp.expanduser(load_path), param_key, strict)
    get_root_logger().info(f'Loading {type(self.get_bare_model(net)).__name__} from {load_path} '
                           f'[{key or "raw state dict"}].')


def install():
    """Make BasicSR's ``BaseModel`` load and save networks as described in the module docstring."""
    from basicsr.models.base_model import BaseModel

    BaseModel.load_network = _load_network
    BaseModel.save_network = _save_network
