"""The runner contract, after Polygraphy's BaseRunner: a fixed public surface, engines
override the `*_impl`-style hooks, and timing lives here, once, for every engine.

A runner lives in a child process. It loads a built artifact (zoo/build.py checks nothing
was torn: the manifest's hashes are verified here before any file is read by an engine),
then:
  forward(inputs, expose)   -> {blob: array} in the spec's layout (NCHW, batch first);
                               expose=None gives the network outputs, a list gives those
                               blobs, ["*"] every blob (for naming the first bad layer)
  train_step(inputs, steps) -> (losses per step, {"layer.weight": array} updated, canonical)
  train_forward(inputs, expose) -> like forward, but the forward pass of a training step
                               (BatchNorm on batch statistics, Dropout the identity) at the
                               weights the last train_step left (the build's before any):
                               the branches the next step takes (zoo/branches.py)
  bench(...)                -> timing statistics
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from zoo.errors import EngineUnavailable
from zoo.files import recorded_hashes, settled, sha256_stable, stat_identity
from zoo.memory import allocator, huge_page_kb, peak_rss_mb
from zoo.errors import ManifestError  # noqa: F401  (re-exported: builds read manifests too)


def read_manifest(artifact: Path) -> dict:
    mf = artifact / "manifest.json"
    if not mf.exists():
        raise ManifestError(f"{artifact}: no manifest.json (not a finished zoo build)")
    manifest = json.loads(mf.read_text())
    paths = {}
    for rel in manifest["files"]:
        paths[rel] = (artifact / rel).resolve()
        if artifact.resolve() not in paths[rel].parents:
            raise ManifestError(f"{artifact}: manifest names a file outside the build: {rel}")
    # a cached build's record of files hashed and unchanged since (zoo/files.py); the rest
    # are hashed here
    known = recorded_hashes(artifact, list(paths))
    for rel, digest in manifest["files"].items():
        if not (rel in known and known[rel][1] == digest) and _file_digest(paths[rel]) != digest:
            raise ManifestError(f"{artifact}: {rel} does not match its manifest hash")
    return manifest


# path -> (its stat identity, its sha256) as last read by this process: a long-lived child runs
# many jobs on one build, and a 330 MB ViT build took a second to hash for each (a folder
# outside the cache has no hash record). Identities and the racy rule as in zoo/files.py.
_digests: dict[Path, tuple[tuple, str]] = {}


def _file_digest(path: Path) -> str:
    known = _digests.get(path)
    if known is not None and known[0] == stat_identity(path):
        return known[1]
    digest, ident = sha256_stable(path)
    if ident is not None and settled(ident):    # not changed while read, nor just written
        _digests[path] = (ident, digest)
    return digest


class Runner:
    engine = "?"                # the name of its declaration in zoo/engines.py
    # True where training never changes the runner's own model: each train_step works on a
    # model of its own made from the build's files, kept only as `_trained` (MXNet, Caffe)
    trains_a_copy = False

    def __init__(self, artifact: Path, device: str = "cpu", threads: int | None = None,
                 options: dict | None = None):
        from zoo import net as N
        self.dir = Path(artifact)
        self.manifest = read_manifest(self.dir)
        self.net = N.from_text((self.dir / "spec.prototxt").read_text(), file=str(self.dir))
        self.device = device
        self.threads = threads
        self.options = options or {}
        self._trained = None     # an engine's trained model object, where train_forward needs it
        self.moved_by_training = False   # a training job changed it since load() or rewind()
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

    # --- a runner kept by a serving child for the next job (runners/__main__.py) ----------
    def save_build_state(self) -> bool:
        """Remember everything training changes (weights, BatchNorm's statistics, a layer's
        mode), as load() left it, so that `rewind` can put it back. True when this engine
        can (an engine that trains a copy: always); False when a runner that trained must be
        loaded again."""
        return self.trains_a_copy

    def rewind(self) -> None:
        """Back to the state `save_build_state` saw: the next job starts exactly where it
        would on a freshly loaded runner."""
        self._rewind()
        self._trained = None
        self.moved_by_training = False

    def _rewind(self) -> None:
        if not self.trains_a_copy:     # nothing but `_trained` to drop
            raise NotImplementedError(f"{self.engine} cannot rewind a trained runner")

    # --- what each engine implements -----------------------------------------------------
    def load(self) -> None:
        raise NotImplementedError

    def forward(self, inputs: dict[str, np.ndarray], expose: list[str] | None = None) -> dict:
        raise NotImplementedError

    def train_step(self, inputs: dict[str, np.ndarray], steps: int = 1):
        raise NotImplementedError(f"{self.engine} has no training step")

    def train_forward(self, inputs: dict[str, np.ndarray], expose: list[str]) -> dict:
        raise NotImplementedError(f"{self.engine} does not expose its training forward")

    def make_iteration(self, inputs: dict[str, np.ndarray], mode: str):
        """A function that runs one synchronised iteration ("train": forward, loss,
        backward, SGD update; "infer": forward in eval mode) on data already in memory."""
        raise NotImplementedError

    def layer_times(self, inputs: dict[str, np.ndarray], mode: str) -> list[dict] | None:
        """Per-layer forward/backward times from a separate profiling pass, if the engine can:
        [{"layer": spec layer name, "forward_s", "backward_s" (0.0 in infer mode)}]."""
        return None

    # --- the optimised configuration (zoo bench --optimize) --------------------------------
    def optimizations(self, mode: str) -> list[str]:
        """What options {"optimize": True} enables for `mode`, in words (the row's
        "enabled"); Unsupported when the engine has no faster standard configuration. With
        the option, forward(inputs) (expose None), train_step and make_iteration all run the
        optimised model, so the model verified is the one timed."""
        from zoo.errors import Unsupported
        raise Unsupported(f"{self.engine} has no optimised configuration: it runs as built")

    @property
    def optimize(self) -> bool:
        return bool(self.options.get("optimize"))

    def device_name(self) -> str:
        return "cpu"

    def peak_device_memory_mb(self) -> float | None:
        return None

    def versions(self) -> dict:
        return {}

    # --- shared ----------------------------------------------------------------------------
    def info(self) -> dict:
        return {"engine": self.engine, "device": self.device, "device_name": self.device_name(),
                "threads": self.threads, "versions": self.versions(), "allocator": allocator()}

    def outputs_for(self, expose: list[str] | None) -> list[str]:
        if expose is None:
            return list(self.net.outputs)
        if expose == ["*"]:
            return [t for l in self.net.deploy_layers for t in l.tops if not l.kind.is_input]
        return list(expose)

    def bench(self, inputs, mode: str, warmup: int, iters: int, min_time: float,
              layers: bool = False, stats: dict | None = None, check: dict | None = None) -> dict:
        """Warm up and time one iteration of `mode` as zoo/stats.py says (the settings come
        from `stats`, else from the runner options' "bench_stats", which zoo.benchmark sets;
        `warmup`, `iters` and `min_time` are the minimums either way). With options
        {"optimize": True} the optimised model is verified first (`check`: the reference,
        see verify_optimized) and a model that fails is never timed: the result is then
        {"verification": {... "status": "fail"}} and nothing else."""
        from zoo import stats as S
        settings = bench_settings(warmup, iters, min_time,
                                  stats if stats is not None else self.options.get("bench_stats"))
        verification = None
        if self.optimize:
            self.optimizations(mode)        # Unsupported here, before any work, if none
            verification = self.verify_optimized(inputs, mode, check or {})
            # asked again: an engine may settle a choice while verifying
            verification["enabled"] = self.optimizations(mode)
            if verification["status"] != "pass":
                return {"verification": verification, **self.info()}
        step = self.make_iteration(inputs, mode)
        out = S.sample(step, settings)
        if len(out["times_s"]) > MAX_RETURNED_TIMES:
            del out["times_s"]           # the summary says it; result.json stays small
        out.update({
            "settings": settings.to_dict(),
            "peak_rss_mb": peak_rss_mb(),
            "huge_pages_mb": huge_page_kb() / 1024,     # of it, in transparent huge pages
            "peak_device_mb": self.peak_device_memory_mb(),
            **self.info(),
        })
        if verification is not None:
            out["verification"] = verification
        if layers:
            # a separate pass: its totals are never mixed with the clean timing above. The
            # whole step is timed again here, as the layers are (time_call), so that the
            # layers' sum can be set against a step of the same process and moment
            out["layers_step_s"] = time_call(step)
            out["layers"] = self.layer_times(inputs, mode)
            if out["layers"] is None:
                out["layers_reason"] = (f"per-layer times are not available from {self.engine}: "
                                        "its runner has no per-layer profiler")
        return out

    def verify_optimized(self, inputs: dict, mode: str, check: dict) -> dict:
        """The optimised model against the references verify uses, in this child, before it
        is timed: its forward outputs on the bench batch (the first rows, for which the
        parent sent the float64 NumPy reference and zoo/magnitude.py's bounds: the full
        batch's reference would take minutes; eval-mode outputs are per sample, so the rows
        are those of a batch of that size) and, in train mode, one SGD step's loss and
        updated weights against the default configuration's step on the same batch from
        the same weights (the eager path `zoo verify --mode train` checks against the
        float64 oracle), at verify's tolerances. {"status": "pass"|"fail", "reason",
        "checked": [...], "worst_ratio", "failed": "forward"|"train" when it failed}.
        check["train_verified"]: the parent has verified the optimised training step against
        the float64 oracle (zoo verify --optimize, zoo/benchmark.py says when): only the
        forward outputs are checked here, and the verdict says so."""
        from zoo import compare
        diffs, note = self._forward_diffs(inputs, check, compare), ""
        forward_ok = all(d.ok for d in diffs)
        if mode == "train" and forward_ok and check.get("train_verified"):
            note = f"train step: {check['train_verified']}"
        elif mode == "train" and forward_ok:
            train, note = self._train_diffs(inputs, compare)
            diffs += train
        out = _verdict(diffs, mode)
        if out["status"] == "fail":
            out["failed"] = "train" if forward_ok and diffs else "forward"
        if note:
            out["tolerance"] = note
        if mode == "train" and check.get("train_verified"):
            out["against"] = ("forward: float64 NumPy reference (scale-aware bounds); train step: "
                              "the float64 oracle, in the parent (zoo verify --optimize)")
        return out

    def _forward_diffs(self, inputs, check: dict, compare) -> list:
        if not check.get("ref"):
            raise ValueError("an optimised model is timed only after its verification: the "
                             "bench job carries no reference")
        n = int(check["rows"])
        outs = self.forward(inputs)
        return [compare.within_bound(f"forward {blob}", np.asarray(outs[blob])[:n], ref,
                                     check["bound"][blob])
                for blob, ref in check["ref"].items()]

    def _default_step(self, inputs) -> tuple:
        """One training step of the default configuration, from the build's weights."""
        default = type(self)(self.dir, self.device, self.threads,
                             {k: v for k, v in self.options.items() if k != "optimize"})
        default.load()
        return default.train_step(inputs, 1)

    def _train_diffs(self, inputs, compare) -> tuple[list, str]:
        """The optimised step (dropout off, as verify's) against the default's, one step;
        and, when an update differs by more than rtol_update, the tolerance the point's own
        conditioning sets (`_own_conditioning`), with the note that says so."""
        from zoo import tolerances as T
        want_losses, want = self._default_step(inputs)
        got_losses, got = self.train_step(inputs, 1)
        from zoo import weights as W
        start = W.load(self.dir / "weights.npz", self.net)
        tol, _ = T.forward_tolerance(self.engine, self.net.name, "train")
        rtol_update, _ = T.train_update_rtol(self.engine, self.net.name)
        diffs = [compare.allclose("loss", got_losses[0], want_losses[0], tol)]
        scales: dict[str, float] = {}
        for key, w in want.items():
            if key in start:
                layer = key.rsplit(".", 1)[0]
                delta = float(np.max(np.abs(np.asarray(w, np.float64) - start[key]), initial=0.0))
                scales[layer] = max(scales.get(layer, 0.0), delta)
        def updates(got, rtol):
            out = []
            for key in want:
                if key not in got:
                    out.append(compare.Diff(f"update {key}", False, float("inf"), float("inf"),
                                            float("inf"), "missing from the optimised step"))
                elif key in start:
                    out.append(compare.update_close(f"update {key}", got[key], want[key], start[key],
                                                    rtol, 1, scales[key.rsplit(".", 1)[0]]))
            return out
        checked = updates(got, rtol_update)
        if all(d.ok for d in checked) or not diffs[0].ok or any(np.isinf(d.worst_ratio) for d in checked):
            return diffs + checked, ""
        S, where = self._own_conditioning(inputs, updates)
        if T.CONDITIONING_MARGIN * S <= rtol_update:
            return diffs + checked, (f"rtol_update {rtol_update:g}; the default step's own "
                                     f"conditioning S = {S:.3g} ({where}) does not widen it")
        rtol = T.CONDITIONING_MARGIN * S
        return diffs + updates(got, rtol), (
            f"rtol_update {rtol:.3g}: ill-conditioned point: inputs moved by ~2^-24 relative move "
            f"the default configuration's own float32 update by {S:.3g} of a layer's largest "
            f"update ({where}), so rtol_update = {T.CONDITIONING_MARGIN:g} x that, as verify's "
            f"conditioning probe (zoo/tolerances.py)")

    def _own_conditioning(self, inputs, updates) -> tuple[float, str]:
        """verify's conditioning probe, with this engine's default configuration as the
        float32 engine: its step rerun on inputs moved by ~2^-24 relative (CONDITIONING_PROBES
        seeds), against its step on the inputs themselves. An optimised configuration
        reorders and fuses float32 arithmetic, so near a ReLU kink it may take the other
        branch exactly as such a rerun does; S is the largest such move, in units of
        rtol_update (updates(got, 1.0)'s worst ratio). (S, where)."""
        from zoo import tolerances as T
        worst, at = 0.0, ""
        for k in range(1, T.CONDITIONING_PROBES + 1):
            rng = np.random.default_rng(k)
            moved = {b: (a * (1 + 2.0**-24 * rng.standard_normal(a.shape))).astype(a.dtype)
                     if a.dtype.kind == "f" else a for b, a in inputs.items()}
            _, probe = self._default_step(moved)
            for d in updates(probe, 1.0):
                if d.worst_ratio > worst:
                    worst, at = d.worst_ratio, f"{d.name}, probe {k} of {T.CONDITIONING_PROBES}"
        return worst, at


