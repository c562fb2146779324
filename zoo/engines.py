"""The engine declarations: the one place that says what each engine is and cannot do.

An engine is a converter module (spec + weights -> native files, with a `CONVERTERS`
registry of the layer types it handles), a runner module (native files + inputs -> outputs,
a training step, timings; a `Runner(zoo.runners.base.Runner)`), both run in a child process
(zoo/isolation.py, runners/__main__.py), and one `Engine(...)` below. Adding an engine is those three things. What an
engine cannot express is computed from its converter's registry plus its declared `gaps`,
each with the reason; `zoo engines`, verify, bench and the tests read it from here.

Nothing here imports an engine: presence and versions come from package metadata, so
`zoo engines` and `zoo list` stay fast.

Engines declared outside zoo (a test's toy engine) are added with `register`; the child
process finds them through ZOO_EXTRA_ENGINES, a comma list of modules imported at the end of
this module, each of which calls `register`. That variable names code to import, like
PYTHONPATH: it is set by whoever runs zoo, never read from a spec or a model file.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass
from typing import Callable

from . import memory
from .errors import EngineUnavailable, Unsupported, UsageError


@dataclass(frozen=True)
class Gap:
    """A layer type, or one case of it (`when`), that an engine cannot express, and why."""
    layer_type: str
    reason: str
    when: Callable | None = None     # (layer, net) -> bool; None: every layer of the type
    case: str = ""                   # `when` in words, for `zoo engines` ("k != 1")

    def applies(self, layer, net) -> bool:
        return layer.type == self.layer_type and (self.when is None or bool(self.when(layer, net)))

    @property
    def what(self) -> str:
        return f"{self.layer_type} {self.case}".strip()


@dataclass(frozen=True)
class Engine:
    name: str
    packages: tuple[str, ...]   # distributions whose versions are recorded; the first must exist
    imports: tuple[str, ...]    # modules that must be importable
    extra: str                  # `pip install 'zoo[EXTRA]'`
    train: bool                 # has a training step (else forward only, said in verify)
    converter: str              # module: build(net, weights, outdir, options) + CONVERTERS
    runner: str                 # module: Runner(zoo.runners.base.Runner)
    gaps: tuple[Gap, ...] = ()  # beyond the converter's registry: cases it refuses, with why
    note: str = ""
    cpu_only: str = ""          # why this engine never runs on a GPU here ("" if it may)
    thread_vars: tuple[str, ...] = ()          # the engine's own thread-count variables
    single_thread_vars: tuple[str, ...] = ()   # pools zoo pins to one thread
    quiet_env: tuple[tuple[str, str], ...] = ()   # log-level variables
    # variables that choose the engine's CPU kernels, set unless the user set them already
    kernel_env: tuple[tuple[str, str], ...] = ()
    dtypes: tuple[str, ...] = ("float32",)     # compute dtypes its build honours (option "dtype")
    dtype_gap: str = ""         # why it cannot compute in a dtype not in `dtypes`
    built: str = ""             # the version of an engine built from source (no distribution)

    @property
    def converter_module(self) -> str:
        return self.converter

    @property
    def runner_module(self) -> str:
        return self.runner

    def missing(self) -> str | None:
        """Why the engine cannot run here, or None when it can."""
        for mod in self.imports:
            try:
                if importlib.util.find_spec(mod) is None:
                    return f"{mod} is not installed (pip install 'zoo[{self.extra}]')"
            except (ImportError, ValueError):
                return f"{mod} is not importable"
        return None

    @property
    def installed(self) -> bool:
        return self.missing() is None

    def versions(self) -> dict[str, str]:
        out = {self.imports[0]: self.built} if self.built and self.installed else {}
        for dist in self.packages:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
        return out

    @property
    def version(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.versions().items()) or "-"

    # --- devices and environment -----------------------------------------------------------
    @property
    def device_kinds(self) -> tuple[str, ...]:
        return ("cpu",) if self.cpu_only else ("cpu", "gpu")

    def parse_device(self, device: str) -> int | None:
        """None for "cpu", N for "gpuN" ("gpu" alone is gpu0). A malformed device is a
        UsageError; a GPU for a CPU-only engine is EngineUnavailable, with the reason."""
        m = re.fullmatch(r"cpu|gpu(\d*)", device)
        if m is None:
            raise UsageError(f"device {device!r}: expected cpu or gpuN (e.g. gpu0)")
        if device == "cpu":
            return None
        if "gpu" not in self.device_kinds:
            raise EngineUnavailable(self.cpu_only)
        return int(m.group(1) or 0)

    def environment(self, threads: int | None, device: str) -> dict[str, str]:
        """Variables set in this engine's child before it starts (so they are in force before
        the engine is imported): its thread pools, which GPUs exist (none for cpu runs), its
        log levels and the C allocator's tunables (zoo/memory.py)."""
        env = {"PYTHONUNBUFFERED": "1"}
        if threads:
            t = str(threads)
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS") + self.thread_vars:
                env[var] = t
            env.update({v: "1" for v in self.single_thread_vars})
        if device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        env.update(dict(self.quiet_env))
        env.update({k: v for k, v in self.kernel_env if k not in os.environ})
        env.update(memory.child_environment())      # glibc reads its tunables at exec
        return env

    def dtype_refusal(self, dtype: str) -> str | None:
        """Why this engine cannot build and run a network in `dtype` (zoo verify --dtype),
        or None when its declaration says it can."""
        if dtype in self.dtypes:
            return None
        why = self.dtype_gap or f"{self.name} declares no {dtype} build"
        return f"{self.name} computes in {', '.join(self.dtypes)} only: {why}"

    # --- what the engine can express -------------------------------------------------------
    def supported_types(self) -> list[str]:
        """Layer types the converter handles (from its registry; imports no engine)."""
        return sorted(importlib.import_module(self.converter).CONVERTERS.types())

    def unsupported(self, net) -> str | None:
        """The first reason this engine cannot express `net` (a layer type its converter
        lacks, or a declared gap that applies), or None when it can. An inference-only
        engine's converter may lack the loss types: it leaves the losses out."""
        have = set(self.supported_types())
        for layer in net.layers:
            for gap in self.gaps:      # before the registry: a declared reason says why
                if gap.applies(layer, net):
                    return self._refusal(layer, gap.reason)
            if layer.type not in have and (self.train or not layer.kind.is_loss):
                return self._refusal(layer, f"{self.converter} has no converter for {layer.type}")
        return None

    def refuse(self, net) -> None:
        """Raise Unsupported with `unsupported(net)`'s reason, if there is one."""
        if (why := self.unsupported(net)) is not None:
            raise Unsupported(why)

    def _refusal(self, layer, reason: str) -> str:
        return f"{self.name}: layer {layer.name!r} ({layer.type}): {reason}"

    def gap_table(self) -> list[dict[str, str]]:
        """Everything this engine cannot do, one row each: {"what", "why"}. Loss types are
        not gaps of an inference-only engine (its row "training" says why)."""
        from .layers import REGISTRY
        have = set(self.supported_types())
        declared = {g.layer_type for g in self.gaps if g.when is None}   # with their reason
        rows = [{"what": t, "why": f"{self.converter} has no converter for it"}
                for t in sorted(set(REGISTRY) - have - declared)
                if self.train or not REGISTRY[t].is_loss]
        rows += [{"what": g.what, "why": g.reason} for g in self.gaps]
        if not self.train:
            rows.append({"what": "training", "why": self.note or f"{self.name} runs inference only"})
        return rows


