"""Typed options of PDD's model and dataset (see :mod:`kdsr_pdd.schema`)."""
from fractions import Fraction
from typing import ClassVar, Literal

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
    PositiveInt,
    Section,
    TrainLoader,
    ValOptions,
    register_dataset_schema,
)

# Real-ESRGAN's perceptual layers (pre-ReLU VGG19 features), used by the authors' option files.
PERCEPTUAL_LAYER_WEIGHTS = {'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_4': 1.0, 'conv4_4': 1.0, 'conv5_4': 1.0}
RESIZE_MODES = ('bicubic', 'bilinear', 'area')
DISTILLATION_LOSSES = ('PairwiseDistanceDistillationLoss', 'NaiveDistillationLoss')


def parse_probability(value):
    """A probability from a number or an 'a/b' string (as in the authors' option files)."""
    try:
        return float(Fraction(str(value)))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f'{value!r} is not a number or an "a/b" fraction') from None


class PDDMixedDatasetOptions(DatasetBase):
    """What PDDMixedDataset reads: labeled HR crops with synthetic LR, plus unlabeled real LR crops."""
    type: Literal['PDDMixedDataset'] | None = Field(None, description='PDDMixedDataset')
    dataroot_gt: InputPath = Field(description='folder of HR images (labeled source, e.g. DF2K)')
    dataroot_lq_real: InputPath = Field(description='folder of unlabeled real LR images (the target domain)')
    gt_size: PositiveInt = Field(description='HR crop size; synthetic and real LR crops are gt_size / scale')
    lq_synthesis: Literal['random_resize', 'matlab_bicubic'] = Field(
        'random_resize', description="random_resize: cv2 resize with one of resize_modes; matlab_bicubic: BasicSR's "
                                     'imresize')
    resize_modes: list[Literal[RESIZE_MODES]] = Field(list(RESIZE_MODES), min_length=1,
                                                      description='cv2 interpolations for random_resize')
    resize_probs: list[float | str] | None = Field(None, description="probability of each mode (numbers or 'a/b'; "
                                                                     'default equal)')
    use_hflip: bool = Field(True, description='random horizontal flips')
    use_rot: bool = Field(True, description='random vertical flips + transposes')

    @field_validator('resize_probs')
    @classmethod
    def _probabilities(cls, value):
        if value is None:
            return value
        probs = [parse_probability(p) for p in value]
        if min(probs) < 0 or sum(probs) <= 0:
            raise ValueError(f'{value} must be non-negative with a positive sum')
        return value

    @model_validator(mode='after')
    def _consistent(self):
        problems = []
        if self.scale is None:
            problems.append('scale: missing (BasicSR copies the top-level scale)')
        elif self.gt_size % self.scale:
            problems.append(f'gt_size ({self.gt_size}) must be a multiple of scale ({self.scale})')
        if self.resize_probs is not None and len(self.resize_probs) != len(self.resize_modes):
            problems.append(f'resize_probs has {len(self.resize_probs)} entries but resize_modes has '
                            f'{len(self.resize_modes)}')
        if problems:
            raise ValueError(' | '.join(problems))
        return self

    def mode_probabilities(self):
        """Normalised probabilities of ``resize_modes``."""
        if self.resize_probs is None:
            return [1.0 / len(self.resize_modes)] * len(self.resize_modes)
        probs = [parse_probability(p) for p in self.resize_probs]
        return [p / sum(probs) for p in probs]


class PDDMixedTrainSet(PDDMixedDatasetOptions, TrainLoader):
    """``datasets.train`` of PDD: PDDMixedDataset and the data-loader keys."""


register_dataset_schema(['PDDMixedDataset'], PDDMixedTrainSet)


class PDDVGGOptions(Section):
    """``train.vgg_opt``: the one VGG19 feature extractor of the perceptual and distance losses."""
    vgg_type: Literal['vgg19'] = Field('vgg19', description='VGG19 ImageNet features (local weights only)')
    use_input_norm: bool = Field(True, description='ImageNet mean/std normalisation of [0, 1] inputs')
    range_norm: bool = Field(False, description='map [-1, 1] inputs to [0, 1] first')
    perceptual_layer_weights: dict[str, float] = Field(PERCEPTUAL_LAYER_WEIGHTS,
                                                       description='pre-ReLU layers of the perceptual L1')
    perceptual_weight: float = Field(1.0, description='weight of the perceptual loss (0: off)')


