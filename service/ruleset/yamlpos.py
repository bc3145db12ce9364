"""YAML loading that remembers where every value came from.

Rule errors must say ``file:line:column: location: problem``; the location is the path
inside the document, the line and column those of the key or item, which plain
``yaml.safe_load`` forgets.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    line: int
    column: int


# Where a problem with a whole file (missing, unreadable, not a mapping) is reported.
START = Position(1, 1)


class LocatedYaml:
    def __init__(
        self, data: Any, positions: dict[Path, Position], origins: dict[Path, Path] | None = None
    ) -> None:
        self.data = data
        self.positions = positions
        # After ``without``: each value's path in the file as written (list indices shift).
        self._origins = origins or {}

    def original(self, path: Path) -> Path:
        """``path`` as the file's author sees it, the items left out counted in."""
        for i in range(len(path), -1, -1):
            if path[:i] in self._origins:
                return self._origins[path[:i]] + path[i:]
        return path

    def position_of(self, path: Path) -> Position:
        # Pydantic may point inside a value we have no node for; walk back up.
        while path not in self.positions:
            if not path:
                return START
            path = path[:-1]
        return self.positions[path]

    def without(self, drop: Set[Path]) -> LocatedYaml:
        """This document less the list items and mapping entries at ``drop``; every value
        that stays keeps its original position, so later problems still point at the file."""
        positions: dict[Path, Position] = {}
        origins: dict[Path, Path] = {}

        def walk(value: Any, old: Path, new: Path) -> Any:
            origins[new] = self.original(old)
            if old in self.positions:
                positions[new] = self.positions[old]
            if isinstance(value, dict):
                return {k: walk(v, (*old, k), (*new, k)) for k, v in value.items() if (*old, k) not in drop}
            if isinstance(value, list):
                kept: list[Any] = []
                for i, item in enumerate(value):
                    if (*old, i) not in drop:
                        kept.append(walk(item, (*old, i), (*new, len(kept))))
                return kept
            return value

        return LocatedYaml(walk(self.data, (), ()), positions, origins)


def load_located(text: str) -> LocatedYaml:
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    positions: dict[Path, Position] = {}
    if node is None:
        return LocatedYaml(None, positions)
    _index(node, (), positions)
    data = yaml.safe_load(text)
    return LocatedYaml(data, positions)


def _at(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def _index(node: yaml.Node, path: Path, positions: dict[Path, Position]) -> None:
    positions[path] = _at(node)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            _index(value, (*path, name), positions)
            # A mapping entry is reported at its key, where an editor's cursor belongs.
            positions[(*path, name)] = _at(key)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), positions)


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"
