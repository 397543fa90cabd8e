"""Activations of any PyTorch model, by module path: what a Monitor captures on someone else's model.

A site is a path in ``model.named_modules()``, with ``*`` standing for one path component
(``transformer.h.*``, ``model.layers.*.mlp``, ``encoder.fc1``). A pattern whose ``*`` matches numbered
modules is a family of layers: ``transformer.h.*`` gives the family ``transformer.h`` with layers 0..n-1,
``model.layers.*.mlp`` the family ``model.layers.each.mlp``, so the keys read like a trained run's
(``geometry/rankme/transformer.h/L3``) and the analysis orders the layers. A path without ``*`` is a family
of one, layer 0.

On a TransformerLens model (a HookedTransformer or TransformerBridge) a trained run's site names work too:
``resid_post`` is the hook ``blocks.{i}.hook_resid_post`` of every layer, captured through ``run_with_hooks``,
and the keys are a trained run's (``geometry/rankme/resid_post/L1``).

Each forward hook reduces its module's output as soon as it is made (the last position, or the mean over
positions, of a ``[N, seq, d]`` output; an output with no sequence axis, ``[N, d]``, as it is) and keeps
nothing else, so memory grows with the diagnostic batch, not with the sequence length.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from emergence.batches import call_model
from emergence.capture import SITES, CaptureRequest

MODULE_POSITIONS = ("last_input", "mean")  # last_input: the last position, or the user's positions tensor


class MonitorInputError(ValueError):
    """Something a Monitor was given cannot work: a site that matches no module, a diagnostic batch the
    model cannot take, a measure that needs an input that was not given. Raised before any tracker run."""


@dataclass(frozen=True)
class ModuleSite:
    family: str  # the key's site part
    layer: int
    path: str  # the module in named_modules(), or a TransformerLens hook name when ``hook``
    hook: bool = False


def is_transformer_lens(model: torch.nn.Module) -> bool:
    """A HookedTransformer or TransformerBridge: hooks by name through ``run_with_hooks``, layers in ``cfg``."""
    return callable(getattr(model, "run_with_hooks", None)) and hasattr(getattr(model, "cfg", None), "n_layers")


def transformer_lens_sites(model: torch.nn.Module, site: str) -> list[ModuleSite]:
    """A trained run's site name (``resid_post`` ...) on a TransformerLens model: its hook in every layer, so the
    keys are a trained run's (``geometry/rankme/resid_post/L1``)."""
    if site == "embed":
        return [ModuleSite("embed", 0, "hook_embed", hook=True)]
    return [ModuleSite(site, layer, f"blocks.{layer}.hook_{site}", hook=True) for layer in range(model.cfg.n_layers)]


def pattern_regex(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + r"[^.]+".join(re.escape(part) for part in pattern.split("*")) + "$")


def match_sites(model: torch.nn.Module, pattern: str) -> list[ModuleSite]:
    """The modules ``pattern`` names in ``model``, as a family of layers; raises ``MonitorInputError``
    naming the closest module paths when it names none."""
    if pattern in SITES and is_transformer_lens(model):
        return transformer_lens_sites(model, pattern)
    names = [name for name, _ in model.named_modules() if name]
    regex = pattern_regex(pattern)
    matched = [name for name in names if regex.match(name)]
    if not matched:
        close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else f"; its modules begin {', '.join(names[:6])}"
        raise MonitorInputError(f"site {pattern!r} matches no module of {type(model).__name__}{hint}")
    if "*" not in pattern:
        return [ModuleSite(pattern, 0, matched[0])]
    wildcard = re.compile("^" + r"([^.]+)".join(re.escape(part) for part in pattern.split("*")) + "$")
    labels = [wildcard.match(name).group(1) for name in matched]  # type: ignore[union-attr]
    if all(label.isdigit() for label in labels):
        family = pattern.removesuffix(".*").replace("*", "each")
        return sorted((ModuleSite(family, int(label), name) for label, name in zip(labels, matched, strict=True)), key=lambda s: s.layer)
    # Named, not numbered (encoder.fc1, encoder.fc2): each a family of one.
    return [ModuleSite(name, 0, name) for name in matched]


