"""KDSR models (teacher / student / KDSRNet / GAN schemes) in-process (frozen teacher, G copy, EMA, encoder warm-up,
resume, loss values against hand computations) and end to end through the command-line entry points
(training, auto-resume, 2-process CPU DDP, testing with a PSNR checked against a hand computation)."""
import kdsr_pdd.plugin  # noqa: F401  (first: spawned DDP workers import this module before BasicSR)

# isort: split
import copy
import os
import random
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.models import build_model
from conftest import free_port, run_entry, write_options

from kdsr_arch.archs import KDSRStudent, KDSRTeacher
from kdsr_arch.benchmarks import build_aniso_noise, build_gaussian8
from kdsr_pdd.weights import random_vgg19_features_file

OPTIONS = Path(__file__).resolve().parents[1] / 'options'

TINY = dict(n_feats=8, n_blocks=2, n_encoder_res=1, scale=4)
GT_SIZE = 32
L1 = {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}
KD = {'type': 'IDRDistillationLoss', 'loss_weight': 1.0, 'criterion': 'kl', 'temperature': 0.15}
REALESRGAN_DEGRADATION = dict(
    resize_prob=[0.2, 0.7, 0.1], resize_range=[0.15, 1.5], gaussian_noise_prob=0.5, noise_range=[1, 30],
    poisson_scale_range=[0.05, 3], gray_noise_prob=0.4, jpeg_range=[30, 95], second_blur_prob=0.8,
    resize_prob2=[0.3, 0.4, 0.3], resize_range2=[0.3, 1.2], gaussian_noise_prob2=0.5, noise_range2=[1, 25],
    poisson_scale_range2=[0.05, 2.5], gray_noise_prob2=0.4, jpeg_range2=[30, 95], gt_size=GT_SIZE, queue_size=4)
KERNELS = ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso']
REALESRGAN_DATASET = dict(
    type='RealESRGANDataset_basicsr', io_backend={'type': 'disk'}, blur_kernel_size=21, kernel_list=KERNELS,
    kernel_prob=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03], sinc_prob=0.1, blur_sigma=[0.2, 3], betag_range=[0.5, 4],
    betap_range=[1, 2], blur_kernel_size2=21, kernel_list2=KERNELS, kernel_prob2=[0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    sinc_prob2=0.1, blur_sigma2=[0.2, 1.5], betag_range2=[0.5, 4], betap_range2=[1, 2], final_sinc_prob=0.8,
    gt_size=GT_SIZE, use_hflip=True, use_rot=False)


# ----------------------------------------------------------------------------------------------- data
@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    """Four smooth random 48x48 HR PNGs, a Real-ESRGAN meta-info file and their Gaussian8 x4 benchmark."""
    root = tmp_path_factory.mktemp('kdsr_data')
    (root / 'hr').mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        img = cv2.resize(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), (48, 48), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(root / 'hr' / f'img{i}.png'), img)
    (root / 'meta_info.txt').write_text(''.join(f'img{i}.png\n' for i in range(4)))
    build_gaussian8(str(root / 'hr'), str(root / 'gaussian8'), 4)
    return root


@pytest.fixture(scope='module')
def vgg_file(tmp_path_factory):
    return random_vgg19_features_file(tmp_path_factory.mktemp('vgg') / 'vgg19.pth')


# ----------------------------------------------------------------------------------------------- options
MODEL_TYPES = {'teacher': 'KDSRTeacherModel', 'student': 'KDSRStudentModel', 'gan': 'KDSRGANModel'}


def train_options(name, stage, data_root, teacher=None, **train_extra):
    """A tiny classic-degradation training option dict (as written in a YAML file)."""
    opt = {
        'name': name, 'model_type': MODEL_TYPES[stage], 'scale': 4, 'num_gpu': 0, 'manual_seed': 0,
        'classic_degradation': {'kernel': 'iso', 'sigma_range': [0.2, 4.0]},
        'datasets': {'train': {
            'name': 'tiny', 'type': 'KDSRHRDataset', 'dataroot_gt': str(data_root / 'hr'), 'gt_size': GT_SIZE,
            'use_hflip': True, 'use_rot': True, 'io_backend': {'type': 'disk'}, 'num_worker_per_gpu': 0,
            'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1}},
        'network_g': {'type': 'KDSRTeacher' if stage == 'teacher' else 'KDSRStudent', **TINY},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5}, 'total_iter': 2,
                  'warmup_iter': -1, 'pixel_opt': dict(L1)},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False},
    }
    if stage != 'teacher':
        opt['network_teacher'] = {'type': 'KDSRTeacher', **TINY}
        opt['path'].update(pretrain_network_teacher=str(teacher), param_key_teacher='params_ema',
                           ignore_resume_networks=['network_teacher'])
        opt['train']['kd_opt'] = dict(KD)
    opt['train'].update(train_extra)
    return opt


