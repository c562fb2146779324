"""The engine registry: one line per engine.

An engine is a converter module (zoo.converters.NAME: spec + weights -> native files) and a
runner module (zoo.runners.NAME: native files + inputs -> outputs, a training step, timings),
both run in a child process (zoo/child.py). Nothing here imports an engine: presence and
versions come from package metadata, so `zoo engines` and `zoo list` stay fast.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass

from .errors import EngineUnavailable


@dataclass(frozen=True)
class Engine:
    name: str
    packages: tuple[str, ...]   # distributions whose versions are recorded; the first must exist
    imports: tuple[str, ...]    # modules that must be importable
    extra: str                  # `pip install 'zoo[EXTRA]'`
    train: bool                 # has a training step (else forward only, said in verify)
    note: str = ""
    converter: str = ""         # converter module name, when shared with another engine
    thread_vars: tuple[str, ...] = ()          # the engine's own thread-count variables
    single_thread_vars: tuple[str, ...] = ()   # pools zoo pins to one thread
    quiet_env: tuple[tuple[str, str], ...] = ()   # log-level variables

    @property
    def converter_name(self) -> str:
        return self.converter or self.name

    @property
    def converter_module(self) -> str:
        return f"zoo.converters.{self.converter_name}"

    @property
    def runner_module(self) -> str:
        return f"zoo.runners.{self.name.replace('-', '_')}"

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
        out = {}
        for dist in self.packages:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
        return out

    @property
    def version(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.versions().items()) or "-"

    def environment(self, threads: int | None, device: str) -> dict[str, str]:
        """Variables set in this engine's child before it starts (so they are in force before
        the engine is imported): its thread pools, which GPUs exist (none for cpu runs), and
        its log levels."""
        env = {"PYTHONUNBUFFERED": "1"}
        if threads:
            t = str(threads)
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS") + self.thread_vars:
                env[var] = t
            env.update({v: "1" for v in self.single_thread_vars})
        if device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        env.update(dict(self.quiet_env))
        return env

    def supported_types(self) -> list[str]:
        """Layer types the converter handles (from its registry; imports no engine)."""
        return sorted(importlib.import_module(self.converter_module).CONVERTERS.types())


ENGINES: dict[str, Engine] = {e.name: e for e in [
    Engine("onnx", ("onnx", "onnxruntime"), ("onnx", "onnxruntime"), "onnx", train=False,
           note="ONNX Runtime runs inference only: verified forward, not trained"),
    Engine("torch", ("torch",), ("torch",), "torch", train=True),
    Engine("tensorflow", ("tensorflow-cpu", "tensorflow", "keras"), ("tensorflow", "keras"),
           "tensorflow", train=True, thread_vars=("TF_NUM_INTRAOP_THREADS",),
           single_thread_vars=("TF_NUM_INTEROP_THREADS",), quiet_env=(("TF_CPP_MIN_LOG_LEVEL", "2"),)),
    Engine("mxnet", ("mxnet",), ("mxnet",), "mxnet", train=True,
           thread_vars=("MXNET_CPU_WORKER_NTHREADS",)),
    # real BVLC Caffe, built by scripts/build_caffe.sh (no wheel exists)
    Engine("caffe", (), ("caffe",), "caffe", train=True, quiet_env=(("GLOG_minloglevel", "2"),),
           note="pycaffe: BVLC Caffe built from brocolli-caffe 9.0.2 by scripts/build_caffe.sh"),
    # the same Caffe files, read by OpenCV's DNN module: a second, independent reader
    Engine("caffe-opencv", ("opencv-python-headless",), ("cv2",), "caffe", train=False,
           note="OpenCV's Caffe reader runs inference only: verified forward, not trained",
           converter="caffe"),
]}


def get(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise EngineUnavailable(f"unknown engine {name!r}; engines: {', '.join(ENGINES)}") from None


def parse_list(text: str | None) -> list[Engine]:
    if not text:
        return list(ENGINES.values())
    return [get(n.strip()) for n in text.split(",") if n.strip()]
