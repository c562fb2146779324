"""The `zoo` command: a thin layer over zoo's Python API (zoo/api.py and friends).

Installed as the module zoo.cli (pyproject.toml). Every subcommand parses its arguments,
calls one API function and renders the result with rich. Exit status: 0 success; 1 a check
failed (a case failed or errored); 2 a usage error or bad input (unknown engine, mode, device
or format, a meaningless number, an invalid spec), with one line and no traceback.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn,
                           TextColumn)
from rich.table import Table
from rich.text import Text

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


def _fixed(x: float, digits: int = 3) -> str:
    """`digits` significant digits in plain notation with thousands separators, for people:
    1995.3 -> "1,995", 12.34 -> "12.3", 0.01234 -> "0.0123" (never "2e+03")."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


def _size(n: float) -> str:
    """Bytes for people, in powers of 1024 (as ZOO_CACHE_LIMIT and --limit count them)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _shape(s) -> str:
    return "×".join(str(d) for d in s) if s else "scalar"


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="print a JSON array")):
    """The zoo's networks: inputs, outputs, layers, parameters, MACs and FLOPs per sample."""
    rows = zoo.list_networks()
    if as_json:
        _emit_json(rows)
        return
    t = Table(title="zoo networks (MACs and FLOPs per sample, forward)")
    for col in ("name", "inputs", "outputs", "layers", "params", "MACs", "FLOPs"):
        t.add_column(col, justify="right" if col in ("layers", "params", "MACs", "FLOPs") else "left")
    for r in rows:
        t.add_row(r["name"], ", ".join(f"{k} {_shape(v)}" for k, v in r["inputs"].items()),
                  ", ".join(f"{k} {_shape(v)}" for k, v in r["outputs"].items()),
                  str(r["layers"]), f"{r['params']:,}", _num(r["macs"]), _num(r["flops"]))
    out.print(t)


@app.command()
def show(spec: str = typer.Argument(..., help="zoo NAME or spec FILE"),
         batch: int = typer.Option(1, help="batch size for the shapes and FLOPs"),
         as_json: bool = typer.Option(False, "--json"),
         graph: Optional[Path] = typer.Option(None, "--graph", help="also draw the network to this .svg")):
    """Per layer: type, output shape, parameters and FLOPs, with totals."""
    options.positive_int("--batch", batch)
    info = zoo.show(spec, batch)
    if graph:
        from zoo import graph as G
        err.print(f"wrote {G.write(spec, graph, batch)}")
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
    """Every engine: installed or not (with versions), training support, and every gap with
    its reason (the engines' declarations, zoo/engines.py)."""
    rows = zoo.list_engines()
    if as_json:
        _emit_json(rows)
        return
    t = Table(title="engines")
    for col in ("engine", "installed", "versions", "train"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["engine"], "yes" if r["installed"] else f"[red]no[/red]: {escape(r['missing'])}",
                  ", ".join(f"{k} {v}" for k, v in r["versions"].items()) or "-",
                  "yes" if r["train"] else "forward only")
    out.print(t)
    g = Table(title="what each engine cannot do (verify and bench skip these with the reason)")
    for col in ("engine", "cannot do", "why"):
        g.add_column(col, overflow="fold")
    for r in rows:
        for gap in r["gaps"] or [{"what": "(nothing)", "why": ""}]:
            g.add_row(r["engine"], escape(gap["what"]), escape(gap["why"]))
    out.print(g)


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


def _plan(specs: Optional[List[str]], engine_names: List[str], modes: List[str],
          threads: List[Optional[int]] = (None,)) -> List[str]:
    """The cases a run will take, in the order verify and bench take them (zoo/cases.py:
    network x engine x mode x threads), named for the progress display."""
    names = zoo.spec.zoo_names()
    labels = [s if s in names else Path(s).stem for s in specs] if specs else names
    return [f"{net} {eng} {mode}" + (f" threads={t}" if t else "")
            for net in labels for eng in engine_names for mode in modes for t in threads]


