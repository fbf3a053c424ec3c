"""Data hygiene (kdsr_pdd/data_checks.py): build-time refusals, the pre-run check, skipping undecodable images."""
import glob
import logging
import os
import random
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from conftest import load_options, write_options

import kdsr_pdd.plugin  # noqa: F401  (registers the plugin into BasicSR)
from kdsr_arch.data import KDSRHRDataset
from kdsr_pdd.commands.cli import check_pipeline_options
from kdsr_pdd.data_checks import DataError, read_headers
from kdsr_pdd.datasets import RealESRGANCropDataset
from kdsr_pdd.schema import OptionsError
from pdd_model.data import PDDMixedDataset


def _write(folder, sizes, names=None, ext='.png', seed=0):
    """Random BGR images of ``sizes`` (h, w) as ``img<i><ext>`` (or ``names``); returns their paths."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = os.path.join(str(folder), names[i] if names else f'img{i}{ext}')
        cv2.imwrite(path, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def _cut(path, keep):
    """Keep the first ``keep`` bytes of ``path`` (a fraction of the file if ``keep`` < 1)."""
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:int(len(data) * keep) if keep < 1 else keep])


@pytest.fixture
def basicsr_log():
    """Messages of BasicSR's 'basicsr' logger (where the datasets warn)."""
    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append((record.levelname, record.getMessage()))

    logger, handler = logging.getLogger('basicsr'), Collect()
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def _kdsr(folder, **extra):
    return KDSRHRDataset({'dataroot_gt': str(folder), 'gt_size': 16, 'phase': 'train', 'io_backend': {'type': 'disk'},
                          **extra})


def _realesrgan_opt(root, meta_info):
    opt = dict(load_options('options/demo/pdd_generalist_x4.yml')['datasets']['train'])
    opt.update(dataroot_gt=str(root), meta_info=str(meta_info), crop_pad_size=32, phase='train', scale=4)
    return opt


# ---------------------------------------------------------------------------------------------- headers
def test_headers_are_read_without_decoding_and_problems_named(tmp_path):
    ok, body, head, text = _write(tmp_path, [(20, 30)] * 4, names=['ok.png', 'body.png', 'head.png', 'text.jpg'])
    _cut(body, 0.5)  # header intact: only a decode finds it
    _cut(head, 20)
    open(text, 'w').write('not an image')
    (tmp_path / 'empty.png').write_bytes(b'')
    headers = read_headers([ok, body, head, text, str(tmp_path / 'empty.png')], str(tmp_path), 'disk')
    assert list(headers.values()) == [(20, 30), (20, 30), 'truncated header', 'not an image', 'empty file']


# ------------------------------------------------------------------------------------------- build time
def test_kdsr_dataset_names_unreadable_and_small_images_when_built(tmp_path):
    a, b, _, _ = _write(tmp_path, [(20, 20), (20, 20), (12, 40), (40, 40)], names=['a.png', 'b.jpg', 'c.png', 'd.png'])
    _cut(a, 20)
    open(b, 'w').write('text')
    with pytest.raises(DataError) as info:
        _kdsr(tmp_path)
    assert info.value.problems == [
        'datasets.train.dataroot_gt: 2 of 4 images cannot be read: a.png (truncated header), b.jpg (not an image); '
        'remove or replace them',
        'datasets.train.dataroot_gt: 1 of 4 images are smaller than the 16x16 crop (gt_size 16): c.png 12x40 '
        '(height x width); remove them or lower gt_size']
    assert str(info.value) == '\n'.join(info.value.problems)


def test_kdsr_dataset_names_at_most_five_files_and_counts_all(tmp_path):
    _write(tmp_path, [(8, 8)] * 7 + [(16, 16)])
    with pytest.raises(DataError, match=r'^datasets.train.dataroot_gt: 7 of 8 images are smaller than the 16x16 crop '
                                        r'\(gt_size 16\): img0.png 8x8, img1.png 8x8, img2.png 8x8, img3.png 8x8, '
                                        r'img4.png 8x8 and 2 more \(height x width\)'):
        _kdsr(tmp_path)


