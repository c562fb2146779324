"""The runner contract, after Polygraphy's BaseRunner: a fixed public surface, engines
override the `*_impl`-style hooks, and timing lives here, once, for every engine.

A runner lives in a child process. It loads a built artifact (zoo/build.py checks nothing
was torn: the manifest's hashes are verified here before any file is read by an engine),
then:
  forward(inputs, expose)   -> {blob: array} in the spec's layout (NCHW, batch first);
                               expose=None gives the network outputs, a list gives those
                               blobs, ["*"] every blob (for naming the first bad layer)
  train_step(inputs, steps) -> (losses per step, {"layer.weight": array} updated, canonical)
  bench(...)                -> timing statistics
"""

from __future__ import annotations

import hashlib
import json
import resource
from pathlib import Path

import numpy as np

from zoo.errors import EngineUnavailable
from zoo.errors import ManifestError  # noqa: F401  (re-exported: builds read manifests too)


def read_manifest(artifact: Path) -> dict:
    mf = artifact / "manifest.json"
    if not mf.exists():
        raise ManifestError(f"{artifact}: no manifest.json (not a finished zoo build)")
    manifest = json.loads(mf.read_text())
    for rel, digest in manifest["files"].items():
        path = (artifact / rel).resolve()
        if artifact.resolve() not in path.parents:
            raise ManifestError(f"{artifact}: manifest names a file outside the build: {rel}")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != digest:
            raise ManifestError(f"{artifact}: {rel} does not match its manifest hash")
    return manifest


class Runner:
    engine = "?"                # the name of its declaration in zoo/engines.py

    def __init__(self, artifact: Path, device: str = "cpu", threads: int | None = None,
                 options: dict | None = None):
        from zoo import net as N
        self.dir = Path(artifact)
        self.manifest = read_manifest(self.dir)
        self.net = N.from_text((self.dir / "spec.prototxt").read_text(), file=str(self.dir))
        self.device = device
        self.threads = threads
        self.options = options or {}
        # the declared gaps hold wherever the runner is used, before the engine is imported
        self.declaration.refuse(self.net)

    @property
    def declaration(self):
        from zoo import engines
        return engines.get(self.engine)

    # --- devices ---------------------------------------------------------------------------
    def gpu_index(self) -> int | None:
        """The CUDA device asked for: None for "cpu", N for "gpuN". EngineUnavailable when
        the engine is CPU-only here or its own probe (`cuda_missing`) finds no CUDA device:
        a GPU run never falls back to the CPU."""
        index = self.declaration.parse_device(self.device)
        if index is not None and (why := self.cuda_missing()) is not None:
            raise EngineUnavailable(f"no CUDA device is present ({why})")
        return index

    def cuda_missing(self) -> str | None:
        """The engine's probe, after its import: why it cannot reach a CUDA device, or None."""
        return f"zoo has no GPU path for {self.engine}"

    # --- what each engine implements -----------------------------------------------------
    def load(self) -> None:
        raise NotImplementedError

    def forward(self, inputs: dict[str, np.ndarray], expose: list[str] | None = None) -> dict:
        raise NotImplementedError

    def train_step(self, inputs: dict[str, np.ndarray], steps: int = 1):
        raise NotImplementedError(f"{self.engine} has no training step")

    def make_iteration(self, inputs: dict[str, np.ndarray], mode: str):
        """A function that runs one synchronised iteration ("train": forward, loss,
        backward, SGD update; "infer": forward in eval mode) on data already in memory."""
        raise NotImplementedError

    def layer_times(self, inputs: dict[str, np.ndarray], mode: str) -> list[dict] | None:
        """Per-layer forward/backward times from a separate profiling pass, if the engine can."""
        return None

    def device_name(self) -> str:
        return "cpu"

    def peak_device_memory_mb(self) -> float | None:
        return None

    def versions(self) -> dict:
        return {}

    # --- shared ----------------------------------------------------------------------------
    def info(self) -> dict:
        return {"engine": self.engine, "device": self.device, "device_name": self.device_name(),
                "threads": self.threads, "versions": self.versions()}

    def outputs_for(self, expose: list[str] | None) -> list[str]:
        if expose is None:
            return list(self.net.outputs)
        if expose == ["*"]:
            return [t for l in self.net.deploy_layers for t in l.tops if not l.kind.is_input]
        return list(expose)

    def bench(self, inputs, mode: str, warmup: int, iters: int, min_time: float,
              layers: bool = False, stats: dict | None = None) -> dict:
        """Warm up and time one iteration of `mode` as zoo/stats.py says (the settings come
        from `stats`, else from the runner options' "bench_stats", which zoo.benchmark sets;
        `warmup`, `iters` and `min_time` are the minimums either way)."""
        from zoo import stats as S
        settings = bench_settings(warmup, iters, min_time,
                                  stats if stats is not None else self.options.get("bench_stats"))
        step = self.make_iteration(inputs, mode)
        out = S.sample(step, settings)
        if len(out["times_s"]) > MAX_RETURNED_TIMES:
            del out["times_s"]           # the summary says it; result.json stays small
        out.update({
            "settings": settings.to_dict(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "peak_device_mb": self.peak_device_memory_mb(),
            **self.info(),
        })
        if layers:
            # a separate pass: its totals are never mixed with the clean timing above
            out["layers"] = self.layer_times(inputs, mode)
            if out["layers"] is None:
                out["layers_reason"] = (f"per-layer times are not available from {self.engine}: "
                                        "its runner has no per-layer profiler")
        return out


MAX_RETURNED_TIMES = 10_000     # every timed iteration goes back to zoo up to this many


def bench_settings(warmup: int, iters: int, min_time: float, stats: dict | None):
    """zoo.stats.Settings from a bench job: the job's minimums plus its statistics settings
    (method, ci_width, max_time, ...); unknown keys are refused, not ignored."""
    from zoo import stats as S
    given = dict(stats or {})
    known = set(S.Settings.__dataclass_fields__) - {"warmup", "iters", "min_time"}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"unknown bench statistics settings: {', '.join(unknown)}")
    return S.Settings(warmup=int(warmup), iters=int(iters), min_time=float(min_time), **given)
