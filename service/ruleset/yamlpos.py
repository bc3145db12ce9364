"""YAML loading that remembers where every value came from.

Rule errors must say ``file: location: problem``; the location is the path
inside the document plus the line, which plain ``yaml.safe_load`` forgets.
"""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]


class LocatedYaml:
    def __init__(self, data: Any, lines: dict[Path, int]) -> None:
        self.data = data
        self.lines = lines

    def line_of(self, path: Path) -> int | None:
        # Pydantic may point inside a value we have no node for; walk back up.
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]


def load_located(text: str) -> LocatedYaml:
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[Path, int] = {}
    if node is None:
        return LocatedYaml(None, lines)
    _index(node, (), lines)
    data = yaml.safe_load(text)
    return LocatedYaml(data, lines)


def _index(node: yaml.Node, path: Path, lines: dict[Path, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            _index(value, (*path, name), lines)
            lines[(*path, name)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), lines)


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"
