"""A self-contained HTML summary of one run directory, with the plots ``plots.py`` draws (a sweep's page is
``sweep_page.py``).

The report reads only what a run leaves on disk (``run_data.py``), so it can be rebuilt for any finished,
failed or interrupted run without retraining.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emergence.numbers import finite_number
from emergence.reports.html_page import CSS, columns, esc, fmt, replace_file, section, table
from emergence.reports.jacobian_page import jacobian_section, plot_jacobian, read_jacobian
from emergence.reports.plots import (
    BEHAVIOR_PLOT,
    plot_behavior,
    plot_geometry_families,
    plot_probes,
    plot_signal_families,
)
from emergence.reports.robustness_plot import plot_robustness
from emergence.reports.run_data import RunData, load_run_data
from emergence.rundir import REPORT_FILE, SPEC_FILE

VERDICT_COLUMNS = (
    "signal",
    "event_metric",
    "event_step",
    "onset_step",
    "lead_steps",
    "lead_intervals",
    "verdict",
    "robust",
    "robust_share",
    "specific",
    "control_onset_step",
    "xcorr_lag_steps",
)
FEATURE_COLUMNS = (
    "feature", "verdict", "onset_step", "quiet_step", "event_step", "lead_steps", "loss_at_onset", "plateau_loss", "baseline",
    "final_accuracy", "ablation_baseline", "ablation_ablated", "ablation_control", "ablation_drop", "ablation_relative_drop",
)
COLLAPSE_COLUMNS = ("signal", "layer", "initial", "floor", "floor_step", "collapse_step", "recovery_onset")
KNOWN_VERDICTS = ("precursor", "synchronous", "lagging", "no_signal", "no_emergence")

# Above this many layers a legend entry per layer crowds out the plot; a colour bar reads better.



def write_report(run_dir: Path, status: dict[str, Any] | None = None) -> Path:
    """Write the plots and ``report.html`` into ``run_dir``; return the path of ``report.html``. ``status`` is
    the run's status when it is not yet in ``status.json``: a run writes its report before its final status,
    so that one killed in between is not taken for finished."""
    run_dir = Path(run_dir)
    data = load_run_data(run_dir)
    if status is not None:
        data.status = status
    behavior_plot = plot_behavior(data, run_dir / BEHAVIOR_PLOT)
    plots = ([behavior_plot] if behavior_plot else []) + plot_geometry_families(data, run_dir) + plot_signal_families(data, run_dir) + plot_probes(data, run_dir)
    for stale in run_dir.glob("robustness*.png"):  # a grid drawn again with fewer rows needs fewer figures
        stale.unlink()
    robustness_plots = plot_robustness((data.analysis or {}).get("robustness"), run_dir)
    jacobian = read_jacobian(run_dir)
    if jacobian is not None:  # a training-Jacobian study: its figures lead the plots
        plots = plot_jacobian(jacobian, run_dir) + plots
    return replace_file(run_dir / REPORT_FILE, render_html(data, plots, jacobian, robustness_plots))


# --- HTML ----------------------------------------------------------------------------------------

def render_html(
    data: RunData, plots: Sequence[str], jacobian: Mapping[str, Any] | None = None, robustness_plots: Sequence[str] = ()
) -> str:
    state = (data.status or {}).get("state") or "unknown"
    title = f"{data.spec_name} / {data.run_key}"
    sections = [
        _header(data, state),
        section("Summary", _summary(data)),
        *([section("Training Jacobian", jacobian_section(jacobian))] if jacobian is not None else []),
        *([section("Checkpoint integrity", _integrity_table(data))] if _checkpoint_events(data) else []),
        section("Precursor verdicts", _verdict_table(data)),
        *([section("Robustness over analysis settings", _robustness_section(data, robustness_plots))] if robustness_plots else []),
        *([section("Quiet features", _feature_table(data))] if data.feature_verdicts else []),
        section("Collapse", _collapse_table(data)),
        section("Plots", _plots(plots)),
        section("Resolved spec", _spec_block(data)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc('emergence: ' + title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body>\n</html>\n"
    )


def _header(data: RunData, state: str) -> str:
    status_class = state if state in ("completed", "running", "failed") else "unknown"
    parts = [
        f"<h1>{esc(data.spec_name)}</h1>",
        f'<p class="meta">run key <code>{esc(data.run_key)}</code> &middot; '
        f'<span class="status status-{status_class}">{esc(state)}</span></p>',
    ]
    reason = _failure_reason(data)
    if reason:
        parts.append(f'<div class="failure"><strong>Reason:</strong> {esc(reason)}</div>')
    parts += [f'<p class="note">{esc(note)}</p>' for note in data.notes]
    return "<header>\n" + "\n".join(parts) + "\n</header>"


def _failure_reason(data: RunData) -> str | None:
    """status.json's reason, else the last ``failed`` journal event's: status may predate the failure."""
    reason = (data.status or {}).get("reason")
    if reason:
        return str(reason)
    failures = [
        event for event in data.journal.events if event.get("event") == "failed" and event.get("reason")
    ]
    return str(failures[-1]["reason"]) if failures else None


def _whole_run_summary(key: str, entry: Mapping[str, Any]) -> str:
    """``spectral/k_star: mode 1 (85% of 71 measurements; 8 before the event, 1 from it)``."""
    share, n = finite_number(entry.get("share")), entry.get("measurements")
    text = f"{key}: {entry.get('statistic')} {fmt(entry.get('value'))} ({f'{100 * share:.0f}' if share is not None else '—'}% of {n} measurements"
    if "mode_before_event" in entry:
        text += f"; {fmt(entry.get('mode_before_event'))} before the event, {fmt(entry.get('mode_from_event'))} from it"
    return text + ")"


def _summary(data: RunData) -> str:
    steps = [step for step, _ in data.journal.values]
    items = [
        f"{len(set(steps))} measured steps, last step {max(steps)}" if steps else "No values were logged."
    ]
    if data.analysis is None and (data.status or {}).get("state") == "running":
        items.append("No analysis yet: the run is still running.")
    elif data.analysis is None:
        items.append("No analysis: analysis.json is missing, so the run probably ended before analysis.")
    else:
        items += [_event_summary(event) for event in data.analysis_list("events")] or [
            "No emergence events."
        ]
        items += [_top_down_summary(entry) for entry in data.analysis_list("top_down")]
        control = (data.analysis or {}).get("control")
        if isinstance(control, Mapping):
            items.append(_control_summary(control))
        whole_run = (data.analysis or {}).get("summaries")
        if isinstance(whole_run, Mapping):
            items += [_whole_run_summary(key, entry) for key, entry in whole_run.items() if isinstance(entry, Mapping)]
    if data.verdicts:
        counts = Counter(str(v.get("verdict")) for v in data.verdicts)
        items.append("Verdicts: " + ", ".join(f"{name} {n}" for name, n in counts.most_common()))
    return "<ul>\n" + "\n".join(f"<li>{esc(item)}</li>" for item in items) + "\n</ul>"


def _event_summary(event: Mapping[str, Any]) -> str:
    metric = event.get("metric", "?")
    if event.get("step") is None:
        return f"Emergence ({metric}): no emergence (threshold {fmt(event.get('threshold'))} never held)."
    return (
        f"Emergence ({metric}): step {fmt(event.get('step'))} "
        f"(threshold {fmt(event.get('threshold'))}, chance {fmt(event.get('chance'))}, "
        f"held for {fmt(event.get('persistence'))} measurements)."
    )


def _control_summary(control: Mapping[str, Any]) -> str:
    events = [e for e in control.get("events") or [] if isinstance(e, Mapping)]
    emerged = [f"{e.get('metric')} at step {e.get('step')}" for e in events if e.get("step") is not None]
    if control.get("state") != "completed":
        outcome = "no onsets to compare, so every verdict's specific is undecided"
    elif emerged:
        outcome = f"it emerged ({', '.join(emerged)}): the control learnt something, so read specific with care"
    else:
        outcome = f"final test exact match {fmt(control.get('final_metric'))}, no emergence, as it should"
    return (
        f"Null control ({control.get('kind')}): run {control.get('run_key')}, {control.get('state')}; {outcome}. "
        "specific = no: the control shows the same onset within the precursor margin."
    )


def _top_down_summary(entry: Mapping[str, Any]) -> str:
    holds = {True: "holds", False: "does not hold"}.get(entry.get("holds"), "undetermined")
    order = ", ".join(
        f"L{layer}@{fmt(step)}"
        for layer, step in zip(entry.get("layers") or [], entry.get("collapse_steps") or [], strict=False)
    )
    return (
        f"Top-down ({entry.get('family', '?')}): Spearman rho {fmt(entry.get('spearman_rho'))}, {holds}"
        + (f"; collapse steps {order}." if order else ".")
    )


INTEGRITY_COLUMNS = ("step", "revision", "hash", "duplicate_of", "load_seconds")


def _checkpoint_events(data: RunData) -> list[Mapping[str, Any]]:
    """A checkpoint series' ``checkpoint`` events, one per checkpoint walked (``series.py``)."""
    return [e for e in data.journal.events if e.get("event") == "checkpoint"]


