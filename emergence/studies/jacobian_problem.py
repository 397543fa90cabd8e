"""What the training-Jacobian study trains, built from a spec: the model, its initial parameters, the loss of
each step's batch, the learning rate of each step, and how a parameter vector does on the test set.

Two kinds of model: a plain MLP on a task that offers vectors (``digits``), with cross-entropy over the
classes as the study has it; and one of our transformers on a token task, with the answer-token loss of
``train/loop.py``. Either way the batches are ``train.loop.BatchOrder``'s (fixed by seed and step) and the
learning rates ``train.optim``'s, so the unrolled loop and ordinary training see the same run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from emergence import registry
from emergence.models import build_model
from emergence.models.mlp import build_mlp
from emergence.spec.schema import Spec
from emergence.studies.jacobian import ParameterLayout, SGDSchedule, StepLoss
from emergence.tasks import TaskData, build_task
from emergence.train.loop import BatchOrder, answer_loss
from emergence.train.optim import build_optimizer, build_scheduler, lr_multiplier

CPU = torch.device("cpu")


def class_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy written as logsumexp minus the target logit.

    The same number as ``F.cross_entropy``, but its backward has forward-mode formulas of its own: under
    ``jvp`` torch.func replaces log-softmax's backward with a decomposition that rounds differently, and the
    primal of the Jacobian pass would then drift from ordinary training in the last bit."""
    return (torch.logsumexp(logits, dim=-1) - logits.gather(1, labels[:, None])[:, 0]).mean()


@dataclass
class JacobianProblem:
    module: torch.nn.Module
    layout: ParameterLayout
    theta0: Tensor
    schedule: SGDSchedule
    step_loss: StepLoss
    evaluate: Callable[
        [dict[str, Tensor]], dict[str, float]
    ]  # params -> behaviour values (loss, exact match)
    task: TaskData
    kind: str  # mlp or transformer

    @property
    def n_params(self) -> int:
        return self.layout.total

    def test_loss(self, flat: Tensor) -> float:
        return self.evaluate(self.layout.unflatten(flat))["behavior/test/loss"]


def sgd_schedule(spec: Spec) -> SGDSchedule:
    training = spec.training
    lrs = tuple(
        training.optimizer.lr * lr_multiplier(training.lr_schedule, step, training.steps)
        for step in range(training.steps)
    )
    return SGDSchedule(lrs, training.optimizer.momentum, training.optimizer.weight_decay, training.grad_clip)


def build_problem(spec: Spec) -> JacobianProblem:
    t = spec.task
    task = build_task(
        t.name,
        t.level,
        t.params,
        t.train_size,
        t.test_size,
        t.diagnostic_size,
        spec.seed,
        train_features=False,
    )
    order = BatchOrder(len(task.train), spec.training.batch_size, spec.seed)
    batches = [
        order.indices(step) for step in range(spec.training.steps)
    ]  # fixed in advance: the loop is a function
    if spec.model.kind == "mlp":
        return _mlp_problem(spec, task, batches)
    return _transformer_problem(spec, task, batches)


def _mlp_problem(spec: Spec, task: TaskData, batches: list[Tensor]) -> JacobianProblem:
    task_class = registry.tasks.get(spec.task.name)()
    module = build_mlp(spec.model.sizes, spec.model.act, spec.seed)
    x_train, y_train = (torch.from_numpy(a) for a in task_class.vectors(task.train))
    splits = {
        name: tuple(torch.from_numpy(a) for a in task_class.vectors(getattr(task, name)))
        for name in ("train", "test")
    }

    def step_loss(params: dict[str, Tensor], step: int) -> Tensor:
        index = batches[step]
        return class_cross_entropy(functional_call(module, params, (x_train[index],)), y_train[index])

    @torch.no_grad()
    def evaluate(params: dict[str, Tensor]) -> dict[str, float]:
        values = {}
        for name, (x, y) in splits.items():
            logits = functional_call(module, params, (x,))
            values[f"behavior/{name}/loss"] = float(class_cross_entropy(logits, y))
            values[f"behavior/{name}/exact_match"] = float((logits.argmax(-1) == y).float().mean())
        return values

    return _problem(spec, module, step_loss, evaluate, task, "mlp")


def _transformer_problem(spec: Spec, task: TaskData, batches: list[Tensor]) -> JacobianProblem:
    module = build_model(spec.model, len(task.vocab), task.seq_len, spec.seed, CPU)
    tokens, mask = task.train.tokens, task.train.target_mask
    splits = {"train": task.train, "test": task.test}

    def step_loss(params: dict[str, Tensor], step: int) -> Tensor:
        index = batches[step]
        # tie_weights=False: a TransformerBridge's tied-weight handling would silently detach the parameters.
        logits = functional_call(module, params, (tokens[index],), tie_weights=False)
        return answer_loss(logits, tokens[index], mask[index])

    @torch.no_grad()
    def evaluate(params: dict[str, Tensor]) -> dict[str, float]:
        values = {}
        for name, split in splits.items():
            logits = functional_call(module, params, (split.tokens,), tie_weights=False)
            predicted, targets = logits[:, :-1], split.tokens[:, 1:]
            answer = split.target_mask[:, 1:]
            values[f"behavior/{name}/loss"] = float(
                F.cross_entropy(predicted[answer].float(), targets[answer])
            )
            hits = (predicted.argmax(-1) == targets) | ~answer
            values[f"behavior/{name}/exact_match"] = float(hits.all(dim=1).float().mean())
        return values

    return _problem(spec, module, step_loss, evaluate, task, "transformer")


def _problem(
    spec: Spec,
    module: torch.nn.Module,
    step_loss: StepLoss,
    evaluate: Callable[[dict[str, Tensor]], dict[str, float]],
    task: TaskData,
    kind: str,
) -> JacobianProblem:
    layout = ParameterLayout.of(module)
    theta0 = layout.flatten({name: p.detach() for name, p in module.named_parameters()}).clone()
    return JacobianProblem(module, layout, theta0, sgd_schedule(spec), step_loss, evaluate, task, kind)


def ordinary_training(
    problem: JacobianProblem, spec: Spec, on_step: Callable[[int, float, float], None] | None = None
) -> Tensor:
    """Train the problem's module in place the ordinary way (``torch.optim.SGD``, ``LambdaLR``,
    ``clip_grad_norm_``, ``loss.backward()``) from θ_0; returns θ_T flat. ``on_step(step, loss, lr)`` after
    each update (step counts updates done)."""
    module = problem.module
    with torch.no_grad():
        for name, value in problem.layout.unflatten(problem.theta0).items():
            module.get_parameter(name).copy_(value)
    parameters = list(module.parameters())
    optimizer = build_optimizer(spec.training.optimizer, parameters)
    scheduler = build_scheduler(spec.training.lr_schedule, optimizer, spec.training.steps)
    for step in range(spec.training.steps):
        loss = problem.step_loss(dict(module.named_parameters()), step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if spec.training.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, spec.training.grad_clip)
        lr = float(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        if on_step is not None:
            on_step(step + 1, float(loss.detach()), lr)
    return problem.layout.flatten({name: p.detach() for name, p in module.named_parameters()}).clone()
