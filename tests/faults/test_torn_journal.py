"""A journal torn by a process killed (or a disk filled) in the middle of a write: read up to its last whole
line, the torn part cut before anything is appended after it, and a checkpoint's journal position honoured on
resume. In process and on disk: no subprocess, milliseconds."""

from __future__ import annotations

import json

from emergence.record import Journal, read_journal


def test_a_torn_last_line_is_left_out_when_reading(tmp_path):
    journal = Journal(tmp_path)
    journal.append_values(0, {"a": 1.0})
    journal.append_values(1, {"a": 2.0})
    with journal.path.open("a", encoding="utf-8") as handle:
        handle.write('{"step":2,"values":{"a":3.0}}')  # whole JSON, but its newline never made it: still torn
    assert [step for step, _ in read_journal(tmp_path).values] == [0, 1]


def test_the_torn_part_is_cut_before_the_next_append_so_no_line_is_swallowed(tmp_path):
    Journal(tmp_path).append_values(0, {"a": 1.0})
    path = tmp_path / "journal.jsonl"
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"step":1,"values":{"a":')
    resumed = Journal(tmp_path)  # a new process
    resumed.append_event("start")
    resumed.append_values(1, {"a": 2.0})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 0, "values": {"a": 1.0}},
        {"event": "start"},
        {"step": 1, "values": {"a": 2.0}},
    ]


def test_a_journal_that_is_only_a_torn_line_becomes_empty(tmp_path):
    (tmp_path / "journal.jsonl").write_text('{"event":"sta', encoding="utf-8")
    journal = Journal(tmp_path)
    journal.append_event("start")
    assert (tmp_path / "journal.jsonl").read_text(encoding="utf-8") == '{"event":"start"}\n'


def test_truncating_to_a_checkpoints_position_drops_what_came_after_it_but_keeps_events(tmp_path):
    journal = Journal(tmp_path)
    journal.append_values(0, {"a": 1.0})
    journal.append_values(10, {"a": 2.0})
    position = journal.position()  # a checkpoint at step 10 is written here
    journal.append_values(10, {"after_run/b": 5.0})  # a measure's after-run value at an earlier step
    journal.append_table("verdicts", ["signal"], [["a"]])  # the analysis' table (no step)
    journal.append_event("failed", reason="killed")
    journal.append_values(20, {"a": 3.0})
    journal.truncate_after(10, position)
    contents = read_journal(tmp_path)
    assert contents.values == [(0, {"a": 1.0}), (10, {"a": 2.0})]
    assert contents.tables == []
    assert [e["event"] for e in contents.events] == ["failed"]
    assert journal.position() == position
    journal.append_values(20, {"a": 3.0})
    assert journal.position() == position + 1 == Journal(tmp_path).position()


def test_truncating_without_a_position_drops_only_later_steps(tmp_path):
    """Checkpoints written before the position was kept: by step, as before."""
    journal = Journal(tmp_path)
    journal.append_values(10, {"a": 2.0})
    journal.append_table("verdicts", ["signal"], [["a"]])
    journal.append_values(20, {"a": 3.0})
    journal.truncate_after(10)
    contents = read_journal(tmp_path)
    assert [step for step, _ in contents.values] == [10] and len(contents.tables) == 1
