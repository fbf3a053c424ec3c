"""PDDModel: gradient routing, static / EMA references, discriminator inputs, shared VGG pass,
checkpoint formats, validation, and end-to-end BasicSR training (single process, resume, 2-process DDP).

Tiny sizes throughout: RRDBNet(num_feat 8, num_block 1, num_grow_ch 4), U-Net D num_feat 8, 32-px HR
crops at x4 (LR 8 px), random-weight VGG19.
"""
import contextlib
import copy
import glob
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.archs.vgg_arch import VGGFeatureExtractor
from basicsr.data import build_dataset
from basicsr.losses import build_loss
from basicsr.models import build_model
from conftest import REPO, load_options, run_entry, write_options

import kdsr_pdd.plugin  # noqa: F401  (registers the plugin into BasicSR)
from kdsr_pdd.checkpoints import CheckpointError
from kdsr_pdd.weights import random_vgg19_features_file
from pdd_model.color import color_correct
from pdd_model.models import ConcatsRebuiltInBackward, PDDModel

NET_G = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4,
         'scale': 4}
B = 2  # synthetic and real images per batch


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def vgg_file(tmp_path_factory):
    return random_vgg19_features_file(str(tmp_path_factory.mktemp('vgg') / 'vgg19.pth'))


@pytest.fixture(scope='module')
def generalist(tmp_path_factory):
    """A Real-ESRGAN-format checkpoint {'params_ema', 'params'} with different tensors in each key."""
    torch.manual_seed(1)
    ema, plain = build_network(NET_G).state_dict(), build_network(NET_G).state_dict()
    path = str(tmp_path_factory.mktemp('ckpt') / 'generalist.pth')
    torch.save({'params_ema': ema, 'params': plain}, path)
    return path, ema, plain


def train_section(reference='ema', **overrides):
    """The ``train`` options of the paper's configuration, scaled to tiny tests."""
    train = {
        'reference': reference,
        'ema_decay': 0.999,
        'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
        'optim_d': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
        'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
        'total_iter': 4,
        'warmup_iter': -1,
        'pixel_opt': {'type': 'HaarWaveletLoss', 'loss_weight': 0.5, 'band_weights': [1.0, 0.1, 0.01]},
        'vgg_opt': {'vgg_type': 'vgg19', 'use_input_norm': True, 'range_norm': False,
                    'perceptual_layer_weights': {'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_4': 1, 'conv4_4': 1,
                                                 'conv5_4': 1},
                    'perceptual_weight': 1.0},
        'distill_opt': {'type': 'PairwiseDistanceDistillationLoss',
                        'inter_layer_weights': {'conv2_1': 0.25, 'conv3_1': 0.25, 'conv4_1': 0.25, 'conv5_1': 0.25},
                        'intra_layer_weights': {'conv2_2': 0.1, 'conv3_4': 0.3, 'conv4_4': 1, 'conv5_4': 1},
                        'inter_mode': 'gram_change', 'intra_criterion': 'ce'},
        'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla', 'real_label_val': 1.0, 'fake_label_val': 0.0,
                    'loss_weight': 0.01},
        'net_d_iters': 1,
        'net_d_init_iters': 0,
        'distill_warmup_iters': 1 if reference == 'ema' else 0,
    }
    train.update(overrides)
    return train


