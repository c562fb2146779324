"""`zoo verify`: do the engines compute what the spec means?

For each network x engine: build (cached), run in a child process on the same seeded batch
and weights, and compare with the float64 NumPy reference (forward) or with the float64
training oracle (train). The walk over the cases, their builds and the reasons a case is
skipped are zoo/cases.py's, shared with `zoo bench`. A failing output triggers a second run with every blob exposed,
to name the first layer whose output leaves tolerance.

The training oracle is PyTorch in float64 (zoo's torch engine built with dtype float64),
run `steps` SGD steps; before it is trusted, its own float64 forward must match the NumPy
reference within the float64 forward judge's bound (k u S, u = 2^-53) and its loss within
tolerances.ORACLE, in the same verify run. Two steps are
taken, so that momentum (which a single step from zero velocity cannot show) is exercised,
except in networks with BatchNorm: there the second step amplifies the float32 rounding of
the first through the 2-sample batch statistics (measured: ResNet-56 needs 5.5x the
tolerance after two steps, 0.18x after one), so they compare one step.

A float32 training case whose losses agree and whose updates fail the default tolerance is
asked two questions, in this order. Did the engine take the other side of a ReLU's or Clip's
kink where float32 rounding allows it? Then the oracle steps again with the engine's own
branches and the update is judged against that at the default tolerance
(`_branch_matched`, zoo/branches.py). If that does not settle it, the conditioning probe
(`_conditioning`, rule and measurements in tolerances.py): if the verification point itself
cannot resolve the tolerance, the case is judged at what it can resolve, and says so.

Exact mode (dtype="float64", `zoo verify --dtype float64`): every engine that declares
float64 (Engine.dtypes) is built with options {"dtype": "float64"}, fed float64 inputs and
judged at float64's bounds: the same scale-aware forward rule with u = 2^-53, the losses
and updates at tolerances.py's float64 values, no conditioning probe (it measures float32's
rounding decisions; a float64 engine's are 2^-29 times rarer). Then a failure means the
converted model computes something else than the spec, however small, on every network.
An engine that declares no float64 is skipped with its reason; one whose answers come back
in another dtype (its build ignored the option) is an error, never a pass.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from . import branches, cache, cases, compare, data, engines, isolation, options, reference
from . import net as N
from . import tolerances as T
from . import weights as W
from .builds import BuildFailed, build, one_off
from .errors import UsageError, ZooError

DEFAULT_BATCH = 2
TRAIN_STEPS = 2
ORACLE_ENGINE = "torch"
MODES = ("forward", "train", "both")
DTYPES = T.DTYPES


def train_steps(net) -> int:
    """SGD steps compared in train mode (see the module's docstring)."""
    return 1 if any(l.type == "BatchNorm" for l in net.layers) else TRAIN_STEPS


@dataclass
class CaseResult:
    network: str
    engine: str
    mode: str                  # "forward" or "train"
    status: str                # "pass", "fail", "skipped", "error"
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    atol: float | None = None
    rtol: float | None = None
    first_bad_layer: str | None = None
    reason: str = ""
    tolerance_source: str = "default"
    needed_factor: float | None = None     # worst error / allowed error (<= 1 passes)
    details: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    judge: str = ""                        # which forward rule judged it (zoo/tolerances.py)
    layers: list[dict] = field(default_factory=list)   # --layers: every blob / parameter
    exposed: str = ""                      # how blobs were exposed (fusion off, or as computed)
    dtype: str = "float32"                 # the dtype the engine computed in (--dtype)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Problem(contextlib.AbstractContextManager):
    """One network prepared once for all engines: batch, weights, inputs, reference. A
    context: the oracle's build is leased while the network's cases run, and removed after
    them when the network is a one-off spec (cases.walk enters and leaves it)."""
    net: N.Net
    netb: N.Net
    weights: dict
    inputs: dict
    ref: dict
    oracle: dict | None = None          # {"losses", "weights", "artifact"} or {"error": str}
    bound: dict | None = None           # blob -> allowed error (zoo/magnitude.py), when needed
    conditioning: dict | None = None    # {"S": float, "where": str} or {"error": str}
    train_reference: object = None      # branches.TrainReference, when a case needs it
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    # cases.walk runs the engines' cases side by side: what is computed once per network (the
    # oracle, the conditioning probe, the update scales) is computed under this; the forward
    # bounds under a lock of their own, so a forward case never waits for the oracle's training
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    bound_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    dtype: str = "float32"              # what the engines compute in (exact mode: float64)
    # the engines' runner options (never the oracle's): {"optimize": True} verifies each
    # engine's optimised configuration, the one `zoo bench --optimize` times
    engine_options: dict = field(default_factory=dict)

    def __exit__(self, *exc) -> None:
        self.resources.close()

    def job(self, **job) -> dict:
        """An engine's job (not the oracle's), with the engines' runner options."""
        return {**job, "options": self.engine_options} if self.engine_options else job


def _prepare(name, batch: int, seed: int, dtype: str = "float32",
             engine_options: dict | None = None) -> Problem:
    net = name if isinstance(name, N.Net) else N.load(name)
    netb = net.with_batch(batch)
    weights = W.for_net(net, seed)
    inputs = data.make(netb, seed)
    if dtype == "float64":   # the same values (zoo's data are float32), fed as float64
        inputs = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in inputs.items()}
    ref = reference.forward(netb, weights, inputs)
    return Problem(net, netb, weights, inputs, ref, dtype=dtype,
                   engine_options=dict(engine_options or {}))


