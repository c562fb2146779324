"""The build cache: where `zoo build` (without --out), verify and bench keep native builds.

Layout under `root()` (ZOO_CACHE/builds, default ~/.cache/zoo/builds):
  ENGINE/NAME-KEY/   one build (see zoo/builds.py), its mtime = when it was last used
  .weights/SHA.npz   canonical weights, stored once and hard-linked into every build of them
  .locks/            per-build lock files (never deleted: deleting a lock file races its users)

The cache is bounded (`limit_bytes()`, ZOO_CACHE_LIMIT, default 16G): after every new build
the least recently used builds are evicted until the cache fits, never a build in use. A
build is in use while someone holds `lease(path)` on it (a shared flock); eviction takes the
exclusive lock without waiting and skips the build when that fails. Builds of one-off specs
(imports, files outside the zoo) are marked transient: whoever made them removes them with
`discard_transient` when done, and `prune` evicts any left over first.

Folders outside `root()` (`zoo build --out DIR`) are never evicted, leased or touched here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError, ZooError

# the whole zoo's builds (every engine, and the float64 oracle's) take 13.3 GiB: under a smaller
# bound a whole-zoo verify evicts each build before its next run needs it, and rebuilds them all
DEFAULT_LIMIT = "16G"
TRANSIENT_GRACE_S = 3600.0    # a transient build unused this long was left by a run that died
WEIGHTS_DIR, LOCKS_DIR = ".weights", ".locks"
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class NoSpace(ZooError):
    """Not enough free disk space for a build. Exit status 2."""

    exit_code = 2


@dataclass
class Entry:
    engine: str
    network: str
    path: Path
    bytes: int          # every file of the build (weights shared with other builds included)
    own_bytes: int      # what removing it frees (files no other build links to)
    last_used: float    # seconds since the epoch
    in_use: bool
    transient: bool


def root() -> Path:
    """The cache folder: $ZOO_CACHE/builds, default ~/.cache/zoo/builds."""
    return Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "zoo")) / "builds"


def parse_size(text: str) -> int:
    """"4G", "500M", "1.5G", "123" (bytes) -> bytes; powers of 1024. UsageError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"not a size: {text!r} (e.g. 4G, 500M, 2048K or a number of bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def limit_bytes() -> int:
    """The cache's size bound: ZOO_CACHE_LIMIT (e.g. "4G"), default DEFAULT_LIMIT."""
    text = os.environ.get("ZOO_CACHE_LIMIT", DEFAULT_LIMIT)
    try:
        return parse_size(text)
    except UsageError:
        raise UsageError(f"ZOO_CACHE_LIMIT={text!r} is not a size (e.g. 4G, 500M)") from None


_configured_limit = limit_bytes    # (prune's argument of the same name hides it)


def contains(path: str | Path) -> bool:
    """Whether `path` lies inside the cache (else the cache never touches it)."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root()))
    except OSError:
        return False


# --- locks ----------------------------------------------------------------------------------

def _lock_file(path: Path, kind: str) -> Path:
    """The lock file of a folder (any folder: --out targets are locked here too, so that their
    own parent folder gets no lock file). Keyed by the folder's real path."""
    real = os.path.join(os.path.realpath(path.parent), path.name)
    name = hashlib.sha256(real.encode()).hexdigest()[:24]
    return _locks() / f"{name}.{kind}"


def _locks() -> Path:
    d = root() / LOCKS_DIR
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def _flock(file: Path, mode: int):
    fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)   # closing releases the lock


@contextlib.contextmanager
def target_lock(path: Path):
    """Exclusive lock on a build folder's name for checking, writing and swapping it: builds
    of one target take turns (they wait for each other)."""
    with _flock(_lock_file(path, "lock"), fcntl.LOCK_EX):
        yield


