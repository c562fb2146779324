"""The machine's own limit: single-precision GEMM throughput per thread count.

A bench point's GFLOP/s means little alone; beside the best a dense float32 matrix product
reaches on the same cores with the same thread count it says how much of the machine an
engine used (the survey's engines reached about 85% of GEMM peak on fully connected
networks). zoo measures it once per machine with NumPy's BLAS and with PyTorch, each in a
child process whose thread variables are set before the library loads, and keeps the
figures in ZOO_CACHE/peak/ (default ~/.cache/zoo/peak/), keyed by the CPU model, the core
count and the libraries' versions, so a new library or machine measures afresh.

The figure is the best of several products of SIZE x SIZE matrices (2048: large enough that
the product is compute-bound). It is a measured peak, not the CPU's theoretical one; on a
machine other processes are using it comes out low, and the cache records the load during the
measurement ("others_cores") so that a reader can tell. A figure measured while other
processes used more than BUSY_CORES cores is used for that run only and never cached: the
next run measures again (one measured under a loaded machine had been kept, and read 5x
below the machine's real peak for a day).

    python -m zoo.peak --lib numpy --threads 2 [--size 2048] [--reps 5]   (one measurement, JSON)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .errors import ZooError

LIBRARIES = ("numpy", "torch")
SIZE = 2048
REPS = 3
TIMEOUT_S = 600.0
BUSY_CORES = 0.5   # others' cores while measuring above which a figure is not kept
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def folder() -> Path:
    from . import cache
    return cache.root().parent / "peak"


def cores() -> int:
    return os.cpu_count() or 1


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_key(size: int = SIZE) -> dict:
    """What the cached figures depend on."""
    from .benchmark import cpu_model
    return {"cpu": cpu_model(), "cores": cores(), "size": size,
            **{lib: _version(lib) for lib in LIBRARIES}}


def _cache_file(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return folder() / f"gemm-{digest}.json"


def _read(path: Path, key: dict) -> dict:
    """The cached measurements {"LIB/THREADS": {...}} for `key`; {} if none or unreadable."""
    try:
        if not path.is_file() or path.stat().st_size > 1 << 20:
            return {}
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("points"), dict):
        return {}
    return data["points"]


def _write(path: Path, key: dict, points: dict) -> None:
    """Write whole or not at all: a temporary file renamed over the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".gemm-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"key": key, "points": points}, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def peak(threads: int | None, libraries: tuple[str, ...] = LIBRARIES, size: int = SIZE,
         reps: int = REPS) -> dict:
    """{"gflops": best over libraries, "library": which, "threads": n, "by_library":
    {lib: gflops}, "others_cores": load while measuring, "errors": {lib: why}}, measured once
    per machine and thread count (None: every core) and cached."""
    n = threads or cores()
    key = machine_key(size)
    path = _cache_file(key)
    points = _read(path, key)
    fresh = False
    for lib in libraries:
        name = f"{lib}/{n}"
        if name not in points or _busy(points[name]):
            points[name] = measure(lib, n, size, reps)
            fresh = True
    if fresh:
        # another zoo may have added thread counts meanwhile: keep theirs, add ours
        quiet = {k: p for k, p in points.items() if not _busy(p)}
        _write(path, key, {**_read(path, key), **quiet})
    return _best(n, {lib: points[f"{lib}/{n}"] for lib in libraries})


def _busy(point: dict) -> bool:
    return (point.get("others_cores") or 0.0) > BUSY_CORES


def _best(threads: int, by_lib: dict) -> dict:
    ok = {lib: p for lib, p in by_lib.items() if p.get("gflops")}
    errors = {lib: p["error"] for lib, p in by_lib.items() if p.get("error")}
    if not ok:
        return {"gflops": None, "threads": threads, "by_library": {}, "errors": errors}
    lib = max(ok, key=lambda k: ok[k]["gflops"])
    return {"gflops": ok[lib]["gflops"], "library": lib, "threads": threads,
            "by_library": {k: p["gflops"] for k, p in ok.items()},
            "others_cores": max((p.get("others_cores") or 0.0) for p in ok.values()),
            "errors": errors}


def measure(library: str, threads: int, size: int = SIZE, reps: int = REPS) -> dict:
    """One library's GEMM peak at `threads` threads, in a child process: {"gflops", "size",
    "reps", "others_cores", "seconds"} or {"error": why}. Never raises for the child."""
    if library not in LIBRARIES:
        raise ZooError(f"unknown GEMM library {library!r}; known: {', '.join(LIBRARIES)}")
    env = {**os.environ, **_thread_env(library, threads)}
    cmd = [sys.executable, "-m", "zoo.peak", "--lib", library, "--threads", str(threads),
           "--size", str(size), "--reps", str(reps)]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"{library} GEMM took over {TIMEOUT_S:.0f} s"}
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["exit status %d" % r.returncode])[-1]
        return {"error": f"{library}: {tail[:300]}"}
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"{library}: no result from the child"}


def _thread_env(library: str, threads: int) -> dict:
    """The variables the library's pools read at load: zoo's engine declaration for torch
    (the same ones its bench points run with), the BLAS ones for numpy."""
    if library == "torch":
        from . import engines
        return engines.get("torch").environment(threads, "cpu")
    return {v: str(threads) for v in _THREAD_VARS}


# --- the child --------------------------------------------------------------------------------
def _product(library: str, threads: int, size: int):
    """A function computing one float32 SIZE x SIZE product to completion."""
    if library == "numpy":
        import numpy as np
        rng = np.random.default_rng(0)
        a = rng.standard_normal((size, size), dtype=np.float32)
        b = rng.standard_normal((size, size), dtype=np.float32)
        c = np.empty((size, size), np.float32)
        return lambda: np.matmul(a, b, out=c)
    import torch
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g)
    b = torch.randn(size, size, generator=g)
    c = torch.empty(size, size)
    return lambda: torch.mm(a, b, out=c)


def _child(library: str, threads: int, size: int, reps: int) -> dict:
    from .stats import Load
    product = _product(library, threads, size)
    product()                                   # first call: allocation, thread pool start
    load = Load.start()
    best = float("inf")
    start = time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - t0)
    return {"gflops": 2.0 * size ** 3 / best / 1e9, "size": size, "reps": reps,
            "seconds": time.perf_counter() - start, "others_cores": load.stop()["others_cores"]}


def main(argv: list[str]) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m zoo.peak", description=__doc__.split("\n")[0])
    p.add_argument("--lib", choices=LIBRARIES, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--size", type=int, default=SIZE)
    p.add_argument("--reps", type=int, default=REPS)
    a = p.parse_args(argv)
    if not (1 <= a.threads <= 4096 and 16 <= a.size <= 16384 and 1 <= a.reps <= 1000):
        p.error("threads 1..4096, size 16..16384, reps 1..1000")
    print(json.dumps(_child(a.lib, a.threads, a.size, a.reps)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
