"""Import every torchvision classification family from ONNX (issue 15): export each with
torch.onnx.export (the default torch.export-based exporter, dynamo=True, opset 18, and the
TorchScript one, dynamo=False, opset 17), `zoo import` it, check zoo's own ONNX rebuild of
the imported spec against torch's output, and verify the imported spec on every engine.

    .venv/bin/python benchmarks/import_models.py [--families a,b] [--exporter dynamo|torchscript|both]
                                                 [--no-verify] [--json FILE] [--batch N] [--work DIR [--reuse]]
                                                 [--train-lr LR]
                                                 [--readme README.md]
    .venv/bin/python benchmarks/import_models.py --from-json A.json [B.json ...] [--readme README.md]

`--readme` writes the rows' table into README.md's import-families block (the README's
family table is this output, never edited by hand); `--from-json` makes it from saved runs,
a later file's row replacing an earlier one's for the same family and exporter.

Per family and exporter:
  export   seeded random init (torch.manual_seed(0): no pretrained weights are downloaded),
           BatchNorm running statistics from two random batches (as a trained model has
           statistics of its data; `--bn-stats init` keeps torchvision's 0/1, see
           calibrate_batchnorm), eval mode, the family's standard input (299 for
           inception_v3, 224 otherwise), batch N
  import   in a child process: wall seconds of `zoo.import_model` alone, and its peak memory
           (the peak resident size during the import minus the resident size after the child
           has imported its modules and read the ONNX file's bytes, which it keeps; Linux's
           VmHWM, reset at that point, see zoo/memory.py), with that peak as a multiple of the
           float32 weights' size
  rebuild  `zoo.build(spec, "onnx")` run by ONNX Runtime on the exported input, against
           torch's float32 output: max |diff| / max |y| (passes at <= 1e-4)
  verify   `zoo verify` forward on every engine at batch 1; `--mode train` on torch,
           tensorflow and mxnet for families under 30 M parameters, on a copy of the spec with
           a SoftmaxWithLoss on the logits (an exported classifier has no loss), at the
           spec's default learning rate 0.01 unless `--train-lr` says otherwise (TRAIN_LR)

Printed: one table row per family and exporter, then the vit_b_16 import figures (seconds,
peak MB, peak / weights) when it ran. Exit status 0 when every import and every check
passed (skips with their reasons count as passing only where the engine declares the gap).
"""

from __future__ import annotations

import argparse
import json
import re
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

FAMILIES = ["alexnet", "vgg11", "resnet18", "resnet50", "resnext50_32x4d", "squeezenet1_1", "googlenet",
            "inception_v3", "densenet121", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
            "shufflenet_v2_x0_5", "mnasnet0_5", "regnet_y_400mf", "convnext_tiny", "vit_b_16"]
EXPORTERS = {"dynamo": dict(dynamo=True), "torchscript": dict(dynamo=False, opset_version=17)}
ENGINES = ["torch", "tensorflow", "mxnet", "caffe", "onnx", "caffe-opencv"]
TRAIN_ENGINES = ["torch", "tensorflow", "mxnet"]
TRAIN_MAX_PARAMS = 30_000_000
REBUILD_RATIO = 1e-4
# The training copies' learning rate: None keeps the spec's default, 0.01. Tried 2026-11-30
# at 0.001 to give googlenet's second step a smoother point (at 0.01 one step at batch 1 takes
# its loss from 6.7 to 0.19, a saturated softmax): googlenet then passed everywhere, but
# inception_v3 still diverges (loss 7.5 -> 10811 at 0.001) and failed its step-2 loss on
# mxnet in both exporters (1.3x, 1.45x) where it passes at 0.01. No one rate makes every
# family's second step well conditioned, so the default stays, and the rows say what fails.
TRAIN_LR = None


