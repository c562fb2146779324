"""MXNet 1.9.1: runs the exported NAME-symbol.json + NAME-0000.params of a build, and trains
NAME-train-symbol.json (the same parameters, with the spec's loss layers as MXNet loss heads,
written by zoo.converters.mxnet): the training step is load, feed, backward, step; no loss
formula lives here.

Threads come from OMP_NUM_THREADS (each operator's), set by the parent before this process
started, with MXNET_CPU_WORKER_NTHREADS=1 (one operator at a time: zoo/engines.py says why).
numpy.bool is restored before MXNet is imported (zoo.converters.mxnet).
The training step is autograd + gluon.Trainer SGD: MXNet's update
(v = mu v - lr (g + wd w); w += v) is PyTorch's for a constant learning rate. The .params
file is MXNet's binary NDArray format (no pickle); optimizer .states files are never read.
A float64 build (meta "dtype") is fed and returns float64.

zoo bench's default configuration is already MXNet's fast one: the blocks are hybridized
with static_alloc and static_shape. Runner options {"optimize": True} add, for inference,
the oneDNN (MKLDNN) subgraph backend (`optimize_for`: Convolution + ReLU, FullyConnected
fused into one oneDNN primitive); MXNet 1.9.1 has no fusion backend for training, so a
training step is the hybridized static one (and the optimised train_step is hybridized too,
where verify's is imperative).

Per-layer times (`layer_times`): each spec layer's part of the symbol, cut out of the graph
at its bottoms (which become variables), run alone on its real inputs as a hybridized
block; forward is its time, backward that of forward + backward less the forward, timed
in alternation (runners/base.py, time_forward_backward). Why not
mx.profiler: it names its events by operator type ("Convolution"), not by node, and even
with bulking off it still merges some nodes into one "ImperativeBulk" event (measured on
AlexNet-R), so events cannot be mapped back to zoo's layers.
"""

from __future__ import annotations

import json

from zoo.errors import ManifestError, ZooError

from .base import Runner as BaseRunner


ONEDNN = "MKLDNN"       # MXNet 1.9.1's name for the oneDNN subgraph backend


def _cut(graph: dict, layer, symbols: dict):
    """The part of `graph` that computes `layer`'s tops from its bottoms: (symbol JSON,
    [(variable name, (node, output) it stands for)]), or None when the layer has no nodes of
    its own. Walks back from the tops' nodes; every non-variable node output that is read
    from outside the part (the bottoms' nodes) becomes a variable."""
    nodes = graph["nodes"]
    index = {n["name"]: i for i, n in enumerate(nodes)}
    if not all(symbols.get(t) in index for t in layer.tops):
        return None
    stops = {index[symbols[b]] for b in layer.bottoms if symbols.get(b) in index}
    heads = [index[symbols[t]] for t in layer.tops]
    keep, stack = set(), [h for h in heads if h not in stops]
    while stack:
        i = stack.pop()
        if i in keep:
            continue
        keep.add(i)
        stack += [j for j, _, _ in nodes[i]["inputs"] if j not in keep and j not in stops]
    if not any(nodes[i]["op"] != "null" for i in keep):
        return None
    new, where, ins = [], {}, []
    for i in sorted(keep):           # the file's order is topological
        node = dict(nodes[i])
        inputs = []
        for j, k, v in node.get("inputs", []):
            if j in keep:
                inputs.append([where[(j, 0)], k, v])
                continue
            if (j, k) not in where:      # a value from outside: a variable
                name = f"zoo_in_{j}_{k}"
                where[(j, k)] = len(new)
                new.append({"op": "null", "name": name, "inputs": []})
                ins.append((name, (j, k)))
            inputs.append([where[(j, k)], 0, 0])
        node["inputs"] = inputs
        where[(i, 0)] = len(new)
        new.append(node)
    out = {"nodes": new, "arg_nodes": [i for i, n in enumerate(new) if n["op"] == "null"],
           "heads": [[where[(h, 0)], 0, 0] for h in heads], "attrs": graph.get("attrs", {})}
    return json.dumps(out), ins


