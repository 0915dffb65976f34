"""What the process's C allocator does with freed memory: the CPU speed setting behind --cpu_allocator.

glibc's malloc serves every block over 32 MB (most activations of a 256x256 network) with a fresh mmap and
unmaps it when freed. Each training step then asks the kernel for gigabytes of new pages, and zeroing them in
page faults costs about as much as the convolutions (ATME at 256x256, batch 4: the training step took 1.8 times
as long; README, speed section). With `reuse`, malloc takes large blocks from its heap and keeps freed memory
for the next step (mallopt: no mmap, no trimming below 2 GB); the process's peak resident memory is then higher,
as freed blocks are kept and posix_memalign's remainders split some of them. ATME, 256x256, batch 2, fp32, on a
2-core Xeon with AVX-512 and AMX (`python -m scripts.bench.allocator --size 256 --batch_size 2 --steps 3`):
reuse peaked at 6.13 GB with 0.16 M page faults per step, system at 4.63 GB with 2.8 M. Bounded settings that
map only the largest blocks afresh (its bounded:128:128 and bounded:512:256) peaked at 6.21 and 6.06 GB with
0.57 M and 0.40 M faults: the extra memory is the heap's holes between medium blocks, so reuse is kept whole.
With ATME's fused blocks (models/atme/fused.py) its peak is no higher than the release's (README, speed section).

    auto    reuse where the C library is glibc, else the system's allocator as it is
    reuse   as above; refused where the C library is not glibc
    system  leave the allocator as it is

The setting is process-wide and made once; the modes are applied by `configure`, which BaseModel calls.
"""
import ctypes
import logging
import os

log = logging.getLogger(__name__)

MODES = ("auto", "reuse", "system")

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_NEVER = 2 ** 31 - 1  # mallopt takes an int: the largest free top of the heap that is kept (2 GB)

REUSE_NEEDS_GLIBC = ("--cpu_allocator reuse configures glibc's malloc, and this process does not run on glibc: "
                     "use --cpu_allocator auto or system")

_applied = None


def glibc_version():
    """The version of the C library when it is glibc ('2.36'), else None."""
    try:
        name = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None
    return name.split()[-1] if name and name.startswith("glibc") else None


def configure(mode):
    """Apply --cpu_allocator `mode` to this process; returns what is in effect ('reuse' or 'system')."""
    global _applied
    if mode not in MODES:
        raise ValueError(f"--cpu_allocator must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "system":
        if _applied == "reuse":
            log.warning("--cpu_allocator system: this process already keeps freed memory for reuse, which cannot "
                        "be undone in it")
        return _applied or "system"
    version = glibc_version()
    if version is None:
        if mode == "reuse":
            raise ValueError(REUSE_NEEDS_GLIBC)
        return _applied or "system"
    if _applied != "reuse":
        libc = ctypes.CDLL(None)
        if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_NEVER)):
            raise RuntimeError(f"glibc {version} refused mallopt for --cpu_allocator {mode}; "
                               f"use --cpu_allocator system")
        _applied = "reuse"
        log.info("CPU allocator: freed memory is kept for reuse (glibc %s; --cpu_allocator system leaves "
                 "malloc as it is)", version)
    return _applied


def describe():
    """The setting in effect and its cost, for logs and benchmark reports."""
    if _applied == "reuse":
        return ("reuse (glibc keeps freed memory for the next step: ~17x fewer page faults per ATME step than "
                "system, and a peak resident set about a third above system's)")
    return "system (malloc as the C library sets it)"