def torchvision_models():
    """torchvision.models without torchvision's compiled operators.

    torchvision 0.28's wheel carries C++ ops built for another torch: `import torchvision`
    runs torchvision/_meta_registrations.py, which registers Meta kernels for
    torchvision::nms, roi_align, ... and raises "operator torchvision::nms does not exist"
    on this CPU torch. The classification models use none of those ops, so an empty module
    stands in for _meta_registrations (site-packages is left untouched)."""
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchvision import models
    return models


def make_model(family: str, calibrate_bn: bool = True):
    import torch
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if family in ("googlenet", "inception_v3") else {}
    model = getattr(torchvision_models(), family)(weights=None, **kwargs)
    with torch.no_grad():
        for w in model.parameters():
            if w.dim() >= 2 and not w.any():
                # vit_b_16 initialises its head to zeros: its output would be 0 whatever the
                # rest computes, so that head gets seeded N(0, 0.02) values instead
                w.normal_(0, 0.02)
    if calibrate_bn:
        calibrate_batchnorm(model, input_size(family))
    return model.eval()


def calibrate_batchnorm(model, size: int, batches: int = 2, batch: int = 8) -> None:
    """Give every BatchNorm the running statistics of the data it sees, as a trained model's
    have, instead of the initial mean 0 / variance 1. An eval-mode export folds BatchNorm
    into the convolutions with these statistics; folded at mean 0 / variance 1, a random
    ResNet-50 is an unnormalised 50-layer network whose logits grow until the softmax
    saturates (its training step is then decided by float32 rounding, not by the model).
    Only the statistics change: the same seeded weights, no gradient step."""
    import torch
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                  # a cumulative average over the batches below
    g = torch.Generator().manual_seed(2)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch, 3, size, size, generator=g))


def input_size(family: str) -> int:
    return 299 if family == "inception_v3" else 224


def export(family: str, exporter: str, batch: int, work: Path, reuse: bool = False,
           calibrate_bn: bool = True):
    """(model.onnx path, input, torch's output, parameters, export seconds)."""
    import torch
    model = make_model(family, calibrate_bn)
    params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    s = input_size(family)
    x = torch.randn(batch, 3, s, s, generator=g)
    with torch.no_grad():
        y = model(x).numpy()
    path = work / f"{family}-{exporter}-b{batch}{'' if calibrate_bn else '-initbn'}.onnx"
    t0 = time.perf_counter()
    if reuse and path.exists():        # the same seeded model exported earlier into --work
        return path, x.numpy(), y, params, 0.0
    with warnings.catch_warnings(), open(os.devnull, "w") as null:
        warnings.simplefilter("ignore")
        out, err = os.dup(1), os.dup(2)      # the dynamo exporter prints progress lines
        try:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            torch.onnx.export(model, (x,), str(path), input_names=["data"], **EXPORTERS[exporter])
        finally:
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.close(out)
            os.close(err)
    return path, x.numpy(), y, params, time.perf_counter() - t0


def import_in_child(path: Path, out: Path, batch: int) -> dict:
    """Run the import step alone in a fresh process: seconds, peak MB over the baseline."""
    proc = subprocess.run([sys.executable, __file__, "--_import-child", str(path), str(out), str(batch)],
                          capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"the import child exited {proc.returncode}: {proc.stderr.strip()[-800:]}"}
    return json.loads(lines[-1])


def _import_child(path: str, out: str, batch: int) -> None:
    import zoo  # noqa: F401 - modules loaded before the baseline
    import onnx  # noqa: F401
    from zoo.errors import ZooError
    from zoo.importers import import_model
    from zoo.memory import peak_rss_mb, reset_peak_mb
    from zoo.importers import onnx as _onnx_importer  # noqa: F401
    data = Path(path).read_bytes()              # the file's bytes count in the baseline
    base = reset_peak_mb()   # the peak from here on is the import's own (zoo/memory.py)
    t0 = time.perf_counter()
    try:
        spec = import_model(path, out, batch=batch, force=True)
        res = {"ok": True, "spec": str(spec)}
    except ZooError as e:
        res = {"ok": False, "error": str(e)}
    res["seconds"] = time.perf_counter() - t0
    res["peak_mb"] = peak_rss_mb() - base
    res["file_mb"] = len(data) / 2**20
    print(json.dumps(res), flush=True)