def model_opt(tmp_path, generalist_path, vgg_file, reference='ema', pretrain_g=None, path_extra=None, val=None,
              **train):
    """In-process options as BasicSR's parse_options would produce them (CPU, no DDP)."""
    opt = {
        'name': 'pdd_unit', 'model_type': 'PDDModel', 'scale': 4, 'num_gpu': 0, 'is_train': True, 'dist': False,
        'rank': 0, 'world_size': 1, 'manual_seed': 0,
        'network_g': dict(NET_G),
        'network_d': {'type': 'UNetDiscriminatorSN_basicsr', 'num_in_ch': 3, 'num_feat': 8, 'skip_connection': True},
        'path': {'pretrain_network_g': pretrain_g or generalist_path, 'param_key_g': 'params_ema',
                 'strict_load_g': True, 'resume_state': None, 'models': str(tmp_path / 'models'),
                 'training_states': str(tmp_path / 'states'), 'visualization': str(tmp_path / 'vis'),
                 'pretrain_network_vgg19': vgg_file},
        'train': train_section(reference, **train),
        'val': val or {'val_freq': 1, 'save_img': False},
        'datasets': {'train': {'name': 'unit', 'type': 'PDDMixedDataset', 'dataroot_gt': 'unused',
                               'dataroot_lq_real': 'unused', 'gt_size': 32, 'batch_size_per_gpu': B,
                               'num_worker_per_gpu': 0}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 1},
    }
    if reference == 'static':
        opt['network_reference'] = dict(NET_G)
        opt['path'].update(pretrain_network_reference=generalist_path, param_key_reference='params',  # != student
                           ignore_resume_networks=['network_reference'])
    opt['path'].update(path_extra or {})
    return opt


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'gt': torch.rand(B, 3, 32, 32, generator=g), 'lq': torch.rand(B, 3, 8, 8, generator=g),
            'lq_real': torch.rand(B, 3, 8, 8, generator=g)}


def params(net):
    return {k: v.detach().clone() for k, v in net.named_parameters()}


@pytest.fixture
def make_model(tmp_path, vgg_file, generalist):
    def make(reference='ema', **kwargs):
        torch.manual_seed(0)
        model = build_model(model_opt(tmp_path, generalist[0], vgg_file, reference, **kwargs))
        assert isinstance(model, PDDModel)
        return model

    return make


def test_static_reference_frozen_and_gradients_reach_only_student(make_model):
    model = make_model('static')
    ref = model.net_ref
    assert ref is not model.net_g_ema and not ref.training
    assert not any(p.requires_grad for p in ref.parameters())
    ref_before, student_before = params(ref), params(model.net_g)
    for it in range(1, 4):
        model.feed_data(batch(it))
        model.optimize_parameters(it)
        assert {'l_inter', 'l_intra', 'l_g_pix', 'l_g_percep', 'l_g_gan', 'l_d_real', 'l_d_fake'} <= set(model.log_dict)
        assert all(p.grad is None for p in ref.parameters())
        assert all(p.grad is None for p in model.vgg.parameters())
        assert all(p.grad is not None for p in model.net_g.parameters())
        for k, v in ref.named_parameters():
            assert torch.equal(v, ref_before[k]), k  # bit-identical over steps
    assert any(not torch.equal(v, student_before[k]) for k, v in model.net_g.named_parameters())


