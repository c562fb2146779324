"""benchmarks/verify_speed.py --then: zoo as it was at an old commit, installed from the
repository's history and run in a child, against the zoo of this tree, on the same network;
the statuses are compared case by case."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import verify_speed  # noqa: E402


def test_then_runs_the_old_zoo_in_a_child_and_compares_its_statuses(tmp_path):
    for engine in ("onnx", "torch"):
        require_engine(engine)
    has_rev = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", verify_speed.THEN_ISSUE + "^{commit}"],
                             capture_output=True)
    if has_rev.returncode != 0:
        pytest.skip(f"this clone lacks commit {verify_speed.THEN_ISSUE} (shallow?)")
    report = tmp_path / "speed.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "verify_speed.py"), "--then", "issue",
                        "--names", "linreg", "--engines", "onnx,torch", "--mode", "both",
                        "--json", str(report)],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "ZOO_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"old path (zoo at {verify_speed.THEN_ISSUE})" in r.stdout, r.stdout
    assert "ratio old / new" in r.stdout and "statuses identical" in r.stdout, r.stdout
    got = json.loads(report.read_text())
    assert got["then"] == verify_speed.THEN_ISSUE and got["old_s"] > 0 and got["new_s"] > 0
    cases = lambda rows: [(c["network"], c["engine"], c["mode"], c["status"]) for c in rows]
    assert cases(got["old"]) == cases(got["new"]) == [
        ("linreg", "onnx", "forward", "pass"), ("linreg", "onnx", "train", "skipped"),
        ("linreg", "torch", "forward", "pass"), ("linreg", "torch", "train", "pass")]
    # the old zoo ran from its own files, in a folder removed afterwards
    installed = r.stdout.split("installed in ", 1)[1].split(";", 1)[0]
    assert "zoo-then-" in installed and not Path(installed).exists()
