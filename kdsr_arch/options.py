"""Typed options of KDSR's models and dataset: one schema per training scheme (see :mod:`kdsr_pdd.schema`).

=========================  ========================================  =========================================
model_type                 trains                                    LR synthesis
=========================  ========================================  =========================================
KDSRTeacherModel           KDSR_T: teacher, L1 to the HR             classic (blur, bicubic, noise)
KDSRStudentModel           KDSR_S: student, L1 + IDR distillation    classic
KDSRNetTeacherModel        KDSRNet_T (real-world teacher, L1)        Real-ESRGAN second order
KDSRNetStudentModel        KDSRNet_S (real-world student, L1 + KD)   Real-ESRGAN second order
KDSRGANModel               KDSR_S-GAN: student, L1 + VGG + GAN + KD  Real-ESRGAN second order
=========================  ========================================  =========================================

A test file names the model of the network it evaluates (``KDSRStudentModel`` / ``KDSRTeacherModel``
for either degradation: testing reads paired LQ / GT).
"""
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from kdsr_pdd.schema import (
    Arch,
    BasicSROptions,
    Count,
    DatasetBase,
    GANPathOptions,
    GANTrainOptions,
    InputFile,
    InputPath,
    Loss,
    MixedPrecisionTrain,
    NumberPair,
    PathOptions,
    PositiveInt,
    RealESRGANDegradation,
    Section,
    TrainBase,
    TrainLoader,
    register_dataset_schema,
)

# Training ranges of the isotropic kernel width per scale: x4 from the paper, x2/x3 as in DASR/IKC.
DEFAULT_SIGMA_RANGES = {2: (0.2, 2.0), 3: (0.2, 3.0), 4: (0.2, 4.0)}


def _check_pair(name, value):
    if value is not None and not 0 < value[0] <= value[1]:
        raise ValueError(f'{name} must satisfy 0 < low <= high, got {value}')
    return value


class ClassicDegradationOptions(Section):
    """``classic_degradation``: blur -> MATLAB bicubic down x scale -> Gaussian noise -> 8 bit."""
    kernel: Literal['iso', 'aniso'] = Field('iso', description='isotropic or anisotropic Gaussian blur')
    sigma_range: NumberPair | None = Field(None, description='iso: std range (default x2 [0.2,2], x3 [0.2,3], '
                                                             'x4 [0.2,4])')
    lambda_range: NumberPair = Field([0.2, 4.0], description='aniso: std range along each principal axis')
    noise_max: Annotated[float, Field(ge=0)] = Field(0.0, description='noise std ~ U[0, noise_max] (0-255 units)')
    kernel_size: PositiveInt = Field(21, description='odd blur kernel size')
    per_sample: bool = Field(False, description="one kernel and noise level per batch, as the authors' code "
                                                '(true: one per sample)')

    @field_validator('sigma_range', 'lambda_range')
    @classmethod
    def _ranges(cls, value, info):
        return _check_pair(info.field_name, value)

    @field_validator('kernel_size')
    @classmethod
    def _odd(cls, value):
        if value % 2 == 0:
            raise ValueError(f'must be odd, got {value}')
        return value

    @model_validator(mode='after')
    def _no_unused_range(self):
        unused = {'iso': 'lambda_range', 'aniso': 'sigma_range'}[self.kernel]
        if unused in self.model_fields_set:
            raise ValueError(f'{unused} has no effect with kernel {self.kernel}; remove it')
        return self


class KDSRHRDatasetOptions(DatasetBase):
    """What KDSRHRDataset reads: random HR crops, degraded in the model."""
    type: Literal['KDSRHRDataset'] | None = Field(None, description='KDSRHRDataset')
    dataroot_gt: InputPath = Field(description='folder of HR images (or an .lmdb folder with io_backend lmdb)')
    gt_size: PositiveInt = Field(description='HR crop size, a multiple of scale')
    use_hflip: bool = Field(True, description='random horizontal flips')
    use_rot: bool = Field(True, description='random vertical flips + transposes (all 8 dihedral maps with hflip)')

    @model_validator(mode='after')
    def _crop_fits_scale(self):
        if self.scale and self.gt_size % self.scale:
            raise ValueError(f'gt_size ({self.gt_size}) must be a multiple of scale {self.scale}')
        return self


