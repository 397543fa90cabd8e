"""Tasks written as text for a pretrained tokenizer: prompts and answers that decode back to the rendered text,
few-shot prefixes, feature labels where the answer's tokens line up, and multiple-choice scoring."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from emergence import registry
from emergence.measures.behavior import choice_scores, choice_values
from emergence.tasks.base import NO_LABEL
from emergence.tasks.build import resolve_params
from emergence.tasks.text import SHOT_SEPARATOR, build_text_task, render

REPO = Path(__file__).resolve().parents[2]


def word_tokenizer(task_name: str):  # noqa: ANN201 - the series example's tokenizer over the task's words
    maker = importlib.util.spec_from_file_location("checkpoint_series", REPO / "examples" / "checkpoint_series.py")
    module = importlib.util.module_from_spec(maker)
    maker.loader.exec_module(module)  # type: ignore[union-attr]
    task = registry.tasks.get(task_name)()
    params = resolve_params(task, 1, {})
    raws = task.random_inputs(params, np.random.default_rng(0), 2000)
    return module.word_tokenizer(["".join(render(task, raw, params)) for raw in raws])


@pytest.fixture(scope="module")
def puzzles():  # noqa: ANN201
    tokenizer = word_tokenizer("logical_deduction")
    return tokenizer, build_text_task("logical_deduction", 1, {}, 8, 40, 16, 0, tokenizer, shots=2, choices=True)


def decoded(tokenizer, ids: torch.Tensor) -> str:  # noqa: ANN001
    return tokenizer.decode(ids.tolist())


def test_prompts_and_answers_are_the_rendered_text_after_the_shots(puzzles) -> None:  # noqa: ANN001
    tokenizer, text = puzzles
    test = text.data.test
    assert len(text.shots) == 2 and len(test) == 40 and len(text.data.diagnostic) == 16
    shots = "".join(p + a + SHOT_SEPARATOR for p, a in text.shots)
    for i in range(3):
        prompt = test.tokens[i, : int(test.prompt_len[i])]
        answer = test.tokens[i, int(test.prompt_len[i]) : int(test.prompt_len[i] + test.answer_len[i])]
        expected_prompt, expected_answer = text.examples[i]
        assert decoded(tokenizer, prompt).split() == (shots + expected_prompt).split()
        assert decoded(tokenizer, answer).split() == expected_answer.split()
    # The shots are solved examples of the same task, not among the scored ones.
    assert all(shot_prompt not in (p for p, _ in text.examples) for shot_prompt, _ in text.shots)


def test_feature_labels_follow_the_answer_only_where_its_tokens_line_up(puzzles) -> None:  # noqa: ANN001
    _, text = puzzles
    # " red book" is two tokens for the task's one: only the label read at the end of the prompt is kept.
    position = text.data.test.features["position/0"]
    assert (position[:, 0] != NO_LABEL).all() and (position[:, 1:] == NO_LABEL).all()
    tokenizer = word_tokenizer("sort")
    sort = build_text_task("sort", 1, {}, 8, 20, 8, 0, tokenizer)
    ranks = sort.data.test.features["count_smaller"]
    width = int(sort.data.test.answer_len.max())
    assert ranks.shape[1] == width and (ranks != NO_LABEL).all()  # one token per sorted symbol: every label kept


class Favours(torch.nn.Module):
    """Logits that favour one token everywhere: its choices are always the candidate that holds that token."""

    def __init__(self, vocab: int, token: int) -> None:
        super().__init__()
        self.bias = torch.zeros(vocab)
        self.bias[token] = 5.0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(*tokens.shape, -1)


def test_choice_scoring_picks_the_most_likely_continuation(puzzles) -> None:  # noqa: ANN001
    tokenizer, text = puzzles
    choices, test = text.test_choices, text.data.test
    red = tokenizer.convert_tokens_to_ids("red")
    model = Favours(len(tokenizer), red)
    values = choice_values(model, test, choices, "test", torch.device("cpu"), tokenizer.pad_token_id)
    red_is_right = [choices.candidates[i][choices.correct[i]][0] == red for i in range(len(test))]
    offers_red = [any(c[0] == red for c in choices.candidates[i]) for i in range(len(test))]
    # Where red is offered the model picks it; elsewhere every candidate is equally likely and the first one wins.
    picked_first = [not offers_red[i] and choices.correct[i] == 0 for i in range(len(test))]
    assert values["behavior/test/choice_accuracy"] == pytest.approx((sum(red_is_right) + sum(picked_first)) / len(test))
    # Each candidate's score is the summed log-probability of its tokens after the prompt, as computed here.
    scores = choice_scores(model, test, choices, torch.device("cpu"), tokenizer.pad_token_id)
    log_probs = torch.log_softmax(model.bias, 0)
    for i in range(3):
        for k, candidate in enumerate(choices.candidates[i]):
            assert scores[i][k] == pytest.approx(float(sum(log_probs[t] for t in candidate)), rel=1e-5)
