"""Deterministic weights in zoo's canonical layouts, stored pickle-free.

Each tensor is keyed "layer.name" (e.g. "conv1.weight"); its shape and layout are the ones
the layer type documents in specs/zoo.proto. The initialisers (zoo/layers/*.py) are:
  - weights of InnerProduct and Convolution: U(-sqrt(3/fan_in), +sqrt(3/fan_in));
  - biases: U(-0.1, 0.1) (not zero, so that a dropped bias is caught by verify);
  - BatchNorm: gamma U(0.5, 1.5), beta U(-0.1, 0.1), running_mean U(-0.1, 0.1),
    running_var U(0.5, 1.5) (not the identity, so that inference statistics are exercised);
  - LSTM: every tensor U(-0.1, 0.1) (the survey's TensorFlow PTB script); Embedding U(-1, 1).
Every tensor draws from its own generator, seeded by (seed, crc32 of its key), so a tensor's
values do not depend on the other layers of the network. Values are float32.

Files are .npz read with allow_pickle=False; names, shapes and dtypes are checked against
the spec.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

from .errors import SpecError

MAX_WEIGHTS_BYTES = 8 * 2**30


def make(net, seed: int = 0) -> dict[str, np.ndarray]:
    out = {}
    for key, ws in net.weight_specs().items():
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        out[key] = np.ascontiguousarray(ws.init(rng, ws.shape), dtype=np.float32)
    return out


def for_net(net, seed: int = 0) -> dict[str, np.ndarray]:
    """The spec's own weights file when it names one, else seeded weights."""
    if net.weights_file is not None:
        return load(net.weights_file, net)
    return make(net, seed)


def save(weights: dict[str, np.ndarray], path: str | Path) -> None:
    """Write atomically: a temporary file beside the target, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **weights)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path, net=None) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_WEIGHTS_BYTES:
            raise SpecError(f"weights file larger than {MAX_WEIGHTS_BYTES} bytes", file=str(path))
        with np.load(path, allow_pickle=False) as z:
            weights = {k: z[k] for k in z.files}
    except SpecError:
        raise
    except (OSError, ValueError, zlib.error) as e:
        raise SpecError(f"cannot read weights (.npz without pickles): {e}", file=str(path)) from None
    if net is not None:
        check(weights, net, str(path))
    return weights


def check(weights: dict[str, np.ndarray], net, file: str = "<weights>") -> None:
    specs = net.weight_specs()
    missing = sorted(set(specs) - set(weights))
    extra = sorted(set(weights) - set(specs))
    if missing or extra:
        raise SpecError(f"weights do not match the spec: missing {missing[:5]}, unexpected "
                        f"{extra[:5]}", file=file)
    for k, ws in specs.items():
        a = weights[k]
        if a.dtype != np.float32 or tuple(a.shape) != tuple(ws.shape):
            raise SpecError(f"{k} is {a.dtype}{list(a.shape)}, the spec needs float32"
                            f"{list(ws.shape)}", file=file, layer=k.split(".")[0])


def digest(weights: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(weights):
        a = np.ascontiguousarray(weights[k])
        h.update(k.encode() + b"\0" + str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()
