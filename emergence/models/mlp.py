"""A plain MLP (``model: {kind: mlp, sizes: [64, 64, 10], act: gelu_new}``): the training-Jacobian study's model.

Initialised as the study's Flax model (``flax.linen.Dense`` defaults): weights LeCun-normal, a normal of
variance 1/fan_in truncated at two standard deviations (rescaled so the variance stays 1/fan_in), and biases
normal with standard deviation 1/sqrt(hidden width), the last hidden width for the output layer too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),  # the tanh approximation; Flax's nn.gelu default
    "tanh": torch.tanh,
    "silu": F.silu,
}
TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


class MLP(nn.Module):
    def __init__(self, sizes: list[int], act: str) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Linear(fan_in, fan_out) for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False)
        )
        self.act = act

    def forward(self, x: Float[Tensor, "n d_in"]) -> Float[Tensor, "n d_out"]:
        activation = ACTIVATIONS[self.act]
        for layer in self.layers[:-1]:
            x = activation(layer(x))
        return self.layers[-1](x)


def mlp_parameters(sizes: list[int]) -> int:
    """Weights and biases of an MLP with these widths (input first, output last); no torch needed."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False))


def build_mlp(sizes: list[int], act: str, seed: int) -> MLP:
    generator = torch.Generator().manual_seed(seed)
    model = MLP(sizes, act)
    with torch.no_grad():
        for index, layer in enumerate(model.layers):
            std = layer.in_features**-0.5 / TRUNCATED_NORMAL_STD
            layer.weight.copy_(_truncated_normal(layer.weight.shape, std, generator))
            last = index == len(model.layers) - 1
            width = sizes[-2] if last else sizes[index + 1]  # the study reuses the last hidden layer's scale
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * width**-0.5)
    return model


def _truncated_normal(shape: torch.Size, std: float, generator: torch.Generator) -> Tensor:
    """A normal truncated to two standard deviations, by redrawing what falls outside (exact, seeded)."""
    sample = torch.randn(shape, generator=generator)
    outside = sample.abs() > 2
    while outside.any():
        sample[outside] = torch.randn(int(outside.sum()), generator=generator)
        outside = sample.abs() > 2
    return sample * std
