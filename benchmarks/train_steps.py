"""Paired training-step benchmark, ours against the authors': ``python benchmarks/train_steps.py [--quick]``.

For each method (PDD EMA configuration, KDSR classic student) the script

1. builds our registered model (``PDDModel`` / ``KDSRStudentModel``) from a shipped option file at the
   sizes printed in the header (random weights; random VGG19 weights unless ``--vgg19``), and the
   authors' step reconstructed in ``benchmarks/authors_steps.py`` on deep copies of the same networks;
2. checks that both compute the same thing, in float64 on a small batch: every logged loss, and the
   gradient of every generator (and discriminator) parameter, within the stated tolerances. If they
   differ it prints what differs and exits with status 1 without timing anything;
3. back in float32 (optimizer states restarted), one warm-up step each, then ``--steps`` paired steps
   of each on the same batches, alternating which goes first: process CPU time, wall time, and the
   peak step memory twice: the resident set high-water mark (``VmHWM``, reset through
   ``/proc/self/clear_refs``) above the resident size at the step's start, after freed memory was
   handed back to the system; and the peak of the tensor memory allocated during one more (profiled,
   untimed) step, from the allocator totals that torch.profiler records;
4. prints a table of medians and the ours / authors ratios (median of the per-pair ratios).

A PDD step is the full objective (past the D-only and supervised warm-ups: distillation, wavelet L1,
perceptual, GAN, D update, EMA update); the reference is the EMA, perturbed once at the start so that
student and reference differ (at an exact copy the distance terms have zero gradient). A KDSR step is
L1 + IDR distillation with the frozen teacher.

Sizes: the networks of the option files at full width and depth (PDD: RRDBNet 64/23/32, U-Net D 64,
VGG19; KDSR-M: 64/53/9) on smaller batches and crops than the files' (PDD 8 + 8 LR 48x48, KDSR 16 LR
64x64), so that a step takes seconds at one thread while every part keeps its share of the work and of
the activation memory (fixed costs such as Adam's update weigh somewhat more than at the files'
sizes). ``--quick`` uses tiny networks and 2 steps: a smoke run whose ratios say little (weight-sized
buffers dominate its memory).

The thread count is forced to 1 (``OMP_NUM_THREADS=1`` before torch is imported and
``torch.set_num_threads(1)``). Quote the ratios, not single absolute times: they pair runs taken
moments apart, so they hold on a loaded machine.
"""
import os

if __name__ == '__main__':  # before torch is imported; main() also calls torch.set_num_threads(1)
    os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = '1'
    os.environ.setdefault('KINETO_LOG_LEVEL', '5')  # the profiler (tensor memory) quiet
    os.environ.setdefault('TORCH_CPP_LOG_LEVEL', 'ERROR')

# isort: split
import argparse
import contextlib
import copy
import functools
import math
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path[:0] = [p for p in (REPO, HERE) if p not in sys.path]  # this checkout's packages first

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import kdsr_pdd.plugin  # noqa: E402, F401  (registers the plugin into BasicSR)

# isort: split
import basicsr  # noqa: E402
import yaml  # noqa: E402
from authors_steps import AuthorsKDSRStudentStep, AuthorsPDDStep  # noqa: E402
from basicsr.archs import build_network  # noqa: E402
from basicsr.models import build_model  # noqa: E402
from tqdm import tqdm  # noqa: E402

from kdsr_arch.archs import KDSRTeacher  # noqa: E402
from kdsr_pdd.measure import CPUPeakMemory  # noqa: E402
from kdsr_pdd.weights import random_vgg19_features_file  # noqa: E402

PDD_OPTIONS = os.path.join(REPO, 'options', 'train', 'pdd', 'PDD_EMA_RealESRGAN_x4_RealSR_Canon.yml')
KDSR_OPTIONS = os.path.join(REPO, 'options', 'train', 'kdsr', 'train_kdsrM_iso_x4_student.yml')

