"""Muon for the hidden matrices, AdamW for the rest: the split, each part's update, the schedule, resume."""

from __future__ import annotations

import pytest
import torch
import yaml

from emergence.models.build import build_model
from emergence.record import read_journal
from emergence.rundir import read_status, run_directory
from emergence.runner import run_one
from emergence.spec import resolve
from emergence.spec.identity import run_key
from emergence.spec.schema import LRScheduleSpec, ModelSpec, OptimizerSpec
from emergence.train import latest_checkpoint, load_checkpoint
from emergence.train.optim import MuonWithAdamW, build_optimizer, build_scheduler, muon_split

MUON = OptimizerSpec.model_validate({"name": "muon", "lr": 2e-3, "weight_decay": 0.5, "betas": [0.9, 0.98]})


def tiny_bridge(seed: int = 0) -> torch.nn.Module:
    spec = ModelSpec(n_layers=1, d_model=16, n_heads=2, d_mlp=32, normalization=None)
    return build_model(spec, d_vocab=11, n_ctx=4, seed=seed, device=torch.device("cpu"))


def short_names(model: torch.nn.Module, parameters: list[torch.nn.Parameter]) -> list[str]:
    names = {id(p): n.replace("._original_component", "") for n, p in model.named_parameters()}
    return [names[id(p)] for p in parameters]


def test_hidden_matrices_go_to_muon_and_everything_else_to_adamw():
    model = tiny_bridge()
    hidden, rest = muon_split(model, list(model.parameters()))
    assert short_names(model, hidden) == [f"layers.0.attn.{m}.weight" for m in "qkvo"] + ["layers.0.mlp.fc_in.weight", "layers.0.mlp.fc_out.weight"]
    # the embeddings and the unembedding are matrices too, but not hidden ones
    assert {"tok_embed.weight", "pos.weight", "head.weight"} <= set(short_names(model, rest))
    assert all(p.ndim == 1 for p, name in zip(rest, short_names(model, rest), strict=True) if name.endswith("bias"))
    assert len(hidden) + len(rest) == len(list(model.parameters()))


def loss_of(model: torch.nn.Module) -> torch.Tensor:
    tokens = torch.arange(40).reshape(10, 4) % 11
    return model(tokens).log_softmax(-1)[..., 3].mean()


def test_each_part_steps_exactly_as_its_own_optimizer_would():
    ours_model, reference_model, adamw_model = tiny_bridge(), tiny_bridge(), tiny_bridge()
    ours = build_optimizer(MUON, list(ours_model.parameters()), ours_model)
    hidden, rest = muon_split(reference_model, list(reference_model.parameters()))
    # the reference: torch's Muon with Moonlight's rate rule and torch's AdamW, side by side on one model
    reference = [
        torch.optim.Muon(hidden, lr=2e-3, weight_decay=0.5, momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw"),
        torch.optim.AdamW(rest, lr=2e-3, weight_decay=0.5, betas=(0.9, 0.98)),
    ]
    plain_adamw = [torch.optim.AdamW(adamw_model.parameters(), lr=2e-3, weight_decay=0.5, betas=(0.9, 0.98))]
    for _ in range(3):
        for model, optimizers in ((ours_model, [ours]), (reference_model, reference), (adamw_model, plain_adamw)):
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss_of(model).backward()
            for optimizer in optimizers:
                optimizer.step()
    ours_parameters = list(ours_model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(ours_parameters, reference_model.parameters(), strict=True))
    # and the matrices really took Muon's step, not AdamW's
    ours_hidden, _ = muon_split(ours_model, ours_parameters)
    adamw_hidden, _ = muon_split(adamw_model, list(adamw_model.parameters()))
    assert not torch.allclose(ours_hidden[0], adamw_hidden[0], atol=1e-5)


def test_a_schedule_moves_both_parts_and_the_state_round_trips():
    model = tiny_bridge()
    optimizer = build_optimizer(MUON, list(model.parameters()), model)
    assert isinstance(optimizer, MuonWithAdamW)
    scheduler = build_scheduler(LRScheduleSpec(name="cosine"), optimizer, total_steps=4)
    for _ in range(2):
        optimizer.zero_grad()
        loss_of(model).backward()
        optimizer.step()
        scheduler.step()
    assert optimizer.muon.param_groups[0]["lr"] == optimizer.adamw.param_groups[0]["lr"] == pytest.approx(1e-3)
    state = optimizer.state_dict()
    fresh_model = tiny_bridge()
    fresh = build_optimizer(MUON, list(fresh_model.parameters()), fresh_model)
    fresh.load_state_dict(state)
    buffers = [fresh.muon.state[p]["momentum_buffer"] for p in fresh.muon.param_groups[0]["params"]]
    expected = [optimizer.muon.state[p]["momentum_buffer"] for p in optimizer.muon.param_groups[0]["params"]]
    assert all(torch.equal(a, b) for a, b in zip(buffers, expected, strict=True))
    with pytest.raises(ValueError, match="another optimizer"):
        fresh.load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())


def test_muon_takes_its_usual_momentum_unless_given_and_leaves_other_run_keys_alone():
    assert MUON.momentum == 0.95
    assert OptimizerSpec.model_validate({"name": "muon", "momentum": 0.9}).momentum == 0.9
    assert OptimizerSpec.model_validate({"name": "sgd"}).momentum == 0.0
    assert OptimizerSpec().momentum == 0.0


def test_a_muon_run_resumes_bit_for_bit(tiny_raw, write_spec, tmp_path):
    tiny_raw["training"]["optimizer"] = {"name": "muon", "lr": 3e-3, "weight_decay": 0.1, "betas": [0.9, 0.98]}
    tiny_raw["training"]["steps"] = 40
    tiny_raw["measures"] = [{"name": "rankme"}, {"name": "spectral_edge", "window": 3}]
    path = write_spec(tiny_raw)
    (straight,) = resolve(str(path), ["execution.output_dir=" + str(tmp_path / "straight")])
    (interrupted,) = resolve(str(path), ["execution.output_dir=" + str(tmp_path / "interrupted")])
    adamw_raw = yaml.safe_load(yaml.safe_dump(tiny_raw)) | {"training": tiny_raw["training"] | {"optimizer": {"name": "adamw"}}}
    (adamw,) = resolve(str(write_spec(adamw_raw, "adamw.yaml")), [])
    assert run_key(straight.spec) != run_key(adamw.spec)
    run_one(straight)

    def stop_at_25(result, values):
        if result.step == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_one(interrupted, progress=stop_at_25)
    assert read_status(run_directory(interrupted))["state"] == "failed"
    assert run_one(interrupted).state == "completed"
    resumed = read_journal(run_directory(interrupted)).values
    reference = read_journal(run_directory(straight)).values
    assert [s for s, _ in resumed] == [s for s, _ in reference]
    for (_, a), (_, b) in zip(resumed, reference, strict=True):
        assert {k: v for k, v in a.items() if not k.startswith("cost/")} == {k: v for k, v in b.items() if not k.startswith("cost/")}
    saved = load_checkpoint(latest_checkpoint(run_directory(interrupted) / "checkpoints")[1], torch.device("cpu"))
    assert set(saved["optimizer"]) == {"muon", "adamw"}
    assert saved["optimizer"]["muon"]["state"]  # the momentum buffers are in the checkpoint
