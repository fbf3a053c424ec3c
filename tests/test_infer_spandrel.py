"""kdsr-pdd infer loads checkpoints without --arch: our families first (KDSR, BasicSR RRDBNet), else spandrel.

Random-weight networks of the real layouts: Real-ESRGAN x4plus / x2plus (BasicSR RRDBNet), SRVGGNetCompact
and a tiny SwinIR built with spandrel's own arch class; wrong --arch choices are one line each.
"""
import numpy as np
import pytest
import spandrel
import torch
from basicsr.archs.rrdbnet_arch import RRDBNet
from basicsr.archs.srvgg_arch import SRVGGNetCompact
from infer_helpers import image, read_rgb, to_uint8, write_rgb
from safetensors.torch import save_file
from spandrel.architectures.SwinIR import SwinIR

from kdsr_pdd.commands.infer import main
from kdsr_pdd.networks import load_network
from kdsr_pdd.spandrel_networks import SpandrelNetwork

TINY_SWINIR = dict(img_size=16, in_chans=3, embed_dim=12, depths=[1], num_heads=[2], window_size=4, mlp_ratio=2.0,
                   upscale=2, upsampler='pixelshuffledirect')


def swinir_state():
    torch.manual_seed(0)
    return SwinIR(**TINY_SWINIR).eval().state_dict()


def run(tmp_path, capsys, checkpoint, *flags, size=(20, 24)):
    """Upscale one image with ``checkpoint``; ``(exit status, stderr, input [1,3,h,w], output path)``."""
    x = write_rgb(tmp_path / 'in.png', image(*size))
    status = main([str(tmp_path / 'in.png'), '-o', str(tmp_path / 'out'), '-m', str(checkpoint), *flags])
    return status, capsys.readouterr().err, x, tmp_path / 'out' / 'in_out.png'


def test_realesrgan_x4plus_layout_is_built_as_basicsr_rrdbnet(tmp_path, capsys):
    torch.manual_seed(0)
    net = RRDBNet(3, 3, scale=4, num_feat=64, num_block=23, num_grow_ch=32).eval()  # RealESRGAN_x4plus's shape
    torch.save({'params_ema': net.state_dict()}, tmp_path / 'RealESRGAN_x4plus.pth')
    loaded, info = load_network(tmp_path / 'RealESRGAN_x4plus.pth')
    assert type(loaded) is RRDBNet and (info.arch, info.scale, info.context) == ('RRDBNet', 4, 15 * 23 + 6)
    status, err, x, out = run(tmp_path, capsys, tmp_path / 'RealESRGAN_x4plus.pth', size=(8, 12))
    assert status == 0 and 'RRDBNet x4' in err and 'detected RRDBNet' in err
    with torch.no_grad():
        assert np.abs(read_rgb(out) - to_uint8(net(x))).max() <= 1


def test_x2_rrdbnet_is_detected_from_its_unshuffled_input(tmp_path):
    torch.manual_seed(0)
    net = RRDBNet(3, 3, scale=2, num_feat=8, num_block=2, num_grow_ch=4)
    torch.save(net.state_dict(), tmp_path / 'x2.pth')
    _, info = load_network(tmp_path / 'x2.pth')
    assert (info.arch, info.scale, info.size_multiple) == ('RRDBNet', 2, 2)


def test_swinir_loads_with_spandrel_and_matches_it(tmp_path, capsys):
    state = swinir_state()
    torch.save({'params': state}, tmp_path / 'swinir.pth')
    status, err, x, out = run(tmp_path, capsys, tmp_path / 'swinir.pth')
    assert status == 0 and 'SwinIR x2' in err, err
    result = read_rgb(out)
    assert result.shape == (40, 48, 3)
    with torch.no_grad():
        expected = to_uint8(spandrel.ModelLoader().load_from_state_dict(dict(state))(x))
    assert np.abs(result - expected).max() <= 1 and expected.std() > 1
    net, info = load_network(tmp_path / 'swinir.pth')
    assert isinstance(net, SpandrelNetwork) and info.min_size == 16 and not info.supports_half
    assert info.tiling == 'discouraged'


def test_safetensors_and_other_wrappers_load(tmp_path):
    state = swinir_state()
    save_file(state, str(tmp_path / 'swinir.safetensors'))
    torch.save({'state_dict': state}, tmp_path / 'wrapped.pth')
    for name in ('swinir.safetensors', 'wrapped.pth'):
        _, info = load_network(tmp_path / name)
        assert (info.arch, info.scale) == ('SwinIR', 2)


def test_compact_is_detected_by_spandrel(tmp_path, capsys):
    torch.manual_seed(0)
    net = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4).eval()
    torch.save({'params': net.state_dict()}, tmp_path / 'compact.pth')
    status, err, x, out = run(tmp_path, capsys, tmp_path / 'compact.pth', size=(12, 16))
    assert status == 0 and 'Compact x4' in err
    with torch.no_grad():
        assert np.abs(read_rgb(out) - to_uint8(net(x))).max() <= 1


@pytest.mark.parametrize('arch,expected', [
    ('SwinIR', 'spandrel recognises a SwinIR checkpoint: omit --arch'),  # a BasicSR arch of other sizes
    ('HAT', 'not a preset nor a registered BasicSR arch'),
    ('realesrgan-x4', 'spandrel recognises a SwinIR checkpoint'),
])
def test_wrong_arch_for_a_spandrel_checkpoint_is_one_line(tmp_path, capsys, arch, expected):
    torch.save({'params': swinir_state()}, tmp_path / 'swinir.pth')
    status, err, _, _ = run(tmp_path, capsys, tmp_path / 'swinir.pth', '--arch', arch)
    lines = [line for line in err.splitlines() if line.startswith('error: ')]
    assert status == 2 and len(lines) == 1 and expected in lines[0] and 'Traceback' not in err, err
    if arch == 'HAT':
        assert 'omit --arch' in lines[0]


def test_unknown_architecture_is_one_line(tmp_path, capsys):
    torch.save({'params': {'encoder.proj.weight': torch.zeros(4, 3, 3, 3)}}, tmp_path / 'odd.pth')
    status, err, _, _ = run(tmp_path, capsys, tmp_path / 'odd.pth')
    lines = [line for line in err.splitlines() if line.startswith('error: ')]
    assert status == 2 and len(lines) == 1
    assert 'cannot tell the architecture' in lines[0] and 'spandrel' in lines[0] and '--arch' in lines[0]


def test_realesrgan_model_name_builds_basicsr_compact(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    net = SRVGGNetCompact(num_feat=64, num_conv=16, upscale=4, act_type='prelu').eval()  # realesr-animevideov3
    (tmp_path / 'weights').mkdir()
    torch.save({'params': net.state_dict()}, tmp_path / 'weights' / 'realesr-animevideov3.pth')
    x = write_rgb(tmp_path / 'inputs' / 'frame.png', image(12, 16))
    assert main(['-n', 'realesr-animevideov3']) == 0
    assert 'SRVGGNetCompact x4 (-n realesr-animevideov3)' in capsys.readouterr().err
    with torch.no_grad():
        assert np.abs(read_rgb(tmp_path / 'results' / 'frame_out.png') - to_uint8(net(x))).max() <= 1
