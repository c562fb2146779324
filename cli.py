"""The `zoo` command: a thin layer over zoo's Python API (zoo/api.py and friends).

Installed as the module zoo.cli (pyproject.toml). Every subcommand parses its arguments,
calls one API function and renders the result with rich. Exit status: 0 success; 1 a check
failed (a case failed or errored); 2 a usage error or bad input (unknown engine, mode, device
or format, a meaningless number, an invalid spec), with one line and no traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import zoo
from zoo import options
from zoo.errors import UsageError, ZooError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="zoo: one network spec, every engine, verified and benchmarked.")
# pipes and logs get wide tables instead of rich's 80-column default
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def _num(n) -> str:
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _shape(s) -> str:
    return "×".join(str(d) for d in s) if s else "scalar"


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="print a JSON array")):
    """The zoo's networks: inputs, outputs, layers, parameters, FLOPs per sample."""
    rows = zoo.list_networks()
    if as_json:
        _emit_json(rows)
        return
    t = Table(title="zoo networks (FLOPs and MACs per sample, forward)")
    for col in ("name", "inputs", "outputs", "layers", "params", "FLOPs"):
        t.add_column(col, justify="right" if col in ("layers", "params", "FLOPs") else "left")
    for r in rows:
        t.add_row(r["name"], ", ".join(f"{k} {_shape(v)}" for k, v in r["inputs"].items()),
                  ", ".join(f"{k} {_shape(v)}" for k, v in r["outputs"].items()),
                  str(r["layers"]), f"{r['params']:,}", _num(r["flops"]))
    out.print(t)


@app.command()
def show(spec: str = typer.Argument(..., help="zoo NAME or spec FILE"),
         batch: int = typer.Option(1, help="batch size for the shapes and FLOPs"),
         as_json: bool = typer.Option(False, "--json")):
    """Per layer: type, output shape, parameters and FLOPs, with totals."""
    options.positive_int("--batch", batch)
    info = zoo.show(spec, batch)
    if as_json:
        _emit_json(info)
        return
    t = Table(title=f"{info['name']}: {info['description']} (batch {batch})")
    for col in ("layer", "type", "output", "params", "MACs", "FLOPs"):
        t.add_column(col, justify="right" if col in ("params", "MACs", "FLOPs") else "left")
    for r in info["layer_table"]:
        style = None if r["inference"] else "dim"
        t.add_row(r["name"], r["type"], ", ".join(_shape(s) for s in r["output_shapes"]),
                  f"{r['params']:,}", _num(r["macs"]), _num(r["flops"]), style=style)
    t.add_section()
    t.add_row("total", "", "", f"{info['params']:,}", _num(info["macs"]), _num(info["flops"]))
    out.print(t)
    tr = info["train"]
    out.print(f"train: SGD lr {tr['lr']:g}, momentum {tr['momentum']:g}, weight decay "
              f"{tr['weight_decay']:g}; batch cpu {info['batch_cpu']}, gpu {info['batch_gpu']}. "
              "Dim rows are training-only.")


@app.command()
def validate(files: List[str] = typer.Argument(..., help="spec files or zoo names")):
    """Check specs; one line per invalid spec; exit 2 if any is invalid."""
    bad = 0
    for path, e in zoo.validate(files):
        if e is None:
            out.print(f"[green]ok[/green] {path}")
        else:
            bad += 1
            print(str(e), file=sys.stderr)   # plain: one unwrapped line
    raise typer.Exit(2 if bad else 0)


@app.command()
def convert(spec: str = typer.Argument(..., help="spec FILE or zoo NAME"),
            to: str = typer.Option(..., "--to", help="json or prototxt"),
            out_file: Optional[Path] = typer.Option(None, "--out", help="write here, not stdout")):
    """Convert a spec between prototxt and JSON (validated first; lossless)."""
    options.mode(to, ("json", "prototxt"), "--to")
    text = zoo.convert(spec, to)
    if out_file:
        out_file.write_text(text)
    else:
        sys.stdout.write(text)


