"""The sweep summary on synthetic runs whose answers are worked out by hand, and once on real tiny runs."""

from __future__ import annotations

import html
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from emergence.analysis.concordance import kendall, pair_counts
from emergence.analysis.sweep import (
    PRIMARY_SIGNAL,
    SweepEntry,
    coefficient_of_variation,
    difficulty_label,
    difficulty_sort_key,
    size_label,
    summarize_sweep,
    sweep_entries,
)
from emergence.orchestrate import execute
from emergence.reports.sweep_page import refresh_sweep_report
from emergence.runner import RunOutcome
from emergence.spec import resolve
from emergence.spec.schema import ModelSpec

EXACT = "behavior/test/exact_match"
RANKME = "geometry/rankme/resid_post"


def verdict(signal: str, event_step: int | None, onset_step: int | None, event_metric: str = EXACT) -> dict:
    """A signal verdict as analysis.json has it; the verdict word follows from the steps (2-step intervals
    do not matter here: any positive lead is a precursor, zero synchronous, negative lagging)."""
    if event_step is None:
        word = "no_emergence"
    elif onset_step is None:
        word = "no_signal"
    else:
        lead = event_step - onset_step
        word = "precursor" if lead > 0 else "synchronous" if lead == 0 else "lagging"
    return {
        "kind": "signal",
        "signal": signal,
        "event_metric": event_metric,
        "event_step": event_step,
        "onset_step": onset_step,
        "verdict": word,
    }


def floor_row(signal: str, floor: float) -> dict:
    layer = int(signal.rsplit("/L", 1)[1]) if "/L" in signal else None
    return {"signal": signal, "layer": layer, "initial": 10.0, "floor": floor, "floor_step": 100}


def entry(
    run_key: str,
    verdicts: list[dict] = (),
    collapse: list[dict] = (),
    *,
    size: str = "2x32",
    n_params: int | None = 1000,
    seed: int = 0,
    level: int | list[int] = 2,
    task: str = "binary_addition",
    state: str = "completed",
    event_step: int | None = None,
    reason: str | None = None,
) -> SweepEntry:
    analysis = {
        "events": [{"metric": EXACT, "step": event_step}],
        "collapse": list(collapse),
        "verdicts": list(verdicts),
        "feature_verdicts": [],
    }
    return SweepEntry(
        run_key=run_key,
        display_name=f"demo[seed={seed}]",
        state=state,
        task=task,
        level=level,
        difficulty=difficulty_label(level),
        size=size,
        n_params=n_params,
        seed=seed,
        grid_point={"seed": seed},
        analysis=analysis if state != "failed" or verdicts else {},
        reason=reason,
    )


def by(rows: list[dict], **keys: object) -> dict:
    (row,) = [r for r in rows if all(r.get(k) == v for k, v in keys.items())]
    return row


def test_labels():
    assert difficulty_label(2) == "L2"
    assert difficulty_label([2, 1]) == "L1+2"
    assert size_label(ModelSpec(preset="mini")) == "mini"
    assert size_label(ModelSpec(n_layers=3, d_model=48, n_heads=4)) == "3x48"