def _wrong_dtype(p: Problem, arrays: dict, what: str) -> str | None:
    """Why an engine's float answers cannot be judged at p.dtype's bounds, or None: a build
    that ignored the dtype option computes in float32, and judging that at float64's bounds
    would fail it for the wrong reason (or, at a looser rule, pass it for none)."""
    if p.dtype == "float32":
        return None
    got = sorted({str(a.dtype) for a in arrays.values() if a.dtype.kind == "f"} - {p.dtype})
    if not got:
        return None
    return (f"its {what} came back as {', '.join(got)}, not {p.dtype}: the build ignored the "
            f"dtype option, so this is no {p.dtype} check")


# How each engine's blobs are exposed for the per-blob comparison. Engines that fuse layers
# (a Convolution + BatchNorm + ReLU computed as one) run with fusion off when every blob is
# exposed, so each exposed blob is what its layer computes (runners/onnx.py,
# runners/caffe_opencv.py); the others execute layer by layer.
EXPOSURE = {
    "onnx": "graph optimisations off (ORT_DISABLE_ALL) while blobs are exposed",
    "caffe-opencv": "layer fusion off (enableFusion(False)) while blobs are exposed",
    "torch": "eager, layer by layer: no fusion",
    "caffe": "layer by layer: no fusion",
    "tensorflow": "each exposed blob is a model output: not fused away",
    "mxnet": "no subgraph backend: no fusion",
}


# One network's bounds are computed at a time in this process, whichever case or oracle asks:
# beside the cases' own work, two networks' float32 and float64 bounds at once took a whole-zoo
# run's parent to 12.6 GB (AlexNet-S's fully connected layers) and out of memory.
_BOUNDING = threading.Lock()


def _bounds(p: Problem, dtype: str) -> dict:
    with _BOUNDING:
        return reference.bounds(p.netb, p.weights, p.ref, dtype=dtype)


def _judge(p: Problem, tol: T.Tolerance | None) -> Callable[[str, np.ndarray], compare.Diff]:
    """The forward rule: scale-aware (tol None: the bound zoo/magnitude.py carries beside
    every blob) or elementwise atol + rtol |ref| (a user's --atol/--rtol, an exception)."""
    if tol is not None:
        return lambda blob, got: compare.allclose(blob, got, p.ref[blob], tol)
    with p.bound_lock:
        if p.bound is None:                      # once per network: every engine uses it
            p.bound = _bounds(p, p.dtype)
    flush = T.flush(p.dtype)
    return lambda blob, got: compare.within_bound(blob, got, p.ref[blob], p.bound[blob], flush)


def _blob_diffs(p: Problem, arrays: dict, judge) -> list[tuple[object, compare.Diff]]:
    """(layer, Diff) for every exposed blob, in the network's order."""
    rows = []
    for layer in p.netb.deploy_layers:
        if layer.kind.is_input:
            continue
        rows += [(layer, judge(t, arrays[t])) for t in layer.tops if t in arrays]
    return rows


