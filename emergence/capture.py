"""One forward pass per measurement step, with only the hooks and token positions the measures need.

Each hook slices the positions it needs *inside* the forward pass and drops the rest, so memory grows
with the diagnostic set and the number of requests, not with sequence length: ``run_with_cache`` over
every hook and position would keep ``n_hooks x N x seq x d_model`` floats alive.
Hooks are registered by their legacy TransformerLens names (``blocks.{i}.hook_resid_post``); the bridge
resolves each to its canonical hook exactly once, so no tensor is captured twice under two names.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float

from emergence.tasks.base import Split

Site = Literal["embed", "resid_pre", "resid_mid", "resid_post"]
Position = Literal["last_input", "answer", "mean"]
SITES: tuple[str, ...] = ("embed", "resid_pre", "resid_mid", "resid_post")
POSITIONS: tuple[str, ...] = ("last_input", "answer", "mean")


@dataclass(frozen=True, order=True)
class CaptureRequest:
    """Activations at one hook site and layer, reduced to one choice of token positions.

    ``last_input``: the last prompt position (it predicts the first answer token), shape [N, d].
    ``answer``: every position that predicts an answer token, shape [N, max_answer_len, d] (zeros past
    an example's answer). ``mean``: mean over the example's prompt and answer positions, shape [N, d].
    """

    site: str
    layer: int
    position: str = "last_input"

    @property
    def hook_name(self) -> str:
        if self.site == "embed":
            return "hook_embed"
        return f"blocks.{self.layer}.hook_{self.site}"


def _reduce(activations: Float[torch.Tensor, "n seq d"], position: str, split: Split) -> torch.Tensor:
    rows = torch.arange(activations.shape[0], device=activations.device)
    prompt_len = split.prompt_len.to(activations.device)
    if position == "last_input":
        return activations[rows, prompt_len - 1].detach().float().cpu()
    if position == "answer":
        width = int(split.answer_len.max())
        offsets = torch.arange(width, device=activations.device)
        index = (prompt_len[:, None] - 1 + offsets).clamp(max=activations.shape[1] - 1)
        picked = activations[rows[:, None], index]
        valid = (offsets[None, :] < split.answer_len.to(activations.device)[:, None]).unsqueeze(-1)
        return (picked * valid).detach().float().cpu()
    length = (prompt_len + split.answer_len.to(activations.device)).clamp(max=activations.shape[1])
    within = (torch.arange(activations.shape[1], device=activations.device)[None, :] < length[:, None]).unsqueeze(-1)
    return ((activations * within).sum(1) / length[:, None]).detach().float().cpu()


@torch.no_grad()
def capture(
    model: torch.nn.Module, split: Split, requests: Iterable[CaptureRequest], device: torch.device
) -> tuple[torch.Tensor, dict[CaptureRequest, torch.Tensor]]:
    """Run ``split`` through ``model`` once; return the logits and each request's activations (float32, CPU)."""
    by_hook: dict[str, list[CaptureRequest]] = {}
    for request in sorted(set(requests)):
        by_hook.setdefault(request.hook_name, []).append(request)
    captured: dict[CaptureRequest, torch.Tensor] = {}

    def make_hook(wanted: list[CaptureRequest]):  # noqa: ANN202 - a TransformerLens hook function
        def hook(activations: torch.Tensor, hook: object) -> None:
            for request in wanted:
                captured[request] = _reduce(activations, request.position, split)

        return hook

    model.eval()
    logits = model.run_with_hooks(
        split.tokens.to(device), fwd_hooks=[(name, make_hook(wanted)) for name, wanted in by_hook.items()]
    )
    return logits, captured