@pytest.mark.parametrize('detach', [True, False])
def test_distillation_gradient_matches_oracle(make_model, detach):
    """Only the distillation acts (pixel, perceptual, GAN off); the student's gradient equals an
    independent computation with separate forwards, S(x_syn) detached or not (``distill_detach_syn``)."""
    model = make_model('static', pixel_opt=None, gan_on_real=False, distill_detach_syn=detach,
                       vgg_opt={'perceptual_weight': 0},
                       gan_opt={'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.0})
    student = copy.deepcopy(model.net_g)
    data = batch(1)
    model.feed_data(data)
    model.optimize_parameters(1)
    assert {'l_inter', 'l_intra'} <= set(model.log_dict) and 'l_g_percep' not in model.log_dict

    with torch.no_grad():
        ref_syn, ref_real = model.net_ref(data['lq']), model.net_ref(data['lq_real'])
    with torch.set_grad_enabled(not detach):
        sr_syn = student(data['lq'])
    sr_real = student(data['lq_real'])
    l_inter, l_intra = model.cri_distill(*(model.vgg(x) for x in (sr_syn, sr_real, ref_syn, ref_real)))
    (l_inter + l_intra).backward()
    for (k, p), q in zip(student.named_parameters(), model.net_g.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-7), k
    assert sum(p.grad.abs().sum() for p in student.parameters()) > 0


def test_naive_distillation_baseline(make_model):
    """Eq. 3: L1 between the student's and the reference's predictions on real inputs; no VGG on them."""
    model = make_model('static', distill_opt={'type': 'NaiveDistillationLoss', 'loss_weight': 1.0,
                                              'criterion': 'l1'})
    data = batch(2)
    with torch.no_grad():
        expected = torch.nn.functional.l1_loss(model.net_g(data['lq_real']), model.net_ref(data['lq_real']))
    sizes = []
    model.vgg.vgg_net[0].register_forward_pre_hook(lambda module, inputs: sizes.append(inputs[0].shape[0]))
    model.feed_data(data)
    model.optimize_parameters(1)
    assert model.log_dict['l_naive'] == pytest.approx(expected.item(), rel=1e-4)
    assert 'l_inter' not in model.log_dict and sizes == [B, B]  # GT and S_syn (for the perceptual loss only)


def test_ema_reference_starts_equal_and_follows_ema_rule(make_model, generalist):
    model = make_model('ema')
    assert model.net_ref is model.net_g_ema and not model.net_ref.training
    for k, v in model.net_g.named_parameters():  # same generalist checkpoint -> identical start
        assert torch.equal(v, model.net_ref.state_dict()[k]) and torch.equal(v, generalist[1][k])
    for it in range(1, 4):
        ema_before = params(model.net_ref)
        model.feed_data(batch(it))
        model.optimize_parameters(it)
        student_after = params(model.net_g)
        assert all(p.grad is None for p in model.net_ref.parameters())
        for k, v in model.net_ref.named_parameters():
            expected = ema_before[k].mul_(0.999).add_(student_after[k], alpha=1 - 0.999)
            assert torch.equal(v, expected), k
        # distillation starts after distill_warmup_iters (1) supervised steps
        assert ('l_inter' in model.log_dict) == (it > 1)


def test_ema_needs_distillation_warmup(make_model):
    with pytest.raises(ValueError, match='distill_warmup_iters'):
        make_model('ema', distill_warmup_iters=0)


@pytest.mark.parametrize('kwargs, match', [
    ({'reference': 'frozen'}, 'train.reference'),
    ({'reference': 'ema', 'ema_decay': 0}, 'ema_decay'),
    ({'reference': 'static', 'path_extra': {'pretrain_network_reference': None}}, 'pretrain_network_reference'),
    ({'reference': 'ema', 'perceptual_opt': {'type': 'PerceptualLoss', 'layer_weights': {'conv5_4': 1}}},
     'vgg_opt'),
    ({'reference': 'ema', 'distill_opt': {'type': 'L1Loss'}}, 'distill_opt'),
])
def test_bad_options_name_the_option(make_model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_model(**kwargs)


class DiscriminatorRecorder(torch.nn.Module):
    """Wraps net_d and records (input, whether D was trainable at that call)."""

    def __init__(self, net_d):
        super().__init__()
        self.net_d, self.calls = net_d, []

    def forward(self, x):
        self.calls.append((x.detach().clone(), next(self.net_d.parameters()).requires_grad))
        return self.net_d(x)


@pytest.mark.parametrize('gan_on_real', [True, False])
def test_discriminator_trained_only_on_gt_and_synthetic_predictions(make_model, gan_on_real):
    model = make_model('static', gan_on_real=gan_on_real)
    recorder = DiscriminatorRecorder(model.net_d)
    model.net_d = recorder  # optimizer_d still holds the same parameters
    data = batch(3)
    with torch.no_grad():
        sr_real = model.net_g(data['lq_real'])  # real-domain predictions before the step
    model.feed_data(data)
    model.optimize_parameters(1)
    sr_syn = model.output
    trained = [x for x, trainable in recorder.calls if trainable]
    frozen = [x for x, trainable in recorder.calls if not trainable]
    assert len(trained) == 2 and torch.equal(trained[0], data['gt']) and torch.equal(trained[1], sr_syn)
    # the generator's GAN term: D frozen; real-domain predictions only there, when gan_on_real
    assert len(frozen) == 1
    expected = torch.cat([sr_syn, sr_real]) if gan_on_real else sr_syn
    assert torch.allclose(frozen[0], expected, atol=1e-6)
    for x in trained:
        assert not torch.allclose(x, sr_real, atol=1e-3)


def test_vgg_runs_twice_per_generator_step_with_and_without_autograd(make_model, monkeypatch):
    other = []  # no other VGG feature extractor in the process runs
    forward = VGGFeatureExtractor.forward
    monkeypatch.setattr(VGGFeatureExtractor, 'forward', lambda self, x: other.append(x.shape[0]) or forward(self, x))
    model = make_model('ema', net_d_init_iters=1, distill_warmup_iters=1)
    calls = []  # passes through model.vgg's layers: (batch, autograd on)
    model.vgg.vgg_net[0].register_forward_pre_hook(
        lambda module, inputs: calls.append((inputs[0].shape[0], torch.is_grad_enabled())))
    # iter 1: D-only warm-up; 2: supervised only (GT | S_syn); 3+: G_syn, G_real, GT | S_syn, S_real
    for it, expected in ((1, []), (2, [(B, False), (B, True)]), (3, [(3 * B, False), (2 * B, True)]),
                         (4, [(3 * B, False), (2 * B, True)])):
        calls.clear()
        model.feed_data(batch(it))
        model.optimize_parameters(it)
        assert calls == expected, it
    assert other == []
    assert set(model.vgg.layer_name_list) == {'conv1_2', 'conv2_1', 'conv2_2', 'conv3_1', 'conv3_4', 'conv4_1',
                                              'conv4_4', 'conv5_1', 'conv5_4'}


def test_concats_rebuilt_in_backward_give_the_same_gradients():
    """RRDBNet's dense-block concatenations are saved as their inputs and rebuilt: bit-identical gradients;
    views are saved as usual; an input modified in place before the backward raises, as autograd would."""
    torch.manual_seed(0)
    net, x = build_network(NET_G), torch.rand(2, 3, 8, 8)
    grads, rebuilt = [], []
    pack = ConcatsRebuiltInBackward._pack
    for wrapped in (False, True):
        net.zero_grad()
        with ConcatsRebuiltInBackward() if wrapped else contextlib.nullcontext():
            out = net(x)
        out.square().mean().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))

    def counting_pack(self, tensor):
        packed = pack(self, tensor)
        rebuilt.append(packed is not tensor)
        return packed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ConcatsRebuiltInBackward, '_pack', counting_pack)
        with ConcatsRebuiltInBackward():
            net(x)
    assert sum(rebuilt) == 3 * 4 * NET_G['num_block']  # 4 concatenations in each of the 3 RDBs of a block

    a, w = torch.rand(2, 3, requires_grad=True), torch.rand(4, 3, requires_grad=True)
    with ConcatsRebuiltInBackward():
        views = torch.cat([a[:1] * 1, a[1:] * 1])  # inputs are not views: rebuilt
        base = a * 2
        sliced = torch.cat([base[:1], base[1:]])  # inputs are views of base: saved as usual
        y = (views * w[:2]).sum() + (sliced * w[2:]).sum()
    y.backward()
    assert torch.allclose(a.grad, w[:2] + 2 * w[2:])
    with ConcatsRebuiltInBackward():
        h = a * 1
        loss = (torch.cat([h, a * 3]) * w).sum()
    h.add_(1)
    with pytest.raises(RuntimeError, match='modified in place'):
        loss.backward()


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_concats_rebuilt_in_backward_under_autocast(dtype, monkeypatch):
    """Under autocast (train.amp): the concatenations of the lower-precision activations are still rebuilt, with
    bit-identical gradients; a concatenation of mixed precisions is rebuilt in the precision autocast gave it."""
    pack, rebuilt = ConcatsRebuiltInBackward._pack, []

    def counting_pack(self, tensor):
        packed = pack(self, tensor)
        rebuilt.append(packed is not tensor)
        return packed

    def run(wrapped, forward):
        rebuilt.clear()
        with torch.autocast('cpu', dtype=dtype), ConcatsRebuiltInBackward() if wrapped else contextlib.nullcontext():
            out, params = forward()
        out.float().square().mean().backward()
        return out.dtype, [p.grad.clone() for p in params], sum(rebuilt)

    monkeypatch.setattr(ConcatsRebuiltInBackward, '_pack', counting_pack)
    torch.manual_seed(0)
    net, x = build_network(NET_G), torch.rand(2, 3, 8, 8)

    def rrdbnet():
        net.zero_grad()
        return net(x), list(net.parameters())

    plain, ours = run(False, rrdbnet), run(True, rrdbnet)
    assert plain[0] == ours[0] == dtype and all(torch.equal(a, b) for a, b in zip(plain[1], ours[1]))
    assert plain[2] == 0 and ours[2] == 3 * 4 * NET_G['num_block']

    a, w = torch.rand(2, 3), torch.rand(4, 3)

    def mixed():
        a_, w_ = a.clone().requires_grad_(), w.clone().requires_grad_()
        return torch.cat([a_ * 1, (a_ * 2).to(dtype)]) * w_, (a_, w_)  # the concatenation is promoted to float32

    plain, ours = run(False, mixed), run(True, mixed)
    assert plain[0] == ours[0] == torch.float32 and all(torch.equal(a, b) for a, b in zip(plain[1], ours[1]))
    assert ours[2] == 1