def _exposed_run(p: Problem, engine: str, artifact, device, threads, timeout):
    return isolation.run(engine, "forward", p.job(artifact=str(artifact), expose=["*"]),
                         p.inputs, device=device, threads=threads, timeout=timeout)


def _first_bad(rows) -> tuple[str | None, str]:
    for layer, d in rows:
        if not d.ok:
            why = d.reason or f"{d.worst_ratio:.3g}x the tolerance"
            return layer.name, (f"layer {layer.name!r} ({layer.type}) output {d.name!r}: max abs "
                                f"err {d.max_abs_err:.3g}, {why}")
    return None, "every blob was within tolerance when exposed"


def layer_row(layer, d: compare.Diff) -> dict:
    """One row of the drift table (`--layers`): the JSON carries the same numbers."""
    return {"layer": layer.name if layer is not None else d.name.rsplit(".", 1)[0],
            "type": layer.type if layer is not None else "", "blob": d.name, "ok": d.ok,
            "max_abs_err": d.max_abs_err, "max_rel_err": d.max_rel_err, "ratio": d.worst_ratio,
            "reason": d.reason}


def _forward_case(p: Problem, engine: str, art, device, threads, tol, timeout, case,
                  layers: bool = False):
    res = isolation.run(engine, "forward", p.job(artifact=str(art.path)), p.inputs,
                        device=device, threads=threads, timeout=timeout)
    if not res.ok:
        _settle(case, cases.child_failed(res))
        return
    if (why := _wrong_dtype(p, {o: res.arrays[o] for o in p.netb.outputs if o in res.arrays},
                            "outputs")) is not None:
        case.status, case.reason = "error", why
        return
    judge = _judge(p, tol)
    diffs = [judge(o, res.arrays.get(o, np.zeros(0))) for o in p.netb.outputs]
    _summarise(case, diffs)
    if case.status != "fail" and not layers:
        return
    exposed = _exposed_run(p, engine, art.path, device, threads, timeout)
    case.exposed = EXPOSURE.get(engine, "as the engine computes them")
    if not exposed.ok:
        if case.status == "fail":
            case.reason = f"(exposing every blob failed: {exposed.reason})"
        else:
            case.reason = f"--layers: exposing every blob failed: {exposed.reason}"
        return
    rows = _blob_diffs(p, exposed.arrays, judge)
    if layers:
        case.layers = [layer_row(layer, d) for layer, d in rows]
    if case.status == "fail":
        case.first_bad_layer, case.reason = _first_bad(rows)


def _oracle(p: Problem, seed: int, timeout: float) -> dict:
    """`_oracle_unlocked` once per network, whichever engine's case asks first."""
    with p.lock:
        return _oracle_unlocked(p, seed, timeout)


