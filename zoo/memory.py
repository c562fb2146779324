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
