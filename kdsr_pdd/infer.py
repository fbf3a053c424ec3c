"""Super-resolve image files: ``python -m kdsr_pdd.infer INPUT -o OUT_DIR -m CHECKPOINT [options]``.

INPUT is an image file or a folder (``--recursive`` to descend; sub-folders are mirrored under
OUT_DIR). Each result is written as ``OUT_DIR/<stem>_<suffix>.png`` (suffix ``out`` by default).

The network comes from, in this order:

1. ``--opt OPTIONS.yml``: its ``network_g`` section (any BasicSR train/test option file);
2. ``--arch NAME [--arch-args JSON]``: a preset (see ``PRESETS``, e.g. ``realesrgan-x4``, whose
   fields ``--arch-args`` may override) or a registered arch type with its keyword arguments;
3. a companion YAML found next to the checkpoint: ``<checkpoint stem>.yml``, or the option file that
   BasicSR copied into ``experiments/<name>/`` when the checkpoint is ``experiments/<name>/models/*.pth``.

Weights are read with :func:`kdsr_pdd.checkpoints.read_state_dict` (``params_ema`` > ``params`` > raw
state dict, or ``--param-key``; strict). The KDSR teacher is refused: its encoder needs the HR image.

Tiling (``--tile T --tile-pad P``) bounds memory; see :mod:`kdsr_pdd.tiling` for when it is exact.
A KDSR student's IDR comes from one global average pool over the whole LR image, so it is not taken per
tile: the encoder's conv trunk is run tile-wise with enough context to be exact, its outputs are
averaged over the whole image, and the resulting IDR drives the generator on every tile.

Grayscale inputs are run as RGB and written grayscale; an alpha channel is resized with bicubic
interpolation and merged back; 16-bit inputs are computed in float and written as 16-bit PNG.
Unreadable files get one line on stderr and are skipped. Exit status: 0 when at least one image was
written or already existed (``--skip-existing``), 1 when every image failed, 2 on a usage error.
"""
import argparse
import json
import math
import sys
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import kdsr_pdd  # noqa: F401  (registers the plugin's archs)
from kdsr_arch.archs import KDSRStudent
from kdsr_pdd.checkpoints import CheckpointError, load_state, read_state_dict
from kdsr_pdd.cli import OptionError, instantiate_arch, read_yaml_mapping
from kdsr_pdd.tiling import tiled_map, tiled_spatial_mean
from pdd_model.color import color_correct

_RRDB_X4 = dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, scale=4, num_feat=64, num_block=23, num_grow_ch=32)
PRESETS = {
    'realesrgan-x4': _RRDB_X4,  # RealESRGAN_x4plus, and the PDD generalist / student
    'realesrgan-x2': dict(_RRDB_X4, scale=2),  # RealESRGAN_x2plus
    'kdsr-m-x4': dict(type='KDSRStudent', n_feats=64, n_blocks=53, n_encoder_res=9, scale=4),
    'kdsr-l-x4': dict(type='KDSRStudent', n_feats=128, n_blocks=28, n_encoder_res=5, scale=4),
    'kdsr-gan-x4': dict(type='KDSRStudent', n_feats=128, n_blocks=42, n_encoder_res=6, scale=4),
}
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
TEACHER_REFUSAL = ('the KDSR teacher needs the HR image at test time (its encoder sees LR and HR); '
                   'use the student checkpoint (KDSRStudent) for inference.')


class InferError(ValueError):
    """A command-line choice, option file or checkpoint that cannot work; the message says which."""


# ----------------------------------------------------------------------------------------- network
def _read_network_opt(yml_path):
    try:
        opt = read_yaml_mapping(yml_path)
    except OptionError as err:
        raise InferError(f'--opt {err}') from err
    network = opt.get('network_g')
    if not isinstance(network, dict) or 'type' not in network:
        raise InferError(f'{yml_path}: no network_g section with a type.')
    return dict(network)