def _times(elapsed: float, done: int, total: int) -> str:
    """Elapsed, and the time left estimated from the average case so far."""
    if done >= total:
        return f"{_duration(elapsed)} in all"
    if done == 0:
        return f"{_duration(elapsed)} elapsed"
    return f"{_duration(elapsed)} elapsed, about {_duration(elapsed / done * (total - done))} left"


class _TimesColumn(ProgressColumn):
    """The bar's times, as the plain lines say them (rich's own estimate waits for two
    cases, and a zoo run may have only a few, of very different lengths)."""

    def render(self, task) -> Text:
        return Text(_times(task.elapsed or 0.0, int(task.completed), int(task.total or 0)),
                    style="progress.elapsed")


class CaseProgress:
    """A long run's progress, on stderr only (the tables on stdout and every JSON stay
    clean). On a terminal: a live bar with the cases done / total, the case running, the
    time elapsed and an estimate of the time left; each finished case's line is printed
    above it. Piped: one plain line per finished case, with the same counts and times."""

    def __init__(self, title: str, plan: List[str]):
        self.title, self.plan, self.done = title, plan, 0
        self.started = time.monotonic()
        self.bar: Optional[Progress] = None
        self.running: List[str] = []     # cases begun and not yet done (engines run side by side)

    def __enter__(self) -> "CaseProgress":
        if err.is_terminal and not err.is_dumb_terminal:
            self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), _TimesColumn(), console=err, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self._running(), total=len(self.plan))
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def _running(self) -> str:
        if self.running:
            running = "; ".join(self.running)
        else:   # before the first case starts: the first one planned
            running = self.plan[self.done] if self.done < len(self.plan) else "finishing"
        return escape(f"{self.title}: {running}")

    @staticmethod
    def label(network: str, engine: str, mode: str, threads=None) -> str:
        return f"{network} {engine} {mode}" + (f" threads={threads}" if threads else "")

    def case_started(self, case) -> None:
        """A case began (cases.walk's `started`): the bar names it."""
        self.running.append(self.label(case.network, case.engine, case.mode, case.threads))
        if self.bar is not None:
            self.bar.update(self.task, description=self._running())
            self.bar.refresh()

    def case_done(self, line: str, label: str = "") -> None:
        """One case finished: `line` says how (plain text, printed as it is)."""
        self.done += 1
        if label in self.running:
            self.running.remove(label)
        if self.bar is not None:
            self.bar.console.print(line, highlight=False, markup=False)
            self.bar.update(self.task, completed=self.done, description=self._running())
            self.bar.refresh()   # every count is shown, even when the next case ends at once
        else:
            times = _times(time.monotonic() - self.started, self.done, len(self.plan))
            err.print(f"[{self.done}/{len(self.plan)}, {times}] {line}",
                      highlight=False, markup=False, soft_wrap=True)


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
           timeout: float = typer.Option(900.0, help="seconds per engine run"),
           layers: bool = typer.Option(False, "--layers", help="compare every blob (forward) and every parameter's update (train); per-layer table"),
           plot_file: Optional[Path] = typer.Option(None, "--plot", help="with --layers: the error's growth through the network per engine (PNG)"),
           dtype: str = typer.Option("float32", "--dtype", help="float32, or float64: exact mode on the engines that compute in float64"),
           jobs: Optional[int] = typer.Option(None, "--jobs", help="engine children at once (default: one per core, each with its share of the cores as threads)"),
           workers: Optional[int] = typer.Option(None, "--workers", help="data-parallel: one SGD step on N workers per node against the single-process oracle (train only)"),
           nodes: int = typer.Option(1, "--nodes", help="data-parallel: machines taking part"),
           node_rank: int = typer.Option(0, "--node-rank", help="data-parallel: this machine's rank"),
           master: Optional[str] = typer.Option(None, "--master", help="data-parallel: HOST:PORT of node 0"),
           optimize: bool = typer.Option(False, "--optimize", help="each engine's optimised configuration, the one bench --optimize times")):
    """Do the engines agree with the float64 reference? Exit 0 only if every case passed."""
    if workers is not None and optimize:
        raise UsageError("--optimize verifies single-process engines; it does not combine with --workers")
    if workers is not None:
        _verify_data_parallel(specs, engines_, mode, workers, nodes, node_rank, master, threads,
                              device, seed, timeout, json_file)
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
    if plot_file and not layers:
        raise UsageError("--plot needs --layers")
    if dtype not in ("float32", "float64"):
        raise UsageError(f"--dtype {dtype!r}: float32 or float64")
    options.positive_int("--jobs", jobs)
    modes = ["forward", "train"] if mode == "both" else [mode]
    engine_list = options.engine_names(engine_names)
    if not specs:
        _say_whole_zoo("verifying", len(engine_list) * len(modes))
    t = Table(title="zoo verify, each engine's optimised configuration" if optimize else "zoo verify")
    for col in ("network", "engine", "mode", "status", "max abs err", "max rel err",
                "first bad layer", "reason"):
        t.add_column(col, overflow="fold")

    def why(c):
        """The failure's reason, or for a pass a tolerance other than the default."""
        if c.status != "pass":
            return c.reason
        return "" if c.tolerance_source == "default" else f"tolerance: {c.tolerance_source}"

    with CaseProgress("zoo verify", _plan(specs, engine_list, modes)) as shown:
        def progress(c):
            shown.case_done(f"{c.status:7} {c.network} {c.engine} {c.mode} "
                            f"({c.seconds:.1f}s)" + (f": {why(c)}" if why(c) else ""),
                            shown.label(c.network, c.engine, c.mode, threads))

        results = zoo.verify(specs or None, engine_names, mode, batch, atol, rtol, seed, device,
                             threads, timeout, progress, layers, dtype, jobs, shown.case_started,
                             optimize)
    for c in results:
        style = STATUS_STYLE[c.status]
        t.add_row(c.network, c.engine, c.mode, f"[{style}]{c.status}[/{style}]",
                  f"{c.max_abs_err:.2e}" if c.max_abs_err is not None else "-",
                  f"{c.max_rel_err:.2e}" if c.max_rel_err is not None else "-",
                  c.first_bad_layer or "-", escape(why(c)))
    out.print(t)
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "error", "skipped")}
    out.print(", ".join(f"{n} {s}" for s, n in counts.items()))
    if layers:
        from zoo import drift
        for c in results:
            if c.layers:
                for line in drift.table(c):
                    out.print(line, markup=False, highlight=False)
        if plot_file:
            out.print(f"wrote {drift.plot(results, plot_file)}")
    if json_file:
        json_file.write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    raise typer.Exit(verifier.exit_status(results))


