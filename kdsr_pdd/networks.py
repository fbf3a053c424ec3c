"""SR networks for the commands (infer, export, report, figures): from option files, presets or checkpoints.

An arch *family* knows its networks the way spandrel's ``Architecture`` does: it recognises a state dict
by its keys, infers the constructor arguments from tensor shapes, names presets, and says what inference
needs (:class:`NetworkInfo`: scale, input size multiple, whether the HR is needed, how to run one image).
Families register with :func:`register_family`: BasicSR's RRDBNet here, KDSR's in
:mod:`kdsr_arch.families`.

Where the network description comes from, in this order (:func:`resolve_network_opt`): an option file's
``network_g`` (``--opt``), ``--arch`` (a preset or a registered arch type, with ``--arch-args``), the YAML
next to the checkpoint (``<stem>.yml`` or the experiment's copied option file), or the checkpoint itself
(a family that detects its keys).
"""
import json
from dataclasses import dataclass
from pathlib import Path

from kdsr_pdd.checkpoints import CheckpointError, load_state, read_state_dict


class NetworkError(ValueError):
    """A network choice, option file or checkpoint that cannot work; the message says which (one line)."""


@dataclass(frozen=True)
class NetworkInfo:
    """What running a network on images needs.

    Args:
        arch: registered arch type.
        scale: upscaling factor.
        size_multiple: input height and width must be multiples of this (the input is padded to it).
        needs_hr: the network's forward takes the HR too (KDSR teachers): it cannot upscale images.
    """
    arch: str
    scale: int
    size_multiple: int = 1
    needs_hr: bool = False


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


def network_scale(net):
    """The integer upscaling factor of a built network (its ``scale`` or ``upscale`` attribute)."""
    scale = getattr(net, 'scale', None) or getattr(net, 'upscale', None)
    if not isinstance(scale, int) or scale < 1:
        raise NetworkError(f'cannot tell the upscaling factor of {type(net).__name__} (no integer scale/upscale).')
    return scale


class RRDBNetFamily(Family):
    """BasicSR's RRDBNet (ESRGAN, Real-ESRGAN x4plus / x2plus, BSRGAN after key renaming)."""
    arch_types = ('RRDBNet', )
    _X4 = dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, scale=4, num_feat=64, num_block=23, num_grow_ch=32)
    presets = {'realesrgan-x4': _X4, 'realesrgan-x2': dict(_X4, scale=2)}

    def info(self, net):
        scale = network_scale(net)  # BasicSR's RRDBNet pixel-unshuffles by 2 at x2 and by 4 at x1
        return NetworkInfo('RRDBNet', scale, {1: 4, 2: 2}.get(scale, 1))


register_family(RRDBNetFamily())


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
        try:
            extra = json.loads(arch_args) if arch_args else {}
        except json.JSONDecodeError as err:
            raise NetworkError(f'--arch-args is not valid JSON ({err}).') from None
        if not isinstance(extra, dict):
            raise NetworkError('--arch-args must be a JSON object of keyword arguments.')
        return {**presets().get(arch, {'type': arch}), **extra}, f'--arch {arch}'
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
    return Arch._lookup(arch.type)(**arch.kwargs)


def _detected(state):
    """``(family, network options)`` of the first family that recognises ``state``, else ``(None, None)``."""
    for family in _FAMILIES:
        if family.detect(state):
            return family, family.arch_options(state)
    return None, None


def detect_network_opt(state, source):
    """The network options of a state dict whose keys one registered family recognises."""
    _, network_opt = _detected(state)
    if network_opt is not None:
        return network_opt
    raise NetworkError(f'cannot tell the architecture of {source}: pass --opt OPTIONS.yml (its network_g) or --arch '
                       f'NAME [--arch-args JSON] (presets: {", ".join(presets())}).')


def load_network(model_path, network_opt=None, param_key=None, source=None):
    """``(net in eval mode, NetworkInfo)``: the network of ``network_opt`` (or detected), weights loaded strictly."""
    state, used = read_state_dict(str(model_path), param_key)
    if network_opt is None:
        network_opt = detect_network_opt(state, model_path)
        source = f'{model_path} (detected {network_opt["type"]})'
    net = instantiate(network_opt, source or str(model_path))
    try:
        load_state(net, state, f'{model_path} (key {used or "raw"})')
    except CheckpointError:
        family, detected = _detected(state)
        if detected is None or detected['type'] == network_opt['type']:
            raise
        raise NetworkError(f'{model_path} is a {detected["type"]} checkpoint (detected from its keys, e.g. '
                           f'{next(iter(state))}), not the {network_opt["type"]} of {source}'
                           f'{family.advice(detected)}.') from None
    return net.eval(), family_of(network_opt['type']).info(net)