def test_loads_realesrgan_and_raw_checkpoints_strictly(make_model, generalist, tmp_path):
    _, ema, plain = generalist
    model = make_model('static', path_extra={'param_key_reference': 'params'})
    for k, v in model.net_g.named_parameters():
        assert torch.equal(v, ema[k])  # param_key_g: params_ema
    for k, v in model.net_ref.named_parameters():
        assert torch.equal(v, plain[k])  # param_key_reference: params

    raw = str(tmp_path / 'bsrgan_like.pth')
    torch.save({f'module.{k}': v for k, v in plain.items()}, raw)  # raw state dict, DDP prefix
    model = make_model('ema', pretrain_g=raw)
    for net in (model.net_g, model.net_g_ema):
        for k, v in net.named_parameters():
            assert torch.equal(v, plain[k])

    broken = dict(plain)
    broken['conv_extra.weight'] = broken.pop('conv_last.weight')
    bad = str(tmp_path / 'bad.pth')
    torch.save({'params_ema': broken}, bad)
    with pytest.raises(CheckpointError, match=r'missing conv_last\.weight; unexpected conv_extra\.weight'):
        make_model('ema', pretrain_g=bad)
    with pytest.raises(CheckpointError, match='conv_last.weight'):
        make_model('static', path_extra={'pretrain_network_reference': bad})