# --- the declared gaps, each predicate the exact condition its converter or runner refuses --
def _caffe_rule(name: str) -> Callable:
    """A predicate of converters/caffe.py (imports no engine), so that the gap and the
    converter's refusal are one rule."""
    def when(layer, net) -> bool:
        return getattr(importlib.import_module("zoo.converters.caffe"), name)(layer)
    return when


def _time_major(net) -> bool:
    """Caffe's recurrent layers are time-major: a net with LSTM or Embedding is built so."""
    return any(l.type in ("LSTM", "Embedding") for l in net.layers)


def _caffe_plan_is(rule: str, kind) -> Callable:
    def when(layer, net) -> bool:
        plan = getattr(importlib.import_module("zoo.converters.caffe"), rule)(layer)
        return plan is not None and plan[0] == kind
    return when


def _caffe_plan_none(rule: str) -> Callable:
    return lambda layer, net: getattr(importlib.import_module("zoo.converters.caffe"), rule)(layer) is None


_SEQ = "sequence networks are time-major in Caffe"
CAFFE_FILE_GAPS = (   # what converters/caffe.py refuses: caffe and caffe-opencv share the files
    Gap("Pooling", "Caffe's average pooling always counts the padding (PADDED); the VALID "
        "divisor is not expressible", _caffe_rule("ave_valid_divisor_differs"),
        "AVE with the VALID divisor (padded or CEIL)"),
    Gap("Convolution", "Caffe pads symmetrically only (one pad_h, one pad_w)",
        _caffe_rule("asymmetric_pads"), "with asymmetric pads"),
    Gap("Pooling", "Caffe pads symmetrically only (one pad_h, one pad_w)",
        _caffe_rule("asymmetric_pads"), "with asymmetric pads"),
    Gap("Eltwise", "Caffe's Eltwise has PROD, SUM and MAX of equal shapes only: no DIV, and "
        "broadcasting only as Scale or Bias with a second bottom over leading axes",
        _caffe_plan_none("eltwise_plan"),
        "DIV, or broadcasting other than PROD/plain SUM over leading axes"),
    Gap("Clip", "Caffe has no Clip layer; its ReLU6 clips below at 0 only",
        lambda l, net: l.p.min != 0, "with min != 0"),
    Gap("Scale", "Caffe's Scale blob covers consecutive axes of the input exactly",
        lambda l, net: not _time_major(net) and _caffe_plan_none("learned_axes")(l, net),
        "whose shape has a size-1 axis between sizes"),
    Gap("Bias", "Caffe's Bias blob covers consecutive axes of the input exactly",
        lambda l, net: not _time_major(net) and _caffe_plan_none("learned_axes")(l, net),
        "whose shape has a size-1 axis between sizes"),
    Gap("Reduce", "Caffe's Reduction (SUM, MEAN) reduces every axis from one on; MAX only "
        "over (H, W) as global pooling", _caffe_plan_none("reduce_plan"),
        "MAX not over (H, W), or axes that are not all trailing"),
    Gap("GELU", "Caffe has no GELU layer (nor erf to compose it from)"),
    Gap("LogSoftmax", "Caffe has no LogSoftmax layer (Softmax then Log underflows to -inf "
        "in float32)"),
    Gap("Parameter", "Caffe's Parameter layer has a fixed shape: it has no batch axis to follow"),
    Gap("LayerNorm", "Caffe has no LayerNorm: its MVN adds eps to the standard deviation, "
        "not to the variance"),
    Gap("MatMul", "Caffe has no product of two blobs (batched matrix multiply)"),
    Gap("Flatten", "a sequence blob is time-major in Caffe", lambda l, net: _time_major(net) and len(l.in_shapes[0]) == 3,
        "of a sequence blob"),
    Gap("Reshape", _SEQ, lambda l, net: _time_major(net) and len(l.in_shapes[0]) in (2, 3),
        "of a 2-D or 3-D blob in a sequence network"),
    Gap("EuclideanLoss", _SEQ, lambda l, net: _time_major(net), "in a sequence network"),
    Gap("Eltwise", _SEQ, lambda l, net: _time_major(net) and (_caffe_plan_is("eltwise_plan", "Scale")(l, net)
                                                            or _caffe_plan_is("eltwise_plan", "Bias")(l, net)),
        "broadcasting, in a sequence network"),
) + tuple(Gap(t, _SEQ, lambda l, net: _time_major(net), "in a sequence network")
          for t in ("Scale", "Bias", "Reduce", "Transpose", "Slice", "Squeeze", "Unsqueeze",
                    "Gather"))

