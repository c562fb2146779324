"""`zoo show NAME --graph out.svg`: the network as a picture.

One box per layer (name, type, output shape, parameter count), an arrow per blob from the
layer that makes it to each layer that reads it, laid out top to bottom by depth (a layer
sits one row below the deepest layer it reads from), training-only layers dashed. Plain SVG
written by hand: no Graphviz, no fonts fetched, nothing from the spec is executed (names are
escaped as text).
"""

from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path

from . import net as N
from .errors import UsageError

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 210, 58, 26, 34, 20
MAX_LAYERS = 5000           # a picture of more is unreadable; refused with the count
_FILL = {"Input": "#e3f2fd", "Convolution": "#fff3e0", "InnerProduct": "#fff3e0",
         "Pooling": "#e8f5e9", "LSTM": "#fce4ec", "Embedding": "#fce4ec", "BatchNorm": "#ede7f6"}


def layout(net: N.Net) -> dict[str, tuple[int, int]]:
    """(row, column) of every layer: row = 1 + the deepest row of the layers it reads."""
    producer = {}
    rows: dict[str, int] = {}
    for layer in net.layers:                    # layers are in topological order (net.py)
        rows[layer.name] = 1 + max((rows[producer[b]] for b in layer.bottoms if b in producer),
                                   default=-1)
        for t in layer.tops:
            producer[t] = layer.name
    by_row: dict[int, list[str]] = {}
    for name, r in rows.items():
        by_row.setdefault(r, []).append(name)
    return {name: (r, c) for r, names in by_row.items() for c, name in enumerate(names)}


def _shape(shapes) -> str:
    return ", ".join("x".join(str(d) for d in s) for s in shapes)


def render(net: N.Net) -> str:
    if len(net.layers) > MAX_LAYERS:
        raise UsageError(f"{net.name}: {len(net.layers)} layers; a graph is drawn for at most {MAX_LAYERS}")
    pos = layout(net)
    width_cols = max(c for _, c in pos.values()) + 1
    height_rows = max(r for r, _ in pos.values()) + 1
    W = 2 * MARGIN + width_cols * BOX_W + (width_cols - 1) * GAP_X
    H = 2 * MARGIN + 30 + height_rows * BOX_H + (height_rows - 1) * GAP_Y

    def xy(name):
        r, c = pos[name]
        return MARGIN + c * (BOX_W + GAP_X), MARGIN + 30 + r * (BOX_H + GAP_Y)

    deploy = {l.name for l in net.deploy_layers}
    producer = {t: l.name for l in net.layers for t in l.tops}
    parts = [MARKER, f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#546e7a"/></marker></defs>',
             f'<text x="{MARGIN}" y="{MARGIN + 14}" font-size="15" font-weight="bold">'
             f'{_t(net.name)}: {len(net.layers)} layers, {net.params:,} parameters, '
             f'batch {net.batch}</text>']
    for layer in net.layers:                    # arrows first, boxes drawn over them
        x2, y2 = xy(layer.name)
        for b in layer.bottoms:
            if b not in producer:
                continue
            x1, y1 = xy(producer[b])
            parts.append(f'<line x1="{x1 + BOX_W / 2}" y1="{y1 + BOX_H}" x2="{x2 + BOX_W / 2}" '
                         f'y2="{y2}" stroke="#546e7a" stroke-width="1.3" marker-end="url(#arrow)"/>')
    for layer in net.layers:
        x, y = xy(layer.name)
        dash = "" if layer.name in deploy else ' stroke-dasharray="5,3"'
        fill = _FILL.get(layer.type, "#f5f5f5")
        params = f", {layer.params:,} params" if layer.params else ""
        parts.append(
            f'<g class="layer"><title>{_t(layer.name)} ({_t(layer.type)}): bottoms '
            f'{_t(", ".join(layer.bottoms) or "-")}; tops {_t(", ".join(layer.tops))}</title>'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" '
            f'stroke="#37474f"{dash}/>'
            f'<text x="{x + 8}" y="{y + 17}" font-size="13" font-weight="bold">{_t(_cut(layer.name, 26))}</text>'
            f'<text x="{x + 8}" y="{y + 33}" font-size="11">{_t(_cut(layer.type + params, 32))}</text>'
            f'<text x="{x + 8}" y="{y + 49}" font-size="11" fill="#455a64">'
            f'{_t(_cut(_shape(layer.out_shapes), 32))}</text></g>')
    parts.append("</svg>\n")
    return "\n".join(parts)


def _t(s: str) -> str:
    return html.escape(str(s), quote=True)


def _cut(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


MARKER = "<!-- zoo graph -->"


def _check_target(out: Path) -> None:
    """zoo replaces only a picture it drew itself."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_file():
        raise UsageError(f"{out}: exists and is not a regular file; choose another file")
    with open(out, "rb") as f:
        if not f.read(len(MARKER)) == MARKER.encode():
            raise UsageError(f"{out}: exists and is not a graph zoo drew; choose another file")


def write(net_or_name, out: str | Path, batch: int = 1) -> Path:
    """Draw `net_or_name` (a Net, a zoo name or a spec path) at `batch` to the SVG file
    `out`, written whole (a temporary file renamed); returns the path."""
    net = net_or_name if isinstance(net_or_name, N.Net) else N.load(net_or_name)
    net = net.with_batch(batch)
    out = Path(out)
    if out.suffix.lower() != ".svg":
        raise UsageError(f"{out}: the graph is written as SVG; name the file .svg")
    _check_target(out)
    text = render(net)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".graph-", suffix=".svg", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


__all__ = ["write", "render", "layout"]
