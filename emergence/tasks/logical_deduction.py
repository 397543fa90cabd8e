"""Logical deduction: ordering puzzles in the style of BIG-Bench-Hard's ``logical_deduction``.

A hidden left-to-right order of n coloured books is described by clues ("red is left of blue", "green is
at position 2") until exactly one order fits; the question asks which book is at a position. The same
puzzle renders two ways: as a short token sequence for training small models (:meth:`example`) and as
English prose for prompting pretrained checkpoints (:meth:`render_text`).

A raw input is ``(books, order, clues, question)``: ``books`` the names in the order the prompt lists
them, ``order[p]`` the index (into ``books``) of the book at position ``p`` (0-based, left to right),
``clues`` a tuple of ``("left", i, j)`` (book i somewhere left of book j) and ``("at", i, p)`` (book i at
position p), and ``question`` the position asked about.
"""

from __future__ import annotations

from functools import cache
from itertools import permutations
from math import comb, factorial
from typing import Any, ClassVar

import numpy as np

from emergence import registry
from emergence.tasks.base import EOS, PAD, Example, TaskInputError, Vocab

BOOKS = ("red", "orange", "yellow", "green", "blue", "purple", "grey")
MAX_OBJECTS = len(BOOKS)
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven")

Clue = tuple[str, int, int]
RawPuzzle = tuple[tuple[str, ...], tuple[int, ...], tuple[Clue, ...], int]