@app.command()
def schema(out_file: Optional[Path] = typer.Option(None, "--out")):
    """The JSON Schema of JSON specs (generated from specs/zoo.proto)."""
    from zoo.schema import json_schema
    text = json.dumps(json_schema(), indent=2) + "\n"
    if out_file:
        out_file.write_text(text)
    else:
        sys.stdout.write(text)


@app.command()
def engines(as_json: bool = typer.Option(False, "--json")):
    """Every engine: installed or not (with versions), training support, layer types."""
    from zoo import engines as E
    from zoo.layers import REGISTRY
    rows = []
    for e in E.ENGINES.values():
        types = e.supported_types()
        rows.append({"engine": e.name, "installed": e.installed, "missing": e.missing(),
                     "versions": e.versions(), "train": e.train, "note": e.note,
                     "layer_types": types,
                     "unsupported_types": sorted(set(REGISTRY) - set(types))})
    if as_json:
        _emit_json(rows)
        return
    t = Table(title="engines")
    for col in ("engine", "installed", "versions", "train", "layer types not supported"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["engine"], "yes" if r["installed"] else f"[red]no[/red]: {r['missing']}",
                  ", ".join(f"{k} {v}" for k, v in r["versions"].items()) or "-",
                  "yes" if r["train"] else "forward only",
                  ", ".join(r["unsupported_types"]) or "(all supported)")
    out.print(t)


@app.command()
def build(spec: str = typer.Argument(..., help="zoo NAME or spec FILE"),
          engine: str = typer.Option(..., "--engine", "-e"),
          out_dir: Optional[Path] = typer.Option(None, "--out", help="default: the build cache"),
          seed: int = typer.Option(0, help="weights seed (when the spec names no weights file)"),
          force: bool = typer.Option(False, "--force", help="rebuild even if cached"),
          opset: Optional[int] = typer.Option(None, help="ONNX opset (onnx engine)")):
    """Write the native model files of one engine, with weights and manifest.json."""
    _one_engine(engine)
    options.positive_int("--opset", opset)
    b = zoo.build(spec, engine, out=out_dir, seed=seed, force=force,
                  options={"opset": opset} if opset else None)
    out.print(f"{'reused' if b.reused else 'built'} {b.manifest['network']} for {engine}: {b.path}")
    for f in b.manifest["files"]:
        out.print(f"  {f}")


def _one_engine(name: str) -> str:
    names = options.engine_names(name)
    if len(names) != 1:
        raise UsageError(f"--engine takes one engine, not {name!r}")
    return names[0]


def _say_whole_zoo(doing: str, cases_per_network: int) -> None:
    """No names means every network: say so, and how much, before a long run starts."""
    n = len(zoo.spec.zoo_names())
    err.print(f"{doing} the whole zoo: {n} networks, {n * cases_per_network} cases "
              "(name networks to run fewer)", highlight=False)


STATUS_STYLE = {"pass": "green", "fail": "red", "error": "red", "skipped": "yellow"}


