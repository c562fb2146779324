"""Feedback on long work (issue 20): `zoo verify` and `zoo bench` show their progress (cases
done / total, the case running, elapsed and an estimate) on stderr: a live bar in a terminal,
plain lines when piped; the tables on stdout and the JSON files never carry it."""

import json
import os
import pty
import re
import select
import subprocess
import sys

import pytest

import cli
import zoo
from conftest import require_engine

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env(**extra):
    """A clean environment: nothing that forces or forbids rich's terminal handling."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "NO_COLOR", "FORCE_TERMINAL", "TTY_INTERACTIVE", "TTY_COMPATIBLE")}
    return {**env, "TERM": "xterm-256color", "COLUMNS": "160", **extra}


def run_in_terminal(*args, timeout=120):
    """`zoo ARGS` with its stderr in a pseudo-terminal (as a person running it sees it) and
    its stdout piped: (exit status, what the terminal showed, stdout)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, env=_env())
    os.close(slave)
    shown = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                pytest.fail(f"zoo {' '.join(args)} said nothing for {timeout}s")
            try:
                chunk = os.read(master, 65536)
            except OSError:          # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        stdout = proc.stdout.read().decode()
        proc.wait(timeout=timeout)
    finally:
        os.close(master)
        proc.stdout.close()
    return proc.returncode, shown.decode(errors="replace"), stdout


def run_piped(*args):
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True,
                          text=True, env=_env(), timeout=300)


def test_verify_shows_a_live_bar_in_a_terminal_and_keeps_it_off_stdout(tmp_path):
    require_engine("onnx")
    report = tmp_path / "r.json"
    code, shown, stdout = run_in_terminal("verify", "linreg", "softmax-mnist", "--engines", "onnx",
                                          "--jobs", "1", "--json", str(report))
    assert code == 0, shown + stdout
    plain = ESCAPE.sub("", shown)
    # the bar: the cases running (the walk may start the second while the first compares),
    # cases done / total (each count drawn, however close the two cases end), the times
    assert "zoo verify: linreg onnx forward" in plain and "0/2" in plain, plain
    assert re.search(r"zoo verify: [^━\r\n]*softmax-mnist onnx forward", plain) and "1/2" in plain, plain
    assert "━" in plain and "elapsed" in plain
    assert re.search(r"1/2 \d+s elapsed, about \d+s left", plain), plain
    # each finished case's line, printed above the bar
    assert re.search(r"pass +linreg onnx forward \(\d+\.\ds\)", plain), plain
    # stdout: the table only, no trace of the bar
    assert "2 pass, 0 fail, 0 error, 0 skipped" in stdout
    assert "elapsed" not in stdout and "/2" not in stdout and "\x1b[" not in stdout, stdout
    assert [r["status"] for r in json.loads(report.read_text())] == ["pass", "pass"]


def test_bench_shows_a_live_bar_in_a_terminal_and_keeps_it_out_of_the_json(tmp_path):
    require_engine("onnx")
    rows_file = tmp_path / "b.json"
    code, shown, stdout = run_in_terminal("bench", "linreg", "--engines", "onnx", "--mode", "both",
                                          "--batch", "2", "--iters", "2", "--warmup", "1",
                                          "--min-time", "0", "--json", str(rows_file))
    plain = ESCAPE.sub("", shown)
    assert code == 0, plain + stdout
    assert "zoo bench: linreg onnx train" in plain and "0/2" in plain, plain
    assert "zoo bench: linreg onnx infer" in plain and "1/2" in plain, plain
    assert "linreg onnx infer: " in plain and " ms" in plain      # the finished case's line
    assert "elapsed" not in stdout and "zoo bench: linreg" not in stdout, stdout
    rows = json.loads(rows_file.read_text())                       # plain JSON, nothing else
    assert [(r["mode"], r["status"]) for r in rows] == [("train", "skipped"), ("infer", "ok")]


def test_piped_progress_is_plain_lines_on_stderr_only():
    require_engine("onnx")
    r = run_piped("verify", "linreg", "softmax-mnist", "--engines", "onnx", "--jobs", "1")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    # in the order the cases end (the walk may start the second case while the first compares)
    first = re.fullmatch(r"\[1/2, \d+s elapsed, about \d+s left\] pass +(\S+) onnx forward \(\d+\.\ds\)",
                         lines[0])
    second = re.fullmatch(r"\[2/2, \d+s in all\] pass +(\S+) onnx forward \(\d+\.\ds\)", lines[1])
    assert first and second, lines
    assert {first[1], second[1]} == {"linreg", "softmax-mnist"}, lines
    assert "\x1b[" not in r.stderr and "━" not in r.stderr     # no bar, no cursor movement
    assert "elapsed" not in r.stdout and "[1/2" not in r.stdout


def test_the_plan_is_the_order_in_which_cases_run():
    """The bar names the case running from the plan: it must be the walk's own order."""
    forward_only = ["onnx", "caffe-opencv"]      # train cases skip at once: no child starts
    got = zoo.verify(["linreg", "softmax-mnist"], forward_only, mode="train")
    assert [f"{r.network} {r.engine} {r.mode}" for r in got] == \
        cli._plan(["linreg", "softmax-mnist"], forward_only, ["train"])
    rows = zoo.bench(["softmax-mnist", "linreg"], forward_only, threads=[1, 2], mode="train")
    assert [f"{r['network']} {r['engine']} {r['mode']} threads={r['threads']}" for r in rows] == \
        cli._plan(["softmax-mnist", "linreg"], forward_only, ["train"], [1, 2])


def test_a_spec_file_is_named_by_its_file_in_the_plan(tmp_path):
    spec = tmp_path / "mine.prototxt"
    spec.write_text(zoo.load("linreg").text)
    assert cli._plan([str(spec)], ["onnx"], ["forward", "train"]) == \
        ["mine onnx forward", "mine onnx train"]


@pytest.mark.parametrize("value,shown", [(1995.3, "1,995"), (1234567.0, "1,234,567"), (12.34, "12.3"),
                                         (0.01234, "0.0123"), (1.0, "1.00"), (0.0, "0"),
                                         (999.96, "1,000")])
def test_table_numbers_are_for_people(value, shown):
    assert cli._fixed(value) == shown


def test_times_estimate_from_the_average_case():
    assert cli._times(0.0, 0, 4) == "0s elapsed"
    assert cli._times(30.0, 1, 4) == "30s elapsed, about 1m30s left"
    assert cli._times(7300.0, 4, 4) == "2h01m in all"