def _oracle_unlocked(p: Problem, seed: int, timeout: float) -> dict:
    """The float64 training oracle for this network, checked against the NumPy reference."""
    if p.oracle is not None:
        return p.oracle
    oracle_eng = engines.get(ORACLE_ENGINE)
    if (why := oracle_eng.missing()) is not None:
        p.oracle = {"error": f"the training oracle (PyTorch float64) is unavailable: {why}"}
        return p.oracle
    try:
        art = build(p.net, ORACLE_ENGINE, seed=seed, options={"dtype": "float64"}, timeout=timeout,
                    transient=one_off(p.net))
        if art.transient:   # closed last-in first-out: the lease ends, then the build goes
            p.resources.callback(cache.discard_transient, [art])
        p.resources.enter_context(art.lease())
    except (BuildFailed, ZooError) as e:
        p.oracle = {"error": f"the training oracle could not be built: {e}"}
        return p.oracle
    # both child jobs first, then this process's checks: the training cases wait for the
    # oracle's step, and the checks' float64 bounds take seconds on a big network (ViT-B/16: 9)
    fwd = isolation.run(ORACLE_ENGINE, "forward", {"artifact": str(art.path), "expose": ["*"]},
                        p.inputs, threads=None, device="cpu", timeout=timeout)
    if not fwd.ok:
        p.oracle = {"error": f"the training oracle's forward failed: {fwd.reason}"}
        return p.oracle
    res = isolation.run(ORACLE_ENGINE, "train", {"artifact": str(art.path), "steps": train_steps(p.net)},
                        p.inputs, threads=None, device="cpu", timeout=timeout)
    # the float64 forward judge (k u S with u = 2^-53): an elementwise rtol fails where a
    # dot product of large terms cancels to ~0 (a random-init Inception's 1x7 convolutions)
    bound64 = _bounds(p, "float64")
    for layer in p.netb.deploy_layers:
        for t in layer.tops:
            if not layer.kind.is_input:
                d = compare.within_bound(t, fwd.arrays[t], p.ref[t], bound64[t], T.flush("float64"))
                if not d.ok:
                    p.oracle = {"error": f"the float64 oracle disagrees with the NumPy reference "
                                         f"at layer {layer.name!r} ({d.max_abs_err:.3g}): not "
                                         "trusted"}
                    return p.oracle
    del fwd, bound64        # every blob twice (ViT-B/16: 2 GB), before the training reference
    if not res.ok:
        p.oracle = {"error": f"the training oracle failed: {res.reason}"}
        return p.oracle
    # the oracle's first loss is the reference's training-mode loss: check it too
    train_ref = reference.forward(p.netb, p.weights, p.inputs, train=True)
    ref_loss = float(sum(train_ref[l] for l in p.netb.losses))
    d = compare.allclose("loss", res.result["losses"][0], ref_loss, T.ORACLE)
    if not d.ok:
        p.oracle = {"error": f"the oracle's loss {res.result['losses'][0]} differs from the "
                             f"reference {ref_loss}"}
        return p.oracle
    p.oracle = {"losses": res.result["losses"], "weights": res.arrays, "artifact": str(art.path)}
    return p.oracle