def test_resume_restores_ema_reference_from_checkpoint(make_model, tmp_path):
    """On resume BasicSR points pretrain_network_g at our checkpoint with param_key_g: params; the EMA
    reference must come back from params_ema instead of being re-copied from the student."""
    model = make_model('ema')
    for it in range(1, 4):
        model.feed_data(batch(it))
        model.optimize_parameters(it)
    for key in ('models', 'training_states'):
        os.makedirs(model.opt['path'][key])
    model.save(0, 3)
    ckpt = osp.join(model.opt['path']['models'], 'net_g_3.pth')
    saved = torch.load(ckpt, weights_only=True)
    assert set(saved) == {'params', 'params_ema'}
    resumed = make_model('ema', pretrain_g=ckpt, path_extra={'param_key_g': 'params', 'resume_state': 'x.state'})
    for net, key in ((resumed.net_g, 'params'), (resumed.net_ref, 'params_ema')):
        for k, v in net.named_parameters():
            assert torch.equal(v, saved[key][k]), (key, k)
    assert any(not torch.equal(saved['params'][k], saved['params_ema'][k]) for k in saved['params'])


def test_validation_batches_and_colour_correction(make_model):
    model = make_model('ema', val={'val_freq': 1, 'save_img': False, 'color_correction': True})
    model.net_g_ema.conv_last.bias.data += 0.3  # validation must use the EMA network
    data = batch(5)
    model.feed_data({'lq': data['lq'], 'gt': data['gt']})
    assert model.lq_real is None
    model.test()
    with torch.no_grad():
        expected = color_correct(model.net_g_ema(data['lq']), data['lq'])
    assert torch.allclose(model.output, expected, atol=1e-6)
    with pytest.raises(ValueError, match='lq_real'):
        model.optimize_parameters(1)
    with pytest.raises(ValueError, match='same size'):
        model.feed_data({**data, 'lq_real': torch.rand(B, 3, 12, 12)})


