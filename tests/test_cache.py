"""The build cache: a size bound with least-recently-used eviction that spares builds in use,
one copy of each weights file, transient builds of one-off specs, list/prune/clear (issue 18)."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

import zoo
from conftest import require_engine
from zoo import cache
from zoo.errors import UsageError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    require_engine("onnx")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "zoo"))
    monkeypatch.setenv("ZOO_CACHE_LIMIT", "1G")


def _build(name, engine="onnx", **kw):
    return zoo.build(name, engine, in_process=True, **kw)


def _used_at(path, t):
    os.utime(path, (t, t))


@pytest.fixture
def lease_elsewhere():
    """Hold cache.lease(path) in another process (as a verifier's run would) until the test ends."""
    procs = []

    def hold(path):
        code = textwrap.dedent(f"""
            import sys
            from zoo import cache
            with cache.lease({str(path)!r}):
                print("held", flush=True)
                sys.stdin.read()
        """)
        p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "held"
        procs.append(p)
        return p

    yield hold
    for p in procs:
        p.stdin.close()
        p.wait(timeout=30)


def test_the_limit_is_settable_and_checked(monkeypatch):
    assert cache.parse_size("4G") == 4 * 2**30 and cache.parse_size("500M") == 500 * 2**20
    assert cache.parse_size("1.5k") == 1536 and cache.parse_size("123") == 123
    monkeypatch.delenv("ZOO_CACHE_LIMIT")
    assert cache.limit_bytes() == 16 * 2**30
    monkeypatch.setenv("ZOO_CACHE_LIMIT", "lots")
    with pytest.raises(UsageError, match="ZOO_CACHE_LIMIT") as e:
        cache.limit_bytes()
    assert e.value.exit_code == 2


def test_a_small_bound_evicts_the_least_recently_used_build(monkeypatch):
    monkeypatch.setenv("ZOO_CACHE_LIMIT", "1200K")
    small, large = _build("softmax-mnist"), _build("twolayer")     # 65 KB, 812 KB
    now = time.time()
    _used_at(large.path, now - 60)                                    # used before `small`
    _used_at(small.path, now - 30)
    newest = _build("mlp-mnist")                                      # 879 KB: over the bound
    assert not large.path.exists()
    assert small.path.is_dir() and newest.path.is_dir()
    assert cache.usage() <= cache.limit_bytes()
    assert [e.network for e in cache.entries()] == ["softmax-mnist", "mlp-mnist"]


def test_builds_in_use_survive_prune_and_clear(lease_elsewhere):
    used, idle = _build("softmax-mnist"), _build("twolayer")
    lease_elsewhere(used.path)
    assert {e.network: e.in_use for e in cache.entries()} == {"softmax-mnist": True, "twolayer": False}
    assert [e.network for e in cache.prune(limit_bytes=0)] == ["twolayer"]
    assert cache.clear() == [] and cache.remove(used.path) is False
    assert zoo.build("softmax-mnist", "onnx").reused            # still whole: verify can run it
    assert not idle.path.exists()


def test_clear_removes_everything_not_in_use_and_its_weights():
    for name in ("linreg", "softmax-mnist"):
        _build(name)
    removed = cache.clear()
    assert sorted(e.network for e in removed) == ["linreg", "softmax-mnist"]
    assert cache.entries() == [] and cache.usage() == 0
    assert list((cache.root() / ".weights").iterdir()) == []


def test_one_copy_of_the_weights_serves_every_engine():
    require_engine("torch")
    a, b = _build("twolayer", "onnx"), _build("twolayer", "torch")
    wa, wb = (a.path / "weights.npz").stat(), (b.path / "weights.npz").stat()
    assert (wa.st_ino, wa.st_dev) == (wb.st_ino, wb.st_dev)
    listed = sum(e.bytes for e in cache.entries())
    assert cache.usage() == listed - wa.st_size                      # counted once on disk
    assert cache.remove(a.path) and (b.path / "weights.npz").read_bytes()
    assert zoo.build("twolayer", "torch").reused                     # its hashes still match
    cache.remove(b.path)
    assert list((cache.root() / ".weights").iterdir()) == []         # the last user took it along


def test_entries_name_engine_network_and_size():
    b = _build("linreg")
    [e] = cache.entries()
    assert (e.engine, e.network, e.path, e.in_use, e.transient) == ("onnx", "linreg", b.path, False, False)
    assert e.bytes == sum(p.stat().st_size for p in b.path.rglob("*") if p.is_file())
    assert abs(e.last_used - time.time()) < 60


def test_transient_builds_are_discarded_after_use_and_stale_ones_pruned_first(tmp_path):
    spec = tmp_path / "imported.prototxt"
    spec.write_text(zoo.load("softmax-mnist").text.replace('name: "softmax-mnist"', 'name: "imported"'))
    net = zoo.load(spec)
    kept = _build("linreg")
    once = _build(net, transient=zoo.builds.one_off(net))
    assert once.transient and not kept.transient
    assert cache.discard_transient([once, kept]) == [once.path]
    assert not once.path.exists() and kept.path.exists()            # asked for: kept

    stale = _build(net, transient=True)
    _used_at(stale.path, time.time() - 2 * cache.TRANSIENT_GRACE_S)
    _used_at(kept.path, time.time() - 3 * cache.TRANSIENT_GRACE_S)  # older, but not transient
    assert [e.path for e in cache.prune()] == [stale.path]          # far under the bound
    assert kept.path.exists()


def test_out_folders_are_never_touched_by_the_cache(tmp_path):
    d = tmp_path / "mine"
    zoo.build("linreg", "onnx", out=d, in_process=True)
    before = os.stat(d).st_mtime_ns
    assert cache.remove(d) is False and cache.discard_transient([d]) == []
    with cache.lease(d):
        pass
    cache.clear()
    cache.prune(limit_bytes=0)
    assert (d / "manifest.json").is_file() and os.stat(d).st_mtime_ns == before


def test_leftovers_of_killed_builds_are_cleaned_but_not_those_of_running_ones():
    _build("linreg")
    engine_dir = cache.root() / "onnx"
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    dead = engine_dir / f".linreg-0.tmp-{done.stdout.strip()}-x1"
    running = engine_dir / f".linreg-0.tmp-{os.getpid()}-x2"
    for d in (dead, running):
        d.mkdir()
        (d / "model.onnx").write_bytes(b"half")
    cache.prune()
    assert not dead.exists() and running.exists()


def test_a_full_disk_evicts_unused_builds_to_make_room(monkeypatch):
    import shutil
    monkeypatch.setattr(zoo.builds, "SPACE_MARGIN", 0)
    old = _build("twolayer")                                    # 812 KB
    real = shutil.disk_usage
    # a 1.4 MB disk holding nothing but the cache
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1_400_000 - cache.usage()))
    new = _build("mlp-mnist")                                   # needs 3 x its 437 KB of weights
    assert not old.path.exists() and new.path.is_dir()
    with new.lease():                                           # in use: nothing left to evict
        with pytest.raises(cache.NoSpace, match=r"space in .*onnx: the build needs about 1.2 MiB"):
            _build("twolayer")
    assert new.path.is_dir() and [e.path for e in cache.entries()] == [new.path]
    assert [p.name for p in new.path.parent.iterdir()] == [new.path.name]
