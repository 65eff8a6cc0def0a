"""Process-level settings that make long CPU runs faster without changing any number.

`keep_freed_memory`: glibc's malloc returns every freed block above its mmap threshold (which
adapts, up to 32 MiB) to the operating system, so the next tensor of that size is mapped afresh
and the kernel zeroes each of its pages on first touch. The edge engine makes many short-lived
tensors of 10-40 MiB per forward (per-receiver residual streams), and that page-fault work was
~20% of an ACDC candidate forward on Gemma3 (benchmarks/acdc_forward.py). Fixing the threshold at
its maximum and never trimming the heap keeps those blocks for reuse. The `wildcircuits` command
calls it at start; Python users may call it themselves. Memory then stays at its peak until exit.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as above; False (and nothing changed) on other C libraries."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    done = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    done &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    done &= mallopt(_M_TOP_PAD, 256 * 1024 * 1024)
    return bool(done)
