"""Read a YAML config file within limits: the one gate every MAGI config file passes.

``magi validate``, :class:`~magi.ProfileManager`, :func:`magi.compose` and ``run.py``
read config files through :func:`load_yaml_file` before anything else does, so a
broken or hostile file is refused at once, naming the file and the problem, instead
of hanging Hydra (OmegaConf copies every alias, so an alias bomb expands
exponentially) or ending in a traceback (non-UTF-8 bytes, deep nesting, an integer
too long for Python, a tab in the indentation).

Duplicate keys are refused too: OmegaConf refuses them under Hydra, and silently
keeping the last one (PyYAML's way) can, e.g., turn two-stage processing off without
a word.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.yaml"
    >>> _ = path.write_text("a: 1\\na: 2\\n")
    >>> try:
    ...     load_yaml_file(path)
    ... except ConfigFileError as exc:
    ...     print(exc.problems[0])
    line 2, column 1: duplicate key 'a' (first at line 1)
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.error import Mark, MarkedYAMLError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from magi.errors import ConfigFileError

#: Largest config file read; MAGI's own are a few KB.
MAX_FILE_BYTES = 1_000_000
#: Deepest nesting of mappings and lists, counted after aliases are expanded.
MAX_DEPTH = 64
#: Most values (keys, scalars, lists, mappings) after aliases are expanded.
MAX_NODES = 100_000
#: Longest integer, in characters (Python refuses to read ones over 4,300 digits).
MAX_INT_CHARS = 100

_MERGE_TAG = "tag:yaml.org,2002:merge"


class LimitError(MarkedYAMLError):
    """A file that is valid YAML but breaks one of MAGI's limits (or has a duplicate key)."""


def _where(mark: Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


class LimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with a nesting limit while composing, duplicate keys
    refused and integers bounded in length. :func:`check_expansion` bounds aliases."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._dup_checked: set[int] = set()

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # type: ignore[override]
        # PyYAML composes recursively: bound the depth before Python's recursion limit does.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise LimitError(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def flatten_mapping(self, node: MappingNode) -> None:
        # Check a mapping's own keys before merge keys (<<) add theirs: overriding a
        # merged key is what merging is for; writing a key twice is a mistake.
        if id(node) not in self._dup_checked:
            self._dup_checked.add(id(node))
            seen: dict[tuple[type, Any], Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                    continue
                key = self.construct_object(key_node)
                ident = (type(key), key)
                if ident in seen:
                    raise LimitError(
                        problem=f"duplicate key {key!r} (first at line {seen[ident].line + 1})",
                        problem_mark=key_node.start_mark,
                    )
                seen[ident] = key_node.start_mark
        super().flatten_mapping(node)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        if len(node.value) > MAX_INT_CHARS:
            raise LimitError(
                problem=f"an integer of {len(node.value):,} characters; at most {MAX_INT_CHARS} are allowed",
                problem_mark=node.start_mark,
            )
        return super().construct_yaml_int(node)


LimitedLoader.add_constructor("tag:yaml.org,2002:int", LimitedLoader.construct_yaml_int)


def check_expansion(root: Node) -> None:
    """Refuse a node graph that, with its aliases expanded, is deeper than
    :data:`MAX_DEPTH`, has more than :data:`MAX_NODES` values, or refers to itself.

    PyYAML shares an aliased node; OmegaConf and Pydantic copy it. Sizes are
    memoised per node, so the check is linear in the file even for an alias bomb.
    """
    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}
    open_nodes: set[int] = set()

    def walk(node: Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            if depth + heights[key] > MAX_DEPTH:
                raise LimitError(
                    problem=f"aliases nest values more than {MAX_DEPTH} levels deep",
                    problem_mark=node.start_mark,
                )
            return sizes[key]
        if key in open_nodes:
            raise LimitError(
                problem="an alias refers to the value that contains it", problem_mark=node.start_mark
            )
        if depth > MAX_DEPTH:
            raise LimitError(
                problem=f"aliases nest values more than {MAX_DEPTH} levels deep", problem_mark=node.start_mark
            )
        if isinstance(node, SequenceNode):
            children: list[Node] = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        open_nodes.add(key)
        total, height = 1, 0
        for child in children:
            total += walk(child, depth + 1)
            height = max(height, heights[id(child)] + 1)
            if total > MAX_NODES:
                raise LimitError(
                    problem=f"aliases expand to more than {MAX_NODES:,} values (an alias bomb?)",
                    problem_mark=node.start_mark,
                )
        open_nodes.discard(key)
        sizes[key], heights[key] = total, height
        return total

    walk(root, 1)


def load_yaml_text(text: str, source: str | Path) -> Any:
    """Parse YAML text under MAGI's limits (see :func:`load_yaml_file`)."""
    loader = LimitedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node)
        return loader.construct_document(node)
    except LimitError as exc:
        raise ConfigFileError(source, _where(exc.problem_mark) + str(exc.problem)) from None
    except MarkedYAMLError as exc:
        problem = str(exc.problem or exc)
        if "'\\t'" in problem:
            problem += " (YAML indents with spaces; replace the tab)"
        raise ConfigFileError(source, f"{_where(exc.problem_mark)}YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:  # ReaderError: a control character, no mark
        raise ConfigFileError(source, f"YAML syntax error: {exc}") from None
    except (ValueError, OverflowError) as exc:  # e.g. a timestamp such as 2024-13-45
        raise ConfigFileError(source, f"a value cannot be read: {exc}") from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path) -> Any:
    """Read one YAML config file, refusing anything MAGI's limits forbid.

    Limits: a regular file of at most :data:`MAX_FILE_BYTES`, UTF-8 text, at most
    :data:`MAX_DEPTH` levels and :data:`MAX_NODES` values with aliases expanded, no
    duplicate keys, integers of at most :data:`MAX_INT_CHARS` characters; safe
    loading only (no Python tags).

    Raises:
        ConfigFileError: ``"<file>: <problem>"`` (422).
    """
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigFileError(path, "not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ConfigFileError(
                path, f"{info.st_size:,} bytes; a config file may have at most {MAX_FILE_BYTES:,}"
            )
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigFileError(path, f"cannot read the file: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:  # it grew since stat
        raise ConfigFileError(path, f"more than {MAX_FILE_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigFileError(
            path,
            f"line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8",
        ) from None
    return load_yaml_text(text, path)


__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_INT_CHARS",
    "MAX_NODES",
    "LimitError",
    "check_expansion",
    "load_yaml_file",
    "load_yaml_text",
]