# ----------------------------------------------------------------------------------------------- shipped options
TRAIN_OPTIONS = sorted(glob.glob(osp.join(REPO, 'options', 'train', 'pdd', '*.yml')))
TEST_OPTIONS = sorted(glob.glob(osp.join(REPO, 'options', 'test', 'pdd', '*.yml')))


def test_shipped_train_options_cover_the_paper_configurations():
    names = {osp.basename(p)[:-4] for p in TRAIN_OPTIONS}
    for domain in ('RealSR_Canon', 'RealSR_Nikon', 'DRealSR_Panasonic', 'DRealSR_Olympus', 'NTIRE20'):
        assert {f'PDD_EMA_RealESRGAN_x4_{domain}', f'PDD_EMA_BSRGAN_x4_{domain}',
                f'PDD_Static_ESRGAN_RealESRGAN_x4_{domain}', f'PDD_Static_RealESRGAN_ESRGAN_x4_{domain}'} <= names
    assert {'PDD_EMA_RealESRGAN_x4_RealSR_Canon_matlabresize', 'PDD_Naive_EMA_RealESRGAN_x4_RealSR_Canon'} <= names
    assert len(TEST_OPTIONS) == 6  # five domains + the unadapted generalist on RealSR Canon


def test_shipped_train_options_are_generated_from_one_template():
    import runpy
    generator = runpy.run_path(osp.join(REPO, 'scripts', 'generate_pdd_options.py'))
    assert generator['main'](['--check']) == 0  # run scripts/generate_pdd_options.py after editing it


@pytest.mark.parametrize('path', TRAIN_OPTIONS, ids=lambda p: osp.basename(p))
def test_shipped_train_options_hold_the_reference_hyper_parameters(path, workdir):
    opt = load_options(path)
    train, data = opt['train'], opt['datasets']['train']
    ema = train['reference'] == 'ema'
    assert opt['name'] == osp.basename(path)[:-4] and opt['model_type'] == 'PDDModel' and opt['scale'] == 4
    assert data['type'] == 'PDDMixedDataset' and data['gt_size'] == 192 and data['batch_size_per_gpu'] == 8
    assert data['lq_synthesis'] == ('matlab_bicubic' if 'matlabresize' in path else 'random_resize')
    for optim in (train['optim_g'], train['optim_d']):
        assert optim == {'type': 'Adam', 'lr': 1e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]}
    assert train['scheduler'] == {'type': 'MultiStepLR', 'milestones': [25000, 100000, 200000, 300000],
                                  'gamma': 0.5}
    paper_static = 'Static_ESRGAN_RealESRGAN' in path  # the paper's text; the authors' Static file runs 100k
    assert train['total_iter'] == (50000 if paper_static else 100000) and train['ema_decay'] == 0.999
    assert (train['net_d_iters'], train['net_d_init_iters']) == (1, 300)
    assert (train['distill_warmup_iters'], train['distill_detach_syn']) == ((5, False) if ema else (0, True))
    if 'Naive' in path:  # Eq. 3 baseline: L1 imitation of the reference on real LR
        assert train['distill_opt'] == {'type': 'NaiveDistillationLoss', 'loss_weight': 1.0, 'criterion': 'l1'}
    else:
        assert train['distill_opt']['inter_weight'] == (0.5 if 'matlabresize' in path else 1.0)
    assert train['gan_opt']['loss_weight'] == 0.01 and train['gan_on_real'] is True
    assert ('network_reference' in opt) == (not ema) == ('pretrain_network_reference' in opt['path'])
    assert not any(k.startswith('network_') and k not in ('network_g', 'network_d', 'network_reference') for k in opt)
    assert ('network_reference' in (opt['path'].get('ignore_resume_networks') or ())) == (not ema)
    generalist = 'BSRGAN.pth' if '_BSRGAN_' in path else 'RealESRGAN_x4plus.pth'
    specialist = 'ESRGAN_SRx4_DF2KOST_official-ff704c30.pth'
    if ema:
        assert opt['path']['pretrain_network_g'].endswith(generalist)
    else:  # the paper's Static adapts the specialist against the generalist; the authors' code the other way round
        student, reference = (specialist, generalist) if paper_static else (generalist, specialist)
        assert opt['path']['pretrain_network_g'].endswith(student)
        assert opt['path']['pretrain_network_reference'].endswith(reference)
    for key in ('pixel_opt', 'distill_opt', 'gan_opt'):
        build_loss(train[key])  # every loss option is accepted by its class
    folders = workdir[1]  # the dataset accepts the options, on small images (a crop that fits them)
    build_dataset({**data, 'dataroot_gt': folders['hr'], 'dataroot_lq_real': folders['real'], 'phase': 'train',
                   'scale': opt['scale'], 'gt_size': 32})


