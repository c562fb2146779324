"""The built files load in plain engine scripts (no zoo import), as the README shows, and
give the reference's outputs."""

import subprocess
import sys

import numpy as np
import pytest

import zoo
from conftest import require_engine

SCRIPTS = {
    "torch": """
import importlib.util, numpy as np, torch
spec = importlib.util.spec_from_file_location("model", "{d}/model.py")
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
net = m.load()
y = net(torch.from_numpy(np.load("{x}"))).detach().numpy()
""",
    "mxnet": """
import numpy as np; np.bool = bool
import mxnet as mx
net = mx.gluon.SymbolBlock.imports("{d}/alexnet_r-symbol.json", ["data"], "{d}/alexnet_r-0000.params")
y = net(mx.nd.array(np.load("{x}"))).asnumpy()
""",
    "caffe": """
import caffe, numpy as np
x = np.load("{x}")
net = caffe.Net("{d}/deploy.prototxt", "{d}/weights.caffemodel", caffe.TEST)
net.blobs["data"].reshape(*x.shape); net.blobs["data"].data[...] = x; net.forward()
y = net.blobs["fc"].data.copy()
""",
    "caffe-opencv": """
import cv2, numpy as np
net = cv2.dnn.readNetFromCaffe("{d}/deploy.prototxt", "{d}/weights.caffemodel")
net.setInput(np.load("{x}")); y = net.forward()
""",
    "onnx": """
import numpy as np, onnxruntime as ort
y = ort.InferenceSession("{d}/model.onnx").run(None, {{"data": np.load("{x}")}})[0]
""",
}


@pytest.mark.parametrize("engine", list(SCRIPTS))
def test_plain_script_reproduces_the_reference(engine, tmp_path):
    require_engine(engine)
    d = tmp_path / "d"
    zoo.build("alexnet-r", engine, out=d)
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = SCRIPTS[engine].format(d=d, x=tmp_path / "x.npy") + f"\nnp.save('{tmp_path}/y.npy', y)\n"
    assert "import zoo" not in script
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    net = zoo.load("alexnet-r")
    ref = zoo.reference.forward(net.with_batch(3), zoo.weights.make(net), {"data": x})["fc"]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, rtol=1e-4, atol=1e-5)
