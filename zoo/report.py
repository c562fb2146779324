"""`zoo report RESULTS.json... --out report.html`: one self-contained HTML page.

It reads the JSON files `zoo verify --json` and `zoo bench --json` write (each a list of
rows; which kind a file is comes from its rows) and writes one page with no outside
reference (styles inline, plots as inline SVG with their text drawn as paths), so it opens
anywhere without network access:
  - the machine and the engines' versions (from the bench rows; for a verify alone, this
    machine's at report time, and the page says so);
  - the verify matrix: network x engine, one cell per mode coloured by status, the error
    figures and the reason in each cell's tooltip;
  - the bench table (median, its 95% CI, p10/p90/p99, CV, samples/s, GFLOP/s, fraction of
    the GEMM peak, noise and load flags) and plots: time per batch, samples/s, fraction of
    peak and thread scaling.

Result files are read as data only: regular files, at most MAX_BYTES, JSON lists of objects.
The page is written to a temporary file and renamed; an existing OUT is replaced only when
it is a page this module wrote.
"""

from __future__ import annotations

import html
import io
import json
import os
import tempfile
from pathlib import Path

from .errors import UsageError

MAX_BYTES = 64 << 20
GENERATOR = "zoo report"
VERIFY_STATUSES = ("pass", "fail", "error", "skipped")
COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "error": "#6a1b9a", "skipped": "#9e9e9e",
           "ok": "#2e7d32", "noisy": "#ef6c00"}


class ReportError(UsageError):
    """A results file that is not a zoo verify or bench JSON, or an OUT zoo did not write."""


# --- reading -----------------------------------------------------------------------------------
def read(paths: list[str | Path]) -> tuple[list[dict], list[dict]]:
    """(verify rows, bench rows) from the files, in order."""
    if not paths:
        raise ReportError("no results files given (zoo verify --json F, zoo bench --json F)")
    verify, bench = [], []
    for p in paths:
        rows = _load(Path(p))
        kind = _kind(Path(p), rows)
        (verify if kind == "verify" else bench).extend(rows)
    return verify, bench