def _verify_data_parallel(specs, engines_, mode, workers, nodes, node_rank, master, threads,
                          device, seed, timeout, json_file) -> None:
    """`zoo verify --workers N`: zoo/distributed.py, each engine's own distributed runtime."""
    from zoo import distributed, verifier
    if mode == "forward":
        raise UsageError("--workers verifies the data-parallel training step: use --mode train")
    if not specs:
        raise UsageError("--workers needs the networks named")
    results = distributed.verify(specs, options.engine_names(engines_) if engines_ else None,
                                 workers=workers, nodes=nodes, node_rank=node_rank, master=master,
                                 threads=threads, device=device, seed=seed, timeout=timeout)
    t = Table(title=f"zoo verify --workers {workers} (data-parallel training step)")
    for col in ("network", "engine", "workers", "status", "max rel err", "reason"):
        t.add_column(col, overflow="fold")
    for c in results:
        style = STATUS_STYLE[c.status]
        t.add_row(c.network, c.engine, str(c.workers), f"[{style}]{c.status}[/{style}]",
                  f"{c.max_rel_err:.2e}" if c.max_rel_err is not None else "-",
                  escape(c.reason or c.batchnorm or ""))
    out.print(t)
    if json_file:
        distributed.write_json(results, json_file)
    raise typer.Exit(verifier.exit_status(results))


