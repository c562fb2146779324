"""Opening files zoo did not write: regular files only, every read bounded.

A size check by `stat` says nothing about /dev/zero (st_size 0, endless data), and opening a
FIFO blocks until a writer comes. So a file is opened non-blocking (a FIFO opens at once),
its *opened* descriptor is fstat'ed and refused unless it is a regular file, and reads stop
at limit + 1 bytes whatever the size said. `refuse(message)` builds the caller's exception
(SpecError for specs and weights, ImportRefused for imported models).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Callable

Refuse = Callable[[str], Exception]


def open_regular(path: str | Path, refuse: Refuse, *, follow_symlinks: bool = True) -> io.BufferedReader:
    """The file opened for reading, after checking that it is a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if not follow_symlinks and Path(path).is_symlink():
            raise refuse("is a symbolic link; refused") from None
        raise refuse(f"cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"not a regular file ({_kind(st.st_mode)}); refused")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | Path, limit: int, refuse: Refuse, *, follow_symlinks: bool = True) -> bytes:
    """All of a regular file, refused past `limit` bytes (counted while reading)."""
    with open_regular(path, refuse, follow_symlinks=follow_symlinks) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise refuse(f"{size} bytes is over the limit of {limit}")
        data = read_at_most(f, limit + 1)
    if len(data) > limit:
        raise refuse(f"reading it gives more than the limit of {limit} bytes")
    return data


def read_at_most(f, n: int) -> bytes:
    """Up to n bytes from f (fewer at its end), without trusting any declared size."""
    chunks, left = [], n
    while left > 0:
        chunk = f.read(min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def swap_folder(tmp: Path, target: Path) -> None:
    """Put the finished folder `tmp` in place of `target` (the caller checked that zoo may
    replace it and holds any lock): the old one is renamed aside first and put back if the
    second rename fails, so `target` is never half of each."""
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    old = target.parent / f".{target.name}.old-{os.getpid()}-{time.time_ns()}"
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