def test_precursor_rate_counts_only_events_that_happened_and_leaves_failed_runs_out():
    l0, l1 = f"{RANKME}/L0", f"{RANKME}/L1"
    entries = [
        entry("a", [verdict(l0, 500, 300), verdict(l1, 500, None)], event_step=500),  # precursor, no_signal
        entry("b", [verdict(l0, 600, 600), verdict(l1, 600, 100)], event_step=600),  # synchronous, precursor
        entry("c", [verdict(l0, None, 300), verdict(l1, None, None)]),  # nothing emerged: not judged
        # A failed run's verdicts (here even precursors) never count.
        entry("d", [verdict(l0, 500, 100), verdict(l1, 500, 100)], state="failed", reason="diverged: loss is nan at step 40"),
    ]
    entries[0].analysis["verdicts"].append({"kind": "feature", "feature": "carry", "verdict": "quiet"})
    summary = summarize_sweep(entries, "key", "demo")

    rates = summary["precursor_rate"]
    first = by(rates["by_signal"], signal=l0)
    assert (first["n"], first["precursor"], first["rate"], first["synchronous"], first["no_emergence"]) == (2, 1, 0.5, 1, 1)
    second = by(rates["by_signal"], signal=l1)
    assert (second["n"], second["precursor"], second["no_signal"], second["no_emergence"]) == (2, 1, 1, 1)
    family = by(rates["by_family"], family=RANKME)
    assert (family["n"], family["precursor"], family["rate"], family["runs"], family["no_emergence"]) == (4, 2, 0.5, 3, 2)
    assert (family["difficulty"], family["size"], family["n_params"]) == ("L2", "2x32", 1000)

    counts = summary["counts"]
    assert (counts["runs"], counts["completed"], counts["failed"], counts["analysed"]) == (4, 3, 1, 3)
    assert counts["failed_runs"] == [{"run_key": "d", "name": "demo[seed=0]", "reason": "diverged: loss is nan at step 40"}]
    run_a = by(summary["runs"], run_key="a")
    assert run_a["verdicts"] == {"no_signal": 1, "precursor": 1}  # the feature verdict is not a signal verdict
    assert run_a["emergence_step"] == 500


def test_a_signal_that_never_met_an_event_has_no_rate():
    summary = summarize_sweep([entry("a", [verdict(f"{RANKME}/L0", None, 200)])], "key", "demo")
    (row,) = summary["precursor_rate"]["by_signal"]
    assert (row["n"], row["rate"], row["no_emergence"]) == (0, None, 1)


def test_collapse_floor_means_per_size_and_cv_across_sizes():
    small = [floor_row(f"{RANKME}/L0", 5.0), floor_row(f"{RANKME}/L1", 1.0)]
    small_again = [floor_row(f"{RANKME}/L0", 7.0), floor_row(f"{RANKME}/L1", 3.0)]
    large = [floor_row(f"{RANKME}/L0", 9.0), floor_row(f"{RANKME}/L3", 4.0), floor_row("gradient/fisher_rank", float("nan"))]
    entries = [
        entry("a", collapse=small, size="mini", n_params=100_000, seed=0),
        entry("b", collapse=small_again, size="mini", n_params=100_000, seed=1),
        # "base" sorts before "mini" by name; sizes must come in parameter order instead.
        entry("c", collapse=large, size="base", n_params=1_000_000, seed=0),
    ]
    summary = summarize_sweep(entries, "key", "demo")
    collapse = summary["collapse_floor"]
    assert collapse["primary_signal"] == PRIMARY_SIGNAL
    rows = collapse["rows"]
    assert rows[0]["signal"] == PRIMARY_SIGNAL and rows[0]["primary"] is True

    # Final layer: L1 of each mini run (1.0, 3.0), L3 of the base run (4.0).
    final = rows[0]
    assert [s["size"] for s in final["sizes"]] == ["mini", "base"]
    mini, base = final["sizes"]
    assert (mini["mean"], mini["n"], mini["n_params"]) == (2.0, 2, 100_000)
    assert mini["sd"] == pytest.approx(math.sqrt(2))  # sample sd of (1, 3)
    assert (base["mean"], base["sd"], base["n"]) == (4.0, None, 1)
    assert final["cv"] == pytest.approx(1 / 3)  # population sd of (2, 4) is 1, over their mean 3

    first_layer = by(rows, signal=f"{RANKME}/L0")
    assert [s["mean"] for s in first_layer["sizes"]] == [6.0, 9.0]
    assert first_layer["cv"] == pytest.approx(1.5 / 7.5)
    assert by(rows, signal=f"{RANKME}/L1")["cv"] is None  # measured at one size only
    assert not [r for r in rows if r["signal"].startswith("gradient/")]  # a NaN floor is no floor
    assert coefficient_of_variation([3.0]) is None


