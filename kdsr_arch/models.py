"""KDSR training / testing model (ICLR 2023): teacher, student (distillation) and GAN stages.

One BasicSR model, ``model_type: KDSRModel``. The option file picks

* ``train.stage``: ``teacher`` (KDSR_T: L1 against the clean HR), ``student`` (KDSR_S: L1 + IDR
  distillation from a frozen teacher) or ``gan`` (KDSR_S-GAN: L1 + perceptual + GAN + distillation);
* ``degradation``: ``classic`` (blur / bicubic / noise from :class:`kdsr_arch.data.ClassicDegradation`,
  configured by the mapping ``classic_degradation``) or ``realesrgan`` (BasicSR's second-order
  pipeline, configured by the usual Real-ESRGAN top-level options).

LR images are synthesised batch-wise on ``self.device`` in :meth:`KDSRModel.feed_data`; validation
and testing read paired LQ / GT through BasicSR's paired path. Checkpoints are BasicSR's
(``params``, plus ``params_ema`` with EMA); the teacher is never saved by the student stages.

Student-stage options beside BasicSR's:

* ``teacher_network`` (top level): the KDSRTeacher options. Not named ``network_*``: BasicSR's
  ``check_resume`` rewrites the pretrained path of every ``network_*`` to ``net_*_{iter}.pth``.
* ``path.pretrain_teacher`` (required) and ``path.teacher_param_key`` (default: ``params_ema``, else
  ``params``, else a raw state dict). Not ``param_key_*``: ``check_resume`` flips those to ``params``.
* ``train.kd_opt``: the distillation loss (``IDRDistillationLoss``).
* ``train.encoder_warmup_iters`` / ``encoder_warmup_lr`` / ``encoder_warmup_milestones`` /
  ``encoder_warmup_gamma``: the first iterations train only the student encoder ``E_st`` with the
  distillation term, with their own optimizer and step schedule (the authors' aniso+noise model).
"""
from collections import OrderedDict
from os import path as osp

import torch
import torch.distributed as torch_dist
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.lr_scheduler import MultiStepRestartLR
from basicsr.models.realesrnet_model import RealESRNetModel
from basicsr.models.sr_model import SRModel
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from kdsr_arch.archs import KDSRStudent, KDSRTeacher
from kdsr_arch.data import ClassicDegradation
from kdsr_pdd.checkpoints import load_weights
from kdsr_pdd.gan import discriminator_step
from kdsr_pdd.realesrgan_bases import DeviceAgnosticRealESRGANModel, DeviceAgnosticRealESRNetModel
from kdsr_pdd.vgg import vgg19_weights

STAGES = ('teacher', 'student', 'gan')
DEGRADATIONS = ('classic', 'realesrgan')
# Loss options each stage needs (train.<key>); the GAN stage may add perceptual_opt. Others would be
# silently ignored, so they are refused.
REQUIRED_LOSSES = {
    'teacher': ('pixel_opt', ),
    'student': ('pixel_opt', 'kd_opt'),
    'gan': ('pixel_opt', 'kd_opt', 'gan_opt'),
}
STAGE_LOSSES = {stage: required + (('perceptual_opt', ) if stage == 'gan' else ())
                for stage, required in REQUIRED_LOSSES.items()}
# Top-level options read by BasicSR's second-order synthesis (RealESRNetModel / RealESRGANModel.feed_data).
REALESRGAN_OPTIONS = ('gt_size', 'resize_prob', 'resize_range', 'gaussian_noise_prob', 'noise_range',
                      'poisson_scale_range', 'gray_noise_prob', 'jpeg_range', 'second_blur_prob', 'resize_prob2',
                      'resize_range2', 'gaussian_noise_prob2', 'noise_range2', 'poisson_scale_range2',
                      'gray_noise_prob2', 'jpeg_range2')