def _train_case(p: Problem, engine: str, art, device, threads, tol, timeout, seed, case,
                layers: bool = False):
    """`steps` SGD steps against the oracle's (a network without a loss never gets here:
    zoo/cases.py skips it). The engine steps before the oracle is asked for, so that in a
    pooled walk its job runs while the oracle is computed."""
    steps = train_steps(p.net)
    res = isolation.run(engine, "train", p.job(artifact=str(art.path), steps=steps),
                        p.inputs, device=device, threads=threads, timeout=timeout)
    oracle = _oracle(p, seed, timeout)
    if "error" in oracle:
        case.status, case.reason = "error", oracle["error"]
        return
    if not res.ok:
        _settle(case, cases.child_failed(res))
        return
    if (why := _wrong_dtype(p, res.arrays, "updated weights")) is not None:
        case.status, case.reason = "error", why
        return
    diffs = _loss_diffs(res.result["losses"], oracle["losses"], tol)
    if len(res.result["losses"]) != len(oracle["losses"]):
        diffs.append(compare.Diff("losses", False, float("inf"), float("inf"), float("inf"),
                                  "wrong number of steps"))
    rtol_update, source = T.train_update_rtol(engine, p.net.name, p.dtype)
    updates = _update_diffs(p, res.arrays, oracle, rtol_update, steps)
    branch_note = ""     # why the branch-matched oracle did not decide, said in the result
    later_note = ""      # how the losses after step 1 were judged, when not at the default
    # step 1's loss is a forward quantity and is never excused; a later step's loss follows
    # the updates before it, so it is judged as they are (the matched oracle, the probe), or
    # at the engine's own weights before that step as step 1's is (_own_point_losses)
    calibrated = (p.dtype == "float32" and len(diffs) == len(oracle["losses"]) and diffs
                  and diffs[0].ok)
    if calibrated and not all(d.ok for d in diffs + updates):
        # did the engine take another branch of a kink than float64?
        matched = _branch_matched(p, engine, art, device, threads, oracle, steps, timeout)
        if "oracle" in matched:
            again = _loss_diffs(res.result["losses"], matched["oracle"]["losses"], tol) + \
                _update_diffs(p, res.arrays, matched["oracle"], rtol_update, steps)
            if all(d.ok for d in again):
                diffs, updates = again[:len(diffs)], again[len(diffs):]
                source = f"branch-matched oracle: {matched['check'].describe()} (zoo/branches.py)"
            else:
                branch_note = f"the branch-matched oracle did not settle it ({matched['check'].describe()})"
        elif matched.get("why"):
            branch_note = f"no branch-matched oracle: {matched['why']}"
    if calibrated and not all(d.ok for d in diffs + updates):
        # can this verification point resolve rtol_update (and the later losses) at all?
        probe = _conditioning(p, oracle, steps, timeout)
        needed = T.CONDITIONING_MARGIN * probe.get("S", 0.0)
        if "error" in probe:
            source = f"{source}; conditioning probe failed: {probe['error']}"
        else:
            if needed > rtol_update:
                rtol_update = needed
                source = (f"ill-conditioned point: float32 rounding at layer boundaries moves the "
                          f"float64 oracle's update by {probe['S']:.3g} of a layer's largest update "
                          f"({probe['where']}), so rtol_update = {T.CONDITIONING_MARGIN:g} x that "
                          "(zoo/tolerances.py)")
                updates = _update_diffs(p, res.arrays, oracle, rtol_update, steps)
            widened = _later_loss_tolerance(tol, oracle["losses"], probe.get("loss_moves", []))
            if widened is not None and not all(d.ok for d in diffs[1:]):
                factor, loss_tol = widened
                diffs = diffs[:1] + _loss_diffs(res.result["losses"][1:], oracle["losses"][1:],
                                                loss_tol, first_step=2)
                later_note = (f"later steps' losses at {factor:.3g}x the loss tolerance: "
                              f"float32 rounding moves the oracle's by up to "
                              f"{factor / T.CONDITIONING_MARGIN:.3g}x it (probe)")
    if calibrated and not all(d.ok for d in diffs[1:]) and all(d.ok for d in updates):
        # the oracle's later losses follow its own earlier steps; at a chaotic point (a loss
        # that grows 1000-fold in one step) a correct engine's differ by more than the probe
        # shows. Judged where the engine really was, a later loss is a forward quantity
        # again, held to step 1's tolerance
        own = _own_point_losses(p, engine, art, device, threads, res.result["losses"], tol,
                                steps, timeout)
        if isinstance(own, str):
            later_note = _joined(later_note, own)
        elif all(d.ok for d in own):
            diffs, later_note = diffs[:1] + own, ("later steps' losses judged at the engine's own "
                                                  "weights after the step before, against the "
                                                  "float64 loss there, at step 1's tolerance")
        else:
            bad = next(d for d in own if not d.ok)
            note = f"at the engine's own weights: {bad.name} at {bad.worst_ratio:.3g}x step 1's tolerance"
            later_note = _joined(later_note, note)
    if later_note:
        source = _joined("" if source == "default" else source, later_note)
    if branch_note:
        source = f"{source}; {branch_note}"
    if source != "default":
        case.tolerance_source = f"rtol_update {rtol_update:.3g}: {source}"
    diffs += updates
    _summarise(case, diffs)
    if layers:
        case.layers = [layer_row(None, d) for d in diffs]
    if case.status == "fail":
        bad = next(d for d in diffs if not d.ok)
        case.first_bad_layer = bad.name.split(".")[0] if "." in bad.name else None
        case.reason = f"{bad.name}: {bad.reason or f'{bad.worst_ratio:.3g}x the tolerance'}"


def _joined(*notes: str) -> str:
    """The non-empty notes, joined as a result's tolerance source joins them."""
    return "; ".join(n for n in notes if n)


