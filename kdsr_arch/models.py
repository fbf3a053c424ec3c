"""KDSR training schemes as BasicSR models: one registered class per scheme (``model_type`` in the YAML).

Each class is a straight ``super()`` chain of small mixins over a BasicSR model:

====================  ====================================================================  ==================
model_type            mixins (first to last)                                                BasicSR base
====================  ====================================================================  ==================
KDSRTeacherModel      ClassicSynthesis, TeacherTraining                                     SRModel
KDSRStudentModel      ClassicSynthesis, StudentTraining (Distillation)                      SRModel
KDSRNetTeacherModel   TeacherTraining                                                       RealESRNetModel
KDSRNetStudentModel   StudentTraining (Distillation)                                        RealESRNetModel
KDSRGANModel          GANDistillation (Distillation), DiscriminatorStep                     RealESRGANModel
====================  ====================================================================  ==================

Every class starts with ``PluginModelMixin``: it reads its typed options (``self.options``,
:mod:`kdsr_arch.options`), starts its EMA as a copy of ``net_g`` and trains in the precision of
``train.amp``. The classic models degrade HR crops in ``feed_data`` (:class:`ClassicDegradation` on
``self.device``) and validate on the paired data as given; the real-world models use BasicSR's
second-order synthesis. Checkpoints are BasicSR's (``params``, plus ``params_ema`` with an EMA); the
frozen teacher is never saved.
"""
from collections import OrderedDict

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.lr_scheduler import MultiStepRestartLR
from basicsr.models.realesrgan_model import RealESRGANModel
from basicsr.models.realesrnet_model import RealESRNetModel
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from kdsr_arch.degradations import ClassicDegradation
from kdsr_arch.options import (
    KDSRGANOptions,
    KDSRNetStudentOptions,
    KDSRNetTeacherOptions,
    KDSRStudentOptions,
    KDSRTeacherOptions,
)
from kdsr_pdd.checkpoints import load_weights
from kdsr_pdd.model_mixins import DiscriminatorStepMixin, PluginModelMixin, average_gradients
from kdsr_pdd.weights import vgg19_weights


class ClassicSynthesisMixin:
    """Training batches of HR crops (``{'gt'}``, from KDSRHRDataset) get their LR here, batch-wise on
    ``self.device`` (options ``classic_degradation``); batches that carry ``lq`` are used as given."""

    def init_training_settings(self):
        self.classic_degradation = ClassicDegradation.from_options(self.options.classic_degradation,
                                                                   self.options.scale)
        super().init_training_settings()

    @torch.no_grad()
    def feed_data(self, data):
        if 'lq' in data:
            super().feed_data(data)
        else:
            self.gt = data['gt'].to(self.device)
            self.lq = self.classic_degradation(self.gt).contiguous()


class TeacherTrainingMixin:
    """``net_g`` is a KDSRTeacher: trained with L1 to the HR it sees, ``net_g(lq, gt)``; tested on paired data."""

    def feed_data(self, data):
        self.__dict__.pop('gt', None)  # the teacher must never see the HR of an earlier batch
        super().feed_data(data)

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        self.output = self.net_g(self.lq, self.gt)
        l_pix = self.cri_pix(self.output, self.gt)
        self.backward(l_pix)
        self.optimizer_step(self.optimizer_g)
        self.log_dict = self.reduce_loss_dict(OrderedDict(l_pix=l_pix))
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def test(self):
        if getattr(self, 'gt', None) is None:
            raise ValueError('KDSRTeacher needs the HR image: validate / test it on a paired dataset (dataroot_gt)')
        net = getattr(self, 'net_g_ema', self.net_g)
        net.eval()
        with torch.no_grad():
            self.output = net(self.lq, self.gt)
        self.net_g.train()


