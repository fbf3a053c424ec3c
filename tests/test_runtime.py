"""What the plugin adds to BasicSR's BaseModel (kdsr_pdd.runtime): checkpoints, optimizers, resume, VGG weights."""
import os
import os.path as osp
from collections import Counter

import pytest
import torch
from conftest import minimal_sr_opt

import kdsr_pdd.plugin  # noqa: F401  (registers the plugin into BasicSR)
from kdsr_pdd.checkpoints import atomic_torch_save


def test_any_torch_optimizer_by_name(tmp_path):
    from basicsr.models.sr_model import SRModel

    model = SRModel(minimal_sr_opt(tmp_path, 'runtime'))
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert type(model.get_optimizer('AdamW', params, 1e-3, weight_decay=0.01)) is torch.optim.AdamW
    with pytest.raises(ValueError, match='optim_.*Adamm'):
        model.get_optimizer('Adamm', params, 1e-3)


def test_checkpoints_written_atomically_and_errors_raised(tmp_path, monkeypatch):
    from basicsr.models.sr_model import SRModel

    model = SRModel(minimal_sr_opt(tmp_path, 'runtime'))
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
    (tmp_path / 'experiments' / 'exp' / 'models').mkdir()
    for it in (2, 10):
        atomic_torch_save({'epoch': 0, 'iter': it, 'optimizers': [optimizer.state_dict()],
                                  'schedulers': [scheduler.state_dict()]}, states / f'{it}.state')
        (tmp_path / 'experiments' / 'exp' / 'models' / f'net_g_{it}.pth').write_bytes(b'networks')
    opt = {'name': 'exp', 'auto_resume': True, 'network_g': {}, 'path': {'models': 'experiments/exp/models'}}
    state = basicsr.train.load_resume_state(opt)  # 1.4.2: storage.cuda() fails without a GPU
    assert state['iter'] == 10
    assert state['optimizers'][0]['state'][0]['exp_avg'].device.type == 'cpu'
    assert isinstance(state['schedulers'][0]['milestones'], Counter)
    assert opt['path']['pretrain_network_g'] == osp.join('experiments/exp/models', 'net_g_10.pth')

    from kdsr_pdd.resume import ResumeError

    opt = {'name': 'exp', 'auto_resume': False, 'path': {'resume_state': 'missing.state'}}
    with pytest.raises(ResumeError, match='path.resume_state'):
        basicsr.train.load_resume_state(opt)
    opt = {'name': 'exp', 'auto_resume': False, 'network_g': {}, 'network_d': {},
           'path': {'resume_state': str(states / '10.state'), 'models': 'experiments/exp/models'}}
    with pytest.raises(ResumeError, match='needs the network checkpoint experiments/exp/models/net_d_10.pth, which '
                                          'is missing'):
        basicsr.train.load_resume_state(opt)


def test_vgg_feature_extractor_reads_local_weights_and_never_downloads(tmp_path, monkeypatch):
    from basicsr.archs.vgg_arch import VGGFeatureExtractor

    from kdsr_pdd import weights as vgg

    monkeypatch.chdir(tmp_path)  # no experiments/pretrained_models here
    monkeypatch.delenv('KDSR_PDD_VGG19', raising=False)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'empty_cache'))
    monkeypatch.setattr(vgg, '_configured_path', None)

    def no_download(*args, **kwargs):
        raise AssertionError('tried to download')

    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_download)
    with pytest.raises(vgg.WeightsNotFoundError, match='path.pretrain_network_vgg19'):
        VGGFeatureExtractor(['conv1_2'])

    with pytest.raises(vgg.WeightsNotFoundError, match='vgg_type vgg16'):
        VGGFeatureExtractor(['conv1_2'], vgg_type='vgg16')

    weights = vgg.random_vgg19_features_file(tmp_path / 'vgg19_random.pth', seed=3)
    with vgg.vgg19_weights(str(weights)):
        extractor = VGGFeatureExtractor(['conv1_2'], vgg_type='vgg19')
    assert vgg._configured_path is None  # scoped to the block
    expected = torch.load(weights, weights_only=True)['features.0.weight']
    assert torch.equal(extractor.vgg_net[0].weight, expected)


def test_models_load_raw_state_dicts_strictly(tmp_path):
    from basicsr.archs.srresnet_arch import MSRResNet
    from basicsr.models.sr_model import SRModel

    from kdsr_pdd.checkpoints import CheckpointError

    torch.manual_seed(0)
    source = MSRResNet(num_feat=4, num_block=1, upscale=2)
    torch.save({f'module.{k}': v for k, v in source.state_dict().items()}, tmp_path / 'raw.pth')
    opt = minimal_sr_opt(tmp_path, 'runtime')
    opt['path'].update(pretrain_network_g=str(tmp_path / 'raw.pth'), param_key_g='params')
    model = SRModel(opt)  # 1.4.2: KeyError 'params'
    assert torch.equal(model.net_g.conv_first.weight, source.conv_first.weight)

    opt['network_g']['num_block'] = 2
    with pytest.raises(CheckpointError, match='missing body.1'):  # 1.4.2 prints a warning, then raises deep in torch
        SRModel(opt)