def _verdict(diffs: list, mode: str) -> dict:
    bad = [d for d in diffs if not d.ok]
    worst = max((d.worst_ratio for d in diffs), default=float("inf"))
    reason = "; ".join(f"{d.name}: {d.reason or f'{d.worst_ratio:.3g}x the tolerance'}"
                       for d in bad[:3])
    return {"status": "fail" if bad or not diffs else "pass",
            "reason": reason or ("" if diffs else "nothing was compared"),
            "worst_ratio": worst, "checked": [d.name for d in diffs],
            "against": ("forward: float64 NumPy reference (scale-aware bounds)"
                        + ("; train step: the default configuration's step" if mode == "train" else ""))}


# --- per-layer profiles: shared by the runners ----------------------------------------------
LAYER_REPS = 7       # timed repetitions per layer (their median), after one untimed call


def time_call(fn, reps: int = LAYER_REPS) -> float:
    """The median wall time of `fn()` over `reps` calls after one untimed call; fn must
    return only when its work is done (the runners synchronise inside)."""
    import time
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_forward_backward(forward, both, reps: int = 2 * LAYER_REPS) -> tuple[float, float]:
    """(forward s, backward s) of a layer whose engine runs backward only together with its
    forward (TensorFlow, MXNet sub-models): both are timed alternately, after one untimed
    call each, and backward is the median of the pairs' differences (pairs cancel the
    machine's slow drifts; a backward below the timer's noise reads as 0, never negative)."""
    import time
    forward()
    both()
    fs, diffs = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        forward()
        t1 = time.perf_counter()
        both()
        t2 = time.perf_counter()
        fs.append(t1 - t0)
        diffs.append((t2 - t1) - (t1 - t0))
    return float(np.median(fs)), max(0.0, float(np.median(diffs)))


def spec_layer(name: str, layer_names: list[str]) -> str:
    """The spec layer an engine's node or layer belongs to: the layer of that name, else the
    longest layer name it extends with a separator ("conv1/pad", "conv1_pad", Caffe's split
    "fc3_fc3_0_split"), else the engine's own name (an engine-made node of no spec layer)."""
    if name in layer_names:
        return name
    if name.startswith("fused ") and name[6:] in layer_names:   # ORT's fused node
        return name[6:]
    best = ""
    for l in layer_names:
        if len(l) > len(best) and name.startswith(l) and name[len(l):len(l) + 1] in ("/", "_", ".", ":"):
            best = l
    return best or name


def by_spec_layer(rows: list[dict], layer_names: list[str]) -> list[dict]:
    """Rows of engine names -> rows of spec layer names, summed, in first-seen order."""
    out: dict[str, dict] = {}
    for r in rows:
        name = spec_layer(r["layer"], layer_names)
        row = out.setdefault(name, {"layer": name, "forward_s": 0.0, "backward_s": 0.0})
        row["forward_s"] += r["forward_s"]
        row["backward_s"] += r.get("backward_s") or 0.0
    return list(out.values())


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
