"""zoo: a declarative model zoo and cross-framework converter.

A network is written once as a spec (specs/zoo.proto); zoo builds it for each engine,
verifies that the engines agree with a float64 NumPy reference, and benchmarks them. This
module is the public Python API, and the `zoo` command (cli.py) is a thin layer over it:
every subcommand is one of the calls below.

    import zoo
    net = zoo.load("linreg")                       # a zoo name, or a .prototxt/.json path
    zoo.show("linreg")["params"]                   # 3; per layer in ["layer_table"]
    b = zoo.build("linreg", "onnx")                # native files in the build cache
    results = zoo.verify(["linreg"], engines=["onnx"])
    [r.status for r in results]                    # ["pass"]
    rows = zoo.bench(["linreg"], engines=["onnx"], mode="infer", iters=3, min_time=0)
    rows[0]["median_s"]

`import zoo` imports no engine (nor any module that does): each function below imports
what it needs when called, and engines run in their own child processes.
"""

from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Callable  # noqa: E402

from . import data, reference, weights  # noqa: E402,F401  (light: numpy only)
from .api import summary  # noqa: E402,F401
from .errors import SpecError, ZooError  # noqa: E402,F401
from .net import Net, from_text  # noqa: E402,F401

if TYPE_CHECKING:
    from .builds import Build
    from .verifier import CaseResult


def load(name_or_path: str | Path) -> Net:
    """A network: a zoo NAME (e.g. "alexnet-r", see `list_networks`) or the path of a
    .prototxt or .json spec, parsed and validated (shapes, parameters, FLOPs). An invalid spec
    raises SpecError naming the file, line and layer."""
    from .net import load as _load
    return _load(name_or_path)


def list_networks() -> list[dict]:
    """The built-in zoo, one dict per network (`zoo list --json`): name, description,
    inputs, labels and outputs (shapes without the batch), layers, params, and MACs and FLOPs
    per sample (forward)."""
    from .api import list_networks as _list_networks
    return _list_networks()


def show(name_or_path: str | Path, batch: int = 1) -> dict:
    """What `summary` gives, at `batch`, plus per layer ("layer_table"): type, bottoms, tops,
    output shapes, params, MACs, FLOPs, and whether it runs at inference; and the training
    hyper-parameters ("train")."""
    from .api import show as _show
    return _show(name_or_path, batch)


def validate(paths: list[str | Path]) -> list[tuple[str, SpecError | None]]:
    """Check specs without running anything: (path, None) for each valid one, (path, error)
    for each invalid one (a SpecError naming file, line and layer). Never raises for a bad
    spec."""
    from .api import validate as _validate
    return _validate(paths)


def convert(name_or_path: str | Path, to: str) -> str:
    """The spec's text in the other format, `to` "json" or "prototxt", validated first and
    without loss."""
    from .api import convert as _convert
    return _convert(name_or_path, to)


def build(net_or_name: str | Path | Net, engine: str, out: str | Path | None = None,
          seed: int = 0, force: bool = False, options: dict | None = None,
          timeout: float = 1800, in_process: bool = False, transient: bool = False) -> Build:
    """Write (or reuse, when nothing changed) one engine's native files of a network.

    Returns a Build: `.path` (the folder: the engine's files, spec.prototxt, weights.npz,
    manifest.json), `.manifest` and `.reused`. Without `out` the build goes to the bounded
    build cache (zoo.cache; hold `with b.lease():` while using its files, so that it is not
    evicted); with `out` it goes to that folder, which zoo replaces only if it is an unchanged
    zoo build. `seed` makes the weights when the spec names no weights file; `options` are
    the engine's (e.g. {"opset": 17} for onnx); `force` rebuilds. The conversion runs in a
    child process (at most `timeout` seconds) unless `in_process` (for debugging a
    converter). `transient` marks a cached build of a one-off spec for removal after use.
    Raises EngineUnavailable when the engine is not installed, BuildFailed when it cannot
    convert the network."""
    from .builds import build as _build
    return _build(net_or_name, engine, out=out, seed=seed, force=force, options=options,
                  timeout=timeout, in_process=in_process, transient=transient)


def verify(names: list[str | Path | Net] | None = None, engines: list[str] | None = None,
           mode: str = "forward", batch: int = 2, atol: float | None = None,
           rtol: float | None = None, seed: int = 0, device: str = "cpu",
           threads: int | None = None, timeout: float = 900.0,
           progress: Callable[[CaseResult], None] | None = None,
           layers: bool = False, dtype: str = "float32",
           jobs: int | None = None, started: Callable | None = None,
           optimize: bool = False) -> list[CaseResult]:
    """Do the engines compute what the specs mean? One CaseResult per network x engine x
    mode, in that order.

    `names`: zoo names, spec paths or Nets (default: the whole zoo); `engines`: engine names
    (default: all; see `list_engines`); `mode`: "forward" (outputs against the float64 NumPy
    reference), "train" (SGD steps against the float64 training oracle) or "both". Each
    engine runs in its own child process on the same seeded batch of `batch` samples and the
    same weights, on `device` ("cpu" or "gpuN") with `threads` threads, for at most `timeout`
    seconds. Forward outputs are judged by each element's allowed float32 rounding, from the
    magnitude of the terms behind it (zoo/magnitude.py); `atol`/`rtol` switch to the
    elementwise rule |e - r| <= atol + rtol |r| instead. `layers=True` compares every blob
    (forward) and every parameter's update (train) and fills .layers (zoo.drift.table and
    zoo.drift.plot show them). `dtype="float64"`: exact mode, the engines that compute in
    float64 built and judged at float64's bounds (zoo/tolerances.py); the others skipped with
    their reason. `jobs`: engine children at once (default: one per core, each with its share
    of the cores as threads; each engine's child serves all its cases, zoo/isolation.py).
    `started(case)` is called as each case begins (case.network, .engine, .mode, .threads)
    and `progress(result)` after it. A CaseResult has
    .status ("pass", "fail", "error", "skipped"), .reason, .max_abs_err, .max_rel_err,
    .first_bad_layer, .layers, .seconds and .to_dict(). Meaningless options raise UsageError
    before anything runs. `optimize=True` verifies each engine's optimised configuration,
    the one `bench(optimize=True)` times, against the same references (an engine without
    one is skipped)."""
    from .verifier import verify as _verify
    return _verify(names, engines, mode, batch, atol, rtol, seed, device, threads, timeout,
                   progress, layers, dtype, jobs, started, optimize)


