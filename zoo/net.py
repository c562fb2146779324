"""The in-memory network: a validated spec with every blob's shape, every layer's weights,
parameter count and FLOPs. Engine-free.

`load("alexnet-r")` or `load("path/to/spec.prototxt")` returns a `Net`; every problem is a
`SpecError` naming the file, line or JSON path, and the layer.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import layers as L
from . import spec as S
from . import spec_pb2
from .errors import SpecError

# The network's name becomes file and folder names (imports, builds). The rule, stated the
# same in specs/zoo.proto: a letter or digit, then letters, digits, '-', '_', '.'; at most 128.
# Upper case is accepted: importers keep a model's own name (Caffe's "LeNet").
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
NAME_RULE = "a letter or digit, then letters, digits, '-', '_' or '.', at most 128 characters"
MAX_BLOB_ELEMENTS = 2**48   # per blob and per weight: far above any real network, far below
                            # where int64 shape arithmetic wraps
FLOAT32, INT64 = spec_pb2.InputParam.FLOAT32, spec_pb2.InputParam.INT64
DTYPE_NAMES = {FLOAT32: "FLOAT32", INT64: "INT64"}
REFUSED_TYPES = {"Python": "type 'Python' runs code from a module and is never accepted"}


@dataclass
class Layer:
    index: int                 # position in the spec file (for error messages)
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    p: object                  # the layer's *_param message (defaults applied), or None
    kind: type[L.LayerType]
    in_shapes: list[tuple] = field(default_factory=list)
    out_shapes: list[tuple] = field(default_factory=list)
    weights: list[L.WeightSpec] = field(default_factory=list)
    macs: int = 0
    flops: int = 0

    @property
    def params(self) -> int:
        return sum(L.base.size(w.shape) for w in self.weights if w.kind == "param")


class Net:
    """A validated network. Layers are in a topological order."""

    def __init__(self, proto: spec_pb2.NetSpec, source: S.Source | None = None,
                 path: Path | None = None):
        self.proto = proto
        self.source = source or S.Source()
        self.path = path
        self.name = proto.name
        self.description = proto.description
        self.train = proto.train            # unset fields read as the schema's defaults
        self.layers: list[Layer] = []
        self.shapes: dict[str, tuple] = {}
        self.dtypes: dict[str, int] = {}    # blob -> InputParam.DType (FLOAT32 or INT64)
        self._validate()

    # --- validation -------------------------------------------------------------------
    def _err(self, msg: str, index: int | None = None, layer: Layer | None = None,
             name: str | None = None, type_: str | None = None) -> SpecError:
        if layer is not None:
            index, name, type_ = layer.index, layer.name, layer.type
        return SpecError(msg, layer=name, layer_type=type_, **self.source.place(index))

    def _validate(self) -> None:
        if not self.proto.name:
            raise self._err("the spec has no name (name: \"...\")")
        if not NAME_RE.match(self.proto.name):
            raise self._err(f"name {self.proto.name!r} is not a valid name: {NAME_RULE}")
        if self.proto.weights:
            wp = Path(self.proto.weights)
            if wp.is_absolute() or ".." in wp.parts:
                raise self._err(f"weights {self.proto.weights!r} must be a path inside the spec's folder")
        self._check_train()
        layers = [self._make_layer(i, lp) for i, lp in enumerate(self.proto.layer)]
        if not layers:
            raise self._err("the spec has no layers")
        self.layers = self._toposort(layers)
        for layer in self.layers:
            self._infer(layer)
            self._check_dtypes(layer)
        if not any(layer.kind.is_input for layer in self.layers):
            raise self._err("the spec has no Input layer")
        if not self.outputs:
            raise self._err("the spec has no output: every blob is consumed or is a loss")

    def _check_train(self) -> None:
        """Values every engine's training step reads: finite (a spec with `lr: inf` would
        convert to a JSON file that is refused), and batch sizes that can be used."""
        bad = _non_finite(self.proto.train, "train")
        if bad:
            raise self._err(f"{bad}: training values must be finite numbers")
        for f in ("batch_cpu", "batch_gpu"):
            if getattr(self.proto.train, f) <= 0:
                raise self._err(f"train.{f} must be > 0, got {getattr(self.proto.train, f)}")

    def _make_layer(self, index: int, lp) -> Layer:
        name, type_ = lp.name, lp.type
        if not name:
            raise self._err("a layer has no name", index)
        bad = _non_finite(lp, "")
        if bad:
            raise self._err(f"{bad.lstrip('.')}: values must be finite numbers", index,
                            name=name, type_=type_ or None)
        if not type_:
            raise self._err("the layer has no type", index, name=name)
        if type_ in REFUSED_TYPES:
            raise self._err(REFUSED_TYPES[type_], index, name=name, type_=type_)
        if type_ not in L.REGISTRY:
            raise self._err(f"unknown layer type {type_!r}; known types: "
                            f"{', '.join(sorted(L.REGISTRY))}", index, name=name, type_=type_)
        kind = L.REGISTRY[type_]
        for fd, _ in lp.ListFields():     # the fields set: one call, not one per *_param
            if fd.name.endswith("_param") and fd.name != kind.param_field:
                raise self._err(f"{fd.name} does not apply to a {type_} layer", index, name=name,
                                type_=type_)
        p = getattr(lp, kind.param_field) if kind.param_field else None
        for req in kind.required:
            if not p.HasField(req):
                raise self._err(f"{kind.param_field}.{req} is required", index, name=name, type_=type_)
        layer = Layer(index, name, type_, list(lp.bottom), list(lp.top) or [name], p, kind)
        lo, hi = kind.n_bottoms
        n = len(layer.bottoms)
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
            raise self._err(f"takes {want} bottom(s), got {n}", layer=layer)
        try:
            kind.check(p)
        except L.LayerError as e:
            raise self._err(str(e), layer=layer) from None
        want = kind.tops_for(p)
        if len(layer.tops) != want:
            raise self._err(f"has {want} top(s), got {len(layer.tops)}"
                            + ("" if lp.top else " (top defaults to the layer's name): list "
                               "each top"), layer=layer)
        return layer

    def _toposort(self, layers: list[Layer]) -> list[Layer]:
        """Layers in data-flow order (depth-first, post-order from the spec's order).
        Iterative and linear in layers + edges: specs may list 100,000 layers backwards."""
        producer = self._producers(layers)
        visiting, done = 1, 2
        order, state = [], {}
        for root in layers:
            if root.name in state:
                continue
            state[root.name] = visiting
            stack = [(root, 0)]    # (layer, index of its next bottom to visit)
            while stack:
                layer, i = stack[-1]
                if i == len(layer.bottoms):
                    stack.pop()
                    state[layer.name] = done
                    order.append(layer)
                    continue
                stack[-1] = (layer, i + 1)
                dep = producer[layer.bottoms[i]]
                seen = state.get(dep.name)
                if seen is None:
                    state[dep.name] = visiting
                    stack.append((dep, 0))
                elif seen == visiting:
                    path = [l.name for l, _ in stack]
                    cycle = path[path.index(dep.name):] + [dep.name]
                    raise self._err(f"cycle: {' -> '.join(cycle)}", layer=dep)
        return order

    def _producers(self, layers: list[Layer]) -> dict[str, Layer]:
        """{blob: the layer producing it}; each layer name and blob once, every bottom known."""
        names, producer = {}, {}
        for layer in layers:
            if layer.name in names:
                raise self._err(f"duplicate layer name (also at layer #{names[layer.name] + 1})",
                                layer=layer)
            names[layer.name] = layer.index
            for t in layer.tops:
                if t in producer:
                    raise self._err(f"blob {t!r} is already produced by layer "
                                    f"{producer[t].name!r}; zoo specs have no in-place layers",
                                    layer=layer)
                producer[t] = layer
        for layer in layers:
            for b in layer.bottoms:
                if b not in producer:
                    close = difflib.get_close_matches(b, producer, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise self._err(f"bottom {b!r} is not produced by any layer{hint}", layer=layer)
        return producer

    def _infer(self, layer: Layer) -> None:
        layer.in_shapes = [self.shapes[b] for b in layer.bottoms]
        try:
            layer.out_shapes = layer.kind.infer(layer.p, layer.in_shapes)
            layer.weights = layer.kind.weights(layer.p, layer.in_shapes)
        except L.LayerError as e:
            raise self._err(str(e), layer=layer) from None
        for t, s in zip(layer.tops, layer.out_shapes):
            if any(d <= 0 for d in s):
                raise self._err(f"output {t!r} would have shape {_brief(s)}: sizes must be > 0",
                                layer=layer)
            if math.prod(s) > MAX_BLOB_ELEMENTS:
                raise self._err(f"output {t!r} would have shape {_brief(s)}: more than zoo's "
                                "limit of 2**48 elements per blob", layer=layer)
            self.shapes[t] = s
        for w in layer.weights:
            if math.prod(w.shape) > MAX_BLOB_ELEMENTS:
                raise self._err(f"weight {w.name!r} would have shape {_brief(w.shape)}: more than "
                                f"zoo's limit of 2**48 elements", layer=layer)
        layer.macs = layer.kind.macs(layer.p, layer.in_shapes, layer.out_shapes)
        layer.flops = 2 * layer.macs + layer.kind.elementwise_flops(layer.p, layer.in_shapes,
                                                                   layer.out_shapes)

    def _check_dtypes(self, layer: Layer) -> None:
        """INT64 blobs (class labels, token ids) go only where they are read as integers:
        an Embedding's ids and a SoftmaxWithLoss's labels, which must be INT64."""
        if layer.kind.is_input:
            self.dtypes[layer.tops[0]] = layer.p.dtype
            return
        wants = [FLOAT32] * len(layer.bottoms)
        if layer.type == "Parameter":
            wants = [self.dtypes[layer.bottoms[0]]]   # only its batch size is read
        elif layer.type == "Embedding":
            wants = [INT64]
        elif layer.type == "SoftmaxWithLoss":
            wants = [FLOAT32, INT64]
        for _i, (b, want) in enumerate(zip(layer.bottoms, wants)):
            got = self.dtypes[b]
            if got == want:
                continue
            if want == INT64:
                what = "labels (class ids)" if layer.type == "SoftmaxWithLoss" else "token ids"
                raise self._err(f"bottom {b!r} holds its {what} and must be INT64, but is "
                                f"{DTYPE_NAMES[got]}: declare it as an Input with dtype: INT64",
                                layer=layer)
            raise self._err(f"bottom {b!r} is INT64 (ids or labels); {layer.type} computes on "
                            "FLOAT32 blobs", layer=layer)
        for t in layer.tops:
            self.dtypes[t] = FLOAT32

    # --- derived views ----------------------------------------------------------------
    @property
    def inputs(self) -> list[Layer]:
        return [l for l in self.layers if l.kind.is_input]

    @property
    def loss_layers(self) -> list[Layer]:
        return [l for l in self.layers if l.kind.is_loss]

    @property
    def labels(self) -> list[str]:
        """Inputs consumed only by loss layers: fed in training only."""
        used = {}
        for l in self.layers:
            for b in l.bottoms:
                used.setdefault(b, []).append(l.kind.is_loss)
        return [l.tops[0] for l in self.inputs if used.get(l.tops[0]) and all(used[l.tops[0]])]

    @property
    def data_inputs(self) -> list[str]:
        labels = set(self.labels)
        return [l.tops[0] for l in self.inputs if l.tops[0] not in labels]

    @property
    def deploy_layers(self) -> list[Layer]:
        """The inference graph: no loss layers, no label inputs."""
        labels = set(self.labels)
        return [l for l in self.layers if not l.kind.is_loss and l.tops[0] not in labels]

    @property
    def outputs(self) -> list[str]:
        """Blobs of the inference graph that no inference layer consumes."""
        deploy = self.deploy_layers
        consumed = {b for l in deploy for b in l.bottoms}
        return [t for l in deploy for t in l.tops if t not in consumed and not l.kind.is_input]

    @property
    def losses(self) -> list[str]:
        return [l.tops[0] for l in self.loss_layers]

    @property
    def batch(self) -> int:
        return self.inputs[0].out_shapes[0][0]

    def layer(self, name: str) -> Layer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    def producer(self, blob: str) -> Layer:
        for l in self.layers:
            if blob in l.tops:
                return l
        raise KeyError(blob)

    def weight_specs(self) -> dict[str, L.WeightSpec]:
        """Every weight tensor, keyed "layer.name" (e.g. "conv1.weight")."""
        return {f"{l.name}.{w.name}": w for l in self.layers for w in l.weights}

    @property
    def params(self) -> int:
        return sum(l.params for l in self.layers)

    @property
    def macs(self) -> int:
        return sum(l.macs for l in self.deploy_layers)

    @property
    def flops(self) -> int:
        return sum(l.flops for l in self.deploy_layers)

    def structure(self) -> tuple[str, dict[str, str]]:
        """The inference network up to names and batch size, as text: layers renamed by
        position (l0, l1, ...), blobs after their producer, inputs' batch axis written as 0,
        fields at their default value and then empty messages dropped. Also returns
        {layer name: positional name}. Two specs with the same structure, and the same weights
        under that renaming, are the same network: zoo builds native models from them that
        differ only in names (the import round trips rely on this)."""
        keep = {l.name for l in self.deploy_layers}
        proto = spec_pb2.NetSpec()
        rename, blob = {}, {}
        for lp in self.proto.layer:
            if lp.name not in keep:
                continue
            new = proto.layer.add()
            new.CopyFrom(lp)
            rename[lp.name] = new.name = f"l{len(proto.layer) - 1}"
            tops = list(lp.top) or [lp.name]
            del new.bottom[:], new.top[:]
            new.bottom.extend(blob[b] for b in lp.bottom)
            for i, t in enumerate(tops):
                blob[t] = f"{new.name}:{i}"
            new.top.extend(blob[t] for t in tops)
            if new.type == "Input" and len(new.input_param.shape):
                new.input_param.shape[0] = 0
        _drop_defaults(proto)
        return S.to_prototxt(proto), rename

    def with_batch(self, batch: int) -> "Net":
        """The same network with every input's batch size replaced."""
        if batch <= 0:
            raise SpecError(f"batch must be > 0, got {batch}", file=self.source.file)
        proto = copy.deepcopy(self.proto)
        for lp in proto.layer:
            if lp.type == "Input":
                lp.input_param.shape[0] = batch
        return Net(proto, self.source, self.path)

    @property
    def text(self) -> str:
        """Canonical text form (comments dropped): what the hashes are of."""
        return S.to_prototxt(self.proto)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.proto.SerializeToString(deterministic=True)).hexdigest()

    @property
    def weights_file(self) -> Path | None:
        """The spec's weights file, which must stay inside the spec's folder once symbolic
        links are resolved (as `zoo import` requires of ONNX external data)."""
        if not self.proto.weights:
            return None
        base = self.path.parent if self.path else Path.cwd()
        full = base / self.proto.weights
        if not full.resolve().is_relative_to(base.resolve()):
            raise SpecError(f"weights {self.proto.weights!r} leads outside the spec's folder "
                            f"(to {full.resolve()}) through a symbolic link; refused",
                            file=self.source.file)
        return full

    def __repr__(self) -> str:
        return f"<Net {self.name}: {len(self.layers)} layers, {self.params:,} params>"


