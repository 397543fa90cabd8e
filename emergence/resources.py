"""Will a run fit in memory? An estimate of its peak from the spec alone, checked before anything is made.

A run that does not fit is otherwise killed by the operating system (or CUDA) minutes or hours in, with a
run directory and tracker runs made; here it is refused with exit status 2 and the fields to change, before
either exists. The estimate is deliberately simple (docs/reliability.md gives the same formula), in float32
bytes, with P the model's parameters, B the batch, T the longest sequence, A the longest answer, V the
vocabulary, L layers, d = d_model, H heads, d_head, d_mlp:

- **resident** the whole run: the weights (P), the optimizer's state (AdamW and Muon 2P, SGD with momentum
  P, without 0) and the data sets ((train + test) x T int64 tokens, x3 for their feature labels and the
  examples they are built from);
- then the **largest of the phases**, which never overlap:
  - a training step: the gradients (P) and the activations autograd keeps for one batch,
    B T (L (8 d + 4 H d_head + 2 d_mlp + 2 H T) + 3 V) floats (residual stream copies, norms, q k v z, the
    attention scores and probabilities, the MLP's hidden layer; logits, their log-softmax and gradient),
    measured within 25 % (above) of what autograd saves on the TransformerLens bridges this builds;
  - a measurement: one forward without gradients over the diagnostic set (or a test chunk of 1,024,
    whichever is larger), N T (4 d + d_mlp + 2 H T + 2 V) floats, plus what the measures keep: each geometry
    capture N x d (x A at answer positions), a probe's fresh examples x A x d per layer, the per-example
    gradients of fisher_rank and grad_cov_rank (n x P, capped at max_parameters), spectral_edge's window of
    parameter updates (window x P, unless projected);
  - a resume: the checkpoint read back (weights and optimizer state, (1 + state) P) before it is loaded;
  - the training-Jacobian study: J and its SVD (exact: 28 n^2 bytes; sketch: 32 n (rank + oversample)).

Left out, each small beside the above or unknown before the run: torch's own footprint, the tracker, the
analysis, a checkpoint series (its size is known once loaded), and measures not named above (Hessians, the
LLC's chains). The estimate is compared with the memory available now: CUDA's free device memory when the run
trains on CUDA, else the machine's available memory (psutil, else ``MemAvailable`` in /proc/meminfo), capped
by the process's cgroup limit when it has one. ``EMERGENCE_MEMORY_CHECK=off`` skips the check.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emergence import registry
from emergence.spec.grid import RunSpec
from emergence.spec.jacobian_checks import mlp_parameters
from emergence.spec.load import SpecError, SpecProblem
from emergence.spec.schema import CheckpointSeriesSpec, MLPModelSpec, ModelSpec, Spec, TaskSpec

FLOAT = 4  # bytes: every estimate is in float32
TOKEN = 8  # bytes: tokens are int64
EVAL_CHUNK = 1024  # examples per evaluation forward, as measures.behavior.EVAL_CHUNK (a test holds them equal)
SAMPLED_EXAMPLES = 32  # examples per level drawn to find the longest sequence (no data set is built)
SWITCH_OFF = "EMERGENCE_MEMORY_CHECK"  # =off: skip the check (an estimate too cautious for swap, say)

# The fields that shrink each part of the estimate, in the order a person would try them.
SHRINK = {
    "weights and optimizer state": ("model.d_model", "model.n_layers", "model.d_mlp"),
    "data sets": ("task.train_size", "task.test_size"),
    "training step": ("training.batch_size", "model.d_model", "model.n_layers"),
    "measurement": ("task.diagnostic_size", "measures"),
    "resume": ("model.d_model", "model.n_layers"),
    "Jacobian study": ("jacobian.mode", "model.sizes"),
}


@dataclass(frozen=True)
class TaskShape:
    vocab: int  # V
    seq_len: int  # T: the longest prompt + answer of the examples drawn
    answer_len: int  # A


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs: ``resident`` parts for the whole run, then the largest of the ``phases``."""

    resident: dict[str, int]
    phases: dict[str, int]
    parameters: int
    notes: dict[str, str] = field(default_factory=dict)  # part -> what it is made of, for the message

    @property
    def largest_phase(self) -> str:
        return max(self.phases, key=self.phases.__getitem__)

    @property
    def total(self) -> int:
        return sum(self.resident.values()) + max(self.phases.values(), default=0)

    @property
    def biggest_part(self) -> str:
        """The part to shrink first: the largest resident part or the largest phase."""
        parts = {**self.resident, self.largest_phase: self.phases[self.largest_phase]}
        return max(parts, key=parts.__getitem__)

    def describe(self) -> str:
        shown = [*self.resident, self.largest_phase]
        return "; ".join(
            f"{name} {gib(self.resident.get(name, self.phases.get(name, 0)))}" + (f" ({self.notes[name]})" if name in self.notes else "")
            for name in shown
        )


