"""The Caffe files of a build read by a second, independent reader: OpenCV's DNN module
(cv2.dnn.readNetFromCaffe). Forward only. It proves that zoo's deploy.prototxt and
.caffemodel are real Caffe files, independent of the library that wrote them."""

from __future__ import annotations

from .caffe import CaffeBase


# spec layer types whose Caffe layer OpenCV 4.11's readNetFromCaffe cannot create
NOT_IN_OPENCV_NAMES = {"Embedding": "Embed"}
NOT_IN_OPENCV = set(NOT_IN_OPENCV_NAMES)


class Runner(CaffeBase):
    engine = "caffe-opencv"

    def load(self) -> None:
        if self.device.startswith("gpu"):
            from zoo.errors import EngineUnavailable
            raise EngineUnavailable("zoo runs OpenCV's DNN module on the CPU only")
        missing = sorted({l.type for l in self.net.deploy_layers} & NOT_IN_OPENCV)
        if missing:
            from zoo.converters.registry import Unsupported
            raise Unsupported(f"OpenCV's Caffe importer has no layer for {', '.join(missing)} "
                              f"(Caffe's {', '.join(NOT_IN_OPENCV_NAMES[t] for t in missing)})")
        for l in self.net.deploy_layers:
            if l.type == "LRN" and l.p.k != 1.0:
                from zoo.converters.registry import Unsupported
                raise Unsupported(f"OpenCV's Caffe importer ignores lrn_param.k (it always uses 1); "
                                  f"layer {l.name!r} has k = {l.p.k:g}")
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
        outs = self.dnn.forward(blobs)
        return {b: self._from_caffe(b, o) for b, o in zip(blobs, outs)}

    def make_iteration(self, inputs, mode):
        if mode != "infer":
            raise NotImplementedError("OpenCV's DNN module runs inference only")
        for name in self.net.data_inputs:
            self.dnn.setInput(self._to_caffe(name, inputs[name]), name)
        outs = list(self.net.outputs)
        return lambda: self.dnn.forward(outs)

    def versions(self):
        return {"opencv": self.cv2.__version__}