_OPENCV = "OpenCV's Caffe importer"

ENGINES: dict[str, Engine] = {e.name: e for e in [
    Engine("onnx", ("onnx", "onnxruntime"), ("onnx", "onnxruntime"), "onnx", train=False,
           converter="zoo.converters.onnx", runner="zoo.runners.onnx",
           note="ONNX Runtime runs inference only: verified forward, not trained",
           dtype_gap="ONNX Runtime's CPU kernels have no double Conv, AveragePool, "
                     "GlobalAveragePool or LRN (onnxruntime 1.x)"),
    Engine("torch", ("torch",), ("torch",), "torch", train=True,
           converter="zoo.converters.torch", runner="zoo.runners.torch",
           dtypes=("float32", "float64")),
    Engine("tensorflow", ("tensorflow-cpu", "tensorflow", "keras"), ("tensorflow", "keras"),
           "tensorflow", train=True,
           converter="zoo.converters.tensorflow", runner="zoo.runners.tensorflow",
           dtypes=("float32", "float64"),
           thread_vars=("TF_NUM_INTRAOP_THREADS",), single_thread_vars=("TF_NUM_INTEROP_THREADS",),
           quiet_env=(("TF_CPP_MIN_LOG_LEVEL", "2"),),
           # TensorFlow's oneDNN kernels: the x86 wheel enables them by default only on CPUs
           # with AVX512_VNNI/BF16 or AMX; elsewhere (this project's AVX2 EPYC) its Eigen
           # kernels ran AlexNet-R's step 2.3x and ResNet-56's 1.5x slower, MaxPoolGrad alone
           # 284 ms of AlexNet-R's 1,424 (README, Latest figures)
           kernel_env=(("TF_ENABLE_ONEDNN_OPTS", "1"),)),
    Engine("mxnet", ("mxnet",), ("mxnet",), "mxnet", train=True,
           converter="zoo.converters.mxnet", runner="zoo.runners.mxnet",
           dtypes=("float32", "float64"),   # float64 LRN is refused by the converter (float32 kernel)
           # OMP_NUM_THREADS sets each operator's threads; the worker pool runs independent
           # operators at once, so more than one worker oversubscribes the cores (ResNet-56's
           # training step on 2 threads: 508 ms with 2 workers, 446 ms with 1)
           single_thread_vars=("MXNET_CPU_WORKER_NTHREADS",)),
    # real BVLC Caffe, built by scripts/build_caffe.sh (no wheel exists)
    Engine("caffe", (), ("caffe",), "caffe", train=True,
           converter="zoo.converters.caffe", runner="zoo.runners.caffe", gaps=CAFFE_FILE_GAPS,
           cpu_only="this Caffe is a CPU-only build (brocolli-caffe, CPU_ONLY)",
           quiet_env=(("GLOG_minloglevel", "2"),),
           dtype_gap="pycaffe is float-only (its Python Net is Net<float>)",
           built="BVLC Caffe 1.0 from brocolli-caffe 9.0.2, CPU_ONLY (scripts/build_caffe.sh)",
           note="pycaffe: BVLC Caffe built from brocolli-caffe 9.0.2 by scripts/build_caffe.sh"),
    # the same Caffe files, read by OpenCV's DNN module: a second, independent reader
    Engine("caffe-opencv", ("opencv-python-headless",), ("cv2",), "caffe", train=False,
           converter="zoo.converters.caffe", runner="zoo.runners.caffe_opencv",
           dtype_gap="OpenCV's DNN module computes in float32 only",
           gaps=CAFFE_FILE_GAPS + (
               Gap("Embedding", f"{_OPENCV} has no layer for Caffe's Embed"),
               Gap("LRN", f"{_OPENCV} ignores lrn_param.k (it always uses 1)",
                   lambda l, net: l.p.k != 1.0, "with k != 1"),
               Gap("Clip", f"{_OPENCV} ignores relu6_param.threshold (it always clips at 6)",
                   lambda l, net: l.p.max != 6.0, "with max != 6"),
               Gap("PReLU", f"{_OPENCV} cannot read the 0-D blob Caffe keeps a shared slope in",
                   lambda l, net: l.p.channel_shared, "channel_shared"),
               Gap("Bias", f"{_OPENCV} has no Bias layer"),
               Gap("Eltwise", f"{_OPENCV} has no Bias layer",
                   _caffe_plan_is("eltwise_plan", "Bias"), "SUM broadcast (Caffe's Bias)"),
               Gap("Reduce", f"{_OPENCV} has no Reduction layer",
                   _caffe_plan_is("reduce_plan", "Reduction"), "other than MEAN/MAX over (H, W)")),
           cpu_only="zoo runs OpenCV's DNN module on the CPU only",
           note="OpenCV's Caffe reader runs inference only: verified forward, not trained"),
]}


def register(engine: Engine) -> Engine:
    """Add an engine declared outside zoo (tests' toy engine). Registering the same
    declaration again is a no-op; another engine under a taken name is refused."""
    have = ENGINES.get(engine.name)
    if have is not None and have != engine:
        raise ValueError(f"engine {engine.name!r} is already declared differently")
    ENGINES[engine.name] = engine
    return engine


def get(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise EngineUnavailable(f"unknown engine {name!r}; engines: {', '.join(ENGINES)}") from None


def parse_list(text: str | None) -> list[Engine]:
    if not text:
        return list(ENGINES.values())
    return [get(n.strip()) for n in text.split(",") if n.strip()]


def _import_extra_engines() -> None:
    """ZOO_EXTRA_ENGINES=mod[,mod]: modules that `register` more engines (see the docstring)."""
    for mod in filter(None, (m.strip() for m in os.environ.get("ZOO_EXTRA_ENGINES", "").split(","))):
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise EngineUnavailable(f"ZOO_EXTRA_ENGINES names {mod!r}, which cannot be imported: {e}") from None


_import_extra_engines()
