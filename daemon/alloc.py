"""The C allocator's settings for a process that handles multi-MB images one after another.

glibc hands each allocation of more than 128 KiB–32 MiB (a threshold it moves as it goes) its
own fresh mapping, and gives freed memory at the top of a heap back to the kernel beyond 128 KiB
or so. An upload worker reads a 2–8 MB photo, builds its upload copy, hashes and sends it, and
frees both: every photo then costs two fresh multi-MB mappings, i.e. a page fault per 4 KiB,
some of it while holding the GIL. Keeping up to 8 MiB free per heap and serving blocks below 8
MiB from the heaps reuses the same memory from one photo to the next (measured with
``python -m bench wire``: 85 % fewer page faults, about 15 % less CPU and 10 % less wall time).
The price: each of glibc's arenas (about one per busy thread) may keep up to 8 MiB it does not
use right now.
"""

from __future__ import annotations

import ctypes
import sys

#: glibc's ``mallopt`` parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 8 << 20


def tune_for_large_buffers() -> bool:
    """Apply the settings above; True if they took effect (Linux with glibc), False elsewhere
    (macOS, musl), where nothing changes. Safe to call more than once."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)
    )
