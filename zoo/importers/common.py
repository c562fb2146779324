"""What the importers share: building a spec from layers, unique names, writing the result.

An importer turns a foreign model into (NetSpec, weights). Nothing is written until the
whole model has been understood: unsupported operators are collected, counted and refused
together, before any output exists; the output folder is written to a temporary name and
renamed when complete. zoo chooses every file name it writes (never a name from the input).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from .. import spec as S
from .. import spec_pb2
from .. import weights as W
from ..errors import ImportRefused

MAX_MODEL_BYTES = 4 * 2**30


def check_file(path: Path, limit: int = MAX_MODEL_BYTES) -> bytes:
    """The bytes of a model file: a regular file (not a link, FIFO or device), read with a
    hard limit of `limit` bytes whatever its size claims."""
    from ..files import read_bytes

    if path.is_symlink():
        raise ImportRefused(f"{path}: not a regular file (a symbolic link)")

    return read_bytes(path, limit, lambda msg: ImportRefused(
        f"{path}: {msg.replace('the limit', 'the import limit')}"), follow_symlinks=False)


class SpecBuilder:
    """Accumulates spec layers and canonical weights with unique, sanitised names."""

    def __init__(self, name: str):
        self.spec = spec_pb2.NetSpec(name=sanitize(name) or "imported")
        self.weights: dict[str, np.ndarray] = {}
        self.used: set[str] = set()
        self.unsupported: Counter = Counter()
        self.problems: list[str] = []

    def unique(self, base: str) -> str:
        base = sanitize(base) or "x"
        name, i = base, 1
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name

    def layer(self, name: str, type_: str, bottoms: list[str], top: str | None = None, **params):
        lp = self.spec.layer.add(name=name, type=type_)
        lp.bottom.extend(bottoms)
        lp.top.append(top or name)
        for field, values in params.items():
            msg = getattr(lp, field)
            for k, v in values.items():
                if isinstance(v, (list, tuple)):
                    getattr(msg, k).extend(v)
                else:
                    setattr(msg, k, v)
            if not values:
                msg.SetInParent()
        return lp

    def weight(self, layer: str, key: str, array) -> None:
        self.weights[f"{layer}.{key}"] = np.ascontiguousarray(np.asarray(array, dtype=np.float32))

    def refuse_if_unsupported(self, source: str) -> None:
        if self.unsupported or self.problems:
            parts = []
            if self.unsupported:
                parts.append("unsupported: " + ", ".join(f"{op} x{n}" for op, n in sorted(self.unsupported.items())))
            parts += self.problems[:10]
            raise ImportRefused(f"{source}: cannot import ({'; '.join(parts)}); nothing was written")


def sanitize(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip("._-")
    return s[:120]


def write(builder: SpecBuilder, out: Path, net_check) -> Path:
    """Validate, then write OUT/NAME.prototxt and OUT/NAME.npz atomically."""
    spec = builder.spec
    fname = spec.name
    spec.weights = f"{fname}.npz"
    net = net_check(spec)                 # raises SpecError if the import made nonsense
    W.check(builder.weights, net, f"{fname}.npz")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and any(out.iterdir()):
        raise ImportRefused(f"{out} exists and is not empty")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / f"{fname}.prototxt").write_text(S.to_prototxt(spec))
        W.save(builder.weights, tmp / f"{fname}.npz")
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / f"{fname}.prototxt"
