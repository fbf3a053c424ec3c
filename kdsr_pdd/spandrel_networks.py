"""Checkpoints that no family of ours describes, loaded with spandrel's architecture detection.

spandrel (:class:`spandrel.ModelLoader`) recognises a state dict by its keys and infers the
hyper-parameters from the tensor shapes (ESRGAN variants, SRVGGNetCompact, SwinIR, HAT, DAT, ...). Its
:class:`spandrel.ImageModelDescriptor` gives the scale, the input size requirements (minimum,
multiple of, square) and whether fp16 works; :class:`SpandrelNetwork` wraps it as an ``nn.Module`` whose
forward is the descriptor's call (it pads an input to the size requirements, runs the arch's own call
function, clamps to [0, 1] and crops back), so the commands run it like any other network.
"""
import torch

from kdsr_pdd.network_info import NetworkError, NetworkInfo

_LOAD_ERRORS = (KeyError, ValueError, TypeError, RuntimeError, AssertionError, IndexError, AttributeError)


class SpandrelNetwork(torch.nn.Module):
    """An SR network built by spandrel: LR [B,C,h,w] in [0,1] -> SR [B,C,s*h,s*w] in [0,1].

    Args:
        descriptor: the :class:`spandrel.ImageModelDescriptor` spandrel returned (its module is registered
            here as ``model``, so ``.to()``, ``.eval()`` and ``state_dict()`` act on it).
    """

    def __init__(self, descriptor):
        super().__init__()
        self.model = descriptor.model
        self._descriptor = descriptor
        self.scale, self.num_in_ch = descriptor.scale, descriptor.input_channels

    def forward(self, x):
        return torch.cat([self._descriptor(x[i:i + 1]) for i in range(x.shape[0])])


def spandrel_arch(state):
    """The name of the spandrel architecture whose detection accepts ``state``, or None."""
    from spandrel import MAIN_REGISTRY
    return next((a.architecture.name for a in MAIN_REGISTRY.architectures('detection') if a.architecture.detect(state)),
                None)


def load_with_spandrel(state, source):
    """``(SpandrelNetwork in eval mode, NetworkInfo)`` of the state dict ``state`` read from ``source``.

    NetworkError (one line) when spandrel does not know the architecture, cannot build it from these
    tensors, or it is not a 3-channel image-to-image network.
    """
    import spandrel

    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(dict(state))
    except spandrel.UnsupportedModelError:
        raise NetworkError(f'cannot tell the architecture of {source}: neither the families here (KDSR, BasicSR '
                           f'RRDBNet) nor spandrel {spandrel.__version__} recognise its keys (e.g. '
                           f'{", ".join(list(state)[:3])}); pass --opt OPTIONS.yml (its network_g) or --arch NAME '
                           '[--arch-args JSON] (presets: realesrgan-x4, realesrgan-x2, kdsr-m-x4, ...).') from None
    except _LOAD_ERRORS as err:
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise NetworkError(f'{source}: spandrel recognises a {spandrel_arch(state)} checkpoint but cannot build it '
                           f'({reason}); the file may be damaged or a variant spandrel does not support.') from None
    name = descriptor.architecture.name
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise NetworkError(f'{source}: a {name} network ({descriptor.purpose}), not an image-to-image SR network.')
    if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        raise NetworkError(f'{source}: the {name} network maps {descriptor.input_channels} to '
                           f'{descriptor.output_channels} channels; only RGB (3 -> 3) networks are supported.')
    requirements = descriptor.size_requirements
    info = NetworkInfo(name, descriptor.scale, requirements.multiple_of, min_size=requirements.minimum,
                       supports_half=descriptor.supports_half, tiling=descriptor.tiling.name.lower())
    return SpandrelNetwork(descriptor).eval(), info
