"""The local learning coefficient (LLC) by SGLD around the current weights.

Definition in METHODS.md ("Gradient geometry and curvature"): SGLD samples the localized tempered
posterior ``exp(-nbeta L(w) - localization/2 |w - w*|^2)`` around the current weights ``w*`` and
``LLC = nbeta (E[L(w)] - L(w*))``, with ``L`` the answer loss (``answer_loss``) on a fixed subset of the
training split. For a regular model with d parameters at a minimum the answer is d/2.

The update rule is devinterp's (``SGMCMC.sgld``: Lau et al. 2023, ``dw = -lr/2 (nbeta grad L_m +
localization (w - w*)) + sqrt(lr) N(0, 1)``) and the default nbeta is devinterp's ``default_nbeta``.
The chain loop is ours, not devinterp's ``slt.sample``/``slt.llc.llc``, because those (2.0.1) take a
next-token loss over a Hugging Face ``input_ids`` column, write every per-token loss to a zarr store
in a temporary directory they never delete, reseed the global torch / numpy / random generators
(which would shift the training run's own random stream) and average the loss over burn-in steps
too. Here every random draw comes from local generators seeded by (run seed, step, chain), the
estimate uses draws after burn-in only, and the trace stays in memory.

The model is never touched: the chains move detached copies of its parameters that enter the
forward pass through ``functional_call(..., tie_weights=False)`` (a TransformerBridge that has run a
forward pass cannot be deep-copied, and the default ``tie_weights`` would silently detach).

Choosing lr, localization and nbeta for a model is ``emergence calibrate-llc`` (``studies/llc_calibration.py``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats
import torch
from devinterp.optim import SGMCMC
from devinterp.utils import default_nbeta
from torch.func import functional_call

from emergence.measures.base import (
    Measure,
    MeasureContext,
    MeasureOptions,
    MeasureSetup,
    fixed_subset,
    fixed_train_subset,
)
from emergence.measures.monitored_loss import MonitoredLoss
from emergence.measures.parameters import evaluation_mode
from emergence.train.loop import answer_loss

# loss_fn(params, example indices) -> mean loss over those examples, differentiable in params.
BatchLoss = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]

# One-sided level of the across-chain t-test on the trace's slope (see ``trace_rise``).
RISE_SIGNIFICANCE = 0.95
MIN_CHAINS_FOR_TEST = 3  # below this, each chain's own rise decides (see ``estimate_llc``)


@dataclass(frozen=True)
class SGLDSettings:
    lr: float  # SGLD step size epsilon
    localization: float  # gamma: pull towards the current weights
    nbeta: float  # inverse temperature n*beta
    num_chains: int
    num_draws: int
    num_burnin_steps: int


# -- pure pieces: batches, chains, estimate ---------------------------------------------------------


def batch_stream(n: int, batch_size: int, seed: int) -> Callable[[int], torch.Tensor]:
    """step -> example indices: epoch-wise shuffles drawn from (seed, epoch), the last partial batch of
    an epoch dropped (as devinterp does) so every step's loss averages the same number of examples.
    A batch size of n or more gives the whole set at every step (full-batch Langevin)."""
    size = min(batch_size, n)
    per_epoch = n // size
    cache: dict[int, torch.Tensor] = {}

    def at(step: int) -> torch.Tensor:
        epoch, index = divmod(step, per_epoch)
        if epoch not in cache:
            cache.clear()
            cache[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        return cache[epoch][index * size : (index + 1) * size]

    return at


@dataclass(frozen=True)
class SGLDTrace:
    loss: np.ndarray  # (chains, burn-in + draws): step t's minibatch loss at the weights before step t
    baseline: np.ndarray  # the same minibatches' loss at the starting weights w*


def sgld_loss_trace(
    loss_fn: BatchLoss,
    reference_loss: Callable[[torch.Tensor], float],
    params: dict[str, torch.Tensor],
    n: int,
    batch_size: int,
    settings: SGLDSettings,
    seed: int,
) -> SGLDTrace:
    """Minibatch losses along ``settings.num_chains`` SGLD chains started at ``params``.

    ``loss`` holds what devinterp records: step t's batch loss at the weights before step t's update.
    ``baseline`` holds ``reference_loss`` (the loss at ``params`` themselves) of the same batches: the
    difference is free of which examples a batch happened to hold, which is what lets the rise test see
    a drift that batch-to-batch noise would otherwise hide. A chain whose loss turns non-finite stops
    there and the rest of its row is NaN. Each chain has its own batch order and noise, both seeded
    from (``seed``, chain), so chains are independent; ``params`` themselves are only read.
    """
    steps = settings.num_burnin_steps + settings.num_draws
    loss = np.full((settings.num_chains, steps), np.nan)
    baseline = np.full((settings.num_chains, steps), np.nan)
    names = list(params)
    for chain in range(settings.num_chains):
        chain_seed = seed * 1_000_003 + 7919 * (chain + 1)
        batches = batch_stream(n, batch_size, chain_seed)
        leaves = [params[name].detach().clone().requires_grad_(True) for name in names]
        noise = torch.Generator(device=leaves[0].device).manual_seed(chain_seed)
        with warnings.catch_warnings():
            # SGMCMC warns whenever nbeta == 1.0, a legitimate value here (tests, calibration grids).
            warnings.simplefilter("ignore", UserWarning)
            optimizer = SGMCMC.sgld(leaves, lr=settings.lr, localization=settings.localization, nbeta=settings.nbeta)
        for step in range(steps):
            index = batches(step)
            with torch.enable_grad():
                value = loss_fn(dict(zip(names, leaves, strict=True)), index)
                if not math.isfinite(float(value.detach())):
                    break
                loss[chain, step] = float(value.detach())
                baseline[chain, step] = reference_loss(index)
                optimizer.zero_grad(set_to_none=True)
                value.backward()
            optimizer.step(noise_generator=noise)
    return SGLDTrace(loss, baseline)


@dataclass(frozen=True)
class LLCEstimate:
    mean: float  # over the finite chains; NaN when none is
    std: float  # population std over the finite chains (devinterp's llc_std convention)
    per_chain: np.ndarray  # (chains,), NaN for a chain that went non-finite
    init_loss: float  # L(w*) on the whole subset
    nbeta: float
    rise: float  # relative rise after burn-in; see trace_rise
    rising: bool
    non_finite: bool
    trace: np.ndarray  # (chains, burn-in + draws) minibatch losses
    baseline: np.ndarray  # the same minibatches' losses at w*
    num_burnin_steps: int

    @property
    def unreliable(self) -> bool:
        # A negative estimate means SGLD found lower loss near w*: w* is not a local minimum (at
        # initialisation, say), where the LLC's theory does not apply.
        return self.rising or self.non_finite or self.mean < 0


def trace_rise(excess: np.ndarray) -> tuple[float, bool]:
    """Is the loss still rising after burn-in? ``excess``: (chains, draws) of L_batch(w_t) - L_batch(w*).

    Returns (relative rise, significant). Each chain's rise d_c is the mean excess over the second half
    of the draws minus that over the first half; the relative rise is mean_c(d_c) over the mean excess
    of all draws, a fraction of E[L(w)] - L(w*), the quantity the LLC is proportional to (the caller
    compares it with its tolerance; a chain still climbing linearly from w* gives about 1, a flat one
    0). Significant: a one-sided t-test on the d_c across chains at ``RISE_SIGNIFICANCE``; chains are
    independent, so the test holds however autocorrelated each trace is (a test within one trace would
    not). Half-means rather than a slope: on SGLD traces the slope's noise hid most real rises
    (30% detected against 95%, at the same 5% false alarms on flat traces; see the tests). With one
    chain there is no test and only the size counts; fewer than 2 draws are never rising.
    """
    half = excess.shape[1] // 2
    if half < 1:
        return 0.0, False
    rises = excess[:, half:].mean(axis=1) - excess[:, :half].mean(axis=1)
    relative = float(rises.mean()) / max(abs(float(excess.mean())), 1e-12)
    if len(rises) < 2:
        return relative, True
    spread = float(rises.std(ddof=1))
    if spread == 0.0:
        return relative, bool(rises.mean() > 0)
    t = float(rises.mean()) / (spread / math.sqrt(len(rises)))
    return relative, t > float(scipy.stats.t.ppf(RISE_SIGNIFICANCE, len(rises) - 1))


def estimate_llc(trace: SGLDTrace, init_loss: float, nbeta: float, num_burnin_steps: int, rise_tolerance: float) -> LLCEstimate:
    """LLC = nbeta (mean minibatch loss over the draws - L(w*)) per chain; burn-in steps are dropped.

    Unreliable when a chain (or L(w*)) is non-finite, or when the excess loss after burn-in still rises
    by more than ``rise_tolerance`` of itself, significantly across chains (``trace_rise``); with fewer than
    3 chains, in every chain.
    """
    draws = trace.loss[:, num_burnin_steps:]
    finite_rows = np.isfinite(draws).all(axis=1)
    per_chain = np.where(finite_rows, nbeta * (draws.mean(axis=1) - init_loss), np.nan)
    finite = per_chain[finite_rows]
    non_finite = not bool(finite_rows.all()) or not math.isfinite(init_loss)
    if finite.size and math.isfinite(init_loss):
        excess = draws[finite_rows] - trace.baseline[finite_rows, num_burnin_steps:]
        relative, significant = trace_rise(excess)
        if excess.shape[0] < MIN_CHAINS_FOR_TEST:
            # A t-test across 2 chains has 1 degree of freedom and almost never rejects (critical t = 6.3):
            # on the addition plateau it let traces that climbed 60% pass as flat. Instead every chain must
            # rise by more than the tolerance on its own.
            half = excess.shape[1] // 2
            chain_rises = (excess[:, half:].mean(axis=1) - excess[:, :half].mean(axis=1)) / max(abs(float(excess.mean())), 1e-12)
            rising = half >= 1 and bool((chain_rises > rise_tolerance).all())
        else:
            rising = significant and relative > rise_tolerance
        mean, std = float(finite.mean()), float(finite.std())
    else:
        relative, rising, mean, std = math.nan, False, math.nan, math.nan
    return LLCEstimate(
        mean,
        std,
        per_chain,
        init_loss,
        nbeta,
        relative,
        rising,
        non_finite,
        trace.loss,
        trace.baseline,
        num_burnin_steps,
    )


# -- on a model ----------------------------------------------------------------------------------


def per_example_answer_loss(
    model: torch.nn.Module,
    params: dict[str, torch.Tensor],
    tokens: torch.Tensor,
    mask: torch.Tensor,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: the summed cross-entropy over its answer tokens, and how many there are (float64)."""
    sums, counts = [], []
    with torch.no_grad():
        for start in range(0, len(tokens), chunk):
            part = slice(start, start + chunk)
            logits = functional_call(model, params, (tokens[part],), tie_weights=False)
            log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            nll = -log_probs.gather(-1, tokens[part, 1:, None])[..., 0]
            target = mask[part, 1:]  # position t-1 predicts token t, as in answer_logits_and_targets
            sums.append((nll * target).sum(dim=1).double())
            counts.append(target.sum(dim=1).double())
    return torch.cat(sums), torch.cat(counts)