def val_options(data_root, sigmas=(1.8, )):
    """Paired Gaussian8 validation / test datasets and Y-channel PSNR + SSIM (crop_border = scale)."""
    datasets = {f'val_{i}': {
        'name': f'tiny_sig{s:g}', 'type': 'PairedImageDataset', 'dataroot_gt': str(data_root / 'gaussian8' / 'HR'),
        'dataroot_lq': str(data_root / 'gaussian8' / f'LR_x4_sig{s:g}'), 'filename_tmpl': '{}',
        'io_backend': {'type': 'disk'}} for i, s in enumerate(sigmas)}
    val = {'val_freq': 2, 'save_img': False, 'suffix': None, 'metrics': {
        'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True},
        'ssim': {'type': 'calculate_ssim', 'crop_border': 4, 'test_y_channel': True}}}
    return datasets, val


def in_process(opt):
    """Build the model the way BasicSR's train pipeline does, without files or processes."""
    opt = copy.deepcopy(opt)
    opt.update(is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    return build_model(opt)


def run_cli(opt, cwd, command='train', args=(), nproc=None, env=None):
    """Write ``opt`` to a YAML file in ``cwd``, run ``python -m kdsr_pdd <command> -opt it`` (under torchrun with
    ``nproc`` processes); return stdout + stderr."""
    path = write_options(opt, Path(cwd) / f'{opt["name"]}.yml')
    launcher = ['--launcher', 'pytorch'] if nproc else []
    result = run_entry(['kdsr_pdd', command, '-opt', path, *launcher, *args], cwd=cwd, timeout=300, env=env,
                       nproc=nproc)
    return result.stdout + result.stderr


def read_log(experiment):
    return ''.join(p.read_text() for p in sorted(Path(experiment).glob('train_*.log')))


def state(path, key='params'):
    return torch.load(path, map_location='cpu', weights_only=True)[key]


def random_teacher_file(path, seed=0):
    torch.manual_seed(seed)
    teacher = KDSRTeacher(**TINY)
    torch.save({'params_ema': teacher.state_dict()}, path)
    return teacher


def hr_batch(seed=0, batch=2):
    torch.manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(batch, 3, 8, 8), size=GT_SIZE, mode='bicubic').clamp(0, 1)


def kl_batchmean(student_idr, teacher_idr, temperature=0.15):
    """KL(softmax(t/T) || softmax(s/T)) summed over features, averaged over the batch, written out."""
    p_t = torch.softmax(teacher_idr / temperature, dim=1)
    log_p_s = torch.log_softmax(student_idr / temperature, dim=1)
    return (p_t * (torch.log(p_t) - log_p_s)).sum(dim=1).mean()


# ----------------------------------------------------------------------------------------------- in-process
def test_student_init_copies_teacher_g_and_ema_starts_equal(tmp_path, data_root):
    teacher = random_teacher_file(tmp_path / 'teacher.pth')
    model = in_process(train_options('init', 'student', data_root, tmp_path / 'teacher.pth', ema_decay=0.999))
    student = model.net_g
    for key, value in teacher.G.state_dict().items():
        assert torch.equal(student.G.state_dict()[key], value), key
    for key, value in teacher.state_dict().items():  # loaded strictly, from params_ema
        assert torch.equal(model.net_teacher.state_dict()[key], value), key
    # E_st starts fresh: same-shape layers of the teacher encoder are not copied.
    for key in ('mlp.0.weight', 'mlp.2.weight', 'compress.0.weight', 'E.2.body.0.weight'):
        assert not torch.equal(student.E_st.state_dict()[key], teacher.E.state_dict()[key]), key
    ema = model.net_g_ema.state_dict()
    assert all(torch.equal(ema[k], v) for k, v in student.state_dict().items())
    assert not hasattr(model, 'net_d') and not hasattr(model, 'cri_gan') and model.cri_perceptual is None


