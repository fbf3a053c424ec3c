"""Each mend in kdsr_pdd.compat, tested by the behaviour that plain BasicSR 1.4.2 gets wrong."""
import os
import os.path as osp
import subprocess
import sys
from collections import Counter

import pytest
import torch

import kdsr_pdd  # noqa: F401  (applies the mends)
from kdsr_pdd import compat


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


def _minimal_sr_opt(tmp_path, train=True, **train_extra):
    opt = {
        'name': 'compat', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0, 'dist': False, 'rank': 0,
        'world_size': 1, 'is_train': train,
        'network_g': {'type': 'MSRResNet', 'num_feat': 4, 'num_block': 1, 'upscale': 2},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'models': str(tmp_path),
                 'training_states': str(tmp_path)},
        'train': {
            'ema_decay': 0,
            'optim_g': {'type': 'Adam', 'lr': 1e-3},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5},
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
            **train_extra,
        },
    }
    return opt


def test_building_a_model_leaves_the_options_intact(tmp_path):
    from basicsr.models.sr_model import SRModel

    opt = _minimal_sr_opt(tmp_path)
    SRModel(opt)
    assert opt['train']['optim_g']['type'] == 'Adam'
    assert opt['train']['scheduler']['type'] == 'MultiStepLR'
    second = SRModel(opt)  # 1.4.2: KeyError 'type'
    assert len(second.schedulers) == 1


def test_any_torch_optimizer_by_name(tmp_path):
    from basicsr.models.sr_model import SRModel

    model = SRModel(_minimal_sr_opt(tmp_path))
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert type(model.get_optimizer('AdamW', params, 1e-3, weight_decay=0.01)) is torch.optim.AdamW
    with pytest.raises(ValueError, match='optim_.*Adamm'):
        model.get_optimizer('Adamm', params, 1e-3)


def test_checkpoints_written_atomically_and_errors_raised(tmp_path, monkeypatch):
    from basicsr.models.sr_model import SRModel

    model = SRModel(_minimal_sr_opt(tmp_path))
    model.save_network(model.net_g, 'net_g', 5)
    target = tmp_path / 'net_g_5.pth'
    before = target.read_bytes()
    assert set(torch.load(target, weights_only=True)) == {'params'}

    real_save = torch.save

    def failing_save(obj, f):
        real_save({'partial': torch.zeros(1)}, f)
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(OSError, match='disk full'):  # 1.4.2 logs a warning and goes on
        model.save_network(model.net_g, 'net_g', 5)
    with pytest.raises(OSError, match='disk full'):
        model.save_training_state(0, 5)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ['net_g_5.pth']  # no temp file, no truncated state


def test_resume_state_loads_on_cpu(tmp_path, monkeypatch):
    import basicsr.train

    monkeypatch.chdir(tmp_path)
    states = tmp_path / 'experiments' / 'exp' / 'training_states'
    states.mkdir(parents=True)
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([param])
    param.grad = torch.ones(3)
    optimizer.step()
    from basicsr.models.lr_scheduler import MultiStepRestartLR
    scheduler = MultiStepRestartLR(optimizer, milestones=[4, 8])
    for it in (2, 10):
        compat.atomic_torch_save({'epoch': 0, 'iter': it, 'optimizers': [optimizer.state_dict()],
                                  'schedulers': [scheduler.state_dict()]}, states / f'{it}.state')
    opt = {'name': 'exp', 'auto_resume': True, 'network_g': {}, 'path': {'models': 'experiments/exp/models'}}
    state = basicsr.train.load_resume_state(opt)  # 1.4.2: storage.cuda() fails without a GPU
    assert state['iter'] == 10
    assert state['optimizers'][0]['state'][0]['exp_avg'].device.type == 'cpu'
    assert isinstance(state['schedulers'][0]['milestones'], Counter)
    assert opt['path']['pretrain_network_g'] == osp.join('experiments/exp/models', 'net_g_10.pth')

    opt = {'name': 'exp', 'auto_resume': False, 'path': {'resume_state': 'missing.state'}}
    with pytest.raises(FileNotFoundError, match='path.resume_state'):
        basicsr.train.load_resume_state(opt)


def test_init_dist_uses_gloo_without_cuda(tmp_path):
    script = (
        'import kdsr_pdd, torch.distributed as dist\n'
        'from basicsr.utils.options import init_dist\n'
        'init_dist("pytorch")\n'
        'print(dist.get_backend(), dist.get_world_size())\n'
    )
    env = dict(os.environ, RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=str(_free_port()), CUDA_VISIBLE_DEVICES='')
    out = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ['gloo', '1']