def test_pdd_dataset_reports_both_folders_at_once(tmp_path):
    bad = _write(tmp_path / 'hr', [(32, 32)] * 2)[0]
    _write(tmp_path / 'real', [(8, 8), (3, 8)])
    open(bad, 'wb').write(b'')
    opt = dict(dataroot_gt=str(tmp_path / 'hr'), dataroot_lq_real=str(tmp_path / 'real'), gt_size=24, scale=4,
               phase='train', io_backend={'type': 'disk'})
    with pytest.raises(DataError) as info:
        PDDMixedDataset(opt)
    assert info.value.problems == [
        'datasets.train.dataroot_gt: 1 of 2 images cannot be read: img0.png (empty file); remove or replace them',
        'datasets.train.dataroot_lq_real: 1 of 2 images are smaller than the 6x6 crop (gt_size / scale = 24 / 4): '
        'img1.png 3x8 (height x width); remove them or lower gt_size']


def test_realesrgan_crop_dataset_names_every_missing_listed_file_and_warns_about_small(tmp_path, basicsr_log):
    _write(tmp_path / 'hr', [(40, 40), (20, 50)])
    meta = tmp_path / 'meta_info.txt'
    meta.write_text('img0.png\nlost1.png\n\nlost2.png (480,480,3)\nimg1.png\n')
    with pytest.raises(DataError) as info:
        RealESRGANCropDataset(_realesrgan_opt(tmp_path / 'hr', meta))
    assert info.value.problems == [
        f'datasets.train.meta_info: {meta}: blank lines 3 (BasicSR would read the folder itself); remove them',
        f"datasets.train.meta_info: 2 of 4 listed images are not in dataroot_gt '{tmp_path / 'hr'}': lost1.png, "
        f'lost2.png; restore them or remove their lines from {meta}']

    meta.write_text('img0.png\nimg1.png\n')
    ds = RealESRGANCropDataset(_realesrgan_opt(tmp_path / 'hr', meta))
    assert basicsr_log == [('WARNING', 'datasets.train.dataroot_gt: 1 of 2 images are smaller than crop_pad_size 32: '
                                       'img1.png 20x50 (height x width); BasicSR reflect-pads them to 400 px, so each '
                                       'of their crops holds mirrored content')]
    assert ds[1]['gt'].shape == (3, 32, 32)

    meta.write_text('elsewhere/img0.png\n')
    with pytest.raises(DataError, match=r'1 of 1 listed images are not in dataroot_gt .* \(the names must be relative '
                                        r'to dataroot_gt\): elsewhere/img0.png'):
        RealESRGANCropDataset(_realesrgan_opt(tmp_path / 'hr', meta))


def test_lmdb_keys_are_looked_up_and_stored_headers_read(tmp_path):
    _write(tmp_path / 'src', [(20, 20), (10, 20)])
    db = str(tmp_path / 'hr.lmdb')
    make_lmdb_from_imgs(str(tmp_path / 'src'), db, ['img0.png', 'img1.png'], ['img0', 'img1'], map_size=1 << 22)
    with open(os.path.join(db, 'meta_info.txt'), 'a') as f:
        f.write('ghost.png (20,20,3) 1\n')
    with pytest.raises(DataError) as info:
        _kdsr(db, io_backend={'type': 'lmdb'})
    assert info.value.problems == [
        'datasets.train.dataroot_gt: 1 of 3 images cannot be read: ghost (missing from data.mdb (listed in '
        'meta_info.txt)); remove or replace them',
        'datasets.train.dataroot_gt: 1 of 3 images are smaller than the 16x16 crop (gt_size 16): img1 10x20 (height x '
        'width); remove them or lower gt_size']
    with pytest.raises(DataError, match=r"with io_backend lmdb, point it to an .lmdb folder"):
        _kdsr(tmp_path / 'src', io_backend={'type': 'lmdb'})


