"""Reading network weights from the checkpoint formats users already have.

Accepted containers: BasicSR / Real-ESRGAN files (``{'params_ema': ..., 'params': ...}``), and raw
state dicts (KDSR classic releases, BSRGAN). A leading ``module.`` (DDP/DP) is stripped and ESRGAN/BSRGAN
layer names (``RRDB_trunk.*``, ``trunk_conv``, ``upconv*``, ``HRconv``) become BasicSR RRDBNet names. Loading is
strict by default, and a mismatch names the missing and unexpected keys.
"""
import logging
import os.path as osp
import re

import torch

DEFAULT_KEY_ORDER = ('params_ema', 'params')

# BSRGAN (and the original ESRGAN) name RRDBNet's layers differently; the maths is BasicSR's RRDBNet.
_ESRGAN_TO_BASICSR = ((re.compile(r'^RRDB_trunk\.(\d+)\.RDB(\d)\.'), r'body.\1.rdb\2.'),
                      (re.compile(r'^trunk_conv\.'), 'conv_body.'), (re.compile(r'^upconv(\d)\.'), r'conv_up\1.'),
                      (re.compile(r'^HRconv\.'), 'conv_hr.'))


class CheckpointError(ValueError):
    """A checkpoint that does not fit the network it is loaded into."""


def read_state_dict(path, param_key=None):
    """Return ``(state_dict, key_used)`` from ``path``.

    ``param_key`` first (if given and present), then ``params_ema``, then ``params``; a file with
    none of these keys is taken as a raw state dict (``key_used`` is None).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist.')
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{path}: expected a state dict or a dict of state dicts, got {type(checkpoint)}.')
    order = ((param_key, ) if param_key else ()) + DEFAULT_KEY_ORDER
    for key in order:
        if key in checkpoint and isinstance(checkpoint[key], dict):
            state, used = checkpoint[key], key
            break
    else:
        state, used = checkpoint, None
    state = {(k[7:] if k.startswith('module.') else k): v for k, v in state.items()}
    if any(k.startswith('RRDB_trunk.') for k in state):  # an ESRGAN / BSRGAN RRDBNet
        state = {_basicsr_rrdb_name(k): v for k, v in state.items()}
    return state, used


def _basicsr_rrdb_name(key):
    for pattern, replacement in _ESRGAN_TO_BASICSR:
        key = pattern.sub(replacement, key)
    return key


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