def test_vgg_feature_extractor_reads_local_weights_and_never_downloads(tmp_path, monkeypatch):
    from basicsr.archs.vgg_arch import VGGFeatureExtractor

    from kdsr_pdd import vgg

    monkeypatch.chdir(tmp_path)  # no experiments/pretrained_models here
    monkeypatch.delenv('KDSR_PDD_VGG19', raising=False)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'empty_cache'))
    monkeypatch.setattr(vgg, '_configured_path', None)

    def no_download(*args, **kwargs):
        raise AssertionError('tried to download')

    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_download)
    with pytest.raises(vgg.WeightsNotFoundError, match='path.vgg19_weights'):
        VGGFeatureExtractor(['conv1_2'])

    with pytest.raises(vgg.WeightsNotFoundError, match='vgg_type vgg16'):
        VGGFeatureExtractor(['conv1_2'], vgg_type='vgg16')

    weights = vgg.random_vgg19_features_file(tmp_path / 'vgg19_random.pth', seed=3)
    with vgg.vgg19_weights(str(weights)):
        extractor = VGGFeatureExtractor(['conv1_2'], vgg_type='vgg19')
    assert vgg._configured_path is None  # scoped to the block
    expected = torch.load(weights, weights_only=True)['features.0.weight']
    assert torch.equal(extractor.vgg_net[0].weight, expected)


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_experiment_folders_ignore_file_options(tmp_path):
    from basicsr.utils import make_exp_dirs

    weights = tmp_path / 'vgg19.pth'
    weights.write_bytes(b'x')
    root = tmp_path / 'experiments' / 'exp'
    opt = {'is_train': True, 'path': {
        'experiments_root': str(root), 'models': str(root / 'models'), 'training_states': str(root / 'states'),
        'log': str(root), 'visualization': str(root / 'vis'), 'vgg19_weights': str(weights),
        'pretrain_teacher': str(weights), 'resume_state': None}}
    make_exp_dirs(dict(opt, rank=1))  # other ranks leave the folders to rank 0
    assert not root.exists()
    make_exp_dirs(opt)  # 1.4.2: FileExistsError on vgg19_weights / pretrain_teacher
    assert sorted(p.name for p in root.iterdir()) == ['models', 'states', 'vis']
    assert weights.read_bytes() == b'x'


def test_device_agnostic_realesrnet_validates_several_sets_in_a_test_run(demo_root, tmp_path):
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.utils.registry import MODEL_REGISTRY

    opt = {'name': 'val', 'model_type': 'DeviceAgnosticRealESRNetModel', 'scale': 4, 'num_gpu': 0, 'dist': False,
           'rank': 0, 'is_train': False,
           'network_g': {'type': 'MSRResNet', 'num_feat': 4, 'num_block': 1, 'upscale': 4},
           'path': {'pretrain_network_g': None, 'visualization': str(tmp_path)},
           'val': {'save_img': False, 'suffix': None,
                   'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}}}
    model = MODEL_REGISTRY.get('DeviceAgnosticRealESRNetModel')(opt)
    assert all(t.device.type == 'cpu' for t in model.jpeger.state_dict().values())  # 1.4.2: .cuda()
    dataset_opt = {'name': 'a', 'type': 'PairedImageDataset', 'dataroot_gt': f'{demo_root}/real/val/hr',
                   'dataroot_lq': f'{demo_root}/real/val/lr', 'io_backend': {'type': 'disk'}, 'phase': 'test',
                   'scale': 4}
    loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False)
    for _ in range(2):  # 1.4.2 leaves is_train True after the first: KeyError 'kernel1' on the second
        model.validation(loader, 0, None, False)
    assert model.is_train is False and 0 < model.metric_results['psnr'] < 100


def test_models_load_raw_state_dicts_strictly(tmp_path):
    from basicsr.archs.srresnet_arch import MSRResNet
    from basicsr.models.sr_model import SRModel

    from kdsr_pdd.checkpoints import CheckpointError

    torch.manual_seed(0)
    source = MSRResNet(num_feat=4, num_block=1, upscale=2)
    torch.save({f'module.{k}': v for k, v in source.state_dict().items()}, tmp_path / 'raw.pth')
    opt = _minimal_sr_opt(tmp_path)
    opt['path'].update(pretrain_network_g=str(tmp_path / 'raw.pth'), param_key_g='params')
    model = SRModel(opt)  # 1.4.2: KeyError 'params'
    assert torch.equal(model.net_g.conv_first.weight, source.conv_first.weight)

    opt['network_g']['num_block'] = 2
    with pytest.raises(CheckpointError, match='missing body.1'):  # 1.4.2 prints a warning, then raises deep in torch
        SRModel(opt)