def gib(n_bytes: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n_bytes >= size:
            return f"{n_bytes / size:,.1f} {unit}"
    return f"{n_bytes / 2**10:,.1f} KiB"


# -- the model and the task, from the spec alone ------------------------------------------------------------


def transformer_parameters(model: ModelSpec, d_vocab: int, n_ctx: int) -> int:
    """The parameter count of the bridge ``models.build_model`` makes, exactly (a test holds it to the real one):
    embedding, positions (unless rotary), per layer the norms, attention (q k v with biases, o with bias) and MLP
    (with biases), the final norm, and the unembedding (no bias)."""
    d, d_mlp = model.d_model, model.d_mlp or 4 * model.d_model
    d_attn = model.n_heads * (model.d_head or model.d_model // model.n_heads)
    norm = {"LN": 2 * d, "RMS": d}.get(model.normalization or "", 0)  # LNPre, RMSPre and none have no weights
    attention = 3 * (d * d_attn + d_attn) + d_attn * d + d
    mlp = d * d_mlp + d_mlp + d_mlp * d + d
    positions = 0 if model.positional_embedding == "rotary" else n_ctx * d
    return d_vocab * d + positions + model.n_layers * (2 * norm + attention + mlp) + norm + d * d_vocab


def task_shape(task_spec: TaskSpec) -> TaskShape:
    """Vocabulary, longest sequence and longest answer of the task as the spec asks for it, from a few examples
    drawn per level (their lengths vary little; no data set is built)."""
    from emergence.tasks.build import plan_levels

    task = registry.tasks.get(task_spec.name)()
    plan = plan_levels(task, task_spec.level, task_spec.params, task_spec.train_size, task_spec.test_size, task_spec.diagnostic_size)
    rng = np.random.default_rng(0)
    vocab = seq_len = answer_len = 0
    for _, params, _, _ in plan:
        vocab = max(vocab, len(task.vocab(params)))
        for raw in task.random_inputs(params, rng, SAMPLED_EXAMPLES):
            example = task.example(raw, params)
            seq_len = max(seq_len, len(example.prompt) + len(example.answer))
            answer_len = max(answer_len, len(example.answer))
    return TaskShape(vocab, seq_len, answer_len)


def optimizer_states(spec: Spec) -> int:
    """Tensors the size of the parameters the optimizer keeps: AdamW two moments; Muon a momentum on the matrices
    and AdamW's two on the rest (at most two per parameter); SGD one momentum buffer, or none."""
    optimizer = spec.training.optimizer
    if optimizer.name == "sgd":
        return 1 if optimizer.momentum > 0 else 0
    return 2


# -- the estimate --------------------------------------------------------------------------------------------


def estimate_memory(spec: Spec) -> MemoryEstimate | None:
    """The run's peak memory in bytes, as the module docstring says; None for a checkpoint series (its size is
    known once a checkpoint is loaded)."""
    if isinstance(spec.model, CheckpointSeriesSpec):
        return None
    if isinstance(spec.model, MLPModelSpec):
        return _mlp_estimate(spec, spec.model)
    model: ModelSpec = spec.model
    shape = task_shape(spec.task)
    V, T, A = shape.vocab, shape.seq_len, shape.answer_len  # noqa: N806 - the formula's names
    d, L, H = model.d_model, model.n_layers, model.n_heads  # noqa: N806
    d_mlp = model.d_mlp or 4 * d
    d_attn = H * (model.d_head or d // H)
    P = transformer_parameters(model, V, T)  # noqa: N806
    states = optimizer_states(spec)
    task = spec.task
    batch = spec.training.batch_size or task.train_size
    n_measured = max(task.diagnostic_size, min(task.test_size, EVAL_CHUNK))
    train_activations = batch * T * (L * (8 * d + 4 * d_attn + 2 * d_mlp + 2 * H * T) + 3 * V)
    forward = n_measured * T * (4 * d + d_mlp + 2 * H * T + 2 * V)
    kept = _kept_by_measures(spec, P, L, d, A)
    resident = {
        "weights and optimizer state": FLOAT * P * (1 + states),
        "data sets": 3 * TOKEN * (task.train_size + task.test_size) * T,
    }
    phases = {
        "training step": FLOAT * (P + train_activations),
        "measurement": FLOAT * (forward + kept),
        "resume": FLOAT * P * (1 + states),
    }
    if spec.jacobian is not None:
        phases["Jacobian study"] = _jacobian_bytes(spec, P)
    notes = {
        "weights and optimizer state": f"{P:,} parameters x {1 + states}",
        "training step": f"gradients and the activations of a batch of {batch:,} x {T} tokens",
        "measurement": f"a forward over {n_measured:,} examples and what the measures keep",
        "data sets": f"{task.train_size + task.test_size:,} examples x {T} tokens",
    }
    return MemoryEstimate(resident, phases, P, notes)


def _kept_by_measures(spec: Spec, P: int, L: int, d: int, A: int) -> int:  # noqa: N803
    """Floats the measures keep during a measurement (see the module docstring)."""
    n_diagnostic = spec.task.diagnostic_size
    captures: set[tuple[str, int, str]] = set()
    kept = 0
    for measure in spec.measures:
        options = registry.measures.info(measure.name).Options.model_validate(measure.options())
        layers = getattr(options, "layers", None)
        layer_list = list(range(L)) if layers == "all" else list(layers or [])
        if measure.name in ("fisher_rank", "grad_cov_rank"):
            n = min(options.n_examples or n_diagnostic, n_diagnostic)
            columns = P if measure.name == "fisher_rank" else min(P, options.max_parameters or P)
            kept += n * columns
        elif measure.name == "spectral_edge" and options.projection_dim is None:
            kept += options.window * P
        elif measure.name in ("probe", "ablation"):
            kept += (options.fit_size + options.held_out_size) * A * d * len(layer_list)
        elif isinstance(getattr(options, "sites", None), list) and layers is not None:
            for site in options.sites:
                for layer in [0] if site == "embed" else layer_list:
                    captures.add((site, layer, getattr(options, "position", "last_input")))
    kept += sum(n_diagnostic * d * (A if position == "answer" else 1) for _, _, position in captures)
    return kept


def _jacobian_bytes(spec: Spec, n: int) -> int:
    study = spec.jacobian
    assert study is not None
    if study.mode == "exact":
        return 28 * n * n  # J in float32, its float64 copy, U and V^T from the SVD
    return 32 * n * (study.rank + study.oversample)  # a few float64 n x width bases


def _mlp_estimate(spec: Spec, model: MLPModelSpec) -> MemoryEstimate:
    P = mlp_parameters(model.sizes)  # noqa: N806
    states = optimizer_states(spec)
    task = spec.task
    batch = spec.training.batch_size or task.train_size
    resident = {
        "weights and optimizer state": FLOAT * P * (1 + states),
        "data sets": FLOAT * (task.train_size + task.test_size) * model.sizes[0],
    }
    phases = {"training step": FLOAT * (P + 3 * batch * sum(model.sizes)), "resume": FLOAT * P * (1 + states)}
    if spec.jacobian is not None:
        phases["Jacobian study"] = _jacobian_bytes(spec, P)
    return MemoryEstimate(resident, phases, P, {"weights and optimizer state": f"{P:,} parameters x {1 + states}"})


# -- what is available ----------------------------------------------------------------------------------------


def cpu_memory_available() -> tuple[int, str] | None:
    """Bytes this process can still allocate on the machine, and where the figure comes from; None if unknown."""
    found: list[tuple[int, str]] = []
    try:
        import psutil

        found.append((int(psutil.virtual_memory().available), "the machine's available memory, psutil"))
    except ImportError:
        meminfo = _read("/proc/meminfo")
        for line in (meminfo or "").splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"))
    limit = _cgroup_room()
    if limit is not None:
        found.append((limit, "this process's cgroup memory limit less its use"))
    return min(found) if found else None


def _cgroup_room() -> int | None:
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        limit, usage = _read(limit_file), _read(usage_file)
        if limit is None or usage is None or not limit.strip().isdigit():
            continue  # "max": no limit
        room = int(limit) - int(usage)
        if int(limit) < 2**60:  # v1 writes a huge number for "no limit"
            return max(room, 0)
    return None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return None


def device_memory_available(device: str) -> tuple[int, str] | None:
    """Free memory of the device a run trains on: CUDA's free device memory, else the machine's."""
    if device == "cpu" or device == "mps":
        return cpu_memory_available()
    import torch

    if device == "auto" and not torch.cuda.is_available():
        return cpu_memory_available()
    if not torch.cuda.is_available():
        return None  # training.device: cuda without CUDA: the run reports it
    index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
    free, _ = torch.cuda.mem_get_info(index)
    return int(free), f"free memory of cuda:{index}"


# -- the check ---------------------------------------------------------------------------------------------------


def check_memory(runs: Sequence[RunSpec]) -> None:
    """Refuse (``SpecError``, exit status 2) runs that will not fit in the memory available now, before any run
    directory or tracker run exists. Runs that a local pool runs at once (``execution.workers``) must fit together;
    a remote executor (``execution.address``) runs on machines this one cannot see, and is not checked."""
    if not runs or os.environ.get(SWITCH_OFF, "").lower() in ("off", "0", "false", "no"):
        return
    execution = runs[0].spec.execution
    if execution.address is not None:
        return
    estimates = [(run, estimate) for run in runs if isinstance(run.spec, Spec) and (estimate := estimate_memory(run.spec)) is not None]
    if not estimates:
        return
    device = getattr(estimates[0][0].spec.training, "device", "cpu")
    available = device_memory_available(device)
    if available is None:
        return
    room, where = available
    largest_run, largest = max(estimates, key=lambda pair: pair[1].total)
    if largest.total > room:
        part = largest.biggest_part
        fields = SHRINK.get(part, ())
        raise SpecError(largest_run.source, [SpecProblem(
            fields[0] if fields else "",
            f"the run{_point(largest_run)} needs about {gib(largest.total)} of memory ({largest.describe()}), more than the "
            f"{gib(room)} available ({where}); allowed: a run that fits: make it smaller, first {part} "
            f"({', '.join(fields)}), or set {SWITCH_OFF}=off to run it anyway",
            given=f"{gib(largest.total)} needed", allowed=fields,
        )])
    at_once = min(execution.workers or 1, len(estimates)) if execution.executor == "local" else 1
    together = sum(sorted((estimate.total for _, estimate in estimates), reverse=True)[:at_once])
    if at_once > 1 and together > room:
        raise SpecError(largest_run.source, [SpecProblem(
            "execution.workers",
            f"given {execution.workers}: {at_once} runs at once need about {gib(together)} of memory together (the largest "
            f"{gib(largest.total)} each), more than the {gib(room)} available ({where}); allowed: at most "
            f"{max(1, room // max(largest.total, 1))} workers here, or smaller runs, or {SWITCH_OFF}=off",
            given=execution.workers, allowed=("1",),
        )])


def _point(run: RunSpec) -> str:
    return f" {run.display_name}" if run.grid_point else ""
