"""The ``emergence`` command line: run, validate, ls, sample, report, sync, compare, calibrate-llc."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from emergence import registry
from emergence.registry import UnknownNameError

if TYPE_CHECKING:
    from emergence.spec import RunSpec

# Nothing is ever downloaded at run time: models are built natively, data sets generated.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
err_console = Console(stderr=True)

SpecArgument = Annotated[Path, typer.Argument(help="a spec file, e.g. specs/addition.yaml")]
OverridesArgument = Annotated[
    list[str] | None, typer.Argument(help="dotted-path overrides: model.n_layers=4 seed=3 tracking.0.experiment=foo")
]


def _fail(message: str) -> None:
    # Plain stderr, not rich: an error line must never be wrapped, so scripts can grep it.
    sys.stderr.write(message.rstrip("\n") + "\n")
    raise typer.Exit(2)


def _resolve_or_exit(spec: Path, overrides: list[str] | None) -> list[RunSpec]:
    from emergence.spec import SpecError, resolve

    try:
        return resolve(str(spec), overrides or [])
    except SpecError as error:
        _fail(error.render())
    raise AssertionError("unreachable")


def _verdict_table(outcome: object) -> Table:
    # Short step columns (the title says they are steps): the signal names get the width of an 80-column terminal.
    table = Table(title="verdicts (event, onset and lead in steps)", show_lines=False)
    table.add_column("signal", overflow="fold")
    verdicts = outcome.verdicts  # type: ignore[attr-defined]
    # The trust columns only when the analysis decided them (robustness on; a null control asked for).
    trust = [(key, title) for key, title in (("robust_share", "robust"), ("specific", "specific")) if any(key in v for v in verdicts)]
    for column in ("event", "onset", "lead", "verdict", *(title for _, title in trust)):
        table.add_column(column, no_wrap=True)
    for v in verdicts:
        cells = [_trust_cell(key, v.get(key)) for key, _ in trust]
        steps = ["—" if v.get(key) is None else str(v[key]) for key in ("event_step", "onset_step", "lead_steps")]
        table.add_row(v["signal"], *steps, v["verdict"], *cells)
    return table


def _trust_cell(key: str, value: object) -> str:
    if key == "robust_share" and isinstance(value, float):
        return "yes" if value == 1.0 else f"{value:.0%} agree"
    if isinstance(value, bool):
        return "yes" if value else "no (control too)"
    return "—" if value is None else str(value)


@app.command()
def run(
    spec: Annotated[Path | None, typer.Argument(help="a spec file, e.g. specs/addition.yaml (or use --from-run)")] = None,
    overrides: OverridesArgument = None,
    force: Annotated[bool, typer.Option(help="delete and rerun runs that already exist")] = False,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
    from_run: Annotated[
        str | None,
        typer.Option(
            "--from-run",
            help="run again the spec of a run: a run directory, or a run a tracker reads back (mlflow:<run_id>, a W&B run folder)",
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", help="where the tracker keeps the --from-run run, when the reference does not say (an MLflow tracking URI)"),
    ] = None,
) -> None:
    """Train (or resume), measure, analyse and log every run of SPEC.

    With --from-run, SPEC is fetched from an earlier run (yours or a colleague's) and, unless an override
    changes a result, resolves to the same run key: the same run, resumed or reattached."""
    from emergence.executors import ExecutorUnavailable
    from emergence.orchestrate import execute, sweep_directory
    from emergence.progress import SweepProgress
    from emergence.rundir import run_directory
    from emergence.spec import SpecError

    if from_run is not None:
        if spec is not None:
            overrides = [str(spec), *(overrides or [])]  # with --from-run every argument is an override
        from emergence.rerun import spec_of_run, write_fetched_spec

        try:
            spec = write_fetched_spec(spec_of_run(from_run, store), from_run)
        except (FileNotFoundError, LookupError) as error:
            _fail(f"error: --from-run: {error}")
        console.print(f"spec of {from_run} -> {spec}", highlight=False)
    elif spec is None:
        _fail("error: run: give a spec file, or --from-run REF")
    assert spec is not None
    runs = _resolve_or_exit(spec, overrides)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # `timeout`, `kill` and batch schedulers stop jobs with SIGTERM: treat it as Ctrl-C, so the run is marked
    # failed ("interrupted ... rerun to resume") instead of being left "running" forever.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    execution = runs[0].spec.execution
    where = f"{execution.executor}" + (f", {execution.workers} workers" if execution.workers else "")
    for run_spec in runs:
        console.print(f"run {run_spec.display_name} -> {run_directory(run_spec)}", highlight=False, markup=False, soft_wrap=True)
    if len(runs) > 1:
        console.print(f"sweep of {len(runs)} runs on {where}", highlight=False)
    with SweepProgress(runs, console, enabled=not quiet) as display:
        try:
            outcomes = execute(runs, force=force, progress=display)
        except ExecutorUnavailable as error:
            _fail(f"error: {spec}: execution: {error}")
        except SpecError as error:  # what the spec names outside itself: a checkpoint that is not there
            _fail(error.render())
        except KeyboardInterrupt:
            # Each run has marked itself interrupted and kept its checkpoints; the same command resumes.
            sys.stderr.write(f"interrupted: run `emergence run {spec}` again (same overrides) to resume\n")
            raise typer.Exit(130) from None
    if len(outcomes) == 1:
        _print_outcome(outcomes[0])
    else:
        console.print(_sweep_runs_table(runs, outcomes))
    console.print(f"{len(outcomes)} run(s) in {time.perf_counter() - started:.0f} s")
    summary_dir = sweep_directory(runs)
    if summary_dir is not None and (summary_dir / "sweep.json").exists():
        console.print(_precursor_rate_table(json.loads((summary_dir / "sweep.json").read_text(encoding="utf-8"))))
        console.print(f"sweep report: {summary_dir / 'report.html'}", highlight=False, markup=False, soft_wrap=True)
    _print_trackers_behind(outcomes, summary_dir)
    failed = sum(outcome.state == "failed" for outcome in outcomes)
    if failed:
        raise typer.Exit(1)


def _print_trackers_behind(outcomes: list, summary_dir: Path | None) -> None:
    """The trackers that could not be caught up by the end (a server still away), and the command that does it
    once they are back: the journal and the sweep directory hold everything they missed."""
    from emergence.rundir import read_status

    behind: dict[str, int] = {}
    for outcome in outcomes:
        for backend in (read_status(outcome.run_dir) or {}).get("trackers_behind") or {}:
            behind[backend] = behind.get(backend, 0) + 1
    sweep_status = read_status(summary_dir) if summary_dir is not None else None
    sweep_behind = (sweep_status or {}).get("trackers_behind") or {}
    if not behind and not sweep_behind:
        return
    what = {backend: [f"{n} run(s)"] for backend, n in behind.items()}
    for backend in sweep_behind:
        what.setdefault(backend, []).append("the sweep's parent run")
    target = summary_dir if summary_dir is not None else outcomes[0].run_dir
    for backend, parts in what.items():
        err_console.print(
            f"{backend} is behind ({' and '.join(parts)}): the run directories hold everything; once it is back, run "
            f"`emergence sync {target}`", highlight=False, markup=False, soft_wrap=True,
        )  # fmt: skip


def _print_outcome(outcome: object) -> None:
    reason = f" ({escape(outcome.reason)})" if outcome.reason else ""  # type: ignore[attr-defined]
    console.print(f"\n[bold]{outcome.state}[/bold] {escape(str(outcome.run_dir))}{reason}")  # type: ignore[attr-defined]
    for event in outcome.events:  # type: ignore[attr-defined]
        if event.get("step") is None:
            console.print(f"  no emergence event in {event['metric']} (threshold {event.get('threshold')})", highlight=False)
        else:
            console.print(f"  emergence event {event['metric']}: step {event['step']}", highlight=False)
    if outcome.verdicts:  # type: ignore[attr-defined]
        console.print(_verdict_table(outcome))


def _sweep_runs_table(runs: list[RunSpec], outcomes: list) -> Table:
    """One line per run of a sweep; the verdicts of each are in its report and in the sweep report."""
    table = Table(title="runs")
    for column in ("run", "state", "emergence step", "precursors", "run directory / reason"):
        table.add_column(column, overflow="fold")
    for run, outcome in zip(runs, outcomes, strict=True):
        signals = [v for v in outcome.verdicts if v.get("kind", "signal") == "signal"]
        precursors = sum(v["verdict"] == "precursor" for v in signals)
        step = ", ".join(str(e["step"]) for e in outcome.events if e.get("step") is not None) or "-"
        where = outcome.reason if outcome.state == "failed" else str(outcome.run_dir)
        table.add_row(escape(run.display_name), outcome.state, step, f"{precursors} of {len(signals)}", escape(where or ""))
    return table


def _precursor_rate_table(summary: dict) -> Table:
    """The sweep's precursor rate per signal family (rows) by difficulty and size (columns)."""
    rows = summary.get("precursor_rate", {}).get("by_family", [])
    groups = list(dict.fromkeys((r["difficulty"], r["size"]) for r in rows))
    table = Table(title="precursor rate by signal family, difficulty and size (precursors / judged)")
    table.add_column("family", overflow="fold")
    for difficulty, size in groups:
        table.add_column(f"{difficulty} {size}", no_wrap=True)
    for family in dict.fromkeys(r["family"] for r in rows):
        cells = {(r["difficulty"], r["size"]): r for r in rows if r["family"] == family}
        table.add_row(
            escape(family),
            *(f"{c['precursor']}/{c['n']}" if (c := cells.get(g)) and c["n"] else "-" for g in groups),
        )
    return table


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@app.command()
def validate(spec: SpecArgument, overrides: OverridesArgument = None) -> None:
    """Check SPEC (and overrides) without running anything: exit 0, or 2 with every problem named."""
    from emergence.spec import DEFAULT_RUN_NAME, SpecError, is_monitor_spec, raw_spec, resolve_monitor

    try:
        if is_monitor_spec(raw_spec(spec, overrides or [])[0]):
            monitored = resolve_monitor(spec, overrides or [])
            console.print(
                f"ok: {spec}: a monitor spec, for emergence.Monitor in your own training loop; run name "
                f"{DEFAULT_RUN_NAME!r} is run key {monitored.run_key}", highlight=False, markup=False, soft_wrap=True,
            )
            return
    except SpecError as error:
        _fail(error.render())
    runs = _resolve_or_exit(spec, overrides)
    console.print(
        f"ok: {spec}: {len(runs)} run(s): " + ", ".join(f"{r.display_name} ({r.run_key})" for r in runs),
        highlight=False, markup=False, soft_wrap=True,  # one line per spec, whatever the terminal's width: scripts grep it
    )  # fmt: skip


@app.command("ls")
def list_registered(
    kind: Annotated[str, typer.Argument(help="tasks | measures | trackers | executors")],
    markdown: Annotated[bool, typer.Option("--markdown", help="tasks only: the full catalogue as Markdown (docs/tasks.md)")] = False,
) -> None:
    """List the registered tasks, measures, trackers or executors (built-ins and plugins)."""
    registries = {"tasks": registry.tasks, "measures": registry.measures, "trackers": registry.trackers, "executors": registry.executors}
    if kind not in registries:
        _fail(f"error: ls: unknown kind {kind!r}{registry.did_you_mean(kind, registries)}; allowed: {', '.join(registries)}")
    if markdown:
        if kind != "tasks":
            _fail("error: ls: --markdown is for tasks only")
        from emergence.tasks.catalog import catalog

        sys.stdout.write(catalog())
        return
    table = Table(title=kind)
    table.add_column("name")
    table.add_column("details")
    chosen = registries[kind]
    for name in chosen.names():
        # Trackers and executors are plugins for outside systems (mlflow, wandb, ray): described from their
        # distribution's metadata, never imported here. A task or measure is described by its own attributes;
        # a built-in measure by its declaration, which imports no torch.
        plugin = chosen.plugin(name) if kind in ("trackers", "executors") else None
        try:
            item = plugin if plugin is not None else chosen.info(name)
        except Exception as error:  # noqa: BLE001 - a broken plugin should not hide the others
            table.add_row(name, f"[red]failed to load: {escape(str(error))}[/red]")
            continue
        table.add_row(name, escape(_describe_item(kind, item)))
    console.print(table)


def _describe_item(kind: str, item: object) -> str:
    from importlib.metadata import EntryPoint

    from emergence.measures.base import MeasureDeclaration

    if isinstance(item, EntryPoint):
        dist = item.dist
        summary = (dist.metadata.get("Summary") or "") if dist is not None else ""
        source = f"{dist.name} {dist.version}, " if dist is not None else ""
        return f"{summary}\nplugin ({source}{item.value})".strip()
    if kind == "tasks":
        levels = "; ".join(f"L{level}: {note}" for level, note in item.level_notes.items())  # type: ignore[attr-defined]
        return f"{item.description}\nlevels: {levels}\nfeatures: {', '.join(item.feature_names) or '-'}"  # type: ignore[attr-defined]
    first_line = (item.__doc__ or "").strip().splitlines()[0] if getattr(item, "__doc__", None) else ""
    if kind == "measures":
        summary = item.summary if isinstance(item, MeasureDeclaration) else first_line  # a plugin's: its docstring's
        every = f"every {item.default_every} steps" if item.default_every else "on the schedule"  # type: ignore[attr-defined]
        options = ", ".join(item.Options.model_fields)  # type: ignore[attr-defined]
        return f"{summary}\ncost {item.cost}; {every}; options: {options or '-'}".strip()  # type: ignore[attr-defined]
    return first_line


@app.command()
def sample(
    task: Annotated[str, typer.Argument(help="a task name (emergence ls tasks)")],
    level: Annotated[int, typer.Option(help="difficulty level")] = 1,
    n: Annotated[int, typer.Option("--n", help="how many examples")] = 5,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    param: Annotated[list[str] | None, typer.Option("--param", help="KEY=VALUE task parameter over the level's (repeatable)")] = None,
) -> None:
    """Print examples of TASK as the model sees them, with their feature labels."""
    import numpy as np
    import yaml

    from emergence.tasks.base import TaskInputError
    from emergence.tasks.build import distinct_inputs, resolve_params

    explicit = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"error: sample: --param {item!r} is not KEY=VALUE")
        explicit[key] = yaml.safe_load(value)
    try:
        task_object = registry.tasks.get(task)()
        params = resolve_params(task_object, level, explicit)
        raws = distinct_inputs(task_object, params, n, np.random.default_rng(seed))
    except (UnknownNameError, TaskInputError) as error:
        _fail(f"error: sample: {error}")
    for raw in raws:
        example = task_object.example(raw, params)
        if as_json:
            sys.stdout.write(json.dumps({"prompt": example.prompt, "answer": example.answer, "features": example.features}) + "\n")
            continue
        console.print(f"{' '.join(example.prompt)}  ->  {' '.join(example.answer)}", highlight=False, markup=False)
        for name, labels in example.features.items():
            console.print(f"    {name:<18} {' '.join('.' if x is None else str(x) for x in labels)}", highlight=False, markup=False)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run directory, runs/<spec>/<run_key>, or a sweep's, runs/<spec>/sweeps/<key>")],
) -> None:
    """Redo the analysis of RUN_DIR from its journal (no retraining) and rewrite its report; for a sweep
    directory, summarise its runs again (as they are now) and rewrite the sweep report."""
    from emergence.api import report as write_any_report

    try:
        written = write_any_report(run_dir)
    except FileNotFoundError as error:
        _fail(f"error: {error}")
    console.print(f"report: {written}", highlight=False, soft_wrap=True)


