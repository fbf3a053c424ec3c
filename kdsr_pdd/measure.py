"""Measuring one network from its option section (``type`` + keyword arguments): build it, random example
inputs, parameter and MAC counts (on the ``meta`` device: no memory, no arithmetic), latency (median wall time,
smallest process CPU time) and peak memory (CPU resident set or CUDA allocations) of its forward passes.

``kdsr-pdd report``, ``kdsr-pdd selfcheck`` and the benchmarks measure with these; the conventions are those
of the report's table (:mod:`kdsr_pdd.commands.report`).
"""
import gc
import inspect
import re
import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from kdsr_pdd.memory import release_free_memory
from kdsr_pdd.networks import instantiate, network_scale


class MeasureError(ValueError):
    """A network whose forward this module cannot feed; the message says why."""


def build_network(network_opt, device):
    """Instantiate ``network_opt`` (type + keyword arguments) on ``device`` ('meta' allocates nothing)."""
    with torch.device(device):
        net = instantiate(network_opt, 'network')
    return net.eval()


def example_inputs(net, network_opt, lr_size, device):
    """Random inputs for ``net.forward``: ``(lq,)``, or ``(lq, gt)`` for a network whose forward takes the HR too."""
    required = [p for p in inspect.signature(net.forward).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
    h, w = lr_size
    lq = torch.rand(1, network_opt.get('num_in_ch', 3), h, w, device=device)
    if len(required) == 1:
        return (lq, )
    if len(required) == 2:
        scale = network_scale(net)
        return lq, torch.rand(1, 3, scale * h, scale * w, device=device)
    raise MeasureError(f'{network_opt["type"]}.forward takes {len(required)} inputs; only (lq) and (lq, gt) are known.')


def count_parameters(net):
    """``(total, trainable)`` parameter counts."""
    return (sum(p.numel() for p in net.parameters()),
            sum(p.numel() for p in net.parameters() if p.requires_grad))


def count_macs(net, inputs):
    """Multiply-accumulates of one forward (FLOPs / 2 of :class:`FlopCounterMode`); cheap on meta tensors."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(*inputs)
    return counter.get_total_flops() // 2


def _proc_status_kib(field_name):
    with open('/proc/self/status', encoding='ascii') as f:
        return int(re.search(rf'^{field_name}:\s+(\d+) kB', f.read(), re.MULTILINE).group(1))


def _release_freed_memory():
    """Hand memory that Python and glibc's malloc keep after frees back to the system (no-op elsewhere)."""
    gc.collect()
    release_free_memory()


class CPUPeakMemory:
    """Peak resident memory above the level at entry, in bytes (None where /proc cannot be used).

    Memory freed earlier (e.g. by a previous network) is released first; otherwise the allocator would
    reuse its already-resident pages and the increase would be understated.
    """

    def __enter__(self):
        _release_freed_memory()
        try:
            self.start = _proc_status_kib('VmRSS')
            with open('/proc/self/clear_refs', 'w', encoding='ascii') as f:
                f.write('5')  # resets VmHWM to the current resident size (Linux >= 4.0)
        except (OSError, AttributeError):
            self.start = None
        self.peak = None
        return self

    def __exit__(self, *exc):
        if self.start is not None:
            self.peak = (_proc_status_kib('VmHWM') - self.start) * 1024


class CUDAPeakMemory:
    """Peak CUDA memory allocated above the level at entry, in bytes."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        self.start = torch.cuda.memory_allocated(self.device)
        self.peak = None
        return self

    def __exit__(self, *exc):
        self.peak = torch.cuda.max_memory_allocated(self.device) - self.start


@dataclass
class Latency:
    """One network's timings: median wall seconds of a forward, smallest process CPU seconds (None on CUDA)."""
    wall_s: float
    cpu_s: float = None


def measure_latency(network_opt, lr_size, device, repeats=5, warmup=1):
    """``(Latency, peak memory in bytes or None)`` of ``network_opt`` on ``device``: batch 1 at ``lr_size``, random
    weights and input, ``torch.inference_mode``, ``repeats`` runs after ``warmup`` runs (each synchronised on CUDA);
    the median wall time and the smallest process CPU time of one run (None on CUDA); the peak memory of building
    the network and running it (:class:`CUDAPeakMemory` or :class:`CPUPeakMemory`)."""
    device = torch.device(device)
    cuda = device.type == 'cuda'
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    with (CUDAPeakMemory(device) if cuda else CPUPeakMemory()) as memory:
        net = build_network(network_opt, device)
        inputs = example_inputs(net, network_opt, lr_size, device)
        walls, cpus = [], []
        with torch.inference_mode():
            for i in range(warmup + repeats):
                sync()
                start, start_cpu = time.perf_counter(), time.process_time()
                net(*inputs)
                sync()
                if i >= warmup:
                    walls.append(time.perf_counter() - start)
                    cpus.append(time.process_time() - start_cpu)
        del net, inputs
    return Latency(statistics.median(walls), None if cuda else min(cpus)), memory.peak