def rebuild_ratio(spec: str, x, y) -> float:
    """zoo's ONNX build of the imported spec, run by ONNX Runtime: max |diff| / max |y|."""
    import numpy as np
    import onnxruntime as ort
    import zoo
    b = zoo.build(spec, "onnx", transient=True)
    with b.lease():
        sess = ort.InferenceSession(str(b.path / "model.onnx"), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
    return float(np.max(np.abs(got - y)) / np.max(np.abs(y)))


def with_loss(onnx_path: Path, out: Path, batch: int, lr: float | None) -> str:
    """The same model imported with the importer's own `--loss softmax` (a SoftmaxWithLoss on
    its logits with an integer label input), so that it trains; LR, when given, is written
    into the spec's `train` message (else the spec default 0.01; see TRAIN_LR)."""
    import zoo
    from zoo import spec as S
    path = Path(zoo.import_model(onnx_path, out, batch=batch, force=True, loss="softmax"))
    if lr is None:
        return str(path)
    # a copy in a folder of its own: `zoo import --force` replaces only what it wrote, unchanged
    text = path.read_text()
    header = "".join(ln for ln in text.splitlines(keepends=True) if ln.startswith("#"))
    msg, _ = S.read(path)
    msg.train.lr = lr
    folder = out.parent / f"{out.name}-lr{lr:g}"
    folder.mkdir(exist_ok=True)
    if msg.weights:
        shutil.copyfile(out / msg.weights, folder / msg.weights)
    (folder / path.name).write_text(f"{header}# train.lr {lr:g}: set by "
                                    "benchmarks/import_models.py (--train-lr)\n" + S.to_prototxt(msg))
    return str(folder / path.name)


def verify(spec: str, params: int, train_spec) -> dict:
    """Forward on every engine; training (train_spec(): the spec with a loss) on
    TRAIN_ENGINES for models under TRAIN_MAX_PARAMS parameters."""
    import zoo
    status = {}
    for r in zoo.verify([spec], engines=ENGINES, mode="forward", batch=1):
        status[f"{r.engine}"] = _status(r)
    if params < TRAIN_MAX_PARAMS:
        for r in zoo.verify([train_spec()], engines=TRAIN_ENGINES, mode="train", batch=1):
            status[f"{r.engine}:train"] = _status(r)
    return status


def _status(r) -> dict:
    return {"status": r.status, "reason": r.reason or "", "max_abs_err": r.max_abs_err}


def run_one(family: str, exporter: str, args, work: Path) -> dict:
    row = {"family": family, "exporter": exporter}
    try:
        path, x, y, params, export_s = export(family, exporter, args.batch, work, args.reuse,
                                                  args.bn_stats == "calibrated")
    except Exception as e:  # noqa: BLE001 - an exporter failure is a row, not the end of the run
        row.update(import_ok=False, error=f"export failed: {type(e).__name__}: {str(e)[:300]}")
        return row
    row.update(params=params, export_s=round(export_s, 1), weights_mb=params * 4 / 2**20)
    res = import_in_child(path, work / f"{family}-{exporter}", args.batch)
    row.update(import_ok=res["ok"], import_s=res.get("seconds"), import_peak_mb=res.get("peak_mb"),
               file_mb=res.get("file_mb"))
    if not res["ok"]:
        row["error"] = res["error"]
        return row
    spec = res["spec"]
    row["peak_over_weights"] = res["peak_mb"] / row["weights_mb"]
    try:
        row["rebuild_ratio"] = rebuild_ratio(spec, x, y)
    except Exception as e:  # noqa: BLE001
        row["rebuild_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    if not args.no_verify:
        row["verify"] = verify(spec, params, lambda: with_loss(
            path, work / f"{family}-{exporter}-train", args.batch, args.train_lr))
        row["train_lr"] = args.train_lr or 0.01
    return row


def passed(row: dict) -> bool:
    if not row.get("import_ok") or row.get("rebuild_ratio", 1) > REBUILD_RATIO:
        return False
    # a skip passes only as a gap the engine declares, never for an engine missing here
    return all(v["status"] == "pass" or (v["status"] == "skipped" and not v["reason"].startswith("not installed"))
               for v in row.get("verify", {}).values())


def table(rows: list[dict]) -> str:
    cols = ENGINES + [f"{e}:train" for e in TRAIN_ENGINES]
    head = ["family", "params", "exporter", "import", "rebuild", *cols, "import s", "peak MB", "peak/w"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        imp = "ok" if r.get("import_ok") else "refused: " + r.get("error", "")[:200]
        ratio = f"{r['rebuild_ratio']:.1e}" if "rebuild_ratio" in r else r.get("rebuild_error", "-")[:40]
        ver = r.get("verify", {})
        cells = [_cell(ver.get(c)) for c in cols]
        lines.append("| " + " | ".join([
            r["family"], f"{r.get('params', 0):,}", r["exporter"], imp, ratio, *cells,
            _num(r.get("import_s"), 1), _num(r.get("import_peak_mb"), 0), _num(r.get("peak_over_weights"), 2)]) + " |")
    return "\n".join(lines)


def _cell(v) -> str:
    if v is None:
        return "-"
    return v["status"] if v["status"] != "skipped" else "skipped (" + v["reason"][:60] + ")"


def _num(v, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


# --- the README's table (generated, never kept by hand) ----------------------------------------
README_START = "<!-- import-families: generated by benchmarks/import_models.py --readme; do not edit by hand -->"
README_END = "<!-- /import-families -->"


def readme_table(rows: list[dict]) -> str:
    """One line per family and exporter, in FAMILIES order: what imported, how well zoo's
    rebuild matches torch, and each verify status (a skip with the engine's declared gap)."""
    lines = ["| family | params | exporter | import s | peak / weights | rebuild | forward | "
             "train torch / tensorflow / mxnet |", "|---|---:|---|---:|---:|---:|---|---|"]
    order = {(f, e): (i, j) for i, f in enumerate(FAMILIES) for j, e in enumerate(EXPORTERS)}
    for r in sorted(rows, key=lambda r: order.get((r["family"], r["exporter"]), (99, 9))):
        if not r.get("import_ok"):
            lines.append(f"| {r['family']} | - | {r['exporter']} | refused: "
                         f"{r.get('error', '')[:120].replace('|', '/')} | | | | |")
            continue
        ver = r.get("verify", {})
        if ver:
            fwd = [e for e in ENGINES if ver.get(e, {}).get("status") == "pass"]
            other = [f"{e} {ver[e]['status']}" + (f" ({_gap(ver[e]['reason'])})" if ver[e]["status"] == "skipped" else "")
                     for e in ENGINES if e in ver and ver[e]["status"] != "pass"]
            forward = f"pass on {len(fwd)} of {len(ENGINES)}" + ("; " + "; ".join(other) if other else "")
            train = (" / ".join(ver.get(f"{e}:train", {}).get("status", "-") for e in TRAIN_ENGINES)
                     if any(f"{e}:train" in ver for e in TRAIN_ENGINES)
                     else f"(over {TRAIN_MAX_PARAMS // 1_000_000} M: not trained)")
        else:
            forward, train = "(not verified)", "(not verified)"
        ratio = f"{r['rebuild_ratio']:.1e}" if "rebuild_ratio" in r else "error"
        lines.append(f"| {r['family']} | {r['params'] / 1e6:.1f} M | {r['exporter']} | "
                     f"{_num(r.get('import_s'), 1)} | {_num(r.get('peak_over_weights'), 2)} | {ratio} | "
                     f"{forward} | {train} |")
    return "\n".join(lines)


def _gap(reason: str) -> str:
    """The layer type an engine's declared gap names, e.g. "no LayerNorm"."""
    m = re.search(r"\((\w+)\)", reason)
    return f"no {m.group(1)}" if m else reason[:40].replace("|", "/")


def write_readme(path: Path, rows: list[dict]) -> None:
    text = path.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"import_models: {path} has no {README_START!r} ... {README_END!r} block")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(f"{head}{README_START}\n\n{readme_table(rows)}\n\n{README_END}{tail}")


def merged(json_files: list[str]) -> list[dict]:
    """Rows of several --json files; a later file's row for a family and exporter replaces
    an earlier one's (a rerun of some families after a fix)."""
    rows: dict[tuple, dict] = {}
    for f in json_files:
        for r in json.loads(Path(f).read_text()):
            rows[(r["family"], r["exporter"])] = r
    return list(rows.values())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--exporter", choices=["dynamo", "torchscript", "both"], default="both")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--work", help="folder for the exported and imported models (default: a temporary one)")
    ap.add_argument("--reuse", action="store_true", help="use the exported .onnx files already in --work")
    ap.add_argument("--bn-stats", choices=["calibrated", "init"], default="calibrated",
                    help="BatchNorm running statistics before the eval export: from two random "
                         "batches (default, as a trained model has) or torchvision's initial 0/1")
    ap.add_argument("--train-lr", type=float, default=TRAIN_LR,
                    help="the training copies' learning rate (default: the spec's, 0.01; see TRAIN_LR)")
    ap.add_argument("--readme", help="write the rows' table into this README's import-families block")
    ap.add_argument("--from-json", nargs="+", metavar="FILE",
                    help="run nothing: the rows of these --json files (later ones replace earlier "
                         "rows of the same family and exporter), for --readme")
    args = ap.parse_args(argv)
    if args.from_json:
        rows = merged(args.from_json)
        print(readme_table(rows))
        if args.readme:
            write_readme(Path(args.readme), rows)
        return 0 if all(passed(r) for r in rows) else 1
    families = [f for f in args.families.split(",") if f]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or args.batch < 1:
        print(f"import_models: unknown families {unknown} (known: {', '.join(FAMILIES)})" if unknown
              else "import_models: --batch must be >= 1", file=sys.stderr)
        return 2
    exporters = list(EXPORTERS) if args.exporter == "both" else [args.exporter]
    with tempfile.TemporaryDirectory(prefix="zoo-import-models-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        for family in families:
            for exporter in exporters:
                t0 = time.perf_counter()
                row = run_one(family, exporter, args, work)
                row["seconds"] = round(time.perf_counter() - t0, 1)
                rows.append(row)
                print(f"{family} {exporter}: {'ok' if passed(row) else 'FAILED'} in {row['seconds']} s",
                      file=sys.stderr, flush=True)
                if args.json:     # rewritten after each row: a long run leaves what it did
                    Path(args.json).write_text(json.dumps(rows, indent=1, default=str) + "\n")
    print(table(rows))
    if args.readme:
        write_readme(Path(args.readme), rows)
    for r in rows:
        if r["family"] == "vit_b_16" and r.get("import_ok"):
            print(f"vit_b_16 ({r['exporter']}): {r['params']:,} parameters ({r['weights_mb']:.0f} MB float32), "
                  f"ONNX file {r['file_mb']:.0f} MB; import {r['import_s']:.1f} s, peak memory "
                  f"{r['import_peak_mb']:.0f} MB above the baseline = {r['peak_over_weights']:.2f}x the weights")
    return 0 if all(passed(r) for r in rows) else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--_import-child":
        _import_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        sys.exit(0)
    sys.exit(main())
