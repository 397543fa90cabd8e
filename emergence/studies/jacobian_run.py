"""One training-Jacobian run (a spec with a ``jacobian:`` section), into the run directory, report and trackers.

In order: ordinary training (its behaviour at the schedule's steps goes to the journal, as in any run); the
tangent-free unrolled loop, which must give ordinary training's θ_T bit for bit; J (exact or sketched) and its
SVD; the counts, cos(u_i, v_i) and subspace-restricted retraining; ``jacobian.json`` in the run directory; the
summary values, tables and plots to the trackers. A run that completed is left alone; one that was
interrupted starts again (the study keeps no checkpoint: J is one pass).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emergence.recorder import RunRecorder
from emergence.rundir import (
    JACOBIAN_FILE,
    RunOutcome,
    execute_once,
    replace_json,
    write_resolved_spec,
    write_status,
)
from emergence.schedule import MeasurementSchedule
from emergence.spec.grid import RunSpec
from emergence.spec.schema import JacobianSpec
from emergence.studies.jacobian import (
    JacobianResult,
    UnrolledTraining,
    default_dimensions,
    exact_svd,
    restricted_training,
    sketch_svd,
    subspace_counts,
    subspace_indices,
)
from emergence.studies.jacobian_problem import JacobianProblem, build_problem, ordinary_training
from emergence.version import __version__

log = logging.getLogger(__name__)


class StudyInputError(ValueError):
    """What only the built model can tell (a transformer's exact parameter count): the run fails before any tracker run."""


def check_built(problem: JacobianProblem, study: JacobianSpec) -> None:
    n = problem.n_params
    if study.mode == "exact" and n > study.max_exact_params and not study.force:
        raise StudyInputError(
            f"jacobian.mode: given 'exact' for a model of {n:,} parameters, above jacobian.max_exact_params "
            f"({study.max_exact_params:,}); use mode: sketch, or set jacobian.force: true"
        )
    if study.mode == "sketch" and study.rank + study.oversample > n:
        raise StudyInputError(
            f"jacobian.rank: given {study.rank} (+ oversample {study.oversample}); the model has {n:,} parameters"
        )


def spectrum_payload(result: JacobianResult, study: JacobianSpec) -> dict[str, Any]:
    s = result.singular_values
    cos = result.alignment()
    bulk = np.abs(s - 1) <= 1e-2
    return {
        "mode": result.mode,
        "n_params": result.n_params,
        "singular_values": s.tolist(),
        "cos_uv": cos.tolist(),
        "counts": subspace_counts(s, study.tolerances) if result.mode == "exact" else [],
        "sigma_max": float(s[0]),
        "sigma_min": float(s[-1]),
        "bulk_cos_mean": float(cos[bulk].mean()) if bulk.any() else None,  # δ = 1e-2
        "details": result.details,
    }


def retraining_curves(
    problem: JacobianProblem, result: JacobianResult, study: JacobianSpec
) -> dict[str, Any]:
    """Test loss after training θ = θ_0 + cᵀ B, B the top-k chaotic, bulk or stable right singular vectors."""
    assert study.retrain is not None and result.right is not None
    available = result.right.shape[1]
    dims = study.retrain.dims or default_dimensions(available, study.retrain.points)
    curves: dict[str, list[float]] = {}
    started = time.perf_counter()
    for kind in study.retrain.subspaces:
        curves[kind] = []
        for k in dims:
            basis = torch.from_numpy(
                result.right[:, subspace_indices(kind, result.singular_values, k)].T.copy()
            )
            final = restricted_training(
                problem.step_loss, problem.layout, problem.schedule, problem.theta0, basis
            )
            curves[kind].append(problem.test_loss(final))
    return {
        "dims": dims,
        "curves": curves,
        "initial_test_loss": problem.test_loss(problem.theta0),
        "seconds": time.perf_counter() - started,
    }


class JacobianStudy:
    def __init__(self, run_spec: RunSpec) -> None:
        self.run_spec = run_spec
        self.spec = run_spec.spec
        assert self.spec.jacobian is not None
        self.study: JacobianSpec = self.spec.jacobian
        self.recorder = RunRecorder(run_spec)
        self.run_dir = self.recorder.run_dir
        self.journal = self.recorder.journal

    def execute(self) -> RunOutcome:
        return execute_once(self.run_spec, self.run_dir, self._execute)

    def _execute(self) -> RunOutcome:
        write_resolved_spec(self.run_dir, self.run_spec)
        if self.journal.path.exists():
            self.journal.path.unlink()  # an interrupted study starts again from the start
        torch.manual_seed(self.spec.seed)
        problem = build_problem(self.spec)
        try:
            check_built(problem, self.study)
        except StudyInputError as error:
            reason = str(error)
            self.journal.append_event("failed", step=0, reason=reason)
            return self.recorder.finish("failed", reason, n_params=problem.n_params)
        write_status(self.run_dir, "running", run_key=self.run_spec.run_key, resumed=False)
        self.journal.append_event(
            "start", device="cpu", autocast=None, n_params=problem.n_params, version=__version__, from_step=0
        )
        self.recorder.start_trackers("cpu", problem.n_params)
        step = 0
        try:
            step = self.spec.training.steps
            payload = self._study(problem)
        except KeyboardInterrupt:
            reason = "interrupted; rerun the same spec to start the study again"
            self.journal.append_event("failed", step=step, reason=reason)
            self.recorder.finish("failed", reason, tracker_status="interrupted", n_params=problem.n_params)
            raise
        except Exception as error:  # noqa: BLE001 - the run says so, a sweep goes on
            reason = f"{type(error).__name__}: {error}"
            log.exception("Jacobian study %s failed", self.run_spec.display_name)
            self.journal.append_event("failed", step=step, reason=reason, traceback=traceback.format_exc())
            return self.recorder.finish("failed", reason, n_params=problem.n_params)
        analysis = self.recorder.analyze(problem.task.chance_exact_match, problem.task.level_chance)
        return self.recorder.finish(
            "completed", analysis=analysis, step=step, n_params=problem.n_params, jacobian=payload["summary"]
        )

    # -- the study -----------------------------------------------------------------------------

    def _study(self, problem: JacobianProblem) -> dict[str, Any]:
        spec, study = self.spec, self.study
        schedule = MeasurementSchedule.from_spec(spec.schedule, spec.training.steps)
        params = problem.layout.unflatten(problem.theta0)
        self.recorder.record(0, {"train/lr": problem.schedule.lrs[0], **problem.evaluate(params)})

        def on_step(step: int, loss: float, lr: float) -> None:
            if schedule.due(step):
                values = {"train/lr": lr, "behavior/train/loss_step": loss}
                values |= problem.evaluate({n: p.detach() for n, p in problem.module.named_parameters()})
                self.recorder.record(step, values)

        started = time.perf_counter()
        theta_ordinary = ordinary_training(problem, spec, on_step)
        seconds: dict[str, float] = {"ordinary_training": time.perf_counter() - started}

        started = time.perf_counter()
        unrolled = UnrolledTraining(problem.step_loss, problem.layout, problem.schedule)
        with torch.no_grad():
            theta_unrolled = unrolled(problem.theta0)
        seconds["unrolled_training"] = time.perf_counter() - started
        checks = {
            "tangent_free_equals_ordinary": bool(torch.equal(theta_unrolled, theta_ordinary)),
            "tangent_free_max_abs_difference": float((theta_unrolled - theta_ordinary).abs().max()),
        }
        if not checks["tangent_free_equals_ordinary"]:
            log.warning(
                "the unrolled loop differs from ordinary training by up to %g",
                checks["tangent_free_max_abs_difference"],
            )

        if study.mode == "exact":
            result = exact_svd(
                unrolled, problem.theta0, study.chunk_size, lambda done, n: log.info("J: %d of %d columns", done, n)
            )
        else:
            result = sketch_svd(
                unrolled,
                problem.theta0,
                study.rank,
                study.oversample,
                study.power_iterations,
                study.chunk_size,
                spec.seed,
            )
        seconds |= {f"jacobian_{name}": value for name, value in result.seconds.items()}
        # The primal of the forward-mode pass: equal to ordinary training unless some op's forward-mode rule
        # recomputes its value differently (a transformer's layer norm and softmax backward do, by an ulp or so).
        checks["jvp_primal_equals_ordinary"] = bool(torch.equal(result.theta_final, theta_ordinary))
        checks["jvp_primal_max_abs_difference"] = float((result.theta_final - theta_ordinary).abs().max())

        payload = spectrum_payload(result, study)
        payload["checks"] = checks
        payload["final_test_loss"] = problem.test_loss(theta_ordinary)
        if study.retrain is not None:
            payload["retraining"] = retraining_curves(problem, result, study)
            seconds["retraining"] = payload["retraining"]["seconds"]
        payload["seconds"] = seconds
        payload["summary"] = self._summary(payload)
        replace_json(self.run_dir / JACOBIAN_FILE, payload)
        self._log(payload, spec.training.steps)
        return payload

    def _summary(self, payload: dict[str, Any]) -> dict[str, float]:
        summary: dict[str, float] = {
            "jacobian/sigma_max": payload["sigma_max"],
            "jacobian/sigma_min": payload["sigma_min"],
            "jacobian/final_test_loss": payload["final_test_loss"],
            "jacobian/tangent_free_equals_ordinary": float(payload["checks"]["tangent_free_equals_ordinary"]),
        }
        if payload["bulk_cos_mean"] is not None:
            summary["jacobian/bulk_cos_mean"] = payload["bulk_cos_mean"]
        for count in payload["counts"]:
            for kind in ("chaotic", "bulk", "stable"):
                summary[f"jacobian/count/{kind}/delta_{count['delta']:g}"] = count[kind]
        for name, value in payload["seconds"].items():
            summary[f"cost/jacobian/{name}"] = value
        return summary

    def _log(self, payload: dict[str, Any], step: int) -> None:
        """The summary as values at the last step, and the spectrum, counts and curves as tables."""
        s, cos = payload["singular_values"], payload["cos_uv"]
        tables: dict[str, tuple[list[str], list[list[Any]]]] = {
            "jacobian_spectrum": (["index", "sigma", "cos_uv"], [[i, s[i], cos[i]] for i in range(len(s))]),
        }
        if payload["counts"]:
            tables["jacobian_counts"] = (
                ["delta", "chaotic", "bulk", "stable"],
                [list(c.values()) for c in payload["counts"]],
            )
        retraining = payload.get("retraining")
        if retraining:
            kinds = list(retraining["curves"])
            rows = [
                [k, *(retraining["curves"][kind][i] for kind in kinds)]
                for i, k in enumerate(retraining["dims"])
            ]
            tables["jacobian_retraining"] = (["k", *(f"{kind}_test_loss" for kind in kinds)], rows)
        self.recorder.record(step, payload["summary"], tables)


def run_study(run_spec: RunSpec) -> RunOutcome:
    return JacobianStudy(run_spec).execute()


def read_jacobian(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / JACOBIAN_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