@app.command()
def verify(specs: List[str] = typer.Argument(None, help="zoo NAMEs or spec FILEs (default: all)"),
           engines_: Optional[str] = typer.Option(None, "--engines", help="comma list (default: all)"),
           mode: str = typer.Option("forward", help="forward, train or both"),
           batch: int = typer.Option(2, help="batch size of the verification run"),
           json_file: Optional[Path] = typer.Option(None, "--json", help="write results here"),
           atol: Optional[float] = typer.Option(None, help="override the forward atol"),
           rtol: Optional[float] = typer.Option(None, help="override the forward rtol"),
           seed: int = typer.Option(0),
           device: str = typer.Option("cpu", help="cpu, gpu or gpuN"),
           threads: Optional[int] = typer.Option(None),
           timeout: float = typer.Option(900.0, help="seconds per engine run")):
    """Do the engines agree with the float64 reference? Exit 0 only if every case passed."""
    from zoo import verifier
    # refused here too (the API refuses them as well), before any engine starts
    options.mode(mode, ("forward", "train", "both"), "--mode")
    engine_names = options.engine_names(engines_) if engines_ else None
    device = options.device(device, "--device")
    options.positive_int("--batch", batch)
    options.positive_int("--threads", threads)
    options.tolerance("--atol", atol)
    options.tolerance("--rtol", rtol)
    options.timeout(timeout, "--timeout")
    if not specs:
        _say_whole_zoo("verifying", len(options.engine_names(engine_names)) * (2 if mode == "both" else 1))
    t = Table(title="zoo verify")
    for col in ("network", "engine", "mode", "status", "max abs err", "max rel err",
                "first bad layer", "reason"):
        t.add_column(col, overflow="fold")

    def why(c):
        """The failure's reason, or for a pass a tolerance other than the default."""
        if c.status != "pass":
            return c.reason
        return "" if c.tolerance_source == "default" else f"tolerance: {c.tolerance_source}"

    def progress(c):
        err.print(f"{c.status:7} {c.network} {c.engine} {c.mode} "
                  f"({c.seconds:.1f}s)" + (f": {why(c)}" if why(c) else ""),
                  highlight=False, markup=False)

    results = verifier.verify(specs or None, engine_names, mode, batch, atol, rtol, seed, device,
                              threads, timeout, progress)
    for c in results:
        style = STATUS_STYLE[c.status]
        t.add_row(c.network, c.engine, c.mode, f"[{style}]{c.status}[/{style}]",
                  f"{c.max_abs_err:.2e}" if c.max_abs_err is not None else "-",
                  f"{c.max_rel_err:.2e}" if c.max_rel_err is not None else "-",
                  c.first_bad_layer or "-", escape(why(c)))
    out.print(t)
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "error", "skipped")}
    out.print(", ".join(f"{n} {s}" for s, n in counts.items()))
    if json_file:
        json_file.write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    raise typer.Exit(verifier.exit_status(results))


