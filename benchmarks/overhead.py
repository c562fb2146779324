"""The harness's own overhead: zoo bench's per-iteration time against a minimal hand-written
loop over the same native model, per engine, in one run, alternating.

    .venv/bin/python benchmarks/overhead.py [--nets fcn-r,alexnet-r] [--batch N] [--pairs 12]

The ratio is measured paired: one fresh process (thread settings applied before the engine
loads) holds both zoo's runner, loaded from a build as `zoo bench` loads it, and a minimal
hand-written loop that loads the same native files by itself; it alternates one timed
iteration of zoo's step (the function `zoo bench` times) with one of the hand loop's, and
ratio = the median over pairs of zoo time / hand time (target <= 1.05), shown with the
quartiles of the pair ratios. Pairing matters on a shared VM: here
two processes running the same loop differ by up to 25% in their medians (memory placement,
neighbours), which is more than the overhead to be measured; alternating iterations in one
process cancels that. For context the table also shows the median `zoo bench` itself
reports for the cell (its own process). Training for every engine that trains; ONNX Runtime
(inference only) on inference. Also times `zoo list` (target: well under a second, no
engine imported).

    --control      A/A: the "zoo" column is a second copy of the hand loop, so the ratio
                   shows what two identical loops alternating in one process differ by
    --ort-no-spin  ONNX Runtime: both sessions' intra-op threads sleep when idle instead of
                   spinning (ORT's default), so one session's pool cannot take cores from
                   the other's run; a test of that hypothesis, not zoo's configuration
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import zoo
from zoo import benchmark, data, engines

HAND_LOOPS = {
    "torch": '''
import importlib.util, torch
from safetensors.torch import load_file
spec = importlib.util.spec_from_file_location("m", ART / "model.py"); m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
model = getattr(m, META["class"])(); model.load_state_dict(load_file(str(ART / "weights.safetensors"))); model.train()
t = NET.train
opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
feed = {META["input_names"][k]: torch.from_numpy(v) for k, v in X.items()}
def step():
    opt.zero_grad(set_to_none=True); model.training_loss(**feed).backward(); opt.step()
''',
    "tensorflow": '''
import tensorflow as tf, keras
model = keras.saving.load_model(str(ART / "model.keras"), safe_mode=True)
t = NET.train
opt = keras.optimizers.SGD(learning_rate=t.lr, momentum=t.momentum)
x = [tf.constant(X[n]) for n in META["inputs"]]; y = tf.constant(X["label"])
@tf.function
def train(x, y):
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    g = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(g, model.trainable_variables))
    return loss
def step():
    train(x, y).numpy()
''',
    "mxnet": '''
from zoo.converters.mxnet import import_mxnet
mx = import_mxnet()
p = META["prefix"]
net = mx.gluon.SymbolBlock.imports(str(ART / f"{p}-symbol.json"), META["inputs"], str(ART / f"{p}-0000.params"))
net.hybridize(static_alloc=True, static_shape=True)
t = NET.train
trainer = mx.gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": t.lr, "momentum": t.momentum, "wd": t.weight_decay})
x = [mx.nd.array(X[n]) for n in META["input_blobs"]]; y = mx.nd.array(X["label"])
def step():
    with mx.autograd.record():
        loss = -mx.nd.mean(mx.nd.pick(mx.nd.log_softmax(net(*x), axis=-1), y, axis=-1))
    loss.backward(); trainer.step(1); mx.nd.waitall()
''',
    "caffe": '''
import caffe
caffe.set_mode_cpu()
solver = caffe.SGDSolver("solver.prototxt")
solver.net.copy_from(str(ART / "weights.caffemodel"))
for k, v in X.items():
    solver.net.blobs[k].reshape(*v.shape); solver.net.blobs[k].data[...] = v
solver.net.reshape()
def step():
    solver.step(1)
''',
    "onnx": '''
import onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = THREADS; so.inter_op_num_threads = 1
if NO_SPIN: so.add_session_config_entry("session.intra_op.allow_spinning", "0")
sess = ort.InferenceSession(str(ART / "model.onnx"), sess_options=so, providers=["CPUExecutionProvider"])
feed = {n: X[n] for n in META["inputs"]}
def step():
    sess.run(None, feed)
''',
}

PRELUDE = '''
import json, statistics, sys, time, os
from pathlib import Path
import numpy as np
ART = Path(sys.argv[1]); META = json.loads((ART / "manifest.json").read_text())["meta"]
THREADS = int(sys.argv[4])
NO_SPIN = sys.argv[7] == "no-spin"     # ONNX Runtime: both sessions' pools sleep when idle
with np.load(sys.argv[2], allow_pickle=False) as z:
    X = {k: z[k] for k in z.files}
import zoo
NET = zoo.from_text((ART / "spec.prototxt").read_text())
os.chdir(ART)   # solver.prototxt names train_val.prototxt relative to the build folder
'''

# zoo's runner is loaded first: TensorFlow's thread settings must precede any op
ZOO_SIDE = '''
import importlib
from zoo import engines
RUNNER = importlib.import_module(engines.get(sys.argv[5]).runner_module).Runner(ART, "cpu", THREADS)
RUNNER.load()
if NO_SPIN:   # instrumentation, not a zoo setting: the same session options plus no spinning
    _options = RUNNER._options
    def _no_spin(*a, **k):
        so = _options(*a, **k); so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return so
    RUNNER._options = _no_spin
ZOO_STEP = RUNNER.make_iteration(X, sys.argv[6])
'''

# --control: the "zoo" side is a second copy of the hand loop (an A/A comparison), which
# shows how far two identical loops in one process differ: the floor of this measurement
CONTROL_SIDE = '''
_ns = dict(globals()); exec(HAND_SRC, _ns); ZOO_STEP = _ns["step"]
'''

EPILOGUE = '''
WARMUP, PAIRS = [int(v) for v in sys.argv[3].split(",")]
for _ in range(WARMUP):
    ZOO_STEP(); step()
zoo_t, hand_t = [], []
for i in range(PAIRS):
    # alternate which side goes first, so neither always follows the other
    for side in ((ZOO_STEP, zoo_t), (step, hand_t))[:: 1 if i % 2 == 0 else -1]:
        t0 = time.perf_counter(); side[0](); side[1].append(time.perf_counter() - t0)
print(json.dumps({"zoo": zoo_t, "hand": hand_t}))
'''


def paired(engine: str, mode: str, art: Path, inputs_file: Path, threads: int, warmup: int,
           pairs: int, control: bool = False, spin: bool = True) -> dict[str, list[float]]:
    """Per-iteration times of zoo's step and the hand loop's, alternating in one process
    (control: a second hand loop instead of zoo's step)."""
    side = (f"HAND_SRC = {HAND_LOOPS[engine]!r}\n" + CONTROL_SIDE) if control else ZOO_SIDE
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(PRELUDE + side + HAND_LOOPS[engine] + EPILOGUE)
        script = f.name
    env = {**os.environ, **engines.get(engine).environment(threads, "cpu")}
    proc = subprocess.Popen([sys.executable, script, str(art), str(inputs_file), f"{warmup},{pairs}",
                             str(threads), engine, mode, "spin" if spin else "no-spin"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:      # interrupted: no orphan may keep timing in the background
            proc.kill()
            proc.wait()
        os.unlink(script)
    if proc.returncode != 0:
        raise RuntimeError(f"paired loop {engine} failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="fcn-r,alexnet-r")
    ap.add_argument("--engines", default=",".join(e for e in HAND_LOOPS))
    ap.add_argument("--batch", type=int, default=None, help="default: the survey's CPU batch")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--pairs", type=int, default=12, help="alternated iterations per side")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--control", action="store_true",
                    help="A/A: a second hand loop in place of zoo's step (the measurement's floor)")
    ap.add_argument("--ort-no-spin", action="store_true",
                    help="ONNX Runtime: both sessions' intra-op threads sleep instead of spinning")
    args = ap.parse_args()

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "zoo.cli", "list"], capture_output=True, check=True)
    list_s = time.perf_counter() - t0
    probe = subprocess.run([sys.executable, "-c", "import sys, zoo.cli, zoo.api; zoo.api.list_networks(); "
                            "print(sorted(m for m in ('torch','tensorflow','mxnet','onnxruntime','caffe','cv2') if m in sys.modules))"],
                           capture_output=True, text=True, check=True)
    env = benchmark.environment()
    print(f"machine: {env['cpu']}, {env['cores']} cores; threads {args.threads}")
    print(f"zoo list: {list_s:.3f} s wall (process start included); engines imported: {probe.stdout.strip()}")
    print(f"{'network':10} {'engine':11} {'mode':6} {'batch':>5} {'zoo bench':>9} "
          f"{'zoo ms':>8} {'hand ms':>8} {'ratio':>6} {'q1-q3':>11}  (paired, same process)")
    if args.control:
        print("--control: the 'zoo ms' column is a second hand loop (A/A), not zoo's step")
    if args.ort_no_spin:
        print("--ort-no-spin: ONNX Runtime sessions on both sides have allow_spinning 0")
    for name in args.nets.split(","):
        net = zoo.load(name)
        batch = args.batch or net.train.batch_cpu
        inputs = data.make(net.with_batch(batch))
        with tempfile.TemporaryDirectory() as tmp:
            inputs_file = Path(tmp) / "x.npz"
            np.savez(inputs_file, **inputs)
            for e in args.engines.split(","):
                eng = engines.get(e)
                if not eng.installed:
                    print(f"{name:10} {e:11} skipped: {eng.missing()}")
                    continue
                mode = "train" if eng.train else "infer"
                art = zoo.build(net, e)
                r = benchmark.bench([net], [e], threads=[args.threads], batch=batch, mode=mode,
                                    warmup=args.warmup, iters=args.pairs // 2, min_time=0)[0]
                if r["status"] != "ok":
                    raise SystemExit(f"zoo bench {name} {e}: {r['reason']}")
                t = paired(e, mode, art.path, inputs_file, args.threads, args.warmup, args.pairs,
                           control=args.control, spin=not args.ort_no_spin)
                z, h = statistics.median(t["zoo"]), statistics.median(t["hand"])
                ratios = [a / b for a, b in zip(t["zoo"], t["hand"])]
                q1, _, q3 = statistics.quantiles(ratios, n=4)
                print(f"{name:10} {e:11} {mode:6} {batch:5d} {r['median_s'] * 1e3:9.1f} "
                      f"{z * 1e3:8.1f} {h * 1e3:8.1f} {statistics.median(ratios):6.3f} "
                      f"{q1:5.3f}-{q3:5.3f}", flush=True)


if __name__ == "__main__":
    main()