def test_student_steps_leave_teacher_frozen_and_use_rec_plus_kd(tmp_path, data_root):
    random_teacher_file(tmp_path / 'teacher.pth')
    model = in_process(train_options('steps', 'student', data_root, tmp_path / 'teacher.pth'))
    teacher = model.net_teacher
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.net_g.state_dict().items()}
    for it in (1, 2):
        model.feed_data({'gt': hr_batch(it)})
        with torch.no_grad():  # expected losses from the bare nets, before the step
            sr, s_idr = model.net_g(model.lq, return_idr=True)
            t_idr = teacher.encode(model.lq, model.gt)[1]
        model.optimize_parameters(it)
        assert model.log_dict['l_pix'] == pytest.approx((sr - model.gt).abs().mean().item(), rel=1e-5)
        assert model.log_dict['l_kd'] == pytest.approx(kl_batchmean(s_idr, t_idr).item(), rel=1e-4, abs=1e-7)
    assert not teacher.training
    for name, p in teacher.named_parameters():
        assert p.grad is None and not p.requires_grad, name
        assert torch.equal(p, before[name]), name
    changed = [k for k, v in model.net_g.state_dict().items() if not torch.equal(v, student_before[k])]
    assert any(k.startswith('G.') for k in changed) and any(k.startswith('E_st.') for k in changed)


def test_encoder_warmup_trains_only_the_encoder_with_its_own_lr(tmp_path, data_root):
    random_teacher_file(tmp_path / 'teacher.pth')
    opt = train_options('warmup', 'student', data_root, tmp_path / 'teacher.pth', encoder_warmup_iters=2,
                        encoder_warmup_lr=2e-4, encoder_warmup_milestones=[1], encoder_warmup_gamma=0.1)
    model = in_process(opt)
    g_before = {k: v.clone() for k, v in model.net_g.G.state_dict().items()}
    e_before = {k: v.clone() for k, v in model.net_g.E_st.state_dict().items()}
    for it, lr in ((1, 2e-4), (2, 2e-5)):
        model.update_learning_rate(it)
        model.feed_data({'gt': hr_batch(it)})
        model.optimize_parameters(it)
        assert list(model.log_dict) == ['l_kd']
        assert model.get_current_learning_rate() == pytest.approx([lr])
    assert all(torch.equal(v, g_before[k]) for k, v in model.net_g.G.state_dict().items())
    assert any(not torch.equal(v, e_before[k]) for k, v in model.net_g.E_st.state_dict().items())
    assert model.optimizer_g.state_dict()['state'] == {}  # the joint optimizer has not stepped yet
    model.update_learning_rate(3)
    model.feed_data({'gt': hr_batch(3)})
    model.optimize_parameters(3)
    assert set(model.log_dict) == {'l_pix', 'l_kd'} and model.get_current_learning_rate() == pytest.approx([1e-3])
    assert any(not torch.equal(v, g_before[k]) for k, v in model.net_g.G.state_dict().items())


def test_resume_does_not_overwrite_student_with_teacher_g(tmp_path, data_root):
    random_teacher_file(tmp_path / 'teacher.pth', seed=0)
    torch.manual_seed(1)
    params, params_ema = KDSRStudent(**TINY).state_dict(), KDSRStudent(**TINY).state_dict()
    torch.save({'params': params, 'params_ema': params_ema}, tmp_path / 'net_g_5.pth')
    opt = train_options('resume', 'student', data_root, tmp_path / 'teacher.pth', ema_decay=0.999)
    # What check_resume leaves in the options when resuming from iteration 5.
    opt['path'].update(resume_state=str(tmp_path / '5.state'), pretrain_network_g=str(tmp_path / 'net_g_5.pth'),
                       param_key_g='params')
    model = in_process(opt)
    assert all(torch.equal(model.net_g.state_dict()[k], v) for k, v in params.items())
    assert all(torch.equal(model.net_g_ema.state_dict()[k], v) for k, v in params_ema.items())


def _realesrgan_batch(seed):
    """A training batch as RealESRGANDataset gives it (HR crops and the three kernels)."""
    torch.manual_seed(seed)
    delta = torch.zeros(2, 21, 21)
    delta[:, 10, 10] = 1
    return {'gt': torch.rand(2, 3, 64, 64), 'kernel1': delta, 'kernel2': delta, 'sinc_kernel': delta}