def _own_point_losses(p: Problem, engine: str, art, device, threads, got: list, tol: T.Tolerance,
                      steps: int, timeout: float) -> list | str:
    """Each later step's loss against the float64 training-mode loss at the weights the
    engine itself reached before that step (its first steps rerun by `train_forward`, which
    returns them; engines are deterministic on one device and thread count), at `tol`, step
    1's. A list of Diffs, or why there is none."""
    diffs = []
    labels = set(p.netb.labels)     # a logits blob is exposed: every engine exposes one
    expose = [b for l in p.netb.loss_layers for b in l.bottoms if b not in labels][:1]
    for before in range(1, min(steps, len(got))):
        res = isolation.run(engine, "train_forward", p.job(artifact=str(art.path), after_steps=before,
                                                           expose=expose),
                            p.inputs, device=device, threads=threads, timeout=timeout)
        if not res.ok:
            return f"no check at the engine's own weights: its training forward failed: {res.reason}"
        moved = branches.weights_of(res.arrays)
        if not {k for k, ws in p.net.weight_specs().items() if ws.kind == "param"} <= set(moved):
            return "no check at the engine's own weights: its training forward did not return them all"
        blobs = reference.forward(p.netb, {**p.weights, **moved}, p.inputs, train=True)
        want = float(sum(blobs[l] for l in p.netb.losses))
        diffs.append(compare.allclose(f"loss[step {before + 1}]", got[before], want, tol))
    return diffs


def _loss_diffs(got: list, want: list, tol: T.Tolerance, first_step: int = 1) -> list:
    return [compare.allclose(f"loss[step {first_step + i}]", g, w, tol)
            for i, (g, w) in enumerate(zip(got, want))]


def _later_loss_tolerance(tol: T.Tolerance, want: list, moves: list) -> tuple | None:
    """(factor, the loss tolerance times factor) for steps 2.. when float32 rounding moves
    the oracle's own losses there by more than half the tolerance (the probe's `loss_moves`,
    the largest |probe loss - oracle loss| per step), else None."""
    worst = max((m / (tol.atol + tol.rtol * abs(w)) for m, w in zip(moves[1:], want[1:])),
                default=0.0)
    factor = T.CONDITIONING_MARGIN * worst
    if factor <= 1.0:
        return None
    return factor, T.Tolerance(rtol=tol.rtol * factor, atol=tol.atol * factor)


def _branch_matched(p: Problem, engine: str, art, device, threads, oracle: dict, steps: int,
                    timeout: float) -> dict:
    """The oracle's steps with the engine's own branch decisions at every ReLU and Clip,
    when each differing decision is a legitimate float32 one (zoo/branches.py):
    {"oracle": {"losses", "weights"}, "check": branches.Check}, or {"why": str} without.
    Step 1's decisions are read at the build's weights; step 2's at the weights the engine's
    own first step left, and judged against the float64 forward at those same weights."""
    layers = branches.kink_layers(p.netb)
    if not layers:
        return {}
    codes, checks = [], []
    for before in range(steps):
        res = isolation.run(engine, "train_forward", p.job(artifact=str(art.path), after_steps=before,
                                                           expose=[l.tops[0] for l in layers]),
                            p.inputs, device=device, threads=threads, timeout=timeout)
        if not res.ok:
            return {"why": f"the engine's training forward failed: {res.reason}"}
        codes.append({l.name: branches.codes(l, res.arrays[l.tops[0]]) for l in layers})
        if before == 0:
            with p.lock:
                if p.train_reference is None:
                    p.train_reference = branches.TrainReference(p.netb, p.weights, p.inputs)
            ref = p.train_reference
        else:     # the float64 forward at the engine's own weights after `before` steps
            moved = {k: v.astype(np.float64) for k, v in branches.weights_of(res.arrays).items()}
            ref = branches.TrainReference(p.netb, {**p.weights, **moved}, p.inputs)
        checks.append(branches.check(p.netb, ref, codes[-1]))
    check = branches.Check.combine(checks)
    if not check.flips:
        return {"why": check.describe()}
    if not check.ok:
        return {"why": f"a branch no float32 rounding explains: {check.describe()}"}
    try:
        arrays = branches.oracle_inputs(p.inputs, codes)
    except ValueError as e:
        return {"why": str(e)}
    res = isolation.run(ORACLE_ENGINE, "train", {"artifact": oracle["artifact"], "steps": steps},
                        arrays, threads=None, device="cpu", timeout=timeout)
    if not res.ok:
        return {"why": f"the branch-matched oracle failed: {res.reason}"}
    return {"oracle": {"losses": res.result["losses"], "weights": res.arrays}, "check": check}