# -------------------------------------------------------------------------------------- loader: skipping
def test_undecodable_image_is_skipped_for_the_next_one_with_a_warning(tmp_path, basicsr_log):
    paths = _write(tmp_path, [(20, 20)] * 3)
    _cut(paths[1], 0.5)
    ds = _kdsr(tmp_path)  # the header is fine: accepted when built
    assert [ds[i]['gt_path'] for i in range(3)] == [paths[0], paths[2], paths[2]]
    assert [ds[1]['gt_path'] for _ in range(3)] == [paths[2]] * 3  # deterministic, and warned once
    assert basicsr_log == [('WARNING', 'datasets.train.dataroot_gt: img1.png cannot be decoded (corrupt or truncated '
                                       'pixel data); skipped, sample 1 uses the next image that decodes (1 of at most '
                                       '10 skipped files)')]


def test_pdd_and_realesrgan_datasets_skip_undecodable_images(tmp_path, basicsr_log):
    hr = _write(tmp_path / 'hr', [(40, 40)] * 2)
    real = _write(tmp_path / 'real', [(8, 8)] * 2)
    _cut(real[0], 0.5)
    _cut(hr[1], 0.5)
    opt = dict(dataroot_gt=str(tmp_path / 'hr'), dataroot_lq_real=str(tmp_path / 'real'), gt_size=24, scale=4,
               phase='train', io_backend={'type': 'disk'})
    ds = PDDMixedDataset(opt)
    random.seed(0)
    items = [ds[i % 2] for i in range(8)]  # the real image is drawn at random: both are drawn
    assert {it['gt_path'] for it in items} == {hr[0]} and {it['lq_real_path'] for it in items} == {real[1]}
    meta = tmp_path / 'meta_info.txt'
    meta.write_text('img0.png\nimg1.png\n')
    ds = RealESRGANCropDataset(_realesrgan_opt(tmp_path / 'hr', meta))
    assert ds[1]['gt_path'] == hr[0] and ds[1]['gt'].shape == (3, 32, 32)
    warned = sorted(message.split(' cannot')[0] for _, message in basicsr_log)
    assert warned == ['datasets.train.dataroot_gt: img1.png'] * 2 + ['datasets.train.dataroot_lq_real: img0.png']


def test_too_many_undecodable_images_stop_a_worker_with_one_error(tmp_path):
    paths = _write(tmp_path, [(16, 16)] * 12)
    for path in paths[:11]:
        _cut(path, 0.5)
    ds = _kdsr(tmp_path)
    loader = torch.utils.data.DataLoader(ds, batch_size=12, num_workers=1)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert info.value.problems == [
        'datasets.train.dataroot_gt: 11 of 12 images failed to decode while loading, more than the 10 skipped at most: '
        'img0.png, img1.png, img10.png, img2.png, img3.png and 6 more; their headers are fine, their pixel data is '
        'not: replace or remove them']
    assert int(ds.guard.failed.sum()) == 11  # the worker's flags are shared with the main process


# ------------------------------------------------------------------------------------ pre-run: pairs
def _test_options(tmp_path, gt, lq, scale=4, **dataset):
    (tmp_path / 'g.pth').write_bytes(b'')  # only its existence is checked before the data
    return {'name': 'hygiene', 'model_type': 'SRModel', 'scale': scale, 'num_gpu': 0,
            'datasets': {'test_1': {'name': 'pairs', 'type': 'PairedImageDataset', 'dataroot_gt': str(gt),
                                    'dataroot_lq': str(lq), 'io_backend': {'type': 'disk'}, **dataset}},
            'network_g': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_block': 1,
                          'num_grow_ch': 4, 'scale': scale},
            'path': {'pretrain_network_g': str(tmp_path / 'g.pth')}, 'val': {'metrics': None}}


def _prerun_problems(tmp_path, opt, is_train=False):
    with pytest.raises(OptionsError) as info:
        check_pipeline_options(write_options(opt, tmp_path / 'x.yml'), None, is_train)
    return info.value.problems


