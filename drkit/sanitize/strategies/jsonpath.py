"""A small JSONPath subset for the ``json`` strategy: ``$``, ``.key``, ``['key']``, ``[n]``,
``[*]``, ``.*`` and ``..key`` (any depth).

Paths are parsed once when the rules load; applying one rewrites the matched values
of a parsed JSON document in place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_TOKEN_RE = re.compile(
    r"""
    \.\.(?P<deep>[A-Za-z_][\w-]*|\*)        # ..key or ..*
  | \.(?P<key>[A-Za-z_][\w-]*)              # .key
  | \.(?P<dotstar>\*)                       # .*
  | \[\s*(?P<index>-?\d+)\s*\]              # [3]
  | \[\s*(?P<star>\*)\s*\]                  # [*]
  | \[\s*'(?P<sq>(?:[^'\\]|\\.)*)'\s*\]     # ['key']
  | \[\s*"(?P<dq>(?:[^"\\]|\\.)*)"\s*\]     # ["key"]
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Step:
    kind: str  # key | index | star | deep
    value: str | int | None = None


class JsonPathError(ValueError):
    pass


def parse_path(path: str) -> tuple[Step, ...]:
    if not isinstance(path, str) or not path.startswith("$"):
        raise JsonPathError(f"JSON path {path!r} must start with $")
    steps: list[Step] = []
    pos = 1
    while pos < len(path):
        match = _TOKEN_RE.match(path, pos)
        if match is None:
            raise JsonPathError(f"JSON path {path!r}: cannot read {path[pos:]!r}")
        if (deep := match.group("deep")) is not None:
            steps.append(Step("deep", None if deep == "*" else deep))
        elif (key := match.group("key")) is not None:
            steps.append(Step("key", key))
        elif match.group("dotstar") is not None or match.group("star") is not None:
            steps.append(Step("star"))
        elif (index := match.group("index")) is not None:
            steps.append(Step("index", int(index)))
        else:
            quoted = match.group("sq") if match.group("sq") is not None else match.group("dq")
            steps.append(Step("key", re.sub(r"\\(.)", r"\1", quoted)))
        pos = match.end()
    return tuple(steps)


Rewrite = Callable[[Any], Any]


def _children(node: Any) -> list[tuple[Any, Any]]:
    if isinstance(node, dict):
        return list(node.items())
    if isinstance(node, list):
        return list(enumerate(node))
    return []


def _descendants(node: Any) -> list[tuple[Any, Any, Any]]:
    """(container, key, value) for every value below ``node``, any depth."""
    found: list[tuple[Any, Any, Any]] = []
    stack = [node]
    while stack:
        current = stack.pop()
        for key, value in _children(current):
            found.append((current, key, value))
            if isinstance(value, dict | list):
                stack.append(value)
    return found


def apply_path(doc: Any, steps: tuple[Step, ...], rewrite: Rewrite) -> Any:
    """Rewrite every value ``steps`` selects in ``doc``; returns the (possibly new) root."""
    if not steps:
        return rewrite(doc)
    holder = [doc]
    # (container, key) pairs currently selected
    selected: list[tuple[Any, Any]] = [(holder, 0)]
    for step in steps:
        nxt: list[tuple[Any, Any]] = []
        for container, key in selected:
            node = container[key]
            if step.kind == "key":
                if isinstance(node, dict) and step.value in node:
                    nxt.append((node, step.value))
            elif step.kind == "index":
                assert isinstance(step.value, int)
                if isinstance(node, list) and -len(node) <= step.value < len(node):
                    nxt.append((node, step.value % len(node)))
            elif step.kind == "star":
                nxt.extend((node, k) for k, _ in _children(node))
            else:  # deep
                for parent, k, _ in _descendants(node):
                    if step.value is None or (isinstance(parent, dict) and k == step.value):
                        nxt.append((parent, k))
        selected = nxt
    for container, key in selected:
        container[key] = rewrite(container[key])
    return holder[0]