class DistillationMixin:
    """A frozen KDSRTeacher (``net_teacher``, bare, eval, no grad) whose 4C IDR [B,4C] the student's encoder
    learns through ``cri_kd``. Without ``path.pretrain_network_g`` the student's G starts as a copy of the
    teacher's G and its encoder E_st from scratch."""

    def init_training_settings(self):
        self.net_teacher = self._build_teacher()
        if self.options.path.pretrain_network_g is None:  # resuming sets it to the saved student
            self._init_student_from_teacher()
        self.cri_kd = build_loss(self.options.train.kd_opt.as_dict()).to(self.device)
        super().init_training_settings()

    def _build_teacher(self):
        path = self.options.path
        teacher = build_network(self.options.network_teacher.as_dict())
        key = load_weights(teacher, path.pretrain_network_teacher, path.param_key_teacher, strict=True)
        get_root_logger().info(f'Teacher KDSRTeacher loaded from {path.pretrain_network_teacher} '
                               f'[{key or "raw state dict"}]; frozen.')
        return teacher.to(self.device).eval().requires_grad_(False)

    def _init_student_from_teacher(self):
        self.get_bare_model(self.net_g).G.load_state_dict(self.net_teacher.G.state_dict(), strict=True)
        get_root_logger().info('Student G initialised from the teacher G; E_st starts from scratch.')

    def teacher_hr(self):
        """The HR the teacher's encoder sees with the LR (the training target)."""
        return self.gt

    @torch.no_grad()
    def teacher_idr(self):
        """The frozen teacher's IDR [B,4C] of the current batch."""
        return self.net_teacher.encode(self.lq, self.teacher_hr())[1]


class StudentTrainingMixin(DistillationMixin):
    """L1 + IDR distillation of the student. Optional encoder-only warm-up (``train.encoder_warmup_*``, the
    authors' aniso+noise recipe): the first iterations train only E_st with the KD term, with their own
    optimizer and step schedule (saved and resumed with BasicSR's)."""

    def init_training_settings(self):
        super().init_training_settings()
        self.encoder_warmup_active = False
        train = self.options.train
        if train.encoder_warmup_iters:
            encoder = self.get_bare_model(self.net_g).E_st
            optim = train.optim_g
            self.optimizer_e = self.get_optimizer(optim.type, [p for p in encoder.parameters() if p.requires_grad],
                                                  **{**optim.kwargs, 'lr': train.encoder_warmup_lr})
            self.optimizers.append(self.optimizer_e)
            self.schedulers.append(MultiStepRestartLR(self.optimizer_e, train.encoder_warmup_milestones,
                                                      train.encoder_warmup_gamma))

    def optimize_parameters(self, current_iter):
        self.encoder_warmup_active = current_iter <= self.options.train.encoder_warmup_iters
        loss_dict = self._optimize_encoder() if self.encoder_warmup_active else self._optimize_student()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _optimize_encoder(self):
        """Encoder-only warm-up: E_st learns the teacher's IDR; G is not run."""
        teacher_idr = self.teacher_idr()
        self.optimizer_e.zero_grad()
        l_kd = self.cri_kd(self.get_bare_model(self.net_g).encode(self.lq)[1], teacher_idr)
        self.backward(l_kd)
        if self.options.dist:  # E_st ran outside the DDP wrapper, which therefore did not sync its gradients
            average_gradients(p for group in self.optimizer_e.param_groups for p in group['params'])
        self.optimizer_step(self.optimizer_e)
        return OrderedDict(l_kd=l_kd)

    def _optimize_student(self):
        teacher_idr = self.teacher_idr()
        self.optimizer_g.zero_grad()
        self.output, student_idr = self.net_g(self.lq, return_idr=True)
        l_pix = self.cri_pix(self.output, self.gt)
        l_kd = self.cri_kd(student_idr, teacher_idr)
        self.backward(l_pix + l_kd)
        self.optimizer_step(self.optimizer_g)
        return OrderedDict(l_pix=l_pix, l_kd=l_kd)

    def get_current_learning_rate(self):
        if self.encoder_warmup_active:
            return [group['lr'] for group in self.optimizer_e.param_groups]
        return super().get_current_learning_rate()


