"""Typed, validated option files: the BasicSR sections every model shares, and the machinery to check them.

Each model of the plugin declares ONE schema of its whole option file (a pydantic model, e.g.
:class:`kdsr_arch.options.KDSRStudentOptions`), built from the sections here; BasicSR's own models that
the shipped YAMLs use have theirs at the end of this module. The schema is what the model code reads
(``self.options``), and what the entry points check a file against before anything is built or written:

* every key is known, at any depth (an unknown key is refused, with the closest known name);
* values have their declared types (``lr: 5e-4`` is a string to YAML and is refused: write ``5.0e-4``);
* ``{type: Name, ...}`` sections (archs, losses, metrics, optimizers, schedulers) name a registered class
  and pass only keyword arguments its signature takes;
* with ``check_paths``, input files and folders exist.

All problems of a file are collected into one :class:`OptionsError`, one line each.
"""
import difflib
import importlib.util
import inspect
import os.path as osp
import typing
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import InitErrorDetails, PydanticCustomError

# Packages whose classes carry type annotations that are checked (others: names and number-ness only).
_TYPED_PACKAGES = ('kdsr_arch', 'pdd_model', 'kdsr_pdd')


class OptionsError(ValueError):
    """Problems of one option file: ``problems`` is a list of one-line messages naming the options."""

    def __init__(self, source, problems):
        self.source, self.problems = source, list(problems)
        super().__init__(f'{source}: ' + '; '.join(self.problems))


# ------------------------------------------------------------------------------------------------ base sections
def suggestion(name, known):
    """``'; did you mean X?'`` for the known name closest to ``name``, else ``''``."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f'; did you mean {close[0]}?' if close else ''


def _custom(error_type, message):
    return PydanticCustomError(error_type, '{message}', {'message': message})


class Section(BaseModel):
    """A mapping whose keys are all known: unknown keys are refused (with a suggestion), types are strict."""
    model_config = ConfigDict(extra='forbid', strict=True, frozen=True)

    @model_validator(mode='wrap')
    @classmethod
    def _name_unknown_keys(cls, data, handler):
        try:
            return handler(data)
        except ValidationError as err:
            errors = []
            for e in err.errors():
                if e['type'] == 'extra_forbidden' and len(e['loc']) == 1:
                    known = [f.alias or name for name, f in cls.model_fields.items()]
                    message = f'unknown option{suggestion(e["loc"][0], known)}'
                    errors.append(InitErrorDetails(type=_custom('unknown_option', message), loc=e['loc'],
                                                   input=e['input']))
                else:
                    errors.append(InitErrorDetails(type=_custom(e['type'], e['msg']), loc=e['loc'], input=e['input']))
            raise ValidationError.from_exception_data(cls.__name__, errors) from None


def _as_list(value):
    """Python callers may pass tuples where YAML gives lists."""
    return list(value) if isinstance(value, tuple) else value


def _integral(value):
    """BasicSR files write iteration counts as ``!!float 5e3``: accept integral floats as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Count = Annotated[int, BeforeValidator(_integral), Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
NumberPair = Annotated[list[float], BeforeValidator(_as_list), Field(min_length=2, max_length=2)]


def _check_exists(kind):
    def check(value, info: ValidationInfo):
        if value is not None and (info.context or {}).get('check_paths'):
            path = osp.expanduser(value)
            ok = osp.isdir(path) if kind == 'folder' else osp.isfile(path) if kind == 'file' else osp.exists(path)
            if not ok:
                raise ValueError(f'{value!r}: no such {kind}; set it to your local copy (see the file header)')
        return value
    return check


def _path_type(kind):
    from pydantic import AfterValidator
    return Annotated[str, AfterValidator(_check_exists(kind))]


InputFile = _path_type('file')
InputFolder = _path_type('folder')
InputPath = _path_type('file or folder')  # a folder, or an lmdb / file path


# ------------------------------------------------------------------------------------------------ {type: ...} sections
def _lookup_registry(name):
    def lookup(type_name):
        import basicsr.utils.registry as registries
        registry = getattr(registries, name)
        try:
            return registry.get(type_name)  # BasicSR's own lookup, with its ``<name>_basicsr`` fallback
        except KeyError:
            raise ValueError(f'{type_name!r} is not a registered {name.split("_")[0].lower()}'
                             f'{suggestion(type_name, [k for k, _ in registry])}') from None
    return lookup


def _lookup_optimizer(type_name):
    import torch
    cls = getattr(torch.optim, type_name, None)
    if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer):
        return cls
    names = [n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)]
    raise ValueError(f'{type_name!r} is not a torch.optim optimizer{suggestion(type_name, names)}')


