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

Files are .npz (zip archives of .npy members), read without numpy's loader: each member's
header (name, dtype, shape, declared size) is checked against the spec before its data is
decompressed, the total is bounded, and object arrays (pickles) are refused.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import threading
import zipfile
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
    """The spec's own weights file when it names one, else seeded weights. Read-only arrays,
    remembered for the last few networks (see `_remembered`)."""
    return _remembered(net, seed)[0]


def for_net_with_digest(net, seed: int = 0) -> tuple[dict[str, np.ndarray], str]:
    """`for_net` and the weights' `digest`, both computed once per network."""
    return _remembered(net, seed)


# A whole-zoo verify asks for a network's weights once per engine's build and once for the
# reference: made (or read) and hashed each time, that was 8 times per network. The last
# few are kept, as read-only arrays (a caller that wrote into them would change every later
# caller's weights: it gets a ValueError instead), keyed by what determines them: the spec's
# canonical bytes and the seed, or the weights file's path and stat identity.
_MEMO_NETWORKS = 3
_memo: dict[tuple, tuple[dict[str, np.ndarray], str]] = {}
_memo_lock = threading.Lock()


def _remembered(net, seed: int) -> tuple[dict[str, np.ndarray], str]:
    wf = net.weights_file
    key = (net.sha256, seed) if wf is None else (net.sha256, *_identity(wf))
    with _memo_lock:            # one maker per network; the walk's threads ask at once
        if (hit := _memo.pop(key, None)) is None:
            weights = load(wf, net) if wf is not None else make(net, seed)
            for a in weights.values():
                a.setflags(write=False)
            hit = (weights, digest(weights))
            if wf is not None and _identity(wf) != key[1:]:
                return dict(hit[0]), hit[1]  # replaced while read: used once, never kept
        _memo[key] = hit                     # most recently used last
        while len(_memo) > _MEMO_NETWORKS:
            _memo.pop(next(iter(_memo)))
        return dict(hit[0]), hit[1]


def _identity(path) -> tuple:
    """What tells a weights file's content apart without reading it."""
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def save(weights: dict[str, np.ndarray], path: str | Path) -> None:
    """Write atomically: a temporary file beside the target, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    os.close(fd)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)     # mkstemp makes 0600; weights are an ordinary file
        np.savez(tmp, **weights)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path, net=None) -> dict[str, np.ndarray]:
    """The arrays of a .npz, each member's header checked (against the spec's weights when
    `net` is given) before a byte of its data is decompressed or allocated."""
    return _read_npz(Path(path), net, with_data=True)


def inspect(path: str | Path, net) -> None:
    """Every check `load` makes, reading only the members' headers (for `zoo validate`)."""
    _read_npz(Path(path), net, with_data=False)


def _read_npz(path: Path, net, with_data: bool) -> dict[str, np.ndarray]:
    from .files import open_regular

    file = str(path)
    with open_regular(path, lambda msg: SpecError(msg, file=file)) as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_WEIGHTS_BYTES:
            raise SpecError(f"weights file of {size} bytes is over the limit of "
                            f"{MAX_WEIGHTS_BYTES}", file=file)
        try:
            with zipfile.ZipFile(f) as zf:
                return _read_members(zf, file, net, with_data)
        except SpecError:
            raise
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error,
                NotImplementedError, RuntimeError) as e:
            # RuntimeError: zipfile's refusal of encrypted members
            raise SpecError(f"cannot read weights (a .npz of float32 arrays): "
                            f"{type(e).__name__}: {e}", file=file) from None


def _read_members(zf: zipfile.ZipFile, file: str, net, with_data: bool) -> dict[str, np.ndarray]:
    specs = net.weight_specs() if net is not None else None
    out, total = {}, 0
    members = {}
    for info in zf.infolist():
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if key in members:
            raise SpecError(f"member {info.filename!r} appears twice", file=file)
        if specs is not None and key not in specs:
            raise SpecError(f"weights do not match the spec: unexpected {key!r}", file=file)
        members[key] = info
    if specs is not None:
        missing = sorted(set(specs) - set(members))
        if missing:
            raise SpecError(f"weights do not match the spec: missing {missing[:5]}"
                            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""),
                            file=file)
    for key, info in members.items():
        total += info.file_size
        if total > MAX_WEIGHTS_BYTES:
            raise SpecError(f"weights decompress to more than {MAX_WEIGHTS_BYTES} bytes", file=file)
        want = tuple(specs[key].shape) if specs is not None else None
        with zf.open(info) as m:
            shape, fortran, nbytes = _member_header(m, info, key, want, file)
            if with_data:
                out[key] = _member_data(m, shape, fortran, nbytes, key, file)
    return out


def _member_header(m, info, key: str, want, file: str) -> tuple[tuple, bool, int]:
    """(shape, fortran order, data bytes) from a member's .npy header, refused unless it is
    float32 of the expected shape and its declared size agrees."""
    from numpy.lib import format as npy

    layer = key.split(".")[0]
    try:
        version = npy.read_magic(m)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(m)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(m)
        else:
            raise ValueError(f".npy format version {version} is not read")
    except ValueError as e:
        raise SpecError(f"{key}: not a .npy array: {e}", file=file, layer=layer) from None
    if dtype.hasobject:
        raise SpecError(f"{key} holds Python objects (a pickle); weights are float32 arrays",
                        file=file, layer=layer)
    if dtype != np.float32 or (want is not None and tuple(shape) != want):
        need = f"float32{list(want)}" if want is not None else "float32"
        raise SpecError(f"{key} is {dtype}{list(shape)}, the spec needs {need}", file=file,
                        layer=layer)
    nbytes = 4 * math.prod(shape)
    if info.file_size != m.tell() + nbytes:
        raise SpecError(f"{key}: the archive says {info.file_size} bytes, its header "
                        f"{m.tell() + nbytes}", file=file, layer=layer)
    return tuple(shape), fortran, nbytes


def _member_data(m, shape: tuple, fortran: bool, nbytes: int, key: str, file: str) -> np.ndarray:
    buf = bytearray(nbytes)
    view, got = memoryview(buf), 0
    while got < nbytes:
        n = m.readinto(view[got:got + (1 << 24)])
        if not n:
            raise SpecError(f"{key}: data ends after {got} of {nbytes} bytes", file=file,
                            layer=key.split(".")[0])
        got += n
    a = np.frombuffer(buf, dtype=np.float32).reshape(shape, order="F" if fortran else "C")
    return np.ascontiguousarray(a)


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