@cache
def _puzzle_tables(n: int) -> tuple[tuple[tuple[int, ...], ...], list[list[Clue]], list[list[int]], np.ndarray]:
    """Every order of n books; for each order its true clues and, per clue, the set of orders it allows.

    Sets of orders are Python integers with one bit per order, so narrowing the candidates by a clue is
    one AND of at most 5,040 bits instead of a loop over the orders. Every order has the same number of
    true clues (n absolute, n(n-1)/2 relative), always listed absolute first, so one weight row serves all.
    """
    orders = tuple(permutations(range(n)))
    masks: dict[Clue, int] = {}
    for bit, order in enumerate(orders):
        position = {book: p for p, book in enumerate(order)}
        for i in range(n):
            masks[("at", i, position[i])] = masks.get(("at", i, position[i]), 0) | (1 << bit)
            for j in range(n):
                if i != j and position[i] < position[j]:
                    masks[("left", i, j)] = masks.get(("left", i, j), 0) | (1 << bit)
    true_clues: list[list[Clue]] = []
    for order in orders:
        clues: list[Clue] = [("at", book, p) for p, book in enumerate(order)]
        clues += [("left", order[p], order[q]) for p in range(n) for q in range(p + 1, n)]
        true_clues.append(clues)
    true_masks = [[masks[clue] for clue in clues] for clues in true_clues]
    # Relative clues three times as likely to come first as absolute ones: BIG-Bench-Hard leans on "left of".
    weights = np.array([1.0] * n + [3.0] * (n * (n - 1) // 2))
    return orders, true_clues, true_masks, weights


def _with_article(book: str) -> str:
    return f"{'an' if book[0] in 'aeiou' else 'a'} {book} book"


@registry.tasks.register("logical_deduction")
class LogicalDeduction:
    name: ClassVar[str] = "logical_deduction"
    description: ClassVar[str] = "books : clues ? position = book; clues `x < y` (x left of y) and `x @ p` (x at position p)"
    levels: ClassVar[dict[int, dict[str, Any]]] = {1: {"n_objects": 3}, 2: {"n_objects": 5}, 3: {"n_objects": 7}}
    level_notes: ClassVar[dict[int, str]] = {
        1: "3 books, BIG-Bench-Hard's logical_deduction_three_objects: two or three clues",
        2: "5 books (five_objects): about five clues, often chained",
        3: "7 books (seven_objects): about seven clues; pretrained models fall near chance here",
    }
    feature_names: ClassVar[tuple[str, ...]] = ("position", "clue_count")
    feature_notes: ClassVar[dict[str, str]] = {
        "position": "position/i: position (1 = leftmost) of the i-th listed book, at the position predicting the answer",
        "clue_count": "how many clues the puzzle needed, at the position predicting the answer",
    }
    # The number of distinct clue sets per hidden order has no closed form; input_space_size is a lower bound.
    input_space_exact: ClassVar[bool] = False

    def default_params(self, level: int) -> dict[str, Any]:
        return dict(self.levels[level])

    def _check(self, params: dict[str, Any]) -> int:
        n = params["n_objects"]
        if not isinstance(n, int) or not 2 <= n <= MAX_OBJECTS:
            raise TaskInputError("params.n_objects", f"n_objects must be an integer from 2 to {MAX_OBJECTS}, got {n!r}")
        return n

    def vocab(self, params: dict[str, Any]) -> Vocab:
        positions = tuple(str(p) for p in range(1, MAX_OBJECTS + 1))
        return Vocab((*BOOKS, *positions, ":", "<", "@", ",", "?", "=", EOS, PAD))

    def input_space_size(self, params: dict[str, Any]) -> int:
        # Which books, the order the prompt lists them, the hidden order and the question are all free, and
        # two puzzles that differ in any of them differ as token sequences (the clues pin the hidden order).
        n = self._check(params)
        return comb(MAX_OBJECTS, n) * factorial(n) * factorial(n) * n

    def chance_exact_match(self, params: dict[str, Any]) -> float:
        return 1.0 / self._check(params)  # a guess among the n listed books

    def enumerate_inputs(self, params: dict[str, Any]) -> list[RawPuzzle]:
        raise NotImplementedError("logical_deduction's input space is only bounded below; inputs are always sampled")

    def random_inputs(self, params: dict[str, Any], rng: np.random.Generator, n: int) -> list[RawPuzzle]:
        n_objects = self._check(params)
        orders, true_clues, true_masks, weights = _puzzle_tables(n_objects)
        listed = np.argsort(rng.random((n, MAX_OBJECTS)), axis=1)[:, :n_objects]  # which books, in listing order
        hidden = rng.integers(len(orders), size=n)
        # A weighted random order of the true clues for every puzzle at once (Efraimidis-Spirakis keys).
        clue_order = np.argsort(-np.log(rng.random((n, len(weights)))) / weights, axis=1).tolist()
        questions = rng.integers(n_objects, size=n).tolist()
        everything = (1 << len(orders)) - 1
        puzzles = []
        for k in range(n):
            clues_k, masks_k = true_clues[hidden[k]], true_masks[hidden[k]]
            candidates, clues = everything, []
            for c in clue_order[k]:
                narrowed = candidates & masks_k[c]
                if narrowed != candidates:  # keep only clues that rule something out: no redundant clues
                    clues.append(clues_k[c])
                    candidates = narrowed
                    if candidates.bit_count() == 1:
                        break
            books = tuple(BOOKS[b] for b in listed[k])
            puzzles.append((books, orders[hidden[k]], tuple(clues), questions[k]))
        return puzzles

    def answer_of(self, raw: RawPuzzle) -> str:
        books, order, _, question = raw
        return books[order[question]]

    def example(self, raw: RawPuzzle, params: dict[str, Any]) -> Example:
        books, order, clues, question = raw
        prompt = [*books, ":"]
        for k, (kind, i, other) in enumerate(clues):
            prompt += [books[i], "<", books[other]] if kind == "left" else [books[i], "@", str(other + 1)]
            prompt.append("," if k < len(clues) - 1 else "?")
        prompt += [str(question + 1), "="]
        position_of = {book: p for p, book in enumerate(order)}
        features: dict[str, list[int | None]] = {f"position/{i}": [position_of[i] + 1, None] for i in range(len(books))}
        features["clue_count"] = [len(clues), None]
        return Example(prompt=prompt, answer=[self.answer_of(raw), EOS], features=features)

    def render_text(self, raw: RawPuzzle) -> tuple[str, str]:
        """The puzzle as BIG-Bench-Hard-style English for a pretrained model: (prompt, expected continuation)."""
        books, _, clues, question = raw
        n = len(books)
        listed = ", ".join(_with_article(book) for book in books[:-1]) + f", and {_with_article(books[-1])}"
        sentences = [f"On a shelf, there are {NUMBER_WORDS[n]} books: {listed}. The books are arranged in a fixed order."]
        for kind, i, other in clues:
            if kind == "left":
                sentences.append(f"The {books[i]} book is to the left of the {books[other]} book.")
            elif other == n - 1:
                sentences.append(f"The {books[i]} book is the rightmost.")
            elif other == 0:
                sentences.append(f"The {books[i]} book is the leftmost.")
            else:
                sentences.append(f"The {books[i]} book is the {ORDINALS[other]} from the left.")
        where = "leftmost" if question == 0 else "rightmost" if question == n - 1 else f"{ORDINALS[question]} from the left"
        prompt = " ".join(sentences) + f"\nQuestion: Which book is the {where}?\nAnswer: The"
        return prompt, f" {self.answer_of(raw)} book"

    def text_choices(self, raw: RawPuzzle) -> tuple[list[str], int]:
        """The continuations a multiple-choice scoring weighs against each other (one per book, as the text
        answer writes them) and the index of the right one."""
        books = raw[0]
        return [f" {book} book" for book in books], books.index(self.answer_of(raw))
