"""`zoo build`: spec + weights -> a folder of native files for one engine, with a manifest.

The folder holds the engine's files, spec.prototxt (the canonical spec), weights.npz (the
canonical weights) and manifest.json (spec sha256, weights sha256, seed, engine and its
versions, zoo version, and every file with its sha256). It is written under a temporary
name beside the target and renamed into place only when complete, so an interrupted build
leaves nothing that looks finished. A build whose inputs (spec, weights, engine versions,
options, zoo version) are unchanged is reused unless `force`.
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

from . import __version__, child, engines
from . import net as N
from . import weights as W
from .errors import EngineUnavailable, SpecError, ZooError


class BuildFailed(ZooError):
    def __init__(self, message: str, status: str = "error", stderr_tail: str = "",
                 unsupported: bool = False):
        super().__init__(message)
        self.status, self.stderr_tail, self.unsupported = status, stderr_tail, unsupported


@dataclass
class Build:
    path: Path
    manifest: dict
    reused: bool


def cache_root() -> Path:
    return Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "zoo")) / "builds"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_key(net: N.Net, weights_sha: str, engine: engines.Engine, options: dict) -> str:
    ident = {"spec": net.sha256, "weights": weights_sha, "engine": engine.name,
             "versions": engine.versions(), "zoo": __version__, "options": options}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def build(net_or_name, engine: str, out: str | Path | None = None, seed: int = 0,
          force: bool = False, options: dict | None = None, timeout: float = 1800,
          in_process: bool = False) -> Build:
    """Build (or reuse) the native files of `engine`. in_process=True converts in this
    process instead of a child (for debugging a converter, and for tests that patch one)."""
    net = net_or_name if isinstance(net_or_name, N.Net) else N.load(net_or_name)
    eng = engines.get(engine)
    if (why := eng.missing()) is not None:
        raise EngineUnavailable(f"engine {engine}: {why}")
    options = options or {}
    weights = W.for_net(net, seed)
    wsha = W.digest(weights)
    key = build_key(net, wsha, eng, options)
    target = Path(out) if out else cache_root() / engine / f"{net.name}-{key[:16]}"

    manifest_file = target / "manifest.json"
    if target.exists():
        if not manifest_file.exists() and any(target.iterdir()):
            raise ZooError(f"{target} exists and is not a zoo build; choose another --out")
        if manifest_file.exists() and not force:
            try:
                from .runners.base import read_manifest
                manifest = read_manifest(target)
                if manifest.get("key") == key:
                    return Build(target, manifest, reused=True)
            except Exception:  # noqa: BLE001 - a damaged build is rebuilt
                pass

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        (tmp / "spec.prototxt").write_text(net.text)
        W.save(weights, tmp / "weights.npz")
        if in_process:
            import importlib
            meta = importlib.import_module(eng.converter_module).build(net, weights, tmp, options)
        else:
            res = child.run(engine, "build", {"spec_text": net.text, "spec_file": str(net.path),
                                              "weights_file": str(tmp / "weights.npz"),
                                              "outdir": str(tmp), "options": options},
                            timeout=timeout)
            if not res.ok:
                raise BuildFailed(f"{engine} build of {net.name} failed: {res.reason}", res.status,
                                  res.stderr_tail, unsupported=bool(res.result.get("unsupported")))
            meta = res.result
        files = {str(p.relative_to(tmp)): _sha256_file(p)
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {
            "zoo_version": __version__, "key": key, "network": net.name,
            "spec_sha256": net.sha256, "weights_sha256": wsha,
            "seed": None if net.weights_file else seed,
            "weights_source": str(net.weights_file) if net.weights_file else f"seed {seed}",
            "engine": engine, "engine_versions": eng.versions(), "options": options,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files, "meta": meta,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _swap_into_place(tmp, target)
        return Build(target, manifest, reused=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_into_place(tmp: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}-{time.time_ns()}"
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["Build", "BuildFailed", "build", "cache_root", "SpecError"]
