"""This process's peak resident memory, measured so that a child reports its own.

`getrusage().ru_maxrss` alone would not do: Linux keeps it across exec (the exec'd program
inherits the peak of the process it replaced, and with `vfork`, which `subprocess` uses, that
is the parent's whole peak), so a runner started by a 1 GB verify would report 1 GB.
`/proc/self/status`'s VmHWM belongs to the new program's own address space; writing 5 to
`/proc/self/clear_refs` resets it to the current size. Elsewhere, ru_maxrss is the fallback.
"""
from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """The highest resident size this program has had, in MiB."""
    try:
        return _status_kb("VmHWM") / 1024.0
    except OSError:
        return _maxrss_kb() / 1024.0


def reset_peak_mb() -> float:
    """Reset the peak to the resident size now and return that size, in MiB (a baseline for
    measuring one step's peak). Where it cannot be reset, returns the peak so far."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmRSS") / 1024.0
    except OSError:
        return _maxrss_kb() / 1024.0


def _maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(f"no {key} in /proc/self/status")


# --- the C allocator in runner children --------------------------------------------------
KEEP_FREED_VAR = "ZOO_MALLOC"     # "glibc": glibc's defaults; "kept": freed memory kept, 4 KiB pages
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_allocator = "glibc defaults"


def child_environment() -> dict[str, str]:
    """Variables a runner child needs in its environment when it starts: glibc reads its
    tunables once, at exec, so the huge pages of keep_freed_memory are asked for here, by
    the parent (`glibc.malloc.hugetlb=1`: malloc madvises the memory it takes from the
    kernel for transparent huge pages). The user's own GLIBC_TUNABLES are kept, and their
    own hugetlb setting wins."""
    import os
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if os.environ.get(KEEP_FREED_VAR) in ("glibc", "kept") or "glibc.malloc.hugetlb=" in tunables:
        return {}
    return {"GLIBC_TUNABLES": ":".join(t for t in (tunables, HUGE_PAGES_TUNABLE) if t)}


def keep_freed_memory() -> str:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the
    kernel, and return what was set (also `allocator()`), with whether the memory comes in
    transparent huge pages (asked for by child_environment).

    Why keep it: by default glibc serves large blocks with a fresh mmap and trims the heap's top
    once more than twice the last such block is free, so a step that frees its activations
    gives their pages back and the next step faults every page in again. In a
    network's forward pass that is one minor fault per 4 KiB of activation: on this
    project's VM (about 3 us a fault) a 12.8 MB depthwise convolution's forward took 37 ms
    instead of 8 ms, and which steps paid depended on glibc's history (its mmap threshold
    moves with what was freed). PyTorch's CPU tuning guide recommends jemalloc or tcmalloc
    for the same reason; glibc's own knobs do it without a new dependency: no mmap (every
    block from the heap) and no trimming. Engines with their own pools (MXNet, ONNX
    Runtime's arena) are unaffected. The cost is memory: a block no longer fits every
    freed hole, so the children's peak RSS rose by 0-17% (benchmarks/allocator.py).

    Why huge pages: a training step streams through hundreds of MB of activations, and with
    4 KiB pages every 4 KiB is a TLB entry; in 2 MiB pages PyTorch's training steps ran
    3-13% faster, TensorFlow's up to 7%, MXNet's and ONNX Runtime's level within noise
    (benchmarks/allocator.py, figures in the README). Where the kernel's
    transparent huge pages are off ("never"), the tunable changes nothing and the report
    says so.

    ZOO_MALLOC=glibc keeps glibc's defaults; ZOO_MALLOC=kept keeps freed memory in 4 KiB
    pages."""
    global _allocator
    import os
    import sys
    if os.environ.get(KEEP_FREED_VAR) == "glibc" or not sys.platform.startswith("linux"):
        return _allocator
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):        # not glibc (musl, ...): nothing to set
        ok = False
    if ok:
        _allocator = "glibc, freed memory kept (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2^31-1)"
        if HUGE_PAGES_TUNABLE in os.environ.get("GLIBC_TUNABLES", "").split(":"):
            _allocator += f", transparent huge pages ({HUGE_PAGES_TUNABLE}; the kernel's THP mode: {thp_mode()})"
    return _allocator


def thp_mode() -> str:
    """The kernel's transparent-huge-page mode (always, madvise or never), or "unknown"."""
    try:
        text = _THP_MODE.read_text()
    except OSError:
        return "unknown"
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else "unknown"


def huge_page_kb() -> int:
    """Anonymous memory of this process in transparent huge pages, in KiB (0 where unknown)."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def allocator() -> str:
    """What this process's C allocator was told (see keep_freed_memory)."""
    return _allocator
