"""Fuzzing zoo's untrusted-input paths: valid inputs, mutated, fed to validate/show/import.

Every case must end in a clean acceptance or a clean refusal (a ZooError), within a time
limit and a memory bound: any other exception, a hang or a blown memory bound is a defect.
Cases run in a forked worker process that holds an address-space limit (RLIMIT_AS) and
per-case alarms (CPU time, and WALL_FACTOR times as much wall time, so that a busy machine
does not turn a slow case into a "hang"), so a runaway case cannot take the test run down with it; a worker that dies
or stops answering is recorded as that case's failure and replaced.

Used by tests/test_fuzz.py (a few hundred cases, hypothesis picks them) and by
benchmarks/fuzz.py (long runs: `--cases 5000`). A case is (kind, seed): everything about it
is derived from the seed, so a failure is reproduced with `benchmarks/fuzz.py --case KIND:SEED`.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import random
import re
import resource
import shutil
import signal
import tempfile
import time
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MEMORY_BOUND = 1 << 30        # address space a case may add on top of the worker's baseline
TIME_LIMIT = 20.0             # CPU seconds per case (the worker's, every thread)
WALL_FACTOR = 3               # and wall seconds: a case blocked, or starved on a busy machine
SEED_NETS = ["linreg", "twolayer", "softmax-mnist", "alexnet-r", "lstm-32"]
# small networks for the importers' seeds besides zoo's own: every layer type and pattern the
# importers map (ONNX's Transpose/LSTM/Squeeze, BatchNorm folding, Eltwise coefficients, CEIL
# pooling; Caffe's time-major LSTM with its `cont` input, BatchNorm + Scale)
TINY_NETS = {
    "tiny-lstm": """name: "tiny-lstm"