def find_companion_yaml(model_path):
    """The option file that describes ``model_path``'s network, or None (see the module docstring)."""
    model_path = Path(model_path)
    beside = model_path.with_suffix('.yml')
    if beside.is_file():
        return beside
    if model_path.parent.name != 'models':
        return None
    experiment = model_path.parent.parent
    named = experiment / f'{experiment.name}.yml'
    if named.is_file():
        return named
    candidates = sorted(experiment.glob('*.yml'))
    if len(candidates) > 1:
        raise InferError(f'{experiment} holds several option files ({", ".join(p.name for p in candidates)}); '
                         'choose one with --opt.')
    return candidates[0] if candidates else None


def resolve_network_opt(model_path, opt_path=None, arch=None, arch_args=None):
    """Return ``(network_opt, source)``: the ``network_g``-style dict and where it came from."""
    if opt_path and arch:
        raise InferError('give either --opt or --arch, not both.')
    if arch_args is not None and not arch:
        raise InferError('--arch-args needs --arch.')
    if opt_path:
        return _read_network_opt(opt_path), str(opt_path)
    if arch:
        try:
            extra = json.loads(arch_args) if arch_args else {}
        except json.JSONDecodeError as err:
            raise InferError(f'--arch-args is not valid JSON ({err}).') from err
        if not isinstance(extra, dict):
            raise InferError('--arch-args must be a JSON object of keyword arguments.')
        base = PRESETS.get(arch, {'type': arch})
        return {**base, **extra}, f'--arch {arch}'
    companion = find_companion_yaml(model_path)
    if companion is None:
        raise InferError(f'cannot tell the architecture of {model_path}: pass --opt OPTIONS.yml (its network_g) '
                         f'or --arch NAME [--arch-args JSON] (presets: {", ".join(PRESETS)}).')
    return _read_network_opt(companion), str(companion)


def build_network(network_opt, model_path, param_key=None, source='network_g'):
    """Build the arch of ``network_opt`` and load ``model_path`` into it; refuse the KDSR teacher."""
    if network_opt.get('type') == 'KDSRTeacher':
        raise InferError(f'{source}: network type KDSRTeacher: {TEACHER_REFUSAL}')
    state, used = read_state_dict(str(model_path), param_key)
    encoder_in = state.get('E.E.0.weight')
    if encoder_in is not None and encoder_in.dim() == 4 and encoder_in.shape[1] > 3:
        raise InferError(f'{model_path} is a KDSR teacher checkpoint (E.E.0.weight takes {encoder_in.shape[1]} '
                         f'input channels): {TEACHER_REFUSAL}')
    net = instantiate_arch(network_opt, source, InferError)
    load_state(net, state, f'{model_path} (key {used or "raw"})')
    return net.eval()


def network_scale(net):
    scale = getattr(net, 'scale', None) or getattr(net, 'upscale', None)
    if not isinstance(scale, int) or scale < 1:
        raise InferError(f'cannot tell the upscaling factor of {type(net).__name__} (no integer scale/upscale).')
    return scale


def required_multiple(net, scale):
    """The size multiple an input needs: BasicSR's RRDBNet pixel-unshuffles by 2 at x2 and by 4 at x1."""
    return {1: 4, 2: 2}.get(scale, 1) if type(net).__name__ == 'RRDBNet' else 1