class Runner(BaseRunner):
    engine = "mxnet"
    trains_a_copy = True      # each train_step loads a training block from the build's files

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

    def _symbol(self, symbol_file: str, dropout: bool):
        """An exported symbol; dropout=False sets every Dropout's p to 0 (verify: Dropout is
        the identity, also in training)."""
        graph = json.loads((self.dir / symbol_file).read_text())
        if not dropout:
            for node in graph["nodes"]:
                if node["op"] == "Dropout":
                    node.setdefault("attrs", {})["p"] = "0"
        return self.mx.sym.load_json(json.dumps(graph))

    def _block(self, symbol_file: str, inputs: list[str], dropout: bool):
        """A SymbolBlock of an exported symbol (`_symbol`) with the build's parameters."""
        mx, meta = self.mx, self.meta
        sym = self._symbol(symbol_file, dropout)
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
        if self.optimize and expose is None:
            self._optimized_infer(feed)
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

    def train_forward(self, inputs, expose):
        """The training symbol's inner outputs, in training mode (BatchNorm on the batch)."""
        mx = self.mx
        block = self._trained if self._trained is not None else self._training_block(dropout=False)
        internals = self._symbol(self.meta["train_symbol"], dropout=False).get_internals()
        outs = [internals[f"{self.meta['symbols'][b]}_output"] for b in expose]
        probe = mx.gluon.SymbolBlock(mx.sym.Group(outs),
                                     [mx.sym.var(n, dtype=self.dtype) for n in self.meta["inputs"]],
                                     params=block.collect_params())
        with mx.autograd.train_mode():
            res = probe(*self._nd(inputs, self.meta["input_blobs"]))
        res = res if isinstance(res, (list, tuple)) else [res]
        return {b: r.asnumpy() for b, r in zip(expose, res)}

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
        if self.optimize:
            block.hybridize(static_alloc=True, static_shape=True)
        trainer = self._trainer(block)
        feed = self._training_feed(inputs)
        losses = [float(self._step(block, trainer, feed).asscalar()) for _ in range(steps)]
        self._trained = block            # train_forward continues from these weights
        pd = block.collect_params()
        return losses, {k: pd[v].data().asnumpy() for k, v in self.meta["names"].items()}

    def optimizations(self, mode):
        if mode == "infer":
            return [f"hybridize(static_alloc, static_shape) with the {ONEDNN} subgraph backend "
                    "(optimize_for): operator fusion"]
        return ["hybridize(static_alloc, static_shape): the default's configuration already; "
                "MXNet 1.9.1 has no fusion backend for training"]

    def _optimized_infer(self, feed) -> None:
        """The inference block through oneDNN's subgraph fusion, once."""
        if not getattr(self, "_fused", False):
            self.block.optimize_for(*feed, backend=ONEDNN, static_alloc=True, static_shape=True)
            self._fused = True

    def make_iteration(self, inputs, mode):
        if mode == "infer":
            feed = self._nd(inputs, self.meta["input_blobs"])
            if self.optimize:
                self._optimized_infer(feed)
            else:
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

    # --- per-layer times (the module's docstring says how and why) ----------------------
    def layer_times(self, inputs, mode):
        from .base import time_call, time_forward_backward
        mx = self.mx
        train = mode == "train"
        block = self._training_block(dropout=True) if train else self.block
        graph = json.loads((self.dir / (self.meta["train_symbol"] if train else
                                        f"{self.meta['prefix']}-symbol.json")).read_text())
        feed_names = self.meta["input_blobs"] + (self.meta["label_blobs"] if train else [])
        feed = self._nd(inputs, feed_names)
        block(*feed)                       # parameters initialised, shapes known
        values = self._node_values(graph, block, feed, train)
        rows = []
        for layer in self.net.deploy_layers:
            cut = None if layer.kind.is_input else _cut(graph, layer, self.meta["symbols"])
            if cut is None:
                continue
            sym_json, ins = cut
            sub = mx.gluon.SymbolBlock(mx.sym.load_json(sym_json),
                                       [mx.sym.var(n, dtype=self.dtype) for n, _ in ins],
                                       params=block.collect_params())
            sub.hybridize(static_alloc=True, static_shape=True)
            xs = [values[key].copy() for _, key in ins]

            def fwd(sub=sub, xs=xs):
                with mx.autograd.record(train_mode=train):
                    out = sub(*xs)
                mx.nd.waitall()
                return out
            if not train:
                rows.append({"layer": layer.name, "forward_s": time_call(fwd), "backward_s": 0.0})
                continue
            for x in xs:
                x.attach_grad()

            def both(sub=sub, xs=xs):
                with mx.autograd.record(train_mode=True):
                    out = sub(*xs)
                mx.autograd.backward(out if isinstance(out, (list, tuple)) else [out])
                mx.nd.waitall()
            f, b = time_forward_backward(fwd, both)
            rows.append({"layer": layer.name, "forward_s": f, "backward_s": b})
        return rows

    def _node_values(self, graph: dict, block, feed, train: bool) -> dict:
        """The value of every node output a layer reads, (node index, output index) ->
        NDArray, from one run of the graph with those outputs as its heads."""
        mx = self.mx
        wanted = sorted({tuple(i[:2]) for n in graph["nodes"] if n["op"] != "null"
                         for i in n["inputs"] if graph["nodes"][i[0]]["op"] != "null"})
        probe = dict(graph, heads=[[i, k, 0] for i, k in wanted])
        names = self.meta["input_blobs"] + (self.meta["label_blobs"] if train else [])
        sb = mx.gluon.SymbolBlock(mx.sym.load_json(json.dumps(probe)),
                                  [mx.sym.var(n, dtype=self.dtype) for n in names],
                                  params=block.collect_params())
        outs = sb(*feed)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        values = dict(zip(wanted, outs))
        index = {n["name"]: i for i, n in enumerate(graph["nodes"])}
        values.update({(index[n], 0): x for n, x in zip(names, feed) if n in index})
        return values

    def device_name(self) -> str:
        return str(self.ctx)

    def versions(self):
        return {"mxnet": self.mx.__version__}
