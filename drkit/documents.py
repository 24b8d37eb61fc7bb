"""The base of every ``--json`` document: the one description of each is a pydantic model.

Core code returns its report's document as a model defined next to the code that
produces it (``KeepDocument`` in :mod:`drkit.backup.keep`, ...); the CLI writes it as
:func:`dump` gives it, and :mod:`drkit.docgen` publishes the same model as the
document's JSON Schema.  There is no second description (no ``to_dict`` building the
same shape): what a command writes is what its schema says, by construction.

Rules every model follows (the contract the published schemas state):

- every object allows keys it does not list (:class:`Shape`): adding a key is not a
  breaking change;
- every document has ``ok`` (:class:`Document`); the CLI sets it from the exit code and
  adds ``error`` when the command fails;
- timestamps are RFC 3339 in UTC with ``Z`` (:data:`Timestamp`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Timestamp = Annotated[
    str,
    Field(
        pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$",
        json_schema_extra={"format": "date-time"},
        description="RFC 3339 timestamp in UTC (Z)",
    ),
]
LocalTimestamp = Annotated[
    str,
    Field(
        json_schema_extra={"format": "date-time"},
        description="RFC 3339 timestamp with the offset of the policy's time zone",
    ),
]


def described(description: str, **kwargs: Any) -> Any:
    """A field with its published description."""
    return Field(description=description, **kwargs)


class Shape(BaseModel):
    """An object of a document: keys it does not list are allowed (added later)."""

    model_config = ConfigDict(extra="allow")


class ErrorInfo(Shape):
    code: int = described("the exit code (docs/exit-codes.md)")
    message: str = described("the one error line, secrets masked")


class Document(Shape):
    """A command's whole document: ``ok``, and ``error`` when the command failed."""

    ok: bool = described("true when the command succeeded (exit code 0)")
    error: ErrorInfo | None = described(
        "why the command failed (only when ok is false)", default=None
    )


def dump(document: Shape) -> dict[str, Any]:
    """``document`` as JSON holds it: the keys its producer set, and no other (a key it
    did not set is left out, so a default never adds a key nobody wrote)."""
    return document.model_dump(mode="json", exclude_unset=True)