def _layer_scales(p: Problem, oracle: dict) -> dict[str, float]:
    """The largest oracle update among each layer's parameters (see tolerances.py)."""
    scale: dict[str, float] = {}
    for key, ws in p.net.weight_specs().items():
        if ws.kind == "param":
            d = float(np.max(np.abs(oracle["weights"][key].astype(np.float64) - p.weights[key])))
            layer = key.rsplit(".", 1)[0]
            scale[layer] = max(scale.get(layer, 0.0), d)
    return scale


def _update_diffs(p: Problem, got: dict, oracle: dict, rtol_update: float, steps: int) -> list:
    with p.lock:
        if "scales" not in oracle:               # once per network: every engine and probe uses it
            oracle["scales"] = _layer_scales(p, oracle)
    scale = oracle["scales"]
    diffs = []
    for key, ws in p.net.weight_specs().items():
        if ws.kind != "param":
            continue
        if key not in got:
            diffs.append(compare.Diff(key, False, float("inf"), float("inf"), float("inf"),
                                      "missing from the engine's updated weights"))
            continue
        diffs.append(compare.update_close(key, got[key], oracle["weights"][key], p.weights[key],
                                          rtol_update, steps, scale[key.rsplit(".", 1)[0]],
                                          T.storage_ulp(p.dtype)))
    return diffs


def _conditioning(p: Problem, oracle: dict, steps: int, timeout: float) -> dict:
    """`_conditioning_unlocked` once per network, whichever engine's case asks first."""
    with p.lock:
        return _conditioning_unlocked(p, oracle, steps, timeout)


def _conditioning_unlocked(p: Problem, oracle: dict, steps: int, timeout: float) -> dict:
    """How far an idealised float32 engine may legitimately land from the oracle here:
    the oracle rerun with float32 rounding at its layer boundaries (tolerances.py)."""
    if p.conditioning is None:
        p.conditioning = probe(p, oracle["artifact"], p.inputs, oracle, steps, timeout)
    return p.conditioning


def probe(p: Problem, artifact: str, inputs: dict, oracle: dict, steps: int, timeout: float,
          where: str = "") -> dict:
    """The probe itself: the oracle's build rerun CONDITIONING_PROBES times on `inputs` as an
    idealised float32 engine, against `oracle` (its exact step on the same inputs).
    {"S": the largest deviation in the rule's units, "where", "loss_moves": the largest
    |probe loss - oracle loss| of each step} or {"error": why}."""
    worst, at, loss_moves = 0.0, "", []
    for k in range(T.CONDITIONING_PROBES):
        res = isolation.run(ORACLE_ENGINE, "train",
                            {"artifact": artifact, "steps": steps,
                             "options": {"round_float32": True, "jitter_seed": k}},
                            inputs, threads=None, device="cpu", timeout=timeout)
        if not res.ok:
            return {"error": res.reason}
        # in the units of the rule: the error it would allow per unit of rtol_update
        for d in _update_diffs(p, res.arrays, oracle, 1.0, steps):
            if d.worst_ratio > worst:
                worst, at = d.worst_ratio, f"{d.name}, {where}probe {k + 1} of {T.CONDITIONING_PROBES}"
        moved = [abs(float(g) - float(w)) for g, w in zip(res.result["losses"], oracle["losses"])]
        loss_moves = [max(a, b) for a, b in zip(loss_moves, moved)] if loss_moves else moved
    return {"S": worst, "where": at, "loss_moves": loss_moves}


def _summarise(case: CaseResult, diffs: list[compare.Diff]) -> None:
    if not diffs:
        case.status, case.reason = "error", "nothing was compared"
        return
    case.max_abs_err = max(d.max_abs_err for d in diffs)
    case.max_rel_err = max(d.max_rel_err for d in diffs)
    case.needed_factor = max(d.worst_ratio for d in diffs)
    case.details = [{"name": d.name, "ok": d.ok, "max_abs_err": d.max_abs_err,
                     "max_rel_err": d.max_rel_err, "ratio": d.worst_ratio, "reason": d.reason}
                    for d in diffs]
    bad = [d for d in diffs if not d.ok]
    case.status = "fail" if bad else "pass"
    if bad:
        case.reason = "; ".join(f"{d.name}: {d.reason or f'{d.worst_ratio:.3g}x the tolerance'}"
                                for d in bad[:3])


def _settle(case: CaseResult, settled: cases.Settled) -> None:
    case.status, case.reason = settled.status, settled.reason


