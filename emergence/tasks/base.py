"""The Task contract: what every algorithmic task hands to the rest of a run.

A task turns (level, params, sizes, seed) into token tensors. Every example is laid out as
``prompt tokens + answer tokens``, right-padded with ``<PAD>`` to a common length. The model is trained
to predict only the answer tokens: the target at sequence position ``t`` is predicted from position
``t - 1``. Intermediate-feature labels are aligned to the *answer* tokens: ``features[name][i, j]`` is
the label read at the position that predicts answer token ``j`` of example ``i`` (position
``prompt_len[i] - 1 + j``), which is where the model must already hold that quantity.

Feature labels are integer classes (they may be negative: running sums are). A position with nothing to
read is ``None`` in an :class:`Example` and :data:`NO_LABEL` in a :class:`Split`. A task lists feature
*families* in ``feature_names``; a family that is a vector per position (BFS queue membership of each
node) is stored as one scalar feature per component, named ``family/component`` (``queue/A``).

No torch is imported here or by the task classes (only a ``Split``'s methods use it), so a spec is
validated and ``emergence ls tasks`` answers without it; ``data.py`` makes the tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch
    from jaxtyping import Bool, Int

PAD = "<PAD>"
EOS = "<EOS>"
NO_LABEL = int(np.iinfo(np.int64).min)  # "nothing to read here"; far outside any real label, negative ones included


class TaskInputError(ValueError):
    """A task option that cannot work (too many examples for the input space, unknown parameter ...)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def int_param(params: dict[str, Any], name: str, low: int = 1, high: int | None = None, odd: bool = False) -> int:
    """``params[name]`` as an int in [low, high] (no upper bound when high is None), or TaskInputError naming it.

    Booleans and floats are refused, not truncated: ``n_digits: true`` in a spec is a mistake, not 1.
    """
    value = params[name]
    allowed = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    if odd:
        allowed = f"an odd {allowed.removeprefix('an ')} (so a majority never ties)"
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TaskInputError(f"params.{name}", f"{name} = {value!r}; allowed: {allowed}")
    if value < low or (high is not None and value > high) or (odd and value % 2 == 0):
        raise TaskInputError(f"params.{name}", f"{name} = {value}; allowed: {allowed}")
    return int(value)


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError(f"duplicate tokens in vocabulary {self.tokens}")

    @cached_property
    def index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    @property
    def pad_id(self) -> int:
        return self.tokens.index(PAD)

    def encode(self, tokens: list[str]) -> list[int]:
        index = self.index
        return [index[t] for t in tokens]

    def decode(self, ids: list[int] | torch.Tensor) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class Split:
    """One set of examples (train, test or diagnostic) as padded token tensors."""

    tokens: Int[torch.Tensor, "n seq"]
    prompt_len: Int[torch.Tensor, " n"]  # index of the first answer token
    answer_len: Int[torch.Tensor, " n"]  # answer tokens, EOS included
    level: Int[torch.Tensor, " n"]
    features: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [n, max_answer_len], NO_LABEL where none

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def target_mask(self) -> Bool[torch.Tensor, "n seq"]:
        """True at every sequence position whose token is an answer token (a training target)."""
        import torch  # here, not at the top: see the module docstring

        positions = torch.arange(self.tokens.shape[1])
        start = self.prompt_len[:, None]
        return (positions >= start) & (positions < start + self.answer_len[:, None])

    def subset(self, index: torch.Tensor | np.ndarray) -> Split:
        import torch

        index = torch.as_tensor(index, dtype=torch.long)
        return Split(
            tokens=self.tokens[index],
            prompt_len=self.prompt_len[index],
            answer_len=self.answer_len[index],
            level=self.level[index],
            features={k: v[index.numpy()] for k, v in self.features.items()},
        )


@dataclass
class TaskData:
    name: str
    vocab: Vocab
    train: Split
    test: Split
    diagnostic: Split
    levels: tuple[int, ...]
    input_space_size: int
    chance_exact_match: float  # exact match of a uniform guess over the answer space; the event threshold starts here
    params: dict[str, Any]  # every effective parameter, after the level preset and explicit overrides
    level_chance: dict[int, float] = field(default_factory=dict)  # chance exact match of each level on its own

    @property
    def seq_len(self) -> int:
        return int(max(s.tokens.shape[1] for s in (self.train, self.test, self.diagnostic)))


@dataclass(frozen=True)
class Example:
    """One example before tokenization: what ``emergence sample`` shows a person."""

    prompt: list[str]
    answer: list[str]  # ends with EOS
    features: dict[str, list[int | None]]  # name -> one label per answer token; None where there is nothing to read


class Task(Protocol):
    name: ClassVar[str]
    description: ClassVar[str]
    levels: ClassVar[dict[int, dict[str, Any]]]  # level -> the params it sets
    level_notes: ClassVar[dict[int, str]]
    feature_names: ClassVar[tuple[str, ...]]  # feature families; see the module docstring
    feature_notes: ClassVar[dict[str, str]]  # family -> what it is and where it is read

    def vocab(self, params: dict[str, Any]) -> Vocab: ...

    def input_space_size(self, params: dict[str, Any]) -> int:
        """How many distinct raw inputs there are.

        A task whose space cannot be counted exactly sets the optional ClassVar ``input_space_exact =
        False`` and returns a lower bound; ``enumerate_inputs`` is then never called and inputs are sampled.
        """
        ...

    def chance_exact_match(self, params: dict[str, Any]) -> float: ...

    def enumerate_inputs(self, params: dict[str, Any]) -> list[Any]:
        """Every raw input (hashable), in a fixed order: exactly the support of ``random_inputs``.

        Called only when ``input_space_size`` is at most ``build.ENUMERATION_LIMIT``.
        """
        ...

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[Any]:
        """n raw inputs (hashable) drawn from the task's input distribution; repeats allowed."""
        ...

    def example(self, raw_input: Any, params: dict[str, Any]) -> Example: ...

    def default_params(self, level: int) -> dict[str, Any]: ...
