"""Pretrained weights that users supply, read from local files only (never downloaded).

BasicSR 1.4.2's ``VGGFeatureExtractor`` (perceptual and PDD distance losses) downloads VGG19 when
``experiments/pretrained_models/vgg19-dcbb9e9d.pth`` is absent. :func:`install` routes that download
to a local file instead, looked up in this order:

1. the path given to :func:`vgg19_weights` for the ``with`` block that builds the extractor (models pass
   ``path.pretrain_network_vgg19`` from the YAML);
2. the environment variable ``KDSR_PDD_VGG19``;
3. torch's standard cache, ``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``.

If none exists, one clear error says which option to set. The file may hold the full torchvision
state dict or only the ``features.*`` entries (enough for feature extraction; used by tests).
BasicSR's own ``experiments/pretrained_models/vgg19-dcbb9e9d.pth`` (relative to the working
directory) is still read first by BasicSR itself when it exists. Other VGG types have no local
lookup and are refused instead of downloaded.
"""
import contextlib
import os
import os.path as osp

import torch
from torchvision.models import vgg as tv_vgg

VGG19_FILE = 'vgg19-dcbb9e9d.pth'
_configured_path = None


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights that the user must supply are missing; the message names the option."""


@contextlib.contextmanager
def vgg19_weights(path):
    """Within the block, VGG19 ImageNet weights come from ``path`` first (None: the default lookup)."""
    global _configured_path
    if path is not None and not osp.isfile(path):
        raise WeightsNotFoundError(f'path.pretrain_network_vgg19 = {path!r} does not exist; point it to {VGG19_FILE} '
                                   '(torchvision VGG19 ImageNet weights).')
    previous, _configured_path = _configured_path, path
    try:
        yield
    finally:
        _configured_path = previous


def find_vgg19_weights():
    """Return the local VGG19 weight file, or raise WeightsNotFoundError naming the options."""
    candidates = [_configured_path, os.environ.get('KDSR_PDD_VGG19'),
                  osp.join(torch.hub.get_dir(), 'checkpoints', VGG19_FILE)]
    for path in candidates:
        if path and osp.isfile(path):
            return path
    raise WeightsNotFoundError(
        f'VGG19 ImageNet weights not found. Set path.pretrain_network_vgg19 in the option file (or the environment '
        f'variable KDSR_PDD_VGG19) to a local {VGG19_FILE}, or place it in {osp.dirname(candidates[-1])}. '
        'Nothing is downloaded.')


def load_features_state(net, path):
    """Load a full torchvision state dict, or a ``features.*``-only one (VGG, AlexNet), strictly into ``net``."""
    state = torch.load(path, map_location='cpu', weights_only=True)
    if all(k.startswith('features.') for k in state):
        net.features.load_state_dict({k[len('features.'):]: v for k, v in state.items()}, strict=True)
    else:
        net.load_state_dict(state, strict=True)
    return net


class LocalTorchvisionModels:
    """Stands in for a torchvision models module inside a library that would download pretrained weights.

    ``<name>(pretrained=True)`` or ``<name>(weights=...)`` builds the network without weights and loads
    the local file ``weights_file(name)`` instead; without either it is torchvision's constructor.
    """

    def __init__(self, module, weights_file):
        self.module, self.weights_file = module, weights_file

    def __getattr__(self, name):
        constructor = getattr(self.module, name)

        def build(pretrained=False, weights=None, **kwargs):
            if not (pretrained or weights):
                return constructor(weights=None, **kwargs)
            path = self.weights_file(name)
            if name.startswith('vgg'):
                kwargs.setdefault('init_weights', False)  # overwritten right away
            return load_features_state(constructor(weights=None, **kwargs), path)

        return build


def _basicsr_vgg_file(name):
    """The weight file for BasicSR's ``VGGFeatureExtractor(vgg_type=name)``: VGG19 only."""
    if name != 'vgg19':
        raise WeightsNotFoundError(f'vgg_type {name}: only VGG19 ImageNet weights are read from local files '
                                   '(path.pretrain_network_vgg19); use vgg_type vgg19. Nothing is downloaded.')
    return find_vgg19_weights()


def install():
    """Make ``basicsr.archs.vgg_arch`` build VGG19 from the local file (see the module doc) instead of downloading."""
    import basicsr.archs.vgg_arch

    basicsr.archs.vgg_arch.vgg = LocalTorchvisionModels(tv_vgg, _basicsr_vgg_file)


def random_vgg19_features_file(path, seed=0):
    """Write a features-only VGG19 state dict with random weights (stand-in for tests and the demo)."""
    torch.manual_seed(seed)
    features = tv_vgg.vgg19(weights=None).features
    torch.save({f'features.{k}': v for k, v in features.state_dict().items()}, path)
    return path
