"""The toy engine's runner: zoo's float64 NumPy reference on the build's spec and weights,
its outputs handed back in float32 as an engine's would be."""

from __future__ import annotations

import numpy as np

from zoo import reference
from zoo import weights as W
from zoo.runners.base import Runner as BaseRunner


class Runner(BaseRunner):
    engine = "numpy"

    def load(self) -> None:
        self.gpu_index()       # CPU-only (declared): a GPU request is refused here
        self.weights = W.load(self.dir / "weights.npz", self.net)

    def forward(self, inputs, expose=None):
        batch = inputs[self.net.data_inputs[0]].shape[0]
        blobs = reference.forward(self.net.with_batch(batch), self.weights, inputs, with_loss=False)
        return {b: blobs[b].astype(np.float32) for b in self.outputs_for(expose)}

    def make_iteration(self, inputs, mode):
        if mode != "infer":
            raise NotImplementedError("the toy engine runs inference only")
        return lambda: self.forward(inputs)

    def versions(self):
        return {"numpy": np.__version__}