# Network and batch sizes (see the module docstring).
SIZES = {
    'default': {
        'pdd': dict(num_feat=64, num_block=23, num_grow_ch=32, d_feat=64, batch=2, gt_size=64),
        'kdsr': dict(n_feats=64, n_blocks=53, n_encoder_res=9, batch=4, lq_size=24),
    },
    'quick': {
        'pdd': dict(num_feat=8, num_block=1, num_grow_ch=4, d_feat=8, batch=1, gt_size=32),
        'kdsr': dict(n_feats=8, n_blocks=2, n_encoder_res=1, batch=2, lq_size=8),
    },
}
# Equality, checked in float64 (separate copies of the same networks, so that summation order, stacked vs
# separate passes and the like stay far below the tolerances): every logged loss within LOSS_RTOL
# (relative), every parameter's gradient within GRAD_RTOL of the authors' in the max norm, relative to the
# largest entry of the authors' gradient of that tensor.
LOSS_RTOL = 1e-9
GRAD_RTOL = 1e-7


# ------------------------------------------------------------------------------------------------ set-up
def _base_options(path, tmp):
    with open(path, encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    opt.update(num_gpu=0, is_train=True, dist=False, rank=0, world_size=1, auto_resume=False)
    opt['path'].update(models=tmp, training_states=tmp, visualization=tmp, log=tmp)
    opt['train']['total_iter'] = 10**6
    return opt


def _batch_pdd(size, seed, check=False):
    g = torch.Generator().manual_seed(seed)
    b, s = (1, 32) if check else (size['batch'], size['gt_size'])
    gt = torch.rand(b, 3, s, s, generator=g)
    lq = F.interpolate(gt, scale_factor=0.25, mode='bicubic', align_corners=False).clamp(0, 1)
    return {'gt': gt, 'lq': lq, 'lq_real': torch.rand(b, 3, s // 4, s // 4, generator=g)}


def _batch_kdsr(size, seed, check=False):
    g = torch.Generator().manual_seed(seed)
    b, s = (2, 8) if check else (size['batch'], size['lq_size'])
    gt = torch.rand(b, 3, 4 * s, 4 * s, generator=g)
    return {'gt': gt, 'lq': F.interpolate(gt, scale_factor=0.25, mode='area')}


@dataclass
class Pair:
    """One method: our model's step and the authors' step on the same batches, and how to compare them."""
    name: str
    ours: object  # callable(batch)
    authors: object  # callable(batch)
    ours_nets: dict  # name -> module whose gradients are compared
    authors_nets: dict
    batch: object  # callable(seed, check) -> batch dict (float32); check: a small one for the equality check
    sizes: str
    modules: list  # every network and loss module of both sides (for dtype changes)
    optimizers: list
    dtype: torch.dtype = torch.float32

    def make_batch(self, seed, check=False):
        return {k: v.to(self.dtype) for k, v in self.batch(seed, check).items()}

    def to(self, dtype):
        """Convert every module in place (parameters keep their identity) and restart the optimizers."""
        for module in self.modules:
            module.to(dtype)
        for optimizer in self.optimizers:
            optimizer.state.clear()
        self.dtype = dtype
        return self


def build_pdd(size, tmp, vgg_file):
    """Our PDDModel (EMA configuration of the shipped option file, shrunk) and the authors' step on copies."""
    opt = _base_options(PDD_OPTIONS, tmp)
    opt['network_g'].update(num_feat=size['num_feat'], num_block=size['num_block'], num_grow_ch=size['num_grow_ch'])
    opt['network_d']['num_feat'] = size['d_feat']
    torch.manual_seed(0)
    generalist = os.path.join(tmp, 'pdd_generalist.pth')
    torch.save({'params_ema': build_network(opt['network_g']).state_dict()}, generalist)
    opt['path'].update(pretrain_network_g=generalist, pretrain_network_vgg19=vgg_file)
    opt['datasets']['train'].update(gt_size=size['gt_size'], batch_size_per_gpu=size['batch'])
    model = build_model(opt)
    with torch.no_grad():  # the reference moves away from the student (as after some training)
        g = torch.Generator().manual_seed(1)
        for p in model.net_g_ema.parameters():
            p.add_(0.05 * p.std().nan_to_num() * torch.randn(p.shape, generator=g))
    authors = AuthorsPDDStep(copy.deepcopy(model.net_g), copy.deepcopy(model.net_g_ema), copy.deepcopy(model.net_d),
                             _authors_train_options(opt), vgg_file)
    first_iter = model.net_d_init_iters + opt['train']['distill_warmup_iters'] + 1
    counter = iter(range(first_iter, 10**9))

    def ours(batch):
        model.feed_data(batch)
        model.optimize_parameters(next(counter))
        return dict(model.log_dict)

    def theirs(batch):
        return authors.step(batch['lq'], batch['gt'], batch['lq_real'])

    g_opt, d_opt = opt['network_g'], opt['network_d']
    sizes = (f"RRDBNet(num_feat={g_opt['num_feat']}, num_block={g_opt['num_block']}, "
             f"num_grow_ch={g_opt['num_grow_ch']}), U-Net D num_feat {d_opt['num_feat']}, VGG19 (full), "
             f"batch {size['batch']} synthetic + {size['batch']} real LR {size['gt_size'] // 4}x{size['gt_size'] // 4}"
             f" (HR {size['gt_size']}x{size['gt_size']})")
    modules = [model.net_g, model.net_g_ema, model.net_d, model.vgg, authors.net_g, authors.net_ref, authors.net_d,
               authors.cri_domain, authors.cri_perceptual]
    return Pair('PDD (EMA)', ours, theirs, {'net_g': model.net_g, 'net_d': model.net_d},
                {'net_g': authors.net_g, 'net_d': authors.net_d}, functools.partial(_batch_pdd, size), sizes,
                modules, model.optimizers + [authors.optimizer_g, authors.optimizer_d])


def _authors_train_options(opt):
    """The loss / optimizer settings the authors' step reads, from our option file's train section."""
    train = copy.deepcopy(opt['train'])
    train['vgg_opt'] = {'perceptual_layer_weights': train['vgg_opt']['perceptual_layer_weights'],
                        'perceptual_weight': train['vgg_opt']['perceptual_weight']}
    return train


def build_kdsr(size, tmp, vgg_file):
    """Our KDSRStudentModel (the shipped classic iso student file, shrunk) and the authors' step on copies."""
    opt = _base_options(KDSR_OPTIONS, tmp)
    net = dict(n_feats=size['n_feats'], n_blocks=size['n_blocks'], n_encoder_res=size['n_encoder_res'])
    opt['network_g'].update(net)
    opt['network_teacher'].update(net)
    torch.manual_seed(0)
    teacher_file = os.path.join(tmp, 'kdsr_teacher.pth')
    torch.save({'params': KDSRTeacher(**net, scale=4).state_dict()}, teacher_file)
    opt['path'].update(pretrain_network_teacher=teacher_file)
    opt['datasets']['train'].update(gt_size=4 * size['lq_size'], batch_size_per_gpu=size['batch'])
    torch.manual_seed(0)
    model = build_model(opt)
    kd = opt['train']['kd_opt']
    authors = AuthorsKDSRStudentStep(copy.deepcopy(model.net_g), copy.deepcopy(model.net_teacher), opt['scale'],
                                     opt['train']['optim_g'], kd['temperature'])
    counter = iter(range(1, 10**9))

    def ours(batch):
        model.feed_data(batch)
        model.optimize_parameters(next(counter))
        return dict(model.log_dict)

    def theirs(batch):
        return authors.step(batch['lq'], batch['gt'])

    sizes = (f"KDSRStudent / KDSRTeacher(n_feats={net['n_feats']}, n_blocks={net['n_blocks']}, "
             f"n_encoder_res={net['n_encoder_res']}), batch {size['batch']}, LR {size['lq_size']}x{size['lq_size']} "
             f"(HR {4 * size['lq_size']}x{4 * size['lq_size']})")
    return Pair('KDSR student', ours, theirs, {'net_g': model.net_g}, {'net_g': authors.student},
                functools.partial(_batch_kdsr, size), sizes,
                [model.net_g, model.net_teacher, authors.student, authors.teacher],
                model.optimizers + [authors.optimizer])


BUILDERS = {'pdd': build_pdd, 'kdsr': build_kdsr}


# ---------------------------------------------------------------------------------------------- equality
def _relative_error(a, b):
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / scale if scale > 0 else (a - b).abs().max().item()


def _where(name):
    """``'name; '`` before a tolerance, or nothing when no entry differs at all."""
    return f'{name}; ' if name else ''


def check_equal(pair, batch):
    """Run one step of each on ``batch``; return (ok, lines): the largest loss and gradient discrepancies."""
    ours_log, authors_log = pair.ours(batch), pair.authors(batch)
    lines, ok = [], True
    common = [k for k in ours_log if k in authors_log]
    missing = sorted(set(ours_log) - set(authors_log))
    if missing:
        ok = False
        lines.append(f'  losses only ours logs: {missing}')
    worst_loss = ('', 0.0)
    for k in common:
        err = abs(ours_log[k] - authors_log[k]) / max(abs(authors_log[k]), 1e-12)
        if err > LOSS_RTOL:
            ok = False
            lines.append(f'  {k}: ours {ours_log[k]:.8g}, authors {authors_log[k]:.8g} (relative {err:.2e})')
        worst_loss = max(worst_loss, (k, err), key=lambda t: t[1])
    lines.append(f'  losses ({", ".join(common)}): largest relative difference {worst_loss[1]:.1e} '
                 f'({_where(worst_loss[0])}tolerance {LOSS_RTOL:.0e})')
    for net_name, ours_net in pair.ours_nets.items():
        authors_params = dict(pair.authors_nets[net_name].named_parameters())
        worst, count = ('', 0.0), 0
        for k, p in ours_net.named_parameters():
            q = authors_params[k]
            if (p.grad is None) != (q.grad is None):
                ok = False
                lines.append(f'  {net_name}.{k}: gradient only on one side')
                continue
            if p.grad is None:
                continue
            count += 1
            err = _relative_error(p.grad, q.grad)
            worst = max(worst, (k, err), key=lambda t: t[1])
        if worst[1] > GRAD_RTOL:
            ok = False
        lines.append(f'  {net_name} gradients ({count} tensors): largest max-norm difference {worst[1]:.1e} of the '
                     f'largest entry ({_where(worst[0])}tolerance {GRAD_RTOL:.0e})')
    return ok, lines


# ------------------------------------------------------------------------------------------------ timing
def measure_step(step, batch):
    """(process CPU s, wall s, peak step memory bytes or None) of one call ``step(batch)``."""
    with CPUPeakMemory() as memory:
        cpu, wall = time.process_time(), time.perf_counter()
        step(batch)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return cpu, wall, memory.peak


@contextlib.contextmanager
def _stderr_to_devnull():
    """The profiler's C++ start / stop lines go to file descriptor 2; silence them for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w', encoding='ascii') as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tensor_peak(step, batch):
    """Peak CPU tensor memory of one call ``step(batch)`` above the level at its start, in bytes.

    From the allocator totals that torch.profiler records with every allocation and free (exact and
    independent of malloc's caching; the profiler slows the call, so it is not timed). None where the
    profiler does not expose them.
    """
    from torch.profiler import ProfilerActivity, profile
    try:
        with _stderr_to_devnull(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(batch)
        allocation = torch._C._profiler._EventType.Allocation
        events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            event = stack.pop()
            stack.extend(event.children)
            if event.tag == allocation:
                events.append((event.start_time_ns, event.extra_fields.alloc_size, event.extra_fields.total_allocated))
    except (AttributeError, RuntimeError):
        return None
    if not events:
        return None
    events.sort()
    start = events[0][2] - events[0][1]
    return max(total for _, _, total in events) - start


def time_pairs(pair, steps, progress):
    """``{'ours': [(cpu, wall, mem, tensor_mem)], 'authors': [...]}`` over ``steps`` pairs, alternating the order.

    Each pair is timed first; one more step of each, profiled, gives the tensor memory.
    """
    samples = {'ours': [], 'authors': []}
    for i in progress(range(steps), desc=pair.name, unit='pair'):
        batch = pair.make_batch(100 + i)
        order = ('ours', 'authors') if i % 2 == 0 else ('authors', 'ours')
        for variant in order:
            samples[variant].append(measure_step(getattr(pair, variant), batch))
    batch = pair.make_batch(99)
    for variant in ('ours', 'authors'):
        peak = tensor_peak(getattr(pair, variant), batch)
        samples[variant] = [s + (peak,) for s in samples[variant]]
    return samples


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else math.nan


def table_rows(pair, samples):
    """Markdown rows: ours, authors, ours / authors (medians; the ratio is the median of per-pair ratios)."""
    def cell(value, digits, scale=1):
        return '—' if math.isnan(value) else f'{value / scale:.{digits}f}'

    rows = []
    for variant in ('ours', 'authors'):
        cpu, wall, mem, tensors = zip(*samples[variant])
        rows.append(f'| {pair.name} | {variant} | {cell(_median(cpu), 3)} | {cell(_median(wall), 3)} | '
                    f'{cell(_median(mem), 1, 2**20)} | {cell(_median(tensors), 1, 2**20)} |')
    ratios = []
    for i in range(4):
        pairs = [(o[i], a[i]) for o, a in zip(samples['ours'], samples['authors'])
                 if o[i] is not None and a[i] is not None and a[i] > 0]
        ratios.append(_median([o / a for o, a in pairs]) if pairs else math.nan)
    rows.append(f'| {pair.name} | **ours / authors** | ' + ' | '.join(f'**{cell(r, 2)}**' for r in ratios) + ' |')
    return rows, ratios


def header(args, pairs):
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo', encoding='ascii', errors='replace') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    lines = [f'## Training steps, ours / the authors\' (reconstructed): {args.steps} paired steps each'
             + (' (--quick: tiny networks, a smoke run)' if args.quick else ''), '',
             f'- python {platform.python_version()}, torch {torch.__version__}, basicsr {basicsr.__version__}, '
             f'{cpu}; torch.get_num_threads() = {torch.get_num_threads()}, '
             f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS")}, float32, CPU.']
    lines += [f'- {p.name}: {p.sizes}.' for p in pairs]
    lines += ['- CPU: process CPU time (time.process_time) of one step; wall: time.perf_counter; medians over the '
              'steps. Peak step memory, RSS: VmHWM above the resident size at the step start (freed memory handed '
              'back first), median; tensors: the largest amount of tensor memory allocated during one (extra, '
              'profiled) step above the amount at its start, from the allocator totals torch.profiler records. '
              'Ratios: median of the per-pair ratios ours / authors.']
    return lines


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='tiny networks, 2 steps: a smoke run')
    parser.add_argument('--steps', type=int, help='paired steps per method (default 6; --quick 2)')
    parser.add_argument('--methods', nargs='+', choices=('pdd', 'kdsr'), default=['pdd', 'kdsr'])
    parser.add_argument('--vgg19', help='VGG19 weights file (torchvision state dict, or its features.* entries); '
                        'default: random weights (the timings do not depend on the values)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 2 if args.quick else 6
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    size = SIZES['quick' if args.quick else 'default']
    progress = (lambda it, **kw: it) if args.no_progress else (lambda it, **kw: tqdm(it, leave=False, **kw))
    with tempfile.TemporaryDirectory() as tmp:
        vgg_file = args.vgg19 or random_vgg19_features_file(os.path.join(tmp, 'vgg19.pth'))
        pairs = [BUILDERS[method](size[method], tmp, vgg_file) for method in args.methods]
        lines = header(args, pairs)
        lines += ['', 'Equal outputs (one step of each from the same weights on the same small batch, in float64):']
        all_ok = True
        for pair in pairs:
            ok, found = check_equal(pair.to(torch.float64), pair.make_batch(0, check=True))
            lines += [f'- {pair.name}: ' + ('equal' if ok else '**DIFFERENT**')] + found
            all_ok &= ok
        print('\n'.join(lines), flush=True)
        if not all_ok:
            print('\nOurs and the authors\' steps differ: no timing (fix the discrepancy first).')
            return 1
        rows = ['', '| method | variant | CPU s / step | wall s / step | peak step memory, RSS (MiB) | '
                'peak step memory, tensors (MiB) |', '|---|---|--:|--:|--:|--:|']
        for pair in pairs:
            pair.to(torch.float32)
            batch = pair.make_batch(1)
            pair.ours(batch), pair.authors(batch)  # warm-up: optimizer state, one-time kernel set-up
            samples = time_pairs(pair, args.steps, progress)
            rows += table_rows(pair, samples)[0]
    print('\n'.join(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
