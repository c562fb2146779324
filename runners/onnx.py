"""ONNX Runtime: runs the model.onnx of a build (inference only)."""

from __future__ import annotations


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
        return so

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

    def device_name(self) -> str:
        return self.providers[0] if isinstance(self.providers[0], str) else self.providers[0][0]

    def versions(self):
        import onnx
        return {"onnx": onnx.__version__, "onnxruntime": self.ort.__version__}