layer { name: "tokens" type: "Input" input_param { shape: [2, 5] dtype: INT64 } }
layer { name: "embed" type: "Embedding" bottom: "tokens" embedding_param { input_dim: 10 num_output: 4 } }
layer { name: "lstm" type: "LSTM" bottom: "embed" lstm_param { num_output: 6 } }
layer { name: "fc" type: "InnerProduct" bottom: "lstm" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" softmax_param { axis: 2 } }
""",
    "tiny-mix": """name: "tiny-mix"
layer { name: "data" type: "Input" input_param { shape: [2, 3, 8, 8] } }
layer { name: "conv1" type: "Convolution" bottom: "data" convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" }
layer { name: "relu1" type: "ReLU" bottom: "bn1" }
layer { name: "conv2" type: "Convolution" bottom: "relu1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "add" type: "Eltwise" bottom: "conv2" bottom: "relu1" eltwise_param { operation: SUM coeff: [1, 0.5] } }
layer { name: "pool1" type: "Pooling" bottom: "add" pooling_param { pool: MAX kernel_size: 3 stride: 2 round_mode: CEIL } }
layer { name: "pool2" type: "Pooling" bottom: "add" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR avg_divisor: PADDED } }
layer { name: "cat" type: "Concat" bottom: "pool1" bottom: "pool2" }
layer { name: "sig" type: "Sigmoid" bottom: "cat" }
layer { name: "drop" type: "Dropout" bottom: "sig" }
layer { name: "flat" type: "Flatten" bottom: "drop" }
layer { name: "fc" type: "InnerProduct" bottom: "flat" inner_product_param { num_output: 5 } }
layer { name: "tanh" type: "TanH" bottom: "fc" }
layer { name: "prob" type: "Softmax" bottom: "tanh" }
""",
}
MODEL_NETS = ["linreg", "twolayer", "alexnet-r", *TINY_NETS]     # exported, then imported
KINDS = ["prototxt", "json", "npz", "onnx", "caffe"]

NUMBERS = ["0", "-1", "1", "2147483647", "4294967296", "4611686018427387904", "-9223372036854775808",
           "1e308", "-1e308", "nan", "inf", "0.5", "999999999999999999999999"]


@dataclass
class Outcome:
    kind: str
    seed: int
    status: str          # "accepted", "refused", "internal", "hang", "memory", "crash"
    detail: str = ""
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return self.status in ("accepted", "refused")


# --- mutators --------------------------------------------------------------------------------
def mutate_text(text: str, rng: random.Random) -> str:
    """One to three structural edits of a protobuf-text or JSON document."""
    for _ in range(rng.randint(1, 3)):
        lines = text.splitlines(keepends=True) or [""]
        op = rng.randrange(8)
        if op == 0:                                    # truncate
            text = text[:rng.randrange(len(text) + 1)]
        elif op == 1:                                  # delete a line
            del lines[rng.randrange(len(lines))]
            text = "".join(lines)
        elif op == 2:                                  # duplicate a line
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            text = "".join(lines)
        elif op == 3:                                  # replace a number
            nums = list(re.finditer(r"-?\d+(\.\d+)?(e-?\d+)?", text))
            if nums:
                m = rng.choice(nums)
                text = text[:m.start()] + rng.choice(NUMBERS) + text[m.end():]
        elif op == 4:                                  # swap two identifiers
            words = list(re.finditer(r"[A-Za-z_][A-Za-z_0-9]*", text))
            if len(words) > 1:
                a, b = rng.sample(words, 2)
                m = rng.choice([a, b])
                text = text[:m.start()] + (b.group() if m is a else a.group()) + text[m.end():]
        elif op == 5:                                  # insert a bracket or quote
            i = rng.randrange(len(text) + 1)
            text = text[:i] + rng.choice(["{", "}", "[", "]", '"', ":", ",", "\\", "\0"]) + text[i:]
        elif op == 6:                                  # repeat a block many times
            i = rng.randrange(len(lines))
            lines[i:i + 1] = [lines[i]] * rng.choice([2, 50, 2000])
            text = "".join(lines)
        else:                                          # random bytes as text
            i = rng.randrange(len(text) + 1)
            text = text[:i] + "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randint(1, 8))) + text[i:]
    return text


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and data:
            del data[rng.randrange(len(data)):]
        elif op == 1 and data:
            for _ in range(rng.randint(1, 16)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 2:
            i = rng.randrange(len(data) + 1)
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif data:
            i = rng.randrange(len(data))
            data[i:i] = data[i:i + rng.randint(1, 256)] * rng.randint(2, 8)
    return bytes(data)


# --- seeds: valid inputs made by zoo itself ----------------------------------------------------
class Seeds:
    """Valid specs, weights and exported models, made once per worker in a scratch folder."""

    def __init__(self, root: Path):
        import zoo
        from zoo import spec as S
        from zoo import weights as W

        self.root = root
        self.nets = {n: zoo.load(n) for n in SEED_NETS}
        self.text = {n: Path(net.path).read_text() for n, net in self.nets.items()}
        self.json = {n: S.to_json(net.proto) for n, net in self.nets.items()}
        self.weights = {n: W.make(net, 0) for n, net in self.nets.items() if n != "alexnet-r"}
        self.nets.update({n: zoo.from_text(text) for n, text in TINY_NETS.items()})
        self._models: dict[tuple[str, str], dict[str, bytes]] = {}

    def models(self, fmt: str, name: str) -> dict[str, bytes]:
        """{file name: bytes} of the zoo converter's output for `fmt` ("onnx" or "caffe")."""
        key = (fmt, name)
        if key not in self._models:
            import importlib

            from zoo import weights as W
            net = self.nets[name].with_batch(1)
            out = Path(tempfile.mkdtemp(dir=self.root))
            importlib.import_module(f"zoo.converters.{fmt}").build(net, W.make(net, 0), out, {})
            self._models[key] = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
            shutil.rmtree(out)
        return self._models[key]


# --- one case ---------------------------------------------------------------------------------
def _npz_bytes(arrays: dict, deflate: set[str] = frozenset()) -> bytes:
    """An .npz as numpy writes it; the members named in `deflate` compressed, the others stored
    (compressing lstm-32's random weights would take most of a case's time limit)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compresslevel=1) as z:
        for key, a in arrays.items():
            z.compression = zipfile.ZIP_DEFLATED if key in deflate else zipfile.ZIP_STORED
            with z.open(key + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=True)   # op 3's pickle
    return buf.getvalue()


def _npz_with_header(name: str, shape: tuple, dtype: str, payload: bytes) -> bytes:
    """An .npz whose member declares `shape`/`dtype` but holds `payload` (e.g. a lie)."""
    buf, hdr = io.BytesIO(), io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": dtype, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name + ".npy", hdr.getvalue() + payload)   # the header writer adds the magic
    return buf.getvalue()


def make_npz(seeds: Seeds, rng: random.Random) -> tuple[str, bytes]:
    name = rng.choice([n for n in seeds.weights])
    w = {k: v.copy() for k, v in seeds.weights[name].items()}
    keys = sorted(w)
    op = rng.randrange(9)
    if op == 0:
        del w[rng.choice(keys)]
    elif op == 1:
        k = rng.choice(keys)
        w[k] = np.zeros([d + rng.choice([-1, 1]) for d in w[k].shape] or [2], np.float32)
    elif op == 2:
        k = rng.choice(keys)
        w[k] = w[k].astype(rng.choice([np.float64, np.int32, np.float16]))
    elif op == 3:
        w[rng.choice(keys)] = np.array([{"x": 1}], dtype=object)       # a pickle inside
    elif op == 4:
        w["extra.weight"] = np.zeros(3, np.float32)
    elif op == 5:
        k = rng.choice(keys)
        return name, _npz_with_header(k, (1 << rng.choice([20, 30, 40, 62]),) * 2, "<f4", b"\0" * 64)
    elif op == 6:                                 # a small file that inflates to a lot
        k = rng.choice(keys)
        w[k] = np.zeros((rng.choice([2, 16, 64]) << 20,), np.float32)
        return name, _npz_bytes(w, deflate={k})
    data = _npz_bytes(w)
    return name, (mutate_bytes(data, rng) if op >= 7 else data)


def run_case(seeds: Seeds, kind: str, seed: int, scratch: Path) -> str:
    """Run one case; returns "accepted" or raises (ZooError = refused)."""
    import zoo
    from zoo import weights as W
    from zoo.importers import import_model

    rng = random.Random(f"{kind}:{seed}")
    name = rng.choice(SEED_NETS)
    work = Path(tempfile.mkdtemp(dir=scratch))
    try:
        if kind in ("prototxt", "json"):
            src = seeds.text[name] if kind == "prototxt" else seeds.json[name]
            f = work / ("net.json" if kind == "json" else "net.prototxt")
            f.write_text(mutate_text(src, rng), errors="surrogatepass")
            zoo.show(str(f), batch=rng.choice([1, 2]))
            zoo.convert(str(f), "json" if kind == "prototxt" else "prototxt")
        elif kind == "npz":
            wname, data = make_npz(seeds, rng)
            (work / "w.npz").write_bytes(data)
            W.load(work / "w.npz", seeds.nets[wname])
            spec = seeds.text[wname].replace('name: "', 'weights: "w.npz"\nname: "', 1)
            (work / "net.prototxt").write_text(spec)
            zoo.load(str(work / "net.prototxt"))
        elif kind == "onnx":
            data = seeds.models("onnx", rng.choice(MODEL_NETS))["model.onnx"]
            (work / "m.onnx").write_bytes(_mutate_onnx(data, rng))
            import_model(work / "m.onnx", work / "out")
        elif kind == "caffe":
            files = seeds.models("caffe", rng.choice(MODEL_NETS))
            proto, model = files["deploy.prototxt"].decode(), files["weights.caffemodel"]
            if rng.random() < 0.3:                  # the same net in Caffe's old V1 format
                proto, model = caffe_v1(proto, model)
            if rng.random() < 0.6:
                proto = mutate_text(proto, rng)
            else:
                model = mutate_bytes(model, rng)
            (work / "deploy.prototxt").write_text(proto, errors="surrogatepass")
            (work / "w.caffemodel").write_bytes(model)
            import_model(work / "deploy.prototxt", work / "out",
                         weights=work / "w.caffemodel" if rng.random() < 0.8 else None)
        else:
            raise ValueError(kind)
        return "accepted"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def caffe_v1(proto: str, model: bytes) -> tuple[str, bytes]:
    """A Caffe deploy prototxt and .caffemodel rewritten in the V1 format (`layers { type:
    CONVOLUTION }`, inputs as `input:` + `input_shape`), as old Caffe models are written;
    unchanged if a layer type has no V1 form (BatchNorm, LSTM, ...)."""
    from google.protobuf import text_format

    from zoo.converters import caffe_pb2 as C
    from zoo.importers.caffe import V1_TYPES
    net, weights = C.NetParameter(), C.NetParameter()
    text_format.Parse(proto, net)
    if any(lp.type not in V1_TYPES.values() and lp.type != "Input" for lp in net.layer):
        return proto, model
    weights.ParseFromString(model)
    return text_format.MessageToString(_to_v1(net)), _to_v1(weights).SerializeToString()


def _to_v1(net):
    from zoo.converters import caffe_pb2 as C
    from zoo.importers.caffe import V1_TYPES

    enum = {v2: v1 for v1, v2 in V1_TYPES.items()}
    v1_fields = C.V1LayerParameter.DESCRIPTOR.fields_by_name
    out = C.NetParameter(name=net.name, input=net.input, input_shape=net.input_shape, input_dim=net.input_dim)
    for lp in net.layer:
        if lp.type == "Input":
            for i, top in enumerate(lp.top):
                out.input.append(top)
                if lp.input_param.shape:
                    out.input_shape.add().CopyFrom(lp.input_param.shape[min(i, len(lp.input_param.shape) - 1)])
            continue
        v1 = out.layers.add(name=lp.name, type=C.V1LayerParameter.LayerType.Value(enum.get(lp.type, "NONE")),
                            bottom=lp.bottom, top=lp.top, blobs=lp.blobs)
        for field, value in lp.ListFields():
            if field.name.endswith("_param") and field.name in v1_fields:
                getattr(v1, field.name).CopyFrom(value)
    return out


def _mutate_onnx(data: bytes, rng: random.Random) -> bytes:
    """Byte-level mutation, or a structural one through onnx's own classes."""
    import onnx
    from onnx import helper, numpy_helper

    if rng.random() < 0.4:
        return mutate_bytes(data, rng)
    m = onnx.load_from_string(data)
    g = m.graph
    op = rng.randrange(10)
    if op == 8:                                          # another operator set version
        next(o for o in m.opset_import if o.domain in ("", "ai.onnx")).version = \
            rng.choice([1, 6, 7, 9, 11, 12, 13, 17, 19, 22, 30])
    elif op == 9 and g.node:                             # a node from another domain
        rng.choice(g.node).domain = rng.choice(["com.microsoft", "ai.onnx.ml", "ai.onnx", "x"])
    elif op == 0 and g.node:                               # an unused huge constant
        shape = numpy_helper.from_array(np.array([256, 1024, 1024], np.int64), "big_shape")
        g.initializer.append(shape)
        g.node.append(helper.make_node("ConstantOfShape", ["big_shape"], ["big"]))
    elif op == 1 and g.input:                            # a huge or negative input dim
        d = rng.choice(g.input).type.tensor_type.shape.dim
        if d:
            rng.choice(d).dim_value = rng.choice([0, 1 << 40, (1 << 62) + 2])
    elif op == 2 and g.node:                             # an operator swapped
        rng.choice(g.node).op_type = rng.choice(["Relu", "Conv", "Gemm", "Reshape", "Loop", "Foo"])
    elif op == 3 and g.node:                             # an input dropped
        n = rng.choice(g.node)
        if n.input:
            del n.input[rng.randrange(len(n.input))]
    elif op == 4 and g.initializer:                      # raw data truncated
        t = rng.choice(g.initializer)
        if t.raw_data:
            t.raw_data = t.raw_data[:len(t.raw_data) // 2]
        elif t.dims:
            t.dims[0] = t.dims[0] * 1000
    elif op == 5 and g.initializer:                      # external data outside the folder
        t = rng.choice(g.initializer)
        t.data_location = onnx.TensorProto.EXTERNAL
        del t.external_data[:]
        e = t.external_data.add()
        e.key, e.value = "location", rng.choice(["../../etc/passwd", "/dev/zero", "missing.bin", "w.npz"])
        t.ClearField("raw_data")
    elif op == 6 and g.node:                             # attributes with absurd values
        n = rng.choice(g.node)
        for a in n.attribute:
            if a.ints:
                a.ints[rng.randrange(len(a.ints))] = rng.choice([0, -1, 1 << 40])
            elif a.type == onnx.AttributeProto.INT:
                a.i = rng.choice([0, -1, 1 << 40])
    else:                                                # a node repeated (a duplicate output)
        if g.node:
            g.node.append(rng.choice(g.node))
    return m.SerializeToString()


# --- the sandboxed worker ---------------------------------------------------------------------
def _vm_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _worker(conn, memory_bound: int, time_limit: float) -> None:
    import zoo  # noqa: F401  (imported before the limit: the baseline includes it)
    try:
        import onnx  # noqa: F401
    except ImportError:
        pass
    from zoo.errors import ZooError

    scratch = Path(tempfile.mkdtemp(prefix="zoo-fuzz-"))
    seeds = Seeds(scratch)
    for fmt in ("onnx", "caffe"):
        for n in MODEL_NETS:
            try:
                seeds.models(fmt, n)
            except Exception:  # noqa: BLE001 - an engine's converter not installed
                pass
    base = _vm_bytes("VmSize")
    resource.setrlimit(resource.RLIMIT_AS, (base + memory_bound, base + memory_bound))
    rss0 = _vm_bytes("VmHWM")

    def on_cpu_limit(signum, frame):
        raise TimeoutError(f"case used more than {time_limit:g} s of CPU")

    def on_wall_limit(signum, frame):
        raise TimeoutError(f"case took longer than {WALL_FACTOR * time_limit:g} s")

    signal.signal(signal.SIGPROF, on_cpu_limit)
    signal.signal(signal.SIGALRM, on_wall_limit)
    conn.send(("ready", rss0))
    try:
        while True:
            msg = conn.recv()
            if msg is None:
                break
            kind, seed = msg
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_PROF, time_limit)
            signal.setitimer(signal.ITIMER_REAL, WALL_FACTOR * time_limit)
            try:
                status, detail = run_case(seeds, kind, seed, scratch), ""
            except ZooError as e:
                status, detail = "refused", str(e)[:300]
            except TimeoutError as e:
                status, detail = "hang", str(e)
            except MemoryError:
                status, detail = "memory", "MemoryError under the bound\n" + traceback.format_exc()[-1500:]
            except BaseException as e:  # noqa: BLE001 - the defect we are looking for
                status = "internal"
                detail = f"{type(e).__name__}: {e}"[:300] + "\n" + traceback.format_exc()[-1500:]
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
                signal.setitimer(signal.ITIMER_REAL, 0)
            conn.send((status, detail, time.perf_counter() - t0, _vm_bytes("VmHWM") - rss0))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class Sandbox:
    """A forked worker with a memory bound; replaced when it dies or stops answering."""

    def __init__(self, memory_bound: int = MEMORY_BOUND, time_limit: float = TIME_LIMIT):
        self.memory_bound, self.time_limit = memory_bound, time_limit
        self.proc = None
        self.peak_extra_rss = 0

    def _start(self) -> None:
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, self.memory_bound, self.time_limit), daemon=True)
        self.proc.start()
        if not self.conn.poll(300):
            raise RuntimeError("fuzz worker did not start")
        self.conn.recv()

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join(10)
            self.proc = None

    def run(self, kind: str, seed: int) -> Outcome:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send((kind, seed))
        if not self.conn.poll(WALL_FACTOR * self.time_limit + 30):
            self._kill()
            return Outcome(kind, seed, "hang", f"no answer within {WALL_FACTOR * self.time_limit + 30:g} s")
        try:
            status, detail, secs, extra = self.conn.recv()
        except EOFError:
            code = self.proc.exitcode if self.proc else None
            self._kill()
            return Outcome(kind, seed, "crash", f"worker died (exit {code})")
        self.peak_extra_rss = max(self.peak_extra_rss, extra)
        if extra > self.memory_bound:
            status, detail = "memory", f"resident memory grew by {extra / 2**20:.0f} MiB"
        return Outcome(kind, seed, status, detail, secs)

    def close(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.conn.send(None)
            self.proc.join(30)
        self._kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def summarise(outcomes: list[Outcome]) -> dict:
    counts: dict[str, dict[str, int]] = {}
    for o in outcomes:
        counts.setdefault(o.kind, {}).setdefault(o.status, 0)
        counts[o.kind][o.status] += 1
    return counts


if __name__ == "__main__":   # a quick look: python tests/fuzzing.py KIND SEED
    import sys
    with Sandbox() as sb:
        print(json.dumps(sb.run(sys.argv[1], int(sys.argv[2])).__dict__, indent=2))