@pytest.mark.parametrize('lq_gt_usm', [False, True])
def test_kdsr_gan_lr_synthesis_from_the_plain_or_the_sharpened_hr(tmp_path, data_root, vgg_file, lq_gt_usm):
    """The GAN model's LR equals BasicSR's RealESRNetModel synthesis, same RNG, of the plain HR (the authors'
    KDSR-GAN, default) or of the USM-sharpened HR (BasicSR's RealESRGANModel); gt_usm is always sharpened."""
    from basicsr.utils import USMSharp

    random_teacher_file(tmp_path / 'teacher.pth')
    opt = train_options('gan_lq', 'gan', data_root, tmp_path / 'teacher.pth', ema_decay=0.999,
                        optim_d={'type': 'Adam', 'lr': 1e-4}, gan_opt={'type': 'GANLoss', 'gan_type': 'vanilla'})
    opt.update(**REALESRGAN_DEGRADATION, lq_gt_usm=lq_gt_usm)
    del opt['classic_degradation']
    opt['network_d'] = {'type': 'UNetDiscriminatorSN_basicsr', 'num_in_ch': 3, 'num_feat': 4, 'skip_connection': True}
    opt['path']['pretrain_network_vgg19'] = str(vgg_file)
    opt['datasets']['train'] = {'name': 'x', 'dataroot_gt': 'unused', 'meta_info': 'unused', 'batch_size_per_gpu': 2,
                                'num_worker_per_gpu': 0, **REALESRGAN_DATASET}
    gan = in_process(opt)
    reference = in_process({**opt, 'model_type': 'RealESRNetModel_basicsr', 'gt_usm': lq_gt_usm,
                            'network_g': {'type': 'MSRResNet', 'num_feat': 4, 'num_block': 1, 'upscale': 4},
                            'train': {k: opt['train'][k] for k in ('optim_g', 'scheduler', 'total_iter', 'pixel_opt')}})
    for model in (gan, reference):
        model.queue_size = 2  # the pair pool returns the batch itself: compare the synthesis alone
        torch.manual_seed(7)
        np.random.seed(7)
        random.seed(7)
        model.feed_data(_realesrgan_batch(0))
    assert torch.equal(gan.lq, reference.lq)
    if not lq_gt_usm:
        assert torch.equal(reference.gt, gan.gt)  # RealESRNetModel with gt_usm false keeps the plain HR
    torch.testing.assert_close(gan.gt_usm, USMSharp()(gan.gt), rtol=0, atol=0)


def test_teacher_stage_feeds_gt_in_training_and_validation(data_root):
    model = in_process(train_options('teacher', 'teacher', data_root))
    model.feed_data({'gt': hr_batch(1)})
    with torch.no_grad():
        expected = (model.net_g(model.lq, model.gt) - model.gt).abs().mean().item()
    model.optimize_parameters(1)
    assert list(model.log_dict) == ['l_pix'] and model.log_dict['l_pix'] == pytest.approx(expected, rel=1e-5)
    gt = hr_batch(0)
    lq = torch.nn.functional.avg_pool2d(gt, 4)
    model.lq, model.gt = lq, gt
    model.test()
    with torch.no_grad():
        assert torch.equal(model.output, model.net_g(lq, gt))
    assert model.net_g.training  # test() restores train mode
    del model.gt
    with pytest.raises(ValueError, match='paired'):
        model.test()


