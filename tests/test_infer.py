"""Tests of the inference CLI (kdsr_pdd.commands.infer), tiling (kdsr_pdd.tiling) and the upscaler's tile rules
(kdsr_pdd.upscaler) with tiny random-weight nets."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from infer_helpers import (
    KDSR_FLAGS,
    KDSR_PAD,
    RRDB_PAD,
    TINY_KDSR,
    TINY_RRDB,
    image,
    kdsr,
    kdsr_checkpoint,
    read_rgb,
    rrdb,
    to_uint8,
    write_rgb,
)

import kdsr_pdd.plugin  # noqa: F401  (registers the plugin into BasicSR)
from kdsr_arch.archs import KDSRTeacher
from kdsr_pdd.commands.infer import main
from kdsr_pdd.network_info import NetworkInfo
from kdsr_pdd.networks import family_of
from kdsr_pdd.tiling import _blend_weights, measure_context, tile_spans, tiled_map, tiled_spatial_mean
from kdsr_pdd.upscaler import AUTO_TILE
from kdsr_pdd.upscaler import Upscaler as _Upscaler


def Upscaler(net, scale, **kwargs):  # noqa: N802  (the upscaler of a built network, described by its family)
    info = family_of(type(net).__name__).info(net)
    assert info.scale == scale
    return _Upscaler(net, info, **kwargs)


# ------------------------------------------------------------------------------------------ tiling
@pytest.mark.parametrize('overlap', [0, 4])
def test_tile_spans_cover_every_pixel_once(overlap):
    length, tile, pad = 30, 8, 3
    count = np.zeros(length, int)
    for span in tile_spans(length, tile, pad, overlap):
        (start, end), (low, high), (ct, cb) = span
        count[start:end] += 1
        assert (low, high) == (max(start - overlap // 2, 0), min(end + overlap // 2, length))
        assert (ct, cb) == (max(low - pad, 0), min(high + pad, length))
    assert (count == 1).all()


def test_tiled_spatial_mean_equals_whole_image_mean():
    torch.manual_seed(0)
    fn = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(5, 4, 3, padding=1))
    x = torch.rand(2, 3, 21, 26)
    with torch.no_grad():
        expected = fn(x).mean((2, 3))
        assert torch.allclose(tiled_spatial_mean(fn, x, tile=7, pad=2), expected, atol=1e-6)
        assert not torch.allclose(tiled_spatial_mean(fn, x, tile=7, pad=0), expected, atol=1e-4)


@pytest.mark.parametrize('scale,size', [(4, (37, 45)), (2, (31, 27))])
def test_tiled_rrdbnet_matches_whole_image(scale, size):
    net, x = rrdb(scale), image(*size)
    whole = Upscaler(net, scale, multiple=4 // scale)(x)
    if scale == 4:  # no padding needed: the untiled path is the plain forward
        with torch.no_grad():
            assert torch.equal(whole, net(x))
    tiled = Upscaler(net, scale, tile=12, tile_pad=RRDB_PAD, multiple=4 // scale)(x)
    assert tiled.shape == (1, 3, scale * size[0], scale * size[1])
    assert (tiled - whole).abs().max() < 1e-5
    seams = Upscaler(net, scale, tile=12, tile_pad=2, multiple=4 // scale)(x)
    assert (seams - whole).abs().max() > 1e-4  # too little context does change the result


@pytest.mark.parametrize('scale,size', [(4, (37, 45)), (2, (31, 27))])
def test_derived_context_of_rrdbnet_is_exact(scale, size):
    """Without --tile_pad the counted receptive field (21 LR pixels at x4, 42 at x2) is the context."""
    net, x = rrdb(scale), image(*size)
    upscaler = Upscaler(net, scale, tile=12)
    assert upscaler.context(12) == ((21 if scale == 4 else 42), 0, None)
    assert (upscaler(x) - Upscaler(net, scale)(x)).abs().max() < 1e-5


def test_blend_weights_sum_to_one_and_blended_tiles_are_exact():
    torch.manual_seed(0)
    convs = torch.nn.Sequential(*(torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(4)), torch.nn.PixelShuffle(1))
    x = torch.rand(1, 3, 29, 34)
    total = torch.zeros(2 * 29, 2 * 34)
    for row, wy in zip(tile_spans(29, 8, 0, 4), _blend_weights(tile_spans(29, 8, 0, 4), 29, 2)):
        for col, wx in zip(tile_spans(34, 8, 0, 4), _blend_weights(tile_spans(34, 8, 0, 4), 34, 2)):
            total[2 * row.kept[0]:2 * row.kept[1], 2 * col.kept[0]:2 * col.kept[1]] += wy[:, None] * wx[None]
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)
    with torch.no_grad():
        whole = convs(x)
        assert (tiled_map(convs, x, 1, tile=8, pad=4, overlap=4) - whole).abs().max() < 1e-6
        assert (tiled_map(convs, x, 1, tile=8, pad=1, overlap=4) - whole).abs().max() > 1e-4


def test_measured_context_finds_the_reach_of_a_conv_stack():
    """A network whose radius the family cannot count is measured with the probe: 5 convs reach 5 pixels."""
    torch.manual_seed(0)
    convs = torch.nn.Sequential(*(torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(5))).eval()
    pad, overlap, error = measure_context(lambda probe: convs, 3, 1, reach=16, tile=8, tolerance=1e-6)
    assert pad <= 5 and overlap == 0 and error < 1e-6
    info = NetworkInfo('Sequential', 1)
    upscaler = _Upscaler(convs, info, tile=8)
    x = image(30, 26)
    assert upscaler.context(8)[0] <= 5 and (upscaler(x) - _Upscaler(convs, info)(x)).abs().max() < 1e-6


def test_automatic_tiles_above_the_measured_size():
    info = family_of('RRDBNet').info(rrdb())
    upscaler = _Upscaler(rrdb(), info, tile=None)
    assert upscaler.tile_for(700, 700) == 0 and upscaler.tile_for(720, 720) == AUTO_TILE
    assert _Upscaler(rrdb(), info, tile=0).tile_for(2000, 2000) == 0
    discouraged = _Upscaler(rrdb(), NetworkInfo('SwinIR', 4, tiling='discouraged'), tile=None)
    assert discouraged.tile_for(2000, 2000) == 0


def test_tiled_kdsr_student_uses_whole_image_idr():
    net, x = kdsr(), image(36, 44)
    with torch.no_grad():
        expected = net(x)
        per_tile_idr = tiled_map(net, x, 4, tile=12, pad=KDSR_PAD)  # naive: each tile its own IDR
    tiled = Upscaler(net, 4, tile=12, tile_pad=KDSR_PAD)(x)
    assert (tiled - expected).abs().max() < 1e-5
    assert (per_tile_idr - expected).abs().max() > 1e-4


# --------------------------------------------------------------------------------------------- CLI
def test_cli_tiled_equals_untiled_and_matches_network(tmp_path, capsys):
    net = kdsr_checkpoint(tmp_path / 'student.pth')
    x = write_rgb(tmp_path / 'in' / 'img.png', image(40, 33, low=0.2, high=0.8))
    common = [str(tmp_path / 'in'), '-m', str(tmp_path / 'student.pth'), *KDSR_FLAGS]
    assert main([*common, '-o', str(tmp_path / 'whole')]) == 0
    assert main([*common, '-o', str(tmp_path / 'tiled'), '--tile', '10', '--tile-pad', str(KDSR_PAD)]) == 0
    assert main([*common, '-o', str(tmp_path / 'derived'), '--tile', '10']) == 0
    err = capsys.readouterr().err
    assert 'tile pad 9 (the receptive field: tiles are exact)' in err and 'tiles:   0%|' in err and '/16 [' in err
    whole, tiled = read_rgb(tmp_path / 'whole' / 'img_out.png'), read_rgb(tmp_path / 'tiled' / 'img_out.png')
    assert np.abs(read_rgb(tmp_path / 'derived' / 'img_out.png') - whole).max() <= 1
    with torch.no_grad():
        expected = to_uint8(net(x))
    assert whole.shape == (160, 132, 3)
    assert np.abs(whole - expected).max() <= 1 and np.abs(tiled - whole).max() <= 1
    assert expected.std() > 3  # the images carry content, not a constant


def test_arch_from_companion_yaml(tmp_path):
    exp = tmp_path / 'experiments' / 'my_student'
    net = kdsr_checkpoint(exp / 'models' / 'net_g_5.pth', seed=3)
    network = {'network_g': {'type': 'KDSRStudent', **TINY_KDSR}, 'name': 'my_student'}
    (exp / 'train_kdsr_student.yml').write_text('# GENERATE TIME: now\n# CMD:\n# train\n\n' + json.dumps(network))
    x = write_rgb(tmp_path / 'a.png', image(24, 28, seed=1))
    assert main([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'out'), '-m', str(exp / 'models' / 'net_g_5.pth'),
                 '--suffix', 'sr']) == 0
    with torch.no_grad():
        expected = to_uint8(net(x))
    assert np.abs(read_rgb(tmp_path / 'out' / 'a_sr.png') - expected).max() <= 1
    # the same file given explicitly with --opt
    assert main([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'opt'), '-m', str(exp / 'models' / 'net_g_5.pth'),
                 '--opt', str(exp / 'train_kdsr_student.yml')]) == 0
    assert np.abs(read_rgb(tmp_path / 'opt' / 'a_out.png') - expected).max() <= 1


def test_realesrgan_checkpoint_with_preset_loads_ema_weights(tmp_path):
    ema, plain = rrdb(bias=0.6, seed=1), rrdb(bias=0.2, seed=2)
    torch.save({'params_ema': ema.state_dict(), 'params': plain.state_dict()}, tmp_path / 'RealESRGAN_x4plus.pth')
    x = write_rgb(tmp_path / 'b.png', image(24, 24))
    assert main([str(tmp_path / 'b.png'), '-o', str(tmp_path / 'out'), '-m', str(tmp_path / 'RealESRGAN_x4plus.pth'),
                 '--arch', 'realesrgan-x4', '--arch-args', json.dumps(TINY_RRDB)]) == 0
    with torch.no_grad():
        expected = to_uint8(ema(x))
    out = read_rgb(tmp_path / 'out' / 'b_out.png')
    assert out.shape == (96, 96, 3) and np.abs(out - expected).max() <= 1


def test_teacher_is_refused(tmp_path, capsys):
    torch.manual_seed(0)
    teacher = KDSRTeacher(**TINY_KDSR)
    torch.save(teacher.state_dict(), tmp_path / 'teacher.pt')
    write_rgb(tmp_path / 'c.png', image(24, 24))
    base = [str(tmp_path / 'c.png'), '-o', str(tmp_path / 'out'), '-m', str(tmp_path / 'teacher.pt'), '--arch']
    assert main([*base, 'KDSRTeacher', '--arch-args', json.dumps(TINY_KDSR)]) == 2
    err = capsys.readouterr().err
    assert 'KDSRTeacher' in err and 'needs the HR image' in err and 'student checkpoint' in err
    assert main([*base, 'KDSRStudent', '--arch-args', json.dumps(TINY_KDSR)]) == 2
    err = capsys.readouterr().err
    assert 'KDSRTeacher checkpoint' in err and 'E.E.0.weight' in err and 'student checkpoint' in err
    assert not (tmp_path / 'out').exists()


def test_missing_architecture_and_fp16_on_cpu_are_clear_errors(tmp_path, capsys):
    from basicsr.archs.srresnet_arch import MSRResNet

    kdsr_checkpoint(tmp_path / 'w.pth')
    torch.save({'params': MSRResNet(num_feat=4, num_block=1).state_dict()}, tmp_path / 'other.pth')
    write_rgb(tmp_path / 'd.png', image(24, 24))
    base = [str(tmp_path / 'd.png'), '-o', str(tmp_path / 'out'), '-m', str(tmp_path / 'w.pth')]
    assert main([*base[:-1], str(tmp_path / 'other.pth')]) == 2
    err = capsys.readouterr().err
    assert 'cannot tell the architecture' in err and '--opt' in err and 'realesrgan-x4' in err
    assert main(base) == 0  # a KDSR checkpoint is recognised from its keys and shapes
    assert (tmp_path / 'out' / 'd_out.png').is_file()
    assert main([*base, *KDSR_FLAGS, '--fp16', '--device', 'cpu']) == 2
    assert '--fp16 needs a CUDA device' in capsys.readouterr().err


def test_folder_recursive_and_skip_existing(tmp_path, capsys):
    kdsr_checkpoint(tmp_path / 'w.pth')
    src, out = tmp_path / 'in', tmp_path / 'out'
    write_rgb(src / 'a.png', image(24, 24))
    write_rgb(src / 'sub' / 'b.jpg', image(24, 28, seed=2))
    (src / 'notes.txt').write_text('not an image')
    base = [str(src), '-o', str(out), '-m', str(tmp_path / 'w.pth'), *KDSR_FLAGS]
    assert main(base) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob('*.*')) == ['a_out.png']
    assert main([*base, '--recursive']) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob('*.*')) == ['a_out.png', 'sub/b_out.jpg']
    marker = np.zeros((4, 4, 3), np.uint8)
    for name in ('a_out.png', 'sub/b_out.jpg'):
        cv2.imwrite(str(out / name), marker)
    capsys.readouterr()
    assert main([*base, '-r', '--skip-existing']) == 0
    assert 'wrote 0, skipped 2 existing' in capsys.readouterr().out
    assert cv2.imread(str(out / 'a_out.png')).shape == (4, 4, 3)
    assert main([*base, '-r']) == 0
    assert cv2.imread(str(out / 'a_out.png')).shape == (96, 96, 3)


def test_gray_rgba_and_16bit_outputs(tmp_path):
    kdsr_checkpoint(tmp_path / 'w.pth')
    src, out = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    rgb8 = np.rint(image(24, 28)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    cv2.imwrite(str(src / 'gray.png'), rgb8[:, :, 0])
    alpha = np.tile(np.linspace(0, 255, 28), (24, 1)).astype(np.uint8)
    alpha[8:16, 10:20] = 30
    cv2.imwrite(str(src / 'rgba.png'), np.dstack([rgb8, alpha]))
    rgb16 = np.rint(image(24, 28, seed=5)[0].permute(1, 2, 0).numpy() * 65535).astype(np.uint16)
    cv2.imwrite(str(src / 'deep.png'), rgb16)
    assert main([str(src), '-o', str(out), '-m', str(tmp_path / 'w.pth'), *KDSR_FLAGS,
                 '--alpha_upsampler', 'bicubic']) == 0
    gray = cv2.imread(str(out / 'gray_out.png'), cv2.IMREAD_UNCHANGED)
    assert gray.shape == (96, 112) and gray.dtype == np.uint8
    rgba = cv2.imread(str(out / 'rgba_out.png'), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (96, 112, 4) and rgba.dtype == np.uint8
    expected_alpha = cv2.resize(alpha.astype(np.float32) / 255, (112, 96), interpolation=cv2.INTER_CUBIC)
    assert np.abs(rgba[:, :, 3].astype(int) - np.rint(expected_alpha.clip(0, 1) * 255)).max() <= 1
    deep = cv2.imread(str(out / 'deep_out.png'), cv2.IMREAD_UNCHANGED)
    assert deep.shape == (96, 112, 3) and deep.dtype == np.uint16
    assert np.any(deep % 257 != 0)  # genuinely 16-bit values, not 8-bit ones scaled up


def test_corrupt_file_is_reported_and_skipped(tmp_path, capsys):
    kdsr_checkpoint(tmp_path / 'w.pth')
    src, out = tmp_path / 'in', tmp_path / 'out'
    write_rgb(src / 'good.png', image(24, 24))
    (src / 'bad.png').write_bytes(b'\x89PNG\r\n\x1a\n' + os.urandom(64))
    base = ['-o', str(out), '-m', str(tmp_path / 'w.pth'), *KDSR_FLAGS]
    assert main([str(src), *base]) == 1  # any failure fails the run
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if 'skipped' in line]
    assert len(lines) == 1 and 'bad.png' in lines[0]
    assert captured.out.strip().splitlines()[-1].startswith('wrote 1, skipped 0 existing, failed 1')
    assert (out / 'good_out.png').is_file() and not (out / 'bad_out.png').exists()


def test_color_correction_matches_input_statistics(tmp_path):
    kdsr_checkpoint(tmp_path / 'w.pth')
    x = image(32, 32, low=0.25, high=0.75)
    x = x * torch.tensor([1.2, 0.5, 0.9]).view(1, 3, 1, 1)  # channel means far from the net's output
    x = write_rgb(tmp_path / 'e.png', x)
    base = [str(tmp_path / 'e.png'), '-m', str(tmp_path / 'w.pth'), *KDSR_FLAGS]
    assert main([*base, '-o', str(tmp_path / 'plain')]) == 0
    assert main([*base, '-o', str(tmp_path / 'cc'), '--color-correction']) == 0
    lq_std, lq_mean = torch.std_mean(x[0], dim=(1, 2))

    def stats(name):
        sr = torch.from_numpy(read_rgb(tmp_path / name / 'e_out.png').astype(np.float32) / 255).permute(2, 0, 1)
        return torch.std_mean(sr, dim=(1, 2))

    (_, plain_mean), (cc_std, cc_mean) = stats('plain'), stats('cc')
    assert (plain_mean - lq_mean).abs().max() > 0.1
    assert (cc_mean - lq_mean).abs().max() < 0.01 and (cc_std - lq_std).abs().max() < 0.01


def test_module_runs_as_subprocess(tmp_path):
    kdsr_checkpoint(tmp_path / 'w.pth')
    write_rgb(tmp_path / 'f.png', image(24, 24))
    result = subprocess.run([sys.executable, '-m', 'kdsr_pdd', 'infer', str(tmp_path / 'f.png'), '-o',
                             str(tmp_path / 'out'), '-m', str(tmp_path / 'w.pth'), *KDSR_FLAGS, '--tile', '16'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'wrote 1' in result.stdout
    assert cv2.imread(str(tmp_path / 'out' / 'f_out.png')).shape == (96, 96, 3)


def test_glibc_is_told_to_reuse_freed_memory_unless_the_user_set_malloc(monkeypatch):
    from kdsr_pdd.memory import release_free_memory, reuse_freed_memory
    assert reuse_freed_memory() is sys.platform.startswith('linux')
    release_free_memory()
    monkeypatch.setenv('MALLOC_ARENA_MAX', '2')
    assert reuse_freed_memory() is False
