"""Keep the engine thread's OpenMP workers spinning.

torch's CPU kernels (and MKL's) run their parallel regions on GNU OpenMP (libgomp). Each
thread that starts a parallel region owns a pool of worker threads that outlives the
region, and libgomp counts every pool's threads: once the process has more than there are
CPUs, it stops its workers spinning between regions (the "throttled" spin count, 100
iterations), so every region wakes a sleeping worker through the kernel. The thread that
loaded the model keeps such an idle pool, so the engine thread's pool pushes the count over
on a 2-core machine, and each of a decode step's hundreds of small kernels paid the wake-up:
a decode step took ~1.7x as long in the engine thread as in the main thread, and the
multi-LoRA kernels (many small ones per layer) slowed the most.

`release_idle_pool` hands the calling thread's idle workers back (`omp_pause_resource_all`,
OpenMP 5.0; the calling thread's own pool only) before the engine thread starts, so the
engine's pool is the one that spins. A thread that runs parallel torch code again later
gets a new pool; nothing breaks, it is only slower again."""

from __future__ import annotations

import ctypes
import os

OMP_PAUSE_SOFT = 1


def release_idle_pool() -> bool:
    """Release the calling thread's idle OpenMP worker threads, if the process runs on a
    libgomp that can (else nothing happens). True when released."""
    noload = getattr(os, "RTLD_NOLOAD", None)
    if noload is None:  # not a glibc-style dynamic loader
        return False
    try:
        libgomp = ctypes.CDLL("libgomp.so.1", mode=noload)  # only if already loaded
    except OSError:
        return False
    pause = getattr(libgomp, "omp_pause_resource_all", None)
    if pause is None:
        return False
    pause.argtypes = [ctypes.c_int]
    pause.restype = ctypes.c_int
    return bool(pause(OMP_PAUSE_SOFT) == 0)