def _bench_data_parallel(specs, engines_, workers, scaling, threads, batch, warmup, iters, nodes,
                         node_rank, master, device, timeout, json_file, csv_file, plot_file) -> None:
    """`zoo bench --workers 1,2`: scaling through each engine's own distributed runtime."""
    from zoo import distributed
    if not specs:
        raise UsageError("--workers needs the networks named")
    tlist = options.positive_ints("--threads", threads) if threads else [1]
    if len(tlist) != 1:
        raise UsageError("--workers takes one --threads value (threads per worker)")
    rows = distributed.bench(specs, options.engine_names(engines_) if engines_ else None,
                             workers=options.positive_ints("--workers", workers), scaling=scaling,
                             threads=tlist[0], batch=batch, warmup=warmup, iters=iters, nodes=nodes,
                             node_rank=node_rank, master=master, device=device, timeout=timeout)
    t = Table(title=f"zoo bench --workers {workers} --scaling {scaling}")
    numeric = ("workers", "batch", "median ms", "samples/s", "speed-up", "efficiency")
    for col in ("network", "engine", *numeric, "status"):
        t.add_column(col, justify="right" if col in numeric else "left")
    for r in rows:
        ok = r["status"] == "ok"
        t.add_row(r["network"], r["engine"], str(r["workers"]), str(r["batch"]),
                  _fixed(r["median_s"] * 1e3) if ok else "-", _fixed(r["samples_per_s"]) if ok else "-",
                  _fixed(r["speedup"], 2) if ok and r.get("speedup") is not None else "-",
                  f"{r['efficiency']:.0%}" if ok and r.get("efficiency") is not None else "-",
                  "ok" if ok else escape(f"{r['status']}: {r['reason']}"))
    out.print(t)
    if json_file:
        distributed.write_json(rows, json_file)
    if csv_file:
        distributed.write_csv(rows, csv_file)
    if plot_file:
        distributed.plot(rows, plot_file)
        out.print(f"wrote {plot_file}")
    raise typer.Exit(1 if any(r["status"] == "error" for r in rows) else 0)


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
          optimize: bool = typer.Option(False, "--optimize", help="also each engine's fastest standard configuration, verified before it is timed"),
          timeout: float = typer.Option(1800.0),
          ci_width: float = typer.Option(0.1, "--ci-width", help="stop when the median's 95% CI is this fraction of it wide"),
          max_time: float = typer.Option(20.0, "--max-time", help="seconds of timing per point at most"),
          repeat: int = typer.Option(1, "--repeat", help="run each point in K fresh processes; report their spread"),
          method: str = typer.Option("adaptive", "--method", help="adaptive, or fixed (the old fixed count)"),
          no_peak: bool = typer.Option(False, "--no-peak", help="skip the GEMM peak measurement"),
          workers: Optional[str] = typer.Option(None, "--workers", help="data-parallel training: worker counts per node, e.g. 1,2"),
          scaling: str = typer.Option("strong", "--scaling", help="with --workers: strong (total batch split) or weak (batch per worker)"),
          nodes: int = typer.Option(1, "--nodes", help="data-parallel: machines taking part"),
          node_rank: int = typer.Option(0, "--node-rank", help="data-parallel: this machine's rank"),
          master: Optional[str] = typer.Option(None, "--master", help="data-parallel: HOST:PORT of node 0")):
    """Time per mini-batch (training) or per forward pass, every engine the same way."""
    if workers is not None:
        _bench_data_parallel(specs, engines_, workers, scaling, threads, batch, warmup, iters, nodes,
                             node_rank, master, device, timeout, json_file, csv_file, plot_file)
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
    options.positive_int("--repeat", repeat)
    names = specs or None
    modes = ["train", "infer"] if mode == "both" else [mode]
    engine_list = options.engine_names(engine_names)
    if not names:
        _say_whole_zoo("benchmarking", len(engine_list) * len(tlist) * len(modes))
    with CaseProgress("zoo bench", _plan(specs, engine_list, modes, tlist)) as shown:
        pending = {}     # --optimize: a case's default row waits for its optimised one

        def progress(row):
            label = shown.label(row["network"], row["engine"], row["mode"], row["threads"])
            text = (f"{_fixed(row['median_s'] * 1e3)} ms" if row["status"] == "ok"
                    else f"{row['status']}: {row['reason']}")
            if optimize and row["config"] == "default":
                pending[label] = text
                return
            if optimize:
                text = f"default {pending.pop(label, '-')}; optimized {text}"
            shown.case_done(label + ": " + text, label)

        rows = zoo.bench(names, engine_names, device, tlist, batch, mode, warmup, iters,
                         min_time, layers, timeout=timeout, options={"xla": xla} if xla else None,
                         progress=progress, started=shown.case_started, ci_width=ci_width, max_time=max_time, repeat=repeat,
                         method=method, peak=not no_peak, optimize=optimize)
    t = Table(title=f"zoo bench ({device}; {rows[0]['environment']['cpu'] if rows else ''})")
    numeric = ("threads", "batch", "median ms", "CI ±%", "p99 ms", "iters", "samples/s", "GFLOP/s",
               "of peak", "peak RSS MB")
    config_col = ("config",) if optimize else ()
    for col in ("network", "engine", "mode", *config_col, *numeric, "status"):
        t.add_column(col, justify="right" if col in numeric else "left")
    for r in rows:
        ok = r["status"] == "ok"
        ci = r.get("ci_rel_width")
        t.add_row(r["network"], r["engine"], r["mode"], *([r["config"]] if optimize else []),
                  str(r["threads"] or "-"), str(r["batch"]),
                  _fixed(r["median_s"] * 1e3) if ok else "-",
                  _fixed(ci * 50, 2) if ok and ci is not None else "-",
                  _fixed(r["p99_s"] * 1e3) if ok and r.get("p99_s") is not None else "-",
                  str(r.get("iters") or "-"), _fixed(r["samples_per_s"]) if ok else "-",
                  _fixed(r["gflops"]) if ok else "-",
                  f"{r['peak_fraction']:.0%}" if ok and r.get("peak_fraction") is not None else "-",
                  f"{r['peak_rss_mb']:,.0f}" if ok else "-",
                  ("noisy" if r.get("noisy") else "ok") if ok else f"{r['status']}: {r['reason']}")
    out.print(t)
    for r in rows:
        if optimize and r["config"] == "optimized" and r.get("enabled"):
            out.print(escape(f"optimized {r['network']} {r['engine']} {r['mode']} threads={r['threads']}: "
                             + "; ".join(r["enabled"])))
    for r in rows:
        if r.get("noisy"):
            err.print(escape(f"noisy: {r['network']} {r['engine']} {r['mode']} threads={r['threads']}: "
                             + "; ".join(r.get("noise") or [])))
    if layers:
        for r in rows:
            if r.get("layers"):
                lt = Table(title=f"per-layer times (separate pass): {r['network']} {r['engine']} {r['mode']}")
                for col in ("layer", "forward ms", "backward ms"):
                    lt.add_column(col, justify="left" if col == "layer" else "right")
                for l in r["layers"]:
                    lt.add_row(l["layer"], _fixed(l["forward_s"] * 1e3), _fixed(l["backward_s"] * 1e3))
                out.print(lt)
                if r.get("layers_step_s"):
                    total = sum(l["forward_s"] + l["backward_s"] for l in r["layers"])
                    out.print(f"layers sum to {_fixed(total * 1e3)} ms; the whole step in the same pass "
                              f"took {_fixed(r['layers_step_s'] * 1e3)} ms")
            elif r.get("layers_reason"):
                out.print(escape(f"per-layer times: {r['engine']}: {r['layers_reason']}"))
    if json_file:
        json_file.write_text(json.dumps(rows, indent=2, default=str) + "\n")
    if csv_file:
        benchmark.write_csv(rows, csv_file)
    if plot_file:
        for f in benchmark.plot(rows, plot_file):
            out.print(f"wrote {f}")
    # an optimised model that failed its verification is a failed check, as in verify
    raise typer.Exit(1 if any(r["status"] in ("error", "fail") for r in rows) else 0)


