"""`zoo import`: existing models (ONNX, Caffe) -> a zoo spec + weights in a new folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import ImportRefused, UsageError
from .common import LOSSES, ImportResult, spec_name


def import_model(path: str | Path, out: str | Path, weights: str | Path | None = None,
                 batch: int = 1, name: str | None = None, force: bool = False,
                 loss: str | None = None) -> ImportResult:
    """Import FILE into folder OUT; returns what was written (path-like: the spec's path;
    `.notes`: what to tell the user). Nothing is written on refusal. .onnx: ONNX;
    .prototxt/.pbtxt: Caffe (with WEIGHTS a .caffemodel, optional). NAME names the spec and
    its files (default: the model's own name). FORCE replaces an OUT that an earlier import
    wrote (and nothing else). LOSS "softmax" adds a SoftmaxWithLoss on the last output (its
    logits) with an INT64 label input when the model has no loss, so that it trains
    (common.add_loss; the spec's header comment says what was added); None adds nothing."""
    if loss is not None and loss not in LOSSES:
        raise UsageError(f"--loss {loss!r}: one of {', '.join(LOSSES)}")
    path = Path(path)
    name = spec_name(name) if name is not None else None
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        if weights:
            raise ImportRefused("--weights is for Caffe models; ONNX keeps its weights inside")
        from .onnx import import_onnx
        return import_onnx(path, out, batch, name=name, force=force, loss=loss)
    if suffix in (".prototxt", ".pbtxt", ".pt"):
        from .caffe import import_caffe
        return import_caffe(path, out, weights, name=name, force=force, loss=loss)
    raise ImportRefused(f"{path}: unknown model format (expected .onnx, or a Caffe .prototxt)")


__all__ = ["LOSSES", "ImportResult", "import_model"]