def bench(names: list[str | Path | Net] | None = None, engines: list[str] | None = None,
          device: str = "cpu", threads: list[int | None] | None = None,
          batch: int | None = None, mode: str = "train", warmup: int = 2, iters: int = 5,
          min_time: float = 1.0, layers: bool = False, seed: int = 0,
          timeout: float = 1800.0, options: dict | None = None,
          progress: Callable[[dict], None] | None = None, ci_width: float = 0.1,
          max_time: float = 20.0, repeat: int = 1, method: str = "adaptive",
          peak: bool = True, started: Callable | None = None,
          optimize: bool = False) -> list[dict]:
    """Time per mini-batch, every engine the same way: one row (a dict) per network x engine
    x mode x thread count, in that order.

    `names`/`engines` as in `verify`; `mode`: "train" (forward, loss, backward and SGD
    update), "infer" (a forward pass) or "both"; `threads`: thread counts to measure (None:
    the engine's default); `batch` default: the spec's batch_cpu or batch_gpu for `device`.
    Each point runs in a fresh child process: at least `warmup` iterations and until the
    timings stop falling, then timed ones (at least `iters` and `min_time` seconds) until the
    median's 95% confidence interval is at most `ci_width` of it wide or `max_time` seconds
    have passed (`method="fixed"`: the old fixed count); `repeat` runs each point in K fresh
    processes and reports their spread. A row has "status" ("ok", "skipped", "error") and
    "reason", and when ok "median_s", "mean_s", "p10_s"/"p90_s"/"p99_s", "cv", "ci_*",
    "noisy" (with "noise": why), "load_before"/"load_after", "samples_per_s", "gflops",
    "peak_gflops"/"peak_fraction" (the machine's float32 GEMM peak, measured once and cached,
    unless `peak=False`), "peak_rss_mb" (and "layers" with `layers=True`, a separate
    profiling pass). `options` are the engine's (e.g. {"xla": True} for tensorflow).
    `optimize`: each point also in the engine's fastest standard configuration (torch.compile,
    XLA, MXNet's oneDNN fusion, ORT's full optimisation), verified against the reference
    before it is timed; rows carry "config" ("default" / "optimized") and "enabled", and an
    optimised model that fails its verification is a row with status "fail" and no time.
    `started(case)` is called as each point begins, `progress(row)` after each row.
    zoo.benchmark.write_csv and zoo.benchmark.plot
    write the rows out; zoo.report.write makes an HTML page of them."""
    from .benchmark import bench as _bench
    return _bench(names, engines, device, threads, batch, mode, warmup, iters, min_time,
                  layers, seed, timeout, options, progress, ci_width, max_time, repeat,
                  method, peak, started, optimize)


def import_model(path: str | Path, out: str | Path, weights: str | Path | None = None,
                 batch: int = 1, name: str | None = None, force: bool = False,
                 loss: str | None = None):
    """Bring an existing model into the zoo: an .onnx file, or a Caffe .prototxt (with its
    .caffemodel as `weights`), becomes OUT/NAME.prototxt, OUT/NAME.npz and OUT/import.json
    (what was written, with hashes) in the new folder `out`. `name` renames the spec (default:
    the model's); `force` replaces `out` only if an earlier import wrote it, unchanged. `batch`
    fixes a symbolic ONNX batch axis. Returns an ImportResult: path-like (the spec: then
    `verify([result])`), with .spec, .weights and .notes (e.g. "no weights given: seeded
    random weights"). The model is untrusted input: anything zoo cannot represent exactly
    raises ImportRefused and nothing is written. `loss="softmax"` adds a SoftmaxWithLoss on
    the last output's logits with an integer label input when the model has none, so that it
    trains; the spec's header comment and .notes say what was added."""
    from .importers import import_model as _import_model
    return _import_model(path, out, weights, batch, name=name, force=force, loss=loss)


def list_engines() -> list[dict]:
    """Every registered engine (`zoo engines --json`), installed or not: "engine",
    "installed", "missing" (why not, or None), "versions", "train" (has a training step),
    "note", "layer_types" its converter has, and "gaps": everything it cannot do, each
    {"what", "why"}, from its declaration in zoo/engines.py. Imports no engine."""
    from . import engines as _engines
    return [{"engine": e.name, "installed": e.installed, "missing": e.missing(),
             "versions": e.versions(), "train": e.train, "note": e.note,
             "layer_types": e.supported_types(), "gaps": e.gap_table()}
            for e in _engines.ENGINES.values()]


__all__ = ["load", "list_networks", "show", "validate", "convert", "build", "verify", "bench",
           "import_model", "list_engines", "summary", "from_text", "Net", "SpecError",
           "ZooError", "data", "reference", "weights", "__version__"]
