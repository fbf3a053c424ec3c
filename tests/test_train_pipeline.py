"""BasicSR's own train/test pipelines driven through our entry points, on CPU."""
import glob
import os
import os.path as osp
import re

import torch
from conftest import load_options, run_entry, write_options


def _tiny_realesrnet_options(demo_root, total_iter, name='pipeline'):
    opt = load_options('options/demo/pdd_generalist_x4.yml')
    opt['name'] = name
    opt['gt_size'] = opt['datasets']['train']['gt_size'] = 32
    opt['datasets']['train']['crop_pad_size'] = 80
    opt['queue_size'] = 4
    train = opt['datasets']['train']
    train.update(dataroot_gt=f'{demo_root}/train/hr', meta_info=f'{demo_root}/train/meta_info.txt',
                 batch_size_per_gpu=2, num_worker_per_gpu=0)
    opt['datasets']['val'].update(dataroot_gt=f'{demo_root}/real/val/hr', dataroot_lq=f'{demo_root}/real/val/lr')
    opt['network_g'].update(num_feat=4, num_block=1, num_grow_ch=4)
    opt['train']['total_iter'] = total_iter
    opt['val']['val_freq'] = 1000
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2)
    return opt


def test_train_realesrgan_degradation_on_cpu_then_auto_resume(demo_root, tmp_path):
    opt_path = write_options(_tiny_realesrnet_options(demo_root, total_iter=2), tmp_path / 'train.yml')
    run_entry(['kdsr_pdd', 'train', '-opt', opt_path], cwd=tmp_path)
    exp = tmp_path / 'experiments' / 'pipeline'
    assert (exp / 'training_states' / '2.state').is_file()
    ckpt = torch.load(exp / 'models' / 'net_g_2.pth', weights_only=True)
    assert set(ckpt) == {'params', 'params_ema'}

    # continue the same experiment to 4 iterations with --auto_resume
    write_options(_tiny_realesrnet_options(demo_root, total_iter=4), opt_path)
    run_entry(['kdsr_pdd', 'train', '-opt', opt_path, '--auto_resume'], cwd=tmp_path)
    log = open(max(glob.glob(str(exp / 'train_pipeline_*.log')), key=os.path.getmtime)).read()
    assert 'Resuming training from epoch: 0, iter: 2.' in log
    iters = [int(i) for i in re.findall(r'\[epoch:\s*\d+, iter:\s+(\d+)', log)]
    assert iters == [3, 4]  # continued, not restarted
    assert (exp / 'training_states' / '4.state').is_file()
    assert (exp / 'models' / 'net_g_latest.pth').is_file()


def test_torchrun_two_cpu_processes(demo_root, tmp_path):
    opt = _tiny_realesrnet_options(demo_root, total_iter=2, name='ddp')
    opt['datasets'].pop('val')
    opt.pop('val')
    opt_path = write_options(opt, tmp_path / 'ddp.yml')
    result = run_entry(['kdsr_pdd', 'train', '-opt', opt_path, '--launcher', 'pytorch'], cwd=tmp_path, nproc=2)
    log = open(glob.glob(str(tmp_path / 'experiments' / 'ddp' / 'train_ddp_*.log'))[-1]).read()
    assert 'world_size: 2' in log, log[:3000]
    assert osp.isfile(tmp_path / 'experiments' / 'ddp' / 'models' / 'net_g_2.pth'), result.stderr[-2000:]


def test_test_entry_point_reports_psnr_and_ssim(demo_root, tmp_path):
    opt = _tiny_realesrnet_options(demo_root, total_iter=2, name='for_test')
    run_entry(['kdsr_pdd', 'train', '-opt', write_options(opt, tmp_path / 'train.yml')], cwd=tmp_path)
    test_opt = {
        'name': 'test_demo', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0,
        'datasets': {'test_1': dict(opt['datasets']['val'], phase='test')},
        'network_g': opt['network_g'],
        'path': {'pretrain_network_g': str(tmp_path / 'experiments/for_test/models/net_g_2.pth'),
                 'param_key_g': 'params_ema', 'strict_load_g': True},
        'val': {'save_img': True, 'suffix': None, 'metrics': opt['val']['metrics']},
    }
    run_entry(['kdsr_pdd', 'test', '-opt', write_options(test_opt, tmp_path / 'test.yml')], cwd=tmp_path)
    log = open(glob.glob(str(tmp_path / 'results' / 'test_demo' / 'test_test_demo_*.log'))[-1]).read()
    psnr = float(re.search(r'# psnr: ([\d.]+)', log).group(1))
    ssim = float(re.search(r'# ssim: ([\d.]+)', log).group(1))
    assert 5 < psnr < 60 and 0 < ssim <= 1, (psnr, ssim)
    assert len(os.listdir(tmp_path / 'results' / 'test_demo' / 'visualization' / 'demo_real_val')) == 2


def test_clear_errors_for_missing_option_file_and_data(tmp_path, demo_root):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, '-m', 'kdsr_pdd', 'train', '-opt', 'nope.yml'], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode != 0 and out.stderr.strip() == 'error: nope.yml: no such option file'

    from kdsr_pdd.commands.cli import check_pipeline_options  # --force_yml overrides are checked, not the raw file
    opt = _tiny_realesrnet_options(demo_root, total_iter=2)
    opt['datasets']['train']['dataroot_gt'] = 'datasets/missing'
    path = write_options(opt, tmp_path / 'a.yml')
    checked = check_pipeline_options(path, [f'datasets:train:dataroot_gt={demo_root}/train/hr', 'train:total_iter=3'],
                                     is_train=True)
    assert checked.train.total_iter == 3

    opt = _tiny_realesrnet_options(demo_root, total_iter=2)
    opt['datasets']['train']['dataroot_gt'] = 'datasets/missing'
    out = subprocess.run([sys.executable, '-m', 'kdsr_pdd', 'train', '-opt', write_options(opt, tmp_path / 'b.yml')],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0
    assert "datasets.train.dataroot_gt: 'datasets/missing': no such file or folder" in out.stderr
    assert 'Traceback' not in out.stderr