class KDSRHRTrainSet(KDSRHRDatasetOptions, TrainLoader):
    """``datasets.train`` of the classic models: KDSRHRDataset and the data-loader keys."""


register_dataset_schema(['KDSRHRDataset'], KDSRHRTrainSet)


def _arch_type(expected):
    def check(value):
        if value.type != expected:
            raise ValueError(f'this model trains a {expected}, not {value.type}')
        return value
    return check


class KDSRTeacherTrain(MixedPrecisionTrain, TrainBase):
    """``train`` of the teacher models: L1 against the clean HR."""
    pixel_opt: Loss = Field(description='pixel loss (L1Loss)')


class KDSRStudentTrain(KDSRTeacherTrain):
    """``train`` of the L1 student models: L1 + IDR distillation, an optional encoder-only warm-up."""
    kd_opt: Loss = Field(description='IDR distillation loss (IDRDistillationLoss)')
    encoder_warmup_iters: Count = Field(0, description='first iterations train only the student encoder with KD')
    encoder_warmup_lr: float | None = Field(None, description='learning rate of the warm-up (required with it)')
    encoder_warmup_milestones: list[int] = Field([], description='warm-up lr steps (iterations)')
    encoder_warmup_gamma: float = Field(0.1, description='warm-up lr factor at each milestone')

    @model_validator(mode='after')
    def _warmup(self):
        if self.encoder_warmup_iters and self.encoder_warmup_lr is None:
            raise ValueError('encoder_warmup_lr: required when encoder_warmup_iters > 0')
        return self


class KDSRGANTrain(MixedPrecisionTrain, GANTrainOptions):
    """``train`` of KDSR-GAN: L1 + perceptual + GAN (Real-ESRGAN's) + IDR distillation."""
    kd_opt: Loss = Field(description='IDR distillation loss (IDRDistillationLoss)')


class TeacherPath(PathOptions):
    """``path`` of the student models: the frozen teacher's checkpoint, BasicSR-style."""
    pretrain_network_teacher: InputFile | None = Field(None, description='checkpoint of the frozen teacher')
    param_key_teacher: str | None = Field(None, description='its key (default params_ema, then params, then raw)')


class TeacherGANPath(TeacherPath, GANPathOptions):
    """``path`` of KDSR-GAN: teacher, discriminator, VGG19."""
    pretrain_network_vgg19: InputFile | None = Field(None, description='torchvision VGG19 ImageNet weights '
                                                                       '(vgg19-dcbb9e9d.pth) for the perceptual loss')


class _KDSRBase(BasicSROptions):
    network_g: Arch = Field(description='the KDSR network trained / tested')


class _TeacherNet(Section):
    @field_validator('network_g', check_fields=False)
    @classmethod
    def _teacher(cls, value):
        return _arch_type('KDSRTeacher')(value)


class _StudentNet(Section):
    network_teacher: Arch | None = Field(None, description='the frozen KDSRTeacher (training)')

    @field_validator('network_g', check_fields=False)
    @classmethod
    def _student(cls, value):
        return _arch_type('KDSRStudent')(value)

    @field_validator('network_teacher')
    @classmethod
    def _frozen_teacher(cls, value):
        return value if value is None else _arch_type('KDSRTeacher')(value)

    @model_validator(mode='after')
    def _teacher_fits(self):
        if not self.is_train:
            return self
        problems = []
        if self.network_teacher is None:
            problems.append('network_teacher: missing (the KDSRTeacher whose IDR the student learns)')
        else:
            student, teacher = self.network_g.kwargs, self.network_teacher.kwargs
            for key in ('n_feats', 'n_blocks', 'scale'):
                if student.get(key) != teacher.get(key):
                    problems.append(f'network_teacher.{key}: {teacher.get(key)} differs from network_g.{key} = '
                                    f'{student.get(key)} (the student G starts as a copy of the teacher G)')
        if self.path.pretrain_network_teacher is None:
            problems.append('path.pretrain_network_teacher: missing (the trained teacher checkpoint)')
        if 'network_teacher' not in (self.path.ignore_resume_networks or ()):
            problems.append('path.ignore_resume_networks: add network_teacher (resuming keeps the frozen teacher '
                            'checkpoint instead of looking for net_teacher_<iter>.pth)')
        if problems:
            raise ValueError(' | '.join(problems))
        return self