@app.command()
def bench(specs: List[str] = typer.Argument(None, help="zoo NAMEs or spec FILEs (default: all)"),
          engines_: Optional[str] = typer.Option(None, "--engines", help="comma list (default: all)"),
          device: str = typer.Option("cpu", help="cpu, gpu or gpuN"),
          threads: Optional[str] = typer.Option(None, help="comma list of thread counts, e.g. 1,2,4"),
          batch: Optional[int] = typer.Option(None, help="default: the survey's batch per network and device"),
          mode: str = typer.Option("train", help="train, infer or both"),
          warmup: int = typer.Option(2), iters: int = typer.Option(5),
          min_time: float = typer.Option(1.0, help="seconds of timed iterations at least"),
          json_file: Optional[Path] = typer.Option(None, "--json"),
          csv_file: Optional[Path] = typer.Option(None, "--csv"),
          plot_file: Optional[Path] = typer.Option(None, "--plot", help="PNG (an SVG is written beside it)"),
          layers: bool = typer.Option(False, "--layers", help="per-layer times, in a separate pass"),
          xla: bool = typer.Option(False, "--xla", help="TensorFlow: compile with XLA"),
          timeout: float = typer.Option(1800.0)):
    """Time per mini-batch (training) or per forward pass, every engine the same way."""
    from rich.progress import Progress

    from zoo import benchmark
    # refused here too (the API refuses them as well), before any engine starts
    options.mode(mode, ("train", "infer", "both"), "--mode")
    engine_names = options.engine_names(engines_) if engines_ else None
    device = options.device(device, "--device")
    tlist = options.positive_ints("--threads", threads) if threads else [None]
    options.positive_int("--batch", batch)
    options.non_negative_int("--warmup", warmup)
    options.positive_int("--iters", iters)
    options.tolerance("--min-time", min_time)
    options.timeout(timeout, "--timeout")
    names = specs or None
    n_engines = len(options.engine_names(engine_names))
    n_nets = len(names) if names else len(zoo.spec.zoo_names())
    total = n_nets * n_engines * len(tlist) * (2 if mode == "both" else 1)
    if not names:
        _say_whole_zoo("benchmarking", n_engines * len(tlist) * (2 if mode == "both" else 1))
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("zoo bench", total=total)

        def progress(row):
            bar.advance(task)
            bar.console.print(f"{row['network']} {row['engine']} {row['mode']} threads={row['threads']}: "
                              + (f"{row['median_s'] * 1e3:.1f} ms" if row["status"] == "ok"
                                 else f"{row['status']}: {row['reason']}"), highlight=False)

        rows = benchmark.bench(names, engine_names, device, tlist, batch, mode, warmup, iters,
                               min_time, layers, timeout=timeout, options={"xla": xla} if xla else None,
                               progress=progress)
    t = Table(title=f"zoo bench ({device}; {rows[0]['environment']['cpu'] if rows else ''})")
    for col in ("network", "engine", "mode", "threads", "batch", "median ms", "IQR ms", "iters",
                "samples/s", "GFLOP/s", "peak RSS MB", "status"):
        t.add_column(col)
    for r in rows:
        ok = r["status"] == "ok"
        t.add_row(r["network"], r["engine"], r["mode"], str(r["threads"] or "-"), str(r["batch"]),
                  f"{r['median_s'] * 1e3:.3g}" if ok else "-", f"{r['iqr_s'] * 1e3:.2g}" if ok else "-",
                  str(r.get("iters") or "-"), f"{r['samples_per_s']:.1f}" if ok else "-",
                  f"{r['gflops']:.2f}" if ok else "-", f"{r['peak_rss_mb']:.0f}" if ok else "-",
                  "ok" if ok else f"{r['status']}: {r['reason']}")
    out.print(t)
    if layers:
        for r in rows:
            if r.get("layers"):
                lt = Table(title=f"per-layer times (separate pass): {r['network']} {r['engine']} {r['mode']}")
                for col in ("layer", "forward ms", "backward ms"):
                    lt.add_column(col)
                for l in r["layers"]:
                    lt.add_row(l["layer"], f"{l['forward_s'] * 1e3:.2f}", f"{l['backward_s'] * 1e3:.2f}")
                out.print(lt)
    if json_file:
        json_file.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    if csv_file:
        benchmark.write_csv(rows, csv_file)
    if plot_file:
        for f in benchmark.plot(rows, plot_file):
            out.print(f"wrote {f}")
    raise typer.Exit(1 if any(r["status"] == "error" for r in rows) else 0)


@app.command("import")
def import_(model: Path = typer.Argument(..., help="an .onnx file or a Caffe .prototxt"),
            weights: Optional[Path] = typer.Option(None, "--weights", help="Caffe .caffemodel"),
            out_dir: Path = typer.Option(..., "--out", help="a new folder for the spec and weights"),
            batch: int = typer.Option(1, help="batch size for a symbolic ONNX batch axis")):
    """Bring an existing ONNX or Caffe model into the zoo: a spec + weights in OUT."""
    from zoo.importers import import_model
    options.positive_int("--batch", batch)
    spec = import_model(model, out_dir, weights, batch)
    net = zoo.load(spec)
    out.print(f"imported {net.name}: {len(net.layers)} layers, {net.params:,} parameters -> {spec}")
    out.print(f"next: zoo verify {spec}")


def main() -> None:
    from zoo.isolation import Terminated, signals_end_children
    try:
        with signals_end_children():   # a stopped zoo leaves no engine process behind
            app()   # standalone: typer's own usage errors print their message and exit 2
    except Terminated as e:
        print(f"zoo: stopped by {e.name}" + ("; engine processes killed" if e.killed else ""),
              file=sys.stderr)
        sys.exit(e.code)
    except ZooError as e:
        print(f"zoo: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("zoo: interrupted")
        sys.exit(130)
    except Exception as e:  # an internal error: one line unless debugging
        if os.environ.get("ZOO_DEBUG"):
            raise
        print(f"zoo: internal error: {type(e).__name__}: {e} (set ZOO_DEBUG=1 for a traceback)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
