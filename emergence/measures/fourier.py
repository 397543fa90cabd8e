"""Fourier progress measures for modular arithmetic (Nanda et al., "Progress measures for grokking via
mechanistic interpretability", arXiv 2301.05217; METHODS.md, "Grokking settings").

A network that groks ``a + b mod p`` computes with a few *key frequencies* w_k = 2 pi k / p: it embeds each
residue x as cos(w_k x), sin(w_k x), and its logit for an answer c is a sum of cos(w_k (a + b - c)) over
them. Two ways to watch that algorithm form:

- **Online** (``compute``, on the schedule): the token embedding W_E of the p residue tokens, projected on
  the real Fourier basis of Z_p; its norm per frequency k = 1 .. (p - 1) / 2 (cos and sin together, so a
  shift of the residues, which only moves norm between them, changes nothing), and how concentrated that
  spectrum is: its Gini coefficient and the number of frequencies that carry ``embed_key_share`` of its energy.
- **After the run** (``after_run``): restricted and excluded loss at every saved checkpoint. For each answer
  c the logit is a function on the p x p grid of (a, b); because cos(w (a + b - c)) = cos(w (a + b)) cos(w c)
  + sin(w (a + b)) sin(w c), the algorithm's logits lie in the span of the constant and the two directions
  cos(w_k (a + b)), sin(w_k (a + b)) per key frequency: 1 + 2K directions of the p^2-dimensional space
  (17 for 8 frequencies). *Restricted* logits keep only those; *excluded* logits are the logits minus their
  2K non-constant directions. The key frequencies are the final model's: the fewest frequencies whose
  cos/sin(w (a + b)) components carry ``key_share`` (0.999) of the final logits' energy in all such
  components, unless the spec names them. Energy, not loss, picks them, and it is lopsided: on the p = 59
  grokking spec one frequency holds 98.8% of it and two more most of the rest, while restricted to that one
  frequency the test loss is 2.8 against 0.7 with three; hence a share this close to 1.

These directions are not the 2-D basis functions cos(w_i a) cos(w_j b), ... of a product of 1-D key
frequency sets: that mask keeps (1 + 2K)^2 components (289 for 8), among them the a - b and single-operand
terms the algorithm does not use, and inflates both losses. ``tests/measures/test_fourier.py`` holds the
operator against a direct sum over pairs and against that mask. For ``op: "-"`` every a + b above reads
a - b. Other operations have no such structure: the online spectrum still works, the losses are refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

from emergence import registry
from emergence.measures.base import Measure, MeasureContext, MeasureOptions, MeasureSetup, SavedWeights
from emergence.measures.parameters import evaluation_mode
from emergence.tasks.base import Split

TASK = "modular_arithmetic"
# The sign s of b in the answer a + s b (mod p): the operations whose logits live on cos/sin(w (a + s b)).
OPERAND_SIGN = {"+": 1, "-": -1}
EMBED_PREFIX = "fourier/embed"
KEY_FREQUENCY_TABLE = "fourier_key_frequencies"
PAIRS_PER_FORWARD = 4096  # bounds the activations of one forward pass (p = 113 has 12,769 pairs)


# -- the Fourier basis of Z_p ------------------------------------------------------------------------


def fourier_basis(p: int) -> Float[torch.Tensor, "p p"]:
    """The real Fourier basis of Z_p as orthonormal rows, in float64: row 0 the constant 1/sqrt(p), rows 2k - 1
    and 2k cos(w_k x) and sin(w_k x) times sqrt(2/p), w_k = 2 pi k / p, k = 1 .. (p - 1) / 2. For odd p these
    p rows are a complete orthonormal basis."""
    if p < 3 or p % 2 == 0:
        raise ValueError(f"the real Fourier basis here needs an odd modulus p >= 3, got {p}")
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.full((p,), 1 / math.sqrt(p), dtype=torch.float64)]
    for k in range(1, (p - 1) // 2 + 1):
        angle = 2 * math.pi * k * x / p
        rows += [torch.cos(angle) * math.sqrt(2 / p), torch.sin(angle) * math.sqrt(2 / p)]
    return torch.stack(rows)


def frequency_rows(frequencies: Sequence[int]) -> list[int]:
    """The rows of ``fourier_basis`` that hold the cos and sin of each frequency."""
    return [row for k in frequencies for row in (2 * k - 1, 2 * k)]


def frequency_energy(coefficients: Float[torch.Tensor, "p ..."]) -> Float[torch.Tensor, " k"]:
    """Squared norm per frequency k = 1 .. (p - 1) / 2 of coefficients on ``fourier_basis`` (rows first), cos
    and sin together and summed over every other axis; the constant (row 0) is left out."""
    energy = coefficients[1:].reshape(coefficients.shape[0] - 1, -1).pow(2).sum(-1)
    return energy[0::2] + energy[1::2]


def gini(values: Float[torch.Tensor, " n"]) -> float:
    """Gini coefficient of non-negative values: 0 when all are equal, (n - 1) / n when one holds everything."""
    ordered = torch.sort(values.double()).values
    n, total = ordered.numel(), float(ordered.sum())
    if total <= 0:
        return math.nan
    rank = torch.arange(1, n + 1, dtype=torch.float64)
    return float(((2 * rank - n - 1) * ordered).sum()) / (n * total)


def key_frequencies(energy: Float[torch.Tensor, " k"], share: float) -> list[int]:
    """The fewest frequencies (numbered from 1), largest energy first, whose energies add up to at least
    ``share`` of the total; returned in increasing order."""
    order = torch.argsort(energy, descending=True, stable=True)
    cumulative = torch.cumsum(energy[order], 0)
    count = int(torch.searchsorted(cumulative, share * float(cumulative[-1]))) + 1
    return sorted(int(k) + 1 for k in order[: min(count, len(order))])


def embedding_spectrum(w_e: Float[torch.Tensor, "p d_model"]) -> Float[torch.Tensor, " k"]:
    """The norm of the residue embedding at each frequency k = 1 .. (p - 1) / 2."""
    coefficients = fourier_basis(w_e.shape[0]) @ w_e.detach().double().cpu()
    return frequency_energy(coefficients).sqrt()


# -- restricted and excluded logits ----------------------------------------------------------------------


def answer_classes(p: int, sign: int) -> Int[torch.Tensor, "p p"]:
    """s[a, b] = (a + sign * b) mod p: the residue the answer is, and the variable the key directions read."""
    residues = torch.arange(p)
    return (residues[:, None] + sign * residues[None, :]) % p


def key_direction_part(
    logits: Float[torch.Tensor, "p p c"], frequencies: Sequence[int], sign: int
) -> tuple[Float[torch.Tensor, "p c"], Float[torch.Tensor, " c"]]:
    """The logits' projection on cos/sin(w_k (a + sign b)) for the given frequencies, as a function of
    s = a + sign b ([s, c]), and their constant (mean over all pairs) for each answer c.

    Every one of these directions depends on (a, b) only through s, and each value of s is taken by exactly p
    pairs; so projecting on them is averaging the logits over each class of s (the projection on all functions
    of s), then projecting that average on the 1-D Fourier rows of the frequencies."""
    p, answers = logits.shape[0], logits.shape[-1]
    flat = logits.reshape(p * p, answers).double()
    by_class = (
        torch.zeros(p, answers, dtype=torch.float64).index_add_(0, answer_classes(p, sign).reshape(-1), flat)
        / p
    )
    rows = fourier_basis(p)[frequency_rows(frequencies)]
    return rows.T @ (rows @ by_class), by_class.mean(0)


def restricted_and_excluded(
    logits: Float[torch.Tensor, "a b c"], frequencies: Sequence[int], sign: int = 1
) -> tuple[Float[torch.Tensor, "a b c"], Float[torch.Tensor, "a b c"]]:
    """Restricted logits (the constant and the 2K key directions kept, 1 + 2K components of the p^2 over
    (a, b), for each answer c) and excluded logits (those 2K non-constant directions removed), in float64."""
    p = logits.shape[0]
    key_part, constant = key_direction_part(logits, frequencies, sign)
    on_grid = key_part[answer_classes(p, sign)]  # [a, b, c]
    return constant + on_grid, logits.double() - on_grid


def logit_key_frequencies(
    logits: Float[torch.Tensor, "a b c"], share: float, sign: int = 1
) -> tuple[list[int], torch.Tensor]:
    """The fewest frequencies whose cos/sin(w (a + sign b)) components carry ``share`` of the logits' energy in
    all such components (every answer c together), and each frequency's share of it ([k])."""
    p = logits.shape[0]
    every = range(1, (p - 1) // 2 + 1)
    key_part, _ = key_direction_part(logits, every, sign)
    energy = frequency_energy(fourier_basis(p) @ key_part)
    return key_frequencies(energy, share), energy / energy.sum()


def residue_loss(logits: Float[torch.Tensor, "a b c"], pairs: Int[torch.Tensor, "n 2"], sign: int) -> float:
    """Mean cross-entropy over the p residues of the answers to ``pairs`` (a, b)."""
    p = logits.shape[0]
    a, b = pairs[:, 0], pairs[:, 1]
    return float(F.cross_entropy(logits[a, b].double(), (a + sign * b) % p))


# -- the measure --------------------------------------------------------------------------------------


class FourierModes(Measure, declared="fourier"):
    """Reads the run's modular arithmetic task: which token is residue x, the prompts of all p^2 pairs, and
    which pairs are training and test pairs."""

    needs_task = True

    def __init__(self, options: MeasureOptions, setup: MeasureSetup) -> None:
        super().__init__(options, setup)
        task = setup.task
        if task is None or task.name != TASK:
            raise ValueError(
                f"fourier: needs the {TASK} task (the Fourier basis of Z_p); given {getattr(task, 'name', None)!r}"
            )
        self.p, op = int(task.params["p"]), str(task.params["op"])
        fourier_basis(self.p)  # refuses an even modulus here, not at the first measurement
        # The task's vocabulary has one token per residue (and more, shared across levels): find each by name.
        self.residue_ids = torch.tensor([task.vocab.index[str(x)] for x in range(self.p)])
        self.sign = OPERAND_SIGN.get(op)
        self.key_frequencies = self.options.key_frequencies
        if self.key_frequencies is not None and max(self.key_frequencies) > (self.p - 1) // 2:
            raise ValueError(
                f"fourier: key_frequencies {self.key_frequencies} go above (p - 1) / 2 = {(self.p - 1) // 2}"
            )

    # -- online: the embedding's spectrum ----------------------------------------------------------------

    def compute(self, context: MeasureContext) -> dict[str, float]:
        w_e = getattr(context.model, "W_E", None)
        if w_e is None:
            raise ValueError("fourier: needs a TransformerLens model (W_E); this model has none")
        with torch.no_grad():
            norms = embedding_spectrum(w_e[self.residue_ids.to(w_e.device)])
        values = {
            f"{EMBED_PREFIX}/gini": gini(norms),
            f"{EMBED_PREFIX}/n_key": float(len(key_frequencies(norms.pow(2), self.options.embed_key_share))),
        }
        if self.options.per_frequency:
            values.update({f"{EMBED_PREFIX}/norm/k{k}": float(norm) for k, norm in enumerate(norms, start=1)})
        return values

    # -- after the run: restricted and excluded loss ----------------------------------------------------

    def after_run(self, saved: SavedWeights) -> dict[int, dict[str, float]]:
        if not self.options.progress_losses or self.sign is None or not saved.steps:
            return {}
        tokens, position, pair_of_prompt = self._all_pairs()
        splits = {
            name: self._split_pairs(getattr(self.setup.task, name), pair_of_prompt)
            for name in ("train", "test")
        }
        final_step = saved.steps[-1]
        final = self._residue_logits(saved.load(final_step), tokens, position)
        chosen, shares = logit_key_frequencies(final, self.options.key_share, self.sign)
        keys = self.key_frequencies or chosen
        saved.tables[KEY_FREQUENCY_TABLE] = (
            ["frequency", "share_of_final_logits", "key"],
            [[k, float(share), k in keys] for k, share in enumerate(shares.tolist(), start=1)],
        )
        values = {}
        for step in saved.steps:
            logits = final if step == final_step else self._residue_logits(saved.load(step), tokens, position)
            values[step] = self._losses(logits, keys, splits)
        values[final_step]["fourier/n_key_frequencies"] = float(len(keys))
        return values

    def _all_pairs(self) -> tuple[torch.Tensor, int, dict[tuple[int, ...], tuple[int, int]]]:
        """Every (a, b) prompt as the task writes it, in the order a * p + b; the position that predicts the
        answer; and each prompt's pair, to find the run's training and test pairs among them."""
        task_data = self.setup.task
        task = registry.tasks.get(TASK)()
        prompts = [
            task_data.vocab.encode(task.example((a, b), task_data.params).prompt)
            for a in range(self.p)
            for b in range(self.p)
        ]
        if len({len(prompt) for prompt in prompts}) != 1:
            raise ValueError("fourier: the task's prompts differ in length; one answer position is needed")
        pair_of_prompt = {tuple(prompt): divmod(i, self.p) for i, prompt in enumerate(prompts)}
        return torch.tensor(prompts), len(prompts[0]) - 1, pair_of_prompt

    @staticmethod
    def _split_pairs(
        split: Split, pair_of_prompt: dict[tuple[int, ...], tuple[int, int]]
    ) -> Int[torch.Tensor, "n 2"]:
        """The (a, b) of each example of ``split``, found by its prompt tokens rather than by their positions."""
        prompts = [tuple(split.tokens[i, : int(split.prompt_len[i])].tolist()) for i in range(len(split))]
        return torch.tensor([pair_of_prompt[prompt] for prompt in prompts], dtype=torch.long).reshape(-1, 2)

    def _residue_logits(
        self, model: torch.nn.Module, tokens: torch.Tensor, position: int
    ) -> Float[torch.Tensor, "a b c"]:
        """The logits of the p residue tokens at the answer position, for every pair: [a, b, c], float64."""
        device = self.setup.device
        chunks = []
        with evaluation_mode(model), torch.no_grad():
            for start in range(0, len(tokens), PAIRS_PER_FORWARD):
                logits = model(tokens[start : start + PAIRS_PER_FORWARD].to(device))
                chunks.append(logits[:, position, self.residue_ids.to(logits.device)].double().cpu())
        return torch.cat(chunks).reshape(self.p, self.p, self.p)

    def _losses(
        self, logits: torch.Tensor, keys: Sequence[int], splits: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        sign = self.sign or 1  # after_run computes no loss for an operation without a sign
        restricted, excluded = restricted_and_excluded(logits, keys, sign)
        values = {}
        for name, pairs in splits.items():
            if len(pairs) == 0:
                continue
            values[f"fourier/loss/{name}"] = residue_loss(logits, pairs, sign)
            values[f"fourier/restricted_loss/{name}"] = residue_loss(restricted, pairs, sign)
            values[f"fourier/excluded_loss/{name}"] = residue_loss(excluded, pairs, sign)
        return values
