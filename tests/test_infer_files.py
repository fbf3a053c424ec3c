"""kdsr-pdd infer's file hygiene (kdsr_pdd.outputs, kdsr_pdd.images) and its one-line errors, with a tiny KDSR net.

Names that clash, earlier outputs, unusable output folders, full disks, truncated and rotated inputs, gray
with alpha, exit statuses, and the options and checkpoints that are refused before any image is read.
"""
import errno
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from infer_helpers import KDSR_FLAGS, image, kdsr, kdsr_checkpoint, read_rgb, to_uint8, write_rgb
from PIL import Image, ImageOps

from kdsr_pdd.commands.infer import main
from kdsr_pdd.images import orient, read_image


@pytest.fixture
def model(tmp_path):
    """A tiny KDSR student checkpoint; the options that use it."""
    path = tmp_path / 'w.pth'
    kdsr_checkpoint(path)
    return ['-m', str(path), *KDSR_FLAGS]


def error_line(capsys):
    """The single stderr line of a refused run (no traceback, never advice to unpickle)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith('error: ')]
    assert len(lines) == 1 and 'Traceback' not in err and 'weights_only=False' not in err, err
    return lines[0]


# -------------------------------------------------------------------------------------- output names
def test_clashing_outputs_are_refused_before_the_model_is_loaded(tmp_path, capsys):
    write_rgb(tmp_path / 'in' / 'x.png', image(16, 16))
    write_rgb(tmp_path / 'in' / 'x.jpg', image(16, 16))
    missing_model = ['-m', str(tmp_path / 'absent.pth')]  # loading it would fail: the clash is found first
    assert main(['-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--ext', 'png', *missing_model]) == 2
    line = error_line(capsys)
    assert 'x.jpg' in line and 'x.png' in line and 'x_out.png' in line and '--ext auto' in line
    assert not (tmp_path / 'out').exists()


def test_auto_extension_keeps_both_and_an_empty_suffix_never_overwrites_inputs(tmp_path, model, capsys):
    src = tmp_path / 'in'
    write_rgb(src / 'x.png', image(16, 16))
    write_rgb(src / 'x.jpg', image(16, 20, seed=1))
    assert main(['-i', str(src), '-o', str(tmp_path / 'out'), *model]) == 0
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['x_out.jpg', 'x_out.png']
    assert main(['-i', str(src), '-o', str(src), '--suffix', '', *model]) == 2
    assert 'would be overwritten' in error_line(capsys)


def test_formats_that_cannot_hold_the_result(tmp_path, model, capsys):
    """--ext jpg: alpha is written as PNG (as Real-ESRGAN does); 16 bits are rounded to 8, with a note."""
    src = tmp_path / 'in'
    src.mkdir()
    rgb8 = to_uint8(image(16, 16)).astype(np.uint8)
    cv2.imwrite(str(src / 'glass.png'), np.dstack([rgb8, np.full((16, 16), 128, np.uint8)]))
    cv2.imwrite(str(src / 'deep.png'), rgb8.astype(np.uint16) * 257)
    assert main([str(src), '-o', str(tmp_path / 'out'), '--ext', 'jpg', *model]) == 0
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['deep_out.jpg', 'glass_out.png']
    assert cv2.imread(str(tmp_path / 'out' / 'glass_out.png'), cv2.IMREAD_UNCHANGED).shape == (64, 64, 4)
    assert 'deep.png: note: 16-bit result written with 8 bits' in capsys.readouterr().err


def test_earlier_outputs_in_the_input_folder_are_not_inputs(tmp_path, model, capsys):
    src = tmp_path / 'in'
    write_rgb(src / 'a.png', image(16, 16))
    write_rgb(src / 'holiday_out.png', image(16, 16, seed=3))  # a user's file: no holiday.* beside it
    assert main([str(src), '-o', str(src), *model]) == 0
    assert main([str(src), '-o', str(src), *model]) == 0  # again: a_out.png is not taken as an input
    assert 'wrote 2, skipped 0 existing, failed 0' in capsys.readouterr().out.splitlines()[-1]
    assert sorted(p.name for p in src.iterdir()) == ['a.png', 'a_out.png', 'holiday_out.png', 'holiday_out_out.png']
    nested = src / 'results'  # -o inside the input tree with -r: that folder is left out
    assert main([str(src), '-o', str(nested), '-r', *model]) == 0
    assert main([str(src), '-o', str(nested), '-r', *model]) == 0
    assert not (nested / 'results').exists()


def test_output_that_is_a_file_is_refused_before_the_model_is_loaded(tmp_path, capsys):
    write_rgb(tmp_path / 'a.png', image(16, 16))
    (tmp_path / 'taken').write_text('a file')
    assert main([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'taken'), '-m', str(tmp_path / 'absent.pth')]) == 2
    assert 'is a file, not a folder' in error_line(capsys)


def test_read_only_output_folder_is_refused_with_the_os_reason(tmp_path, model, capsys, monkeypatch):
    write_rgb(tmp_path / 'a.png', image(16, 16))
    read_only = tmp_path / 'ro'
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.access(read_only, os.W_OK):  # root writes anyway: refuse files there as the OS does for others
        create = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == read_only:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
            return create(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, 'mkstemp', refuse)
    assert main([str(tmp_path / 'a.png'), '-o', str(read_only / 'out'), *model]) == 2
    line = error_line(capsys)
    assert 'cannot write in' in line and str(read_only) in line and 'Permission denied' in line
    read_only.chmod(0o755)


def test_full_disk_is_one_line_and_leaves_the_previous_file(tmp_path, model, capsys, monkeypatch):
    write_rgb(tmp_path / 'in' / 'a.png', image(16, 16))
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'a_out.png').write_bytes(b'previous')

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr('kdsr_pdd.outputs.os.fsync', no_space)
    assert main([str(tmp_path / 'in'), '-o', str(out), *model]) == 1
    captured = capsys.readouterr()
    failures = [line for line in captured.err.splitlines() if 'skipped' in line]
    assert len(failures) == 1 and 'No space left on device' in failures[0] and 'a_out.png' in failures[0]
    assert captured.out.splitlines()[-1].startswith('wrote 0, skipped 0 existing, failed 1')
    assert sorted(p.name for p in out.iterdir()) == ['a_out.png'] and (out / 'a_out.png').read_bytes() == b'previous'


# ----------------------------------------------------------------------------------------------- inputs
def test_truncated_files_fail_and_the_last_line_counts_them(tmp_path, model, capsys):
    src = tmp_path / 'in'
    photo = to_uint8(image(32, 40)).astype(np.uint8)
    src.mkdir()
    for name in ('cut.jpg', 'cut.png'):
        assert cv2.imwrite(str(src / name), photo)
        data = (src / name).read_bytes()
        (src / name).write_bytes(data[:len(data) // 2])
    write_rgb(src / 'good.png', image(16, 16))
    assert main([str(src), '-o', str(tmp_path / 'out'), *model]) == 1
    captured = capsys.readouterr()
    failures = [line for line in captured.err.splitlines() if 'skipped' in line]
    assert len(failures) == 2 and all('truncated' in line for line in failures), captured.err
    assert captured.out.splitlines()[-1].startswith('wrote 1, skipped 0 existing, failed 2')
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['good_out.png']


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    pixels = np.random.default_rng(orientation).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(tmp_path / 'o.png', exif=exif.tobytes())
    with Image.open(tmp_path / 'o.png') as im:
        expected = np.asarray(ImageOps.exif_transpose(im)).astype(np.float32) / 255
    assert np.array_equal(read_image(tmp_path / 'o.png').rgb, expected)
    assert np.array_equal(orient(pixels, orientation), (expected * 255).round().astype(np.uint8))


def test_rotated_jpeg_is_upscaled_upright(tmp_path, model):
    pixels = to_uint8(image(20, 28)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / 'r.jpg', exif=exif.tobytes(), quality=95)
    assert main([str(tmp_path / 'r.jpg'), '-o', str(tmp_path / 'out'), '--ext', 'png', *model]) == 0
    out = read_rgb(tmp_path / 'out' / 'r_out.png')
    upright = torch.from_numpy(read_image(tmp_path / 'r.jpg').rgb).permute(2, 0, 1)[None]
    assert upright.shape[2:] == (28, 20) and out.shape == (112, 80, 3)
    with torch.no_grad():
        assert np.abs(out - to_uint8(kdsr()(upright))).max() <= 1


def test_gray_with_alpha_stays_gray_with_alpha(tmp_path, model):
    gray = to_uint8(image(16, 20))[:, :, 0].astype(np.uint8)
    alpha = np.tile(np.linspace(0, 255, 20), (16, 1)).astype(np.uint8)
    Image.fromarray(np.dstack([gray, alpha]), 'LA').save(tmp_path / 'la.png')
    alpha_rgb = torch.from_numpy(alpha.astype(np.float32) / 255)[None, None].repeat(1, 3, 1, 1)
    with torch.no_grad():  # realesrgan: the alpha channel goes through the network as a gray image
        through_net = cv2.cvtColor(to_uint8(kdsr()(alpha_rgb)).astype(np.float32), cv2.COLOR_RGB2GRAY)
    bicubic = cv2.resize(alpha.astype(np.float32) / 255, (80, 64), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255
    for upsampler, expected in (('realesrgan', through_net), ('bicubic', bicubic)):
        out = tmp_path / upsampler
        assert main([str(tmp_path / 'la.png'), '-o', str(out), '--alpha_upsampler', upsampler, *model]) == 0
        with Image.open(out / 'la_out.png') as result:
            assert result.mode == 'LA' and result.size == (80, 64)
            assert np.abs(np.asarray(result)[:, :, 1] - expected).max() <= 1.5


# ---------------------------------------------------------------------------------- refused options
@pytest.mark.parametrize('options,expected', [
    (['--face_enhance'], '--face_enhance'),
    (['-n', 'realesr-general-x4v3'], '-dn 1'),
    (['-n', 'realesr-general-x4v3', '-dn', '0.3'], 'realesr-general-wdn-x4v3'),
    (['--device', 'gpu0'], 'not a torch device'),
    (['-g', '0', '--device', 'cpu'], 'not both'),
    (['--tile', '-4'], '--tile must be >= 0'),
    (['-s', '0'], '--outscale must be > 0'),
    (['-n', 'RealESRGAN_x4plus', '--arch', 'realesrgan-x4'], 'not both'),
])
def test_refused_options_are_one_line(tmp_path, capsys, options, expected):
    write_rgb(tmp_path / 'a.png', image(16, 16))
    assert main([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'out'), *options]) == 2
    assert expected in error_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message without CUDA')
def test_gpu_id_without_cuda_is_one_line(tmp_path, capsys):
    write_rgb(tmp_path / 'a.png', image(16, 16))
    assert main([str(tmp_path / 'a.png'), '-g', '0']) == 2
    assert 'CUDA is not available' in error_line(capsys)


def test_missing_realesrgan_model_says_where_to_put_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_rgb(tmp_path / 'inputs' / 'a.png', image(16, 16))
    assert main([]) == 2  # Real-ESRGAN's defaults: -i inputs -n RealESRGAN_x4plus -o results
    line = error_line(capsys)
    assert 'weights/RealESRGAN_x4plus.pth' in line and 'experiments/pretrained_models/RealESRGAN_x4plus.pth' in line
    assert 'kdsr-pdd convert ncnn --packaged realesrgan-x4plus' in line


def test_denoise_strength_of_other_models_is_ignored_with_a_note(tmp_path, model, capsys):
    write_rgb(tmp_path / 'a.png', image(16, 16))
    assert main([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'out'), '-dn', '0.5', *model]) == 0
    assert 'note: -dn only changes realesr-general-x4v3' in capsys.readouterr().err


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['--version'])
    from kdsr_pdd import __version__

    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f'kdsr-pdd {__version__}'
    with pytest.raises(SystemExit):
        main(['--help'])
    text = capsys.readouterr().out
    for flag in ('-i INPUT', '--model_name', '-dn', '--outscale', '--model_path', '--suffix', '--tile_pad',
                 '--pre_pad', '--face_enhance', '--fp32', '--alpha_upsampler', '--ext', '--gpu-id', '--arch',
                 '--opt', '--param-key', '--color-correction', '--recursive', '--skip-existing'):
        assert flag in text, flag


# ------------------------------------------------------------------------------------ bad checkpoints
@pytest.mark.parametrize('damage,expected', [
    ('empty', 'the file is empty'),
    ('truncated', 'truncated or not a checkpoint'),
    ('pickle', 'not a weights file'),
    ('nan', 'NaN or infinite'),
    ('param_key', "no state dict under the key 'ema'"),
    ('wrong_arch', 'is a KDSRStudent checkpoint'),
    ('negative_size', 'negative dimension'),
])
def test_checkpoint_and_arch_problems_are_one_line(tmp_path, capsys, damage, expected):
    write_rgb(tmp_path / 'a.png', image(16, 16))
    path = tmp_path / 'w.pth'
    state = {'params': kdsr().state_dict()}
    flags = list(KDSR_FLAGS)
    if damage == 'empty':
        path.write_bytes(b'')
    elif damage == 'truncated':
        torch.save(state, path)
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    elif damage == 'pickle':
        torch.save({'params': state['params'], 'extra': np.dtype('float32')}, path)
    elif damage == 'nan':
        state['params']['G.head.0.weight'][0, 0, 0, 0] = float('nan')
        torch.save(state, path)
    else:
        torch.save(state, path)
        flags = {'param_key': [*KDSR_FLAGS, '--param-key', 'ema'],
                 'wrong_arch': ['--arch', 'realesrgan-x4', '--arch-args', '{"num_block": 1}'],
                 'negative_size': ['--arch', 'realesrgan-x4', '--arch-args', '{"num_feat": -8}']}[damage]
    assert main([str(tmp_path / 'a.png'), '-o', str(tmp_path / 'out'), '-m', str(path), *flags]) == 2
    line = error_line(capsys)
    assert expected in line, line
    assert not (tmp_path / 'out').exists()