def test_pairs_that_do_not_fit_the_scale_are_named_with_their_sizes(tmp_path):
    _write(tmp_path / 'gt', [(64, 64), (66, 50), (63, 64)])
    _write(tmp_path / 'lq', [(16, 16), (16, 12), (16, 16)])  # 66x50 / 4 -> 16x12 (BasicSR crops 2 GT rows); 63 != 64
    assert _prerun_problems(tmp_path, _test_options(tmp_path, tmp_path / 'gt', tmp_path / 'lq')) == [
        'datasets.test_1.dataroot_lq: 1 of 3 pairs do not fit scale 4 (LQ = GT / 4, rounded down): img2.png (LQ 16x16, '
        'GT 63x64); check scale and dataroot_lq']
    # an x2 network on x4 pairs would be scored against a quarter of each GT
    os.remove(tmp_path / 'gt' / 'img2.png')
    os.remove(tmp_path / 'lq' / 'img2.png')
    assert _prerun_problems(tmp_path, _test_options(tmp_path, tmp_path / 'gt', tmp_path / 'lq', scale=2)) == [
        'datasets.test_1.dataroot_lq: 2 of 2 pairs do not fit scale 2 (LQ = GT / 2, rounded down): img0.png (LQ 16x16, '
        'GT 64x64), img1.png (LQ 16x12, GT 66x50); they look like x4 pairs; check scale and dataroot_lq']


def test_missing_orphan_and_unreadable_pair_members_are_named(tmp_path):
    _write(tmp_path / 'gt', [(64, 64)] * 3, names=['a.png', 'b.png', 'c.png'])
    _write(tmp_path / 'lq', [(16, 16)] * 3, names=['ax4.png', 'bx4.png', 'zx4.png'])
    open(tmp_path / 'lq' / 'bx4.png', 'w').write('text')
    opt = _test_options(tmp_path, tmp_path / 'gt', tmp_path / 'lq', filename_tmpl='{}x4')
    assert _prerun_problems(tmp_path, opt) == [
        f"datasets.test_1.dataroot_lq: 1 of 3 LQ images of '{tmp_path / 'lq'}' have no GT (BasicSR needs one per LQ): "
        'zx4.png; add their GT or remove them',
        f"datasets.test_1.dataroot_lq: 1 of 3 GT images have no LQ in '{tmp_path / 'lq'}' (LQ names from "
        "filename_tmpl '{}x4'): cx4.png (for GT c.png); add them or remove the GT",
        'datasets.test_1.dataroot_lq: 1 of 2 images cannot be read: bx4.png (not an image); remove or replace them']


def test_lmdb_and_listed_pairs_are_checked_the_way_basicsr_pairs_them(tmp_path):
    _write(tmp_path / 'gt', [(64, 64), (64, 64)], names=['a.png', 'b.png'])
    _write(tmp_path / 'lq', [(20, 20), (16, 16)], names=['a.png', 'c.png'])
    for name, names in (('gt', ['a.png', 'b.png']), ('lq', ['a.png', 'c.png'])):
        make_lmdb_from_imgs(str(tmp_path / name), str(tmp_path / f'{name}.lmdb'), names, [n[:-4] for n in names],
                            map_size=1 << 22)
    opt = _test_options(tmp_path, tmp_path / 'gt.lmdb', tmp_path / 'lq.lmdb', io_backend={'type': 'lmdb'})
    assert _prerun_problems(tmp_path, opt) == [
        'datasets.test_1.dataroot_lq: 1 of 2 GT keys have no LQ: b; add the LQ images or remove these',
        'datasets.test_1.dataroot_gt: 1 of 2 LQ keys have no GT: c; add the GT images or remove these',
        'datasets.test_1.dataroot_lq: 1 of 1 pairs do not fit scale 4 (LQ = GT / 4, rounded down): a (LQ 20x20, GT '
        '64x64); check scale and dataroot_lq']

    (tmp_path / 'meta.txt').write_text('a.png (64,64,3)\nlost.png (64,64,3)\n')  # b.png, not listed, is not read
    opt = _test_options(tmp_path, tmp_path / 'gt', tmp_path / 'lq', meta_info_file=str(tmp_path / 'meta.txt'))
    assert _prerun_problems(tmp_path, opt) == [
        f"datasets.test_1.meta_info_file: 1 of 2 listed GT images are not in '{tmp_path / 'gt'}': lost.png; restore "
        'them or remove their lines',
        'datasets.test_1.dataroot_lq: 1 of 1 pairs do not fit scale 4 (LQ = GT / 4, rounded down): a.png (LQ 20x20, '
        'GT 64x64); check scale and dataroot_lq']