def test_concordance_counts_a_tie_and_a_discordant_pair():
    signal = f"{RANKME}/L0"
    entries = [
        entry("r1", [verdict(signal, 500, 100)], event_step=500),
        entry("r2", [verdict(signal, 700, 200)], event_step=700),
        entry("r3", [verdict(signal, 600, 300)], event_step=600),  # earlier event than r2, later onset: discordant
        entry("r4", [verdict(signal, 900, 300)], event_step=900),  # same onset as r3: a tie
        entry("r5", [verdict(signal, None, 50)]),  # no event: not an item
        entry("r6", [verdict(signal, 800, None)], event_step=800),  # no onset: not an item
    ]
    summary = summarize_sweep(entries, "key", "demo")
    row = by(summary["concordance"]["by_signal"], signal=signal)
    # Pairs: (1,2) C, (1,3) C, (1,4) C, (2,3) D, (2,4) C, (3,4) tied onset.
    assert (row["n_items"], row["n_pairs"], row["concordant"], row["discordant"], row["ties"]) == (4, 6, 4, 1, 1)
    assert row["concordance"] == pytest.approx(0.8)
    assert row["kendall_tau"] == pytest.approx(3 / math.sqrt(30))  # tau-b: (C - D) / sqrt((6 - 1)(6 - 0))
    family = by(summary["concordance"]["by_family"], family=RANKME)
    assert {item["run_key"] for item in family["items"]} == {"r1", "r2", "r3", "r4"}
    assert family["concordance"] == pytest.approx(0.8)  # one layer, one event per run: the same pairs


def test_family_concordance_uses_only_pairs_from_different_runs():
    level_1, level_2 = f"{EXACT}/level_1", f"{EXACT}/level_2"
    mixture = entry(
        "m",
        [
            verdict(f"{RANKME}/L0", 300, 100, level_1),
            verdict(f"{RANKME}/L0", 500, 100, level_2),
            verdict(f"{RANKME}/L1", 300, 400, level_1),
            verdict(f"{RANKME}/L1", 500, 400, level_2),
        ],
        level=[1, 2],
        event_step=500,
    )
    other = entry("n", [verdict(f"{RANKME}/L0", 700, 200)], event_step=700)
    summary = summarize_sweep([mixture, other], "key", "demo")
    family = by(summary["concordance"]["by_family"], family=RANKME)
    # Only m x n pairs: (o100, e300) and (o100, e500) concordant with (o200, e700); both o400 items discordant.
    # Counting m's own pairs too would add one concordant and one discordant pair and four ties.
    assert (family["n_items"], family["n_runs"], family["n_pairs"]) == (5, 2, 4)
    assert (family["concordant"], family["discordant"], family["ties"], family["concordance"]) == (2, 2, 0, 0.5)
    assert family["kendall_tau"] == 0.0 and family["kendall_p"] is None
    # A mixture's per-level events are judged under their own level.
    rows = summary["precursor_rate"]["by_family"]
    assert {r["difficulty"] for r in rows} == {"L1", "L2"}
    assert by(rows, difficulty="L1")["n"] == 2 and by(rows, difficulty="L2")["n"] == 3
    assert by(summary["runs"], run_key="m")["difficulty"] == "L1+2"


def test_restricted_tau_is_scipys_tau_b_when_every_pair_counts():
    onsets = [1.0, 2.0, 2.0, 5.0, 3.0, 7.0, 7.0]
    events = [2.0, 1.0, 4.0, 4.0, 6.0, 5.0, 9.0]
    pairs = pair_counts(np.array(onsets), np.array(events))
    tau, p_value = kendall(np.array(onsets), np.array(events), pairs, restricted=True)
    assert tau == pytest.approx(kendalltau(onsets, events).statistic)
    assert p_value is None
    assert pairs["pairs"] == 21


def test_pair_counts_do_not_depend_on_the_block_size(monkeypatch):
    import emergence.analysis.concordance as concordance

    rng = np.random.default_rng(0)
    onsets, events = rng.integers(0, 20, 300).astype(float), rng.integers(0, 20, 300).astype(float)
    runs = rng.integers(0, 40, 300).astype(str)
    whole = pair_counts(onsets, events, runs)
    monkeypatch.setattr(concordance, "PAIR_BLOCK_ROWS", 7)
    assert pair_counts(onsets, events, runs) == whole
    assert whole["pairs"] == sum(runs[i] != runs[j] for i in range(300) for j in range(i + 1, 300))


