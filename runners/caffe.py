"""Caffe (real BVLC Caffe through pycaffe): runs deploy.prototxt + weights.caffemodel of a
build for the forward pass, and Caffe's own SGDSolver (solver.prototxt + train_val.prototxt)
for the training step.

Caffe aborts the process on bad input (glog CHECK): that is this child's crash, reported by
the parent as this engine's failure. Threads: OpenBLAS's variables, set by the parent before
this process started. Only the CPU build exists here (brocolli-caffe, CPU_ONLY).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from .base import Runner as BaseRunner


class CaffeBase(BaseRunner):
    """What the pycaffe and OpenCV backends share: the time-major boundary."""

    def _to_caffe(self, blob: str, a: np.ndarray) -> np.ndarray:
        if blob in self.meta["time_major"]:
            a = np.swapaxes(a, 0, 1)
        return np.ascontiguousarray(a, dtype=np.float32)

    def _from_caffe(self, blob: str, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.swapaxes(a, 0, 1)) if blob in self.meta["time_major"] else a

    def _cont(self, inputs) -> np.ndarray | None:
        if not self.meta.get("cont"):
            return None
        n, t = inputs[self.net.inputs[0].tops[0]].shape[:2]
        cont = np.ones((t, n), np.float32)
        cont[0] = 0.0          # every sequence starts from the zero state at t = 0
        return cont


class Runner(CaffeBase):
    engine = "caffe"
    trains_a_copy = True      # each train_step makes a solver from the build's files

    def load(self) -> None:
        self.gpu_index()       # CPU-only (declared): a GPU request is refused here
        import caffe
        self.caffe = caffe
        caffe.set_mode_cpu()
        self.meta = self.manifest["meta"]
        self.net_ = caffe.Net(str(self.dir / "deploy.prototxt"), str(self.dir / "weights.caffemodel"),
                              caffe.TEST)

    def _feed(self, net, inputs, names):
        for name in names:
            a = self._to_caffe(name, inputs[name])
            net.blobs[name].reshape(*a.shape)
            net.blobs[name].data[...] = a
        cont = self._cont(inputs)
        if cont is not None:
            net.blobs[self.meta["cont"]].reshape(*cont.shape)
            net.blobs[self.meta["cont"]].data[...] = cont
        net.reshape()

    def forward(self, inputs, expose=None):
        self._feed(self.net_, inputs, self.net.data_inputs)
        self.net_.forward()
        return {b: self._from_caffe(b, self.net_.blobs[b].data.copy()) for b in self.outputs_for(expose)}

    def _solver(self, dropout: bool):
        """Caffe's SGDSolver on train_val.prototxt, from the build's weights. Without dropout
        (verify) every Dropout layer's ratio is set to 0 in a temporary copy of the net."""
        from google.protobuf import text_format
        from caffe.proto import caffe_pb2
        netp = caffe_pb2.NetParameter()
        text_format.Parse((self.dir / "train_val.prototxt").read_text(), netp)
        if not dropout:
            for lp in netp.layer:
                if lp.type == "Dropout":
                    lp.dropout_param.dropout_ratio = 0.0
        sp = caffe_pb2.SolverParameter()
        text_format.Parse((self.dir / "solver.prototxt").read_text(), sp)
        tmp = Path(tempfile.mkdtemp(prefix="zoo-caffe-"))
        try:
            (tmp / "train_val.prototxt").write_text(text_format.MessageToString(netp))
            sp.net = str(tmp / "train_val.prototxt")
            (tmp / "solver.prototxt").write_text(text_format.MessageToString(sp))
            solver = self.caffe.SGDSolver(str(tmp / "solver.prototxt"))
        finally:
            shutil.rmtree(tmp)    # Caffe has read both files: nothing is left in /tmp
        solver.net.copy_from(str(self.dir / "weights.caffemodel"))
        return solver

    def train_step(self, inputs, steps=1):
        solver = self._solver(dropout=False)
        net = solver.net
        self._feed(net, inputs, self.net.data_inputs + self.net.labels)
        losses = []
        for _ in range(steps):
            solver.step(1)
            losses.append(float(sum(net.blobs[l].data for l in self.meta["losses"])))
        self._trained = solver           # train_forward continues from these weights
        from zoo.converters.caffe import from_caffe
        weights = {k: from_caffe(t, net.params[layer][i].data.copy())
                   for k, (layer, i, t) in self.meta["names"].items()}
        return losses, weights

    def train_forward(self, inputs, expose):
        # the TRAIN phase (BatchNorm on the batch), at the weights the last train_step left
        net = (self._trained if self._trained is not None else self._solver(dropout=False)).net
        self._feed(net, inputs, self.net.data_inputs + self.net.labels)
        net.forward()
        return {b: self._from_caffe(b, net.blobs[b].data.copy()) for b in expose}

    def make_iteration(self, inputs, mode):
        if mode == "infer":
            self._feed(self.net_, inputs, self.net.data_inputs)
            return self.net_.forward
        solver = self._solver(dropout=True)
        self._feed(solver.net, inputs, self.net.data_inputs + self.net.labels)
        return lambda: solver.step(1)

    def layer_times(self, inputs, mode):
        """`caffe time` style: each layer's forward and backward, timed one by one (the
        median of LAYER_REPS runs after one untimed, as every runner's profile)."""
        from .base import by_spec_layer, time_call
        net = self.net_ if mode == "infer" else self._solver(dropout=True).net
        names = self.net.data_inputs + ([] if mode == "infer" else self.net.labels)
        self._feed(net, inputs, names)
        net.forward()
        if mode == "train":
            net.backward()
        out = []
        for i, name in enumerate(net._layer_names):
            f = time_call(lambda i=i: net._forward(i, i))
            b = time_call(lambda i=i: net._backward(i, i)) if mode == "train" else 0.0
            out.append({"layer": name, "forward_s": f, "backward_s": b})
        # Caffe's own Split layers go to the layer whose blob they split
        return by_spec_layer(out, [l.name for l in self.net.layers])

    def versions(self):
        from zoo import engines         # the version is declared once, with the engine
        return engines.get("caffe").versions()