def _lookup_scheduler(type_name):
    from basicsr.models import lr_scheduler
    schedulers = {'MultiStepLR': lr_scheduler.MultiStepRestartLR, 'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
                  'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR}
    if type_name not in schedulers:
        raise ValueError(f'{type_name!r} is not a BasicSR scheduler{suggestion(type_name, schedulers)}')
    return schedulers[type_name]


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_call_arguments(target, kwargs, skip=(), extra=()):
    """Problems (one line each) of calling ``target`` with ``kwargs``: unknown or missing arguments, wrong types.

    Parameters named in ``skip`` are supplied by the caller, ``extra`` keys are accepted without being
    passed. ``**kwargs`` of ``target`` accepts nothing more (BasicSR's metrics ignore what it swallows).
    Annotated parameters of the plugin's own classes are type-checked; for others, a parameter whose
    default is a number must get a number and one whose default is a bool must get true/false.
    """
    signature = inspect.signature(target)
    params = {name: p for name, p in signature.parameters.items()
              if name not in skip and name != 'self' and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    typed = getattr(target, '__module__', '').split('.')[0] in _TYPED_PACKAGES
    hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target) if typed else {}
    problems = []
    for key, value in kwargs.items():
        if key in extra:
            continue
        if key not in params:
            problems.append(f'.{key}: unknown argument of {target.__name__}{suggestion(key, params)}')
            continue
        default = params[key].default
        if key in hints:
            try:
                TypeAdapter(hints[key], config=ConfigDict(strict=True)).validate_python(value)
            except ValidationError as err:
                problems.append(f'.{key}: {err.errors()[0]["msg"].lower()}, got {value!r}')
        elif isinstance(default, bool) and not isinstance(value, bool):
            problems.append(f'.{key}: expected true or false, got {value!r}')
        elif _is_number(default) and not _is_number(value):
            problems.append(f'.{key}: expected a number, got {value!r}' + (
                ' (YAML reads 5e-4 as text: write 5.0e-4 or !!float 5e-4)' if isinstance(value, str) else ''))
    for name, p in params.items():
        if p.default is p.empty and name not in kwargs:
            problems.append(f'.{name}: missing (required by {target.__name__})')
    return problems


class Component(BaseModel):
    """``{type: Name, <keyword arguments>}``: ``Name`` is looked up and the arguments are checked against it."""
    model_config = ConfigDict(extra='allow', strict=True, frozen=True)
    type: str = Field(description='registered name of the class or function')

    _lookup: ClassVar = None
    _skip: ClassVar[tuple] = ()
    _extra: ClassVar[tuple] = ()

    @model_validator(mode='after')
    def _check_arguments(self):
        target = type(self)._lookup(self.type)
        problems = check_call_arguments(target, self.kwargs, type(self)._skip, type(self)._extra)
        if problems:
            raise ValueError(' | '.join(problems))
        self._check_target(target)
        return self

    def _check_target(self, target):
        """Further checks of a call whose arguments fit (subclasses)."""

    @property
    def kwargs(self):
        """The keyword arguments (everything but ``type``)."""
        return dict(self.model_extra or {})

    def as_dict(self):
        """``{'type': ..., **kwargs}``, as BasicSR's builders take it."""
        return {'type': self.type, **self.kwargs}


class Arch(Component):
    """A network: a registered arch type and its constructor arguments (built once on the meta device)."""
    _lookup = staticmethod(_lookup_registry('ARCH_REGISTRY'))

    def _check_target(self, target):
        import torch
        try:
            with torch.device('meta'):
                target(**self.kwargs)
        except (ValueError, TypeError, AssertionError, RuntimeError, NotImplementedError) as err:
            if 'meta' in str(err):  # the constructor reads tensor values (SwinIR's drop-path rates): not checkable here
                return
            raise ValueError(f'{self.type} cannot be built with these arguments: {err}') from None


class Loss(Component):
    """A loss: a registered loss type and its constructor arguments."""
    _lookup = staticmethod(_lookup_registry('LOSS_REGISTRY'))


class Metric(Component):
    """A validation metric: a registered metric function and its options (``better``: higher | lower)."""
    _lookup = staticmethod(_lookup_registry('METRIC_REGISTRY'))
    _skip = ('img', 'img2')
    _extra = ('better', )

    @model_validator(mode='after')
    def _check_better(self):
        if self.kwargs.get('better', 'higher') not in ('higher', 'lower'):
            raise ValueError(f".better: expected 'higher' or 'lower', got {self.kwargs['better']!r}")
        return self


class Optimizer(Component):
    """An optimizer: a ``torch.optim`` class name and its arguments (``lr`` required)."""
    _lookup = staticmethod(_lookup_optimizer)
    _skip = ('params', )

    @model_validator(mode='after')
    def _needs_lr(self):
        if 'lr' not in self.kwargs:
            raise ValueError('.lr: missing (the learning rate)')
        return self


class Scheduler(Component):
    """A BasicSR scheduler: MultiStepLR (milestones, gamma) or CosineAnnealingRestartLR (periods, ...)."""
    _lookup = staticmethod(_lookup_scheduler)
    _skip = ('optimizer', 'last_epoch')


# ------------------------------------------------------------------------------------------------ datasets
class IOBackend(Section):
    """BasicSR's file client."""
    type: Literal['disk', 'lmdb'] = Field('disk', description='disk: image files; lmdb: .lmdb folders')


class DatasetBase(Section):
    """Keys of every dataset section (``phase`` and ``scale`` are filled in by BasicSR; a file needs ``name``)."""
    name: str | None = Field(None, description='name used in logs and result folders')
    phase: SkipJsonSchema[str | None] = Field(None, description='set by BasicSR from the section key')
    scale: SkipJsonSchema[int | None] = Field(None, description='set by BasicSR from the top-level scale')
    io_backend: IOBackend = Field(IOBackend(), description='where the images are read from')


class TrainLoader(Section):
    """Data-loader keys of the training dataset (BasicSR's ``build_dataloader``)."""
    batch_size_per_gpu: PositiveInt = Field(description='batch size per process / GPU')
    num_worker_per_gpu: Count = Field(description='data-loading worker processes per GPU (0: in the main process)')
    dataset_enlarge_ratio: PositiveInt = Field(1, description='repeat the dataset this often per epoch')
    prefetch_mode: Literal['cpu', 'cuda'] | None = Field(None, description='None, cpu or cuda (needs pin_memory)')
    pin_memory: bool = Field(False, description='pinned host memory for the loader')
    persistent_workers: bool = Field(False, description='keep workers alive between epochs')
    num_prefetch_queue: PositiveInt = Field(1, description='batches prefetched with prefetch_mode cpu')
    use_shuffle: Literal[True] = Field(True, description='kept for Real-ESRGAN files: BasicSR always shuffles')


class PairedImageDatasetOptions(DatasetBase):
    """BasicSR's PairedImageDataset: LQ / GT files with matching names (validation and test data)."""
    type: Literal['PairedImageDataset'] = Field(description='PairedImageDataset')
    dataroot_gt: InputPath = Field(description='folder of ground-truth images')
    dataroot_lq: InputPath = Field(description='folder of LR images, named like the GT (see filename_tmpl)')
    meta_info_file: InputFile | None = Field(None, description='list of image names (optional)')
    filename_tmpl: str = Field('{}', description="LR name from the GT stem, e.g. '{}x4'")
    gt_size: PositiveInt | None = Field(None, description='GT crop size (training only)')
    use_hflip: bool | None = Field(None, description='random horizontal flips (training only)')
    use_rot: bool | None = Field(None, description='random rotations (training only)')
    mean: list[float] | None = Field(None, description='normalisation mean')
    std: list[float] | None = Field(None, description='normalisation std')
    color: Literal['y'] | None = Field(None, description='y: Y channel only')


class PairedTrainDatasetOptions(PairedImageDatasetOptions, TrainLoader):
    """PairedImageDataset as a training set."""
    gt_size: PositiveInt = Field(description='GT crop size')
    use_hflip: bool = Field(description='random horizontal flips')
    use_rot: bool = Field(description='random rotations')


class SingleImageDatasetOptions(DatasetBase):
    """BasicSR's SingleImageDataset: LR images only (no metrics that need GT)."""
    type: Literal['SingleImageDataset'] = Field(description='SingleImageDataset')
    dataroot_lq: InputPath = Field(description='folder of LR images')
    meta_info_file: InputFile | None = Field(None, description='list of image names (optional)')
    mean: list[float] | None = Field(None, description='normalisation mean')
    std: list[float] | None = Field(None, description='normalisation std')
    color: Literal['y'] | None = Field(None, description='y: Y channel only')


KernelName = Literal['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso']


class RealESRGANDatasetOptions(DatasetBase, TrainLoader):
    """BasicSR's RealESRGANDataset: HR crops (400 x 400) and the blur kernels of the second-order degradation."""
    type: Literal['RealESRGANDataset_basicsr', 'RealESRGANDataset'] = Field(description="BasicSR's RealESRGANDataset")
    dataroot_gt: InputPath = Field(description='folder of HR images')
    meta_info: InputFile = Field(description='text file listing the HR images relative to dataroot_gt')
    blur_kernel_size: PositiveInt = Field(description='first blur: kernel size')
    kernel_list: list[KernelName] = Field(description='first blur: kernel types')
    kernel_prob: list[Probability] = Field(description='first blur: probability of each kernel type')
    sinc_prob: Probability = Field(description='first blur: probability of a sinc kernel')
    blur_sigma: NumberPair = Field(description='first blur: sigma range')
    betag_range: NumberPair = Field(description='first blur: generalized Gaussian beta range')
    betap_range: NumberPair = Field(description='first blur: plateau beta range')
    blur_kernel_size2: PositiveInt = Field(description='second blur: kernel size')
    kernel_list2: list[KernelName] = Field(description='second blur: kernel types')
    kernel_prob2: list[Probability] = Field(description='second blur: probability of each kernel type')
    sinc_prob2: Probability = Field(description='second blur: probability of a sinc kernel')
    blur_sigma2: NumberPair = Field(description='second blur: sigma range')
    betag_range2: NumberPair = Field(description='second blur: generalized Gaussian beta range')
    betap_range2: NumberPair = Field(description='second blur: plateau beta range')
    final_sinc_prob: Probability = Field(description='probability of the final sinc filter')
    gt_size: PositiveInt | None = Field(None, description='not read by the dataset (the model crops gt_size)')
    use_hflip: bool = Field(description='random horizontal flips')
    use_rot: bool = Field(description='random rotations')


class CropPadSize(Section):
    """What RealESRGANCropDataset reads itself (BasicSR's class reads the rest of its options)."""
    model_config = ConfigDict(extra='ignore', strict=True, frozen=True)
    crop_pad_size: PositiveInt = Field(400, description='side of the HR crop the degradation is synthesised on')


class RealESRGANCropDatasetOptions(RealESRGANDatasetOptions, CropPadSize):
    """RealESRGANDataset with its hard-coded 400 x 400 HR crop made an option (:mod:`kdsr_pdd.datasets`)."""
    model_config = ConfigDict(extra='forbid', strict=True, frozen=True)
    type: Literal['RealESRGANCropDataset'] = Field(description='RealESRGANCropDataset')


class OtherDatasetOptions(BaseModel):
    """A registered dataset without a schema here: only its type is checked."""
    model_config = ConfigDict(extra='allow', frozen=True)
    type: str = Field(description='registered dataset type')
    name: str = Field(description='name used in logs and result folders')

    @field_validator('type')
    @classmethod
    def _registered(cls, value):
        _lookup_registry('DATASET_REGISTRY')(value)
        return value


DATASET_SCHEMAS = {}  # dataset type -> (schema as a training set, schema as a validation / test set)


def register_dataset_schema(type_names, train_schema=None, eval_schema=None):
    """Declare the option schemas of dataset ``type_names`` (train and/or evaluation use)."""
    for name in type_names:
        DATASET_SCHEMAS[name] = (train_schema, eval_schema)


register_dataset_schema(['PairedImageDataset'], PairedTrainDatasetOptions, PairedImageDatasetOptions)
register_dataset_schema(['SingleImageDataset'], None, SingleImageDatasetOptions)
register_dataset_schema(['RealESRGANDataset_basicsr', 'RealESRGANDataset'], RealESRGANDatasetOptions)
register_dataset_schema(['RealESRGANCropDataset'], RealESRGANCropDatasetOptions)


def dataset_keys(schema, opt):
    """The options a dataset class reads: ``opt`` without BasicSR's data-loader keys, validated by ``schema``."""
    return schema.model_validate({k: v for k, v in opt.items() if k not in TrainLoader.model_fields})


def validate_dataset(phase, data, info):
    """Validate one ``datasets.<key>`` mapping with the schema of its type for ``phase`` ('train' or not)."""
    if not isinstance(data, dict):
        raise ValueError(f'expected a mapping, got {data!r}')
    if not data.get('name'):
        raise ValueError('name: missing (the dataset name shown in logs)')
    type_name = data.get('type')
    schemas = DATASET_SCHEMAS.get(type_name)
    if schemas is None:
        return OtherDatasetOptions.model_validate(data, context=info.context)
    schema = schemas[0] if phase == 'train' else schemas[1]
    if schema is None:
        use = 'training' if phase == 'train' else 'validation / test'
        raise ValueError(f'{type_name} cannot be a {use} set')
    return schema.model_validate(data, context=info.context)


# ------------------------------------------------------------------------------------------------ other sections
class PathOptions(Section):
    """``path``: pretrained networks and resume state (BasicSR fills in the output folders)."""
    pretrain_network_g: InputFile | None = Field(None, description='checkpoint net_g starts from')
    param_key_g: str | None = Field(None, description='key of the checkpoint to load (default params_ema, then params)')
    strict_load_g: bool = Field(True, description='every key of net_g must be in the checkpoint')
    resume_state: InputFile | None = Field(None, description='training state to resume from')
    ignore_resume_networks: list[str] | None = Field(None, description='network_* whose paths resume keeps')
    experiments_root: SkipJsonSchema[str | None] = None
    results_root: SkipJsonSchema[str | None] = None
    models: SkipJsonSchema[str | None] = None
    training_states: SkipJsonSchema[str | None] = None
    log: SkipJsonSchema[str | None] = None
    visualization: SkipJsonSchema[str | None] = None


class TrainBase(Section):
    """``train`` keys of every BasicSR model: optimizer, scheduler, length, EMA."""
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = Field(0, description='EMA of net_g (0: off; e.g. 0.999)')
    optim_g: Optimizer = Field(description='optimizer of net_g')
    scheduler: Scheduler = Field(description='learning-rate schedule')
    total_iter: Annotated[int, BeforeValidator(_integral), Field(gt=0)] = Field(description='training iterations')
    warmup_iter: int = Field(-1, description='linear warm-up iterations (-1: none)')
    max_nonfinite_steps: Count = Field(0, description='steps with a non-finite loss or gradient that are skipped '
                                       '(updates with non-finite gradients not applied, each logged) before training '
                                       'stops (0: stop at the first)')


class MixedPrecisionTrain(Section):
    """``train`` keys of the plugin's models: mixed precision and memory format (``MixedPrecisionMixin``)."""
    amp: Literal['none', 'fp16', 'bf16'] = Field('none', description='autocast of the forward passes and losses '
                                                 '(fp16 with a gradient scaler; bf16 also on CPU)')
    channels_last: bool = Field(False, description='networks (and so their activations) in channels-last memory '
                                'format: faster convolutions on recent GPUs')


class TrainOptions(TrainBase):
    """``train`` of BasicSR's SRModel: plus pixel / perceptual losses."""
    pixel_opt: Loss | None = Field(None, description='pixel loss, e.g. L1Loss')
    perceptual_opt: Loss | None = Field(None, description='perceptual loss, e.g. PerceptualLoss')


class GANTrainOptions(TrainOptions):
    """``train`` of BasicSR's SRGANModel: plus the discriminator's optimizer and the GAN loss."""
    optim_d: Optimizer = Field(description='optimizer of net_d')
    gan_opt: Loss = Field(description='GAN loss, e.g. GANLoss vanilla')
    net_d_iters: PositiveInt = Field(1, description='update G every net_d_iters iterations')
    net_d_init_iters: Count = Field(0, description='iterations that train only D first')
    ldl_opt: Loss | None = Field(None, description='LDL artifact loss (Real-ESRGAN models)')


class ValOptions(Section):
    """``val``: validation during training / the test run."""
    val_freq: Count | None = Field(None, description='validate every val_freq iterations (training)')
    save_img: bool = Field(False, description='write the SR images')
    suffix: str | None = Field(None, description='suffix of written images (test)')
    pbar: bool = Field(False, description='progress bar over the images')
    metrics: dict[str, Metric] | None = Field(None, description='name -> metric')


class WandbOptions(Section):
    """``logger.wandb``."""
    project: str | None = Field(None, description='wandb project (needs wandb installed and use_tb_logger)')
    resume_id: str | None = Field(None, description='wandb run to resume')


class LoggerOptions(Section):
    """``logger``: console / file logging, checkpoints, tensorboard."""
    print_freq: PositiveInt = Field(description='log losses every print_freq iterations')
    save_checkpoint_freq: Annotated[int, BeforeValidator(_integral), Field(gt=0)] = Field(
        description='save networks and training state every save_checkpoint_freq iterations')
    use_tb_logger: bool = Field(False, description='tensorboard logs under tb_logger/<name>')
    wandb: WandbOptions | None = Field(None, description='Weights & Biases logging')

    @model_validator(mode='after')
    def _loggers_installed(self):
        wandb = self.wandb is not None and self.wandb.project is not None
        if wandb and not self.use_tb_logger:
            raise ValueError('wandb.project needs use_tb_logger: true (BasicSR logs to wandb through tensorboard)')
        for wanted, package in ((self.use_tb_logger, 'tensorboard'), (wandb, 'wandb')):
            if wanted and importlib.util.find_spec(package) is None:
                raise ValueError(f'{package} is not installed: pip install {package}, or turn it off in logger')
        return self


class DistParams(Section):
    """``dist_params``: torch.distributed settings (slurm launcher)."""
    backend: Literal['nccl', 'gloo'] = Field('nccl', description='nccl (CUDA) or gloo (CPU; chosen without CUDA)')
    port: PositiveInt = Field(29500, description='master port')


class RealESRGANDegradation(Section):
    """Top-level keys of BasicSR's second-order degradation (RealESRNetModel / RealESRGANModel.feed_data)."""
    high_order_degradation: bool = Field(True, description='synthesise LR in feed_data (false: paired data)')
    resize_prob: list[Probability] = Field(description='first resize: up / down / keep probabilities')
    resize_range: NumberPair = Field(description='first resize: scale range')
    gaussian_noise_prob: Probability = Field(description='first noise: Gaussian (else Poisson) probability')
    noise_range: NumberPair = Field(description='first noise: Gaussian sigma range (0-255)')
    poisson_scale_range: NumberPair = Field(description='first noise: Poisson scale range')
    gray_noise_prob: Probability = Field(description='first noise: probability of gray noise')
    jpeg_range: NumberPair = Field(description='first JPEG quality range')
    second_blur_prob: Probability = Field(description='probability of the second blur')
    resize_prob2: list[Probability] = Field(description='second resize: up / down / keep probabilities')
    resize_range2: NumberPair = Field(description='second resize: scale range')
    gaussian_noise_prob2: Probability = Field(description='second noise: Gaussian probability')
    noise_range2: NumberPair = Field(description='second noise: Gaussian sigma range')
    poisson_scale_range2: NumberPair = Field(description='second noise: Poisson scale range')
    gray_noise_prob2: Probability = Field(description='second noise: probability of gray noise')
    jpeg_range2: NumberPair = Field(description='second JPEG quality range')
    gt_size: PositiveInt = Field(description='HR crop size after the synthesis')
    queue_size: PositiveInt = Field(180, description='training-pair pool size (a multiple of the batch size)')

    @model_validator(mode='after')
    def _crop_survives_the_synthesis(self):
        """The second blur pads by half its kernel, reflectively: the first resize must leave more pixels."""
        train_set = getattr(self, 'datasets', {}).get('train')
        size = getattr(train_set, 'crop_pad_size', None)
        if size is None:
            return self
        smallest = int(size * self.resize_range[0])
        needed = train_set.blur_kernel_size2 // 2 + 1
        if smallest < needed:
            raise ValueError(f'datasets.train.crop_pad_size: {size} can shrink to {smallest} px in the first resize '
                             f'(resize_range starts at {self.resize_range[0]}), too small for the second '
                             f'{train_set.blur_kernel_size2}x{train_set.blur_kernel_size2} blur: use at least '
                             f'{-(-needed // self.resize_range[0]):.0f}')
        if size < self.gt_size:
            raise ValueError(f'datasets.train.crop_pad_size: {size} is smaller than gt_size {self.gt_size}')
        return self


# ------------------------------------------------------------------------------------------------ whole files
def _datasets_validator(value, info: ValidationInfo):
    if not isinstance(value, dict) or not value:
        raise ValueError('expected a mapping of dataset sections (train, val*, test*)')
    return value


class BasicSROptions(Section):
    """The keys of every BasicSR option file, and the ones ``parse_options`` adds (``is_train``, ``rank``, ...).

    Subclasses (one per model) add their sections and set ``train_dataset_types``: the dataset types a
    training set of this model may have.
    """
    train_dataset_types: ClassVar[tuple] = ()
    needs_pretrained_g: ClassVar[bool] = False  # training refuses to start without path.pretrain_network_g

    # set by BasicSR's parse_options (first: the checks of the sections below read is_train)
    is_train: SkipJsonSchema[bool] = True
    dist: SkipJsonSchema[bool] = False
    rank: SkipJsonSchema[int] = 0
    world_size: SkipJsonSchema[int] = 1
    auto_resume: SkipJsonSchema[bool] = False
    root_path: SkipJsonSchema[str | None] = None
    name: str = Field(description='experiment / result name (folders experiments/<name>, results/<name>)')
    model_type: str = Field(description='registered model: the training scheme')
    scale: PositiveInt = Field(4, description='upscaling factor')
    num_gpu: int | Literal['auto'] = Field('auto', description='GPUs (auto: all visible; 0: CPU)')
    manual_seed: int | None = Field(None, description='random seed (None: drawn at random)')
    find_unused_parameters: bool = Field(False, description='DDP find_unused_parameters')
    datasets: dict[str, Any] = Field(description='train, val* (training) or test* (test) dataset sections')
    network_g: Arch = Field(description='the network that is trained / tested')
    path: PathOptions = Field(PathOptions(), description='pretrained networks, resume state')
    train: TrainOptions | None = Field(None, description='training settings (training files)')
    val: ValOptions | None = Field(None, description='validation settings')
    logger: LoggerOptions | None = Field(None, description='logging and checkpoints (training files)')
    dist_params: DistParams = Field(DistParams(), description='torch.distributed settings')


    @field_validator('datasets', mode='after')
    @classmethod
    def _typed_datasets(cls, value, info: ValidationInfo):
        _datasets_validator(value, info)
        errors, typed = [], {}
        for key, data in value.items():
            phase = key.split('_')[0]
            if isinstance(data, dict):  # as BasicSR's parse_options does
                data = {**data, 'phase': data.get('phase', phase)}
                if info.data.get('scale') is not None:
                    data.setdefault('scale', info.data['scale'])
            try:
                typed[key] = validate_dataset(phase, data, info)
            except ValidationError as err:
                errors += [InitErrorDetails(type=_custom(e['type'], e['msg']), loc=(key, *e['loc']), input=e['input'])
                           for e in err.errors()]
            except ValueError as err:
                errors.append(InitErrorDetails(type=_custom('value_error', str(err)), loc=(key, ), input=data))
        is_train = info.data.get('is_train', True)
        allowed = ('train', 'val') if is_train else ('test', 'val')
        for key, data in value.items():
            if key.split('_')[0] not in allowed:
                message = (f'a {"training" if is_train else "test"} file takes dataset sections '
                           + ' / '.join(a if a == 'train' else a + '*' for a in allowed))
                errors.append(InitErrorDetails(type=_custom('value_error', message), loc=(key, ), input=data))
        if is_train and 'train' not in value:
            errors.append(InitErrorDetails(type=_custom('missing', 'missing (required to train)'), loc=('train', ),
                                           input=value))
        train_set = typed.get('train')
        if is_train and train_set is not None and cls.train_dataset_types and (
                train_set.type not in cls.train_dataset_types):
            message = (f'{info.data.get("model_type")} trains on {" or ".join(cls.train_dataset_types)}, not '
                       f'{train_set.type}')
            errors.append(InitErrorDetails(type=_custom('value_error', message), loc=('train', 'type'),
                                           input=train_set.type))
        if errors:
            raise ValidationError.from_exception_data('datasets', errors)
        return typed

    @model_validator(mode='after')
    def _check_sections(self):
        problems = []
        if self.is_train:
            for key in ('train', 'logger'):
                if getattr(self, key) is None:
                    problems.append(f'{key}: missing (required to train)')
            has_val = any(key.startswith('val') for key in self.datasets)
            if self.val is not None and self.val.val_freq is None and has_val:
                problems.append('val.val_freq: missing (how often to validate)')
            if self.needs_pretrained_g and self.path.pretrain_network_g is None and not self.path.resume_state:
                problems.append(f'path.pretrain_network_g: {self.model_type} adapts a pretrained network; set the '
                                'checkpoint it starts from')
        elif self.path.pretrain_network_g is None:
            problems.append('path.pretrain_network_g: a test needs the checkpoint to evaluate (it is empty, so the '
                            'network would keep its random initial weights)')
        if problems:
            raise ValueError(' | '.join(problems))
        return self


# ------------------------------------------------------------------------------------------------ BasicSR's models
class SRModelOptions(BasicSROptions):
    """BasicSR's SRModel (supervised training on paired data; tests of any single-input network)."""
    train_dataset_types = ('PairedImageDataset', )


class SRGANModelOptions(SRModelOptions):
    """BasicSR's SRGANModel / ESRGANModel."""
    network_d: Arch | None = Field(None, description='the discriminator (training)')
    train: GANTrainOptions | None = Field(None, description='training settings (training files)')
    path: 'GANPathOptions' = Field(default_factory=lambda: GANPathOptions(), description='pretrained networks')


class GANPathOptions(PathOptions):
    """``path`` of GAN models: also the discriminator's checkpoint."""
    pretrain_network_d: InputFile | None = Field(None, description='checkpoint net_d starts from')
    param_key_d: str | None = Field(None, description='key of the discriminator checkpoint')
    strict_load_d: bool = Field(True, description='every key of net_d must be in the checkpoint')


SRGANModelOptions.model_rebuild()


class RealESRNetModelOptions(RealESRGANDegradation, SRModelOptions):
    """BasicSR's RealESRNetModel: L1 training with the second-order degradation synthesised in feed_data."""
    train_dataset_types = ('RealESRGANDataset_basicsr', 'RealESRGANDataset', 'RealESRGANCropDataset')
    gt_usm: bool = Field(description='USM-sharpen the HR before it is degraded and used as target')


class RealESRGANModelOptions(RealESRGANDegradation, SRGANModelOptions):
    """BasicSR's RealESRGANModel: GAN training on the second-order degradation of the USM-sharpened HR."""
    train_dataset_types = RealESRNetModelOptions.train_dataset_types
    l1_gt_usm: bool = Field(True, description='pixel loss against the USM-sharpened HR')
    percep_gt_usm: bool = Field(True, description='perceptual loss against the USM-sharpened HR')
    gan_gt_usm: bool = Field(False, description='discriminator sees the USM-sharpened HR as real')


BASICSR_MODEL_SCHEMAS = {
    'SRModel': SRModelOptions, 'SRGANModel': SRGANModelOptions, 'ESRGANModel': SRGANModelOptions,
    'RealESRNetModel_basicsr': RealESRNetModelOptions, 'RealESRNetModel': RealESRNetModelOptions,
    'RealESRGANModel_basicsr': RealESRGANModelOptions, 'RealESRGANModel': RealESRGANModelOptions,
}


def schema_of(model_type):
    """The options schema of a registered model type (its class's ``options_schema``, or BasicSR's)."""
    from basicsr.utils.registry import MODEL_REGISTRY
    for name in (model_type, f'{model_type}_basicsr'):
        if name in MODEL_REGISTRY:
            schema = getattr(MODEL_REGISTRY.get(name), 'options_schema', None) or BASICSR_MODEL_SCHEMAS.get(name)
            if schema is not None:
                return schema
            return None
    raise ValueError(f'model_type: {model_type!r} is not a registered model'
                     f'{suggestion(model_type, [k for k, _ in MODEL_REGISTRY])}')


# ------------------------------------------------------------------------------------------------ checking a file
def _dotted(loc):
    return '.'.join(str(part) for part in loc)


def problems_of(err):
    """One line per error of a pydantic ValidationError: ``dotted.option: message``."""
    lines = []
    for e in err.errors():
        message = e['msg']
        for prefix in ('Value error, ', 'Assertion failed, '):
            message = message.removeprefix(prefix)
        where = _dotted(e['loc'])
        for part in message.split(' | '):
            if part.startswith('.'):  # ".key: message" of a {type: ...} section's argument
                lines.append(f'{where}{part}')
            else:
                lines.append(f'{where}: {part}' if where else part)
    return lines


def validate_options(opt, source, check_paths=False, schema=None):
    """The typed options of the option dict ``opt`` (read from ``source``); OptionsError listing every problem.

    ``schema`` defaults to the schema of ``opt['model_type']``; a model without one gets only BasicSR's
    common keys checked (unknown top-level keys allowed).
    """
    if not isinstance(opt, dict):
        raise OptionsError(source, ['expected a mapping of options at the top level'])
    if schema is None:
        try:
            schema = schema_of(opt.get('model_type', 'SRModel'))
        except ValueError as err:
            raise OptionsError(source, [str(err)]) from None
        schema = schema or _open_schema()
    try:
        return schema.model_validate(opt, context={'check_paths': check_paths})
    except ValidationError as err:
        raise OptionsError(source, problems_of(err)) from None


def _open_schema():
    class OpenOptions(BasicSROptions):
        model_config = ConfigDict(extra='allow')
    return OpenOptions


def apply_force_yml(opt, entries, source='--force_yml'):
    """BasicSR's ``--force_yml key:sub=value``: the value parsed as BasicSR does, set through existing keys.

    As in BasicSR, every key but the last must exist; a new last key is created (the schema then refuses
    it when it is unknown). Raises OptionsError naming the entry.
    """
    from basicsr.utils.options import _postprocess_yml_value

    problems = []
    for entry in entries or ():
        keys, sep, value = entry.partition('=')
        if not sep:
            problems.append(f'--force_yml {entry}: expected key:sub=value')
            continue
        *parents, last = keys.strip().split(':')
        target = opt
        for depth, key in enumerate(parents):
            if not isinstance(target, dict) or key not in target:
                where = ':'.join(parents[:depth + 1])
                known = list(target) if isinstance(target, dict) else []
                problems.append(f'--force_yml {entry}: no option {where}{suggestion(key, known)}')
                break
            target = target[key]
        else:
            if not isinstance(target, dict):
                problems.append(f'--force_yml {entry}: {":".join(parents)} is not a mapping')
                continue
            target[last] = _postprocess_yml_value(value.strip())
    if problems:
        raise OptionsError(source, problems)
    return opt


def read_option_file(path):
    """The option mapping of the YAML file ``path``, read as BasicSR reads it; OptionsError if unusable."""
    import yaml
    from basicsr.utils.options import ordered_yaml

    if not osp.isfile(path):
        raise OptionsError(path, ['no such option file'])
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.load(f, Loader=ordered_yaml()[0])
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise OptionsError(path, [f'cannot read it as YAML ({" ".join(str(err).split())})']) from None
    if not isinstance(opt, dict):
        raise OptionsError(path, ['expected a mapping of options at the top level'])
    return opt


def options_json_schema(model_type):
    """The JSON schema of ``model_type``'s option files (for editors): descriptions, defaults, and the schemas
    of the registered datasets under ``datasets``."""
    import functools
    import operator

    schema = schema_of(model_type) or _open_schema()
    document = schema.model_json_schema(mode='validation')
    document['title'] = f'{model_type} options'
    document['properties']['model_type']['const'] = model_type
    dataset_schemas = list(dict.fromkeys(s for pair in DATASET_SCHEMAS.values() for s in pair if s))
    any_dataset = functools.reduce(operator.or_, dataset_schemas)
    datasets = TypeAdapter(any_dataset).json_schema(ref_template='#/$defs/{model}')
    document.setdefault('$defs', {}).update(datasets.pop('$defs', {}))
    document['properties']['datasets']['additionalProperties'] = datasets
    return document
