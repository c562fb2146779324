"""MXNet 1.9.1: runs the exported NAME-symbol.json + NAME-0000.params of a build, and trains
NAME-train-symbol.json (the same parameters, with the spec's loss layers as MXNet loss heads,
written by zoo.converters.mxnet): the training step is load, feed, backward, step; no loss
formula lives here.

Threads come from OMP_NUM_THREADS / MXNET_CPU_WORKER_NTHREADS, set by the parent before this
process started. numpy.bool is restored before MXNet is imported (zoo.converters.mxnet).
The training step is autograd + gluon.Trainer SGD: MXNet's update
(v = mu v - lr (g + wd w); w += v) is PyTorch's for a constant learning rate. The .params
file is MXNet's binary NDArray format (no pickle); optimizer .states files are never read.
A float64 build (meta "dtype") is fed and returns float64.
"""

from __future__ import annotations

import json

from zoo.errors import ManifestError, ZooError

from .base import Runner as BaseRunner


class Runner(BaseRunner):
    engine = "mxnet"

    def load(self) -> None:
        from zoo.converters.mxnet import import_mxnet

        mx = self.mx = import_mxnet()
        index = self.gpu_index()
        self.ctx = mx.cpu() if index is None else mx.gpu(index)
        self.meta = self.manifest["meta"]
        if "train_symbol" not in self.meta:
            raise ManifestError(f"{self.dir}: an MXNet build older than zoo's training symbols "
                                "(no train_symbol in its manifest): rebuild it (zoo build --force, "
                                "or zoo cache clear for cached builds)")
        self.dtype = self.meta["dtype"]
        self.block = self._block(f"{self.meta['prefix']}-symbol.json", self.meta["inputs"],
                                 dropout=True)

    def cuda_missing(self):
        if self.mx.context.num_gpus() == 0:
            return "this MXNet build has no CUDA support (the PyPI mxnet 1.9.1 wheel is CPU-only)"
        return None

    def _block(self, symbol_file: str, inputs: list[str], dropout: bool):
        """A SymbolBlock of an exported symbol with the build's parameters; dropout=False
        sets every Dropout's p to 0 (verify: Dropout is the identity, also in training)."""
        mx, meta = self.mx, self.meta
        graph = json.loads((self.dir / symbol_file).read_text())
        if not dropout:
            for node in graph["nodes"]:
                if node["op"] == "Dropout":
                    node.setdefault("attrs", {})["p"] = "0"
        sym = mx.sym.load_json(json.dumps(graph))
        block = mx.gluon.SymbolBlock(sym, [mx.sym.var(n, dtype=self.dtype) for n in inputs])
        block.collect_params().load(str(self.dir / f"{meta['prefix']}-0000.params"), ctx=self.ctx)
        for name in meta["frozen"]:
            block.collect_params()[name].grad_req = "null"
        return block

    def _training_block(self, dropout: bool):
        if self.meta["train_symbol"] is None:
            raise ZooError(f"{self.net.name} has no loss layer: there is nothing to train")
        return self._block(self.meta["train_symbol"],
                           self.meta["inputs"] + self.meta["label_inputs"], dropout)

    def _nd(self, inputs, names):
        return [self.mx.nd.array(inputs[n], ctx=self.ctx, dtype=self.dtype) for n in names]

    def forward(self, inputs, expose=None):
        mx = self.mx
        blobs = self.outputs_for(expose)
        feed = self._nd(inputs, self.meta["input_blobs"])
        if all(b in self.meta["heads"] for b in blobs):
            outs = self.block(*feed)
            outs = outs if isinstance(outs, (list, tuple)) else [outs]
            by = dict(zip(self.meta["heads"], outs))
            return {b: by[b].asnumpy() for b in blobs}
        internals = self.block._cached_graph[1].get_internals() if self.block._cached_graph else None
        if internals is None:
            sym = mx.sym.load(str(self.dir / f"{self.meta['prefix']}-symbol.json"))
            internals = sym.get_internals()
        outs = [internals[f"{self.meta['symbols'][b]}_output"] for b in blobs]
        probe = mx.gluon.SymbolBlock(mx.sym.Group(outs),
                                     [mx.sym.var(n, dtype=self.dtype) for n in self.meta["inputs"]],
                                     params=self.block.collect_params())
        res = probe(*feed)
        res = res if isinstance(res, (list, tuple)) else [res]
        return {b: r.asnumpy() for b, r in zip(blobs, res)}

    def _trainer(self, block):
        t = self.net.train
        params = {k: v for k, v in block.collect_params().items() if v.grad_req != "null"}
        return self.mx.gluon.Trainer(params, "sgd", {"learning_rate": float(t.lr),
                                                      "momentum": float(t.momentum),
                                                      "wd": float(t.weight_decay)})

    def _training_feed(self, inputs):
        return self._nd(inputs, self.meta["input_blobs"] + self.meta["label_blobs"])

    def _step(self, block, trainer, feed):
        with self.mx.autograd.record(train_mode=True):
            loss = block(*feed)          # the MakeLoss head: the spec's summed losses
        loss.backward()
        trainer.step(1)    # the loss is already a mean: no 1/batch rescaling
        return loss

    def train_step(self, inputs, steps=1):
        block = self._training_block(dropout=False)
        trainer = self._trainer(block)
        feed = self._training_feed(inputs)
        losses = [float(self._step(block, trainer, feed).asscalar()) for _ in range(steps)]
        pd = block.collect_params()
        return losses, {k: pd[v].data().asnumpy() for k, v in self.meta["names"].items()}

    def make_iteration(self, inputs, mode):
        if mode == "infer":
            feed = self._nd(inputs, self.meta["input_blobs"])
            self.block.hybridize(static_alloc=True, static_shape=True)

            def infer():
                outs = self.block(*feed)
                (outs[0] if isinstance(outs, (list, tuple)) else outs).wait_to_read()
            return infer
        block = self._training_block(dropout=True)
        block.hybridize(static_alloc=True, static_shape=True)
        trainer = self._trainer(block)
        feed = self._training_feed(inputs)

        def train():
            self._step(block, trainer, feed)
            self.mx.nd.waitall()      # MXNet is asynchronous: wait for the update
        return train

    def device_name(self) -> str:
        return str(self.ctx)

    def versions(self):
        return {"mxnet": self.mx.__version__}