def model_llc(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    target_mask: torch.Tensor,
    settings: SGLDSettings,
    batch_size: int,
    seed: int,
    rise_tolerance: float,
) -> LLCEstimate:
    """LLC of ``model`` at its current weights on (tokens, target_mask), every trainable parameter
    sampled. Dropout is off during sampling (the loss must be a function of the weights) and every
    module's train/eval flag is restored after; the model's parameters, flags and grads are untouched."""
    trainable = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    with evaluation_mode(model):

        def loss_fn(params: dict[str, torch.Tensor], index: torch.Tensor) -> torch.Tensor:
            index = index.to(tokens.device)
            logits = functional_call(model, {**frozen, **params}, (tokens[index],), tie_weights=False)
            return answer_loss(logits, tokens[index], target_mask[index])

        # At w*, once: L(w*) over the whole subset (token-weighted, like one answer_loss over all of it)
        # and every batch's loss at w* without another forward pass.
        sums, counts = per_example_answer_loss(model, {**frozen, **trainable}, tokens, target_mask, batch_size)
        sums, counts = sums.cpu(), counts.cpu()
        init_loss = float(sums.sum() / counts.sum().clamp(min=1))

        def reference_loss(index: torch.Tensor) -> float:
            return float(sums[index].sum() / counts[index].sum().clamp(min=1))

        trace = sgld_loss_trace(loss_fn, reference_loss, trainable, len(tokens), batch_size, settings, seed)
    return estimate_llc(trace, init_loss, settings.nbeta, settings.num_burnin_steps, rise_tolerance)


