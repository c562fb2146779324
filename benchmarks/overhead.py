"""The harness's own overhead: zoo bench's per-iteration time against a minimal hand-written
loop over the same native model, per engine, in one run, alternating.

    .venv/bin/python benchmarks/overhead.py [--nets fcn-r,alexnet-r] [--batch N] [--rounds 2]

Both sides run in fresh child processes with the same thread settings, the same built model
files and the same in-memory batch; ratio = zoo median / hand-loop median (target <= 1.05).
Training for every engine that trains; ONNX Runtime (inference only) is timed on inference.
Also times `zoo list` (target: well under a second, no engine imported).
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
from zoo import benchmark, child, data, engines

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
with np.load(sys.argv[2], allow_pickle=False) as z:
    X = {k: z[k] for k in z.files}
import zoo
NET = zoo.from_text((ART / "spec.prototxt").read_text())
os.chdir(ART)   # solver.prototxt names train_val.prototxt relative to the build folder
'''

EPILOGUE = '''
WARMUP, ITERS, MIN_TIME = [float(v) for v in sys.argv[3].split(",")]
for _ in range(int(WARMUP)):
    step()
times = []; start = time.perf_counter()
while len(times) < ITERS or time.perf_counter() - start < MIN_TIME:
    t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
print(json.dumps({"median_s": statistics.median(times), "iters": len(times)}))
'''


def hand_loop(engine: str, art: Path, inputs_file: Path, threads: int, warmup, iters, min_time) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(PRELUDE + HAND_LOOPS[engine] + EPILOGUE)
        script = f.name
    env = {**os.environ, **child.thread_env(threads, "cpu")}
    try:
        out = subprocess.run([sys.executable, script, str(art), str(inputs_file), f"{warmup},{iters},{min_time}",
                              str(threads)], capture_output=True, text=True, env=env, check=True)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"hand loop {engine} failed: {e.stderr[-2000:]}") from None
    finally:
        os.unlink(script)
    return json.loads(out.stdout.strip().splitlines()[-1])["median_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="fcn-r,alexnet-r")
    ap.add_argument("--engines", default=",".join(e for e in HAND_LOOPS))
    ap.add_argument("--batch", type=int, default=None, help="default: the survey's CPU batch")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=2.0)
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
    print(f"{'network':10} {'engine':11} {'mode':6} {'batch':>5} {'zoo ms':>9} {'hand ms':>9} {'ratio':>6}")
    for name in args.nets.split(","):
        net = zoo.load(name)
        batch = args.batch or net.train.batch_cpu
        netb = net.with_batch(batch)
        inputs = data.make(netb)
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
                zs, hs = [], []
                for _ in range(args.rounds):     # alternate, so drift hits both sides alike
                    r = benchmark.bench([net], [e], threads=[args.threads], batch=batch, mode=mode,
                                        warmup=args.warmup, iters=args.iters, min_time=args.min_time)[0]
                    if r["status"] != "ok":
                        raise SystemExit(f"zoo bench {name} {e}: {r['reason']}")
                    zs.append(r["median_s"])
                    hs.append(hand_loop(e, art.path, inputs_file, args.threads, args.warmup, args.iters,
                                        args.min_time))
                z, h = statistics.median(zs), statistics.median(hs)
                print(f"{name:10} {e:11} {mode:6} {batch:5d} {z * 1e3:9.2f} {h * 1e3:9.2f} {z / h:6.3f}", flush=True)


if __name__ == "__main__":
    main()
