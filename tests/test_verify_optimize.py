"""`zoo verify --optimize`: each engine's optimised configuration (the one `zoo bench
--optimize` times) judged against the float64 references as the default one is, and
TensorFlow's optimised configuration, its fused BatchNorm (runners/tensorflow.py), computing
what Keras's own BatchNormalization computes."""

import numpy as np
import pytest

import zoo
from conftest import require_engine

BN_NET = """name: "t-bn-opt"
train { lr: 0.1 momentum: 0.9 batch_cpu: 8 batch_gpu: 8 }
layer { name: "data" type: "Input" input_param { shape: [8, 3, 8, 8] } }
layer { name: "label" type: "Input" input_param { shape: [8] dtype: INT64 } }
layer { name: "conv" type: "Convolution" bottom: "data" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" batch_norm_param { eps: 1e-5 } }
layer { name: "relu" type: "ReLU" bottom: "bn" }
layer { name: "gap" type: "Pooling" bottom: "relu" pooling_param { pool: AVE global_pooling: true } }
layer { name: "flat" type: "Flatten" bottom: "gap" }
layer { name: "fc" type: "InnerProduct" bottom: "flat" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" }
"""


def test_optimised_configurations_verify_and_an_engine_without_one_is_skipped(tmp_path):
    for engine in ("tensorflow", "caffe"):
        require_engine(engine)
    spec = tmp_path / "bn.prototxt"
    spec.write_text(BN_NET)
    results = zoo.verify([str(spec)], ["tensorflow", "caffe"], mode="both", optimize=True)
    by = {(r.engine, r.mode): r for r in results}
    for mode in ("forward", "train"):
        assert by["tensorflow", mode].status == "pass", by["tensorflow", mode].reason
        assert by["caffe", mode].status == "skipped"
        assert "no optimised configuration" in by["caffe", mode].reason


def test_fused_batch_norm_computes_what_keras_computes():
    """Outputs (training and inference), moving statistics and gradients of a fused layer
    against Keras's own on the same weights and data, with and without scale and shift."""
    require_engine("tensorflow")
    import keras
    import tensorflow as tf

    from runners.tensorflow import _fuse_batch_norms
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((4, 5, 6, 7)) * 3 + 1).astype("float32")
    for eps, affine in ((1e-6, True), (1e-3, False)):
        models = []
        for _ in range(2):
            x = keras.Input((5, 6, 7))
            bn = keras.layers.BatchNormalization(epsilon=eps, momentum=0.9, center=affine,
                                                 scale=affine, name="bn")
            models.append(keras.Model(x, bn(x)))
        plain, fused = models
        weights = [rng.standard_normal(v.shape).astype("float32") ** 2 + 0.5
                   for v in plain.get_layer("bn").weights]
        plain.get_layer("bn").set_weights(weights)
        fused.get_layer("bn").set_weights(weights)
        _fuse_batch_norms(tf, keras, fused)
        assert getattr(fused.get_layer("bn"), "zoo_fused", False)
        for training in (True, False):
            a = plain(data, training=training).numpy()
            b = fused(data, training=training).numpy()
            np.testing.assert_allclose(b, a, rtol=0, atol=4e-6 * np.abs(a).max())
            for p, q in zip(plain.get_layer("bn").get_weights(), fused.get_layer("bn").get_weights()):
                np.testing.assert_allclose(q, p, rtol=1e-6, atol=1e-6)
        if affine:
            grads = []
            for m in (plain, fused):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(m(data, training=True) ** 3)
                grads.append(tape.gradient(loss, m.trainable_variables))
            for g, h in zip(*grads):
                np.testing.assert_allclose(h.numpy(), g.numpy(), rtol=0,
                                           atol=1e-5 * np.abs(g.numpy()).max())
