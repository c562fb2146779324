"""What the importers share: building a spec from layers, unique names, writing the result.

An importer turns a foreign model into (NetSpec, weights). Nothing is written until the
whole model has been understood: unsupported operators are collected, counted and refused
together, before any output exists; the output folder is written to a temporary name and
renamed when complete, with an import.json listing what it wrote (so that --force replaces
only a folder an import wrote, unchanged). zoo chooses every file name it writes (never a name
from the input). Folders and files are made under the user's umask; a full disk is one line
(NoSpace, exit 2) and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import spec as S
from .. import spec_pb2
from .. import weights as W
from ..cache import is_no_space, no_space
from ..files import sha256_file, swap_folder
from ..errors import ImportRefused, SpecError, UsageError

MAX_MODEL_BYTES = 4 * 2**30
MANIFEST = "import.json"      # what zoo wrote in an import folder: --force replaces only that
SPACE_MARGIN = 1 << 20        # the spec, the manifest, the zip's directory


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
        self.notes: list[str] = []     # what the user should know about the result
        self.weights: dict[str, np.ndarray] = {}
        self.used: set[str] = set()
        self.unsupported: Counter = Counter()
        self.problems: list[str] = []
        self.header: list[str] = []    # comment lines at the top of the written spec

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


def spec_name(name: str) -> str:
    """`--name`: used as given (it names the files NAME.prototxt and NAME.npz), if it is one."""
    from ..net import NAME_RE, NAME_RULE
    if not NAME_RE.match(name):
        raise UsageError(f"--name {name!r}: a spec name is {NAME_RULE}")
    return name


@dataclass(frozen=True)
class ImportResult:
    """What `zoo import` wrote. It is path-like (the spec's path), so it can be passed on to
    zoo.load / verify as it is; `notes` are what the user should be told (e.g. that the
    weights were made from a seed because none were given)."""

    spec: Path
    weights: Path
    notes: tuple[str, ...] = ()

    def __fspath__(self) -> str:
        return str(self.spec)

    def __str__(self) -> str:
        return str(self.spec)


def write(builder: SpecBuilder, out: Path, source: Path, force: bool = False,
          loss: str | None = None) -> ImportResult:
    """Validate, then write OUT/NAME.prototxt, OUT/NAME.npz and OUT/import.json: to a
    temporary folder beside OUT, swapped in when complete. An existing OUT is replaced only
    with `force` and only if it holds exactly what an earlier import wrote there. LOSS
    (`zoo import --loss`): see add_loss."""
    add_loss(builder, loss, source)
    spec = builder.spec
    fname = spec.name
    spec.weights = f"{fname}.npz"
    net = check_net(spec, source)
    try:
        W.check(builder.weights, net, f"{fname}.npz")
    except SpecError as e:
        raise ImportRefused(_refusal(source, e)) from None
    out = Path(out)
    _check_target(out, force)
    needed = sum(a.nbytes for a in builder.weights.values()) + SPACE_MARGIN
    try:
        _make_parent(out)
        if (free := shutil.disk_usage(out.parent).free) < needed:
            raise no_space(out.parent, needed, free, what="the import")
        _write_folder(builder, out, source)
    except OSError as e:
        if is_no_space(e):                # the temporary folder is gone already
            raise no_space(out.parent, needed, what="the import") from None
        raise ImportRefused(f"cannot write {out}: {e.strerror or e}") from None
    return ImportResult(out / f"{fname}.prototxt", out / f"{fname}.npz", tuple(builder.notes))


# --- `zoo import --loss`: a loss for a model exported without one ----------------------------
LOSSES = ("softmax",)


def add_loss(builder: SpecBuilder, loss: str | None, source: Path) -> None:
    """`--loss softmax`: a SoftmaxWithLoss on the network's last output with an INT64 label
    Input, so that the imported model trains in any engine (`zoo verify --mode train`). A
    final Softmax is a probability, not logits: the loss then reads its input and the Softmax
    stays an output. (N, K, 1, 1) logits (a 1x1-convolution classifier) are flattened to
    (N, K), and the output with them. A model that has a loss keeps it and gets none. What was
    added is stated in a comment at the top of the spec and in the notes."""
    if loss is None:
        return
    if loss not in LOSSES:
        raise UsageError(f"--loss {loss!r}: one of {', '.join(LOSSES)}")
    net = check_net(builder.spec, source)
    if net.loss_layers:
        builder.notes.append(f"--loss {loss}: the model has its own loss "
                             f"({', '.join(l.name for l in net.loss_layers)}); none was added")
        return
    if not net.outputs:
        raise ImportRefused(f"{source}: --loss {loss}: the network has no output to put a loss on")
    output = net.outputs[-1]
    logits, why = _logits_of(net, output, source)
    shape = tuple(net.shapes[logits])
    if len(shape) == 4 and shape[2:] == (1, 1):
        logits = _flatten_logits(builder, logits, net.producer(output) if logits != output else None)
        why += f"; flattened from {shape} to {shape[:2]}, and the output {output!r} with it"
        shape = shape[:2]
    if len(shape) not in (2, 3):
        raise ImportRefused(f"{source}: --loss {loss}: the last output {output!r} has shape {tuple(shape)}; "
                            "SoftmaxWithLoss takes logits (N, K) or (N, T, K)")
    label = builder.unique("label")
    builder.layer(label, "Input", [], input_param={"shape": list(shape[:-1]), "dtype": spec_pb2.InputParam.INT64})
    name = builder.unique("loss")
    builder.layer(name, "SoftmaxWithLoss", [logits, label])
    said = (f"--loss {loss}: added by zoo import: layer {name!r} (SoftmaxWithLoss) on {logits!r} ({why}) "
            f"with INT64 class labels {label!r} of shape {list(shape[:-1])}, classes 0..{shape[-1] - 1}")
    builder.header.append(said)
    builder.notes.append(said)
    if fused := _fused_batchnorm_note(net, source):
        builder.header.append(fused)
        builder.notes.append(fused)


def _logits_of(net, output: str, source: Path) -> tuple[str, str]:
    """The blob a softmax loss should read for OUTPUT, and why that one: a final Softmax's
    input (its logits) when its classes are the last axis that is not 1, else OUTPUT."""
    layer = net.producer(output)
    if layer.type not in ("Softmax", "LogSoftmax"):
        return output, "the last output"
    x = layer.bottoms[0]
    shape = net.shapes[x]
    axis = int(layer.p.axis) % len(shape)
    if any(d != 1 for d in shape[axis + 1:]):
        raise ImportRefused(f"{source}: --loss softmax: the last output {output!r} is a {layer.type} over axis "
                            f"{axis} of {tuple(shape)}, not over its classes last; zoo's SoftmaxWithLoss takes "
                            "classes on the last axis")
    return x, f"the logits: the input of {layer.type} {layer.name!r}, which stays an output"


def _flatten_logits(builder: SpecBuilder, blob: str, softmax) -> str:
    """(N, K, 1, 1) logits -> (N, K) for the loss. The network's output is flattened with them
    (the Softmax, if any, now reads the flat blob), so that the outputs stay one set of class
    scores rather than gaining a second."""
    name = builder.unique(f"{blob}_flat")
    builder.layer(name, "Flatten", [blob], flatten_param={"axis": 1})
    if softmax is not None:
        layers = [spec_pb2.LayerSpec() for _ in builder.spec.layer]   # copies: the field is rebuilt
        for copy, layer in zip(layers, builder.spec.layer):
            copy.CopyFrom(layer)
        at = next(i for i, l in enumerate(layers) if l.name == softmax.name)
        layers[at].bottom[0] = name
        layers.insert(at, layers.pop())          # written before the Softmax that reads it
        del builder.spec.layer[:]
        builder.spec.layer.extend(layers)
    return name


def _fused_batchnorm_note(net, source: Path) -> str | None:
    """Exporters fold an inference BatchNorm into the convolution before it (torch.onnx.export
    in eval mode does): the import sees a convolution with a bias and nothing else. It stays
    fused: that convolution trains as one layer, without batch statistics. Said when it may be
    the case (an ONNX model with biased convolutions and no BatchNorm)."""
    types = {l.type for l in net.layers}
    biased = any(l.type == "Convolution" and l.p.bias_term for l in net.layers)
    if source.suffix.lower() != ".onnx" or "BatchNorm" in types or not biased:
        return None
    return ("any BatchNorm the exporter fused into a convolution stays fused: a biased Convolution, "
            "trained as one layer without batch statistics")


def _make_parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if is_no_space(e):
            raise
        blocker = next((p for p in out.parents if os.path.lexists(p)), None)
        if blocker is not None and not blocker.is_dir():
            raise ImportRefused(f"cannot make {out}: {blocker} is a file, not a folder") from None
        raise ImportRefused(f"cannot make the folder {out.parent}: {e.strerror or e}") from None


def check_net(spec, source: Path):
    """The imported spec as a Net, or a refusal naming the model file (and the layer) when the
    import made an invalid network of it."""
    from ..net import Net
    try:
        return Net(spec)
    except SpecError as e:
        raise ImportRefused(_refusal(source, e)) from None


def _refusal(source: Path, e: SpecError) -> str:
    """A SpecError about the imported spec, told about the model file it came from."""
    who = f"layer '{e.layer}'" + (f" ({e.layer_type})" if e.layer_type else "") + ": " if e.layer else ""
    return f"{source}: cannot import: {who}{e.message}; nothing was written"


def _write_folder(builder: SpecBuilder, out: Path, source: Path) -> None:
    fname = builder.spec.name
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the import is an ordinary folder
        header = "".join(f"# {line}\n" for line in builder.header)
        (tmp / f"{fname}.prototxt").write_text(header + S.to_prototxt(builder.spec))
        W.save(builder.weights, tmp / f"{fname}.npz")
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps({
            "zoo_import": 1, "source": str(source), "files": files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_target(out: Path, force: bool) -> None:
    """Refuse an OUT that exists and is not empty, unless `force` and zoo wrote all of it."""
    if out.is_symlink() or (os.path.lexists(out) and not out.is_dir()):
        raise ImportRefused(f"{out} exists and is not a folder; zoo will not replace it")
    if not out.is_dir() or not any(out.iterdir()):
        return
    why = _not_ours(out)
    if why:
        raise ImportRefused(f"{out} exists and is not empty ({why}); zoo replaces only a folder an "
                            "earlier `zoo import` wrote: choose another --out")
    if not force:
        raise ImportRefused(f"{out} exists and is not empty (an earlier import); --force replaces it")


def _not_ours(out: Path) -> str | None:
    """Why OUT is not exactly what an earlier import wrote there, or None if it is."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"no readable {MANIFEST} of zoo's"
    found = {p.name for p in out.iterdir()}
    extra = sorted(found - set(files) - {MANIFEST})
    if extra:
        return f"it holds files zoo did not write: {', '.join(extra[:3])}"
    for name, digest in files.items():
        p = out / name
        if p.is_symlink() or not p.is_file() or sha256_file(p) != digest:
            return f"{name} was changed since zoo wrote it"
    return None


def _swap_into_place(tmp: Path, out: Path) -> None:
    if out.exists() and not any(out.iterdir()):   # an empty folder the user made for the import
        out.rmdir()
    swap_folder(tmp, out)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
