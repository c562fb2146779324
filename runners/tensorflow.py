"""TensorFlow/Keras: runs the model.keras of a build (loaded with safe_mode=True), and for
training its train.keras (the same layers, the labels as further inputs, the spec's loss as
the output: the converter builds the loss, the runner has no formula of its own).

Threads through tf.config.threading before any op runs (and the TF_NUM_* variables the
parent sets). The training step is generic: feed, a GradientTape step of the training
model's output with SGD as PyTorch defines it: Keras's SGD (v = mu v - lr g; w += v) is the
same update for a constant learning rate, and weight decay is added to the gradient
explicitly (Keras's own weight_decay is decoupled, a different rule). A float64 build
(options {"dtype": "float64"} at build time) is fed and answers float64. Runner options
{"xla": true} (zoo bench --xla) compiles the training and inference steps with XLA
(jit_compile). {"optimize": true} (zoo bench --optimize) runs each 4-D BatchNormalization as
TensorFlow's fused kernel (FusedBatchNormV3, oneDNN's on x86; what tf.keras 2 ran by default,
`fused=True`) in place of Keras 3's unfused moments and arithmetic, the same formula and the
same moving-statistics update (`_fuse_batch_norms`), and then forward() answers from the
very inference function that is timed. Not XLA: with oneDNN's kernels on, XLA's CPU
convolutions made every zoo network slower (README, *Benchmarks*).

Per-layer times (`layer_times`): each spec layer alone, as a Keras sub-model from its
bottoms' tensors to its tops' (the Permute/ZeroPadding helpers the converter put in front
of it belong to it), called on the real values of its inputs in its own tf.function;
forward is that call's time, backward the time of forward + gradient (inputs and weights)
less the forward, timed in alternation (runners/base.py, time_forward_backward). Why not tf.profiler: its trace names TensorFlow kernels, not Keras
layers, reading it needs the TensorBoard profile plugin (not installed), and its per-op
events inside one tf.function overlap on the inter-op pool. The sub-model way misses only
what spans layers (Grappler's cross-layer fusion, the dispatch of one whole graph), so the
layers' sum is close to, not equal to, the whole step.
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
        self._model = None           # model.keras, loaded at first use (`model`)
        self.heads = self.meta["heads"]
        self.dtype = self.meta.get("dtype", "float32")
        self.train_model = None      # train.keras, loaded by the first training step
        self._train_state = None     # its state as loaded, when it is to be rewound
        self._rewindable = False
        self.xla = bool(self.options.get("xla"))
        self._infer_fn = None        # the tf.function that forward (optimize) and bench share

    @property
    def model(self):
        """The build's model.keras, loaded when first used: a training job needs only
        train.keras (and this one for a weight off the loss's path), and a load takes seconds."""
        if self._model is None:
            with self.tf.device(self.tf_device):
                self._model = self.keras.saving.load_model(str(self.dir / "model.keras"),
                                                           safe_mode=True)
            if self.optimize:       # its fused BatchNorm (`_fuse_batch_norms`)
                _fuse_batch_norms(self.tf, self.keras, self._model)
        return self._model

    def save_build_state(self) -> bool:
        """Training changes only train.keras (its weights, BatchNorm's statistics, Dropout's
        rate and seed): its variables and rates are read when it is loaded, after this call."""
        if self.train_model is not None and self._train_state is None:
            return False       # loaded, and maybe trained, before: nothing to rewind to
        self._rewindable = True
        return True

    def _rewind(self) -> None:
        if self.train_model is None:
            return
        values, rates = self._train_state
        for v, a in zip(self.train_model.variables, values):
            v.assign(a)
        for layer in self.train_model.layers:
            if layer.name in rates:
                layer.rate = rates[layer.name]

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

    def _inference(self):
        if self._infer_fn is None:
            model = self.model     # loaded here: a load inside the traced function would fail
            self._infer_fn = self.tf.function(lambda f: model(f, training=False),
                                              jit_compile=self.xla)
        return self._infer_fn

    def optimizations(self, mode):
        model = self._training_model() if mode == "train" else self.model
        fused = sum(getattr(layer, "zoo_fused", False) for layer in model.layers)
        if not fused:
            return ["graph mode with oneDNN's kernels: the default's configuration already "
                    "(no 4-D BatchNorm to fuse; XLA was slower on CPU)"]
        return [f"fused BatchNorm (FusedBatchNormV3) in {fused} layer(s), in place of Keras 3's "
                "unfused one; no XLA (slower on CPU with oneDNN's kernels)"]

    def forward(self, inputs, expose=None):
        blobs = self.outputs_for(expose)
        with self.tf.device(self.tf_device):
            if self.optimize and expose is None:
                outs = self._inference()([self.tf.constant(x) for x in self._feed(inputs)])
                outs = outs if isinstance(outs, (list, tuple)) else [outs]
                by = dict(zip(self.heads, outs))
                return {b: np.asarray(by[b]) for b in blobs}
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
            if self.optimize:       # its fused BatchNorm (`_fuse_batch_norms`)
                _fuse_batch_norms(self.tf, self.keras, self.train_model)
            if self._rewindable:
                self._train_state = ([v.numpy() for v in self.train_model.variables],
                                     {layer.name: layer.rate for layer in self.train_model.layers
                                      if isinstance(layer, self.keras.layers.Dropout)})
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
        # the optimizer's own variables (iterations, momenta) made now, not by the traced
        # step's first call: a tf.function whose first trace creates variables is traced twice
        opt.build(variables)
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

    def train_forward(self, inputs, expose):
        """The training model's layers, in training mode, in a tf.function as the step is."""
        model = self._training_model()
        for layer in model.layers:
            if isinstance(layer, self.keras.layers.Dropout):
                layer.rate = 0.0
        probe = self.keras.Model(model.inputs,
                                 [model.get_layer(self.meta["blob_layers"][b]).output for b in expose])
        with self.tf.device(self.tf_device):
            outs = self.tf.function(lambda f: probe(f, training=True))(self._train_feed(inputs))
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return {b: self._to_spec_layout(b, np.asarray(o)) for b, o in zip(expose, outs)}

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
            fn = self._inference()

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

    # --- per-layer times (the module's docstring says how and why) ----------------------
    def layer_times(self, inputs, mode):
        from .base import time_call, time_forward_backward
        tf = self.tf
        train = mode == "train"
        values = self._blob_values(inputs)
        rows = []
        with tf.device(self.tf_device):
            for layer in self.net.deploy_layers:
                sub = None if layer.kind.is_input else self._layer_model(layer, train)
                if sub is None:
                    continue
                xs = [tf.constant(values[b]) for b in _unique(layer.bottoms)]
                fwd = tf.function(lambda xs, sub=sub: sub(xs, training=train))
                if train:
                    both = tf.function(lambda xs, sub=sub: _gradients(tf, sub, xs, train))
                    f, b = time_forward_backward(lambda fwd=fwd, xs=xs: _host(fwd(xs)),
                                                 lambda both=both, xs=xs: _host(both(xs)))
                else:
                    f, b = time_call(lambda fwd=fwd, xs=xs: _host(fwd(xs))), 0.0
                rows.append({"layer": layer.name, "forward_s": f, "backward_s": b})
        return rows

    def _blob_values(self, inputs) -> dict:
        """Every blob's value as the Keras model holds it (NHWC inside), from one forward."""
        names = [b for l in self.net.deploy_layers if not l.kind.is_input for b in l.bottoms]
        names = [b for b in dict.fromkeys(names) if b in self.meta["blob_layers"]]
        feed = self._feed(inputs)
        with self.tf.device(self.tf_device):
            probe = self.keras.Model(self.model.inputs,
                                     [self.model.get_layer(self.meta["blob_layers"][b]).output
                                      for b in names])
            outs = probe(feed, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return {b: np.asarray(o) for b, o in zip(names, outs)}

    def _layer_model(self, layer, train: bool):
        """A Keras model from the layer's bottoms to its tops: in train mode the training
        model's (its weights are the ones stepped), else the inference model's. None for a
        layer with no Keras tensors of its own (an input)."""
        where = self.meta["blob_layers"]
        if not all(b in where for b in layer.bottoms + layer.tops):
            return None
        model = self._training_model() if train else self.model
        names = {l.name for l in model.layers}
        if not all(where[b] in names for b in layer.bottoms + layer.tops):
            model = self.model       # off the loss's path: only in the inference model
        outs = [model.get_layer(where[t]).output for t in layer.tops]
        ins = [model.get_layer(where[b]).output for b in _unique(layer.bottoms)]
        return self.keras.Model(ins, outs)

    def device_name(self) -> str:
        return self.tf_device

    def versions(self):
        import os
        # which CPU kernels ran (zoo/engines.py sets 1 unless the user chose)
        return {"tensorflow": self.tf.__version__, "keras": self.keras.__version__,
                "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "TensorFlow's default")}


def _fuse_batch_norms(tf, keras, model) -> None:
    """Each float32 BatchNormalization over the channels of NHWC images runs as TensorFlow's
    fused kernel: batch statistics, normalisation, scale and shift in one op (and one
    gradient op), where Keras 3 computes moments and then the normalisation in separate
    ops, each a pass over the activations (ResNet-56's training step: 750 -> 540 ms). The
    formula is Keras's: the spec's epsilon exactly (tf.raw_ops, not the Python wrapper,
    which raises it to 1.001e-5), the moving statistics updated with the biased batch
    variance as Keras 3 does (the kernel returns the unbiased one). Other layers, and other
    BatchNormalization layers (float64, 2-D, renorm, synchronized), keep Keras's own call.
    Marks a fused layer with `zoo_fused`."""
    for layer in model.layers:
        if (not isinstance(layer, keras.layers.BatchNormalization) or layer.renorm
                or layer.synchronized or layer.dtype != "float32"
                or len(layer.input.shape) != 4 or layer.axis not in (-1, 3)):
            continue
        layer.call = _fused_call(tf, layer)
        layer.zoo_fused = True


def _fused_call(tf, layer):
    def call(inputs, training=None, mask=None):
        channels = inputs.shape[-1]
        scale = layer.gamma if layer.scale else tf.ones([channels], inputs.dtype)
        offset = layer.beta if layer.center else tf.zeros([channels], inputs.dtype)
        if training and layer.trainable:
            y, mean, var = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=scale, offset=offset, mean=tf.zeros([0], inputs.dtype),
                variance=tf.zeros([0], inputs.dtype), epsilon=layer.epsilon,
                data_format="NHWC", is_training=True)[:3]
            n = tf.cast(tf.size(inputs) // channels, var.dtype)
            var = var * (n - 1.0) / n                    # unbiased -> biased, as Keras's moments
            m = layer.momentum
            layer.moving_mean.assign(layer.moving_mean * m + mean * (1.0 - m))
            layer.moving_variance.assign(layer.moving_variance * m + var * (1.0 - m))
            return y
        return tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=scale, offset=offset, mean=layer.moving_mean,
            variance=layer.moving_variance, epsilon=layer.epsilon, data_format="NHWC",
            is_training=False)[0]
    return call


def _unique(blobs: list[str]) -> list[str]:
    """A layer's bottoms, each once: a Keras model takes a tensor as one input only (an
    Eltwise of a blob with itself, as in ResNet-56's zero shortcut, reads it twice)."""
    return list(dict.fromkeys(blobs))


def _host(out) -> None:
    """Wait for a result (CPU eager results are ready on return; a GPU's are not)."""
    for t in out if isinstance(out, (list, tuple)) else [out]:
        if t is not None:
            t.numpy()


def _gradients(tf, sub, xs, train: bool):
    """Forward and backward of one layer: gradients for its float inputs and its weights."""
    floats = [x for x in xs if x.dtype.is_floating]
    with tf.GradientTape() as tape:
        tape.watch(floats)
        ys = sub(xs, training=train)
    grads = tape.gradient(ys, floats + list(sub.trainable_variables))
    # the outputs too: else TensorFlow prunes a forward the gradients do not need (Dense's)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    return list(ys) + [g for g in grads if g is not None]


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
