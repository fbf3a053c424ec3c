"""SR networks for the commands (infer, export, report, figures): from option files, presets or checkpoints.

An arch *family* knows its networks the way spandrel's ``Architecture`` does: it recognises a state dict
by its keys, infers the constructor arguments from tensor shapes, names presets, and says what inference
needs (:class:`NetworkInfo`: scale, input size multiple, whether the HR is needed, how to run one image).
Families register with :func:`register_family`: BasicSR's RRDBNet and SRVGGNetCompact here, KDSR's in
:mod:`kdsr_arch.families`.

Where the network description comes from, in this order (:func:`resolve_network_opt`): an option file's
``network_g`` (``--opt``), ``--arch`` (a preset or a registered arch type, with ``--arch-args``), the YAML
next to the checkpoint (``<stem>.yml`` or the experiment's copied option file), or the checkpoint itself:
a family of ours that detects its keys (KDSR, BasicSR RRDBNet: built as BasicSR's arch, loaded strictly),
else spandrel's detection (:mod:`kdsr_pdd.spandrel_networks`: ESRGAN variants, SRVGGNetCompact, SwinIR,
HAT, ...).
"""
import json
import re
from pathlib import Path

from kdsr_pdd.checkpoints import CheckpointError, load_state, read_state_dict
from kdsr_pdd.network_info import NetworkError, NetworkInfo


class Family:
    """One arch family: override :meth:`detect` / :meth:`arch_options` to load checkpoints without options."""
    arch_types = ()  # registered arch names this family describes
    presets = {}  # preset name -> network options ({'type': ..., **kwargs})

    def detect(self, state):
        """True when the state dict ``state`` is one of this family's networks."""
        return False

    def arch_options(self, state):
        """The network options (type + constructor arguments) that ``state`` was saved from."""
        raise NotImplementedError

    def info(self, net):
        """The :class:`NetworkInfo` of a built network of this family."""
        return NetworkInfo(type(net).__name__, network_scale(net))

    def advice(self, network_opt):
        """What to do with a checkpoint of ``network_opt`` that was taken for another network ('' if nothing)."""
        return ''

    def image_function(self, net, lq, tiler):
        """LR crop -> SR crop for the whole LR image ``lq`` [1,3,h,w] (``tiler`` runs functions tile-wise)."""
        return net


_FAMILIES = []


def register_family(family):
    """Add an arch family (an instance of :class:`Family`); returns it."""
    _FAMILIES.append(family)
    return family


def family_of(arch_type):
    """The registered family of ``arch_type``, or the generic :class:`Family`."""
    return next((f for f in _FAMILIES if arch_type in f.arch_types), Family())


def presets():
    """All preset names -> network options, over the registered families."""
    return {name: opt for family in _FAMILIES for name, opt in family.presets.items()}