def _conv_radius(module):
    """Receptive-field radius (input pixels) of a stack of stride-1 convolutions."""
    return sum((m.kernel_size[0] // 2) * m.dilation[0] for m in module.modules() if isinstance(m, torch.nn.Conv2d))


# ---------------------------------------------------------------------------------------- upscaler
class Upscaler:
    """Runs an SR network: lq float32 [B,3,h,w] in [0,1] -> sr float32 [B,3,s*h,s*w] (not clamped).

    Inputs and outputs live on the CPU; the network runs on ``device`` (fp16 when ``half``). With
    ``tile > 0`` the LR is processed in tiles with ``tile_pad`` pixels of context (both rounded up to
    ``multiple``); the input is padded (replicate) to a multiple of ``multiple`` and the output cropped.
    """

    def __init__(self, net, scale, device='cpu', half=False, tile=0, tile_pad=16, multiple=1):
        self.device = torch.device(device)
        self.dtype = torch.float16 if half else torch.float32
        self.net = net.to(self.device, self.dtype).eval()
        self.scale, self.multiple = scale, multiple
        self.tile = math.ceil(tile / multiple) * multiple
        self.tile_pad = math.ceil(tile_pad / multiple) * multiple

    @torch.no_grad()
    def __call__(self, lq):
        h, w = lq.shape[-2:]
        generator = self._generator(lq)
        x = F.pad(lq, (0, -w % self.multiple, 0, -h % self.multiple), mode='replicate')
        if self.tile:
            sr = tiled_map(generator, x, self.scale, self.tile, self.tile_pad, self.device, self.dtype)
        else:
            sr = generator(x.to(self.device, self.dtype)).float().cpu()
        return sr[:, :, :self.scale * h, :self.scale * w]

    def _generator(self, lq):
        """LR crop -> SR crop. A KDSR student's IDR z is computed once, from the whole unpadded ``lq``."""
        if not isinstance(self.net, KDSRStudent):
            return self.net
        z = self._student_idr(lq)
        return lambda crop: self.net.G(crop, z)

    def _student_idr(self, lq):
        encoder = self.net.E_st
        if not self.tile:
            return encoder(lq.to(self.device, self.dtype))[0]
        trunk, pool = encoder.E[:-1], encoder.E[-1]
        if not isinstance(pool, torch.nn.AdaptiveAvgPool2d):
            raise InferError('tiled KDSR inference expects the encoder to end in a global average pool.')
        pooled = tiled_spatial_mean(trunk, lq, self.tile, _conv_radius(trunk), self.device, self.dtype)
        return encoder.compress(encoder.mlp(pooled.to(self.device, self.dtype)))


# ------------------------------------------------------------------------------------------- images
class LoadedImage(NamedTuple):
    """An input image: ``rgb`` float32 [H,W,3] in [0,1], ``alpha`` [H,W] or None, and how to write it back."""
    rgb: np.ndarray
    alpha: np.ndarray
    gray: bool
    dtype: np.dtype


def read_image(path):
    """Read an 8/16-bit gray, BGR or BGRA file (OpenCV reads gray+alpha as BGRA); InferError if unusable."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InferError('cannot read it as an image')
    if img.dtype not in (np.uint8, np.uint16):
        raise InferError(f'unsupported pixel type {img.dtype} (8- or 16-bit images only)')
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels not in (1, 3, 4):
        raise InferError(f'unsupported channel count {channels}')
    pixels = img.astype(np.float32) / np.iinfo(img.dtype).max
    alpha = pixels[:, :, 3] if channels == 4 else None
    if channels == 1:
        rgb = np.repeat(pixels[:, :, None], 3, axis=2)
    else:
        rgb = cv2.cvtColor(pixels[:, :, :3], cv2.COLOR_BGR2RGB)
    return LoadedImage(rgb, alpha, channels == 1, img.dtype)


def upscale_image(upscaler, image, color_correction=False):
    """SR of a :class:`LoadedImage`: an array ready for ``cv2.imwrite`` (gray, BGR or BGRA, input dtype)."""
    lq = torch.from_numpy(np.ascontiguousarray(image.rgb.transpose(2, 0, 1)))[None]
    sr = upscaler(lq)
    if color_correction:
        sr = color_correct(sr, lq)
    out = sr[0].clamp(0, 1).permute(1, 2, 0).numpy()
    out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY if image.gray else cv2.COLOR_RGB2BGR)
    if image.alpha is not None:
        alpha = cv2.resize(image.alpha, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_CUBIC)
        out = np.dstack([out, alpha.clip(0, 1)])
    return np.rint(out * np.iinfo(image.dtype).max).astype(image.dtype)


def list_inputs(input_path, recursive=False):
    """``[(file, folder relative to the input)]``; a single file is taken whatever its extension."""
    input_path = Path(input_path)
    if input_path.is_file():
        return [(input_path, Path())]
    if not input_path.is_dir():
        raise InferError(f'input {input_path} does not exist.')
    pattern = '**/*' if recursive else '*'
    files = sorted(p for p in input_path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    return [(p, p.parent.relative_to(input_path)) for p in files]


# --------------------------------------------------------------------------------------------- CLI
def build_parser():
    parser = argparse.ArgumentParser(prog='python -m kdsr_pdd.infer', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('input', help='image file or folder of images')
    parser.add_argument('-o', '--output', required=True, help='output folder')
    parser.add_argument('-m', '--model', required=True, help='checkpoint (.pth/.pt)')
    parser.add_argument('--opt', help='option YAML whose network_g describes the network')
    parser.add_argument('--arch', help=f'arch type or preset ({", ".join(PRESETS)})')
    parser.add_argument('--arch-args', help='JSON object of arch keyword arguments (override a preset)')
    parser.add_argument('--param-key', help='checkpoint key to load (default: params_ema, params, raw)')
    parser.add_argument('--tile', type=int, default=0, help='tile size in LR pixels (0: whole image)')
    parser.add_argument('--tile-pad', type=int, default=16, help='context around each tile in LR pixels')
    parser.add_argument('--pad-multiple', type=int, default=1,
                        help='pad inputs to a multiple of this (combined with what the network needs)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='torch device (default: cuda when available, else cpu)')
    parser.add_argument('--fp16', action='store_true', help='half precision (CUDA only)')
    parser.add_argument('--color-correction', action='store_true',
                        help='match each output channel mean/std to the input (PDD inference)')
    parser.add_argument('-r', '--recursive', action='store_true', help='descend into sub-folders')
    parser.add_argument('--skip-existing', action='store_true', help='skip images whose output exists')
    parser.add_argument('--suffix', default='out', help='output name <stem>_<suffix>.png')
    return parser


def _make_upscaler(args):
    if args.tile < 0 or args.tile_pad < 0 or args.pad_multiple < 1:
        raise InferError('--tile and --tile-pad must be >= 0 and --pad-multiple >= 1.')
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise InferError(f'--device {args.device}: CUDA is not available here; use --device cpu.')
    if args.fp16 and device.type != 'cuda':
        raise InferError(f'--fp16 needs a CUDA device (got --device {args.device}); drop --fp16 on CPU.')
    network_opt, source = resolve_network_opt(args.model, args.opt, args.arch, args.arch_args)
    net = build_network(network_opt, args.model, args.param_key, source)
    scale = network_scale(net)
    multiple = math.lcm(args.pad_multiple, required_multiple(net, scale))
    return Upscaler(net, scale, device, args.fp16, args.tile, args.tile_pad, multiple)


def main(argv=None):
    """Run the CLI; return the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        inputs = list_inputs(args.input, args.recursive)
        if not inputs:
            raise InferError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {args.input}.')
        upscaler = _make_upscaler(args)
    except (InferError, CheckpointError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    written = skipped = failed = 0
    for path, folder in tqdm(inputs, desc='infer', unit='img'):
        target = Path(args.output) / folder / f'{path.stem}_{args.suffix}.png'
        if args.skip_existing and target.exists():
            skipped += 1
            continue
        try:
            out = upscale_image(upscaler, read_image(path), args.color_correction)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(target), out):
                raise InferError(f'cannot write {target}')
        except (InferError, cv2.error, torch.cuda.OutOfMemoryError) as err:
            hint = ' (try --tile)' if isinstance(err, torch.cuda.OutOfMemoryError) else ''
            tqdm.write(f'{path}: {err}{hint}; skipped', file=sys.stderr)
            failed += 1
            continue
        written += 1
    print(f'wrote {written}, skipped {skipped} existing, failed {failed}; output in {args.output}')
    return 1 if failed and not (written or skipped) else 0


if __name__ == '__main__':
    sys.exit(main())
