"""`zoo report`: one self-contained HTML page from real verify and bench results, opened in
headless Chromium (Debian's package; skipped with the reason where it is missing), and
`zoo show --graph`: the network drawn as SVG."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import zoo
from conftest import require_engine
from zoo import benchmark, graph, report

STATUS_RGB = {"pass": (0x2E, 0x7D, 0x32), "fail": (0xC6, 0x28, 0x28)}
ENGINE_RGB = [(0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)]      # matplotlib's C0, C1: plot lines/bars


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A real verify (passes, skips, and a fail at a tolerance float32 cannot meet) and a real
    tiny bench (with the machine's GEMM peak, measured once per cache)."""
    for e in ("onnx", "caffe-opencv"):
        require_engine(e)
    d = tmp_path_factory.mktemp("results")
    ok = zoo.verify(["linreg"], engines=["onnx", "caffe-opencv"], mode="both")
    strict = zoo.verify(["twolayer"], engines=["onnx"], atol=1e-12, rtol=0)
    assert {r.status for r in ok} == {"pass", "skipped"} and strict[0].status == "fail", strict
    (d / "verify.json").write_text(json.dumps([r.to_dict() for r in ok + strict]))
    rows = benchmark.bench(
        ["twolayer"], ["onnx", "caffe-opencv"], mode="infer", threads=[1, 2], batch=8, warmup=1,
        iters=6, min_time=0.05, max_time=0.5)
    assert all(r["status"] == "ok" for r in rows), rows
    (d / "bench.json").write_text(json.dumps(rows, default=str))
    return d


def test_report_is_one_self_contained_page_with_matrix_tables_and_plots(results, tmp_path):
    out = report.write([results / "verify.json", results / "bench.json"], tmp_path / "r.html")
    page = out.read_text()
    # nothing fetched: no scripts, stylesheets, images or fonts from anywhere
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    refs = set(re.findall(r"""(?:href|src)=["']([^"']+)""", page)) - {"#arrow"}
    assert not [r for r in refs if not r.startswith("#")], refs
    assert not re.search(r"url\((?!#)", page)
    # the verify matrix: a cell per case, its status as a class, its errors on hover
    assert 'class="cell fail" title="twolayer / onnx / forward: fail' in page
    assert re.search(r'class="cell pass" title="linreg / onnx / forward: pass\nmax_abs_err', page)
    assert 'class="cell skipped" title="linreg / onnx / train: skipped' in page
    # the bench table and four plots, inline SVG
    assert page.count("<tr><td>twolayer</td>") == 4 and "of GEMM peak" in page
    assert page.count("<figure") == 4 and page.count("<svg") == 4
    for section in ('id="machine"', 'id="verify"', 'id="bench"', 'id="plots"'):
        assert section in page


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs Debian's package)")
    return exe


def screenshot(html: Path, png: Path, width: int = 1400, height: int = 2400) -> np.ndarray:
    """The page as headless Chromium draws it, with every network request refused."""
    r = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={width},{height}",
                        f"--screenshot={png}", html.resolve().as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and png.stat().st_size > 0, r.stderr[-2000:]
    from PIL import Image
    return np.asarray(Image.open(png).convert("RGB"))


def pixels(img: np.ndarray, rgb, tol: int = 6) -> np.ndarray:
    """(rows, cols) of the pixels within `tol` of the colour."""
    return np.argwhere(np.abs(img.astype(int) - np.array(rgb)).max(axis=2) <= tol)


def test_report_renders_in_headless_chromium_with_every_element(results, tmp_path):
    page = report.write([results / "verify.json", results / "bench.json"], tmp_path / "r.html")
    img = screenshot(page, tmp_path / "r.png")
    # the verify matrix's status colours are drawn as blocks (a chip is 64 px wide at least)
    for status, rgb in STATUS_RGB.items():
        where = pixels(img, rgb)
        assert len(where) > 64 * 10, f"no {status} cell on the screenshot"
    top_of_matrix = pixels(img, STATUS_RGB["pass"])[:, 0].min()
    # the plots (engines' colours) are drawn, below the matrix and the table
    for rgb in ENGINE_RGB:
        where = pixels(img, rgb, tol=10)
        assert len(where) > 500, f"no plot in colour {rgb}"
        assert np.median(where[:, 0]) > top_of_matrix
    # the browser parsed the tables and the inline SVG
    dom = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          page.resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<svg") == 4 and 'class="verify"' in dom and 'class="bench"' in dom


def test_report_refuses_what_is_not_a_result_and_what_it_did_not_write(results, tmp_path):
    bad = tmp_path / "bad.json"
    for text, why in (("{]", "not JSON"), ('{"a": 1}', "expected a JSON list"), ("[]", "no rows"),
                      ('[{"network": "x"}]', "has no engine, mode, status")):
        bad.write_text(text)
        with pytest.raises(report.ReportError, match=why) as e:
            report.write([bad], tmp_path / "r.html")
        assert e.value.exit_code == 2 and "\n" not in str(e.value)
    with pytest.raises(report.ReportError, match="no such file"):
        report.write([tmp_path / "missing.json"], tmp_path / "r.html")
    with pytest.raises(report.ReportError, match="not a regular file"):
        report.write([tmp_path], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    with pytest.raises(report.ReportError, match="not a zoo report"):
        report.write([results / "bench.json"], mine)
    assert mine.read_text() == "<p>my notes</p>"
    again = report.write([results / "bench.json"], tmp_path / "r.html")      # its own: replaced
    assert report.write([results / "bench.json"], again) == again
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report-")] == []


def test_graph_draws_every_layer_with_its_shape_and_params(tmp_path):
    out = graph.write("alexnet-r", tmp_path / "a.svg")
    svg = out.read_text()
    net = zoo.load("alexnet-r")
    assert svg.count('<g class="layer">') == len(net.layers)
    assert "conv1" in svg and "Convolution, 2,432 params" in svg and "1x32x32x32" in svg
    arrows = sum(len([b for b in l.bottoms]) for l in net.layers)
    assert svg.count("<line ") == arrows
    img = screenshot(out, tmp_path / "a.png", 700, 1300)
    assert len(pixels(img, (0xFF, 0xF3, 0xE0), 2)) > 3 * 150 * 40      # three conv boxes + fc
    mine = tmp_path / "mine.svg"
    mine.write_text("<svg/>")
    with pytest.raises(zoo.errors.UsageError, match="not a graph zoo drew"):
        graph.write("linreg", mine)
    with pytest.raises(zoo.errors.UsageError, match="name the file .svg"):
        graph.write("linreg", tmp_path / "a.png")