class PDDTrain(MixedPrecisionTrain, GANTrainOptions):
    """``train`` of PDD."""
    reference: Literal['ema', 'static'] = Field('ema', description='ema: the EMA of the student; static: a frozen '
                                                                   'pretrained network_reference')
    vgg_opt: PDDVGGOptions = Field(PDDVGGOptions(), description='VGG features of the perceptual and distance losses')
    distill_opt: Loss = Field(description='PairwiseDistanceDistillationLoss, or NaiveDistillationLoss (Eq. 3)')
    distill_warmup_iters: Count = Field(0, description='supervised-only steps after the D warm-up')
    distill_detach_syn: bool | None = Field(None, description='detach S(x_syn) in the distillation (default: true '
                                                              'for static, false for ema)')
    gan_on_real: bool = Field(True, description='generator GAN term also on the real-input outputs')

    @field_validator('distill_opt')
    @classmethod
    def _distillation(cls, value):
        if value.type not in DISTILLATION_LOSSES:
            raise ValueError(f'use {" or ".join(DISTILLATION_LOSSES)}, not {value.type}')
        return value

    @field_validator('perceptual_opt')
    @classmethod
    def _shared_features(cls, value):
        if value is not None:
            raise ValueError('PDD computes the perceptual loss on VGG features shared with the distillation: use '
                             'train.vgg_opt.perceptual_layer_weights and train.vgg_opt.perceptual_weight instead')
        return value

    @model_validator(mode='after')
    def _ema_reference(self):
        if self.reference == 'ema':
            if self.ema_decay <= 0:
                raise ValueError('reference ema needs ema_decay > 0 (the paper uses 0.999)')
            if self.distill_warmup_iters <= 0:
                raise ValueError('reference ema needs distill_warmup_iters > 0: the student starts equal to its EMA '
                                 'reference, where both distillation terms are stationary (zero gradient); a few '
                                 'supervised steps must move it first (the authors use 5)')
        return self

    @property
    def detach_syn(self):
        """Whether S(x_syn) is detached inside the distillation."""
        return self.reference == 'static' if self.distill_detach_syn is None else self.distill_detach_syn


class PDDPath(GANPathOptions):
    """``path`` of PDD: also the static reference and VGG19."""
    pretrain_network_reference: InputFile | None = Field(None, description='checkpoint of the frozen reference '
                                                                           '(static)')
    param_key_reference: str | None = Field(None, description='its key (default params_ema, then params, then raw)')
    strict_load_reference: bool = Field(True, description='every key of the reference must be in its checkpoint')
    pretrain_network_vgg19: InputFile | None = Field(None, description='torchvision VGG19 ImageNet weights '
                                                                       '(vgg19-dcbb9e9d.pth)')


class PDDVal(ValOptions):
    """``val`` of PDD: plus the colour correction of the outputs."""
    color_correction: bool = Field(False, description="match each output channel's mean/std to the input")


class PDDOptions(BasicSROptions):
    """PDD (ECCV 2024): a specialist adapted to unlabeled real LR against a reference (EMA or static)."""
    train_dataset_types: ClassVar[tuple] = ('PDDMixedDataset', )
    needs_pretrained_g: ClassVar[bool] = True

    network_d: Arch | None = Field(None, description='the discriminator (UNetDiscriminatorSN)')
    network_reference: Arch | None = Field(None, description='the frozen reference of train.reference static')
    path: PDDPath = Field(PDDPath(), description='pretrained student, reference, discriminator, VGG19')
    train: PDDTrain | None = Field(None, description='training settings')
    val: PDDVal | None = Field(None, description='validation settings')

    @model_validator(mode='after')
    def _reference_networks(self):
        if not self.is_train or self.train is None:
            return self
        problems = []
        if self.network_d is None:
            problems.append('network_d: missing (the discriminator)')
        static = self.train.reference == 'static'
        if static:
            if self.network_reference is None:
                problems.append('network_reference: missing (the frozen reference of train.reference static)')
            if self.path.pretrain_network_reference is None:
                problems.append('path.pretrain_network_reference: missing (the reference checkpoint)')
            if 'network_reference' not in (self.path.ignore_resume_networks or ()):
                problems.append('path.ignore_resume_networks: add network_reference (resuming keeps the frozen '
                                'reference checkpoint)')
        elif self.network_reference is not None or self.path.pretrain_network_reference is not None:
            problems.append('network_reference / path.pretrain_network_reference are used only with train.reference '
                            'static; the EMA reference is net_g_ema')
        if problems:
            raise ValueError(' | '.join(problems))
        return self
