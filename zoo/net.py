"""The in-memory network: a validated spec with every blob's shape, every layer's weights,
parameter count and FLOPs. Engine-free.

`load("alexnet-r")` or `load("path/to/spec.prototxt")` returns a `Net`; every problem is a
`SpecError` naming the file, line or JSON path, and the layer.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import layers as L
from . import spec as S
from . import spec_pb2
from .errors import SpecError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
PARAM_FIELDS = [f.name for f in spec_pb2.LayerSpec.DESCRIPTOR.fields if f.name.endswith("_param")]
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
            raise self._err(f"name {self.proto.name!r} may hold letters, digits, '-', '_', '.'")
        if self.proto.weights:
            wp = Path(self.proto.weights)
            if wp.is_absolute() or ".." in wp.parts:
                raise self._err(f"weights {self.proto.weights!r} must be a path inside the spec's folder")
        layers = [self._make_layer(i, lp) for i, lp in enumerate(self.proto.layer)]
        if not layers:
            raise self._err("the spec has no layers")
        self.layers = self._toposort(layers)
        for layer in self.layers:
            self._infer(layer)
        if not any(layer.kind.is_input for layer in self.layers):
            raise self._err("the spec has no Input layer")
        if not self.outputs:
            raise self._err("the spec has no output: every blob is consumed or is a loss")

    def _make_layer(self, index: int, lp) -> Layer:
        name, type_ = lp.name, lp.type
        if not name:
            raise self._err("a layer has no name", index)
        if not type_:
            raise self._err("the layer has no type", index, name=name)
        if type_ in REFUSED_TYPES:
            raise self._err(REFUSED_TYPES[type_], index, name=name, type_=type_)
        if type_ not in L.REGISTRY:
            raise self._err(f"unknown layer type {type_!r}; known types: "
                            f"{', '.join(sorted(L.REGISTRY))}", index, name=name, type_=type_)
        kind = L.REGISTRY[type_]
        for f in PARAM_FIELDS:
            if lp.HasField(f) and f != kind.param_field:
                raise self._err(f"{f} does not apply to a {type_} layer", index, name=name, type_=type_)
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
        if len(layer.tops) != kind.n_tops:
            raise self._err(f"has {kind.n_tops} top(s), got {len(layer.tops)}", layer=layer)
        try:
            kind.check(p)
        except L.LayerError as e:
            raise self._err(str(e), layer=layer) from None
        return layer

    def _toposort(self, layers: list[Layer]) -> list[Layer]:
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
                    raise self._err(f"bottom {b!r} is not produced by any layer", layer=layer)
        order, state = [], {}   # state: 1 visiting, 2 done

        def visit(layer: Layer, chain: list[str]) -> None:
            # iterative depth-first search would be longer; specs are shallow enough for
            # recursion only up to their depth, so guard it explicitly
            if state.get(layer.name) == 2:
                return
            if state.get(layer.name) == 1:
                cycle = chain[chain.index(layer.name):] + [layer.name]
                raise self._err(f"cycle: {' -> '.join(cycle)}", layer=layer)
            if len(chain) > 100000:
                raise self._err("graph too deep", layer=layer)
            state[layer.name] = 1
            for b in layer.bottoms:
                visit(producer[b], chain + [layer.name])
            state[layer.name] = 2
            order.append(layer)

        import sys
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 4 * len(layers) + 100))
        try:
            for layer in layers:
                visit(layer, [])
        finally:
            sys.setrecursionlimit(limit)
        return order

    def _infer(self, layer: Layer) -> None:
        layer.in_shapes = [self.shapes[b] for b in layer.bottoms]
        try:
            layer.out_shapes = layer.kind.infer(layer.p, layer.in_shapes)
            layer.weights = layer.kind.weights(layer.p, layer.in_shapes)
        except L.LayerError as e:
            raise self._err(str(e), layer=layer) from None
        for t, s in zip(layer.tops, layer.out_shapes):
            if any(d <= 0 for d in s):
                raise self._err(f"output {t!r} would have shape {s}: sizes must be > 0",
                                layer=layer)
            self.shapes[t] = s
        layer.macs = layer.kind.macs(layer.p, layer.in_shapes, layer.out_shapes)
        layer.flops = 2 * layer.macs + layer.kind.elementwise_flops(layer.p, layer.in_shapes,
                                                                   layer.out_shapes)

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
        return [l.tops[0] for l in self.inputs if l.tops[0] not in self.labels]

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
            raise SpecError(f"batch must be > 0, got {batch}")
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
        if not self.proto.weights:
            return None
        base = self.path.parent if self.path else Path.cwd()
        return base / self.proto.weights

    def __repr__(self) -> str:
        return f"<Net {self.name}: {len(self.layers)} layers, {self.params:,} params>"


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