def tiny(opt, generalist_path):
    """A shipped option file with tiny networks and our test checkpoint."""
    opt = copy.deepcopy(opt)
    for key in ('network_g', 'network_reference'):
        if key in opt:
            opt[key] = dict(NET_G)
    if 'network_d' in opt:
        opt['network_d']['num_feat'] = 8
    for key in ('pretrain_network_g', 'pretrain_network_reference'):
        if key in opt['path']:
            opt['path'][key] = generalist_path
    opt.update(num_gpu=0, dist=False, rank=0, world_size=1)
    return opt


@pytest.mark.parametrize('name', ['PDD_EMA_RealESRGAN_x4_RealSR_Canon_matlabresize',
                                  'PDD_Static_ESRGAN_RealESRGAN_x4_NTIRE20'])
def test_shipped_train_options_build_and_step(name, generalist, vgg_file, tmp_path):
    opt = tiny(load_options(osp.join(REPO, 'options', 'train', 'pdd', f'{name}.yml')), generalist[0])
    opt['is_train'] = True
    opt['path'].update(pretrain_network_vgg19=vgg_file, models=str(tmp_path), training_states=str(tmp_path))
    opt['train']['net_d_init_iters'] = 0
    model = build_model(opt)
    model.feed_data(batch(0))
    model.optimize_parameters(6)
    assert {'l_inter', 'l_intra', 'l_g_pix', 'l_g_percep', 'l_g_gan'} <= set(model.log_dict)


