"""KDSR's arch family for the commands: detection from state-dict keys, sizes from shapes, presets, and how a
student upscales an image tile by tile with one IDR per image (see :mod:`kdsr_pdd.networks`)."""
import re

from kdsr_arch.archs import IDRDDC, KDSRStudent, KDSRTeacher
from kdsr_pdd.network_info import NetworkInfo
from kdsr_pdd.networks import Family, conv_radius, register_family

_SR_BLOCK = re.compile(r'^G\.body\.0\.body\.(\d+)\.conv1\.weight$')
_ENCODER_RES = re.compile(r'^(?:E|E_st)\.E\.(\d+)\.body\.0\.weight$')


def generator_radius(generator):
    """Upper bound of the receptive-field radius (LR pixels) of a KDSR generator: its convolutions plus the
    IDR-based dynamic depthwise convolutions (functional, so not nn.Conv2d); the convolutions after the
    upsampler are counted as if at the LR resolution."""
    return conv_radius(generator) + sum(m.kernel_size // 2 for m in generator.modules() if isinstance(m, IDRDDC))


class KDSRFamily(Family):
    """KDSRStudent / KDSRTeacher in the authors' key layout (``G.*`` with ``E_st.*`` or ``E.*``)."""
    arch_types = ('KDSRStudent', 'KDSRTeacher')
    presets = {
        'kdsr-m-x4': dict(type='KDSRStudent', n_feats=64, n_blocks=53, n_encoder_res=9, scale=4),
        'kdsr-l-x4': dict(type='KDSRStudent', n_feats=128, n_blocks=28, n_encoder_res=5, scale=4),
        'kdsr-gan-x4': dict(type='KDSRStudent', n_feats=128, n_blocks=42, n_encoder_res=6, scale=4),
    }

    def detect(self, state):
        return 'G.head.0.weight' in state and ('E_st.E.0.weight' in state or 'E.E.0.weight' in state)

    def arch_options(self, state):
        teacher = 'E.E.0.weight' in state
        n_feats = state['G.head.0.weight'].shape[0]
        up = state['G.tail.0.0.weight'].shape[0] // n_feats  # 4 per x2 step, 9 for x3
        scale = 3 if up == 9 else 4 if 'G.tail.0.2.weight' in state else 2
        return dict(type='KDSRTeacher' if teacher else 'KDSRStudent', n_feats=n_feats,
                    n_blocks=sum(1 for k in state if _SR_BLOCK.match(k)),
                    n_encoder_res=sum(1 for k in state if _ENCODER_RES.match(k)), scale=scale)

    def info(self, net):
        return NetworkInfo(type(net).__name__, net.scale, needs_hr=isinstance(net, KDSRTeacher),
                           context=generator_radius(net.G))

    def advice(self, network_opt):
        if network_opt['type'] == 'KDSRTeacher':
            return ('; the KDSR teacher needs the HR image (its encoder E.E.0.weight takes LR and HR): use the student '
                    'checkpoint (KDSRStudent) for inference')
        return ''

    def image_function(self, net, lq, tiler):
        """The student's IDR z comes from one global average pool over the whole LR image, so it is computed
        once per image (its conv trunk run tile-wise with enough context to be exact), then G runs per crop."""
        if not isinstance(net, KDSRStudent):
            raise ValueError('the KDSR teacher needs the HR image: upscale with a KDSRStudent checkpoint.')
        encoder = net.E_st
        if tiler.tile:
            trunk = encoder.E[:-1]  # the convolutions before the global average pool
            pooled = tiler.spatial_mean(trunk, lq, conv_radius(trunk))
            z = encoder.compress(encoder.mlp(tiler.to_device(pooled)))
        else:
            z = encoder(tiler.to_device(lq))[0]
        return lambda crop: net.G(crop, z)


register_family(KDSRFamily())