def test_summary_is_strict_json():
    entries = [entry("a", [verdict(f"{RANKME}/L0", 500, 100)], [floor_row(f"{RANKME}/L0", float("nan"))], event_step=500)]
    summary = summarize_sweep(entries, "key", "demo")
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


def test_entries_pair_runs_with_outcomes_by_key(tiny_raw, write_spec):
    tiny_raw["model"] = {"act_fn": "relu"}
    tiny_raw["grid"] = {"model.preset": ["tiny", "mini"], "seed": [3]}
    runs = resolve(str(write_spec(tiny_raw)))
    done = RunOutcome(runs[1].run_key, Path(runs[1].run_key), "completed", analysis={"events": []}, n_params=3_200_000)
    entries = sweep_entries(runs, [done])  # the executor lost the first run's outcome
    assert [e.size for e in entries] == ["tiny", "mini"]
    assert (entries[1].state, entries[1].n_params, entries[1].seed, entries[1].difficulty) == ("completed", 3_200_000, 3, "L1")
    assert entries[1].grid_point == {"model.preset": "mini", "seed": 3}
    assert entries[0].state == "failed" and "no outcome" in entries[0].reason


def test_a_sweep_of_tiny_runs_writes_its_summary_and_report(tiny_raw, write_spec, tmp_path, caplog):
    tiny_raw["training"].update(steps=20, checkpoint_every=20)
    tiny_raw["grid"] = {"seed": [0, 1]}
    runs = resolve(str(write_spec(tiny_raw)))
    outcomes = execute(runs)
    assert [o.state for o in outcomes] == ["completed", "completed"]
    assert "could not write the sweep summary" not in caplog.text

    sweep_dir = tmp_path / "runs" / "tiny" / "sweeps" / runs[0].sweep_key
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    assert summary["sweep_key"] == runs[0].sweep_key and summary["name"] == "tiny"
    assert [r["run_key"] for r in summary["runs"]] == [r.run_key for r in runs]
    assert [r["seed"] for r in summary["runs"]] == [0, 1]
    assert summary["counts"]["completed"] == 2 and summary["runs"][0]["n_params"] > 0
    assert summary["collapse_floor"]["primary_signal"] == PRIMARY_SIGNAL  # tiny.yaml measures RankMe on resid_post
    page = (sweep_dir / "report.html").read_text()
    for run in runs:
        assert f'href="../../{run.run_key}/report.html"' in page
        assert f'title="{html.escape(run.display_name)}"><code>{run.run_key}</code></a>' in page  # the key shown, the name on hover
        assert (sweep_dir / "../.." / run.run_key / "report.html").resolve().is_file()

    # Run again: both runs are read back, not retrained, and the summary still counts their verdicts.
    execute(runs)
    again = json.loads((sweep_dir / "sweep.json").read_text())
    assert (again["counts"]["skipped"], again["counts"]["analysed"]) == (2, 2)
    assert again["precursor_rate"] == summary["precursor_rate"]

    # Analysed again (here: by hand), the runs' new verdicts reach the sweep summary without rerunning.
    first_run = sweep_dir.parent.parent / runs[0].run_key
    analysis = json.loads((first_run / "analysis.json").read_text())
    analysis["verdicts"] = [verdict(f"{RANKME}/L1", 40, 20)]
    (first_run / "analysis.json").write_text(json.dumps(analysis))
    refresh_sweep_report(sweep_dir)
    refreshed = json.loads((sweep_dir / "sweep.json").read_text())
    row = by(refreshed["precursor_rate"]["by_signal"], signal=f"{RANKME}/L1", difficulty="L1")
    assert (row["precursor"], row["runs"]) == (1, 2)
    assert refreshed["runs"][0]["seed"] == 0 and refreshed["counts"]["completed"] == 2


