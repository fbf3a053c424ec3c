"""Each mend in kdsr_pdd.compat, tested by the behaviour that plain BasicSR 1.4.2 gets wrong."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

import kdsr_pdd.plugin  # noqa: F401  (registers the plugin into BasicSR)


def test_basicsr_degradations_import_with_current_torchvision():
    import basicsr.data.degradations as degradations
    import torchvision.transforms._functional_tensor as private

    assert degradations.rgb_to_grayscale is private.rgb_to_grayscale


def test_filter2d_accepts_non_contiguous_input():
    from basicsr.models import realesrnet_model
    from basicsr.utils.img_process_util import filter2D

    img = torch.rand(2, 3, 9, 11).transpose(2, 3)  # non-contiguous, as DiffJPEG returns
    kernel = torch.zeros(2, 3, 3)
    kernel[:, 1, 1] = 1  # identity kernel
    assert not img.is_contiguous()
    torch.testing.assert_close(realesrnet_model.filter2D(img, kernel), img, rtol=0, atol=1e-6)
    assert filter2D is realesrnet_model.filter2D


def test_init_dist_uses_gloo_without_cuda(tmp_path):
    script = (
        'import kdsr_pdd.plugin, torch.distributed as dist\n'
        'from basicsr.utils.options import init_dist\n'
        'init_dist("pytorch")\n'
        'print(dist.get_backend(), dist.get_world_size())\n'
    )
    env = dict(os.environ, RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=str(_free_port()), CUDA_VISIBLE_DEVICES='')
    out = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ['gloo', '1']


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_experiment_folders_leave_pretrained_files_alone(tmp_path):
    """BasicSR's make_exp_dirs skips path.pretrain_network_* keys: the plugin's file options are named so."""
    from basicsr.utils import make_exp_dirs

    weights = tmp_path / 'vgg19.pth'
    weights.write_bytes(b'x')
    root = tmp_path / 'experiments' / 'exp'
    opt = {'is_train': True, 'rank': 0, 'path': {
        'experiments_root': str(root), 'models': str(root / 'models'), 'training_states': str(root / 'states'),
        'log': str(root), 'visualization': str(root / 'vis'), 'pretrain_network_vgg19': str(weights),
        'pretrain_network_teacher': str(weights), 'param_key_teacher': 'params', 'resume_state': None}}
    make_exp_dirs(opt)
    assert sorted(p.name for p in root.iterdir()) == ['models', 'states', 'vis']
    assert weights.read_bytes() == b'x'


def test_check_resume_keeps_the_param_key_of_ignored_networks(tmp_path):
    from basicsr.utils import check_resume

    opt = {'network_g': {}, 'network_teacher': {}, 'path': {
        'resume_state': 'x.state', 'models': 'experiments/e/models', 'pretrain_network_g': 'g.pth',
        'param_key_g': 'params_ema', 'pretrain_network_teacher': 'teacher.pth', 'param_key_teacher': 'params_ema',
        'ignore_resume_networks': ['network_teacher']}}
    check_resume(opt, 7)
    assert opt['path']['pretrain_network_g'] == osp.join('experiments/e/models', 'net_g_7.pth')
    assert opt['path']['param_key_g'] == 'params'  # the resumed student: its raw weights
    # 1.4.2 flips this one too, so a resumed run would load the teacher's non-EMA weights
    assert opt['path']['pretrain_network_teacher'] == 'teacher.pth' and opt['path']['param_key_teacher'] == 'params_ema'


def test_realesrnet_model_runs_on_cpu_and_validates_several_sets_in_a_test_run(demo_root, tmp_path):
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.utils.registry import MODEL_REGISTRY

    opt = {'name': 'val', 'model_type': 'RealESRNetModel_basicsr', 'scale': 4, 'num_gpu': 0, 'dist': False,
           'rank': 0, 'is_train': False,
           'network_g': {'type': 'MSRResNet', 'num_feat': 4, 'num_block': 1, 'upscale': 4},
           'path': {'pretrain_network_g': None, 'visualization': str(tmp_path)},
           'val': {'save_img': False, 'suffix': None,
                   'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}}}
    model = MODEL_REGISTRY.get('RealESRNetModel_basicsr')(opt)
    assert all(t.device.type == 'cpu' for t in model.jpeger.state_dict().values())  # 1.4.2: .cuda()
    dataset_opt = {'name': 'a', 'type': 'PairedImageDataset', 'dataroot_gt': f'{demo_root}/real/val/hr',
                   'dataroot_lq': f'{demo_root}/real/val/lr', 'io_backend': {'type': 'disk'}, 'phase': 'test',
                   'scale': 4}
    loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False)
    for _ in range(2):  # 1.4.2 leaves is_train True after the first: KeyError 'kernel1' on the second
        model.validation(loader, 0, None, False)
    assert model.is_train is False and 0 < model.metric_results['psnr'] < 100


def test_realesrgan_training_pair_queue_lives_on_the_model_device():
    from basicsr.models.realesrgan_model import RealESRGANModel

    model = RealESRGANModel.__new__(RealESRGANModel)  # the queue logic alone, without networks
    model.device, model.queue_size = torch.device('cpu'), 4
    model.lq, model.gt = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 16, 16)
    model.gt_usm = model.gt
    model._dequeue_and_enqueue()  # 1.4.2: torch.zeros(...).cuda()
    assert model.queue_lr.device.type == 'cpu' and model.queue_ptr == 2
    model.lq = torch.rand(3, 3, 4, 4)
    del model.queue_lr
    with pytest.raises(ValueError, match='queue_size 4 must be divisible by the batch size 3'):
        model._dequeue_and_enqueue()
