"""`zoo import`: existing models (ONNX, Caffe) -> a zoo spec + weights in a new folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import ImportRefused


def import_model(path: str | Path, out: str | Path, weights: str | Path | None = None,
                 batch: int = 1) -> Path:
    """Import FILE into folder OUT; returns the written spec's path. Nothing is written on
    refusal. .onnx: ONNX; .prototxt/.pbtxt: Caffe (with WEIGHTS a .caffemodel, optional)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        if weights:
            raise ImportRefused("--weights is for Caffe models; ONNX keeps its weights inside")
        from .onnx import import_onnx
        return import_onnx(path, out, batch)
    if suffix in (".prototxt", ".pbtxt", ".pt"):
        from .caffe import import_caffe
        return import_caffe(path, out, weights)
    raise ImportRefused(f"{path}: unknown model format (expected .onnx, or a Caffe .prototxt)")