def test_classic_feed_data_synthesises_quantised_lr_and_validation_is_paired(data_root):
    model = in_process(train_options('feed', 'teacher', data_root))
    gt = hr_batch(0)
    model.feed_data({'gt': gt})
    assert model.lq.shape == (2, 3, GT_SIZE // 4, GT_SIZE // 4) and torch.equal(model.gt, gt)
    assert torch.equal(model.lq * 255, (model.lq * 255).round())
    model.is_train = False
    lq = torch.rand(1, 3, 8, 8)
    model.feed_data({'lq': lq, 'gt': torch.rand(1, 3, 32, 32)})
    assert torch.equal(model.lq, lq)


@pytest.mark.parametrize('change, message', [
    (lambda o: o['train'].update(stage='distil'), 'train.stage: unknown option'),
    (lambda o: o.update(degradation='bicubic'), 'degradation: unknown option'),
    (lambda o: o['train'].update(kd_opt=dict(KD)), 'train.kd_opt: unknown option'),
    (lambda o: o['train'].pop('pixel_opt'), 'train.pixel_opt: Field required'),
    (lambda o: o['network_g'].update(type='KDSRStudent'), 'network_g: this model trains a KDSRTeacher'),
    (lambda o: o['classic_degradation'].update(blur='iso'), 'classic_degradation.blur: unknown option'),
    (lambda o: o['train'].update(encoder_warmup_iters=5), 'train.encoder_warmup_iters: unknown option'),
    (lambda o: o.update(model_type='KDSRGANModel'), 'classic_degradation: unknown option'),
    (lambda o: o.update(model_type='KDSRNetTeacherModel', **REALESRGAN_DEGRADATION),
     'datasets.train.type: KDSRNetTeacherModel trains on RealESRGANDataset_basicsr'),
])
def test_bad_options_name_the_option(data_root, change, message):
    opt = train_options('bad', 'teacher', data_root)
    change(opt)
    with pytest.raises(ValueError, match=re.escape(message)):
        in_process(opt)


@pytest.mark.parametrize('change, message', [
    (lambda o: o.pop('network_teacher'), 'network_teacher: missing'),
    (lambda o: o['path'].pop('pretrain_network_teacher'), 'path.pretrain_network_teacher: missing'),
    (lambda o: o['path'].pop('ignore_resume_networks'), 'path.ignore_resume_networks: add network_teacher'),
    (lambda o: o['network_g'].update(n_blocks=3), 'network_teacher.n_blocks: 2 differs from network_g.n_blocks = 3'),
    (lambda o: o['train'].update(encoder_warmup_iters=5), 'train: encoder_warmup_lr: required'),
])
def test_bad_student_options_name_the_option(tmp_path, data_root, change, message):
    random_teacher_file(tmp_path / 'teacher.pth')
    opt = train_options('bad', 'student', data_root, tmp_path / 'teacher.pth')
    change(opt)
    with pytest.raises(ValueError, match=re.escape(message)):
        in_process(opt)


# ----------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp('kdsr_runs')


@pytest.fixture(scope='module')
def teacher_run(runs, data_root):
    """Classic teacher, 2 iterations, validated on a paired Gaussian8 set (the teacher is fed the GT)."""
    opt = train_options('teacher_classic', 'teacher', data_root)
    opt['datasets'].update(val_options(data_root)[0])
    opt['val'] = val_options(data_root)[1]
    output = run_cli(opt, runs)
    return runs / 'experiments' / 'teacher_classic', output


def test_teacher_run_writes_checkpoints_and_validates(teacher_run):
    experiment, _ = teacher_run
    checkpoint = torch.load(experiment / 'models' / 'net_g_2.pth', map_location='cpu', weights_only=True)
    assert set(checkpoint) == {'params'}  # no EMA in the classic recipe
    assert set(checkpoint['params']) == set(KDSRTeacher(**TINY).state_dict())
    assert (experiment / 'models' / 'net_g_latest.pth').is_file()
    assert (experiment / 'training_states' / '2.state').is_file()
    assert re.search(r'# psnr: \d+\.\d+', read_log(experiment))


@pytest.fixture(scope='module')
def student_run(runs, data_root, teacher_run):
    """Classic student with KD: 2 iterations, then --auto_resume up to 4."""
    teacher_file = teacher_run[0] / 'models' / 'net_g_latest.pth'
    teacher_bytes = teacher_file.read_bytes()
    opt = train_options('student_classic', 'student', data_root, teacher_file)
    run_cli(opt, runs)
    first = state(runs / 'experiments' / 'student_classic' / 'models' / 'net_g_2.pth')
    opt['train']['total_iter'] = 4
    run_cli(opt, runs, args=['--auto_resume'])
    assert teacher_file.read_bytes() == teacher_bytes
    return runs / 'experiments' / 'student_classic', first


def test_student_run_distils_and_auto_resumes(student_run, teacher_run):
    experiment, first = student_run
    log = read_log(experiment)
    assert 'l_kd:' in log and 'Resuming training from epoch' in log and 'iter: 2' in log
    assert (experiment / 'training_states' / '4.state').is_file()
    assert {p.name.split('_')[1] for p in (experiment / 'models').glob('*.pth')} == {'g'}  # the teacher is not saved
    resumed = state(experiment / 'models' / 'net_g_4.pth')
    teacher = state(teacher_run[0] / 'models' / 'net_g_latest.pth')
    assert set(resumed) == set(KDSRStudent(**TINY).state_dict())
    # iterations 3-4 continued from iteration 2: not reset to the teacher's G
    assert any(not torch.equal(resumed[k], first[k]) for k in first)
    assert any(not torch.equal(first[k], teacher[k]) for k in first if k.startswith('G.'))


def test_encoder_warmup_run(runs, data_root, teacher_run):
    teacher_file = teacher_run[0] / 'models' / 'net_g_latest.pth'
    opt = train_options('student_warmup', 'student', data_root, teacher_file, total_iter=3, encoder_warmup_iters=2,
                        encoder_warmup_lr=2e-3)
    opt['logger']['save_checkpoint_freq'] = 1
    run_cli(opt, runs)
    models = runs / 'experiments' / 'student_warmup' / 'models'
    teacher = state(teacher_file)
    after_warmup, after_joint = state(models / 'net_g_2.pth'), state(models / 'net_g_3.pth')
    g_keys = [k for k in teacher if k.startswith('G.')]
    assert all(torch.equal(after_warmup[k], teacher[k]) for k in g_keys)  # G untouched while warming up
    assert any(not torch.equal(after_joint[k], teacher[k]) for k in g_keys)
    assert any(not torch.equal(after_warmup[k], after_joint[k]) for k in after_warmup if k.startswith('E_st.'))


def test_gan_run_realesrgan(runs, data_root, teacher_run, vgg_file):
    opt = train_options('gan_realesrgan', 'gan', data_root, teacher_run[0] / 'models' / 'net_g_latest.pth',
                        ema_decay=0.999, optim_d={'type': 'Adam', 'lr': 1e-4, 'betas': [0.9, 0.99]},
                        perceptual_opt={'type': 'PerceptualLoss', 'layer_weights': {'conv1_2': 0.1, 'conv3_4': 1},
                                        'vgg_type': 'vgg19', 'use_input_norm': True, 'range_norm': False,
                                        'perceptual_weight': 1.0, 'style_weight': 0, 'criterion': 'l1'},
                        gan_opt={'type': 'GANLoss', 'gan_type': 'vanilla', 'real_label_val': 1.0,
                                 'fake_label_val': 0.0, 'loss_weight': 1.0})
    opt.update(**REALESRGAN_DEGRADATION)
    del opt['classic_degradation']
    opt['network_d'] = {'type': 'UNetDiscriminatorSN_basicsr', 'num_in_ch': 3, 'num_feat': 8, 'skip_connection': True}
    opt['datasets']['train'] = {'name': 'tiny_real', 'dataroot_gt': str(data_root / 'hr'),
                                'meta_info': str(data_root / 'meta_info.txt'), 'num_worker_per_gpu': 0,
                                'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1, **REALESRGAN_DATASET,
                                'type': 'RealESRGANCropDataset', 'crop_pad_size': 80}
    run_cli(opt, runs, env={'KDSR_PDD_VGG19': str(vgg_file)})
    experiment = runs / 'experiments' / 'gan_realesrgan'
    checkpoint = torch.load(experiment / 'models' / 'net_g_2.pth', map_location='cpu', weights_only=True)
    assert set(checkpoint) == {'params', 'params_ema'}
    assert (experiment / 'models' / 'net_d_2.pth').is_file()
    assert len(torch.load(experiment / 'training_states' / '2.state', weights_only=False)['optimizers']) == 2
    log = read_log(experiment)
    assert all(f'{key}:' in log for key in ('l_g_pix', 'l_g_percep', 'l_g_gan', 'l_g_kd', 'l_d_real'))


def test_ddp_two_process_cpu_student_run(runs, data_root, teacher_run):
    opt = train_options('student_ddp', 'student', data_root, teacher_run[0] / 'models' / 'net_g_latest.pth',
                        encoder_warmup_iters=1, encoder_warmup_lr=2e-4)
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    output = run_cli(opt, runs, nproc=2)
    models = runs / 'experiments' / 'student_ddp' / 'models'
    assert (models / 'net_g_2.pth').is_file(), output[-3000:]
    assert 'World size (gpu number): 2' in read_log(runs / 'experiments' / 'student_ddp')


def _ddp_worker(rank, port, opt, result_path):
    """One of two gloo processes: different initial weights and data per rank, 1 warm-up + 1 joint step."""
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.distributed.init_process_group('gloo', rank=rank, world_size=2)
    torch.manual_seed(rank)
    opt = copy.deepcopy(opt)
    opt.update(is_train=True, dist=True, rank=rank, world_size=2, auto_resume=False)
    model = build_model(opt)
    student = model.get_bare_model(model.net_g)
    start = torch.cat([p.detach().flatten() for p in student.E_st.parameters()])
    for it in (1, 2):
        model.feed_data({'gt': hr_batch(seed=10 * rank + it)})
        model.optimize_parameters(it)
    flat = torch.cat([p.detach().flatten() for p in student.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(2)]
    torch.distributed.all_gather(gathered, flat)
    if rank == 0:
        torch.save({'ranks': gathered, 'start': start,
                    'e_st': torch.cat([p.detach().flatten() for p in student.E_st.parameters()])}, result_path)
    torch.distributed.barrier()  # leave together: a rank that tears gloo down early can abort the other
    torch.distributed.destroy_process_group()


def test_ddp_ranks_stay_in_sync_through_warmup_and_joint_steps(tmp_path, data_root):
    """The warm-up bypasses the DDP wrapper (gradients averaged by hand); the joint step goes through it."""
    random_teacher_file(tmp_path / 'teacher.pth')
    opt = train_options('sync', 'student', data_root, tmp_path / 'teacher.pth', encoder_warmup_iters=1,
                        encoder_warmup_lr=1e-2)
    torch.multiprocessing.spawn(_ddp_worker, args=(free_port(), opt, tmp_path / 'ranks.pth'), nprocs=2)
    result = torch.load(tmp_path / 'ranks.pth', weights_only=True)
    assert torch.equal(result['ranks'][0], result['ranks'][1])
    assert not torch.equal(result['start'], result['e_st'])


def test_cli_test_of_student_checkpoint_reports_psnr(runs, data_root, student_run):
    checkpoint = student_run[0] / 'models' / 'net_g_4.pth'
    sigmas = (1.8, 3.2)  # two test sets: the model must not switch to training synthesis after the first
    datasets, val = val_options(data_root, sigmas)
    opt = {'name': 'test_student', 'model_type': 'KDSRStudentModel', 'scale': 4, 'num_gpu': 0,
           'datasets': {k.replace('val', 'test'): v for k, v in datasets.items()},
           'network_g': {'type': 'KDSRStudent', **TINY},
           'path': {'pretrain_network_g': str(checkpoint), 'param_key_g': 'params', 'strict_load_g': True},
           'val': val}
    run_cli(opt, runs, command='test')
    log = ''.join(p.read_text() for p in (runs / 'results' / 'test_student').glob('test_*.log'))
    net = KDSRStudent(**TINY).eval()
    net.load_state_dict(state(checkpoint))
    for sigma in sigmas:
        logged = float(re.search(rf'Validation tiny_sig{sigma}\s+# psnr: (\d+\.\d+)', log).group(1))
        assert logged == pytest.approx(y_psnr_of_folder(net, data_root / 'gaussian8', sigma), abs=2e-4)


def y_psnr_of_folder(net, root, sigma, border=4):
    """Mean PSNR on BT.601 Y (16 + (65.481 R + 128.553 G + 24.966 B) / 255) of 8-bit outputs, border cropped."""
    values = []
    for hr_path in sorted((root / 'HR').glob('*.png')):
        lr = cv2.imread(str(root / f'LR_x4_sig{sigma}' / hr_path.name))[:, :, ::-1] / 255.0
        with torch.no_grad():
            sr = net(torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float())[0]
        sr = (sr.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round()
        hr = cv2.imread(str(hr_path))[:, :, ::-1].astype(np.float64)
        y_sr, y_hr = (16 + (img @ np.array([65.481, 128.553, 24.966])) / 255 for img in (sr, hr))
        mse = np.mean((y_sr - y_hr)[border:-border, border:-border]**2)
        values.append(10 * np.log10(255.0**2 / mse))
    return float(np.mean(values))


# ----------------------------------------------------------------------------------------------- shipped options
def shipped(kind):
    return sorted((OPTIONS / kind / 'kdsr').glob('*.yml'), key=lambda p: p.name)


def shrink(opt, tmp_path):
    """The option file with tiny networks, CPU (what parse_options makes of num_gpu auto without CUDA)
    and local stand-ins for its checkpoints."""
    assert opt['num_gpu'] == 'auto'
    opt['num_gpu'] = 0
    for key in ('network_g', 'network_teacher'):
        if key in opt:
            assert opt[key]['scale'] == opt['scale']
            opt[key].update(n_feats=8, n_blocks=2, n_encoder_res=1)
    if 'network_d' in opt:
        opt['network_d']['num_feat'] = 8
    path_opt = opt['path']
    if path_opt.get('pretrain_network_teacher'):
        torch.manual_seed(0)
        torch.save({'params': KDSRTeacher(**{**TINY, 'scale': opt['scale']}).state_dict()}, tmp_path / 't.pth')
        path_opt['pretrain_network_teacher'] = str(tmp_path / 't.pth')
    if path_opt.get('pretrain_network_g'):
        arch = KDSRTeacher if opt['network_g']['type'] == 'KDSRTeacher' else KDSRStudent
        net = arch(**{**TINY, 'scale': opt['scale']})
        torch.save({'params_ema': net.state_dict()}, tmp_path / 'g.pth')
        path_opt['pretrain_network_g'] = str(tmp_path / 'g.pth')
    return opt


@pytest.mark.parametrize('path', shipped('train'), ids=lambda p: p.name)
def test_shipped_train_options_build_and_step(path, tmp_path, vgg_file):
    """Every training option file: consistent schedule, a model built from it (tiny nets) and one step."""
    opt = yaml.safe_load(path.read_text())
    stage = 'teacher' if 'Teacher' in opt['model_type'] else 'student'
    degradation = 'classic' if opt['model_type'] in ('KDSRTeacherModel', 'KDSRStudentModel') else 'realesrgan'
    assert opt['network_g']['type'] == ('KDSRTeacher' if stage == 'teacher' else 'KDSRStudent')
    if stage != 'teacher':
        assert opt['network_teacher'] == {**opt['network_g'], 'type': 'KDSRTeacher'}
        assert not any(k.startswith('network_') for k in opt if k not in ('network_g', 'network_d', 'network_teacher'))
    train = opt['train']
    assert sorted(train['scheduler']['milestones']) == train['scheduler']['milestones']
    assert train['scheduler']['milestones'][0] <= train['total_iter']
    assert train.get('encoder_warmup_iters', 0) < train['total_iter']
    expected_dataset = 'KDSRHRDataset' if degradation == 'classic' else 'RealESRGANDataset_basicsr'
    assert opt['datasets']['train']['type'] == expected_dataset
    opt = shrink(opt, tmp_path)
    if opt['path'].get('pretrain_network_vgg19'):
        opt['path']['pretrain_network_vgg19'] = str(vgg_file)
    model = in_process(opt)
    if train['ema_decay'] > 0:  # the EMA starts as net_g, also when net_g comes from a pretrained file
        assert all(torch.equal(model.net_g_ema.state_dict()[k], v) for k, v in model.net_g.state_dict().items())
    size = 8 * opt['scale']
    if degradation == 'realesrgan':  # HR as RealESRGANDataset gives it (400 x 400), cropped to gt_size after synthesis
        model.opt['gt_size'] = size
        delta = torch.zeros(2, 21, 21)
        delta[:, 10, 10] = 1
        data = {'gt': torch.rand(2, 3, 400, 400), 'kernel1': delta, 'kernel2': delta, 'sinc_kernel': delta}
    else:
        data = {'gt': torch.rand(2, 3, size, size)}
    model.feed_data(data)
    assert model.lq.shape == (2, 3, 8, 8)
    model.optimize_parameters(train.get('encoder_warmup_iters', 0) + 1)
    assert all(np.isfinite(v) for v in model.log_dict.values())


@pytest.fixture(scope='module')
def benchmark_folders(tmp_path_factory, data_root):
    """Names of the LR folders that the benchmark builders write (x2/x3/x4 Gaussian8, the aniso+noise sets)."""
    out = tmp_path_factory.mktemp('bench')
    hr = out / 'hr'
    hr.mkdir()
    (hr / 'img0.png').write_bytes((data_root / 'hr' / 'img0.png').read_bytes())
    folders = []
    for scale in (2, 3, 4):
        folders += build_gaussian8(str(hr), str(out / f'g8_x{scale}'), scale)
    folders += build_aniso_noise(str(hr), str(out / 'a1'), 4, 3.5, 1.5, 30, 10)
    folders += build_aniso_noise(str(hr), str(out / 'a2'), 4, 4.0, 1.5, 120, 10)
    return {Path(f).name for f in folders}


@pytest.mark.parametrize('path', shipped('train') + shipped('test'), ids=lambda p: p.name)
def test_shipped_benchmark_folders_match_the_builders(path, benchmark_folders):
    opt = yaml.safe_load(path.read_text())
    for phase, dataset in opt['datasets'].items():
        if phase == 'train':
            continue
        root, lr_name = Path(dataset['dataroot_lq']).parent, Path(dataset['dataroot_lq']).name
        if root.parts[1] in ('Gaussian8', 'AnisoNoise'):
            assert lr_name in benchmark_folders, lr_name
            assert dataset['dataroot_gt'] == str(root / 'HR') and root.name.endswith(f'_x{opt["scale"]}')
        assert dataset['type'] == 'PairedImageDataset' and dataset['filename_tmpl'] == '{}'


@pytest.mark.parametrize('path', shipped('test'), ids=lambda p: p.name)
def test_shipped_test_options_build_a_student_without_teacher(path, tmp_path):
    opt = shrink(yaml.safe_load(path.read_text()), tmp_path)
    assert opt['network_g']['type'] == 'KDSRStudent' and 'network_teacher' not in opt
    assert opt['path']['strict_load_g'] is True
    assert all(m['crop_border'] == opt['scale'] and m['test_y_channel'] for m in opt['val']['metrics'].values())
    opt.update(is_train=False, dist=False, rank=0, world_size=1)
    model = build_model(opt)
    model.lq = torch.rand(1, 3, 8, 8)
    model.test()
    assert model.output.shape == (1, 3, 8 * opt['scale'], 8 * opt['scale'])
