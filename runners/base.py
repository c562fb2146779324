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
import statistics
import time
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
              layers: bool = False) -> dict:
        step = self.make_iteration(inputs, mode)
        for _ in range(warmup):
            step()
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < iters or time.perf_counter() - start < min_time:
            t0 = time.perf_counter()
            step()                       # each iteration synchronises its device itself
            times.append(time.perf_counter() - t0)
        q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
        out = {
            "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "q1_s": q[0], "q3_s": q[2], "iqr_s": q[2] - q[0], "iters": len(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "peak_device_mb": self.peak_device_memory_mb(),
            **self.info(),
        }
        if layers:
            # a separate pass: its totals are never mixed with the clean timing above
            out["layers"] = self.layer_times(inputs, mode)
        return out