@app.command()
def report(results: List[Path] = typer.Argument(..., help="zoo verify/bench --json files"),
           out_file: Path = typer.Option(..., "--out", help="the HTML page to write")):
    """One self-contained HTML page: the verify matrix, bench tables and plots, the machine."""
    from zoo import report as R
    out.print(f"wrote {R.write(results, out_file)}")


@app.command("import")
def import_(model: Path = typer.Argument(..., help="an .onnx file or a Caffe .prototxt"),
            weights: Optional[Path] = typer.Option(None, "--weights", help="Caffe .caffemodel"),
            out_dir: Path = typer.Option(..., "--out", help="a new folder for the spec and weights"),
            batch: int = typer.Option(1, help="batch size for a symbolic ONNX batch axis"),
            name: Optional[str] = typer.Option(None, "--name", help="the spec's name (files NAME.prototxt, NAME.npz); default: the model's"),
            force: bool = typer.Option(False, "--force", help="replace OUT if an earlier `zoo import` wrote it, unchanged"),
            loss: Optional[str] = typer.Option(None, "--loss", help="softmax: when the model has no loss, add a SoftmaxWithLoss on its last output (the logits) with integer labels, so that it trains")):
    """Bring an existing ONNX or Caffe model into the zoo: a spec + weights in OUT."""
    options.positive_int("--batch", batch)
    result = zoo.import_model(model, out_dir, weights, batch, name=name, force=force, loss=loss)
    for note in result.notes:
        err.print(escape(f"note: {note}"))
    net = zoo.load(result.spec)
    out.print(escape(f"imported {net.name}: {len(net.layers)} layers, {net.params:,} parameters -> {result.spec}"))
    out.print(escape(f"next: zoo verify {result.spec}" + (" --mode both" if net.loss_layers else "")))


