"""The Caffe files of a build read by a second, independent reader: OpenCV's DNN module
(cv2.dnn.readNetFromCaffe). Forward only. It proves that zoo's deploy.prototxt and
.caffemodel are real Caffe files, independent of the library that wrote them."""

from __future__ import annotations

import numpy as np

from .caffe import CaffeBase


class Runner(CaffeBase):
    """What OpenCV cannot read (Embed, LRN's k) is declared in zoo/engines.py: the base
    class refuses such a network before OpenCV is imported."""
    engine = "caffe-opencv"

    def load(self) -> None:
        self.gpu_index()       # CPU-only (declared): a GPU request is refused here
        import cv2
        self.cv2 = cv2
        if self.threads:
            cv2.setNumThreads(int(self.threads))
        self.meta = self.manifest["meta"]
        self.dnn = cv2.dnn.readNetFromCaffe(str(self.dir / "deploy.prototxt"),
                                            str(self.dir / "weights.caffemodel"))
        self.dnn.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.dnn.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def forward(self, inputs, expose=None):
        for name in self.net.data_inputs:
            self.dnn.setInput(self._to_caffe(name, inputs[name]), name)
        cont = self._cont(inputs)
        if cont is not None:
            self.dnn.setInput(cont, self.meta["cont"])
        blobs = self.outputs_for(expose)
        self._fuse(all(b in self.net.outputs for b in blobs))
        outs = self.dnn.forward(self._layers_of(blobs))
        return {b: self._from_caffe(b, o) for b, o in zip(blobs, outs)}

    def _layers_of(self, blobs: list[str]) -> list[str]:
        """OpenCV's forward(names) looks up layer names: the Caffe layer producing each blob
        (the converter records it; a blob and its layer may be named differently)."""
        return [self.meta["blob_layers"][b] for b in blobs]

    def _fuse(self, on: bool) -> None:
        """OpenCV folds Convolution + BatchNorm (+ Scale + ReLU) into one layer: a fused
        layer's blob is no longer its own layer's output. Fusion stays on for the network's
        outputs (what OpenCV really computes) and is off while intermediate blobs are read,
        so that each is what its layer computes."""
        if getattr(self, "_fusion", None) != on:
            self.dnn.enableFusion(on)
            self._fusion = on

    def make_iteration(self, inputs, mode):
        if mode != "infer":
            raise NotImplementedError("OpenCV's DNN module runs inference only")
        self._fuse(True)
        for name in self.net.data_inputs:
            self.dnn.setInput(self._to_caffe(name, inputs[name]), name)
        outs = self._layers_of(list(self.net.outputs))
        return lambda: self.dnn.forward(outs)

    def layer_times(self, inputs, mode):
        """OpenCV's own per-layer timings of a forward (Net.getPerfProfile: ticks per layer
        id, ids in getLayerNames' order after the input at id 0), with fusion on as timed: a
        layer fused into another shows 0 and its time is in that one. Of LAYER_REPS
        forwards after a warm-up (the median per layer)."""
        from .base import LAYER_REPS, by_spec_layer
        step = self.make_iteration(inputs, mode)
        step()
        names = list(self.dnn.getLayerNames())
        runs = []
        for _ in range(LAYER_REPS):
            step()
            _, ticks = self.dnn.getPerfProfile()
            ticks = np.asarray(ticks, dtype=np.float64).reshape(-1)
            if len(ticks) != len(names):
                return None      # not the layout documented: no guessing
            runs.append(ticks)
        seconds = np.median(runs, axis=0) / self.cv2.getTickFrequency()
        rows = [{"layer": n, "forward_s": float(t), "backward_s": 0.0} for n, t in zip(names, seconds)]
        return by_spec_layer(rows, [l.name for l in self.net.layers])

    def versions(self):
        return {"opencv": self.cv2.__version__}
