""" "Did you mean": the nearest known name for a misspelt one.

One mechanism for every name a person types and drkit checks against a closed set:
policy keys (``retention.weekley`` -> ``weekly``), sanitize rules keys, environment
names.  (Command and option names are click's: it already suggests.)  The suggestion
is :func:`difflib.get_close_matches`' best match, or nothing when no known name is
close enough: a guess is shown, never acted on.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

#: how alike two names must be (difflib's ratio) to be suggested
CUTOFF = 0.6


def did_you_mean(word: object, known: Iterable[str]) -> str:
    """`` (did you mean weekly?)`` for the closest of ``known``, or ``""``."""
    matches = difflib.get_close_matches(str(word), sorted(set(known)), n=1, cutoff=CUTOFF)
    return f" (did you mean {matches[0]}?)" if matches else ""


def unknown_key(key: object, known: Iterable[str]) -> str:
    """The reason for a key not in ``known``: ``unknown key``, and the nearest one."""
    return "unknown key" + did_you_mean(key, known)


def model_keys(model: Any, path: Sequence[object]) -> list[str]:
    """The keys a pydantic model accepts at ``path`` (field names and aliases), following
    nested models through ``X | None``; empty when the path leads to no model."""
    named = False  # the part is a name of a ``dict[str, Model]`` (copies.NAME), no key
    for part in path:
        if named:
            named = False
            continue
        fields = getattr(model, "model_fields", None)
        if fields is None:
            return []
        field = fields.get(str(part)) or next(
            (f for f in fields.values() if f.alias == str(part)), None
        )
        if field is None:
            return []
        annotation = field.annotation
        if typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
            named = True
        model = _nested_model(annotation)
    fields = getattr(model, "model_fields", None)
    if fields is None:
        return []
    return [f.alias or name for name, f in fields.items()]


def _nested_model(annotation: Any) -> Any:
    if hasattr(annotation, "model_fields"):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if hasattr(arg, "model_fields"):
                return arg
    return None