def conv_radius(module):
    """Sum of the radii ``dilation * (kernel // 2)`` of the 2-D convolutions in ``module``: the receptive-field
    radius (in the convolutions' own pixels) of a network that applies each of them once, in any wiring."""
    import torch
    return sum(m.dilation[0] * (m.kernel_size[0] // 2) for m in module.modules() if isinstance(m, torch.nn.Conv2d))


def network_scale(net):
    """The integer upscaling factor of a built network (its ``scale`` or ``upscale`` attribute)."""
    scale = getattr(net, 'scale', None) or getattr(net, 'upscale', None)
    if not isinstance(scale, int) or scale < 1:
        raise NetworkError(f'cannot tell the upscaling factor of {type(net).__name__} (no integer scale/upscale).')
    return scale


class RRDBNetFamily(Family):
    """BasicSR's RRDBNet (ESRGAN, Real-ESRGAN x4plus / x2plus / anime_6B, BSRGAN after key renaming).

    Its key layout: ``conv_first``, ``body.<i>.rdb<1-3>.conv<1-5>``, ``conv_body``, ``conv_up1``, ``conv_up2``,
    ``conv_hr``, ``conv_last``; at x2 / x1 the input is pixel-unshuffled by 2 / 4 first, so ``conv_first`` takes
    4 / 16 times the output channels (how spandrel tells them apart too).
    """
    arch_types = ('RRDBNet', )
    _X4 = dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, scale=4, num_feat=64, num_block=23, num_grow_ch=32)
    presets = {'realesrgan-x4': _X4, 'realesrgan-x2': dict(_X4, scale=2),
               'realesrgan-x4-anime-6b': dict(_X4, num_block=6)}
    _KEYS = ('conv_first.weight', 'body.0.rdb1.conv1.weight', 'conv_body.weight', 'conv_up1.weight',
             'conv_up2.weight', 'conv_hr.weight', 'conv_last.weight')
    _BLOCK = re.compile(r'^body\.(\d+)\.rdb1\.conv1\.weight$')

    def detect(self, state):
        return all(k in state for k in self._KEYS) and 'conv_up3.weight' not in state

    def arch_options(self, state):
        in_channels, out_channels = state['conv_first.weight'].shape[1], state['conv_last.weight'].shape[0]
        unshuffle = {4 * out_channels: 2, 16 * out_channels: 4}.get(in_channels, 1)
        return dict(type='RRDBNet', num_in_ch=in_channels // unshuffle ** 2, num_out_ch=out_channels,
                    scale=4 // unshuffle, num_feat=state['conv_first.weight'].shape[0],
                    num_block=sum(1 for k in state if self._BLOCK.match(k)),
                    num_grow_ch=state['body.0.rdb1.conv1.weight'].shape[0])

    def info(self, net):
        scale = network_scale(net)
        unshuffle = {1: 4, 2: 2}.get(scale, 1)  # the convolutions run on the input unshuffled by this
        return NetworkInfo('RRDBNet', scale, unshuffle, context=unshuffle * conv_radius(net))


class SRVGGNetFamily(Family):
    """BasicSR's SRVGGNetCompact (Real-ESRGAN's realesr-animevideov3 / realesr-general-x4v3): a plain stack of
    3x3 convolutions at the input resolution, then a pixel shuffle (checkpoints are detected by spandrel)."""
    arch_types = ('SRVGGNetCompact', 'SRVGGNetCompact_basicsr')
    _COMPACT = dict(type='SRVGGNetCompact_basicsr', num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4,
                    act_type='prelu')
    presets = {'realesr-animevideov3': _COMPACT, 'realesr-general-x4v3': dict(_COMPACT, num_conv=32)}

    def info(self, net):
        return NetworkInfo('SRVGGNetCompact', network_scale(net), context=conv_radius(net))


register_family(RRDBNetFamily())
register_family(SRVGGNetFamily())


# ------------------------------------------------------------------------------------------------ resolving
def _network_section(yml_path):
    from kdsr_pdd.schema import OptionsError, read_option_file
    try:
        opt = read_option_file(str(yml_path))
    except OptionsError as err:
        raise NetworkError(f'--opt {err}') from None
    network = opt.get('network_g')
    if not isinstance(network, dict) or 'type' not in network:
        raise NetworkError(f'{yml_path}: no network_g section with a type.')
    return dict(network)


def find_companion_yaml(model_path):
    """The option file that describes ``model_path``'s network, or None (see the module docstring)."""
    model_path = Path(model_path)
    beside = model_path.with_suffix('.yml')
    if beside.is_file():
        return beside
    if model_path.parent.name != 'models':
        return None
    experiment = model_path.parent.parent
    named = experiment / f'{experiment.name}.yml'
    if named.is_file():
        return named
    candidates = sorted(experiment.glob('*.yml'))
    if len(candidates) > 1:
        raise NetworkError(f'{experiment} holds several option files ({", ".join(p.name for p in candidates)}); '
                           'choose one with --opt.')
    return candidates[0] if candidates else None


def _arch_options(arch):
    """The network options of ``--arch``: a preset, or a registered BasicSR arch type (BasicSR's own archs
    registered as ``<name>_basicsr`` answer to ``<name>``); NetworkError otherwise."""
    from basicsr.utils.registry import ARCH_REGISTRY

    from kdsr_pdd.schema import suggestion
    if arch in presets():
        return dict(presets()[arch])
    for name in (arch, f'{arch}_basicsr'):
        if name in ARCH_REGISTRY:
            return {'type': name}
    names = [*presets(), *(name for name, _ in ARCH_REGISTRY)]
    raise NetworkError(f'--arch {arch}: not a preset nor a registered BasicSR arch{suggestion(arch, names)}; omit '
                       '--arch to let the checkpoint choose (its keys are recognised here or by spandrel, which '
                       'knows SwinIR, HAT, DAT, OmniSR, ...).')


def resolve_network_opt(model_path, opt_path=None, arch=None, arch_args=None):
    """Return ``(network_opt or None, source)``: the ``network_g``-style dict and where it came from.

    None means: detect the network from the checkpoint (:func:`load_network`).
    """
    if opt_path and arch:
        raise NetworkError('give either --opt or --arch, not both.')
    if arch_args is not None and not arch:
        raise NetworkError('--arch-args needs --arch.')
    if opt_path:
        return _network_section(opt_path), str(opt_path)
    if arch:
        options = _arch_options(arch)
        try:
            extra = json.loads(arch_args) if arch_args else {}
        except json.JSONDecodeError as err:
            raise NetworkError(f'--arch-args is not valid JSON ({err}).') from None
        if not isinstance(extra, dict):
            raise NetworkError('--arch-args must be a JSON object of keyword arguments.')
        return {**options, **extra}, f'--arch {arch}'
    companion = find_companion_yaml(model_path)
    if companion is not None:
        return _network_section(companion), str(companion)
    return None, f'the keys of {model_path}'


def instantiate(network_opt, source):
    """Build the arch of a ``network_g``-style mapping; NetworkError naming ``source`` when it cannot."""
    from pydantic import ValidationError

    from kdsr_pdd.schema import Arch
    try:
        arch = Arch.model_validate(network_opt)
    except ValidationError as err:
        problems = '; '.join(e['msg'].removeprefix('Value error, ') for e in err.errors())
        raise NetworkError(f'{source}: {problems}') from None
    try:
        return Arch._lookup(arch.type)(**arch.kwargs)
    except (ValueError, TypeError, AssertionError, RuntimeError, NotImplementedError) as err:
        raise NetworkError(f'{source}: {arch.type} cannot be built with these arguments: {err}') from None


def _detected(state):
    """``(family, network options)`` of the first family that recognises ``state``, else ``(None, None)``."""
    for family in _FAMILIES:
        if family.detect(state):
            return family, family.arch_options(state)
    return None, None


def _with_spandrel_hint(err, state):
    """``err``, told that spandrel recognises ``state`` as a <name> checkpoint when no family of ours does."""
    from kdsr_pdd.spandrel_networks import spandrel_arch
    name = spandrel_arch(state) if _detected(state)[0] is None else None
    if name is None:
        return err
    return NetworkError(f'{str(err).rstrip(".")}; spandrel recognises a {name} checkpoint: omit --arch / --opt to '
                        'load it with the hyper-parameters its tensors imply.')


def _mismatch(err, state, model_path, network_opt, source):
    """The error for a checkpoint that does not fit the network ``network_opt`` given by ``source``: what its keys
    say it is instead (a family of ours, else spandrel), or ``err`` itself."""
    family, detected = _detected(state)
    if detected is not None and detected['type'] != network_opt['type']:
        return NetworkError(f'{model_path} is a {detected["type"]} checkpoint (detected from its keys, e.g. '
                            f'{next(iter(state))}), not the {network_opt["type"]} of {source}'
                            f'{family.advice(detected)}.')
    return _with_spandrel_hint(err, state)


def load_network(model_path, network_opt=None, param_key=None, source=None):
    """``(net in eval mode, NetworkInfo)`` of the checkpoint ``model_path``, weights loaded strictly.

    The network is ``network_opt`` when given (from ``source``), else the one a family of ours detects from
    the keys, else the one spandrel detects (:func:`kdsr_pdd.spandrel_networks.load_with_spandrel`).
    """
    state, used = read_state_dict(str(model_path), param_key)
    if network_opt is None:
        _, network_opt = _detected(state)
        if network_opt is None:
            from kdsr_pdd.spandrel_networks import load_with_spandrel
            return load_with_spandrel(state, model_path)
        source = f'{model_path} (detected {network_opt["type"]})'
    try:
        net = instantiate(network_opt, source or str(model_path))
    except NetworkError as err:
        raise _with_spandrel_hint(err, state) from None
    try:
        load_state(net, state, f'{model_path} (key {used or "raw"})')
    except CheckpointError as err:
        raise _mismatch(err, state, model_path, network_opt, source) from None
    return net.eval(), family_of(network_opt['type']).info(net)