cache_app = typer.Typer(no_args_is_help=False, help="The build cache: list it, prune it to a bound, clear it.")
app.add_typer(cache_app, name="cache")


@cache_app.callback(invoke_without_command=True)
def cache_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """The build cache (ZOO_CACHE): without a subcommand, list it (as `zoo cache list`)."""
    if ctx.invoked_subcommand is None:
        _cache_list(as_json)


@cache_app.command("list")
def cache_list(as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """Cached builds (size, last use, in use), totals per engine and network, the bound."""
    _cache_list(as_json)


def _disk_bytes(paths) -> int:
    """Bytes the files under `paths` hold on disk, a hard-linked file counted once (builds
    share one copy of their weights)."""
    seen, total = set(), 0
    for path in paths:
        for dirpath, _dirs, files in os.walk(path):
            for f in files:
                try:
                    st = os.lstat(os.path.join(dirpath, f))
                except OSError:
                    continue          # removed meanwhile
                if (st.st_ino, st.st_dev) not in seen:
                    seen.add((st.st_ino, st.st_dev))
                    total += st.st_size
    return total


def _cache_totals(entries, key) -> dict:
    groups: dict = {}
    for e in entries:
        groups.setdefault(key(e), []).append(e.path)
    return {k: _disk_bytes(paths) for k, paths in sorted(groups.items())}


def _cache_list(as_json: bool) -> None:
    from zoo import cache
    entries = sorted(cache.entries(), key=lambda e: (e.engine, e.network, -e.last_used))
    limit, used = cache.limit_bytes(), cache.usage()
    per_engine = _cache_totals(entries, lambda e: e.engine)
    per_network = _cache_totals(entries, lambda e: e.network)
    if as_json:
        _emit_json({"root": str(cache.root()), "limit_bytes": limit, "usage_bytes": used,
                    "builds": [{"engine": e.engine, "network": e.network, "path": str(e.path),
                                "bytes": e.bytes, "own_bytes": e.own_bytes,
                                "last_used": e.last_used, "in_use": e.in_use,
                                "transient": e.transient} for e in entries],
                    "engines": per_engine, "networks": per_network})
        return
    in_use = sum(e.in_use for e in entries)
    bound = f"ZOO_CACHE_LIMIT={os.environ['ZOO_CACHE_LIMIT']}" if os.environ.get("ZOO_CACHE_LIMIT") \
        else "the default bound; set ZOO_CACHE_LIMIT to change it"
    out.print(f"build cache {cache.root()}: {_size(used)} of {_size(limit)} ({bound}); "
              f"{_builds(len(entries))}, {in_use} in use", highlight=False, markup=False)
    if not entries:
        return
    t = Table(title="cached builds (a weights file shared by builds is counted once in a total)")
    for col in ("engine", "network", "size", "frees", "last used", "in use", "folder"):
        t.add_column(col, justify="right" if col in ("size", "frees") else "left")
    for engine, engine_total in per_engine.items():
        for e in (e for e in entries if e.engine == engine):
            t.add_row(escape(e.engine), escape(e.network), _size(e.bytes), _size(e.own_bytes),
                      datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M"),
                      "[yellow]in use[/yellow]" if e.in_use else "",
                      escape(e.path.name) + (" (transient)" if e.transient else ""))
        t.add_row(f"[bold]{escape(engine)}[/bold]", "[bold]total[/bold]", f"[bold]{_size(engine_total)}[/bold]",
                  "", "", "", "", end_section=True)
    out.print(t)
    nt = Table(title="per network")
    nt.add_column("network")
    nt.add_column("size", justify="right")
    for network, total in per_network.items():
        nt.add_row(escape(network), _size(total))
    out.print(nt)


def _size_option(name: str, text: str) -> int:
    from zoo import cache
    try:
        return cache.parse_size(text)
    except UsageError:
        raise UsageError(f"{name} must be a size (e.g. 4G, 500M, 2048K or a number of bytes), "
                         f"not {text!r}") from None


def _builds(n: int) -> str:
    return f"{n} build" + ("" if n == 1 else "s")


def _removed(verb: str, removed, before: int, bound: int) -> None:
    """What prune or clear removed, what that freed, and what is left (builds in use stay)."""
    from zoo import cache
    for e in removed:
        out.print(f"  {e.engine} {e.network} ({_size(e.bytes)}): {e.path}", highlight=False, markup=False)
    left, now = cache.entries(), cache.usage()
    busy = sum(e.in_use for e in left)
    out.print(f"{verb} {_builds(len(removed))}, freed {_size(max(before - now, 0))}; the cache "
              f"holds {_size(now)} of {_size(bound)} in {_builds(len(left))}"
              + (f" ({busy} in use, kept)" if busy else ""), highlight=False, markup=False)


@cache_app.command()
def prune(limit: Optional[str] = typer.Option(None, "--limit", help="bound, e.g. 2G (default: ZOO_CACHE_LIMIT, 4G)")):
    """Evict least recently used builds until the cache fits the bound; never a build in use."""
    from zoo import cache
    bound = _size_option("--limit", limit) if limit is not None else cache.limit_bytes()
    before = cache.usage()
    _removed("pruned", cache.prune(bound), before, bound)


@cache_app.command()
def clear():
    """Remove every cached build that is not in use (--out folders are never touched)."""
    from zoo import cache
    before = cache.usage()
    _removed("removed", cache.clear(), before, cache.limit_bytes())


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