class GANDistillationMixin(DistillationMixin):
    """KDSR_S-GAN: L1 + perceptual + GAN + IDR distillation on Real-ESRGAN's degradations.

    The LR comes from BasicSR's RealESRGANModel synthesis, of the USM-sharpened HR (``lq_gt_usm: true``)
    or of the plain HR (false: the synthesis is handed an identity sharpener, ``gt_usm`` is sharpened after
    it). The targets follow ``l1_gt_usm`` / ``percep_gt_usm`` / ``gan_gt_usm``; the teacher sees the pixel
    loss's HR, as in the authors' code.
    """

    def __init__(self, opt):
        super().__init__(opt)
        if not self.options.lq_gt_usm:
            self.hr_sharpener, self.usm_sharpener = self.usm_sharpener, torch.nn.Identity()

    def init_training_settings(self):
        with vgg19_weights(self.options.path.pretrain_network_vgg19):
            super().init_training_settings()

    @torch.no_grad()
    def feed_data(self, data):
        super().feed_data(data)
        if not self.options.lq_gt_usm and hasattr(self, 'gt'):
            self.gt_usm = self.hr_sharpener(self.gt)

    def _target(self, use_usm):
        return self.gt_usm if use_usm else self.gt

    def teacher_hr(self):
        return self._target(self.options.l1_gt_usm)

    def optimize_parameters(self, current_iter):
        loss_dict = OrderedDict()
        train_g = current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters
        self.net_d.requires_grad_(False)
        self.optimizer_g.zero_grad()
        with torch.set_grad_enabled(train_g):
            self.output, student_idr = self.net_g(self.lq, return_idr=True)
        if train_g:
            loss_dict['l_g_pix'] = self.cri_pix(self.output, self._target(self.options.l1_gt_usm))
            if self.cri_perceptual:
                l_percep, l_style = self.cri_perceptual(self.output, self._target(self.options.percep_gt_usm))
                loss_dict.update((k, v) for k, v in (('l_g_percep', l_percep), ('l_g_style', l_style)) if v is not None)
            loss_dict['l_g_gan'] = self.cri_gan(self.net_d(self.output), True, is_disc=False)
            loss_dict['l_g_kd'] = self.cri_kd(student_idr, self.teacher_idr())
            self.backward(sum(loss_dict.values()))
            self.optimizer_step(self.optimizer_g)
        loss_dict.update(self.discriminator_step(self._target(self.options.gan_gt_usm), self.output))
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)


@MODEL_REGISTRY.register()
class KDSRTeacherModel(PluginModelMixin, ClassicSynthesisMixin, TeacherTrainingMixin, SRModel):
    """KDSR_T on classic degradations; also the test model of any KDSR teacher (paired LQ / GT)."""
    options_schema = KDSRTeacherOptions


@MODEL_REGISTRY.register()
class KDSRStudentModel(PluginModelMixin, ClassicSynthesisMixin, StudentTrainingMixin, SRModel):
    """KDSR_S on classic degradations; also the test model of any KDSR student (paired LQ / GT)."""
    options_schema = KDSRStudentOptions


@MODEL_REGISTRY.register()
class KDSRNetTeacherModel(PluginModelMixin, TeacherTrainingMixin, RealESRNetModel):
    """KDSRNet_T: the teacher on Real-ESRGAN's second-order degradations (of the HR, ``gt_usm`` sharpened)."""
    options_schema = KDSRNetTeacherOptions


@MODEL_REGISTRY.register()
class KDSRNetStudentModel(PluginModelMixin, StudentTrainingMixin, RealESRNetModel):
    """KDSRNet_S: the student on Real-ESRGAN's second-order degradations."""
    options_schema = KDSRNetStudentOptions


@MODEL_REGISTRY.register()
class KDSRGANModel(PluginModelMixin, GANDistillationMixin, DiscriminatorStepMixin, RealESRGANModel):
    """KDSR_S-GAN on Real-ESRGAN's degradations (:class:`GANDistillationMixin`)."""
    options_schema = KDSRGANOptions