def test_concordance_within_a_class_can_fail_where_across_classes_it_holds():
    # Easy runs change and emerge early, hard ones late: across classes the order looks perfect, yet within
    # each class the earlier onset belongs to the later event.
    signal = f"{RANKME}/L0"
    entries = [
        entry("e1", [verdict(signal, 100, 20)], level=1, event_step=100),
        entry("e2", [verdict(signal, 150, 10)], level=1, event_step=150),
        entry("h1", [verdict(signal, 800, 300)], level=3, event_step=800),
        entry("h2", [verdict(signal, 900, 200)], level=3, event_step=900),
    ]
    concordance = summarize_sweep(entries, "key", "demo")["concordance"]
    overall = by(concordance["by_family"], family=RANKME)
    assert (overall["concordant"], overall["discordant"]) == (4, 2)
    within = concordance["by_family_difficulty"]
    assert [(r["difficulty"], r["concordant"], r["discordant"], r["concordance"]) for r in within] == [("L1", 0, 1, 0.0), ("L3", 0, 1, 0.0)]


def test_named_classes_are_shown_in_the_order_of_their_levels_not_their_names():
    # easy, medium, hard: alphabetically easy, hard, medium, which every table and plot showed before.
    signal = f"{RANKME}/L0"
    classes = {1: "easy", 2: "medium", 3: "hard"}
    entries = []
    for level in (3, 1, 2):
        named = replace(entry(f"r{level}", [verdict(signal, 100 * level, 10)], level=level, event_step=100 * level), level_classes=classes)
        entries.append(replace(named, difficulty=difficulty_label(level, classes)))
    summary = summarize_sweep(entries, "key", "demo")
    assert summary["difficulty_levels"] == {"easy": 1, "medium": 2, "hard": 3}
    assert [r["difficulty"] for r in summary["precursor_rate"]["by_family"]] == ["easy", "medium", "hard"]
    assert difficulty_sort_key("Large") < difficulty_sort_key("L1")  # a class named with an L is still a name
    assert sorted(["L1+2", "hard", "L2", "easy"], key=lambda d: difficulty_sort_key(d, summary["difficulty_levels"])) == ["easy", "hard", "L2", "L1+2"]


def test_the_readme_tables_pool_sizes_per_class(tmp_path, capsys):
    """examples/anatomy_tables.py: the final layer's rate pooled over two sizes, with the Wilson interval of
    the pooled counts; every table present."""
    import runpy

    from emergence.analysis.intervals import wilson_interval

    def run(key: str, size: str, layers: int, level: int, onsets: list[int | None], event: int | None) -> SweepEntry:
        signals = [f"{RANKME}/L{i}" for i in range(layers)]
        verdicts = [{**verdict(s, event, o), "robust": True, "specific": o is not None and o > 10} for s, o in zip(signals, onsets, strict=True)]
        collapse = [floor_row(s, 2.0 + i) for i, s in enumerate(signals)]
        return entry(key, verdicts, collapse, size=size, level=level, event_step=event)

    entries = [
        run("a", "2x64", 2, 1, [5, 20], 100),  # final layer (L1) precursor, specific
        run("b", "4x64", 4, 1, [5, 5, 5, 100], 100),  # final layer (L3) synchronous
        run("c", "4x64", 4, 3, [5, 5, 5, 5], None),  # no event: not judged
    ]
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(summarize_sweep(entries, "key", "anatomy")))
    script = Path(__file__).resolve().parents[2] / "examples" / "anatomy_tables.py"
    runpy.run_path(str(script), run_name="not_main")["main"]([str(path)])
    out = capsys.readouterr().out
    low, high = wilson_interval(1, 2)
    assert f"| {RANKME} | final layer | L1 | 2 | 50% [{100 * low:.0f}, {100 * high:.0f}] (1/2) | 1 / 0 / 0 |" in out
    assert f"| {RANKME} | all layers | L1 | 6 |" in out
    for title in ("Emergence step per task", "Collapse floor", "Top-down collapse", "Concordance"):
        assert title in out
    assert "| binary_addition | L3 | – | – |" in out  # never emerged at either size