def verify(names: list | None = None, engines_: list[str] | None = None, mode: str = "forward",
           batch: int = DEFAULT_BATCH, atol: float | None = None, rtol: float | None = None,
           seed: int = 0, device: str = "cpu", threads: int | None = None,
           timeout: float = 900.0, progress: Callable[[CaseResult], None] | None = None,
           layers: bool = False, dtype: str = "float32", jobs: int | None = None,
           started: Callable[[cases.Case], None] | None = None,
           optimize: bool = False) -> list[CaseResult]:
    """Verify networks (default: the whole zoo) on engines (default: all registered). Options
    that would make the check meaningless are refused (zoo.errors.UsageError, exit 2).
    layers: compare every blob (forward, with every blob exposed) and every parameter's
    update (train) and keep the per-layer numbers in each result's `layers`.
    dtype: "float32", or "float64" for exact mode (the module's docstring).
    jobs: engine children running at once (default: one per core, each with its share of
    the cores as threads unless `threads` is given); see zoo/cases.py.
    optimize: each engine in its optimised configuration, the one `zoo bench --optimize`
    times (runner option {"optimize": True}), judged as the default one is; an engine that
    has none is skipped, saying so."""
    dtype = _dtype(dtype)
    engine_options = {"optimize": True} if optimize else {}
    mode = options.mode(mode, MODES)
    batch = options.positive_int("batch", batch) or DEFAULT_BATCH
    atol, rtol = options.tolerance("atol", atol), options.tolerance("rtol", rtol)
    threads = options.positive_int("threads", threads)
    jobs = options.positive_int("jobs", jobs)
    timeout = options.timeout(timeout)
    device = options.device(device)
    engines_ = options.engine_names(engines_)

    def new_result(case: cases.Case, p: Problem) -> tuple[CaseResult, T.Tolerance]:
        tol, source = T.forward_tolerance(case.engine, p.net.name, case.mode, rtol, atol, p.dtype)
        result = CaseResult(p.net.name, case.engine, case.mode, "error", tolerance_source=source,
                            dtype=p.dtype)
        if case.mode == "forward" and source == "default":
            result.judge = T.scale_aware(p.dtype)
        else:   # train: the losses are judged elementwise (updates: zoo/tolerances.py)
            result.atol, result.rtol = tol.atol, tol.rtol
            result.judge = "elementwise: atol + rtol |ref|"
        return result, tol

    def run(case: cases.Case, p: Problem, art) -> CaseResult:
        result, tol = new_result(case, p)
        if case.mode == "forward":
            forward_tol = None if result.judge == T.scale_aware(p.dtype) else tol
            _forward_case(p, case.engine, art, device, threads, forward_tol, timeout, result, layers)
        else:
            _train_case(p, case.engine, art, device, threads, tol, timeout, seed, result, layers)
        result.seconds = time.perf_counter() - case.started
        return result

    def settle(case: cases.Case, p: Problem, settled: cases.Settled) -> CaseResult:
        result, _ = new_result(case, p)
        _settle(result, settled)
        result.seconds = time.perf_counter() - case.started
        return result

    def oracle_ahead(p: Problem, runnable: list[cases.Case]) -> None:
        """A pooled walk starts the oracle as the network opens, if a training case will ask."""
        if any(c.mode == cases.TRAIN for c in runnable):
            _oracle(p, seed, timeout)

    modes = ["forward", "train"] if mode == "both" else [mode]
    return cases.walk(names, engines_, modes, prepare=lambda net: _prepare(net, batch, seed, dtype, engine_options),
                      run=run, settle=settle, inference_mode="forward", threads=[threads],
                      seed=seed, timeout=timeout, progress=progress, jobs=jobs, started=started,
                      build_options={} if dtype == "float32" else {"dtype": dtype},
                      ahead=oracle_ahead)


def _dtype(dtype) -> str:
    if dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    return dtype


def exit_status(results: list[CaseResult]) -> int:
    """0 only when every checked case passed (skips are not passes, but not failures)."""
    if any(r.status in ("fail", "error") for r in results):
        return 1
    if not any(r.status == "pass" for r in results):
        return 1   # nothing was verified
    return 0
