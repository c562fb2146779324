"""Opening files zoo did not write: regular files only, every read bounded.

A size check by `stat` says nothing about /dev/zero (st_size 0, endless data), and opening a
FIFO blocks until a writer comes. So a file is opened non-blocking (a FIFO opens at once),
its *opened* descriptor is fstat'ed and refused unless it is a regular file, and reads stop
at limit + 1 bytes whatever the size said. `refuse(message)` builds the caller's exception
(SpecError for specs and weights, ImportRefused for imported models).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
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


# --- hashes already checked, kept beside a cached build ------------------------------------------
# A cached build's files are checked against its manifest's sha256 before every use, by the
# parent that reuses the build and by the child that loads it: the whole zoo's 13 GiB, hashed
# twice per verify. A build in the cache keeps HASH_RECORD: for each file, the stat identity it
# had while it was hashed and the digest found. Any change to a file (rewritten, replaced,
# truncated, a hard link added or removed) changes its inode, size, mtime or ctime, and ctime
# cannot be set back, so a file whose identity still matches has the recorded bytes; any other
# file is hashed again. The record is no weaker than the manifest beside it: whoever can
# rewrite the one can rewrite the other. Never written into a user's --out folder. It detects
# changes, not a failing disk: a file whose bytes rot under an unchanged identity is trusted.
HASH_RECORD = ".zoo-hashes.json"
HASH_RECORD_LIMIT = 4 << 20
# A file stamped this close to now is not recorded: where file times tick coarsely (every few
# ms before Linux 6.13, whole seconds on some file systems), a same-size rewrite within the
# tick of the last write leaves the identity as it was. Git's rule for "racily clean" entries.
RACY_NS = 2_000_000_000


def stat_identity(path: str | Path) -> tuple:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def settled(identity: tuple, now: int | None = None) -> bool:
    """Whether a file's times are older than RACY_NS: only then may its identity stand for
    its bytes."""
    now = time.time_ns() if now is None else now
    return now - max(identity[3], identity[4]) > RACY_NS


def sha256_stable(path: Path) -> tuple[str, tuple | None]:
    """(sha256, the file's stat identity), the identity None when the file changed while read."""
    before = stat_identity(path)
    digest = sha256_file(path)
    return digest, (before if stat_identity(path) == before else None)


def recorded_hashes(folder: Path, rels) -> dict[str, tuple[tuple, str]]:
    """rel -> (stat identity, digest) as recorded, for each of `rels` (the manifest's files)
    whose stat identity is still the one it had when it was hashed; {} without a record."""
    try:
        record = json.loads(read_bytes(folder / HASH_RECORD, HASH_RECORD_LIMIT, ValueError,
                                       follow_symlinks=False))
    except (ValueError, OSError):
        return {}
    if not isinstance(record, dict):
        return {}
    known = {}
    for rel in rels:
        entry = record.get(rel)
        if not (isinstance(entry, list) and len(entry) == 6 and isinstance(entry[5], str)
                and all(isinstance(v, int) for v in entry[:5])):
            continue
        try:
            if stat_identity(folder / rel) == tuple(entry[:5]):
                known[rel] = (tuple(entry[:5]), entry[5])
        except OSError:
            pass
    return known


def write_hash_record(folder: Path, entries: dict[str, tuple[tuple, str]]) -> None:
    """Record {rel: (identity, digest)} (each from sha256_stable) in `folder`, atomically,
    leaving out files stamped within RACY_NS of now (hashed again next time)."""
    now = time.time_ns()
    kept = {rel: [*ident, digest] for rel, (ident, digest) in entries.items() if settled(ident, now)}
    if not kept:
        return
    tmp = folder / f"{HASH_RECORD}.{os.getpid()}-{now}.tmp"
    try:
        tmp.write_text(json.dumps(kept))
        os.replace(tmp, folder / HASH_RECORD)
    except OSError:             # a record is only a saving: a build without one is hashed
        with contextlib.suppress(OSError):
            tmp.unlink()


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