def check_train_options(opt):
    """Return ``(stage, degradation)`` of a training option dict; raise ValueError naming a wrong option."""
    train_opt = opt.get('train') or {}
    stage = train_opt.get('stage')
    if stage not in STAGES:
        raise ValueError(f'train.stage: expected one of {list(STAGES)}, got {stage!r}')
    degradation = opt.get('degradation')
    if degradation not in DEGRADATIONS:
        raise ValueError(f'degradation: expected one of {list(DEGRADATIONS)}, got {degradation!r}')
    if stage == 'gan' and degradation != 'realesrgan':
        raise ValueError('train.stage gan (KDSR-GAN) trains on real-world degradations: set degradation: realesrgan')
    for key in train_opt:
        if key.endswith('_opt') and train_opt[key] and key not in STAGE_LOSSES[stage]:
            raise ValueError(f'train.{key} is not used by train.stage {stage} (it uses {list(STAGE_LOSSES[stage])})')
    for key in REQUIRED_LOSSES[stage]:
        if not train_opt.get(key):
            raise ValueError(f'train.{key} is required for train.stage {stage}')
    if degradation == 'realesrgan':
        required = REALESRGAN_OPTIONS + (('gt_usm', ) if stage != 'gan' else ())
        missing = [key for key in required if key not in opt]
        if missing:
            raise ValueError(f'degradation realesrgan needs the top-level options {missing} (see Real-ESRGAN x4plus)')
    if (train_opt.get('encoder_warmup_iters') or 0) > 0:
        if stage != 'student':
            raise ValueError(f'train.encoder_warmup_iters is only used by train.stage student, not {stage}')
        if train_opt.get('encoder_warmup_lr') is None:
            raise ValueError('train.encoder_warmup_lr is required when train.encoder_warmup_iters > 0')
    return stage, degradation


def _average_gradients(params):
    """All-reduce the gradients of ``params`` to their mean over the distributed processes."""
    world_size = torch_dist.get_world_size()
    for p in params:
        if p.grad is not None:
            torch_dist.all_reduce(p.grad)
            p.grad.div_(world_size)


