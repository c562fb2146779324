"""`zoo build`: --out never replaces what zoo did not write; concurrent builds of one target;
a full disk; the user's umask (issue 18)."""

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

import zoo
from conftest import require_engine
from zoo import builds, cache


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    require_engine("onnx")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))


def _build(out=None, **kw):
    return zoo.build("linreg", "onnx", out=out, in_process=True, **kw)


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def _names(folder):
    """What a folder holds, besides this test's cache (where the build locks live)."""
    return sorted(p.name for p in folder.iterdir() if p.name != "cache")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True,
                          cwd=cwd)


# --- --out: only zoo's own builds are replaced ----------------------------------------------------

def test_a_user_folder_with_a_foreign_manifest_is_refused_by_the_cli_and_kept(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "thesis.txt").write_text("four years of work")
    (d / "manifest.json").write_text('{"title": "my thesis", "files": {"thesis.txt": "x"}}')
    before = _snapshot(d)
    r = _cli("build", "linreg", "--engine", "onnx", "--out", str(d), "--force")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "not a zoo build" in r.stderr + r.stdout and "internal error" not in r.stderr
    assert _snapshot(d) == before
    assert _names(tmp_path) == ["d"]


def test_files_added_to_a_zoo_build_are_never_deleted_by_a_rebuild(tmp_path):
    d = tmp_path / "d"
    _build(d)
    (d / "notes.txt").write_text("mine")
    (d / "extra").mkdir()
    (d / "extra" / "plot.png").write_bytes(b"png")
    before = _snapshot(d)
    with pytest.raises(builds.OutRefused, match="notes.txt") as e:
        _build(d, force=True)
    assert e.value.exit_code == 2 and "extra/plot.png" in str(e.value)
    assert _snapshot(d) == before and _leftovers(tmp_path) == []


def test_a_file_changed_in_a_zoo_build_is_not_overwritten(tmp_path):
    d = tmp_path / "d"
    _build(d)
    (d / "spec.prototxt").write_text("# my edits\n")
    with pytest.raises(builds.OutRefused, match="changed since zoo wrote it"):
        _build(d)
    assert (d / "spec.prototxt").read_text() == "# my edits\n"


def test_a_zoo_build_and_an_empty_folder_are_replaced(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    first = _build(d)
    again = _build(d, force=True)
    assert not again.reused and again.manifest["created"] >= first.manifest["created"]
    assert {str(p) for p in _snapshot(d)} == set(again.manifest["files"]) | {"manifest.json"}
    assert _build(d).reused and _leftovers(tmp_path) == []


def test_out_that_is_a_file_or_a_dangling_link_is_refused_cleanly(tmp_path):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"not mine to replace")
    with pytest.raises(builds.OutRefused, match="is a file"):
        _build(f)
    assert f.read_bytes() == b"not mine to replace"
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "nowhere")
    r = _cli("build", "linreg", "--engine", "onnx", "--out", str(dangling))
    assert r.returncode == 2 and "symbolic link to nothing" in r.stderr + r.stdout, r.stderr
    filelink = tmp_path / "filelink"
    filelink.symlink_to(f)
    with pytest.raises(builds.OutRefused, match="link to a file"):
        _build(filelink)
    assert _names(tmp_path) == ["filelink", "link", "model.onnx"]
    assert dangling.is_symlink() and not dangling.exists()


def test_out_that_links_to_a_folder_builds_into_that_folder(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "latest"
    link.symlink_to(real)
    _build(link)
    assert link.is_symlink() and (real / "model.onnx").is_file()
    assert not _build(link, force=True).reused
    assert link.is_symlink() and (real / "manifest.json").is_file() and _leftovers(tmp_path) == []


# --- concurrent builds ---------------------------------------------------------------------------

def test_concurrent_forced_builds_of_one_target_all_succeed_and_leave_nothing(tmp_path):
    """4 processes x 4 forced builds into one --out folder and one cache entry (issue: 6 of 90
    failed with 'Directory not empty' and left .old-* folders; on the old code, with the slow
    renames below, about 10 of these 16 --out builds fail)."""
    out = tmp_path / "d"
    script = textwrap.dedent(f"""
        import os, time, zoo
        rename = os.rename      # a slow disk: widens the window between a swap's two renames
        os.rename = lambda a, b: (time.sleep(0.02), rename(a, b))
        for i in range(4):
            zoo.build("linreg", "onnx", out={str(out)!r}, force=True, in_process=True)
            zoo.build("linreg", "onnx", force=True, in_process=True)
        print("ok")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert all(rc == 0 and out_.strip() == "ok" for rc, out_, _ in results), results
    assert _names(tmp_path) == ["d"]
    assert _build(out).reused
    engine_dir = cache.root() / "onnx"
    assert len(list(engine_dir.iterdir())) == 1 and _leftovers(engine_dir) == []
    assert _build().reused


# --- a full disk -------------------------------------------------------------------------------

def test_too_little_free_space_is_a_clear_error_before_writing(tmp_path, monkeypatch):
    import shutil
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(cache.NoSpace, match=r"not enough disk space in .*: the build needs about") as e:
        _build(tmp_path / "d")
    assert e.value.exit_code == 2 and str(tmp_path) in str(e.value)
    assert _names(tmp_path) == []


def test_enospc_while_writing_is_a_clear_error_and_leaves_no_partial_build(tmp_path, monkeypatch):
    """A converter that hits a real ENOSPC (writing to /dev/full) mid-build."""
    import importlib
    conv = importlib.import_module("zoo.converters.onnx")

    def full_disk_build(net, weights, outdir, options):
        (outdir / "model.onnx").write_bytes(b"partial")
        with open("/dev/full", "wb") as f:
            f.write(b"\0" * 65536)
            f.flush()

    monkeypatch.setattr(conv, "build", full_disk_build)
    for out in (tmp_path / "d", None):
        with pytest.raises(cache.NoSpace, match="not enough disk space") as e:
            _build(out)
        assert e.value.exit_code == 2
    assert _names(tmp_path) == []
    assert cache.entries() == [] and _leftovers(cache.root() / "onnx") == []


def test_enospc_is_recognised_in_a_child_build_too():
    assert cache.is_no_space(OSError(errno.ENOSPC, "No space left on device"))
    assert cache.is_no_space("OSError: [Errno 28] No space left on device")
    assert not cache.is_no_space(OSError(errno.EACCES, "Permission denied"))


# --- permissions --------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_builds_follow_the_users_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        for b in (_build(tmp_path / "d", force=True), _build(force=True)):
            assert stat.S_IMODE(b.path.stat().st_mode) == 0o777 & ~umask
            for rel in b.manifest["files"]:
                assert stat.S_IMODE((b.path / rel).stat().st_mode) == 0o666 & ~umask, rel
    finally:
        os.umask(old)


def test_manifest_of_a_cached_build_says_whether_it_is_transient(tmp_path):
    assert _build(transient=True).manifest["transient"] is True
    kept = _build()           # asked for again without transient: kept for good
    assert kept.reused and kept.transient is False
    assert json.loads((kept.path / "manifest.json").read_text())["transient"] is False
    assert builds.one_off(zoo.load("linreg")) is False
    mine = tmp_path / "mine.prototxt"
    mine.write_text(zoo.load("linreg").text)
    assert builds.one_off(zoo.load(mine)) is True