def _tensor_of(output: Any) -> torch.Tensor:
    """A module's output as one tensor: the first tensor of a tuple, a list or an output object."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        output = list(output.values())
    elif hasattr(output, "to_tuple"):  # transformers' ModelOutput
        output = output.to_tuple()
    if isinstance(output, Sequence):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise MonitorInputError(f"a module returned {type(output).__name__}, which holds no tensor to capture")


def reduce_output(output: torch.Tensor, position: str, positions: torch.Tensor | None) -> torch.Tensor:
    """``[N, seq, d...]`` -> ``[N, d]`` at the chosen position; ``[N, d]`` as it is; float32 on the CPU."""
    if output.ndim == 2:
        return output.detach().float().cpu()
    if output.ndim < 2:
        raise MonitorInputError(f"a captured output of shape {tuple(output.shape)} has no example axis")
    flat = output.reshape(output.shape[0], output.shape[1], -1)
    if position == "mean":
        return flat.mean(1).detach().float().cpu()
    if positions is None:
        return flat[:, -1].detach().float().cpu()
    rows = torch.arange(flat.shape[0], device=flat.device)
    return flat[rows, positions.to(flat.device)].detach().float().cpu()


class ModuleCapture:
    """Forward hooks on the modules a set of ``CaptureRequest``s names (``site`` = family, ``layer``), one
    forward pass of the diagnostic batch, each output reduced inside its hook."""

    def __init__(self, model: torch.nn.Module, sites: Mapping[str, list[ModuleSite]], positions: torch.Tensor | None) -> None:
        self.model = model
        self.positions = positions
        self._modules = dict(model.named_modules())
        self._sites = {(site.family, site.layer): site for matched in sites.values() for site in matched}

    def __call__(self, inputs: Any, requests: Sequence[CaptureRequest]) -> dict[CaptureRequest, torch.Tensor]:
        captured: dict[CaptureRequest, torch.Tensor] = {}
        by_site: dict[ModuleSite, list[CaptureRequest]] = {}
        for request in sorted(set(requests)):
            site = self._sites.get((request.site, request.layer))
            if site is None:
                raise MonitorInputError(f"no module captured as {request.site} layer {request.layer}")
            by_site.setdefault(site, []).append(request)

        def reducer(wanted: list[CaptureRequest]) -> Callable[[Any], None]:
            def reduce(output: Any) -> None:
                tensor = _tensor_of(output)
                for request in wanted:
                    captured[request] = reduce_output(tensor, request.position, self.positions)

            return reduce

        module_sites = {site: reducer(wanted) for site, wanted in by_site.items() if not site.hook}
        hooks = [(site.path, transformer_lens_hook(reducer(wanted))) for site, wanted in by_site.items() if site.hook]
        handles = [self._modules[site.path].register_forward_hook(module_hook(reduce)) for site, reduce in module_sites.items()]
        was_training = self.model.training
        try:
            self.model.eval()
            with torch.no_grad():
                if hooks:
                    run_with_hooks(self.model, inputs, hooks)
                else:
                    call_model(self.model, inputs)
        finally:
            for handle in handles:
                handle.remove()
            self.model.train(was_training)
        return captured


def module_hook(reduce: Callable[[Any], None]) -> Callable[[torch.nn.Module, Any, Any], None]:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        reduce(output)

    return hook


def transformer_lens_hook(reduce: Callable[[Any], None]) -> Callable[[torch.Tensor, Any], None]:
    def hook(activations: torch.Tensor, hook: Any) -> None:
        reduce(activations)

    return hook


def run_with_hooks(model: torch.nn.Module, inputs: Any, hooks: list[tuple[str, Callable[..., None]]]) -> Any:
    """``call_model`` through a TransformerLens model's ``run_with_hooks``, with its hooks by name."""
    if isinstance(inputs, Mapping):
        return model.run_with_hooks(**inputs, fwd_hooks=hooks)
    if isinstance(inputs, tuple):
        return model.run_with_hooks(*inputs, fwd_hooks=hooks)
    return model.run_with_hooks(inputs, fwd_hooks=hooks)
