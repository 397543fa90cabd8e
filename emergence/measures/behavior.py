"""Behaviour: answer loss, teacher-forced token accuracy and greedy exact match.

Greedy exact match is computed from one teacher-forced forward pass. This is exact, not an
approximation: greedy decoding reproduces the answer iff every generated token equals the target;
as long as all earlier tokens matched, the decoder's context *is* the teacher-forced context, so the
answer is reproduced iff the teacher-forced argmax equals the target at every answer position.
``greedy_decode`` does the autoregressive loop for display and for the test that checks this.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from emergence.tasks.base import Split
from emergence.tasks.text import Choices
from emergence.train.loop import autocast_context

EVAL_CHUNK = 1024


@torch.inference_mode()
def answer_statistics(
    model: torch.nn.Module,
    split: Split,
    device: torch.device,
    autocast: str | None = None,
    hooks: Callable[[Split], list[tuple[str, Callable[..., Any]]]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per example: summed answer loss, correct answer tokens, and whether every answer token is right.

    ``hooks(chunk)`` gives forward hooks for one chunk of examples (an intervention such as an ablation);
    exact match stays equal to greedy decoding under any hook that acts on each position from the prefix
    alone, by the argument in the module docstring."""
    model.eval()
    losses, correct, exact = [], [], []
    for start in range(0, len(split), EVAL_CHUNK):
        chunk = split.subset(torch.arange(start, min(start + EVAL_CHUNK, len(split))))
        tokens = chunk.tokens.to(device)
        mask = chunk.target_mask.to(device)[:, 1:]
        with autocast_context(device, autocast):
            if hooks is None:
                logits = model(tokens)[:, :-1].float()
            else:
                logits = model.run_with_hooks(tokens, fwd_hooks=hooks(chunk))[:, :-1].float()
        targets = tokens[:, 1:]
        token_loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        hits = (logits.argmax(-1) == targets) & mask
        losses.append((token_loss * mask).sum(1).cpu())
        correct.append(hits.sum(1).cpu())
        exact.append((hits.sum(1) == mask.sum(1)).cpu())
    return torch.cat(losses), torch.cat(correct), torch.cat(exact)


def behavior_values(
    model: torch.nn.Module, split: Split, split_name: str, device: torch.device, autocast: str | None = None
) -> dict[str, float]:
    loss, correct, exact = answer_statistics(model, split, device, autocast)
    answer_tokens = split.answer_len.to(loss.dtype)
    prefix = f"behavior/{split_name}"
    values = {
        f"{prefix}/loss": float(loss.sum() / answer_tokens.sum()),
        f"{prefix}/token_accuracy": float(correct.sum() / answer_tokens.sum()),
        f"{prefix}/exact_match": float(exact.float().mean()),
    }
    levels = split.level.unique().tolist()
    if len(levels) > 1:
        for level in levels:
            at_level = split.level == level
            values[f"{prefix}/exact_match/level_{level}"] = float(exact[at_level].float().mean())
            values[f"{prefix}/loss/level_{level}"] = float(loss[at_level].sum() / answer_tokens[at_level].sum())
    return values


@torch.no_grad()
def greedy_decode(model: torch.nn.Module, prompt: torch.Tensor, answer_len: int, device: torch.device) -> torch.Tensor:
    """Generate ``answer_len`` tokens after each prompt (all prompts the same length), one at a time."""
    model.eval()
    sequence = prompt.to(device)
    for _ in range(answer_len):
        next_token = model(sequence)[:, -1].argmax(-1, keepdim=True)
        sequence = torch.cat([sequence, next_token], dim=1)
    return sequence[:, prompt.shape[1] :].cpu()


CHOICE_CHUNK = 64  # candidate sequences per forward pass


@torch.inference_mode()
def choice_scores(model: torch.nn.Module, split: Split, choices: Choices, device: torch.device, pad_id: int) -> list[list[float]]:
    """For each example, each candidate continuation's summed log-probability after the example's prompt."""
    model.eval()
    rows = []  # (example, candidate, token ids, where the candidate starts)
    for i, candidates in enumerate(choices.candidates):
        prompt = split.tokens[i, : int(split.prompt_len[i])].tolist()
        rows += [(i, k, prompt + candidate, len(prompt)) for k, candidate in enumerate(candidates)]
    scores = [[0.0] * len(c) for c in choices.candidates]
    for start in range(0, len(rows), CHOICE_CHUNK):
        chunk = rows[start : start + CHOICE_CHUNK]
        width = max(len(ids) for _, _, ids, _ in chunk)
        tokens = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for row, (_, _, ids, _) in enumerate(chunk):
            tokens[row, : len(ids)] = torch.tensor(ids)
        log_probs = torch.log_softmax(model(tokens.to(device)).float(), dim=-1).cpu()
        for row, (i, k, ids, begin) in enumerate(chunk):
            positions = torch.arange(begin - 1, len(ids) - 1)  # position t-1 predicts token t
            scores[i][k] = float(log_probs[row, positions, torch.tensor(ids[begin:])].sum())
    return scores


def choice_values(
    model: torch.nn.Module, split: Split, choices: Choices, split_name: str, device: torch.device, pad_id: int
) -> dict[str, float]:
    """Multiple-choice accuracy (the most likely candidate is the right one) and the mean log-probability
    margin of the right candidate over the best wrong one."""
    scores = choice_scores(model, split, choices, device, pad_id)
    right = [s[c] for s, c in zip(scores, choices.correct, strict=True)]
    best_wrong = [max(v for k, v in enumerate(s) if k != c) for s, c in zip(scores, choices.correct, strict=True)]
    hits = [max(range(len(s)), key=s.__getitem__) == c for s, c in zip(scores, choices.correct, strict=True)]
    prefix = f"behavior/{split_name}"
    return {
        f"{prefix}/choice_accuracy": sum(hits) / len(hits),
        f"{prefix}/choice_margin": sum(r - w for r, w in zip(right, best_wrong, strict=True)) / len(right),
    }
