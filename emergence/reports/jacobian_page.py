"""The training-Jacobian section of a run report: the spectrum on a log scale (the study's first figure),
cos(u_i, v_i) across it, test loss against subspace size for each kind of subspace (its second figure), and
the counts per tolerance. Reads ``jacobian.json`` only, so it redraws for any finished study."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from emergence.reports.html_page import esc, fmt, table
from emergence.rundir import JACOBIAN_FILE

SPECTRUM_PLOT = "jacobian_spectrum.png"
ALIGNMENT_PLOT = "jacobian_alignment.png"
RETRAINING_PLOT = "jacobian_retraining.png"
SUBSPACE_COLORS = {"chaotic": "tab:red", "bulk": "tab:gray", "stable": "tab:blue"}


def read_jacobian(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / JACOBIAN_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a half-written file cannot happen (atomic replace); a hand-edited one is skipped
    return data if isinstance(data, dict) else None


def plot_jacobian(data: Mapping[str, Any], run_dir: Path) -> list[str]:
    plots = [_plot_spectrum(data, run_dir / SPECTRUM_PLOT), _plot_alignment(data, run_dir / ALIGNMENT_PLOT)]
    if data.get("retraining"):
        plots.append(_plot_retraining(data, run_dir / RETRAINING_PLOT))
    return plots


def _plot_spectrum(data: Mapping[str, Any], path: Path) -> str:
    s = np.asarray(data["singular_values"], dtype=float)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(np.arange(len(s)), s, color="black", linewidth=1.2)
    ax.axhline(1.0, linestyle="--", color="gray", linewidth=0.8)
    counts = data.get("counts") or []
    if counts:
        # Shade the bulk at the middle tolerance: the indices whose σ lies within δ of 1.
        delta = counts[len(counts) // 2]["delta"]
        inside = np.flatnonzero(np.abs(s - 1) <= delta)
        if inside.size:
            ax.axvspan(
                inside[0],
                inside[-1],
                color=SUBSPACE_COLORS["bulk"],
                alpha=0.15,
                label=f"bulk |σ-1| ≤ {delta:g}",
            )
            ax.legend(loc="upper right")
    ax.set_yscale("log")
    ax.set_xlabel("index")
    ax.set_ylabel("singular value of dθ_T/dθ_0")
    ax.set_title(f"Training Jacobian spectrum ({data.get('mode')}, {data.get('n_params'):,} parameters)")
    fig.savefig(path, dpi=100)
    return path.name


def _plot_alignment(data: Mapping[str, Any], path: Path) -> str:
    cos = np.asarray(data["cos_uv"], dtype=float)
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(np.arange(len(cos)), cos, s=4, alpha=0.3, color="tab:purple")
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("singular value index")
    ax.set_ylabel("cos(u_i, v_i)")
    ax.set_title("Left against right singular vectors (≈ 1: the perturbation passes through training)")
    fig.savefig(path, dpi=100)
    return path.name


def _plot_retraining(data: Mapping[str, Any], path: Path) -> str:
    retraining = data["retraining"]
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for kind, losses in retraining["curves"].items():
        ax.plot(
            retraining["dims"], losses, marker="o", label=f"{kind} subspace", color=SUBSPACE_COLORS.get(kind)
        )
    if data.get("final_test_loss") is not None:
        ax.axhline(
            data["final_test_loss"], linestyle="--", color="black", linewidth=0.8, label="full training"
        )
    if retraining.get("initial_test_loss") is not None:
        ax.axhline(
            retraining["initial_test_loss"], linestyle=":", color="black", linewidth=0.8, label="untrained"
        )
    ax.set_xlabel("subspace dimension k")
    ax.set_ylabel("test loss (nats)")
    ax.set_title("Training restricted to θ_0 + span of k singular directions")
    ax.legend()
    fig.savefig(path, dpi=100)
    return path.name


def jacobian_section(data: Mapping[str, Any]) -> str:
    checks = data.get("checks") or {}
    items = [
        f"{data.get('mode')} J of {data.get('n_params'):,} parameters; "
        f"σ_max {fmt(data.get('sigma_max'))}, σ_min {fmt(data.get('sigma_min'))}",
        f"mean cos(u_i, v_i) over the bulk (|σ-1| ≤ 0.01): {fmt(data.get('bulk_cos_mean'))}",
        "tangent-free pass equals ordinary training bit for bit: "
        + {True: "yes", False: "NO"}.get(checks.get("tangent_free_equals_ordinary"), "unknown")
        + f"; the forward-mode pass's θ_T differs from it by at most {fmt(checks.get('jvp_primal_max_abs_difference'))}",
        "seconds: " + ", ".join(f"{name} {value:.1f}" for name, value in (data.get("seconds") or {}).items()),
    ]
    body = "<ul>\n" + "\n".join(f"<li>{esc(item)}</li>" for item in items) + "\n</ul>"
    if data.get("counts"):
        body += (
            "<p>Directions per tolerance δ: chaotic σ &gt; 1 + δ, bulk |σ - 1| ≤ δ, stable σ &lt; 1 - δ.</p>"
        )
        body += table(["delta", "chaotic", "bulk", "stable"], data["counts"])
    retraining = data.get("retraining")
    if retraining:
        kinds = list(retraining["curves"])
        rows = [
            {"k": k, **{f"{kind} test loss": retraining["curves"][kind][i] for kind in kinds}}
            for i, k in enumerate(retraining["dims"])
        ]
        body += (
            f"<p>Restricted retraining (untrained test loss {fmt(retraining.get('initial_test_loss'))}, "
            f"full training {fmt(data.get('final_test_loss'))}):</p>"
        )
        body += table(["k", *(f"{kind} test loss" for kind in kinds)], rows)
    return body