def _integrity_table(data: RunData) -> str:
    """Every checkpoint of the series with its weights' hash; those whose weights are another step's, flagged
    and left out of the analysis, first and in red."""
    events = _checkpoint_events(data)
    excluded = data.journal.excluded_steps()
    rows = [{**e, "hash": str(e.get("hash", ""))[:16]} for e in events]
    if excluded:
        note = (
            f'<p class="failure">{len(excluded)} of {len(events)} checkpoints have weights equal to another step\'s and are '
            f"left out of the analysis: steps {esc(', '.join(str(s) for s in sorted(excluded)))}.</p>"
        )
    else:
        note = f"<p>All {len(events)} checkpoints have distinct weights (SHA-256 of every parameter and buffer).</p>"

    def flagged(column: str, value: Any) -> str | None:
        return "duplicate" if column == "duplicate_of" and value is not None else None

    return note + table(INTEGRITY_COLUMNS, rows, flagged)


def _verdict_table(data: RunData) -> str:
    if not data.verdicts:
        return "<p>No verdicts.</p>"
    shown = columns(VERDICT_COLUMNS, data.verdicts)
    return table(shown, data.verdicts, cell_class=_verdict_cell_class)


def _robustness_section(data: RunData, plots: Sequence[str]) -> str:
    grid = (data.analysis or {}).get("robustness") or {}
    plain = grid.get("plain") or {}
    settings = grid.get("settings") or []
    values = {key: sorted({s.get(key) for s in settings}) for key in ("threshold", "persistence", "margin")}
    intro = (
        f"<p>Every verdict decided again at each of {len(settings)} settings: emergence threshold "
        f"{esc(fmt(values['threshold']))} (of the way from chance), persistence {esc(fmt(values['persistence']))} "
        f"(measurements an event and an onset must hold), precursor margin {esc(fmt(values['margin']))} (intervals). "
        f"The run's own setting (threshold {esc(fmt(plain.get('threshold')))}, persistence {esc(fmt(plain.get('persistence')))}, "
        f"margin {esc(fmt(plain.get('margin')))}) is outlined. <code>robust</code>: every setting gives the run's verdict; "
        "<code>robust_share</code>: the share that does.</p>"
    )
    return intro + _plots(plots)


