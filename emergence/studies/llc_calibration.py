"""LLC calibration: sweep the SGLD settings (lr x localization x nbeta) of the ``llc`` measure on one
checkpoint of a finished run, and recommend the setting whose estimate measures the model, not the sampler.

``emergence calibrate-llc SPEC`` runs it and writes ``llc_calibration.json`` and ``llc_calibration.png``
into the run directory. Each setting is estimated exactly as the measure does (``measures/llc.py``:
``model_llc``), on the training subset that the run's ``llc`` measure would use.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emergence.measures.base import fixed_train_subset
from emergence.measures.llc import LLCEstimate, SGLDSettings, model_llc
from emergence.models import build_model
from emergence.rundir import CHECKPOINT_DIR, run_directory
from emergence.spec.grid import RunSpec
from emergence.tasks.data import build_task
from emergence.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint


@dataclass(frozen=True)
class CalibrationResult:
    settings: SGLDSettings
    estimate: LLCEstimate

    @property
    def acceptable(self) -> bool:
        """Flat after burn-in, every chain finite, and a positive LLC (a negative one means SGLD found
        lower loss than the checkpoint: too large a step, or not at a minimum)."""
        return not self.estimate.unreliable and self.estimate.mean > 0

    def row(self) -> dict[str, Any]:
        e = self.estimate
        return {
            **asdict(self.settings),
            "llc_mean": e.mean,
            "llc_std": e.std,
            "llc_per_chain": [float(v) for v in e.per_chain],
            "init_loss": e.init_loss,
            "rise": e.rise,
            "rising": e.rising,
            "non_finite": e.non_finite,
            "flat": not e.unreliable,
            "acceptable": self.acceptable,
        }


def calibration_grid(
    lrs: Sequence[float], localizations: Sequence[float], nbetas: Sequence[float], num_chains: int, num_draws: int, num_burnin_steps: int
) -> list[SGLDSettings]:
    return [
        SGLDSettings(lr, gamma, nbeta, num_chains, num_draws, num_burnin_steps)
        for nbeta in nbetas
        for gamma in localizations
        for lr in lrs
    ]


def localization_spread(results: Sequence[CalibrationResult]) -> list[float]:
    """Per setting: the relative spread (max - min) / mean of the LLC across the localizations swept at the
    same step size and nbeta; 0 when only one localization was swept.

    An estimate that changes a lot when only the pull towards w* changes is measuring the sampler, not
    the model: on the trained addition checkpoint lr = 1e-3 gave 48, 52 and 109 at gamma = 10, 100, 1000,
    every trace flat, while lr = 1e-4 gave 35, 34 and 31."""
    groups: dict[tuple[float, float], list[float]] = {}
    for r in results:
        groups.setdefault((r.settings.lr, r.settings.nbeta), []).append(r.estimate.mean)
    spreads = {}
    for key, means in groups.items():
        finite = [m for m in means if math.isfinite(m)]
        if len(finite) < 2:
            spreads[key] = 0.0
        else:
            centre = float(np.mean(finite))
            spreads[key] = (max(finite) - min(finite)) / abs(centre) if centre != 0 else math.inf
    return [spreads[(r.settings.lr, r.settings.nbeta)] for r in results]


def recommend(results: Sequence[CalibrationResult]) -> int | None:
    """Index of the acceptable setting whose step size gives the LLC most stable across localizations
    (:func:`localization_spread`), and among those the lowest relative spread std/mean across chains.

    Relative rather than absolute std: a strong localization or a small nbeta shrinks the LLC and its
    std together, and absolute std would reward that shrinkage rather than agreement between chains.
    None when no setting is acceptable."""
    candidates = [i for i, r in enumerate(results) if r.acceptable]
    if not candidates:
        return None
    spread = localization_spread(results)
    return min(candidates, key=lambda i: (round(spread[i], 6), results[i].estimate.std / results[i].estimate.mean))


def calibrate(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    target_mask: torch.Tensor,
    grid: Sequence[SGLDSettings],
    batch_size: int,
    seed: int,
    rise_tolerance: float,
    progress: Callable[[int, CalibrationResult], None] | None = None,
) -> list[CalibrationResult]:
    results = []
    for i, settings in enumerate(grid):
        estimate = model_llc(model, tokens, target_mask, settings, batch_size, seed, rise_tolerance)
        results.append(CalibrationResult(settings, estimate))
        if progress is not None:
            progress(i, results[-1])
    return results


def plot_calibration(results: Sequence[CalibrationResult], recommended: int | None, path: Path) -> Path:
    """One panel per setting: every chain's loss trace, burn-in shaded, L(w*) dashed."""
    from matplotlib.figure import Figure  # object API: no backend or display needed (like report.py)

    columns = min(3, len(results))
    rows = math.ceil(len(results) / columns)
    fig = Figure(figsize=(4.2 * columns, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, result in enumerate(results):
        ax = axes[i // columns][i % columns]
        e, s = result.estimate, result.settings
        for chain in e.trace:
            ax.plot(chain, linewidth=0.8)
        ax.axvspan(0, e.num_burnin_steps, color="0.9", zorder=0)
        ax.axhline(e.init_loss, color="k", linestyle="--", linewidth=0.8)
        verdict = "flat" if not e.unreliable else ("NaN" if e.non_finite else "rising")
        mark = "  [recommended]" if i == recommended else ""
        ax.set_title(
            f"lr={s.lr:g} γ={s.localization:g} nβ={s.nbeta:.4g}\nLLC {e.mean:.3g} ± {e.std:.2g} ({verdict}){mark}", fontsize=8
        )
        ax.set_xlabel("SGLD step", fontsize=7)
        ax.set_ylabel("loss", fontsize=7)
        ax.tick_params(labelsize=7)
    for j in range(len(results), rows * columns):
        axes[j // columns][j % columns].set_visible(False)
    fig.savefig(path, dpi=100)
    return path


def write_calibration(
    results: Sequence[CalibrationResult], recommended: int | None, directory: Path, context: dict[str, Any]
) -> tuple[Path, Path]:
    """``llc_calibration.json`` and ``llc_calibration.png`` in ``directory``."""
    directory = Path(directory)
    payload = {
        **context,
        "results": [{**r.row(), "localization_spread": spread} for r, spread in zip(results, localization_spread(results), strict=True)],
        "recommended": recommended,
        "recommended_settings": asdict(results[recommended].settings) if recommended is not None else None,
    }
    json_path = directory / "llc_calibration.json"
    json_path.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    return json_path, plot_calibration(results, recommended, directory / "llc_calibration.png")


@dataclass
class LoadedCheckpoint:
    model: torch.nn.Module
    tokens: torch.Tensor
    target_mask: torch.Tensor
    step: int
    run_dir: Path
    seed: int


def load_run_checkpoint(run_spec: RunSpec, step: int | None, n_examples: int, device: torch.device) -> LoadedCheckpoint:
    """The model of ``run_spec`` at checkpoint ``step`` (latest if None) and the training subset the
    ``llc`` measure of that run would use. Raises FileNotFoundError when there is no such checkpoint."""
    spec = run_spec.spec
    run_dir = run_directory(run_spec)
    directory = run_dir / CHECKPOINT_DIR
    if step is None:
        found = latest_checkpoint(directory)
        if found is None:
            raise FileNotFoundError(f"{directory}: no checkpoints; run the spec first")
    else:
        found = next(((s, p) for s, p in list_checkpoints(directory) if s == step), None)
        if found is None:
            available = [s for s, _ in list_checkpoints(directory)]
            raise FileNotFoundError(f"{directory}: no checkpoint for step {step}; have {available}")
    t = spec.task
    task = build_task(t.name, t.level, t.params, t.train_size, t.test_size, t.diagnostic_size, spec.seed, train_features=False)
    model = build_model(spec.model, len(task.vocab), task.seq_len, spec.seed, device)
    model.load_state_dict(load_checkpoint(found[1], device)["model"])
    subset = fixed_train_subset(task.train, n_examples, spec.seed)
    return LoadedCheckpoint(model, subset.tokens.to(device), subset.target_mask.to(device), found[0], run_dir, spec.seed)
