"""The README, true line by line: its commands and python snippets run as written, in a
temporary folder, and print what the README says they print.

Every ```python block and every `$ zoo ...` line of a ```console block is run, except the
few in NOT_RUN (each with its reason). A snippet's expected output is the trailing comment of
its print lines (`print(x.shape)   # (2, 10)`); a console command's is the lines under it.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_engine

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
ZOO = str(Path(sys.executable).with_name("zoo"))

# Commands the README shows that this test does not run, and why.
NOT_RUN = {
    "zoo verify alexnet-r --mode both":
        "every engine, both modes: 1-2 min here; verification is tested elsewhere",
    "zoo import deploy.prototxt --weights net.caffemodel --out imported-caffe/":
        "stands for the user's own Caffe files (tests/test_import.py imports real ones)",
    "zoo verify imported/main_graph.prototxt":
        "every engine; run below on torch and onnx only, to keep the test fast",
}
WARNING = re.compile(r"\b\w*Warning\b")


def fenced_blocks(text: str) -> list[tuple[str, str, str]]:
    """(language, body, section heading) of every fenced block."""
    out, heading = [], ""
    for m in re.finditer(r"^(#+ [^\n]*)$|^```(\w*)\n(.*?)^```", text, re.M | re.S):
        if m.group(1):
            heading = m.group(1).lstrip("# ")
        else:
            out.append((m.group(2), m.group(3), heading))
    return out


def console_commands(body: str) -> list[tuple[str, list[str]]]:
    """(command without its comment, the output lines shown under it)."""
    cmds = []
    for line in body.splitlines():
        if line.startswith("$ "):
            cmds.append((line[2:].split("  #")[0].strip(), []))
        elif line.strip() and cmds:
            cmds[-1][1].append(line)
    return cmds


def expected_prints(code: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"print\(.*#\s*(.+?)\s*$", code, re.M)]


BLOCKS = fenced_blocks(README)
SECTION_BUILT = "Using the built files without zoo"
SNIPPETS = [body for lang, body, h in BLOCKS if lang == "python" and h == SECTION_BUILT]
BUILD_CMDS = [c for lang, body, h in BLOCKS if lang == "console" and h == SECTION_BUILT
              for c, _ in console_commands(body)]
IMPORT_CMDS = [c for lang, body, h in BLOCKS if lang == "console" and h == "Importing models"
               and "imported main_graph" in body for c in console_commands(body)]


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)


def run_zoo(command: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    assert argv[0] == "zoo", command
    return run([ZOO, *argv[1:]], cwd)


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-c", code], cwd)


def test_readme_and_specs_cite_no_private_sources():
    files = [ROOT / "README.md", *sorted((ROOT / "specs").iterdir()), *sorted((ROOT / "docs").iterdir())]
    cited = [f.name for f in files if f.is_file() and "shared/" in f.read_text(errors="replace")]
    assert cited == []
    assert (ROOT / "docs" / "networks.md").is_file()


def test_every_readme_command_is_run_or_excused():
    """A command added to the README fails here until a test below runs it (or NOT_RUN says
    why not)."""
    commands = {c for lang, body, _ in BLOCKS if lang == "console" for c, _ in console_commands(body)}
    run_here = {"zoo list", "zoo show alexnet-r", *BUILD_CMDS, *(c for c, _ in IMPORT_CMDS)}
    assert commands == run_here | set(NOT_RUN)


def test_zoo_table_matches_zoo_list(tmp_path):
    r = run_zoo("zoo list --json", tmp_path)
    assert r.returncode == 0, r.stderr
    listed = {row["name"]: row["params"] for row in json.loads(r.stdout)}
    table = {}
    for names, params in re.findall(r"^\| ([a-z0-9, -]+) \| ([\d,/ ]+) \|", README, re.M):
        counts = [int(p.replace(",", "")) for p in params.split("/")]
        names = [n.strip() for n in names.split(",")]
        table.update(zip(names, counts * len(names) if len(counts) == 1 else counts))
    assert table == listed


def test_first_verify_show_prints_what_it_says(tmp_path):
    (block,) = [b for lang, b, h in BLOCKS if lang == "console" and h == "A first verify"]
    commands = [c for c, _ in console_commands(block)]
    assert commands[:2] == ["zoo list", "zoo show alexnet-r"]
    assert run_zoo("zoo list", tmp_path).returncode == 0
    r = run_zoo("zoo show alexnet-r", tmp_path)
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if "layer" in line and "FLOPs" in line)
    assert re.findall(r"\w+", header) == ["layer", "type", "output", "params", "MACs", "FLOPs"]
    assert "85,098" in r.stdout   # the total the zoo table gives


def test_spec_example_validates_and_converts_without_loss(tmp_path):
    (spec,) = [b for lang, b, _ in BLOCKS if lang == "protobuf"]
    (tmp_path / "tiny.prototxt").write_text(spec)
    assert run_zoo("zoo validate tiny.prototxt", tmp_path).returncode == 0
    assert run_zoo("zoo convert tiny.prototxt --to json --out tiny.json", tmp_path).returncode == 0
    assert run_zoo("zoo convert tiny.json --to prototxt --out back.prototxt", tmp_path).returncode == 0
    import zoo
    a, b = zoo.load(str(tmp_path / "tiny.prototxt")), zoo.load(str(tmp_path / "back.prototxt"))
    assert a.proto == b.proto


def test_validate_error_line_is_the_one_shown(tmp_path):
    """The README's bad.prototxt: the spec above without `flat`, `fc` reading `pool1`."""
    (spec,) = [b for lang, b, _ in BLOCKS if lang == "protobuf"]
    bad = "".join(line for line in spec.splitlines(True) if 'name: "flat"' not in line)
    (tmp_path / "bad.prototxt").write_text(bad.replace('bottom: "flat"', 'bottom: "pool1"'))
    shown = re.search(r"`(bad\.prototxt:\d+: .*?)`", README).group(1)
    r = run_zoo("zoo validate bad.prototxt", tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == shown


def test_python_api_names_exist():
    import zoo
    line = re.search(r"Python API, the `zoo` module \(.*?\): (.*?)\.\n", README, re.S).group(1)
    for dotted in re.findall(r"`zoo\.([\w.]+)`", line):
        obj = zoo
        for part in dotted.split("."):
            obj = getattr(obj, part)
        assert callable(obj), dotted


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The README's build commands, one folder per engine, run once for the snippets."""
    cwd = tmp_path_factory.mktemp("readme")
    done = {}

    def build(engine: str) -> Path:
        if engine not in done:
            (cmd,) = [c for c in BUILD_CMDS if f"--engine {engine} " in c]
            r = run_zoo(cmd, cwd)
            assert r.returncode == 0, r.stderr[-2000:]
            done[engine] = cwd / "built" / engine
            assert done[engine].is_dir()
        return cwd
    return build


def test_build_commands_use_one_folder_per_engine():
    outs = [re.search(r"--out (\S+)", c).group(1) for c in BUILD_CMDS]
    engines = [re.search(r"--engine (\S+)", c).group(1) for c in BUILD_CMDS]
    assert outs == [f"built/{e}" for e in engines] and len(set(outs)) == len(outs) == 5


ENGINES_OF_SNIPPET = {"torch": ["torch"], "tensorflow": ["tensorflow"], "mxnet": ["mxnet"],
                      "caffe": ["caffe", "caffe-opencv"], "onnx": ["onnx"]}


@pytest.mark.parametrize("code", SNIPPETS, ids=lambda c: re.search(r"built/(\w+)", c).group(1))
def test_built_files_snippet_prints_what_it_says(code, built):
    folder = re.search(r"built/(\w+)", code).group(1)
    for engine in ENGINES_OF_SNIPPET[folder]:
        require_engine(engine)
    cwd = built(folder)
    r = run_python(code, cwd)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines() == expected_prints(code) != []
    assert not WARNING.search(r.stderr), r.stderr[-3000:]


def test_onnx_export_and_import_example(tmp_path):
    require_engine("torch")
    require_engine("onnx")
    (export,) = [b for lang, b, h in BLOCKS if lang == "python" and "torch.onnx.export" in b]
    r = run_python(export, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    # The README says what dynamo=False prints; nothing else may warn.
    assert set(WARNING.findall(r.stderr)) <= {"DeprecationWarning"}, r.stderr[-3000:]
    assert IMPORT_CMDS
    for command, shown in IMPORT_CMDS:
        r = run_zoo(command, tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.splitlines() == shown
    r = run_zoo("zoo verify imported/main_graph.prototxt --engines torch,onnx", tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]


def test_import_coverage_tables_are_generated_from_the_importers():
    """The README's ONNX and Caffe coverage tables are the importers' registries, not hand-kept."""
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "coverage.py"), "--check", str(ROOT / "README.md")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