@contextlib.contextmanager
def lease(path: str | Path):
    """Hold while a cached build is used (a run of its files): it is not evicted meanwhile.
    Marks it used now. A folder outside the cache is left alone. Raises ZooError when the
    build is gone (evicted between `build()` and this lease: build again)."""
    path = Path(path)
    if not contains(path):
        yield path
        return
    with _flock(_lock_file(path, "lease"), fcntl.LOCK_SH):
        if not (path / "manifest.json").is_file():
            raise ZooError(f"{path}: the cached build was removed before it was used; build again")
        _touch(path)
        yield path


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


@contextlib.contextmanager
def _exclusive_now(path: Path):
    """Both locks of a build without waiting: yields True when nobody uses or writes it."""
    fds = []
    try:
        for kind in ("lock", "lease"):
            fd = os.open(_lock_file(path, kind), os.O_RDWR | os.O_CREAT, 0o666)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
        yield True
    finally:
        for fd in fds:
            os.close(fd)


# --- listing --------------------------------------------------------------------------------

def _build_dirs() -> list[Path]:
    r = root()
    if not r.is_dir():
        return []
    return sorted(b for e in r.iterdir() if e.is_dir() and not e.name.startswith(".")
                  and not e.is_symlink()
                  for b in e.iterdir() if b.is_dir() and not b.is_symlink() and not b.name.startswith("."))


def _files(path: Path):
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                yield os.lstat(os.path.join(dirpath, f))


def _entry(path: Path, stored: set | None = None) -> Entry | None:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        last_used = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    stored = _stored_inodes() if stored is None else stored
    total = own = 0
    for st in _files(path):
        total += st.st_size
        # a weights file linked from the store (2 links) is freed with its last build
        if st.st_nlink == 1 or (st.st_nlink == 2 and (st.st_ino, st.st_dev) in stored):
            own += st.st_size
    with _exclusive_now(path) as free:
        in_use = not free
    return Entry(manifest.get("engine", path.parent.name), manifest.get("network", path.name),
                 path, total, own, last_used, in_use, bool(manifest.get("transient")))


def _stored_inodes() -> set:
    store = root() / WEIGHTS_DIR
    return {(st.st_ino, st.st_dev) for st in _files(store)} if store.is_dir() else set()


def entries() -> list[Entry]:
    """Every finished build in the cache, least recently used first."""
    stored = _stored_inodes()
    out = [e for p in _build_dirs() if (e := _entry(p, stored)) is not None]
    return sorted(out, key=lambda e: e.last_used)


def usage() -> int:
    """Bytes the cache holds on disk (a hard-linked file counted once)."""
    seen, total = set(), 0
    if root().is_dir():
        for st in _files(root()):
            if (st.st_ino, st.st_dev) not in seen:
                seen.add((st.st_ino, st.st_dev))
                total += st.st_size
    return total


# --- eviction -------------------------------------------------------------------------------

def remove(path: str | Path) -> bool:
    """Remove one cached build unless it is in use (or outside the cache). True if removed."""
    path = Path(path)
    if not contains(path) or not path.is_dir():
        return False
    with _exclusive_now(path) as free:
        if not free:
            return False
        # renamed first, so that nobody sees a half-deleted build under its real name
        gone = path.parent / f".{path.name}.old-{os.getpid()}-{time.time_ns()}"
        try:
            os.rename(path, gone)
        except FileNotFoundError:
            return False
    shutil.rmtree(gone, ignore_errors=True)
    _drop_unused_weights()
    return True


def discard_transient(paths) -> list[Path]:
    """Remove the transient builds among `paths` (Build objects or folders) that nobody uses;
    a build that was kept on purpose (not transient) is left. Returns those removed."""
    removed = []
    for p in paths:
        path = Path(getattr(p, "path", p))
        e = _entry(path) if contains(path) else None
        if e is not None and e.transient and remove(path):
            removed.append(path)
    return removed