@app.command()
def sync(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="run directories, runs/<spec>/<run_key>, or sweep directories, runs/<spec>/sweeps/<key>")
    ],
    tracker: Annotated[list[str] | None, typer.Option("--tracker", help="only this backend (repeatable), e.g. mlflow")] = None,
) -> None:
    """Replay each RUN_DIR's journal into its spec's trackers: the values a tracker missed while it was away,
    or a whole run into a tracker it never saw. A sweep directory: each of its runs, then the sweep's parent
    run (its summary and report). Safe to repeat with MLflow (it skips what it already holds)."""
    from emergence.reports import is_sweep_directory
    from emergence.sync import sync_run, sync_sweep

    problems = 0
    for run_dir in run_dirs:
        if is_sweep_directory(run_dir):
            results = sync_sweep(run_dir, tracker)
        elif (run_dir / "journal.jsonl").exists():
            results = [sync_run(run_dir, tracker)]
        else:
            _fail(f"error: {run_dir}: neither a journal.jsonl nor a sweep.json here; is this a run or sweep directory?")
        for result in results:
            for name in result.synced:
                console.print(f"synced {result.run_dir} -> {name}", highlight=False, soft_wrap=True)
            for name, error in result.failed.items():
                problems += 1
                err_console.print(f"error: {result.run_dir} -> {name}: {error}", highlight=False, soft_wrap=True)
            if not result.synced and not result.failed:
                console.print(f"{result.run_dir}: {result.note}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)


@app.command()
def compare(
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            help="run directories or folders of them (default: ./runs), or tracker stores: an MLflow tracking URI "
            "(sqlite:///mlflow.db, http://...), a W&B run folder, or <tracker>:<location> (wandb:runs/)"
        ),
    ] = None,
    experiment: Annotated[str | None, typer.Option(help="the experiment (MLflow) or project to read from a tracker store")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, markdown, csv or json")] = "table",
    spec: Annotated[str | None, typer.Option(help="only runs of this spec name")] = None,
    task: Annotated[str | None, typer.Option(help="only runs of this task")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="only runs with this tag, KEY=VALUE (repeatable)")] = None,
) -> None:
    """One row per run: spec, task, level, model size, seed, emergence step, and every signal's verdict and lead.

    Rows come from run directories, or from any tracker that reads runs back (MLflow from its store, W&B
    from its run folders' .wandb files, so offline runs work); several sources can be given together."""
    from emergence.api import load_runs
    from emergence.compare import FORMATS, render

    if fmt not in FORMATS:
        _fail(f"error: compare: --format {fmt!r}; allowed: {', '.join(FORMATS)}")
    wanted_tags = {}
    for item in tag or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"error: compare: --tag {item!r} is not KEY=VALUE")
        wanted_tags[key] = value
    try:
        rows = load_runs(sources or ["runs"], experiment=experiment, spec=spec, task=task, tags=wanted_tags)
    except (FileNotFoundError, LookupError) as error:
        _fail(f"error: compare: {error}")
    if not rows:
        err_console.print("no runs match", highlight=False)
        raise typer.Exit(1)
    sys.stdout.write(render(rows, fmt))


