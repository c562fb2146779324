"""A long-lived child hashes a build's files once (runners/base.py _file_digest), yet still
sees a file changed after that: rewritten in place at the same size, or replaced."""

import hashlib
import json
import os

import pytest

from zoo.runners.base import ManifestError, read_manifest


def _build(folder, payload: bytes):
    (folder / "model.bin").write_bytes(payload)
    (folder / "manifest.json").write_text(json.dumps(
        {"files": {"model.bin": hashlib.sha256(payload).hexdigest()}}))


def test_a_file_changed_after_its_first_check_is_refused(tmp_path):
    _build(tmp_path, b"A" * 4096)
    read_manifest(tmp_path)
    read_manifest(tmp_path)                       # the remembered digest
    with open(tmp_path / "model.bin", "r+b") as f:   # same size, same inode, new bytes
        f.write(b"B")
    with pytest.raises(ManifestError, match="does not match"):
        read_manifest(tmp_path)


def test_a_replaced_file_is_refused_even_with_its_old_times(tmp_path):
    _build(tmp_path, b"A" * 4096)
    read_manifest(tmp_path)
    st = os.stat(tmp_path / "model.bin")
    (tmp_path / "other").write_bytes(b"C" * 4096)
    os.replace(tmp_path / "other", tmp_path / "model.bin")
    os.utime(tmp_path / "model.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ManifestError, match="does not match"):
        read_manifest(tmp_path)


def test_a_just_written_file_is_not_remembered_until_its_times_settle(tmp_path, monkeypatch):
    """The remembered digest follows zoo/files.py's racy rule: a file stamped within RACY_NS
    of now is hashed at every read (a coarse file clock could hide a rewrite)."""
    from zoo import files
    from zoo.runners import base
    _build(tmp_path, b"A" * 4096)
    monkeypatch.setattr(base, "_digests", {})
    read_manifest(tmp_path)
    assert base._digests == {}                    # fresh: not remembered
    monkeypatch.setattr(files, "RACY_NS", 0)
    read_manifest(tmp_path)
    assert list(base._digests) == [(tmp_path / "model.bin").resolve()]