@pytest.mark.parametrize('path', TEST_OPTIONS, ids=lambda p: osp.basename(p))
def test_shipped_test_options_run_the_ema_weights_with_colour_correction(path, generalist):
    opt = load_options(path)
    assert opt['model_type'] == 'PDDModel' and opt['path']['param_key_g'] == 'params_ema'
    assert opt['datasets']['test_1']['type'] == 'PairedImageDataset'
    assert opt['val']['metrics']['psnr'] == {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': True}
    if 'DRealSR' in path:
        assert 'crops512' in opt['datasets']['test_1']['dataroot_lq']
    opt = tiny(opt, generalist[0])
    opt['is_train'] = False
    model = build_model(opt)
    data = batch(0)
    model.feed_data({'lq': data['lq'], 'gt': data['gt']})
    model.test()
    with torch.no_grad():
        expected = color_correct(model.net_g(data['lq']), data['lq'])
    assert torch.allclose(model.output, expected, atol=1e-6)
    for k, v in model.net_g.named_parameters():
        assert torch.equal(v, generalist[1][k])  # params_ema


# ----------------------------------------------------------------------------------------------- end to end
def write_images(folder, count, size, seed):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        cv2.imwrite(osp.join(folder, f'{i:03d}.png'), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return str(folder)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, generalist):
    root = tmp_path_factory.mktemp('pdd_run')
    data = {'hr': write_images(root / 'hr', 4, 40, 0), 'real': write_images(root / 'real', 3, 16, 1),
            'val_hr': write_images(root / 'val_hr', 1, 32, 2), 'val_lr': str(root / 'val_lr')}
    os.makedirs(data['val_lr'])
    hr = cv2.imread(osp.join(data['val_hr'], '000.png'))
    cv2.imwrite(osp.join(data['val_lr'], '000.png'), cv2.resize(hr, (8, 8), interpolation=cv2.INTER_AREA))
    vgg = random_vgg19_features_file(str(root / 'vgg19.pth'))
    return root, data, vgg, generalist[0]


def write_train_yaml(workdir, reference, total_iter, name):
    root, data, _, ckpt = workdir
    train = train_section(reference, total_iter=total_iter, net_d_init_iters=1, distill_warmup_iters=1)
    opt = {
        'name': name, 'model_type': 'PDDModel', 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'mixed', 'type': 'PDDMixedDataset', 'dataroot_gt': data['hr'],
                      'dataroot_lq_real': data['real'], 'gt_size': 32, 'lq_synthesis': 'random_resize',
                      'use_hflip': True, 'use_rot': True, 'io_backend': {'type': 'disk'},
                      'use_shuffle': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2,
                      'dataset_enlarge_ratio': 2, 'prefetch_mode': None},
            'val': {'name': 'val', 'type': 'PairedImageDataset', 'dataroot_gt': data['val_hr'],
                    'dataroot_lq': data['val_lr'], 'io_backend': {'type': 'disk'}},
        },
        'network_g': dict(NET_G),
        'network_d': {'type': 'UNetDiscriminatorSN_basicsr', 'num_in_ch': 3, 'num_feat': 8, 'skip_connection': True},
        'path': {'pretrain_network_g': ckpt, 'param_key_g': 'params_ema', 'strict_load_g': True,
                 'resume_state': None},
        'train': train,
        'val': {'val_freq': 2, 'save_img': False, 'color_correction': True,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }
    if reference == 'static':
        opt['network_reference'] = dict(NET_G)
        opt['path'].update(pretrain_network_reference=ckpt, param_key_reference='params',
                           ignore_resume_networks=['network_reference'])
    return write_options(opt, root / f'{name}_{total_iter}.yml')


def run_train(workdir, *args, nproc=None):
    result = run_entry(['kdsr_pdd', 'train', *args], cwd=workdir[0], env={'KDSR_PDD_VGG19': workdir[2]}, nproc=nproc,
                       timeout=300)
    return result.stdout + result.stderr


@pytest.mark.parametrize('reference', ['ema', 'static'])
def test_train_and_auto_resume_with_basicsr_loop(workdir, reference):
    root = workdir[0]
    name = f'pdd_{reference}'
    run_train(workdir, '-opt', write_train_yaml(workdir, reference, 4, name))
    models = root / 'experiments' / name / 'models'
    for it in (2, 4):
        assert set(torch.load(models / f'net_g_{it}.pth', weights_only=True)) == {'params', 'params_ema'}
        assert set(torch.load(models / f'net_d_{it}.pth', weights_only=True)) == {'params'}
    out = run_train(workdir, '-opt', write_train_yaml(workdir, reference, 6, name), '--auto_resume')
    assert 'Resuming training from epoch' in out and 'iter: 4' in out
    assert (models / 'net_g_6.pth').is_file()
    log = ''.join(p.read_text() for p in (root / 'experiments' / name).glob('train_*.log'))
    assert 'l_inter' in log and 'l_intra' in log and '# psnr' in log


def test_two_process_ddp_training(workdir):
    root = workdir[0]
    yml = write_train_yaml(workdir, 'ema', 3, 'pdd_ddp')
    run_train(workdir, '-opt', yml, '--launcher', 'pytorch', nproc=2)
    experiment = root / 'experiments' / 'pdd_ddp'
    assert 'world_size: 2' in ''.join(p.read_text() for p in experiment.glob('train_*.log'))
    saved = torch.load(experiment / 'models' / 'net_g_latest.pth', weights_only=True)
    assert set(saved) == {'params', 'params_ema'}
    assert not any(k.startswith('module.') for k in saved['params'])
