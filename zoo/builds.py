"""`zoo build`: spec + weights -> a folder of native files for one engine, with a manifest.

The folder holds the engine's files, spec.prototxt (the canonical spec), weights.npz (the
canonical weights) and manifest.json (spec sha256, weights sha256, seed, engine and its
versions, zoo version, and every file with its sha256). It is written under a temporary
name beside the target and renamed into place only when complete, so an interrupted build
leaves nothing that looks finished. A build whose inputs (spec, weights, engine versions,
options, zoo version) are unchanged is reused unless `force`.

Builds of one target take turns under a lock (zoo/cache.py), so concurrent builds all
succeed and leave no temporary folders. Without `out` the build goes to the bounded cache
(zoo/cache.py): its weights.npz is a hard link to the cache's one copy of those weights, and
least recently used builds are evicted after each new one. With `out` (a user's folder) zoo
replaces the folder only when it is a zoo build that holds nothing but the files its
manifest lists, unchanged; anything else is refused (exit 2) and left as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__, cache, engines, isolation
from . import net as N
from . import weights as W
from .errors import EngineUnavailable, SpecError, UsageError, ZooError
from .files import (HASH_RECORD, recorded_hashes, sha256_file, sha256_stable, swap_folder,
                    write_hash_record)

SPACE_FACTOR = 3                  # weights.npz + the engine's copy (+ TF's second one) of them
SPACE_MARGIN = 32 * 2**20         # spec, graph files, manifest


class BuildFailed(ZooError):
    """The engine's converter failed; `status` is the child's typed status (zoo/isolation.py:
    "unsupported", "engine-unavailable", "error", "timeout" or "crashed")."""

    def __init__(self, message: str, status: str = "error", stderr_tail: str = ""):
        super().__init__(message)
        self.status, self.stderr_tail = status, stderr_tail


class OutRefused(UsageError):
    """`--out` names something zoo must not replace (not a zoo build of its own, a file, a
    dangling link). Exit status 2; nothing is changed."""


@dataclass
class Build:
    path: Path
    manifest: dict
    reused: bool

    @property
    def transient(self) -> bool:
        return bool(self.manifest.get("transient"))

    def lease(self):
        """`with build.lease():` while its files are used (a cached build is not evicted)."""
        return cache.lease(self.path)


def cache_root() -> Path:
    return cache.root()


def one_off(net: N.Net) -> bool:
    """Whether a spec is outside the built-in zoo (an import, a user's file): its cached builds
    are worth keeping only for the run that made them (build(..., transient=True))."""
    from .spec import specs_dir
    return net.path is None or Path(os.path.realpath(net.path)).parent != specs_dir()


def build_key(net: N.Net, weights_sha: str, engine: engines.Engine, options: dict) -> str:
    ident = {"spec": net.sha256, "weights": weights_sha, "engine": engine.name,
             "versions": engine.versions(), "zoo": __version__, "options": options,
             "converter": _converter_digest(engine)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _converter_digest(engine: engines.Engine) -> str:
    """The converter's own source: a changed converter (an upgrade, a fix) never serves a
    build made by the old one, whatever the version number says."""
    import importlib.util
    spec = importlib.util.find_spec(engine.converter_module)
    origin = Path(spec.origin) if spec and spec.origin else None
    return sha256_file(origin) if origin and origin.is_file() else "-"


def build(net_or_name, engine: str, out: str | Path | None = None, seed: int = 0,
          force: bool = False, options: dict | None = None, timeout: float = 1800,
          in_process: bool = False, transient: bool = False) -> Build:
    """Build (or reuse) the native files of `engine`. in_process=True converts in this
    process instead of a child (for debugging a converter, and for tests that patch one).
    transient=True (cache only) marks a build of a one-off spec: remove it with
    `cache.discard_transient` when done; a later build of it without transient keeps it."""
    net = net_or_name if isinstance(net_or_name, N.Net) else N.load(net_or_name)
    eng = engines.get(engine)
    if (why := eng.missing()) is not None:
        raise EngineUnavailable(f"engine {engine}: {why}")
    options = options or {}
    weights, wsha = W.for_net_with_digest(net, seed)
    key = build_key(net, wsha, eng, options)
    in_cache = out is None
    target = cache.root() / engine / f"{net.name}-{key[:16]}" if in_cache else _user_target(Path(out))
    needed = SPACE_FACTOR * sum(a.nbytes for a in weights.values()) + SPACE_MARGIN
    try:
        _make_parent(target)
        with cache.target_lock(target):
            manifest, intact = _inspect(target, strict=not in_cache)
            if intact and manifest.get("key") == key and not force:
                if in_cache:
                    manifest = _mark_used(target, manifest, transient)
                return Build(target, manifest, reused=True)
            if in_cache:
                cache.make_room(target.parent, needed, keep=[target])
            elif (free := shutil.disk_usage(target.parent).free) < needed:
                raise cache.no_space(target.parent, needed, free)
            manifest = _write(net, eng, weights, wsha, key, seed, options, target, timeout,
                              in_process, in_cache, transient)
    except OSError as e:
        if cache.is_no_space(e):      # the partial build is gone already (_write)
            raise cache.no_space(target.parent, needed) from None
        raise
    if in_cache:
        cache.prune(keep=[target])
    return Build(target, manifest, reused=False)


def _write(net, eng, weights, wsha, key, seed, options, target, timeout, in_process, in_cache,
           transient) -> dict:
    """Write the build in a temporary folder beside `target` and swap it in (under the lock)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        os.chmod(tmp, _mode(0o777))        # mkdtemp makes 0700; a build is an ordinary folder
        (tmp / "spec.prototxt").write_text(net.text)
        if in_cache:
            cache.weights_into(tmp / "weights.npz", wsha, lambda p: _save_weights(weights, p))
        else:
            _save_weights(weights, tmp / "weights.npz")
        meta = _convert(net, eng, weights, tmp, options, timeout, in_process, target)
        hashed = {str(p.relative_to(tmp)): sha256_stable(p)
                  for p in sorted(tmp.rglob("*")) if p.is_file()}
        files = {rel: digest for rel, (digest, _) in hashed.items()}
        manifest = {
            "zoo_version": __version__, "key": key, "network": net.name,
            "spec_sha256": net.sha256, "weights_sha256": wsha,
            "seed": None if net.weights_file else seed,
            "weights_source": str(net.weights_file) if net.weights_file else f"seed {seed}",
            "engine": eng.name, "engine_versions": eng.versions(), "options": options,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files, "meta": meta,
        }
        if in_cache:
            manifest["transient"] = bool(transient)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if in_cache and all(ident is not None for _, ident in hashed.values()):
            write_hash_record(tmp, {rel: (ident, digest) for rel, (digest, ident) in hashed.items()})
        swap_folder(tmp, target)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _convert(net, eng, weights, tmp: Path, options, timeout, in_process, target) -> dict:
    if in_process:
        import importlib
        return importlib.import_module(eng.converter_module).build(net, weights, tmp, options)
    res = isolation.run(eng.name, "build", {"spec_text": net.text,
                                            "spec_file": str(net.path) if net.path else net.name,
                                            "weights_file": str(tmp / "weights.npz"),
                                            "outdir": str(tmp), "options": options},
                        timeout=timeout)
    if not res.ok:
        if cache.is_no_space(res.reason + "\n" + res.stderr_tail):
            raise OSError(28, "No space left on device")   # reported by build() with the sizes
        raise BuildFailed(f"{eng.name} build of {net.name} failed: {res.reason}", res.status,
                          res.stderr_tail)
    return res.result


# --- what may be replaced --------------------------------------------------------------------

def _user_target(out: Path) -> Path:
    """The folder `--out` names, refused when it is not one (a link to a folder builds into
    the folder it points to; the link is kept)."""
    if out.is_symlink():
        if not out.exists():
            raise OutRefused(f"--out {out} is a symbolic link to nothing ({os.readlink(out)}); "
                             "give a folder")
        if not out.is_dir():
            raise OutRefused(f"--out {out} is a symbolic link to a file, not a folder")
        return Path(os.path.realpath(out))
    if os.path.lexists(out) and not out.is_dir():
        raise OutRefused(f"--out {out} is a file, not a folder; zoo will not replace it")
    return out


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if cache.is_no_space(e):
            raise
        blocker = next((p for p in target.parents if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise OutRefused(f"cannot make {target}: {blocker} is a file, not a folder") from None
        raise OutRefused(f"cannot make the folder {target.parent}: {e.strerror}") from None


def _inspect(target: Path, strict: bool) -> tuple[dict, bool]:
    """(its manifest, whether it is an intact build) of a build folder; ({}, False) when absent.
    strict (a user's folder): OutRefused unless zoo may replace it, i.e. it holds no file
    but those its zoo manifest lists, each as zoo wrote it (empty folders are fine)."""
    if not target.is_dir():
        return {}, False
    found = _contents(target)
    if not found:
        return {}, False
    manifest = _read_manifest(target)
    if manifest is None:
        if strict:
            raise OutRefused(f"{target} is not empty and not a zoo build (no zoo manifest.json); "
                             "zoo replaces only folders it wrote: choose another --out")
        return {}, False
    listed = set(manifest["files"]) | {"manifest.json", HASH_RECORD}   # (a cached build copied here)
    intact = set(manifest["files"]) <= found
    if strict and (extra := sorted(found - listed)):
        raise OutRefused(f"{target} holds files zoo did not write ({', '.join(extra[:3])}"
                         f"{', ...' if len(extra) > 3 else ''}); zoo replaces only its own builds: "
                         "move them or choose another --out")
    # a cached build's files whose stat identity is unchanged since they were hashed are not
    # hashed again (files.HASH_RECORD); a user's folder is hashed in full
    known = {} if strict else recorded_hashes(target, [r for r in manifest["files"] if r in found])
    record = {}
    for rel, digest in manifest["files"].items():
        path = target / rel
        if rel not in found:
            continue
        if path.is_symlink() or not path.is_file():
            got, ident = None, None
        elif rel in known and known[rel][1] == digest:
            record[rel] = known[rel]
            continue
        else:
            got, ident = sha256_stable(path)
        if got != digest:
            if strict:
                raise OutRefused(f"{path} was changed since zoo wrote it; zoo will not overwrite "
                                 "it: move it or choose another --out")
            intact = False
        elif ident is not None:
            record[rel] = (ident, got)
    if not strict and intact and record != known:
        write_hash_record(target, record)
    return manifest, intact


def _contents(folder: Path) -> set[str]:
    """Every non-folder entry (files, links, anything else) below `folder`, relative."""
    out = set()
    for dirpath, dirs, files in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            out.add(os.path.normpath(os.path.join(rel, name)))
    return out


def _read_manifest(folder: Path) -> dict | None:
    """The folder's manifest when it is a zoo build manifest (its format checked), else None."""
    mf = folder / "manifest.json"
    try:
        if mf.is_symlink() or not mf.is_file() or mf.stat().st_size > 16 * 2**20:
            return None
        m = json.loads(mf.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict):
        return None
    files = m.get("files")
    ok = (all(isinstance(m.get(k), str) for k in ("zoo_version", "key", "network", "engine"))
          and isinstance(files, dict) and files
          and all(isinstance(r, str) and isinstance(d, str) and len(d) == 64 and _inside(r)
                  for r, d in files.items()))
    return m if ok else None


def _inside(rel: str) -> bool:
    return not os.path.isabs(rel) and ".." not in Path(rel).parts and rel != "manifest.json"


# --- cache bookkeeping and permissions ------------------------------------------------------------

def _mark_used(target: Path, manifest: dict, transient: bool) -> dict:
    """A reused cached build is used now; asked for without transient, it is kept for good."""
    os.utime(target)
    if manifest.get("transient") and not transient:
        manifest = {**manifest, "transient": False}
        tmp = target / ".manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, target / "manifest.json")   # the manifest lists no hash of itself
    return manifest


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)   # (no /proc: read it by setting it, then put it back)
    os.umask(mask)
    return mask


def _mode(full: int) -> int:
    """`full` (0o777 for folders, 0o666 for files) under the user's umask, like any file."""
    return full & ~_umask()


def _save_weights(weights: dict, path: Path) -> None:
    W.save(weights, path)
    os.chmod(path, _mode(0o666))   # weights.save's mkstemp makes 0600


__all__ = ["Build", "BuildFailed", "OutRefused", "build", "cache_root", "one_off", "SpecError"]
