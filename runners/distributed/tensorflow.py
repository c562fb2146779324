"""TensorFlow data parallelism: tf.distribute.MultiWorkerMirroredStrategy, one worker per
process, the cluster in TF_CONFIG (set by the parent; on one machine every worker is on
127.0.0.1 with its own port).

Not Keras's model.fit: under MultiWorkerMirroredStrategy it is broken upstream in Keras 3
(keras-team/keras issue 20585). The step is written out instead, as runners/tensorflow.py's
single-process one is: the build's train.keras computes the loss, a GradientTape its
gradients, and under `strategy.run` the replica context all-reduces them (MEAN) across the
workers before a PyTorch-style SGD update (v = mu v + g + wd w; w -= lr v, the single-process
runner's rule) is applied to every worker's copy. The model is loaded outside the
strategy's scope, so its variables are plain per-worker variables; they are made equal at
start by an explicit broadcast from worker 0 (an all-reduce SUM of worker 0's values and
the others' zeros, exact). BatchNorm keeps per-worker batch statistics (Keras's
BatchNormalization, not synchronised).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import common

BATCHNORM = "per-worker batch statistics (Keras BatchNormalization, not synchronised)"


def _strategy(tf, threads):
    """Threads first (they cannot change once TensorFlow's runtime starts), then the
    strategy, before any other TensorFlow op, as it requires."""
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def run(job: dict, batch: dict, fault: str):
    import tensorflow as tf
    strategy = _strategy(tf, job.get("threads"))
    from zoo.runners.tensorflow import Runner
    runner = Runner(Path(job["artifact"]), job["device"], None, {})   # threads: set above
    runner.load()
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    rank, world = int(task["index"]), strategy.num_replicas_in_sync
    feed_np = common.shard(batch, rank, int(job["per_worker"]), job["replicate"])
    with tf.device(runner.tf_device):
        model = runner._training_model()
        if job["action"] == "verify":
            for layer in model.layers:
                if isinstance(layer, runner.keras.layers.Dropout):
                    layer.rate = 0.0       # verify: Dropout is the identity
        step, phases, broadcast = _steps(tf, strategy, runner, model, rank, fault)
        feed = runner._train_feed(feed_np)
        broadcast()
        if job["action"] == "verify":
            losses = [float(step(feed)) for _ in range(int(job["steps"]))]
            return ({"rank": rank, "world": world, "losses": losses, "batchnorm": BATCHNORM,
                     **runner.info(), "threads": job.get("threads")}, runner._trained_weights())
        barrier = _barrier(tf, strategy)
        split = {name: (lambda fn=fn: fn(feed)) for name, fn in phases.items()}
        return {**common.bench_result(job, lambda: step(feed).numpy(), barrier, split, rank, world),
                **runner.info()}, {}


def _steps(tf, strategy, runner, model, rank: int, fault: str):
    t = runner.net.train
    lr, mu, wd = float(t.lr), float(t.momentum), float(t.weight_decay)
    variables = model.trainable_variables
    velocity = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in variables]
    reduce_op = tf.distribute.ReduceOp.SUM if fault == "sum-gradients" else tf.distribute.ReduceOp.MEAN

    def grads_of(feed):
        with tf.GradientTape() as tape:
            loss = model(feed, training=True)
        return loss, tape.gradient(loss, variables)

    def all_reduce(grads):
        return tf.distribute.get_replica_context().all_reduce(reduce_op, grads)

    def apply(grads):
        for v, buf, g in zip(variables, velocity, grads):
            if g is None:
                continue          # as torch.optim leaves a parameter without a gradient
            g = g + wd * v if wd else g
            buf.assign(mu * buf + g if mu else g)
            v.assign_sub(lr * buf)

    @tf.function
    def step(feed):
        def replica(feed):
            loss, grads = grads_of(feed)
            apply(all_reduce(grads))
            return loss
        return strategy.experimental_local_results(strategy.run(replica, args=(feed,)))[0]

    @tf.function
    def broadcast():
        def replica():
            # worker 0's values, zeros elsewhere (made inside the replica function: the
            # all-reduce refuses a variable or a value from outside it)
            values = [tf.convert_to_tensor(v) * (1.0 if rank == 0 else 0.0) for v in variables]
            for v, value in zip(variables, all_reduce_sum(values)):
                v.assign(value)
        strategy.run(replica)

    def all_reduce_sum(values):
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, values)

    held: dict = {}

    @tf.function
    def compute_fn(feed):
        return grads_of(feed)[1]

    @tf.function
    def exchange_fn(grads):
        # a value made inside the replica function: the all-reduce refuses one from outside
        # it ("destinations can not be empty"), as it refuses a variable
        def replica(grads):
            return all_reduce([tf.identity(g) for g in grads])
        return strategy.experimental_local_results(strategy.run(replica, args=(grads,)))[0]

    @tf.function
    def update_fn(grads):
        apply(grads)

    def compute(feed):
        held["grads"] = compute_fn(feed)
        _synchronise(held["grads"])

    def exchange(feed):
        held["grads"] = exchange_fn(held["grads"])
        _synchronise(held["grads"])

    def update(feed):
        update_fn(held["grads"])
        variables[0].numpy()

    return step, {"compute": compute, "exchange": exchange, "update": update}, broadcast


def _synchronise(tensors) -> None:
    """Wait for the tensors (eager values are computed asynchronously on a device)."""
    for t in tensors:
        if t is not None:
            t.numpy()
            break


def _barrier(tf, strategy):
    """A barrier: an all-reduce of one number that every worker must join."""
    @tf.function
    def join():
        return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, tf.ones([])))
    return lambda: join()
