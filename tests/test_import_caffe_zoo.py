"""`zoo import` of the classic Caffe zoo's own prototxts (tests/data/caffe_zoo/README.md names
each file's source, commit and licence): every one imports, its parameter count is the
published one, its spec validates as written; the small ones count the same parameters as
real Caffe; three (SqueezeNet 1.1, MobileNet v1 and v2) compute what real Caffe computes and
verify forward on caffe, torch and onnx at batch 1. No .caffemodel can be downloaded here:
pycaffe makes seeded random ones.

Published counts: AlexNet and CaffeNet 60,965,224; VGG-16 138,357,544 (arXiv:1409.1556's
138 M). GoogLeNet's train_val has 13,378,280: 6,998,552 in the deploy network (BVLC's
deploy.prototxt) plus 3,188,840 and 3,190,888 in the two auxiliary heads (their 1x1 conv, 1024
fc and 1000 classifier, kept with loss_weight 0.3). ResNet-50: 25,557,096 = torchvision's
25,557,032 plus the 64 biases of He et al.'s conv1, which has one. MobileNet v1 4,231,976,
v2 3,505,960, SqueezeNet 1.1 1,235,496: counted by real Caffe in a test below.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import zoo
from conftest import require_engine
from zoo import reference
from zoo import spec as S
from zoo import weights as W
from zoo.importers import import_model
from zoo.importers.caffe import translate
from zoo.importers.common import check_net

ZOO = Path(__file__).parent / "data" / "caffe_zoo"

# file -> (parameters, data input shape, output shapes, losses with their weights)
MODELS = {
    "bvlc_alexnet_train_val.prototxt": (60_965_224, (50, 3, 227, 227), [(50, 1000)], [1.0]),
    "bvlc_reference_caffenet_train_val.prototxt": (60_965_224, (50, 3, 227, 227), [(50, 1000)], [1.0]),
    "bvlc_googlenet_train_val.prototxt": (13_378_280, (50, 3, 224, 224), [(50, 1000)] * 3, [0.3, 0.3, 1.0]),
    "VGG_ILSVRC_16_layers_deploy.prototxt": (138_357_544, (10, 3, 224, 224), [(10, 1000)], []),
    "ResNet-50-deploy.prototxt": (25_557_096, (1, 3, 224, 224), [(1, 1000)], []),
    "squeezenet_v1.1_deploy.prototxt": (1_235_496, (10, 3, 227, 227), [(10, 1000, 1, 1)], []),
    "mobilenet_deploy.prototxt": (4_231_976, (1, 3, 224, 224), [(1, 1000, 1, 1)], []),
    "mobilenet_v2_deploy.prototxt": (3_505_960, (1, 3, 224, 224), [(1, 1000, 1, 1)], []),
}
SMALL = ["squeezenet_v1.1_deploy.prototxt", "mobilenet_deploy.prototxt", "mobilenet_v2_deploy.prototxt",
         "ResNet-50-deploy.prototxt"]


@pytest.mark.parametrize("fname", list(MODELS))
def test_zoo_prototxt_imports_with_its_published_counts(fname):
    params, data_shape, outputs, losses = MODELS[fname]
    b = translate(ZOO / fname)                    # the whole import, nothing written
    net = check_net(b.spec, ZOO / fname)
    assert net.params == params
    assert [net.shapes[x] for x in net.data_inputs] == [data_shape]
    assert [net.shapes[o] for o in net.outputs][-len(outputs):] == outputs
    assert [round(float(l.p.loss_weight), 6) for l in net.loss_layers] == losses
    again = zoo.from_text(S.to_prototxt(b.spec), file=fname)      # the spec as written validates
    assert again.params == params and again.structure() == net.structure()


def test_train_val_data_and_accuracy_layers_are_stated():
    b = translate(ZOO / "bvlc_googlenet_train_val.prototxt")
    net = check_net(b.spec, "googlenet")
    assert net.labels == ["label"] and net.shapes["label"] == (50,)
    assert net.layer("label").p.dtype == 1               # INT64 class ids
    notes = " ".join(b.notes)
    assert "Input 'data' of shape [50, 3, 224, 224]" in notes and "3 channels (one mean_value each)" in notes
    assert "dropped 6 layer(s)" in notes and "loss3/top-5 (Accuracy)" in notes
    alex = " ".join(translate(ZOO / "bvlc_alexnet_train_val.prototxt").notes)
    assert "3 channels assumed" in alex                   # mean_file: the database holds them


def _pycaffe(script: str, *args) -> dict:
    """Run SCRIPT with real pycaffe in a child (its protobuf stays out of this process)."""
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


COUNT = """
import json, sys, caffe
caffe.set_mode_cpu()
counts = {}
for path in sys.argv[1:]:
    net = caffe.Net(path, caffe.TEST)
    counts[path] = sum(b.data.size for name, layer in zip(net._layer_names, net.layers)
                       if layer.type != "BatchNorm" for b in layer.blobs)   # BatchNorm's are statistics
