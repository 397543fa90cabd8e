"""Load a spec file, apply command-line overrides, validate, and explain every error in one line.

Every problem becomes ``error: FILE: dotted.path: message``, where the message says what was given and
what is allowed (with "did you mean" for misspellings). Nothing is created before a spec validates.
"""

from __future__ import annotations

import copy
import reprlib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Tag, ValidationError

from emergence.registry import did_you_mean
from emergence.spec import safe_yaml
from emergence.spec.schema import PATTERN_MEANINGS, FieldError, MeasureOptionsError, MonitorSpec, Spec


class _NotGiven:
    """The given value of a problem that has none (a missing field, a file that is not there)."""

    def __repr__(self) -> str:
        return "<not given>"


NOT_GIVEN: Any = _NotGiven()


@dataclass(frozen=True)
class SpecProblem:
    """One problem with a spec: where (a dotted field path, "" for the file as a whole), what is wrong (the
    line a person reads, which says what was given and what is allowed), and, for programs, the given value
    and the allowed values when they are known."""

    path: str
    message: str
    given: Any = NOT_GIVEN
    allowed: tuple[str, ...] | None = None

    def at(self, path: str) -> SpecProblem:
        return SpecProblem(path, self.message, self.given, self.allowed)


class SpecError(Exception):
    """One or more problems with a spec, each pinned to a file and a dotted field path.

    ``source`` is the file (or ``<dict>`` for a spec given as a mapping), ``problems`` the ``SpecProblem``s;
    ``str(error)`` is what ``emergence validate`` prints, one ``error: FILE: PATH: MESSAGE`` line each."""

    def __init__(self, source: str, problems: list[SpecProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(f"error: {self.source}: {p.path or '(top level)'}: {p.message}" for p in self.problems)


_REPR = reprlib.Repr()  # (3.11 takes no keyword arguments)
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 3, 8, 8, 8, 8
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 80, 80, 40


def shown(value: Any) -> str:
    """``repr(value)`` cut to a line: a given value can be a huge list (a grid, an expanded alias)."""
    return _REPR.repr(value)


def dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def read_yaml(path: Path) -> dict[str, Any]:
    source = str(path)
    if not path.exists():
        raise SpecError(source, [SpecProblem(
            "", f"file not found: given {source!r} (from {Path.cwd()}); allowed: the path of a spec file", given=source
        )])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        given = error.object[max(error.start - 8, 0) : error.start + 8]
        raise SpecError(source, [SpecProblem(
            "", f"not UTF-8 text: given the bytes {given!r} at byte {error.start}; allowed: a YAML file in UTF-8", given=given
        )]) from None
    except OSError as error:  # a folder, a file it may not read
        raise SpecError(source, [SpecProblem("", f"cannot be read ({error.strerror or error}); allowed: a readable YAML file", given=source)]) from None
    try:
        raw = safe_yaml.parse(text)
    except safe_yaml.YamlProblem as problem:
        raise SpecError(source, [_yaml_problem(problem)]) from None
    if not isinstance(raw, dict):
        what = "an empty file" if raw is None else f"a {type(raw).__name__} ({shown(raw)})"
        raise SpecError(source, [SpecProblem(
            "", f"given {what}; allowed: a mapping of sections ({', '.join(Spec.model_fields)}), with at least name and task",
            given=raw, allowed=tuple(Spec.model_fields),
        )])
    return raw


def _yaml_problem(problem: safe_yaml.YamlProblem) -> SpecProblem:
    return SpecProblem(problem.path, str(problem), NOT_GIVEN if problem.given is None else problem.given, problem.allowed)


OVERRIDE_FORM = "dotted.path=value, e.g. model.n_layers=4 or tracking.0.experiment=foo"


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ValueError(f"given {text!r}; allowed: {OVERRIDE_FORM}")
    path, value = text.split("=", 1)
    parts = ["grid", path[len("grid.") :]] if path.startswith("grid.") else path.split(".")
    if not all(parts):
        raise ValueError(f"given {text!r}: the dotted path {path!r} has an empty part; allowed: {OVERRIDE_FORM}")
    try:
        parsed = safe_yaml.parse(value)
    except safe_yaml.YamlProblem as problem:
        inside = f" at {problem.path}" if problem.path else ""
        raise ValueError(f"given {text!r}: its value{inside}: {problem}") from None
    return parts, parsed


def set_path(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``raw[parts...] = value``, creating mappings on the way; list items are addressed by index."""
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                indexes = f"an index of its {len(node)} items (0..{len(node) - 1})" if node else "none, the list is empty"
                raise KeyError(f"{where}: no list item {part!r}; allowed: {indexes}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            above = ".".join(parts[:depth])
            raise KeyError(f"{where}: {above} is {shown(node)} ({type(node).__name__}), not a section; allowed: a field of a mapping")


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    result = copy.deepcopy(raw)
    problems = []
    for text in overrides:
        try:
            parts, value = parse_override(text)
            set_path(result, parts, value)
        except (ValueError, KeyError) as error:
            problems.append(SpecProblem(text.split("=", 1)[0], str(error).strip("'\""), given=text))
    if problems:
        raise SpecError(source, problems)
    return result


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``X``, ``X | None``, ``list[X]`` or ``dict[str, X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, dict):
        for arg in typing.get_args(annotation):
            found = _unwrap_model(arg)
            if found is not None:
                return found
    return None


def _tagged_members(annotation: Any) -> dict[str, type[BaseModel]]:
    """A tagged union's members by tag (``Annotated[ModelSpec, Tag("transformer")] | ...``)."""
    members: dict[str, type[BaseModel]] = {}
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Annotated:
            inner, *metadata = typing.get_args(arg)
            tag = next((m.tag for m in metadata if isinstance(m, Tag)), None)
            if tag is not None and isinstance(inner, type) and issubclass(inner, BaseModel):
                members[tag] = inner
            members.update(_tagged_members(inner))
    return members


def _models_at(loc: tuple[Any, ...], schema: type[BaseModel]) -> list[type[BaseModel]]:
    """The models the field at ``loc`` (pydantic's, union tags included) may hold: the tagged member tried, or
    every member of an untagged union."""
    models = [schema]
    annotation: Any = None
    for part in loc:
        if isinstance(part, int):
            continue
        tagged = _tagged_members(annotation) if annotation is not None else {}
        if str(part) in tagged:
            models = [tagged[str(part)]]
            continue
        field = next((m.model_fields[str(part)] for m in models if str(part) in m.model_fields), None)
        if field is None:
            return []
        annotation = field.annotation
        models = _member_models(annotation)
    return models


def _model_at(loc: tuple[Any, ...], schema: type[BaseModel]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = schema
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _unwrap_model(field.annotation)
    return model


def _member_models(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's annotation can hold: one, or each member of a (tagged) union."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated, list, dict):
        for arg in typing.get_args(annotation):
            found += [m for m in _member_models(arg) if m not in found]
    return found


def _field_path(loc: tuple[Any, ...], schema: type[BaseModel]) -> tuple[Any, ...]:
    """``loc`` without the parts pydantic adds for a union: the tag of the member that was tried
    (``model.checkpoints.steps``) and the member type (``steps.literal['pythia']``), so the path is the spec's."""
    kept: list[Any] = []
    models: list[type[BaseModel]] = [schema]
    annotation: Any = None
    for index, part in enumerate(loc):
        if isinstance(part, int):
            kept.append(part)
            continue
        tagged = _tagged_members(annotation) if annotation is not None else {}
        if str(part) in tagged:
            models = [tagged[str(part)]]  # the member tried: the next part is one of its fields
            continue
        field = next((m.model_fields[str(part)] for m in models if str(part) in m.model_fields), None)
        if field is not None:
            kept.append(part)
            annotation = field.annotation
            models = _member_models(annotation)
        elif index == len(loc) - 1 and models:
            kept.append(part)  # an unknown field: the error is about it
        elif not models and "[" not in str(part) and str(part) not in _plain_members(annotation):
            kept.append(part)  # a key of a free-form mapping (tracking tags)
        # else: a member type of a union of plain types (literal['pythia']): not part of the spec's path
    return tuple(kept)


def _plain_members(annotation: Any) -> set[str]:
    """The names pydantic gives the plain-type members of a union in an error's loc (``str``, ``int``)."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return set()
    return {arg.__name__ for arg in typing.get_args(annotation) if isinstance(arg, type)}


def _describe(error: dict[str, Any], schema: type[BaseModel]) -> list[SpecProblem]:
    parents = _models_at(tuple(error["loc"])[:-1], schema)
    error = {**error, "loc": _field_path(tuple(error["loc"]), schema)}
    loc, kind = tuple(error["loc"]), error["type"]
    context = error.get("ctx") or {}
    if kind == "value_error" and isinstance(context.get("error"), MeasureOptionsError):
        inner = context["error"]
        return [_problem(loc + tuple(sub["loc"]), sub, inner.allowed_fields) for sub in inner.errors]
    if kind == "value_error" and isinstance(context.get("error"), FieldError):
        inner_error = context["error"]
        given = NOT_GIVEN if inner_error.given is None else inner_error.given
        return [SpecProblem(dotted(loc + tuple(inner_error.path.split("."))), str(inner_error), given, inner_error.allowed)]
    allowed = sorted({name for parent in parents for name in parent.model_fields})
    if kind == "missing" and loc and not isinstance(loc[-1], int):
        return [_missing(loc, parents)]
    return [_problem(loc, error, allowed)]


def _missing(loc: tuple[Any, ...], parents: list[type[BaseModel]]) -> SpecProblem:
    """A required field left out, with what it takes (its pattern in words, or its description)."""
    field = next((parent.model_fields[str(loc[-1])] for parent in parents if str(loc[-1]) in parent.model_fields), None)
    pattern = next((getattr(m, "pattern", None) for m in (field.metadata if field else []) if getattr(m, "pattern", None)), None)
    takes = PATTERN_MEANINGS.get(pattern or "") or (field.description if field else None)
    return SpecProblem(dotted(loc), "required field is missing" + (f"; allowed: {takes}" if takes else ""))


def _problem(loc: tuple[Any, ...], error: dict[str, Any], allowed_fields: list[str]) -> SpecProblem:
    kind, given = error["type"], error.get("input", NOT_GIVEN)
    context = error.get("ctx") or {}
    path = dotted(loc)
    if kind == "extra_forbidden":
        name = str(error["loc"][-1]) if error["loc"] else ""
        message = f"unknown field {name!r}{did_you_mean(name, allowed_fields)}; allowed: {', '.join(allowed_fields)}"
        return SpecProblem(path, message, name, tuple(allowed_fields))
    if kind == "missing":
        if loc and isinstance(loc[-1], int):  # an item of a fixed-length list (betas: [0.9])
            return SpecProblem(path, f"given {shown(given)}, which has no item {loc[-1]}: too few items", given)
        return SpecProblem(path, "required field is missing")
    if kind == "literal_error":
        expected = context.get("expected", "")
        choices = [c.strip().strip("'") for c in expected.replace(" or ", ", ").split(",")]
        return SpecProblem(path, f"given {shown(given)}{did_you_mean(str(given), choices)}; allowed: {expected}", given, tuple(choices))
    if kind == "string_pattern_mismatch" and context.get("pattern") in PATTERN_MEANINGS:
        return SpecProblem(path, f"given {shown(given)}; allowed: {PATTERN_MEANINGS[context['pattern']]}", given)
    message = error["msg"].removeprefix("Value error, ")
    allowed = getattr(context.get("error"), "allowed", None)  # an unknown name: what the registry offers
    allowed = tuple(str(a) for a in allowed) if allowed else None
    # A validator's own message may already quote what was given ("unknown executor 'dask'"); pydantic's never
    # do ("Input should be greater than 0" holds a 0, but not the given one).
    if "given" in message or (kind == "value_error" and repr(given) in message):
        return SpecProblem(path, message, given, allowed)
    return SpecProblem(path, f"{message} (given {shown(given)})", given, allowed)


def validate(raw: dict[str, Any], source: str) -> Spec:
    """A spec that ``emergence run`` trains; a monitor spec (``kind: monitor``) is refused with the way to use it."""
    if raw.get("kind") == "monitor":
        raise SpecError(source, [SpecProblem(
            "kind",
            "a monitor spec (kind: monitor) has no task, model or training to run: measure your own training loop "
            "with it through emergence.Monitor or a Trainer callback (docs/monitor.md)",
            given="monitor",
        )])
    return _validated(raw, source, Spec)


def validate_monitor(raw: dict[str, Any], source: str) -> MonitorSpec:
    """A monitor spec: ``kind: monitor``, and no task, model or training."""
    if raw.get("kind") != "monitor":
        given = raw.get("kind", NOT_GIVEN)
        raise SpecError(source, [SpecProblem(
            "kind", f"emergence.Monitor takes a monitor spec (kind: monitor), given {given!r}", given=given, allowed=("monitor",)
        )])
    return _validated(raw, source, MonitorSpec)


def _validated(raw: dict[str, Any], source: str, schema: type[BaseModel]) -> Any:
    try:
        return schema.model_validate(raw)
    except ValidationError as error:
        problems: list[SpecProblem] = []
        for item in error.errors(include_url=False):
            problems += _describe(item, schema)
        raise SpecError(source, merged(problems)) from None


def merged(problems: list[SpecProblem]) -> list[SpecProblem]:
    """One problem per field: a value no member of a union accepts gives one error per member; say them as one."""
    by_path: dict[str, list[SpecProblem]] = {}
    for problem in problems:
        by_path.setdefault(problem.path, []).append(problem)
    result = []
    for path, same in by_path.items():
        if len(same) == 1:
            result.append(same[0])
            continue
        messages = list(dict.fromkeys(p.message for p in same))
        result.append(SpecProblem(path, "; or ".join(messages), same[0].given, same[0].allowed))
    return result


def is_monitor_spec(raw: dict[str, Any]) -> bool:
    return raw.get("kind") == "monitor"


def load_raw(path: Path | str, overrides: list[str] | None = None) -> dict[str, Any]:
    path = Path(path)
    return apply_overrides(read_yaml(path), overrides or [], str(path))


def load_spec(path: Path | str, overrides: list[str] | None = None) -> Spec:
    """The validated spec, grid included but not expanded (see ``spec.grid.expand``)."""
    return validate(load_raw(path, overrides), str(path))