def _load(path: Path) -> list[dict]:
    if not path.exists():
        raise ReportError(f"{path}: no such file")
    if not path.is_file():
        raise ReportError(f"{path}: not a regular file")
    if path.stat().st_size > MAX_BYTES:
        raise ReportError(f"{path}: {path.stat().st_size:,} bytes, more than a results file "
                          f"may have ({MAX_BYTES:,})")
    try:
        rows = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as e:
        raise ReportError(f"{path}: not JSON ({str(e).splitlines()[0][:200]})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ReportError(f"{path}: not a zoo verify or bench result (expected a JSON list of rows)")
    return rows


def _kind(path: Path, rows: list[dict]) -> str:
    """"verify" or "bench", from what every row has; an empty list is refused."""
    if not rows:
        raise ReportError(f"{path}: no rows")
    need = {"network", "engine", "mode", "status"}
    for i, r in enumerate(rows):
        if not need <= set(r):
            missing = ", ".join(sorted(need - set(r)))
            raise ReportError(f"{path}: row {i} has no {missing}: not a zoo verify or bench result")
    if all(r["status"] in VERIFY_STATUSES and "max_abs_err" in r for r in rows):
        return "verify"
    if all("environment" in r or r["status"] != "ok" for r in rows) and \
            any("batch" in r for r in rows):
        return "bench"
    raise ReportError(f"{path}: rows are neither zoo verify results nor zoo bench rows")


# --- writing -----------------------------------------------------------------------------------
def write(paths: list[str | Path], out: str | Path) -> Path:
    """Read the results files and write the page to `out`; returns its path."""
    verify, bench = read(paths)
    out = Path(out)
    _check_target(out)
    page = render(verify, bench, [str(p) for p in paths])
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.chmod(tmp, 0o666 & ~_umask())     # as an ordinary new file, not mkstemp's 0600
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_target(out: Path) -> None:
    """zoo replaces only a page it wrote itself."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_file():
        raise ReportError(f"{out}: exists and is not a regular file; choose another --out")
    with open(out, "rb") as f:
        head = f.read(4096)
    if f'<meta name="generator" content="{GENERATOR}">'.encode() not in head:
        raise ReportError(f"{out}: exists and is not a zoo report; choose another --out")


def render(verify: list[dict], bench: list[dict], sources: list[str]) -> str:
    parts = [_machine(bench)]
    if verify:
        parts.append(_verify_matrix(verify))
    if bench:
        parts.append(_bench_table(bench))
        parts.append(_bench_plots(bench))
    srcs = ", ".join(html.escape(s) for s in sources)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta name="generator" content="{GENERATOR}">\n'
            f"<title>zoo report</title>\n<style>{_CSS}</style></head>\n<body>\n"
            f"<h1>zoo report</h1>\n<p class=src>from {srcs}</p>\n" + "\n".join(parts)
            + "\n</body></html>\n")


_CSS = """
body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:24px;color:#212121;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.src{color:#757575;font-size:12px;margin:0}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #e0e0e0;padding:3px 7px}th{background:#eceff1;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.cell{display:inline-block;min-width:64px;margin:1px;padding:2px 6px;border-radius:3px;
color:#fff;font-size:12px;cursor:help}
.pass{background:#2e7d32}.fail{background:#c62828}.error{background:#6a1b9a}
.skipped{background:#9e9e9e}.ok{color:#2e7d32}.noisy{color:#ef6c00;font-weight:bold;cursor:help}
.legend .cell{cursor:default}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots figure{margin:0}
.plots svg{max-width:680px;height:auto}.plots figure.wide svg{max-width:1380px}
figcaption{font-size:12px;color:#555}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _machine(bench: list[dict]) -> str:
    env = next((r["environment"] for r in bench if isinstance(r.get("environment"), dict)), None)
    note = ""
    if env is None:
        from .benchmark import environment
        env = environment()
        note = "<p>No bench results given: this is the machine the report was made on.</p>"
    engines = env.get("engines") or {}
    vers = "".join(f"<tr><td>{_e(name)}</td><td>{_e(', '.join(f'{k} {v}' for k, v in v_.items()))}</td></tr>"
                   for name, v_ in sorted(engines.items()))
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(env.get(k, '-'))}</td></tr>"
                   for k in ("cpu", "cores", "platform", "python", "zoo"))
    return (f'<h2 id="machine">Machine and engine versions</h2>{note}'
            f'<table class="machine">{rows}</table>'
            f'<table class="versions" style="margin-top:8px"><tr><th>engine</th><th>versions</th></tr>{vers}</table>')


def _tooltip(r: dict) -> str:
    bits = [f"{r['network']} / {r['engine']} / {r['mode']}: {r['status']}"]
    for k in ("max_abs_err", "max_rel_err", "needed_factor"):
        if r.get(k) is not None:
            bits.append(f"{k} {r[k]:.3g}")
    if r.get("first_bad_layer"):
        bits.append(f"first bad layer: {r['first_bad_layer']}")
    if r.get("tolerance_source") not in (None, "default"):
        bits.append(f"tolerance: {r['tolerance_source']}")
    if r.get("reason"):
        bits.append(str(r["reason"]))
    return "\n".join(bits)


def _verify_matrix(rows: list[dict]) -> str:
    networks = list(dict.fromkeys(r["network"] for r in rows))
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    cells: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        cells.setdefault((r["network"], r["engine"]), []).append(r)
    counts = {s: sum(r["status"] == s for r in rows) for s in VERIFY_STATUSES}
    head = "".join(f"<th>{_e(e)}</th>" for e in engines)
    body = []
    for n in networks:
        tds = []
        for e in engines:
            chips = "".join(f'<span class="cell {_e(r["status"])}" title="{_e(_tooltip(r))}">'
                            f'{_e(r["mode"])}</span>' for r in cells.get((n, e), []))
            tds.append(f"<td>{chips or '-'}</td>")
        body.append(f"<tr><th>{_e(n)}</th>{''.join(tds)}</tr>")
    summary = ", ".join(f"{counts[s]} {s}" for s in VERIFY_STATUSES)
    legend = " ".join(f'<span class="cell {s}">{s}</span>' for s in VERIFY_STATUSES)
    return (f'<h2 id="verify">Verification ({len(rows)} cases: {summary})</h2>'
            f'<p class="legend">{legend} &nbsp; hover a cell for its errors and reason</p>'
            f'<table class="verify"><tr><th>network</th>{head}</tr>{"".join(body)}</table>')


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"
    return f"{x:,}" if isinstance(x, int) else _e(x)


def _ms(x) -> str:
    return "-" if x is None else _fmt(x * 1e3)


def _percent(frac) -> str:
    if frac is None:
        return "-"
    return "<0.1%" if 0 < frac < 0.001 else f"{frac:.1%}"


def _bench_table(rows: list[dict]) -> str:
    cols = ("network", "engine", "mode", "threads", "batch", "median ms", "95% CI ms", "p10 ms",
            "p90 ms", "p99 ms", "CV", "iters", "samples/s", "GFLOP/s", "of GEMM peak",
            "other load (cores)", "flags")
    out = [f"<tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>"]
    for r in rows:
        if r["status"] != "ok":
            out.append(f"<tr><td>{_e(r['network'])}</td><td>{_e(r['engine'])}</td><td>{_e(r['mode'])}</td>"
                       f"<td class=num>{_fmt(r.get('threads'))}</td><td class=num>{_fmt(r.get('batch'))}</td>"
                       f'<td colspan="{len(cols) - 5}">{_e(r["status"])}: {_e(r.get("reason", ""))}</td></tr>')
            continue
        ci = (f"{_ms(r.get('ci_low_s'))} - {_ms(r.get('ci_high_s'))}"
              if r.get("ci_low_s") is not None else "-")
        frac = r.get("peak_fraction")
        flags = ""
        if r.get("noisy"):
            flags = f'<span class="noisy" title="{_e(chr(10).join(r.get("noise") or []))}">noisy</span>'
        elif "noisy" in r:
            flags = '<span class="ok">ok</span>'
        vals = [r["network"], r["engine"], r["mode"]]
        nums = [_fmt(r.get("threads")), _fmt(r.get("batch")), _ms(r.get("median_s")), ci,
                _ms(r.get("p10_s")), _ms(r.get("p90_s")), _ms(r.get("p99_s")), _fmt(r.get("cv"), 2),
                _fmt(r.get("iters")), _fmt(r.get("samples_per_s")), _fmt(r.get("gflops")),
                _percent(frac), _fmt(r.get("others_cores"), 2)]
        out.append("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in vals)
                   + "".join(f"<td class=num>{v}</td>" for v in nums) + f"<td>{flags}</td></tr>")
    return (f'<h2 id="bench">Benchmark ({len(rows)} points)</h2>'
            '<p>Median of the timed iterations with its distribution-free 95% confidence '
            'interval; a point is flagged noisy when that interval is wider than asked, its '
            'warm-up did not settle, other processes used the cores it needed, or separate '
            'processes disagreed (hover the flag for why). GFLOP/s counts training as 3x the '
            'forward pass; the GEMM peak is the machine\'s measured float32 matrix-product '
            'rate at the same thread count.</p>'
            f'<table class="bench">{"".join(out)}</table>')


def _bench_plots(rows: list[dict]) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return ""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from . import benchmark as B
    figures = [("time per mini-batch against threads (bars: 95% CI of the median)",
                B._threads_figure(ok, plt, "median_s")),
               ("samples per second (most threads measured)", _bars(ok, plt, "samples_per_s",
                                                                     "samples/s", 1.0)),
               ("fraction of the machine's float32 GEMM peak (most threads measured)",
                _bars(ok, plt, "peak_fraction", "fraction of GEMM peak (%)", 100.0)),
               ("thread scaling: speed-up over the fewest threads measured", _scaling(ok, plt))]
    out = []
    for caption, fig in figures:
        if fig is None:
            continue
        wide = ' class="wide"' if not out else ""
        out.append(f"<figure{wide}>{_svg(fig, plt)}<figcaption>{_e(caption)}</figcaption></figure>")
    return f'<h2 id="plots">Plots</h2><div class="plots">{"".join(out)}</div>'


def _svg(fig, plt) -> str:
    """The figure as inline SVG: text drawn as paths, so no font is fetched or needed."""
    import matplotlib
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path"}):
        fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _bars(ok: list[dict], plt, key: str, label: str, scale: float):
    from . import benchmark as B
    panels = B._panels(ok)
    colour = B._colours(ok)
    if not any(r.get(key) is not None for r in ok):
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(panels)), 4))
    width = 0.8 / max(len(colour), 1)
    for i, e in enumerate(colour):
        ys = []
        for n, m in panels:
            pts = [r for r in ok if (r["network"], r["mode"], r["engine"]) == (n, m, e)]
            best = max(pts, key=lambda r: r["threads"] or 0) if pts else None
            ys.append((best.get(key) or 0) * scale if best else 0)
        ax.bar([j + i * width for j in range(len(panels))], ys, width, label=e, color=colour[e])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(panels))])
    ax.set_xticklabels([f"{n}\n{m}" for n, m in panels], fontsize=8)
    ax.set_xlabel("network and mode")
    B.time_axis(ax, [1.0], label)         # a linear axis from zero: bar lengths are values
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _scaling(ok: list[dict], plt):
    """Speed-up of each engine's median over its own fewest-threads median, per panel."""
    from . import benchmark as B
    panels = B._panels(ok)
    colour = B._colours(ok)
    series = []
    for n, m in panels:
        for e in colour:
            pts = sorted(((r["threads"] or 0, r["median_s"]) for r in ok
                          if (r["network"], r["mode"], r["engine"]) == (n, m, e)))
            if len(pts) > 1:
                series.append((f"{n} {m} {e}", e, [p[0] for p in pts], [pts[0][1] / p[1] for p in pts]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = ["-", "--", ":", "-."]
    for i, (label, e, xs, ys) in enumerate(series):
        ax.plot(xs, ys, styles[i // max(len(colour), 1) % len(styles)], marker="o",
                color=colour[e], label=label)
    ax.set_xlabel("threads")
    ax.set_xticks(sorted({x for s in series for x in s[2]}))
    B.time_axis(ax, [1.0], "speed-up (x)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


__all__ = ["write", "read", "render", "ReportError"]