def prune(limit_bytes: int | None = None, keep=()) -> list[Entry]:
    """Evict until the cache holds at most `limit_bytes` (default `limit_bytes()`): first
    transient builds left over by runs that died, then least recently used first; never a build
    in use, nor one in `keep`. Also removes half-written leftovers of killed builds. Returns
    the evicted entries."""
    limit = _configured_limit() if limit_bytes is None else limit_bytes
    keep = {os.path.realpath(k) for k in keep}
    _drop_leftovers()
    now = time.time()
    candidates = [e for e in entries() if not e.in_use and os.path.realpath(e.path) not in keep]
    stale = [e for e in candidates if e.transient and now - e.last_used > TRANSIENT_GRACE_S]
    evicted = [e for e in stale if remove(e.path)]
    for e in candidates:
        if usage() <= limit:
            break
        if e not in stale and remove(e.path):
            evicted.append(e)
    _drop_unused_weights()
    return evicted


def clear() -> list[Entry]:
    """Remove every cached build not in use. Returns those removed."""
    removed = [e for e in entries() if remove(e.path)]
    _drop_leftovers()
    _drop_unused_weights()
    return removed


def make_room(folder: Path, needed: int, keep=()) -> None:
    """Evict unused cached builds (least recently used first) until `folder`'s file system has
    `needed` bytes free; NoSpace when it cannot."""
    keep = {os.path.realpath(k) for k in keep}
    if _free(folder) < needed and root().is_dir() and _device(root()) == _device(folder):
        for e in entries():
            if _free(folder) >= needed:
                break
            if not e.in_use and os.path.realpath(e.path) not in keep:
                remove(e.path)
    if (free := _free(folder)) < needed:
        raise no_space(folder, needed, free)


def _existing(folder: Path) -> Path:
    while not folder.exists():
        folder = folder.parent
    return folder


def _device(folder: Path) -> int:
    return _existing(folder).stat().st_dev


def _free(folder: Path) -> int:
    return shutil.disk_usage(_existing(folder)).free


def no_space(folder: Path, needed: int, free: int | None = None, what: str = "the build") -> NoSpace:
    free = _free(folder) if free is None else free
    return NoSpace(f"not enough disk space in {folder}: {what} needs about {_human(needed)}, "
                   f"{_human(free)} free (free some space, or `zoo cache prune`/ZOO_CACHE_LIMIT)")


def is_no_space(e: BaseException | str) -> bool:
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    return "No space left on device" in str(e) or "Disk quota exceeded" in str(e)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _drop_leftovers() -> None:
    """`.NAME.tmp-PID-*`/`.NAME.old-PID-*` folders of builds whose process is gone."""
    for engine_dir in (root().iterdir() if root().is_dir() else []):
        if engine_dir.name.startswith(".") or not engine_dir.is_dir():
            continue
        for d in engine_dir.iterdir():
            m = re.fullmatch(r"\..+\.(?:tmp|old)-(\d+)-.*", d.name)
            if m and not _pid_alive(int(m.group(1))):
                shutil.rmtree(d, ignore_errors=True)


# --- the weights store ----------------------------------------------------------------------

def weights_into(dest: Path, digest: str, save) -> None:
    """Put weights with this digest at `dest` as a hard link to the store's one copy (written by
    `save(path)` the first time), or a copy where a link cannot be made (another file system).
    Under a shared lock, so that dropping unused weights never races a build linking them."""
    store = root() / WEIGHTS_DIR
    store.mkdir(parents=True, exist_ok=True)
    stored = store / f"{digest}.npz"
    with _flock(_locks() / "weights-store.lock", fcntl.LOCK_SH):
        if not stored.is_file():
            save(stored)          # atomic (a temporary file renamed): racing writers are harmless
        try:
            os.link(stored, dest)
        except OSError as e:
            if is_no_space(e):
                raise
            shutil.copyfile(stored, dest)


def _drop_unused_weights() -> None:
    """Stored weights no build links to any more (one link left: the store's own)."""
    store = root() / WEIGHTS_DIR
    if not store.is_dir():
        return
    with _flock(_locks() / "weights-store.lock", fcntl.LOCK_EX):
        for f in store.iterdir():
            with contextlib.suppress(OSError):
                if f.lstat().st_nlink == 1:
                    f.unlink()


__all__ = ["Entry", "NoSpace", "root", "limit_bytes", "parse_size", "entries", "usage", "lease",
           "prune", "clear", "remove", "discard_transient", "make_room", "contains"]
