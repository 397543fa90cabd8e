"""What a training-Jacobian spec (a ``jacobian:`` section, or an MLP model) must satisfy, checked without torch.

Each problem is a ``JacobianSpecProblem`` at the dotted path a user should change; the schema raises it as a
field error, so it reaches the user as ``error: FILE: PATH: MESSAGE`` with exit status 2, before any run
directory or tracker run exists. Imports nothing of the schema (which calls this), so no cycle forms.
"""

from __future__ import annotations

from typing import Any

from emergence import registry

Spec = Any  # the validated ``emergence.spec.schema.Spec``; typed loosely so this module need not import it


class JacobianSpecProblem(ValueError):
    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)


# The study differentiates the loop on the CPU, where every kernel it uses is deterministic.
JACOBIAN_DEVICES = ("auto", "cpu")


def mlp_parameters(sizes: list[int]) -> int:
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False))


def parameter_count(spec: Spec) -> tuple[int, bool]:
    """(parameters, exact?): exact for an MLP; for a transformer a lower bound (blocks, embedding and
    unembedding, without biases, norms and positions), which the run checks again on the built model."""
    if getattr(spec.model, "kind", None) == "mlp":
        return mlp_parameters(spec.model.sizes), True
    model = spec.model
    d_vocab = 0
    if spec.task.name in registry.tasks:
        task = registry.tasks.get(spec.task.name)()
        levels = [spec.task.level] if isinstance(spec.task.level, int) else spec.task.level
        d_vocab = len(task.vocab({**task.default_params(levels[0]), **spec.task.params}))
    d_mlp = model.d_mlp or 4 * model.d_model
    d_head = model.d_head or model.d_model // model.n_heads
    per_layer = 4 * model.d_model * d_head * model.n_heads + 2 * model.d_model * d_mlp
    return model.n_layers * per_layer + 2 * d_vocab * model.d_model, False


def _check_mlp(spec: Spec, model: Any) -> None:
    task_class = registry.tasks.get(spec.task.name) if spec.task.name in registry.tasks else None
    if task_class is None:
        return  # the task name's own error is reported
    if not hasattr(task_class, "vectors"):
        offering = [n for n in registry.tasks.names() if hasattr(registry.tasks.get(n), "vectors")]
        raise JacobianSpecProblem(
            "model.kind",
            f"given 'mlp': an MLP reads each example as a vector, and task {spec.task.name!r} has none; "
            f"tasks that do: {', '.join(offering)}",
        )
    width, classes = task_class.vector_width, task_class.n_classes
    if model.sizes[0] != width or model.sizes[-1] != classes:
        raise JacobianSpecProblem(
            "model.sizes",
            f"given {model.sizes}: task {spec.task.name!r} has inputs of width {width} and {classes} classes, "
            f"so sizes must start with {width} and end with {classes}",
        )
    if spec.jacobian is None:
        raise JacobianSpecProblem(
            "jacobian",
            "an mlp model runs only the training-Jacobian study: add a jacobian: section (docs/jacobian.md)",
        )


def check_jacobian_spec(spec: Spec) -> None:
    if getattr(spec.model, "kind", None) == "mlp":
        _check_mlp(spec, spec.model)
    study = spec.jacobian
    if study is None:
        return
    if spec.measures:
        raise JacobianSpecProblem(
            "measures",
            f"given {[m.name for m in spec.measures]}: the Jacobian study measures no steps; allowed: [] (or leave it out)",
        )
    training = spec.training
    if training.optimizer.name != "sgd":
        raise JacobianSpecProblem(
            "training.optimizer.name",
            f"given {training.optimizer.name!r}: the Jacobian study differentiates SGD (with momentum) through the loop; allowed: sgd",
        )
    if training.autocast is not None:
        raise JacobianSpecProblem(
            "training.autocast",
            f"given {training.autocast!r}: the Jacobian study needs a deterministic loop in full precision; allowed: null",
        )
    if training.device not in JACOBIAN_DEVICES:
        raise JacobianSpecProblem(
            "training.device",
            f"given {training.device!r}: the Jacobian study runs on the CPU, where its kernels are deterministic; "
            f"allowed: {', '.join(JACOBIAN_DEVICES)}",
        )
    n, exact = parameter_count(spec)
    at_least = "" if exact else "at least "
    if study.mode == "exact" and n > study.max_exact_params and not study.force:
        gib = n * n * 4 / 2**30
        raise JacobianSpecProblem(
            "jacobian.mode",
            f"given 'exact' for a model of {at_least}{n:,} parameters, above jacobian.max_exact_params "
            f"({study.max_exact_params:,}): J alone is {gib:.1f} GiB; use mode: sketch, or set jacobian.force: true",
        )
    if study.mode == "sketch" and exact and study.rank + study.oversample > n:
        raise JacobianSpecProblem(
            "jacobian.rank",
            f"given {study.rank} (+ oversample {study.oversample}): a sketch cannot have more directions than the "
            f"model's {n:,} parameters; allowed: rank + oversample <= {n:,}",
        )
    if study.retrain is not None and study.retrain.dims and exact:
        too_big = [k for k in study.retrain.dims if k > (n if study.mode == "exact" else study.rank)]
        if too_big:
            limit = n if study.mode == "exact" else study.rank
            raise JacobianSpecProblem(
                "jacobian.retrain.dims",
                f"given {too_big}: a subspace has at most {limit:,} directions here "
                f"({'the parameter count' if study.mode == 'exact' else 'the sketch rank'}); allowed: 1..{limit:,}",
            )