def monitored_llc(
    model: torch.nn.Module,
    loss: MonitoredLoss,
    index: torch.Tensor,
    settings: SGLDSettings,
    batch_size: int,
    seed: int,
    rise_tolerance: float,
) -> LLCEstimate:
    """``model_llc`` for a monitored model: L is the user's mean loss (``loss_fn``) on the examples ``index``
    picks from the diagnostic batch, each example weighing the same. The loss at w* of each SGLD minibatch
    comes from per-example losses computed once when ``loss_fn`` gives them, else from one more forward pass."""
    trainable = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    at_start = {**frozen, **trainable}
    with evaluation_mode(model):

        def loss_fn(params: dict[str, torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
            return loss.mean({**frozen, **params}, index[batch])

        with torch.no_grad():
            if loss.per_example:
                start_losses = loss.losses(at_start, index).double().cpu()
                init_loss = float(start_losses.mean())

                def reference_loss(batch: torch.Tensor) -> float:
                    return float(start_losses[batch].mean())
            else:
                init_loss = float(loss.mean(at_start, index))

                def reference_loss(batch: torch.Tensor) -> float:
                    with torch.no_grad():
                        return float(loss.mean(at_start, index[batch]))

        trace = sgld_loss_trace(loss_fn, reference_loss, trainable, len(index), batch_size, settings, seed)
    return estimate_llc(trace, init_loss, settings.nbeta, settings.num_burnin_steps, rise_tolerance)


def resolve_nbeta(nbeta: float | None, batch_size: int, n_examples: int) -> float:
    """devinterp's default when unset: default_nbeta(m) = m / log m with m the SGLD batch size."""
    return float(nbeta) if nbeta is not None else float(default_nbeta(min(batch_size, n_examples)))


def measurement_seed(seed: int, step: int) -> int:
    return seed * 1_000_003 + step


# -- the measure ---------------------------------------------------------------------------------


class LLC(Measure, declared="llc"):
    needs_task = True  # SGLD on a fixed subset of the run's training data
    monitor_inputs = ("loss_fn",)  # under a Monitor: the user's mean loss on a fixed part of the diagnostic batch

    def __init__(self, options: MeasureOptions, setup: MeasureSetup) -> None:
        super().__init__(options, setup)
        if setup.loss is not None:
            self.index = fixed_subset(setup.loss.n, self.options.n_examples, setup.seed)
            n_examples = len(self.index)
        else:
            subset = fixed_train_subset(setup.task.train, self.options.n_examples, setup.seed)
            self.tokens = subset.tokens.to(setup.device)
            self.target_mask = subset.target_mask.to(setup.device)
            n_examples = len(self.tokens)
        self.nbeta = resolve_nbeta(self.options.nbeta, self.options.batch_size, n_examples)
        # The last estimate's loss trace (chains x (burn-in + draws)), for the run to store as an artifact.
        self.last_trace: np.ndarray | None = None
        self.last_estimate: LLCEstimate | None = None

    def settings(self) -> SGLDSettings:
        o = self.options
        return SGLDSettings(o.lr, o.localization, self.nbeta, o.num_chains, o.num_draws, o.num_burnin_steps)

    def compute(self, context: MeasureContext) -> dict[str, float]:
        seed = measurement_seed(self.setup.seed, context.step)
        o = self.options
        if self.setup.loss is not None:
            estimate = monitored_llc(
                context.model,
                self.setup.loss,
                self.index,
                self.settings(),
                o.batch_size,
                seed,
                o.rise_tolerance,
            )
        else:
            estimate = model_llc(
                context.model,
                self.tokens,
                self.target_mask,
                self.settings(),
                o.batch_size,
                seed,
                o.rise_tolerance,
            )
        self.last_trace, self.last_estimate = estimate.trace, estimate
        context.tables["llc_trace"] = trace_table(estimate)
        return estimate_values(estimate)


def trace_table(estimate: LLCEstimate) -> tuple[list[str], list[list[Any]]]:
    """One row per (chain, SGLD step): the loss, the same minibatch's loss at w*, and whether it is burn-in."""
    columns = ["chain", "sgld_step", "loss", "baseline", "burnin"]
    rows = [
        [
            chain,
            t,
            float(estimate.trace[chain, t]),
            float(estimate.baseline[chain, t]),
            t < estimate.num_burnin_steps,
        ]
        for chain in range(estimate.trace.shape[0])
        for t in range(estimate.trace.shape[1])
    ]
    return columns, rows


def estimate_values(estimate: LLCEstimate) -> dict[str, float]:
    values = {
        "llc/mean": estimate.mean,
        "llc/std": estimate.std,
        "llc/unreliable": float(estimate.unreliable),
        "llc/rise": estimate.rise,
        "llc/init_loss": estimate.init_loss,
        "llc/nbeta": estimate.nbeta,
    }
    values.update({f"llc/chain_{i}": float(v) for i, v in enumerate(estimate.per_chain)})
    return values
