"""zoo's Python API: everything the `zoo` command does is one of these calls.

    import zoo
    net = zoo.load("alexnet-r")            # or a path to a .prototxt / .json spec
    zoo.summary(net)                       # name, params, FLOPs, inputs, outputs
    w = zoo.weights.make(net, seed=0)
    blobs = zoo.reference.forward(net, w, zoo.data.make(net))
    zoo.build("alexnet-r", "onnx", out="d")
    zoo.verify(["alexnet-r"], engines=["onnx", "torch"])
"""

from __future__ import annotations

from pathlib import Path

from . import spec as S
from .errors import SpecError
from .net import Net, load


def summary(net: Net) -> dict:
    """One row of `zoo list`: per-sample (batch 1) FLOPs and MACs."""
    one = net.with_batch(1)
    return {
        "name": net.name,
        "description": net.description,
        "inputs": {l.tops[0]: list(l.out_shapes[0][1:]) for l in one.inputs
                   if l.tops[0] not in one.labels},
        "labels": {b: list(one.shapes[b][1:]) for b in one.labels},
        "outputs": {o: list(one.shapes[o][1:]) for o in one.outputs},
        "layers": len(net.layers),
        "params": net.params,
        "macs": one.macs,
        "flops": one.flops,
        "batch_cpu": net.train.batch_cpu,
        "batch_gpu": net.train.batch_gpu,
        "file": str(net.path) if net.path else None,
    }


def list_networks() -> list[dict]:
    return [summary(load(name)) for name in S.zoo_names()]


def show(name_or_path: str | Path, batch: int = 1) -> dict:
    """Per layer: type, output shape, parameters, MACs and FLOPs, at the given batch."""
    net = load(name_or_path).with_batch(batch)
    deploy = {l.name for l in net.deploy_layers}
    rows = [{
        "name": l.name, "type": l.type, "bottoms": l.bottoms, "tops": l.tops,
        "output_shapes": [list(s) for s in l.out_shapes], "params": l.params,
        "macs": l.macs, "flops": l.flops, "inference": l.name in deploy,
    } for l in net.layers]
    return {**summary(net), "batch": batch, "macs": net.macs, "flops": net.flops,
            "layer_table": rows,
            "train": {"lr": net.train.lr, "momentum": net.train.momentum,
                      "weight_decay": net.train.weight_decay}}


def validate(paths: list[str | Path]) -> list[tuple[str, SpecError | None]]:
    """(path, None) for each valid spec, (path, error) for each invalid one. Checks all that
    can be checked without an engine: the spec, and its weights file's names, dtypes and
    shapes (from the members' headers; no data is read)."""
    out = []
    for p in paths:
        try:
            _check_weights_file(load(p))
            out.append((str(p), None))
        except SpecError as e:
            out.append((str(p), e))
    return out


def _check_weights_file(net: Net) -> None:
    from . import weights as W

    wf = net.weights_file
    if wf is None:
        return
    if not wf.exists() and not wf.is_symlink():
        raise SpecError(f"weights {net.proto.weights!r}: no such file ({wf})", file=net.source.file)
    W.inspect(wf, net)


def convert(path: str | Path, to: str) -> str:
    """A spec in the other format (prototxt <-> json), validated first."""
    if to not in ("json", "prototxt"):
        raise SpecError(f"unknown format {to!r}: json or prototxt", file=str(path))
    net = load(path)
    return S.to_json(net.proto) if to == "json" else S.to_prototxt(net.proto)
