"""The Fourier progress measures: the embedding spectrum against explicit sums on a tiny model, restricted and
excluded loss against a direct sum over pairs with explicit basis functions on p = 7 (and against the
outer-product mask that would inflate both), the spec's refusals, and a short run end to end."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from emergence.measures.base import MeasureContext, MeasureSetup
from emergence.measures.fourier import (
    FourierModes,
    fourier_basis,
    gini,
    logit_key_frequencies,
    residue_loss,
    restricted_and_excluded,
)
from emergence.models import build_model
from emergence.record import read_journal
from emergence.rundir import run_directory
from emergence.runner import run_one
from emergence.spec import SpecError, resolve
from emergence.spec.schema import ModelSpec
from emergence.tasks import build_task
from emergence.train import load_checkpoint

CPU = torch.device("cpu")
P = 7

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def task():
    return build_task("modular_arithmetic", 1, {"p": P}, 30, 19, 10, 0)


def bridge(task, seed: int = 0):
    spec = ModelSpec(n_layers=1, d_model=8, n_heads=2, d_mlp=16, normalization=None)
    return build_model(spec, len(task.vocab), task.seq_len, seed, CPU)


def measure(task, **options) -> FourierModes:
    setup = MeasureSetup(n_layers=1, d_model=8, task=task, device=CPU, seed=0)
    return FourierModes(FourierModes.Options.model_validate(options), setup)


# -- the embedding spectrum ------------------------------------------------------------------------------


def test_the_basis_is_orthonormal_and_complete():
    basis = fourier_basis(P)
    assert torch.allclose(basis @ basis.T, torch.eye(P, dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="odd modulus"):
        fourier_basis(2)


def explicit_spectrum(w_e: torch.Tensor) -> list[float]:
    """Each frequency's norm from sums over residues with math.cos and math.sin: sqrt(2/p) scales the unit rows."""
    norms = []
    for k in range(1, (P - 1) // 2 + 1):
        cos_part = sum(w_e[x].double() * math.cos(2 * math.pi * k * x / P) for x in range(P))
        sin_part = sum(w_e[x].double() * math.sin(2 * math.pi * k * x / P) for x in range(P))
        norms.append(math.sqrt(2 / P * (float(cos_part @ cos_part) + float(sin_part @ sin_part))))
    return norms


def explicit_gini(values: list[float]) -> float:
    """Mean absolute difference over twice the mean: the textbook definition."""
    n = len(values)
    return sum(abs(x - y) for x in values for y in values) / (2 * n * n * (sum(values) / n))


def test_the_embedding_spectrum_of_a_tiny_model_matches_explicit_sums(task):
    model = bridge(task)
    rows = [task.vocab.index[str(x)] for x in range(P)]
    norms = explicit_spectrum(model.W_E[rows].detach())
    values = measure(task, per_frequency=True, embed_key_share=0.5).compute(
        MeasureContext(0, model, {}, 1e-3)
    )
    for k, norm in enumerate(norms, start=1):
        assert values[f"fourier/embed/norm/k{k}"] == pytest.approx(norm, rel=1e-9)
    assert values["fourier/embed/gini"] == pytest.approx(explicit_gini(norms), rel=1e-9)
    # embed_key_share 0.5: the fewest frequencies, largest first, holding half of the squared norm.
    energies = sorted((n * n for n in norms), reverse=True)
    expected = next(i for i in range(1, len(energies) + 1) if sum(energies[:i]) >= 0.5 * sum(energies))
    assert values["fourier/embed/n_key"] == expected


def test_a_planted_frequency_is_found_whatever_the_other_tokens_hold(task):
    """Residue x is token str(x); the operator, '=' and the tokens of larger moduli must not count."""
    model = bridge(task)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.W_E.copy_(10 * torch.randn(model.W_E.shape, generator=generator))
        u, v = torch.randn(2, 8, generator=generator)
        for x in range(P):
            angle = 2 * math.pi * 2 * x / P
            model.W_E[task.vocab.index[str(x)]] = (
                3.0 + math.cos(angle) * u + math.sin(angle) * v
            )  # + a constant
    values = measure(task).compute(MeasureContext(0, model, {}, 1e-3))
    assert values["fourier/embed/n_key"] == 1
    assert values["fourier/embed/gini"] == pytest.approx(2 / 3, abs=1e-6)  # (n - 1) / n of n = 3 frequencies
    assert gini(torch.ones(5)) == pytest.approx(0.0, abs=1e-12)


# -- restricted and excluded loss -------------------------------------------------------------------------


def direct_restricted_and_excluded(
    logits: torch.Tensor, keys: list[int], sign: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each answer c, the projection of the logits on the constant and on cos/sin(w_k (a + sign b)), by
    explicit sums over every pair with each basis function's own squared norm; no Fourier transform."""

    def directions() -> list[tuple[bool, object]]:
        found = [(True, lambda a, b: 1.0)]
        for k in keys:
            w = 2 * math.pi * k / P
            found.append((False, lambda a, b, w=w: math.cos(w * (a + sign * b))))
            found.append((False, lambda a, b, w=w: math.sin(w * (a + sign * b))))
        return found

    restricted = torch.zeros(P, P, P, dtype=torch.float64)
    removed = torch.zeros(P, P, P, dtype=torch.float64)
    grid = list(itertools.product(range(P), range(P)))
    for c in range(P):
        for constant, f in directions():
            norm2 = sum(f(a, b) ** 2 for a, b in grid)
            coefficient = sum(float(logits[a, b, c]) * f(a, b) for a, b in grid) / norm2
            for a, b in grid:
                restricted[a, b, c] += coefficient * f(a, b)
                if not constant:
                    removed[a, b, c] += coefficient * f(a, b)
    return restricted, logits.double() - removed


def direct_loss(logits: torch.Tensor, pairs: torch.Tensor, sign: int) -> float:
    total = 0.0
    for a, b in pairs.tolist():
        row = [float(logits[a, b, c]) for c in range(P)]
        top = max(row)
        log_sum = top + math.log(sum(math.exp(x - top) for x in row))
        total += log_sum - row[(a + sign * b) % P]
    return total / len(pairs)


ALL_PAIRS = torch.tensor(list(itertools.product(range(P), range(P))))


@pytest.mark.parametrize(("keys", "sign"), [([1], 1), ([1, 3], 1), ([2], -1)])
def test_restricted_and_excluded_match_a_direct_fourier_computation(keys, sign):
    logits = torch.randn(P, P, P, generator=torch.Generator().manual_seed(len(keys)), dtype=torch.float64)
    restricted, excluded = restricted_and_excluded(logits, keys, sign)
    slow_restricted, slow_excluded = direct_restricted_and_excluded(logits, keys, sign)
    assert torch.allclose(restricted, slow_restricted, atol=1e-12)
    assert torch.allclose(excluded, slow_excluded, atol=1e-12)
    pairs = ALL_PAIRS[::3]
    assert residue_loss(restricted, pairs, sign) == pytest.approx(
        direct_loss(slow_restricted, pairs, sign), rel=1e-10
    )
    assert residue_loss(excluded, pairs, sign) == pytest.approx(
        direct_loss(slow_excluded, pairs, sign), rel=1e-10
    )


def outer_product_mask(logits: torch.Tensor, keys: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The wrong operator: keep the 2-D basis functions f(a) g(b) with f and g both among the constant and
    the key frequencies' cos and sin, (1 + 2K)^2 components; exclude all of them but the constant."""
    p = logits.shape[0]
    rows = fourier_basis(p)[[0, *[r for k in keys for r in (2 * k - 1, 2 * k)]]]
    kept = torch.einsum(
        "ia,jb,ijc->abc", rows, rows, torch.einsum("ia,jb,abc->ijc", rows, rows, logits.double())
    )
    return kept, logits.double() - kept + logits.double().mean((0, 1))


def grokking_like_logits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cos(w_2 (a + b - c)) (the algorithm), plus a bonus for the right answer on the training pairs only
    (memorisation), plus noise; and the training and test pairs."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(P * P, generator=generator)
    train, test = ALL_PAIRS[order[:30]], ALL_PAIRS[order[30:]]
    a, b, c = torch.meshgrid(torch.arange(P), torch.arange(P), torch.arange(P), indexing="ij")
    logits = 3.0 * torch.cos(2 * math.pi * 2 * (a + b - c) / P).double()
    for x, y in train.tolist():
        logits[x, y, (x + y) % P] += 4.0
    return logits + 0.5 * torch.randn(P, P, P, generator=generator, dtype=torch.float64), train, test


def test_the_outer_product_mask_inflates_both_losses_where_they_are_read():
    """Restricted loss is read on test pairs (does the algorithm alone generalise?), excluded loss on training
    pairs (does memorisation alone fit them?); the (1 + 2K)^2 mask keeps the a - b and single-operand terms
    and removes memorisation's share of them, so it gives larger values of both."""
    for seed in range(5):
        logits, train, test = grokking_like_logits(seed)
        restricted, excluded = restricted_and_excluded(logits, [2])
        wrong_restricted, wrong_excluded = outer_product_mask(logits, [2])
        assert residue_loss(wrong_restricted, test, 1) > residue_loss(restricted, test, 1) + 0.05
        assert residue_loss(wrong_excluded, train, 1) > residue_loss(excluded, train, 1) + 0.02


def test_eight_key_frequencies_keep_17_components_not_289():
    """The operators as matrices on functions of (a, b): apply each to every indicator function at once. p = 19
    has 9 frequencies, so the outer-product mask keeps 289 of the 361 components, not all of them."""
    p, keys = 19, [1, 2, 3, 4, 6, 7, 8, 9]
    indicators = torch.eye(p * p, dtype=torch.float64).reshape(p, p, p * p)
    restricted, excluded = restricted_and_excluded(indicators, keys)
    assert torch.linalg.matrix_rank(restricted.reshape(p * p, p * p)) == 17
    assert torch.linalg.matrix_rank((indicators - excluded).reshape(p * p, p * p)) == 16
    wrong, _ = outer_product_mask(indicators, keys)
    assert torch.linalg.matrix_rank(wrong.reshape(p * p, p * p)) == 289


def test_key_frequencies_are_those_carrying_the_final_logits():
    a, b, c = torch.meshgrid(torch.arange(P), torch.arange(P), torch.arange(P), indexing="ij")
    noise = 0.05 * torch.randn(P, P, P, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    logits = (
        2.0 * torch.cos(2 * math.pi * 3 * (a + b - c) / P)
        + 1.0 * torch.sin(2 * math.pi * (a + b - c) / P)
        + noise
    )
    keys, shares = logit_key_frequencies(logits, 0.9)
    assert keys == [1, 3] and float(shares.sum()) == pytest.approx(1.0)
    assert logit_key_frequencies(logits, 0.5)[0] == [3]


# -- what the spec accepts ---------------------------------------------------------------------------------


def fourier_spec(tiny_raw: dict, **task) -> dict:
    tiny_raw["task"] = {
        "name": "modular_arithmetic",
        "level": 1,
        "params": {"p": P},
        "train_size": 30,
        "test_size": 19,
        "diagnostic_size": 10,
        **task,
    }
    tiny_raw["model"] = {"n_layers": 1, "d_model": 16, "n_heads": 2, "d_mlp": 32, "normalization": None}
    tiny_raw["measures"] = [{"name": "fourier"}]
    return tiny_raw


REFUSED = [
    (
        {
            "task": {
                "name": "binary_addition",
                "level": 1,
                "params": {"n_bits": 4},
                "train_size": 200,
                "test_size": 56,
                "diagnostic_size": 32,
            }
        },
        ["needs task modular_arithmetic", "given task 'binary_addition'"],
    ),
    ({"task_params": {"p": P, "op": "*"}}, ["op ['*']", "progress_losses: false"]),
    ({"measure": {"key_frequencies": [1, 4]}}, ["key_frequencies [1, 4]", "frequencies 1 .. 3"]),
    ({"task_level": [1, 2], "task_params": {}}, ["mix p = [23, 59]", "task.params.p"]),
]


@pytest.mark.parametrize(("change", "words"), REFUSED, ids=["task", "op", "frequency", "moduli"])
def test_a_spec_the_measure_cannot_serve_is_refused_at_validation(tiny_raw, write_spec, change, words):
    raw = fourier_spec(tiny_raw)
    if "task" in change:
        raw["task"] = change["task"]
    if "task_params" in change:
        raw["task"]["params"] = change["task_params"]
    if "task_level" in change:
        raw["task"].update(level=change["task_level"], train_size=200, test_size=100)
    raw["measures"][0].update(change.get("measure", {}))
    spec_file = write_spec(raw)
    with pytest.raises(SpecError) as caught:
        resolve(str(spec_file))
    text = caught.value.render()
    assert text.startswith(f"error: {spec_file}: measures.0"), text
    for word in words:
        assert word in text, text


def test_other_operations_keep_the_online_spectrum(tiny_raw, write_spec):
    raw = fourier_spec(tiny_raw)
    raw["task"]["params"] = {"p": P, "op": "*"}
    raw["measures"] = [{"name": "fourier", "progress_losses": False}]
    (run,) = resolve(str(write_spec(raw)))
    assert run.spec.measures[0].name == "fourier"


# -- a run, end to end -------------------------------------------------------------------------------------


def test_a_run_logs_the_spectrum_online_and_the_losses_at_every_checkpoint(tiny_raw, write_spec):
    raw = fourier_spec(tiny_raw)
    raw["training"] = {
        "steps": 20,
        "batch_size": None,
        "checkpoint_every": 10,
        "optimizer": {"name": "adamw", "lr": 3.0e-3, "weight_decay": 1.0},
    }
    raw["schedule"] = {"every": 5}
    (run_spec,) = resolve(str(write_spec(raw)))
    outcome = run_one(run_spec)
    assert outcome.state == "completed", outcome.reason
    run_dir = run_directory(run_spec)
    journal = read_journal(run_dir)
    assert not [e for e in journal.events if e.get("event") == "measure_failed"]
    assert list(journal.series("fourier/embed/gini")[0]) == [0, 5, 10, 15, 20]
    for split in ("train", "test"):
        for kind in ("loss", "restricted_loss", "excluded_loss"):
            steps, values = journal.series(f"fourier/{kind}/{split}")
            assert list(steps) == [0, 10, 20] and all(math.isfinite(v) for v in values), kind
    (table,) = [t for t in journal.tables if t["table"] == "fourier_key_frequencies"]
    keys = [row[0] for row in table["rows"] if row[2]]
    assert journal.series("fourier/n_key_frequencies")[1].tolist() == [len(keys)]
    assert journal.series("cost/fourier/after_run")[0].tolist() == [20]

    # The values at the last step are the final checkpoint's, recomputed here from the module's functions.
    task = build_task("modular_arithmetic", 1, {"p": P}, 30, 19, 10, 0, train_features=False)
    model = build_model(run_spec.spec.model, len(task.vocab), task.seq_len, 0, CPU)
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "step_00000020.pt", CPU)["model"])
    prompts = torch.tensor([task.vocab.encode([str(a), "+", str(b), "="]) for a, b in ALL_PAIRS.tolist()])
    residues = [task.vocab.index[str(x)] for x in range(P)]
    with torch.no_grad():
        logits = model.eval()(prompts)[:, 3, residues].double().reshape(P, P, P)
    _, excluded = restricted_and_excluded(logits, keys)
    train_pairs = task.train.tokens[:, [0, 2]]
    assert journal.series("fourier/excluded_loss/train")[1][-1] == pytest.approx(
        residue_loss(excluded, train_pairs, 1), rel=1e-6
    )
    assert journal.series("fourier/loss/train")[1][-1] == pytest.approx(
        residue_loss(logits, train_pairs, 1), rel=1e-6
    )
