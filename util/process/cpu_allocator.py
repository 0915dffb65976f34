"""What the process's C allocator does with freed memory: the CPU speed setting behind --cpu_allocator.

glibc's malloc serves every block over 32 MB (most activations of a 256x256 network) with a fresh mmap and
unmaps it when freed. Each training step then asks the kernel for gigabytes of new pages, and zeroing them in
page faults costs about as much as the convolutions (ATME at 256x256, batch 4: the training step took 1.8 times
as long; docs/speed.md). With `reuse`, malloc takes large blocks from its heap and keeps freed memory
for the next step (mallopt: no mmap, no trimming below 2 GB); the process's peak resident memory is then higher,
as freed blocks are kept and posix_memalign's remainders split some of them. ATME, 256x256, batch 2, fp32, on a
2-core Xeon with AVX-512 and AMX (`python -m scripts.bench.allocator --size 256 --batch_size 2 --steps 3`):
reuse peaked at 6.13 GB with 0.16 M page faults per step, system at 4.63 GB with 2.8 M. Bounded settings that
map only the largest blocks afresh (its bounded:128:128 and bounded:512:256) peaked at 6.21 and 6.06 GB with
0.57 M and 0.40 M faults: the extra memory is the heap's holes between medium blocks, so reuse is kept whole.
With ATME's fused blocks (models/atme/fused.py) its peak is no higher than the release's (docs/speed.md).

    auto    reuse where the C library is glibc, else the system's allocator as it is
    reuse   as above; refused where the C library is not glibc
    system  leave the allocator as it is

The setting is process-wide, so it is the entry point's decision (train.py, test.py, the benchmarks): `applied`
sets it for a CPU run while the block runs and puts malloc back on return; a GPU run leaves it alone (its large
blocks live on the device). Loader workers are forked from the process and would inherit it; their
`worker_init_fn` calls `reset_in_worker`, so they keep the system's allocator.
"""
import contextlib
import ctypes
import logging
import os

log = logging.getLogger(__name__)

MODES = ("auto", "reuse", "system")

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_NEVER = 2 ** 31 - 1  # mallopt takes an int: the largest free top of the heap that is kept (2 GB)
# glibc's own values (malloc(3), mallopt(3)) and the environment variables that change them at start.
SYSTEM_DEFAULTS = ((M_MMAP_MAX, "MALLOC_MMAP_MAX_", "glibc.malloc.mmap_max", 65536),
                   (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold", 128 * 1024))

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


def in_effect():
    """'reuse' while this process keeps freed memory for reuse, else 'system'."""
    return _applied or "system"


def _start_value(variable, tunable, default, environ):
    """What glibc started this process with for one parameter: GLIBC_TUNABLES, else MALLOC_*_, else its default."""
    for item in environ.get("GLIBC_TUNABLES", "").split(":"):
        key, _, value = item.partition("=")
        if key == tunable and value.isdigit():
            return int(value)
    value = environ.get(variable, "")
    return int(value) if value.isdigit() else default


def restore(environ=None):
    """Put malloc back as the process started (the values of SYSTEM_DEFAULTS, or those the environment set) and
    give the kept memory back to the OS. glibc's sliding mmap threshold stays where it had got to."""
    global _applied
    if _applied != "reuse":
        return
    environ = os.environ if environ is None else environ
    libc = ctypes.CDLL(None)
    for parameter, variable, tunable, default in SYSTEM_DEFAULTS:
        libc.mallopt(parameter, _start_value(variable, tunable, default, environ))
    libc.malloc_trim(0)
    _applied = None
    log.debug("CPU allocator: back to the system's settings")


@contextlib.contextmanager
def applied(mode, device_type):
    """Apply --cpu_allocator `mode` while the block runs when `device_type` is 'cpu'; restore malloc on return.
    Yields what is in effect. On CUDA nothing changes: the setting is for the host's activations."""
    if device_type != "cpu":
        log.debug("--cpu_allocator %s: not applied, the run is on %s", mode, device_type)
        yield in_effect()
        return
    before = _applied
    now = configure(mode)
    try:
        yield now
    finally:
        if before != "reuse":
            restore()


def reset_in_worker(worker_id=None):
    """A data loader worker's start: it keeps the system's allocator even when its parent reuses freed memory
    (a worker holds a few images at a time; reuse would only raise its resident memory)."""
    restore()


def describe():
    """The setting in effect and its cost, for logs and benchmark reports."""
    if _applied == "reuse":
        return ("reuse (glibc keeps freed memory for the next step: ~17x fewer page faults per ATME step than "
                "system, and a peak resident set about a third above system's)")
    return "system (malloc as the C library sets it)"
