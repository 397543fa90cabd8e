"""Build a TransformerLens 4 model (a TransformerBridge over a native model) from a spec, deterministically."""

from __future__ import annotations

import torch
from transformer_lens import TransformerBridge, TransformerBridgeConfig

from emergence.spec.schema import ModelSpec


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"training.device is {requested!r} but no CUDA device is available")
    return torch.device(requested)


def bridge_config(spec: ModelSpec, d_vocab: int, n_ctx: int, seed: int) -> TransformerBridgeConfig:
    d_head = spec.d_head or spec.d_model // spec.n_heads
    config = TransformerBridgeConfig(
        d_model=spec.d_model,
        d_head=d_head,
        n_layers=spec.n_layers,
        n_ctx=n_ctx,
        n_heads=spec.n_heads,
        d_mlp=spec.d_mlp or 4 * spec.d_model,
        d_vocab=d_vocab,
        act_fn=spec.act_fn,
        normalization_type=spec.normalization,
        positional_embedding_type=spec.positional_embedding,
    )
    config.seed = seed  # boot_native forks the RNG around init when seeded: same seed, same weights
    return config


def build_model(spec: ModelSpec, d_vocab: int, n_ctx: int, seed: int, device: torch.device) -> TransformerBridge:
    model = TransformerBridge.boot_native(bridge_config(spec, d_vocab, n_ctx, seed), device=device)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
