"""No engine outlives zoo: a stopped zoo (SIGTERM, SIGINT, SIGHUP) kills its children's process
groups and removes its temporary folders; a SIGKILLed zoo's child notices and exits."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import require_engine

# a fresh cache, so the torch build's child hangs (with a grandchild) while its `.tmp-*`
# folder and its `zoo-child-*` work folder exist
DRIVER = "import zoo; zoo.verify(['linreg'], ['torch'], timeout=300)"


@pytest.fixture
def hanging_zoo(tmp_path):
    """Start zoo (argv) with a hanging torch child; return (zoo process, child pid, dirs)."""
    require_engine("torch")
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "ZOO_CACHE": str(cache)}
    started, children = [], []

    def start(argv, fault="hang-with-grandchild"):
        env["ZOO_FAULT"] = f"torch:{fault}"
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        child = _wait_for_hanging_child(proc, tmp)
        children.append(child)
        return proc, child, tmp, cache

    yield start
    for proc in started:   # a failed test must not leave its zoo or engine running
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for child in children:
        try:
            os.killpg(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_for_hanging_child(proc, tmp, limit=60.0):
    """The pid of proc's engine child once it is hanging (it said so in its stderr file)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        said = [d for d in tmp.glob("zoo-child-*") if "hanging" in _read(d / "stderr.txt")]
        kids = [p for p in psutil.Process(proc.pid).children() if "zoo.runners" in " ".join(p.cmdline())]
        if said and kids:
            return kids[0].pid
        time.sleep(0.2)
    raise AssertionError("the engine child did not start")


def _read(path):
    try:
        return path.read_text()
    except OSError:
        return ""


def _group(pgid):
    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return out


def _assert_child_group_gone(child, within=10.0):
    """The child was the leader of its own process group (pgid = pid): nothing of it is left."""
    deadline = time.monotonic() + within
    while _group(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group(child) == [], f"processes of the engine's group {child} still run"


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stopped_zoo_verify_kills_its_engine_and_removes_its_folders(hanging_zoo, signo):
    zoo, child, tmp, cache = hanging_zoo([sys.executable, "-m", "zoo.cli", "verify", "linreg",
                                          "--engines", "torch"])
    assert os.getpgid(child) == child != os.getpgid(zoo.pid)   # its own group, as designed
    zoo.send_signal(signo)
    _, stderr = zoo.communicate(timeout=20)
    assert zoo.returncode == 128 + signo      # 130 for Ctrl-C
    assert stderr.strip().splitlines()[-1] == f"zoo: stopped by {signal.Signals(signo).name}; " \
        "engine processes killed", stderr
    _assert_child_group_gone(child)
    assert list(tmp.glob("zoo-child-*")) == []
    assert [p for p in cache.rglob("*") if ".tmp-" in p.name] == []    # the half-made build


def test_the_api_cleans_up_on_sigterm_too(hanging_zoo):
    zoo, child, tmp, cache = hanging_zoo([sys.executable, "-c", DRIVER])
    zoo.terminate()
    zoo.communicate(timeout=20)
    assert zoo.returncode == 128 + signal.SIGTERM
    _assert_child_group_gone(child)
    assert list(tmp.glob("zoo-child-*")) == []
    assert [p for p in cache.rglob("*") if ".tmp-" in p.name] == []


def test_the_child_of_a_sigkilled_zoo_exits(hanging_zoo):
    # a plain hang: an engine's own helper processes are not covered when zoo is SIGKILLed
    zoo, child, tmp, cache = hanging_zoo([sys.executable, "-c", DRIVER], fault="hang")
    zoo.kill()          # zoo can clean nothing up: the kernel ends the child (PR_SET_PDEATHSIG)
    zoo.communicate(timeout=20)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the engine child outlived a SIGKILLed zoo"
        time.sleep(0.1)


def test_an_orphaned_child_exits_before_it_starts(tmp_path):
    """The race PR_SET_PDEATHSIG leaves open: zoo died before the child asked for it."""
    env = {**os.environ, "ZOO_PARENT_PID": "1" if os.getpid() != 1 else "2"}
    r = subprocess.run([sys.executable, "-m", "zoo.runners", str(tmp_path)], env=env, timeout=60)
    assert r.returncode == 128 + signal.SIGKILL and list(tmp_path.iterdir()) == []
