"""TensorFlow/Keras: runs the model.keras of a build (loaded with safe_mode=True), and for
training its train.keras (the same layers, the labels as further inputs, the spec's loss as
the output: the converter builds the loss, the runner has no formula of its own).

Threads through tf.config.threading before any op runs (and the TF_NUM_* variables the
parent sets). The training step is generic: feed, a GradientTape step of the training
model's output with SGD as PyTorch defines it: Keras's SGD (v = mu v - lr g; w += v) is the
same update for a constant learning rate, and weight decay is added to the gradient
explicitly (Keras's own weight_decay is decoupled, a different rule). A float64 build
(options {"dtype": "float64"} at build time) is fed and answers float64. Runner options
{"xla": true} compiles the training and inference steps with XLA (jit_compile) for the
benchmark.
"""

from __future__ import annotations

import numpy as np

from .base import ManifestError
from .base import Runner as BaseRunner


class Runner(BaseRunner):
    engine = "tensorflow"

    def load(self) -> None:
        import tensorflow as tf

        if self.threads:
            _set_threads(tf, int(self.threads))
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
        self.dtype = self.meta.get("dtype", "float32")
        self.train_model = None      # train.keras, loaded by the first training step
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

    def _cast(self, a: np.ndarray) -> np.ndarray:
        """Float inputs in the model's float type; ids and labels as they are."""
        return a.astype(self.dtype, copy=False) if a.dtype.kind == "f" else a

    def _feed(self, inputs):
        return [self._cast(inputs[name]) for name in self.meta["inputs"] if name in inputs]

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
    def _training_model(self):
        """The build's train.keras: the model's layers, labels as inputs, the loss as output."""
        from zoo.converters.tensorflow import TRAIN_MODEL_FILE
        if TRAIN_MODEL_FILE not in self.manifest["files"]:
            raise ManifestError(f"{self.dir}: no {TRAIN_MODEL_FILE} (a build by an older zoo, or "
                                "a network without loss layers); rebuild it with --force")
        if self.train_model is None:
            with self.tf.device(self.tf_device):
                self.train_model = self.keras.saving.load_model(str(self.dir / TRAIN_MODEL_FILE),
                                                                safe_mode=True)
        return self.train_model

    def _optimizer(self):
        """PyTorch's SGD as Keras's: the same update for a constant learning rate. Its
        learning-rate variable is made in the model's float type (floatx), so that a float64
        step is not fed a float32-rounded rate."""
        t, config = self.net.train, self.keras.config
        previous = config.floatx()
        config.set_floatx(self.dtype)
        try:
            return self.keras.optimizers.SGD(learning_rate=float(t.lr), momentum=float(t.momentum))
        finally:
            config.set_floatx(previous)

    def _step_fn(self, dropout: bool):
        tf = self.tf
        model = self._training_model()
        if not dropout:
            for layer in model.layers:
                if isinstance(layer, self.keras.layers.Dropout):
                    layer.rate = 0.0     # verify: Dropout is the identity
        opt = self._optimizer()
        variables = model.trainable_variables
        wd = float(self.net.train.weight_decay)

        def step(feed):
            with tf.GradientTape() as tape:
                loss = model(feed, training=True)
            grads = tape.gradient(loss, variables)
            # PyTorch's coupled weight decay (Keras's own is decoupled, a different rule);
            # a variable without a gradient is left alone, as torch.optim leaves it
            pairs = [(g + wd * v if wd else g, v) for g, v in zip(grads, variables) if g is not None]
            opt.apply_gradients(pairs)
            return loss

        return tf.function(step, jit_compile=self.xla)

    def _train_feed(self, inputs):
        names = self.meta["inputs"] + self.meta["labels"]
        return [self.tf.constant(self._cast(inputs[n])) for n in names]

    def train_step(self, inputs, steps=1):
        with self.tf.device(self.tf_device):
            step = self._step_fn(dropout=False)
            feed = self._train_feed(inputs)
            losses = [float(step(feed)) for _ in range(steps)]
        return losses, self._trained_weights()

    def _trained_weights(self) -> dict:
        """Every weight in the spec's canonical layout, read back from the training model
        (a layer off the loss's path is only in the inference model, and was not updated)."""
        from zoo.converters.tensorflow import TRANSFORMS
        trained = {layer.name for layer in self.train_model.layers}
        weights = {}
        for a in self.meta["assign"]:
            model = self.train_model if a["layer"] in trained else self.model
            value = model.get_layer(a["layer"]).get_weights()[a["index"]]
            weights[a["key"]] = TRANSFORMS[a["transform"]][1](value, a["arg"])
        return weights

    def make_iteration(self, inputs, mode):
        tf = self.tf
        if mode == "infer":
            with tf.device(self.tf_device):
                feed = [tf.constant(x) for x in self._feed(inputs)]
            fn = tf.function(lambda f: self.model(f, training=False), jit_compile=self.xla)

            def infer():
                with tf.device(self.tf_device):
                    out = fn(feed)
                    (out[0] if isinstance(out, (list, tuple)) else out).numpy()   # synchronise
            return infer
        with tf.device(self.tf_device):
            step = self._step_fn(dropout=True)
            feed = self._train_feed(inputs)

        def train():
            with tf.device(self.tf_device):
                step(feed).numpy()     # the loss on the host: the step has finished
        return train

    def device_name(self) -> str:
        return self.tf_device

    def versions(self):
        return {"tensorflow": self.tf.__version__, "keras": self.keras.__version__}


def _set_threads(tf, threads: int) -> None:
    """Thread counts are fixed when TensorFlow's runtime starts. A worker child whose runtime
    an earlier job already started (a build, another runner) keeps the counts it started
    with: the TF_NUM_* variables the parent set for this worker, which is one per thread
    count (zoo/isolation.py), so they are these."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
