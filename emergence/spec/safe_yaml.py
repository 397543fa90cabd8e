"""Parse a spec's YAML (a file, or one override's value) refusing what no spec can hold, before it is built.

``yaml.safe_load`` already refuses Python tags, but it happily builds what is dangerous downstream: a
"billion laughs" document whose aliases expand to 10^9 values (cheap to load as shared references, ruinous
to copy, validate, print or hash), an alias that refers to itself, nesting deep enough to overflow the
parser's recursion, and a key given twice (the first value silently lost). Here the document is *composed*
(a node graph, aliases shared) and checked, and only then constructed: every problem is a ``YamlProblem``
at the dotted path where it sits.
"""

from __future__ import annotations

from typing import Any

import yaml

# A spec expands to a few hundred values (a large grid over task sections, a few thousand); this many,
# counted with every alias followed, is only reached by aliases that multiply (a "billion laughs").
MAX_VALUES = 100_000
# Specs nest 4 or 5 deep (grid -> task -> params -> value); the YAML parser itself overflows near 300.
MAX_DEPTH = 32
# The tags SafeLoader constructs (plain YAML); anything else (!!python/..., a custom !tag) is refused by path.
MERGE_KEY = "tag:yaml.org,2002:merge"  # `<<: *base` (resolved at construction; may repeat keys on purpose)
PLAIN_TAGS = frozenset({*(tag for tag in yaml.SafeLoader.yaml_constructors if tag is not None), MERGE_KEY})


class YamlProblem(ValueError):
    """One problem with a YAML document: the dotted path where it sits ("" for the document), the message a
    person reads, and the given value and allowed values where known."""

    def __init__(self, path: str, message: str, given: Any = None, allowed: tuple[str, ...] | None = None) -> None:
        self.path = path
        self.given = given
        self.allowed = allowed
        super().__init__(message)


def parse(text: str) -> Any:
    """The value the YAML ``text`` holds (None when it is empty), or ``YamlProblem``."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YamlProblem(
                "", f"nested too deeply for the YAML parser; allowed: at most {MAX_DEPTH} levels of nesting"
            ) from None
        except yaml.YAMLError as error:
            raise YamlProblem("", _syntax_message(error, text)) from None
        if node is None:
            return None
        _Checker().check(node)
        try:
            return loader.construct_document(node)
        except yaml.YAMLError as error:  # the checker refuses what SafeLoader cannot build; this is a backstop
            raise YamlProblem("", _syntax_message(error, text)) from None
    finally:
        loader.dispose()


def _syntax_message(error: yaml.YAMLError, text: str) -> str:
    mark = getattr(error, "problem_mark", None)
    where, line = "", ""
    if mark is not None:
        where = f" at line {mark.line + 1}, column {mark.column + 1}"
        lines = [text_line for text_line in text.splitlines()[: mark.line + 1] if text_line.strip()]
        if lines:  # the line it stopped at, or the last one before the end it ran into
            line = f" (given {lines[-1].strip()[:120]!r})"
    problem = getattr(error, "problem", None) or str(error)
    return f"not valid YAML{where}: {problem}{line}"


def _shown_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


class _Checker:
    """One pass over the node graph: tags, duplicate keys, self-reference, depth, and the expanded size."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}  # node id -> how many values it expands to (aliases followed)
        self.open: set[int] = set()  # nodes being walked: meeting one again is an alias to itself

    def check(self, root: yaml.Node) -> None:
        total = self._size(root, [])
        if total > MAX_VALUES:
            raise YamlProblem(
                self._bulk_of(root), f"expands to {total:,} values once its YAML aliases (*name) are followed; allowed: at most "
                f"{MAX_VALUES:,} (aliases that repeat aliases multiply: a 'billion laughs')", given=f"{total:,} values",
            )

    def _bulk_of(self, node: yaml.Node) -> str:
        """The path to the value that holds most of the document: follow the largest child while it holds more
        than half of its parent (the key of a 'billion laughs', not one of its repeated items)."""
        path: list[str] = []
        while isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.value:
            if isinstance(node, yaml.MappingNode):
                children = [(str(k.value), v) for k, v in node.value]
            else:
                children = [(str(i), item) for i, item in enumerate(node.value)]
            name, largest = max(children, key=lambda child: self.sizes[id(child[1])])
            if self.sizes[id(largest)] * 2 <= self.sizes[id(node)]:
                break
            path.append(name)
            node = largest
        return ".".join(path)

    def _size(self, node: yaml.Node, path: list[str]) -> int:
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        where = ".".join(path)
        if key in self.open:
            raise YamlProblem(where, "a YAML alias refers to the value that contains it (a value that holds itself); "
                              "allowed: aliases to values defined outside them")
        if len(path) > MAX_DEPTH:
            raise YamlProblem(where, f"nested more than {MAX_DEPTH} levels deep; allowed: at most {MAX_DEPTH}")
        if node.tag not in PLAIN_TAGS:
            raise YamlProblem(
                where, f"given the YAML tag {_shown_tag(node.tag)!r}; allowed: plain YAML values (mappings, lists, strings, "
                "numbers, true/false, null), no tags: a spec never builds Python objects", given=_shown_tag(node.tag),
            )
        self.open.add(key)
        size = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != MERGE_KEY:
                    identity = (key_node.tag, key_node.value)
                    if identity in seen:
                        raise YamlProblem(
                            ".".join([*path, name]),
                            f"key {name!r} given twice (lines {seen[identity] + 1} and {key_node.start_mark.line + 1}); "
                            "allowed: each key once (YAML would silently keep only the last)",
                            given=name,
                        )
                    seen[identity] = key_node.start_mark.line
                size += self._size(key_node, [*path, name]) + self._size(value_node, [*path, name])
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                size += self._size(item, [*path, str(index)])
        self.open.discard(key)
        self.sizes[key] = size
        return size