@app.command("calibrate-llc")
def calibrate_llc(
    spec: SpecArgument,
    overrides: OverridesArgument = None,
    checkpoint: Annotated[int | None, typer.Option(help="checkpoint step (default: the latest)")] = None,
    lr: Annotated[list[float] | None, typer.Option("--lr", help="SGLD step sizes to sweep (repeatable)")] = None,
    localization: Annotated[list[float] | None, typer.Option("--localization", help="gammas to sweep (repeatable)")] = None,
    nbeta: Annotated[list[float] | None, typer.Option("--nbeta", help="n*beta values (repeatable; default: devinterp's m/log m)")] = None,
    num_chains: Annotated[int, typer.Option(help="chains per setting (3 or more: rising traces are then tested across chains)")] = 4,
    num_draws: Annotated[int, typer.Option(help="draws per chain")] = 50,
    num_burnin_steps: Annotated[int, typer.Option(help="burn-in steps per chain")] = 25,
    n_examples: Annotated[int, typer.Option(help="training subset size, as the llc measure's option")] = 1024,
    batch_size: Annotated[int, typer.Option(help="SGLD minibatch size, as the llc measure's option")] = 256,
    rise_tolerance: Annotated[float, typer.Option(help="a trace is rising above this relative rise")] = 0.1,
) -> None:
    """Sweep SGLD settings (lr x localization x nbeta) for the llc measure on a checkpoint of each run of SPEC;
    write llc_calibration.json and llc_calibration.png into the run directory."""
    from emergence.measures.llc import measurement_seed, resolve_nbeta
    from emergence.models import resolve_device
    from emergence.studies import llc_calibration as calibration

    runs = _resolve_or_exit(spec, overrides)
    for run_spec in runs:
        device = resolve_device(run_spec.spec.training.device)
        try:
            loaded = calibration.load_run_checkpoint(run_spec, checkpoint, n_examples, device)
        except FileNotFoundError as error:
            _fail(f"error: calibrate-llc: {run_spec.display_name}: {error}")
        nbetas = nbeta or [resolve_nbeta(None, batch_size, len(loaded.tokens))]
        grid = calibration.calibration_grid(lr or [1e-5, 1e-4, 1e-3], localization or [100.0], nbetas, num_chains, num_draws, num_burnin_steps)
        console.print(f"{run_spec.display_name}: checkpoint step {loaded.step}, {len(grid)} settings", highlight=False, markup=False)

        def show(i: int, result: calibration.CalibrationResult, total: int = len(grid)) -> None:
            console.print(f"  {i + 1}/{total} lr={result.settings.lr:g} llc={result.estimate.mean:.4g}", highlight=False)

        results = calibration.calibrate(
            loaded.model, loaded.tokens, loaded.target_mask, grid, batch_size,
            measurement_seed(loaded.seed, loaded.step), rise_tolerance, progress=show,
        )
        best = calibration.recommend(results)
        context = {"run_dir": str(loaded.run_dir), "checkpoint_step": loaded.step, "n_examples": len(loaded.tokens),
                   "batch_size": batch_size, "rise_tolerance": rise_tolerance}
        json_path, png_path = calibration.write_calibration(results, best, loaded.run_dir, context)
        table = Table(title=f"LLC calibration, step {loaded.step}")
        for column in ("#", "lr", "localization", "nbeta", "llc mean", "llc std", "rise", "trace", "spread over γ", ""):
            table.add_column(column, no_wrap=True)
        spreads = calibration.localization_spread(results)
        for i, r in enumerate(results):
            e = r.estimate
            verdict = "NaN" if e.non_finite else ("rising" if e.rising else "flat")
            table.add_row(str(i), f"{r.settings.lr:g}", f"{r.settings.localization:g}", f"{r.settings.nbeta:.4g}",
                          f"{e.mean:.4g}", f"{e.std:.3g}", f"{e.rise:.2f}", verdict, f"{spreads[i]:.2f}", "recommended" if i == best else "")
        console.print(table)
        if best is None:
            console.print("no setting gave flat, finite traces with a positive LLC: widen the grid", highlight=False)
        else:
            s = results[best].settings
            console.print(f"recommended: lr={s.lr:g} localization={s.localization:g} nbeta={s.nbeta:.6g}", highlight=False)
        console.print(f"wrote {json_path} and {png_path}", highlight=False)


if __name__ == "__main__":
    app()
