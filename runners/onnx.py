"""ONNX Runtime: runs the model.onnx of a build (inference only).

Runner options {"optimize": True} (zoo bench --optimize): the session's fastest standard
settings stated explicitly: every graph optimisation (ORT_ENABLE_ALL, which is also ORT's
own default level, so the default configuration has it already), sequential execution with
intra-op threads = the point's thread count and inter-op 1, the memory-pattern planner and
the CPU arena on, and intra-op threads spinning while they wait for work.

Per-layer times (`layer_times`): ONNX Runtime's own profiler (SessionOptions
enable_profiling) on the session as timed; its JSON trace has one "Node" event per kernel
run, named after the node, and zoo names every node after its spec layer ("LAYER" or
"LAYER/part", converters/onnx.py), so each maps back; a node ORT fused keeps the name of
the node it was fused into, so a fused layer's time shows under that layer.
"""

from __future__ import annotations

import json
import os

import numpy as np


from .base import Runner as BaseRunner


class Runner(BaseRunner):
    engine = "onnx"

    def load(self) -> None:
        import onnx
        import onnxruntime as ort

        self.ort = ort
        self.model = onnx.load_model(str(self.dir / "model.onnx"), load_external_data=False)
        index = self.gpu_index()
        self.providers = (["CPUExecutionProvider"] if index is None else
                          [("CUDAExecutionProvider", {"device_id": index})])
        self.sessions = {}

    def cuda_missing(self):
        if "CUDAExecutionProvider" not in self.ort.get_available_providers():
            return "this onnxruntime has no CUDA execution provider (install onnxruntime-gpu)"
        return None

    def _options(self, intermediates: bool = False):
        """intermediates: blobs inside the graph are outputs too; then ORT's graph
        optimisations are off, so that no exposed blob is one ORT fused away (Conv +
        BatchNorm, Conv + Add, ...): each is what its own node computes (zoo verify --layers
        and the first-bad-layer search compare them one by one)."""
        so = self.ort.SessionOptions()
        if intermediates:
            so.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        if self.optimize and not intermediates:
            self._optimize(so)
        return so

    def _optimize(self, so) -> None:
        ort = self.ort
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.enable_mem_pattern = True
        so.enable_cpu_mem_arena = True
        so.add_session_config_entry("session.intra_op.allow_spinning", "1")

    def optimizations(self, mode):
        return ["ORT_ENABLE_ALL graph optimisations (ORT's default level too)",
                f"sequential execution, intra-op threads {self.threads or 'ORT default'}, inter-op 1",
                "memory pattern + CPU arena, spinning intra-op threads"]

    def _session(self, outputs: tuple[str, ...]):
        """A session whose graph outputs are `outputs` (intermediate blobs included)."""
        if outputs not in self.sessions:
            from onnx import helper
            model = self.model
            have = {o.name for o in model.graph.output}
            extra = [o for o in outputs if o not in have]
            if extra:
                import copy
                model = copy.deepcopy(model)
                for name in extra:
                    model.graph.output.append(helper.make_empty_tensor_value_info(name))
            self.sessions[outputs] = self.ort.InferenceSession(
                model.SerializeToString(), sess_options=self._options(bool(extra)),
                providers=self.providers)
        return self.sessions[outputs]

    def _feeds(self, inputs):
        names = {i.name for i in self._session(tuple(self.net.outputs)).get_inputs()}
        return {k: v for k, v in inputs.items() if k in names}

    def forward(self, inputs, expose=None):
        outs = tuple(self.outputs_for(expose))
        sess = self._session(outs)
        values = sess.run(list(outs), self._feeds(inputs))
        return dict(zip(outs, values))

    def make_iteration(self, inputs, mode):
        if mode != "infer":
            raise NotImplementedError("ONNX Runtime runs inference only")
        outs = list(self.net.outputs)
        sess, feeds = self._session(tuple(outs)), self._feeds(inputs)
        return lambda: sess.run(outs, feeds)   # run() returns host arrays: synchronised

    def layer_times(self, inputs, mode):
        """ORT's profiler on a session made as the timed one (the module's docstring)."""
        import tempfile
        from .base import LAYER_REPS, by_spec_layer
        outs = list(self.net.outputs)
        so = self._options()
        so.enable_profiling = True
        tmp = tempfile.mkdtemp(prefix="zoo-ort-profile-")
        so.profile_file_prefix = os.path.join(tmp, "profile")
        sess = self.ort.InferenceSession(self.model.SerializeToString(), sess_options=so,
                                         providers=self.providers)
        feeds = self._feeds(inputs)
        sess.run(outs, feeds)                  # warm-up: its events are dropped below
        for _ in range(LAYER_REPS):
            sess.run(outs, feeds)
        path = sess.end_profiling()
        try:
            events = json.loads(open(path).read())
        finally:
            os.remove(path)
            os.rmdir(tmp)
        return by_spec_layer(_node_times(events, LAYER_REPS),
                             [l.name for l in self.net.layers])

    def device_name(self) -> str:
        return self.providers[0] if isinstance(self.providers[0], str) else self.providers[0][0]

    def versions(self):
        import onnx
        return {"onnx": onnx.__version__, "onnxruntime": self.ort.__version__}


def _node_times(events: list[dict], reps: int) -> list[dict]:
    """Per node, the median of its last `reps` kernel runs (the first run is the warm-up),
    in seconds, in the order the nodes first ran."""
    runs: dict[str, list[float]] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            runs.setdefault(name[: -len("_kernel_time")], []).append(float(e["dur"]) * 1e-6)
    return [{"layer": node, "forward_s": float(np.median(d[-reps:])), "backward_s": 0.0}
            for node, d in runs.items()]
