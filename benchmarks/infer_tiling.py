"""Time and memory of whole-image vs tiled inference: ``python benchmarks/infer_tiling.py CHECKPOINT --size N``.

Upscales one N x N photo (scikit-image's astronaut resized with cv2 bicubic) with the checkpoint's network
on the CPU, as ``kdsr-pdd infer`` runs it (:class:`kdsr_pdd.upscaler.Upscaler`), and prints one JSON line:
the size, the tile and its context (and the seconds deriving it took), the wall and CPU (user / sys)
seconds of the upscaling alone, and the process's peak resident memory. Options:

* ``--tile T`` (0: whole image, the default); ``--tile-pad P`` (default: derived, as the command does);
* ``--malloc threshold`` raises glibc's mmap threshold to its maximum (32 MiB) and sets a 1 GiB top pad and
  trim threshold through ``mallopt`` before anything is allocated (the ``MALLOC_MMAP_THRESHOLD_`` /
  ``MALLOC_TOP_PAD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables do the same from outside);
  ``--malloc reuse`` applies what ``kdsr-pdd infer`` does (:func:`kdsr_pdd.memory.reuse_freed_memory`:
  no mapped blocks at all, freed memory kept); ``--malloc glibc`` (the default) leaves glibc as it is;
* ``--threads`` (default 1), and ``--seams`` to also report the largest 8-bit difference from a whole-image
  pass (which then runs too: memory is that of both).

Run one configuration per process so that the peak memory is its own (e.g. under ``/usr/bin/time -v``).
"""
import argparse
import ctypes
import json
import resource
import sys
import time

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2); larger values are refused


def tune_malloc(mode):
    """glibc ``mallopt`` for ``mode`` (see the module docstring); True when applied."""
    if mode == 'reuse':
        from kdsr_pdd.memory import reuse_freed_memory
        return reuse_freed_memory()
    libc = ctypes.CDLL('libc.so.6')
    return all(libc.mallopt(option, value) == 1 for option, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TOP_PAD, 1 << 30), (M_TRIM_THRESHOLD, 1 << 30)))


def photo(size):
    """scikit-image's astronaut as float32 RGB [1, 3, size, size] in [0, 1]."""
    import cv2
    import numpy as np
    import skimage.data
    import torch
    pixels = cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float()[None] / 255


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('checkpoint')
    parser.add_argument('--size', type=int, required=True, help='LR side in pixels')
    parser.add_argument('--tile', type=int, default=0)
    parser.add_argument('--tile-pad', type=int)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--malloc', choices=('glibc', 'threshold', 'reuse'), default='glibc')
    parser.add_argument('--seams', action='store_true')
    args = parser.parse_args(argv)
    accepted = tune_malloc(args.malloc) if args.malloc != 'glibc' else None
    import torch

    import kdsr_pdd.plugin  # noqa: F401
    from kdsr_pdd.networks import load_network
    from kdsr_pdd.upscaler import Upscaler

    torch.set_num_threads(args.threads)
    try:
        net, info = load_network(args.checkpoint)
    except (OSError, ValueError) as err:  # missing / unreadable checkpoint, NetworkError, CheckpointError
        parser.exit(2, f'error: {err}\n')
    x = photo(args.size)
    upscaler = Upscaler(net, info, tile=args.tile, tile_pad=args.tile_pad)
    start = time.perf_counter()
    context = upscaler.context(args.tile) if args.tile else None
    measure = time.perf_counter() - start
    start_cpu, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    sr = upscaler(x)
    wall, end_cpu = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    report = dict(size=args.size, tile=args.tile, context=context, context_s=round(measure, 1), threads=args.threads,
                  malloc=args.malloc, malloc_accepted=accepted,
                  wall_s=round(wall, 1), user_s=round(end_cpu.ru_utime - start_cpu.ru_utime, 1),
                  sys_s=round(end_cpu.ru_stime - start_cpu.ru_stime, 1),
                  peak_rss_mib=round(end_cpu.ru_maxrss / 1024))
    if args.seams:
        whole = Upscaler(net, info, tile=0)(x)
        report['max_diff_8bit'] = int(((sr.clamp(0, 1) * 255).round() - (whole.clamp(0, 1) * 255).round()).abs().max())
    print(json.dumps(report))
    return 0


if __name__ == '__main__':
    sys.exit(main())