print(json.dumps(counts))
"""


def test_small_models_count_what_real_caffe_counts():
    require_engine("caffe")
    counts = _pycaffe(COUNT, *(ZOO / f for f in SMALL))
    assert {Path(p).name: n for p, n in counts.items()} == {f: MODELS[f][0] for f in SMALL}


# A seeded random .caffemodel for a deploy prototxt, saved by pycaffe itself, and real Caffe's
# output and logits for a seeded input at batch 1. Weights are He-scaled, and each BatchNorm's
# statistics are those of its input on that batch (set layer by layer as the forward pass
# reaches it), so that deep nets stay O(1) rather than saturating the softmax; they are
# stored times a scale factor of 0.5, which Caffe divides out.
RANDOM_MODEL = """
import json, sys, numpy as np, caffe
caffe.set_mode_cpu()
proto, model, x_path, y_path = sys.argv[1:5]
net = caffe.Net(proto, caffe.TEST)
rng = np.random.default_rng(0)
names = list(net._layer_names)
for name, layer in zip(names, net.layers):
    blobs = layer.blobs
    if layer.type == "Scale":
        blobs[0].data[...] = rng.uniform(0.5, 1.5, blobs[0].data.shape)
        blobs[1].data[...] = rng.uniform(-0.1, 0.1, blobs[1].data.shape)
    elif len(blobs) and layer.type != "BatchNorm":
        w = blobs[0].data
        w[...] = rng.standard_normal(w.shape) * np.sqrt(2.0 / (w.size // w.shape[0]))
        if len(blobs) > 1:
            blobs[1].data[...] = rng.uniform(-0.1, 0.1, blobs[1].data.shape)
data = net.inputs[0]
shape = (1,) + net.blobs[data].data.shape[1:]
x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
net.blobs[data].reshape(*shape)
net.reshape()
net.blobs[data].data[...] = x
todo = 0                                  # the first layer not run yet
for i, (name, layer) in enumerate(zip(names, net.layers)):
    if layer.type != "BatchNorm":
        continue
    if todo < i:
        net.forward(start=names[todo], end=names[i - 1])
    todo = i
    v = net.blobs[net.bottom_names[name][0]].data
    layer.blobs[0].data[...] = 0.5 * v.mean(axis=(0, 2, 3))
    layer.blobs[1].data[...] = 0.5 * v.var(axis=(0, 2, 3))
    layer.blobs[2].data[...] = 0.5
net.save(model)
out = net.forward()
np.save(x_path, x)
logits = net.bottom_names[names[-1]][0]      # what the final Softmax reads
np.savez(y_path, output=out[net.outputs[-1]], logits=net.blobs[logits].data)
print(json.dumps({"data": data, "output": net.outputs[-1], "logits": logits}))
"""


@pytest.mark.parametrize("fname", ["squeezenet_v1.1_deploy.prototxt", "mobilenet_deploy.prototxt",
                                   "mobilenet_v2_deploy.prototxt"])
def test_forward_matches_real_caffe_and_verifies(fname, tmp_path):
    """The imported spec computes what real Caffe computes from the original prototxt and
    .caffemodel (float64 reference vs pycaffe: the logits, since random weights may saturate
    the softmax, and the output), and verifies on caffe, torch and onnx."""
    require_engine("caffe")
    model, x_path, y_path = tmp_path / "w.caffemodel", tmp_path / "x.npy", tmp_path / "y.npz"
    _pycaffe(RANDOM_MODEL, ZOO / fname, model, x_path, y_path)
    spec = import_model(ZOO / fname, tmp_path / "imp", weights=model)
    net = zoo.load(spec).with_batch(1)
    y = reference.forward(net, W.for_net(zoo.load(spec)), {net.data_inputs[0]: np.load(x_path)})
    caffe_y = np.load(y_path)
    out = net.outputs[-1]
    logits = y[net.producer(out).bottoms[0]]
    assert logits.shape == caffe_y["logits"].shape and y[out].shape == caffe_y["output"].shape
    assert np.abs(logits - caffe_y["logits"]).max() <= 1e-4 * np.abs(caffe_y["logits"]).max()   # float32 Caffe
    np.testing.assert_allclose(y[out], caffe_y["output"], rtol=1e-3, atol=1e-6)
    results = zoo.verify([str(spec)], ["caffe", "torch", "onnx"], mode="forward", batch=1)
    assert [(r.engine, r.status) for r in results] == [("caffe", "pass"), ("torch", "pass"), ("onnx", "pass")], \
        [(r.engine, r.status, r.reason) for r in results]


AUX_TRAIN_VAL = """
name: "aux"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { crop_size: 8 } data_param { source: "train_lmdb" batch_size: 64 } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { crop_size: 8 mean_value: 104 mean_value: 117 mean_value: 123 }
        data_param { source: "val_lmdb" batch_size: 4 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "aux_fc" type: "InnerProduct" bottom: "conv" top: "aux_fc" inner_product_param { num_output: 5 } }
layer { name: "aux_loss" type: "SoftmaxWithLoss" bottom: "aux_fc" bottom: "label" top: "aux_loss" loss_weight: 0.3 }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
layer { name: "top1" type: "Accuracy" bottom: "fc" bottom: "label" top: "top1" include { phase: TEST } }
"""


def test_train_val_with_an_auxiliary_head_trains(tmp_path):
    """GoogLeNet's form, small: a TEST data layer, an auxiliary loss with loss_weight 0.3, an
    Accuracy. The import trains on torch like any zoo spec (both losses and every update)."""
    require_engine("torch")
    (tmp_path / "train_val.prototxt").write_text(AUX_TRAIN_VAL)
    spec = import_model(tmp_path / "train_val.prototxt", tmp_path / "imp")
    net = zoo.load(spec)
    assert [(l.name, float(l.p.loss_weight)) for l in net.loss_layers] == [("aux_loss", pytest.approx(0.3)),
                                                                            ("loss", 1.0)]
    assert net.shapes["data"] == (4, 3, 8, 8) and net.labels == ["label"]
    assert any("top1 (Accuracy)" in n for n in spec.notes)
    results = zoo.verify([str(spec)], ["torch"], mode="train", batch=2)
    assert [(r.engine, r.status) for r in results] == [("torch", "pass")], [r.reason for r in results]


def test_data_layer_without_a_size_is_refused(tmp_path):
    """A Data layer without crop_size: the image size is only in the database."""
    from zoo.errors import ImportRefused
    p = tmp_path / "m.prototxt"
    p.write_text('layer { name: "data" type: "Data" top: "data" data_param { batch_size: 2 } }\n'
                 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                 'inner_product_param { num_output: 2 } }\n')
    with pytest.raises(ImportRefused, match="no crop_size: the image size is only in the database"):
        import_model(p, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_coverage_table_lists_every_layer_of_the_caffe_zoo():
    """scripts/coverage.py's Caffe table comes from the importer's registry and names every
    layer type these prototxts use (data layers and Accuracy included)."""
    import importlib.util
    from google.protobuf import text_format

    from zoo.converters import caffe_pb2
    from zoo.importers.caffe import coverage
    used = set()
    for f in MODELS:
        net = text_format.Parse((ZOO / f).read_text(), caffe_pb2.NetParameter())
        used |= {l.type for l in net.layer} | {caffe_pb2.V1LayerParameter.LayerType.Name(l.type) for l in net.layers}
    table = coverage()
    v1 = {r["v1"] for r in table.values()}
    assert {t for t in used if t not in table and t not in v1} == set()
    spec = importlib.util.spec_from_file_location("coverage_script", Path(__file__).parent.parent / "scripts" / "coverage.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    text = script.block()
    assert text.startswith(script.START) and text.rstrip().endswith(script.END)
    assert "| Scale | - | BatchNorm scale and shift (after a BatchNorm) |" in text
    from zoo.importers.onnx import coverage as onnx_coverage
    for op, r in onnx_coverage().items():
        assert f"| {op} | {r['opsets'][0]}-{r['opsets'][1]} |" in text, op