@MODEL_REGISTRY.register()
class KDSRModel(DeviceAgnosticRealESRGANModel, DeviceAgnosticRealESRNetModel):
    """KDSR model for BasicSR: stages teacher / student / gan on classic or Real-ESRGAN degradations.

    ``net_g`` is a KDSRTeacher (teacher stage: ``net_g(lq [B,3,h,w], gt [B,3,sh,sw])``) or a KDSRStudent
    (``net_g(lq) -> sr [B,3,sh,sw]``). In the student and GAN stages ``net_teacher`` (a bare, frozen
    KDSRTeacher in eval mode, run under no_grad) gives the 4C IDR [B,4C] that the student's encoder
    learns to reproduce. Real-world L1 stages synthesise LR like BasicSR's RealESRNetModel (from the HR,
    ``gt_usm`` sharpening it first); the GAN stage like RealESRGANModel (from the sharpened HR, targets
    chosen by ``l1_gt_usm`` / ``percep_gt_usm`` / ``gan_gt_usm``, default false). The teacher always sees ``self.gt``, the HR it was trained with.
    """

    def __init__(self, opt):
        self.stage, self.degradation = check_train_options(opt) if opt['is_train'] else (None, None)
        super().__init__(opt)

    # ------------------------------------------------------------------ set-up
    def init_training_settings(self):
        train_opt = self.opt['train']
        expected = KDSRTeacher if self.stage == 'teacher' else KDSRStudent
        if not isinstance(self.get_bare_model(self.net_g), expected):
            raise ValueError(f'train.stage {self.stage} trains a {expected.__name__}; '
                             f'network_g.type is {self.opt["network_g"].get("type")!r}')
        if self.degradation == 'classic':
            try:
                self.classic_degradation = ClassicDegradation.from_options(
                    self.opt.get('classic_degradation'), self.opt['scale'])
            except ValueError as err:
                raise ValueError(f'classic_degradation: {err}') from err

        resuming = bool(self.opt['path'].get('resume_state'))
        if self.stage != 'teacher':
            self.net_teacher = self._build_teacher()
            if self.opt['path'].get('pretrain_network_g') is None:  # set on resume and for KDSR-GAN
                self._init_student_from_teacher()
            self.cri_kd = build_loss(train_opt['kd_opt']).to(self.device)
            # The student runs through its (DDP) wrapper, which returns only sr: its IDR is caught here.
            self.get_bare_model(self.net_g).E_st.register_forward_hook(self._store_student_idr)

        if self.stage == 'gan':
            with vgg19_weights(self.opt['path'].get('vgg19_weights')):
                SRGANModel.init_training_settings(self)  # EMA, net_d, pixel / perceptual / GAN losses, optimizers
        else:
            SRModel.init_training_settings(self)  # EMA, pixel loss, optimizer, scheduler
        if self.ema_decay > 0 and not resuming:
            self.model_ema(0)  # the EMA starts as net_g, also when net_g came from a pretrained file

        self.encoder_warmup_iters = int(train_opt.get('encoder_warmup_iters') or 0)
        self._in_encoder_warmup = False
        if self.encoder_warmup_iters > 0:
            self._setup_encoder_warmup(train_opt)

    def _build_teacher(self):
        if not self.opt.get('teacher_network'):
            raise ValueError(f'teacher_network: the KDSRTeacher options are required for train.stage {self.stage}')
        load_path = self.opt['path'].get('pretrain_teacher')
        if not load_path:
            raise ValueError(f'path.pretrain_teacher: the teacher checkpoint is required for train.stage {self.stage}')
        teacher = build_network(self.opt['teacher_network'])
        if not isinstance(teacher, KDSRTeacher):
            raise ValueError(
                f'teacher_network.type must be KDSRTeacher, got {self.opt["teacher_network"].get("type")!r}')
        key = load_weights(teacher, osp.expanduser(load_path), self.opt['path'].get('teacher_param_key'), strict=True)
        get_root_logger().info(f'Teacher KDSRTeacher loaded from {load_path} [{key or "raw state dict"}]; frozen.')
        return teacher.to(self.device).eval().requires_grad_(False)

    def _init_student_from_teacher(self):
        """Copy the teacher's SR net G into the student; the student encoder E_st keeps its fresh init."""
        try:
            self.get_bare_model(self.net_g).G.load_state_dict(self.net_teacher.G.state_dict(), strict=True)
        except RuntimeError as err:
            raise ValueError('teacher_network and network_g must share n_feats, n_blocks and scale: the student '
                             f'G starts as a copy of the teacher G ({err})') from err
        get_root_logger().info('Student G initialised from the teacher G; E_st starts from scratch.')

    def _setup_encoder_warmup(self, train_opt):
        """Optimizer and step schedule of the encoder-only phase, added after BasicSR's (saved on resume)."""
        optim_opt = dict(train_opt['optim_g'])
        optim_type = optim_opt.pop('type')
        optim_opt['lr'] = train_opt['encoder_warmup_lr']
        encoder = self.get_bare_model(self.net_g).E_st
        self.optimizer_e = self.get_optimizer(optim_type, [p for p in encoder.parameters() if p.requires_grad],
                                              **optim_opt)
        self.optimizers.append(self.optimizer_e)
        self.schedulers.append(
            MultiStepRestartLR(self.optimizer_e, train_opt.get('encoder_warmup_milestones', []),
                               train_opt.get('encoder_warmup_gamma', 0.1)))

    def setup_optimizers(self):
        if self.stage == 'gan':
            SRGANModel.setup_optimizers(self)  # optimizer_g over net_g, optimizer_d over net_d
        else:
            SRModel.setup_optimizers(self)  # optimizer_g over the trainable params of net_g

    # ------------------------------------------------------------------ data
    @torch.no_grad()
    def feed_data(self, data):
        if self.is_train and self.degradation == 'classic':
            self.gt = data['gt'].to(self.device)
            self.lq = self.classic_degradation(self.gt).contiguous()
        elif self.is_train and self.degradation == 'realesrgan' and self.stage != 'gan':
            RealESRNetModel.feed_data(self, self.crop_before_degradation(data))
        else:  # the GAN stage's synthesis (after the optional pre_degradation_crop), or paired LQ / GT
            super().feed_data(data)
            if 'gt' not in data and hasattr(self, 'gt'):
                del self.gt  # a teacher must not see the HR of an earlier batch

    # ------------------------------------------------------------------ training
    def _store_student_idr(self, module, inputs, outputs):
        self._student_idr = outputs[1]

    @torch.no_grad()
    def _teacher_idr(self):
        return self.net_teacher.encode(self.lq, self.gt)[1]

    def optimize_parameters(self, current_iter):
        self._in_encoder_warmup = current_iter <= self.encoder_warmup_iters
        if self.stage == 'teacher':
            loss_dict = self._optimize_teacher()
        elif self._in_encoder_warmup:
            loss_dict = self._optimize_encoder()
        elif self.stage == 'student':
            loss_dict = self._optimize_student()
        else:
            loss_dict = self._optimize_gan(current_iter)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _optimize_teacher(self):
        self.optimizer_g.zero_grad()
        self.output = self.net_g(self.lq, self.gt)
        l_pix = self.cri_pix(self.output, self.gt)
        l_pix.backward()
        self.optimizer_g.step()
        return OrderedDict(l_pix=l_pix)

    def _optimize_encoder(self):
        """Encoder-only warm-up: E_st learns the teacher's IDR; G is not run."""
        teacher_idr = self._teacher_idr()
        self.optimizer_e.zero_grad()
        l_kd = self.cri_kd(self.get_bare_model(self.net_g).encode(self.lq)[1], teacher_idr)
        l_kd.backward()
        if self.opt['dist']:  # E_st ran outside the DDP wrapper, which therefore did not sync its gradients
            _average_gradients(p for group in self.optimizer_e.param_groups for p in group['params'])
        self.optimizer_e.step()
        return OrderedDict(l_kd=l_kd)

    def _optimize_student(self):
        teacher_idr = self._teacher_idr()
        self.optimizer_g.zero_grad()
        self.output = self.net_g(self.lq)
        l_pix = self.cri_pix(self.output, self.gt)
        l_kd = self.cri_kd(self._student_idr, teacher_idr)
        (l_pix + l_kd).backward()
        self.optimizer_g.step()
        return OrderedDict(l_pix=l_pix, l_kd=l_kd)

    def _optimize_gan(self, current_iter):
        l1_gt = self.gt_usm if self.opt.get('l1_gt_usm', False) else self.gt
        percep_gt = self.gt_usm if self.opt.get('percep_gt_usm', False) else self.gt
        gan_gt = self.gt_usm if self.opt.get('gan_gt_usm', False) else self.gt
        loss_dict = OrderedDict()

        train_g = current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters
        self.net_d.requires_grad_(False)
        self.optimizer_g.zero_grad()
        with torch.set_grad_enabled(train_g):
            self.output = self.net_g(self.lq)
        if train_g:
            loss_dict['l_g_pix'] = self.cri_pix(self.output, l1_gt)
            if self.cri_perceptual:
                l_percep, l_style = self.cri_perceptual(self.output, percep_gt)
                if l_percep is not None:
                    loss_dict['l_g_percep'] = l_percep
                if l_style is not None:
                    loss_dict['l_g_style'] = l_style
            loss_dict['l_g_gan'] = self.cri_gan(self.net_d(self.output), True, is_disc=False)
            loss_dict['l_g_kd'] = self.cri_kd(self._student_idr, self._teacher_idr())
            sum(loss_dict.values()).backward()
            self.optimizer_g.step()

        loss_dict.update(discriminator_step(self, gan_gt, self.output))
        return loss_dict

    def get_current_learning_rate(self):
        if self._in_encoder_warmup:
            return [group['lr'] for group in self.optimizer_e.param_groups]
        return super().get_current_learning_rate()

    # ------------------------------------------------------------------ inference, saving
    def test(self):
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)
        if isinstance(net, KDSRTeacher):
            if getattr(self, 'gt', None) is None:
                raise ValueError('KDSRTeacher needs the HR image: validate / test it on a paired dataset (dataroot_gt)')
            inputs = (self.lq, self.gt)
        else:
            inputs = (self.lq, )
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = net(*inputs)
        net.train(was_training)

    def save(self, epoch, current_iter):
        if self.stage == 'gan':
            SRGANModel.save(self, epoch, current_iter)  # net_g (+ EMA), net_d, training state
        else:
            SRModel.save(self, epoch, current_iter)
