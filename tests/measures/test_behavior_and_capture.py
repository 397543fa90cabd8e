"""Exact match from one teacher-forced pass equals greedy decoding; capture keeps only what is asked."""

from __future__ import annotations

import torch

from emergence.capture import CaptureRequest, capture
from emergence.measures.behavior import answer_statistics, greedy_decode
from emergence.models import build_model
from emergence.spec.schema import ModelSpec, TrainingSpec
from emergence.tasks import build_task
from emergence.train.loop import Trainer

CPU = torch.device("cpu")


def trained_tiny_model(steps: int):
    data = build_task("binary_addition", 1, {"n_bits": 3}, 48, 16, 8, 0)
    model = build_model(ModelSpec(n_layers=1, d_model=32, n_heads=2), len(data.vocab), data.seq_len, 0, CPU)
    if steps:
        trainer = Trainer(model, data.train, TrainingSpec(steps=steps, batch_size=None, optimizer={"lr": 3e-3}), 0, CPU)
        for _ in trainer.steps():
            pass
    return data, model


def test_teacher_forced_exact_match_equals_greedy_decoding():
    # A half-trained model gets some answers right and some wrong: the interesting case.
    data, model = trained_tiny_model(150)
    _, _, exact = answer_statistics(model, data.test, CPU)
    prompt_len, answer_len = int(data.test.prompt_len[0]), int(data.test.answer_len[0])
    generated = greedy_decode(model, data.test.tokens[:, :prompt_len], answer_len, CPU)
    greedy_exact = (generated == data.test.tokens[:, prompt_len : prompt_len + answer_len]).all(1)
    assert 0 < int(greedy_exact.sum()) < len(greedy_exact)  # otherwise the comparison proves little
    assert exact.tolist() == greedy_exact.tolist()


def test_capture_returns_requested_positions_matching_run_with_cache():
    data, model = trained_tiny_model(0)
    requests = [CaptureRequest("resid_post", 0, "last_input"), CaptureRequest("resid_pre", 0, "mean"), CaptureRequest("embed", 0, "answer")]
    logits, captured = capture(model, data.diagnostic, requests, CPU)
    _, cache = model.run_with_cache(data.diagnostic.tokens)
    last = data.diagnostic.prompt_len - 1
    rows = torch.arange(len(data.diagnostic))
    assert set(captured) == set(requests)
    assert torch.allclose(captured[requests[0]], cache["blocks.0.hook_resid_post"][rows, last])
    length = data.diagnostic.prompt_len + data.diagnostic.answer_len
    assert torch.allclose(captured[requests[1]], cache["blocks.0.hook_resid_pre"][:, : int(length[0])].mean(1), atol=1e-6)
    answer_positions = last[:, None] + torch.arange(int(data.diagnostic.answer_len[0]))
    assert torch.allclose(captured[requests[2]], cache["hook_embed"][rows[:, None], answer_positions])
    assert captured[requests[0]].shape == (len(data.diagnostic), 32)
    assert logits.shape[:2] == data.diagnostic.tokens.shape
