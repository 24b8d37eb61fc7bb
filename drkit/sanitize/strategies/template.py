"""``template``: a Python format string over the row's other columns.

A template is row-level: its fields name columns of the same row, read after their own
strategies (so ``user_{id}`` over a kept ``id`` gives the row's id, a field over a
masked column its pseudonym); NULL in any field gives NULL.  So it has no function over
one value: :class:`~drkit.sanitize.transform.RowTransformer` renders it for each row
through ``Compiler.template``, which is :meth:`Template.render`.
"""

from __future__ import annotations

import functools
import string
from typing import TYPE_CHECKING, Literal, Self

from drkit.sanitize.strategies.base import KeptFn, ParseFn, Strategy, ValueFn

if TYPE_CHECKING:
    from drkit.sanitize.schema import Column, Table
    from drkit.sanitize.strategies.compiler import Compiler


class Template(Strategy):
    strategy: Literal["template"] = "template"
    template: str

    DOC = (
        "A Python format string; its fields name columns of the same row "
        '(`"user_{id}@example.com"`).'
    )
    FIELD_DOCS = {"template": "The format string."}
    AT_JSON_PATH = False

    def fields(self) -> list[str]:
        return list(_parsed_fields(self.template))

    def renders_email(self) -> bool:
        """The literal text has an ``@``: the column holds e-mail addresses."""
        return any("@" in literal for literal, *_ in string.Formatter().parse(self.template))

    def render(self, values: dict[str, str | None]) -> str | None:
        """The output for a row's (already sanitized) values; NULL if a field is."""
        for name in _parsed_fields(self.template):  # (a loop: no generator per row)
            if values.get(name) is None:
                return None
        return self.template.format_map(values)

    def checked(self, parse: ParseFn) -> Self:
        self.fields()
        return self

    def misfit(self, table: Table, column: Column, kept: KeptFn) -> str | None:
        return self._fields_misfit(table, column) or self._key_misfit(table, column, kept)

    def _fields_misfit(self, table: Table, column: Column) -> str | None:
        """Fields that exist and are copied; a rendering that fits the column's type."""
        fields = self.fields()
        for name in fields:
            found = table.column(name)
            if found is None:
                return f"template field {{{name}}} is not a column of {table.key}"
            if found.generated:
                return (
                    f"template field {{{name}}} is a generated column, computed in the target "
                    "after the copy: use the columns it is computed from"
                )
        try:
            rendered = self.template.format_map({name: "1" for name in fields})
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return f"template {self.template!r} cannot render: {exc}"
        if column.category == "N" and not rendered.lstrip("-").isdigit():
            literal = "".join(part for part, *_ in string.Formatter().parse(self.template))
            if literal:
                return (
                    f"template {self.template!r} renders text with {literal!r} into "
                    f"{column.name}, a {column.type} column"
                )
        return None

    def _key_misfit(self, table: Table, column: Column, kept: KeptFn) -> str | None:
        """On a unique column, the template must carry a whole kept key, so it never
        collides."""
        if not table.in_unique_key(column.name):
            return None
        kept_fields = {name for name in self.fields() if kept(name)}
        keys = [table.primary_key, *table.unique_keys] if table.primary_key else table.unique_keys
        if any(key and set(key) <= kept_fields for key in keys):
            return None
        return (
            "template on a unique column must use every column of a kept primary or "
            "unique key (e.g. {id}) so it never collides"
        )

    def reads_email_map(self) -> bool:
        return False

    def value_fn(self, run: Compiler) -> ValueFn:
        raise TypeError("templates need the row: use Compiler.template")


@functools.lru_cache(maxsize=256)
def _parsed_fields(template: str) -> tuple[str, ...]:
    """The field names of a template, parsed once (a template renders every row)."""
    return tuple(template_fields(template))


def template_fields(template: str) -> list[str]:
    """The field names of a template; attribute/index access and conversions are refused."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"template {template!r} does not parse: {exc}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or any(c in name for c in ".[]"):
            raise ValueError(
                f"template field {{{name}}} must name a column (no positional, ., or [] access)"
            )
        if conversion:
            raise ValueError(f"template field {{{name}!{conversion}}}: conversions are not allowed")
        if spec and ("{" in spec or "}" in spec):
            raise ValueError(f"template field {{{name}}}: nested fields are not allowed")
        names.append(name)
    return names
