"""The memory estimate (emergence/resources.py): exact parameter counts, activations no lower than what autograd
keeps, and a refusal, with the estimate and the fields to change, of a run that cannot fit, before anything exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emergence import resources
from emergence.models.build import build_model
from emergence.resources import check_memory, estimate_memory, task_shape, transformer_parameters
from emergence.spec import SpecError, resolve
from emergence.spec.schema import ModelSpec

REPO = Path(__file__).resolve().parents[1]
GIANT = ["model.d_model=65536", "model.n_layers=48", "model.n_heads=512", "model.d_mlp=null"]


@pytest.mark.parametrize(
    "shape",
    [
        {},
        {"normalization": "RMS", "d_head": 8},
        {"normalization": "LNPre", "positional_embedding": "rotary", "d_mlp": None},
        {"normalization": None, "n_heads": 4},
    ],
    ids=["LN", "RMS-d_head", "LNPre-rotary", "no-norm"],
)
def test_parameter_count_is_the_built_models(shape):
    model = ModelSpec(**{"n_layers": 2, "d_model": 32, "n_heads": 2, "d_mlp": 64, **shape})
    built = build_model(model, 11, 13, 0, torch.device("cpu"))
    assert transformer_parameters(model, 11, 13) == sum(p.numel() for p in built.parameters())


def test_the_estimate_counts_the_shipped_specs_model_exactly_and_its_activations_from_above():
    (run,) = resolve(str(REPO / "specs" / "tiny.yaml"))
    shape = task_shape(run.spec.task)
    estimate = estimate_memory(run.spec)
    assert estimate is not None
    model = build_model(run.spec.model, shape.vocab, shape.seq_len, 0, torch.device("cpu"))
    assert estimate.parameters == sum(p.numel() for p in model.parameters())

    # What autograd keeps for one training batch, as the loop computes it (logits, then cross-entropy).
    saved: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    batch = run.spec.training.batch_size
    tokens = torch.randint(0, shape.vocab, (batch, shape.seq_len))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        logits = model(tokens)
        torch.nn.functional.cross_entropy(logits.reshape(-1, shape.vocab).float(), tokens.reshape(-1))
    gradients = resources.FLOAT * estimate.parameters
    activations = estimate.phases["training step"] - gradients
    measured = sum(saved.values())
    assert measured <= activations <= 2 * measured, (measured, activations)


def test_a_model_that_cannot_fit_is_refused_with_the_estimate_and_the_fields_to_change():
    runs = resolve(str(REPO / "specs" / "addition.yaml"), GIANT)
    with pytest.raises(SpecError) as caught:
        check_memory(runs)
    text = caught.value.render()
    assert text.startswith(f"error: {REPO / 'specs' / 'addition.yaml'}: model.d_model: the run needs about ")
    for words in ("TiB of memory", "parameters x 3", "available (", "model.d_model, model.n_layers", "EMERGENCE_MEMORY_CHECK=off"):
        assert words in text, text


def test_the_shipped_addition_spec_fits():
    (run,) = resolve(str(REPO / "specs" / "addition.yaml"))
    check_memory([run])
    estimate = estimate_memory(run.spec)
    assert estimate is not None and estimate.total < 2**30  # about 0.2 GiB: the 2-layer d_model 64 model on 21,000 examples


def test_runs_a_pool_runs_at_once_must_fit_together(tiny_raw, write_spec, monkeypatch):
    tiny_raw["grid"] = {"seed": [0, 1, 2]}
    tiny_raw["execution"]["workers"] = 3
    runs = resolve(str(write_spec(tiny_raw)))
    one = max(estimate_memory(r.spec).total for r in runs)  # type: ignore[union-attr]
    monkeypatch.setattr(resources, "device_memory_available", lambda device: (int(2.5 * one), "a test's budget"))
    with pytest.raises(SpecError, match=r"execution\.workers: given 3: 3 runs at once need about .* at most 2 workers here"):
        check_memory(runs)
    tiny_raw["execution"]["workers"] = 2
    check_memory(resolve(str(write_spec(tiny_raw))))


def test_the_check_can_be_switched_off_and_skips_what_runs_elsewhere(monkeypatch):
    runs = resolve(str(REPO / "specs" / "addition.yaml"), GIANT)
    monkeypatch.setenv(resources.SWITCH_OFF, "off")
    check_memory(runs)
    monkeypatch.delenv(resources.SWITCH_OFF)
    check_memory(resolve(str(REPO / "specs" / "addition.yaml"), [*GIANT, "execution.executor=ray", "execution.address=auto"]))


def test_the_machine_reports_what_is_available():
    available = resources.cpu_memory_available()
    assert available is not None and available[0] > 0


def test_the_measurement_chunk_is_the_evaluations():
    from emergence.measures.behavior import EVAL_CHUNK

    assert resources.EVAL_CHUNK == EVAL_CHUNK


def test_a_run_on_cuda_is_held_to_the_devices_free_memory(monkeypatch):
    """No GPU here: torch.cuda answers as a device with 8 GiB free would (the path a CUDA machine takes)."""
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index: (asked.append(index), (8 * 2**30, 80 * 2**30))[1])
    assert resources.device_memory_available("auto") == (8 * 2**30, "free memory of cuda:0")
    assert resources.device_memory_available("cuda:1") == (8 * 2**30, "free memory of cuda:1")
    assert asked == [0, 1]
    assert "cuda" not in resources.device_memory_available("cpu")[1]  # the machine's memory, not the device's
    runs = resolve(str(REPO / "specs" / "addition.yaml"), GIANT)
    with pytest.raises(SpecError, match=r"more than the 8\.0 GiB available \(free memory of cuda:0\)"):
        check_memory(runs)
