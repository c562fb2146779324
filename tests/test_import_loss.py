"""`zoo import --loss softmax` (zoo.importers.common.add_loss): an imported model without a loss
gets a SoftmaxWithLoss on its last output's logits and an INT64 label input, stated in a comment
at the top of the spec and in the notes, so that it trains in every training engine."""

import numpy as np
import pytest

import zoo
from conftest import require_engine
from zoo.errors import ImportRefused, UsageError
from zoo.importers import import_model

TRAINING_ENGINES = ["torch", "tensorflow", "mxnet"]


def _exported_cnn(path, batch=2):
    """torch.onnx.export of a small CNN ending in a Softmax, in eval mode: the exporter folds
    each BatchNorm into the convolution before it, so the ONNX file has neither a loss nor a
    BatchNorm."""
    import torch
    from torch import nn
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5), nn.Softmax(dim=1)).eval()
    m[1].running_mean.uniform_(-0.1, 0.1)
    m[1].running_var.uniform_(0.5, 1.5)
    torch.onnx.export(m, (torch.zeros(batch, 3, 8, 8),), str(path), dynamo=False, input_names=["data"],
                      opset_version=17)
    return path


def test_onnx_import_without_a_loss_trains_with_loss_softmax(tmp_path):
    require_engine("torch")
    model = _exported_cnn(tmp_path / "cnn.onnx")
    plain = import_model(model, tmp_path / "plain", batch=2)
    skipped = zoo.verify([str(plain)], ["torch"], mode="train", batch=2)
    assert [r.status for r in skipped] == ["skipped"]            # no loss: nothing to train

    spec = import_model(model, tmp_path / "imp", batch=2, loss="softmax")
    net = zoo.load(spec)
    (loss,) = net.loss_layers
    softmax = net.producer(net.outputs[-1])
    assert softmax.type == "Softmax" and loss.bottoms[0] == softmax.bottoms[0]   # the logits, not probabilities
    assert net.labels == [loss.bottoms[1]] and net.shapes[loss.bottoms[1]] == (2,)
    assert net.layer(loss.bottoms[1]).p.dtype == 1                                # INT64 class ids
    assert "BatchNorm" not in {l.type for l in net.layers}                        # fused by the exporter ...
    text = spec.spec.read_text()
    assert text.startswith("# --loss softmax: added by zoo import: layer 'loss' (SoftmaxWithLoss)")
    assert "# any BatchNorm the exporter fused into a convolution stays fused" in text   # ... and says so
    assert any("added by zoo import" in n for n in spec.notes)

    results = zoo.verify([str(spec)], TRAINING_ENGINES, mode="train", batch=2)
    assert [(r.engine, r.status) for r in results] == [(e, "pass") for e in TRAINING_ENGINES], \
        [(r.engine, r.status, r.reason) for r in results if r.status != "pass"]


CLASSIFIER_1X1 = """
name: "conv_classifier"
input: "data" input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 6 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "cls" type: "Convolution" bottom: "conv" top: "cls" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "pool" type: "Pooling" bottom: "cls" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "prob" type: "Softmax" bottom: "pool" top: "prob" }
"""


def test_caffe_softmax_over_channels_gets_flattened_logits(tmp_path):
    """SqueezeNet's and MobileNet-Caffe's form: a 1x1-convolution classifier, global pooling to
    (N, K, 1, 1) and a Softmax over the channels; the loss reads the pooled logits, flattened."""
    require_engine("torch")
    (tmp_path / "deploy.prototxt").write_text(CLASSIFIER_1X1)
    spec = import_model(tmp_path / "deploy.prototxt", tmp_path / "imp", loss="softmax")
    net = zoo.load(spec)
    (loss,) = net.loss_layers
    flat = net.producer(loss.bottoms[0])
    assert flat.type == "Flatten" and flat.bottoms == ["pool"] and net.shapes[flat.tops[0]] == (2, 4)
    assert net.outputs == ["prob"] and net.producer("prob").bottoms == [flat.tops[0]]   # one output, (N, K)
    assert net.shapes["prob"] == (2, 4) and "flattened from (2, 4, 1, 1) to (2, 4)" in spec.spec.read_text()
    results = zoo.verify([str(spec)], ["torch"], mode="train", batch=2)
    assert [(r.engine, r.status) for r in results] == [("torch", "pass")], [r.reason for r in results]


def test_a_model_with_its_own_loss_gets_none(tmp_path):
    p = tmp_path / "m.prototxt"
    p.write_text('input: "data" input_shape { dim: 2 dim: 4 }\ninput: "label" input_shape { dim: 2 }\n'
                 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 3 } }\n'
                 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n')
    spec = import_model(p, tmp_path / "imp", loss="softmax")
    assert [l.name for l in zoo.load(spec).loss_layers] == ["loss"]
    assert any("has its own loss (loss); none was added" in n for n in spec.notes)
    assert not spec.spec.read_text().startswith("#")


def test_an_unknown_loss_is_a_usage_error(tmp_path):
    (tmp_path / "deploy.prototxt").write_text(CLASSIFIER_1X1)
    with pytest.raises(UsageError, match="--loss 'hinge': one of softmax"):
        import_model(tmp_path / "deploy.prototxt", tmp_path / "imp", loss="hinge")
    assert not (tmp_path / "imp").exists()


def test_an_output_that_is_not_class_scores_is_refused(tmp_path):
    """A feature map (N, C, H, W) with H, W > 1 is not (N, K) logits: refused, nothing written."""
    p = tmp_path / "m.prototxt"
    p.write_text('input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
                 'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
                 'convolution_param { num_output: 4 kernel_size: 3 } }\n')
    with pytest.raises(ImportRefused, match=r"the last output 'conv' has shape \(1, 4, 6, 6\); SoftmaxWithLoss"):
        import_model(p, tmp_path / "imp", loss="softmax")
    assert not (tmp_path / "imp").exists()


def test_label_values_cover_the_classes(tmp_path):
    """verify feeds labels drawn from [0, K) for the added loss (zoo/data.py reads K from it)."""
    from zoo import data
    (tmp_path / "deploy.prototxt").write_text(CLASSIFIER_1X1)
    net = zoo.load(import_model(tmp_path / "deploy.prototxt", tmp_path / "imp", loss="softmax")).with_batch(64)
    labels = data.make(net)[net.labels[0]]
    assert labels.dtype == np.int64 and set(np.unique(labels)) == {0, 1, 2, 3}


def test_a_softmax_over_a_middle_axis_is_refused(tmp_path):
    """(N, K, T) probabilities over axis 1: SoftmaxWithLoss takes classes last, so no loss can be
    put on them as they are; refused rather than put on the wrong axis."""
    p = tmp_path / "m.prototxt"
    p.write_text('input: "data" input_shape { dim: 2 dim: 5 dim: 3 }\n'
                 'layer { name: "prob" type: "Softmax" bottom: "data" top: "prob" softmax_param { axis: 1 } }\n')
    with pytest.raises(ImportRefused, match=r"'prob' is a Softmax over axis 1 of \(2, 5, 3\)"):
        import_model(p, tmp_path / "imp", loss="softmax")
    assert not (tmp_path / "imp").exists()