def _non_finite(msg, prefix: str) -> str | None:
    """The dotted path of the first float field holding inf or NaN, else None."""
    for fd, value in msg.ListFields():
        path = f"{prefix}.{fd.name}"
        if fd.message_type is not None:
            for i, m in enumerate(value if fd.is_repeated else [value]):
                bad = _non_finite(m, f"{path}[{i}]" if fd.is_repeated else path)
                if bad:
                    return bad
        elif fd.cpp_type in (fd.CPPTYPE_FLOAT, fd.CPPTYPE_DOUBLE):
            for i, v in enumerate(value if fd.is_repeated else [value]):
                if not math.isfinite(v):
                    return f"{path}[{i}] is {v}" if fd.is_repeated else f"{path} is {v}"
    return None


def _brief(shape) -> str:
    """A shape for a message: at most 8 axes shown (a hostile spec may have thousands, whose
    element count has more digits than Python will print)."""
    shape = tuple(shape)
    if len(shape) <= 8:
        return str(shape)
    return f"({', '.join(map(str, shape[:8]))}, ...; {len(shape)} axes)"


def _drop_defaults(msg) -> None:
    for fd, value in list(msg.ListFields()):
        if fd.message_type is None:
            if not fd.is_repeated and value == fd.default_value:
                msg.ClearField(fd.name)
        elif fd.is_repeated:
            for m in value:
                _drop_defaults(m)
        else:
            _drop_defaults(value)
            if not value.ListFields():
                msg.ClearField(fd.name)


def load(name_or_path: str | Path) -> Net:
    """Load and validate a zoo network by name, or a spec file by path."""
    path = S.resolve(name_or_path)
    proto, source = S.read(path)
    return Net(proto, source, path)


def from_text(text: str, fmt: str = "prototxt", file: str = "<spec>") -> Net:
    proto, source = S.parse_json(text, file) if fmt == "json" else S.parse_prototxt(text, file)
    return Net(proto, source)