def test_prerun_check_covers_training_sets_too(tmp_path):
    _write(tmp_path / 'hr', [(8, 8), (64, 64)])
    opt = _tiny_teacher(tmp_path / 'hr')
    assert _prerun_problems(tmp_path, opt, is_train=True) == [
        'datasets.train.dataroot_gt: 1 of 2 images are smaller than the 32x32 crop (gt_size 32): img0.png 8x8 (height '
        'x width); remove them or lower gt_size']


# ------------------------------------------------------------------------------------ entry points
def _tiny_teacher(hr, name='hygiene', total_iter=2):
    """The demo KDSR teacher, shrunk: tiny network, 32 px crops, no validation, one loader worker."""
    opt = load_options('options/demo/kdsr_teacher_x4.yml')
    opt.update(name=name, num_gpu=0)
    opt['network_g'].update(n_feats=8, n_blocks=2, n_encoder_res=1)
    opt['datasets'].pop('val')
    opt.pop('val')
    opt['datasets']['train'].update(dataroot_gt=str(hr), gt_size=32, batch_size_per_gpu=2, num_worker_per_gpu=1,
                                    dataset_enlarge_ratio=1)
    opt['train']['total_iter'] = total_iter
    opt['logger'].update(print_freq=1, save_checkpoint_freq=1000)
    return opt


def _entry(kind, opt_path, cwd):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, '-m', 'kdsr_pdd', kind, '-opt', str(opt_path)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_entry_points_refuse_bad_data_before_writing_anything(tmp_path):
    a, _ = _write(tmp_path / 'hr', [(40, 40), (20, 40)])
    open(a, 'w').write('text')
    opt_path = write_options(_tiny_teacher(tmp_path / 'hr'), tmp_path / 'train.yml')
    out = _entry('train', opt_path, tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.splitlines() == [
        f'error: {opt_path}: datasets.train.dataroot_gt: 1 of 2 images cannot be read: img0.png (not an image); '
        'remove or replace them',
        f'error: {opt_path}: datasets.train.dataroot_gt: 1 of 2 images are smaller than the 32x32 crop (gt_size 32): '
        'img1.png 20x40 (height x width); remove them or lower gt_size']

    _write(tmp_path / 'gt', [(64, 64)])
    _write(tmp_path / 'lq', [(16, 16)])
    opt_path = write_options(_test_options(tmp_path, tmp_path / 'gt', tmp_path / 'lq', scale=2), tmp_path / 'test.yml')
    out = _entry('test', opt_path, tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.splitlines() == [
        f'error: {opt_path}: datasets.test_1.dataroot_lq: 1 of 1 pairs do not fit scale 2 (LQ = GT / 2, rounded '
        'down): img0.png (LQ 16x16, GT 64x64); they look like x4 pairs; check scale and dataroot_lq']
    assert 'Traceback' not in out.stderr + out.stdout
    assert not (tmp_path / 'experiments').exists() and not (tmp_path / 'results').exists()


def test_training_skips_a_corrupt_image_in_a_loader_worker(tmp_path):
    paths = _write(tmp_path / 'hr', [(40, 40)] * 2)
    _cut(paths[0], 0.5)
    opt_path = write_options(_tiny_teacher(tmp_path / 'hr', name='corrupt', total_iter=2), tmp_path / 'train.yml')
    out = _entry('train', opt_path, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'Traceback' not in out.stderr
    log = open(glob.glob(str(tmp_path / 'experiments' / 'corrupt' / 'train_corrupt_*.log'))[0]).read()
    warnings = [line for line in log.splitlines() if 'cannot be decoded' in line]
    assert len(warnings) == 1, log[-3000:]  # two epochs: the known-bad file is skipped silently the second time
    assert warnings[0].endswith('WARNING: datasets.train.dataroot_gt: img0.png cannot be decoded (corrupt or '
                                'truncated pixel data); skipped, sample 0 uses the next image that decodes (1 of at '
                                'most 10 skipped files)')
    assert re.findall(r'iter:\s+(\d+),', log) == ['1', '2'] and 'End of training.' in log