def _feature_table(data: RunData) -> str:
    intro = (
        "<p>A feature is <em>quiet</em> when its probe beats the untrained-model baseline by more than 2 standard "
        "errors at a step where the test loss is within 5% of its plateau value, before the emergence event "
        "(<code>quiet_step</code>); <em>loud</em> when it only does so once the loss has left the plateau; "
        "<em>never</em> when it never does. Ablation columns: exact match on the "
        "test set with the feature's probe directions removed, against random directions moved by the same "
        "amount (the last ablation of the run).</p>"
    )
    return intro + table(columns(FEATURE_COLUMNS, data.feature_verdicts), data.feature_verdicts, cell_class=_feature_cell_class)


def _feature_cell_class(column: str, value: Any) -> str | None:
    if column != "verdict":
        return None
    return {"quiet": "verdict-precursor", "loud": "verdict-synchronous", "never": "verdict-no_signal"}.get(str(value), "verdict-other")


def _collapse_table(data: RunData) -> str:
    collapse = data.analysis_list("collapse")
    if not collapse:
        return "<p>No collapse analysis.</p>"
    return table(columns(COLLAPSE_COLUMNS, collapse), collapse)


def _verdict_cell_class(column: str, value: Any) -> str | None:
    if column != "verdict":
        return None
    return f"verdict-{value}" if value in KNOWN_VERDICTS else "verdict-other"


def _plots(plots: Sequence[str]) -> str:
    if not plots:
        return "<p>Nothing to plot yet.</p>"
    return "\n".join(
        f'<figure><img src="{esc(name)}" alt="{esc(name)}"><figcaption>{esc(name)}</figcaption></figure>'
        for name in plots
    )


def _spec_block(data: RunData) -> str:
    if data.spec_text is None:
        return f"<p>{esc(SPEC_FILE)} is missing.</p>"
    return f"<pre>{esc(data.spec_text)}</pre>"
