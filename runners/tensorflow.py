"""TensorFlow/Keras: runs the model.keras of a build (loaded with safe_mode=True).

Threads through tf.config.threading before any op runs (and the TF_NUM_* variables the
parent sets). The training step is a GradientTape step of the spec's loss with SGD as
PyTorch defines it: Keras's SGD (v = mu v - lr g; w += v) is the same update for a constant
learning rate, and weight decay is added to the gradient explicitly (Keras's own
weight_decay is decoupled, a different rule). options {"xla": true} compiles the training
and inference steps with XLA (jit_compile) for the benchmark.
"""

from __future__ import annotations

import numpy as np

from .base import Runner as BaseRunner


class Runner(BaseRunner):
    engine = "tensorflow"

    def load(self) -> None:
        import tensorflow as tf

        if self.threads:
            tf.config.threading.set_intra_op_parallelism_threads(int(self.threads))
            tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras

        self.tf, self.keras = tf, keras
        index = self.gpu_index()
        if index is not None:
            tf.config.experimental.enable_tensor_float_32_execution(False)
        self.tf_device = "/CPU:0" if index is None else f"/GPU:{index}"
        self.meta = self.manifest["meta"]
        with tf.device(self.tf_device):
            self.model = keras.saving.load_model(str(self.dir / "model.keras"), safe_mode=True)
        self.heads = self.meta["heads"]
        self.xla = bool(self.options.get("xla"))

    def cuda_missing(self):
        if not self.tf.config.list_physical_devices("GPU"):
            return "this TensorFlow has no GPU support (tensorflow-cpu, or no CUDA device visible)"
        return None

    # --- layouts --------------------------------------------------------------------------
    def _to_spec_layout(self, blob: str, a: np.ndarray) -> np.ndarray:
        tag = self.meta["tags"].get(blob, "plain")
        if tag == "nhwc":
            return np.ascontiguousarray(a.transpose(0, 3, 1, 2))
        if tag == "flat":
            c, h, w = self.meta["flat"][blob]
            return np.ascontiguousarray(a.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(a.shape[0], -1))
        return a

    def _feed(self, inputs):
        return [inputs[name] for name in self.meta["inputs"] if name in inputs]

    def forward(self, inputs, expose=None):
        blobs = self.outputs_for(expose)
        with self.tf.device(self.tf_device):
            if all(b in self.heads for b in blobs):
                outs = self.model(self._feed(inputs), training=False)
                outs = outs if isinstance(outs, (list, tuple)) else [outs]
                by = dict(zip(self.heads, outs))
                return {b: np.asarray(by[b]) for b in blobs}
            layers = [self.model.get_layer(self.meta["blob_layers"][b]).output for b in blobs]
            probe = self.keras.Model(self.model.inputs, layers)
            outs = probe(self._feed(inputs), training=False)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return {b: self._to_spec_layout(b, np.asarray(o)) for b, o in zip(blobs, outs)}

    # --- training -------------------------------------------------------------------------
    def _loss(self, heads: dict, inputs: dict):
        tf = self.tf
        total = 0.0
        for layer in self.net.loss_layers:
            w = float(layer.p.loss_weight)
            a = heads[layer.bottoms[0]]
            b = layer.bottoms[1]
            other = inputs[b] if b in inputs else heads[b]
            if layer.type == "SoftmaxWithLoss":
                ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=other, logits=a)
                total += w * tf.reduce_mean(ce)
            else:
                total += w * tf.reduce_sum(tf.square(a - tf.cast(other, a.dtype))) / (2.0 * tf.cast(tf.shape(a)[0], a.dtype))
        return total

    def _step_fn(self, dropout: bool):
        tf, t = self.tf, self.net.train
        if not dropout:
            for layer in self.model.layers:
                if isinstance(layer, self.keras.layers.Dropout):
                    layer.rate = 0.0     # verify: Dropout is the identity
        opt = self.keras.optimizers.SGD(learning_rate=float(t.lr), momentum=float(t.momentum))
        variables = self.model.trainable_variables
        wd = float(t.weight_decay)
        feed_names = self.meta["inputs"]
        labels = self.net.labels

        def step(feed, label_values):
            with tf.GradientTape() as tape:
                outs = self.model(feed, training=True)
                outs = outs if isinstance(outs, (list, tuple)) else [outs]
                loss = self._loss(dict(zip(self.heads, outs)), dict(zip(labels, label_values)))
            grads = tape.gradient(loss, variables)
            if wd:
                grads = [g + wd * v for g, v in zip(grads, variables)]
            opt.apply_gradients(zip(grads, variables))
            return loss

        del feed_names
        return tf.function(step, jit_compile=self.xla)

    def _split(self, inputs):
        feed = [self.tf.constant(inputs[n]) for n in self.meta["inputs"]]
        labels = [self.tf.constant(inputs[n]) for n in self.net.labels]
        return feed, labels

    def train_step(self, inputs, steps=1):
        with self.tf.device(self.tf_device):
            step = self._step_fn(dropout=False)
            feed, labels = self._split(inputs)
            losses = [float(step(feed, labels)) for _ in range(steps)]
        from zoo.converters.tensorflow import TRANSFORMS
        weights = {}
        for a in self.meta["assign"]:
            value = self.model.get_layer(a["layer"]).get_weights()[a["index"]]
            weights[a["key"]] = TRANSFORMS[a["transform"]][1](value, a["arg"])
        return losses, weights

    def make_iteration(self, inputs, mode):
        tf = self.tf
        with tf.device(self.tf_device):
            feed, labels = self._split(inputs)
        if mode == "infer":
            fn = tf.function(lambda f: self.model(f, training=False), jit_compile=self.xla)

            def infer():
                with tf.device(self.tf_device):
                    out = fn(feed)
                    (out[0] if isinstance(out, (list, tuple)) else out).numpy()   # synchronise
            return infer
        step = self._step_fn(dropout=True)

        def train():
            with tf.device(self.tf_device):
                step(feed, labels).numpy()     # the loss on the host: the step has finished
        return train

    def device_name(self) -> str:
        return self.tf_device

    def versions(self):
        return {"tensorflow": self.tf.__version__, "keras": self.keras.__version__}
