"""A cached build keeps the stat identity and sha256 of each file it hashed (zoo/files.py's
HASH_RECORD): reusing it, in the parent (zoo/builds.py) and in the child that loads it
(runners/base.py), hashes only files changed since. Any change is still caught: rewritten in
place with the old times, replaced, a hard link added; a malformed or forged record is only
ignored; a user's --out folder gets no record and is always hashed in full."""

import json
import os
import time

import pytest

import zoo
from conftest import require_engine
from zoo import files
from zoo.runners import base as runner_base
from zoo.runners.base import ManifestError, read_manifest


@pytest.fixture
def hashed(monkeypatch, tmp_path):
    """The paths zoo hashes from now on (the parent's and the runner's reads alike)."""
    require_engine("onnx")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "zoo"))
    monkeypatch.setattr(runner_base, "_digests", {})      # no digest remembered in-process
    seen = []
    real = files.sha256_file

    def counting(path):
        if not str(path).endswith(".py"):          # not a converter's source (the build key)
            seen.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(files, "sha256_file", counting)
    monkeypatch.setattr(files, "RACY_NS", 0)     # files just written are recorded (see below)
    return seen


def _settle():
    """Past any coarse file-time tick (a few ms), so that a rewrite gets new times."""
    time.sleep(0.05)


def _build(name="linreg", engine="onnx", **kw):
    return zoo.build(name, engine, in_process=True, **kw)


def _record(build) -> dict:
    return json.loads((build.path / files.HASH_RECORD).read_text())


def test_a_reused_build_is_not_hashed_again_by_the_parent_or_the_runner(hashed):
    first = _build()
    assert set(_record(first)) == set(first.manifest["files"])
    hashed.clear()
    again = _build()
    assert again.reused and again.path == first.path and hashed == []
    read_manifest(again.path)
    assert hashed == []


def test_a_file_rewritten_in_place_with_its_old_times_is_caught(hashed):
    b = _build()
    model = next(b.path / rel for rel in b.manifest["files"] if rel.endswith(".onnx"))
    _settle()
    st = os.stat(model)
    data = bytearray(model.read_bytes())
    data[-1] ^= 1                                  # same size, same inode, other bytes
    model.write_bytes(bytes(data))
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ManifestError, match="does not match"):
        read_manifest(b.path)                      # the child refuses it
    again = _build()                               # the parent rebuilds it
    assert not again.reused and model.read_bytes() != bytes(data)
    read_manifest(again.path)


def test_a_replaced_file_is_caught(hashed):
    b = _build()
    model = next(b.path / rel for rel in b.manifest["files"] if rel.endswith(".onnx"))
    _settle()
    st = os.stat(model)
    other = model.with_name("other")
    other.write_bytes(b"\0" * st.st_size)
    os.replace(other, model)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ManifestError, match="does not match"):
        read_manifest(b.path)
    assert not _build().reused


def test_a_hard_link_made_by_another_engine_s_build_means_one_hash_then_none(hashed):
    """The weights file is one inode linked into every engine's build of a network: a link
    added changes its ctime, so the earlier build's record no longer vouches for it."""
    require_engine("torch")
    onnx = _build()
    _build(engine="torch")                         # links the same weights
    hashed.clear()
    assert _build().reused
    assert hashed == ["weights.npz"]               # that file only, and its record renewed
    hashed.clear()
    assert _build().reused and hashed == []
    read_manifest(onnx.path)
    assert hashed == []


@pytest.mark.parametrize("record", ["not json", "[1, 2]", '{"weights.npz": "abc"}',
                                    '{"weights.npz": [1, 2, 3, 4, 5, 6]}'])
def test_a_malformed_or_forged_record_is_ignored(hashed, record):
    b = _build()
    (b.path / files.HASH_RECORD).write_text(record)
    hashed.clear()
    read_manifest(b.path)
    assert sorted(hashed) == sorted(b.manifest["files"])     # all hashed, none refused
    hashed.clear()
    assert _build().reused and sorted(hashed) == sorted(b.manifest["files"])
    assert set(_record(b)) == set(b.manifest["files"])       # and the record rewritten


def test_a_well_formed_entry_vouches_only_for_its_identity_and_digest(hashed):
    """An entry with the file's identity but another digest, or the digest with another
    identity, is not trusted: the file is hashed (and the record put right)."""
    b = _build()
    rels = sorted(b.manifest["files"])
    right = {rel: files.stat_identity(b.path / rel) for rel in rels}
    forged = {rels[0]: [*right[rels[0]], "0" * 64],
              rels[1]: [*right[rels[1]][:2], right[rels[1]][2] + 1, *right[rels[1]][3:],
                        b.manifest["files"][rels[1]]]}
    (b.path / files.HASH_RECORD).write_text(json.dumps(forged))
    hashed.clear()
    read_manifest(b.path)
    assert sorted(hashed) == rels
    hashed.clear()
    assert _build().reused and sorted(hashed) == rels
    assert {rel: e[5] for rel, e in _record(b).items()} == b.manifest["files"]


def test_files_stamped_within_the_racy_window_are_not_recorded(hashed, monkeypatch):
    """Just written, a file is hashed at every use until its times are RACY_NS old: a rewrite
    within a coarse clock's tick would not change its identity."""
    monkeypatch.setattr(files, "RACY_NS", 3_600 * 10**9)
    b = _build()
    assert not (b.path / files.HASH_RECORD).exists()
    hashed.clear()
    assert _build().reused and sorted(hashed) == sorted(b.manifest["files"])
    assert not (b.path / files.HASH_RECORD).exists()


def test_a_record_that_is_a_link_is_not_followed(hashed, tmp_path):
    b = _build()
    real = tmp_path / "elsewhere.json"
    os.replace(b.path / files.HASH_RECORD, real)
    os.symlink(real, b.path / files.HASH_RECORD)
    hashed.clear()
    read_manifest(b.path)
    assert sorted(hashed) == sorted(b.manifest["files"])


def test_an_out_folder_gets_no_record_and_is_hashed_in_full(hashed, tmp_path):
    out = tmp_path / "out"
    b = _build(out=out)
    assert not (out / files.HASH_RECORD).exists()
    hashed.clear()
    assert _build(out=out).reused
    assert sorted(hashed) == sorted(b.manifest["files"])
    assert not (out / files.HASH_RECORD).exists()


def test_a_cached_build_copied_to_an_out_folder_is_replaced_not_refused(hashed, tmp_path):
    """The record is zoo's own file: a copy of a cached build (with its record) in --out is
    still a zoo build that zoo may replace, and the copy's record vouches for nothing."""
    import shutil
    b = _build()
    out = tmp_path / "copy"
    shutil.copytree(b.path, out)
    hashed.clear()
    assert _build(out=out).reused                     # intact: every file hashed, none refused
    assert sorted(hashed) == sorted(b.manifest["files"])
    assert not _build(out=out, force=True).reused     # and zoo may replace it
