"""HTML building blocks shared by the run report (``run_page.py``) and the sweep report (``sweep_page.py``):
the page style, escaping, sections, tables of rows, value formatting, and writing a file atomically."""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from emergence.numbers import finite_number

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #555; }
.status { display: inline-block; padding: 0.1em 0.6em; border-radius: 0.8em; font-weight: 600; }
.status-completed { background: #d9f2dd; color: #1b5e20; }
.status-running { background: #e3ecfa; color: #1a3e7a; }
.status-failed { background: #fbdcdc; color: #8e1b1b; }
.status-unknown { background: #eee; color: #555; }
.failure { background: #fff3f3; border-left: 4px solid #c62828; padding: 0.6em 1em; white-space: pre-wrap; }
.note { background: #fffbe6; border-left: 4px solid #e0b400; padding: 0.4em 1em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.verdict-precursor { background: #c8e6c9; font-weight: 600; }
td.verdict-synchronous { background: #fff3c4; }
td.verdict-lagging { background: #ffcdd2; }
td.duplicate { background: #ffcdd2; font-weight: 600; }
td.verdict-no_signal { background: #e0e0e0; color: #555; }
td.verdict-no_emergence { background: #f0f0f0; color: #777; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""

def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def section(title: str, body: str) -> str:
    return f"<section>\n<h2>{esc(title)}</h2>\n{body}\n</section>"

def columns(preferred: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The documented columns first, then any the core adds later, so nothing is silently hidden."""
    columns = list(preferred)
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns

def table(
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    cell_class: Callable[[str, Any], str | None] | None = None,
) -> str:
    head = "".join(f"<th>{esc(column)}</th>" for column in columns)
    body = []
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            classes = [
                c
                for c in (
                    "num" if finite_number(value) is not None else None,
                    cell_class(column, value) if cell_class else None,
                )
                if c
            ]
            attr = f' class="{esc(" ".join(classes))}"' if classes else ""
            text = value if isinstance(value, Markup) else esc(fmt(value))
            cells.append(f"<td{attr}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


class Markup(str):
    """A cell this module built as HTML (a link), put on the page as is instead of escaped."""


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(item) for item in value)
    return str(value)


def replace_file(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a file
    return path
