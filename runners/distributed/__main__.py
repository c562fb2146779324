"""The worker entry: `python -m zoo.runners.distributed RUNDIR` (zoo/distributed.py starts it,
directly or through the engine's own launcher).

RUNDIR/job.json says what to run (engine, artifact, action "verify" or "bench", batch split,
timing settings) and RUNDIR/inputs/ holds the whole batch (zoo/transport.py); each worker takes its rank's
share. A worker writes RUNDIR/slot-S/result.json (+ outputs/: its updated weights) or
RUNDIR/slot-S/error.json, S being its launch slot (ZOO_DIST_SLOT, or MXNet's DMLC_TASK_ID);
the result names the rank the engine's runtime gave it.

MXNet's scheduler and server processes run this same entry (its launcher starts one command
for every role): with DMLC_ROLE=scheduler or server, importing MXNet runs that role's loop
and exits.

No worker outlives zoo: the kernel kills this process when its parent dies
(PR_SET_PDEATHSIG), and a watchdog thread ends it when zoo's own process (ZOO_DIST_ROOT_PID)
is gone, which also covers processes whose parent is an engine's launcher.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

ROOT_PID_VAR = "ZOO_DIST_ROOT_PID"
SLOT_VAR = "ZOO_DIST_SLOT"
SERVER_THREADS_VAR = "ZOO_DIST_SERVER_THREADS"


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)       # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


def _watch_root() -> None:
    root = os.environ.get(ROOT_PID_VAR, "")
    if not root.isdigit():
        return
    pid = int(root)
    if not _alive(pid):
        os._exit(128 + signal.SIGKILL)

    def watch():
        while True:
            time.sleep(0.5)
            if not _alive(pid):
                os._exit(128 + signal.SIGKILL)
    threading.Thread(target=watch, name="zoo-root-watchdog", daemon=True).start()


def _serve_mxnet_role() -> None:
    """Scheduler and server processes: their threads explicit, then MXNet's own loop (run
    by `import mxnet` when DMLC_ROLE says so; it exits the process when the job ends)."""
    threads = os.environ.get(SERVER_THREADS_VAR, "1")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS"):
        os.environ[var] = threads
    from zoo.converters.mxnet import import_mxnet
    import_mxnet()
    sys.exit(0)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--mxnet-launch"]:
        from .mxnet import launch
        return launch(argv[1:])
    if len(argv) != 1:
        print("usage: python -m zoo.runners.distributed RUNDIR", file=sys.stderr)
        return 2
    if os.environ.get("DMLC_ROLE") in ("scheduler", "server"):
        _serve_mxnet_role()
    from .common import run_worker
    return run_worker(argv[0])


if __name__ == "__main__":
    _die_with_parent()
    _watch_root()
    from zoo.memory import keep_freed_memory
    keep_freed_memory()      # before any engine allocates (zoo/memory.py says why)
    sys.exit(main(sys.argv[1:]))
