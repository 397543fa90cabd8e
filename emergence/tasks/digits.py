"""Handwritten digits: scikit-learn's bundled 8x8 images (1,797 of them, no download), one class per image.

The training-Jacobian study's data set (Belrose & Scherlis, arXiv 2412.07003). As a token task, an image is
its 64 pixel intensities (0..16, row by row) as tokens, then ``=``, then the digit and ``<EOS>``, so that
``emergence sample digits`` shows it and a transformer could learn it. A model that reads vectors (the plain
MLP) reads it through ``vectors``: the 64 intensities divided by 16, as the study does, and the digit.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from emergence import registry
from emergence.tasks.base import EOS, PAD, Example, Vocab

if TYPE_CHECKING:
    from emergence.tasks.base import Split

N_IMAGES = 1_797
N_PIXELS = 64
MAX_INTENSITY = 16
N_CLASSES = 10
INTENSITY_TOKENS = tuple(str(i) for i in range(MAX_INTENSITY + 1))  # the digit classes reuse "0".."9"


@cache
def _images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # here: listing or validating tasks needs no sklearn

    pixels, labels = load_digits(return_X_y=True)
    return pixels.astype(np.int64), labels.astype(np.int64)


@registry.tasks.register("digits")
class Digits:
    name: ClassVar[str] = "digits"
    description: ClassVar[str] = (
        "scikit-learn's 8x8 handwritten digits: 64 pixel intensities (0-16) -> the digit"
    )
    levels: ClassVar[dict[int, dict[str, Any]]] = {1: {}}
    level_notes: ClassVar[dict[int, str]] = {
        1: "all 1,797 images; the training-Jacobian study uses 1,600 to train, 197 to test"
    }
    feature_names: ClassVar[tuple[str, ...]] = ()
    feature_notes: ClassVar[dict[str, str]] = {}
    vector_width: ClassVar[int] = N_PIXELS  # what a vector model reads (see ``vectors``)
    n_classes: ClassVar[int] = N_CLASSES

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def vocab(self, params: dict[str, Any]) -> Vocab:
        return Vocab((*INTENSITY_TOKENS, "=", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        return N_IMAGES

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        return 1.0 / N_CLASSES

    def enumerate_inputs(self, params: dict[str, Any]) -> list[int]:
        return list(range(N_IMAGES))

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[int]:
        return rng.integers(0, N_IMAGES, size=n).tolist()

    def example(self, raw_input: int, params: dict[str, Any]) -> Example:
        pixels, labels = _images()
        return Example(
            prompt=[INTENSITY_TOKENS[v] for v in pixels[raw_input]] + ["="],
            answer=[str(labels[raw_input]), EOS],
            features={},
        )

    def vectors(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        """(intensities / 16 as float32 [n, 64], digit [n]) of a tokenized split, as the study feeds its MLP."""
        tokens = split.tokens.numpy()
        # Token i is the string str(i) for i <= 16: ids are intensities, and the answer's id is the digit.
        pixels = tokens[:, :N_PIXELS].astype(np.float32) / MAX_INTENSITY
        digits = tokens[np.arange(len(tokens)), split.prompt_len.numpy()]
        return pixels, digits.astype(np.int64)
