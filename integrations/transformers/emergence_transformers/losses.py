"""Ready-made ``loss_fn``s for Hugging Face models under ``EmergenceCallback`` (or ``emergence.Monitor``)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # the label Hugging Face losses skip (padding, a prompt that is given)


def causal_lm_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Each example's mean next-token cross-entropy over its labelled tokens, shape ``[n]``.

    ``batch`` is a tokenizer's output with ``labels`` (positions labelled ``-100`` are skipped), as the
    Trainer's data collators make it; position t predicts label t + 1, as in the models' own loss. One loss
    per example, so it serves the gradient ranks (which need per-example gradients) as well as the curvature
    and the LLC (which take the mean). An example with no labelled token has loss 0.
    """
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    logits = model(**inputs).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    per_token = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    counted = (labels != IGNORE_INDEX).sum(dim=1)
    return per_token.sum(dim=1) / counted.clamp(min=1)