class KDSRTeacherOptions(_TeacherNet, _KDSRBase):
    """KDSR_T on classic degradations (also any KDSR teacher test: paired LQ / GT)."""
    train_dataset_types: ClassVar[tuple] = ('KDSRHRDataset', )
    classic_degradation: ClassicDegradationOptions = Field(ClassicDegradationOptions(),
                                                           description='the LR synthesis of training batches')
    train: KDSRTeacherTrain | None = Field(None, description='training settings')


class KDSRStudentOptions(_StudentNet, _KDSRBase):
    """KDSR_S on classic degradations (also any KDSR student test: paired LQ)."""
    train_dataset_types: ClassVar[tuple] = ('KDSRHRDataset', )
    classic_degradation: ClassicDegradationOptions = Field(ClassicDegradationOptions(),
                                                           description='the LR synthesis of training batches')
    path: TeacherPath = Field(TeacherPath(), description='the teacher, pretrained G, resume state')
    train: KDSRStudentTrain | None = Field(None, description='training settings')


REALESRGAN_DATASETS = ('RealESRGANDataset_basicsr', 'RealESRGANDataset', 'RealESRGANCropDataset')


class KDSRNetTeacherOptions(_TeacherNet, RealESRGANDegradation, _KDSRBase):
    """KDSRNet_T: the teacher on Real-ESRGAN's second-order degradations."""
    train_dataset_types: ClassVar[tuple] = REALESRGAN_DATASETS
    gt_usm: bool = Field(False, description='USM-sharpen the HR before it is degraded and used as target')
    train: KDSRTeacherTrain | None = Field(None, description='training settings')


class KDSRNetStudentOptions(_StudentNet, RealESRGANDegradation, _KDSRBase):
    """KDSRNet_S: the student on Real-ESRGAN's second-order degradations."""
    train_dataset_types: ClassVar[tuple] = REALESRGAN_DATASETS
    gt_usm: bool = Field(False, description='USM-sharpen the HR before it is degraded and used as target')
    path: TeacherPath = Field(TeacherPath(), description='the teacher, pretrained G, resume state')
    train: KDSRStudentTrain | None = Field(None, description='training settings')


class KDSRGANOptions(_StudentNet, RealESRGANDegradation, _KDSRBase):
    """KDSR_S-GAN: the KDSRNet student fine-tuned with perceptual + GAN losses and IDR distillation."""
    train_dataset_types: ClassVar[tuple] = REALESRGAN_DATASETS
    network_d: Arch | None = Field(None, description='the discriminator (UNetDiscriminatorSN)')
    path: TeacherGANPath = Field(TeacherGANPath(), description='teacher, discriminator, VGG19, resume state')
    train: KDSRGANTrain | None = Field(None, description='training settings')
    lq_gt_usm: bool = Field(False, description="synthesise the LR from the USM-sharpened HR (true: BasicSR's "
                                               "RealESRGANModel) or the plain HR (false: the authors' KDSR-GAN)")
    l1_gt_usm: bool = Field(False, description='pixel loss against the USM-sharpened HR')
    percep_gt_usm: bool = Field(False, description='perceptual loss against the USM-sharpened HR')
    gan_gt_usm: bool = Field(False, description='discriminator sees the USM-sharpened HR as real')

    @model_validator(mode='after')
    def _discriminator(self):
        if self.is_train and self.network_d is None:
            raise ValueError('network_d: missing (the discriminator)')
        return self
