"""``json``: a strategy at each JSON path of a json/jsonb (or text) column.

Paths are the small JSONPath subset of :mod:`.jsonpath`, parsed once when the rules load
(into ``compiled``, in file order); each run applies them in that order to the parsed
document and writes it back as JSON.  A path's strategy is any but ``json`` and
``template``; ``keep``, ``nullify``, ``constant`` and ``replace_pii`` keep the JSON type
of what they leave, the others replace the value's text (see
:meth:`~.base.Strategy.json_rewrite`).  A value that is not JSON fails the copy.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import Field

from drkit.sanitize.strategies.base import KeptFn, ParseFn, Strategy, ValueFn
from drkit.sanitize.strategies.jsonpath import JsonPathError, Step, apply_path, parse_path

if TYPE_CHECKING:
    from drkit.sanitize.schema import Column, Table
    from drkit.sanitize.strategies.compiler import Compiler


class JsonPaths(Strategy):
    strategy: Literal["json"] = "json"
    paths: dict[str, Any] = Field(min_length=1)
    # filled by the loader: the parsed path and its strategy, in file order
    compiled: tuple[tuple[str, tuple[Step, ...], Any], ...] = ()

    DOC = "Applies a strategy at each JSON path of a json/jsonb column."
    FIELD_DOCS = {
        "paths": 'JSONPath ("$.a.b", "$.items[*].email") → strategy (not json or template).'
    }
    AT_JSON_PATH = False
    LOADER_FIELDS = ("compiled",)

    def describe(self) -> str:
        return "json(" + ", ".join(p for p, _, _ in self.compiled) + ")"

    def checked(self, parse: ParseFn) -> Self:
        compiled = []
        for path, sub in self.paths.items():
            try:
                steps = parse_path(path)
                inner = parse(sub)
            except (JsonPathError, ValueError) as exc:
                raise ValueError(f"paths[{path!r}]: {exc}") from None
            compiled.append((path, steps, inner))
        return self.model_copy(update={"compiled": tuple(compiled)})

    def misfit(self, table: Table, column: Column, kept: KeptFn) -> str | None:
        if column.is_json or column.category == "S":
            return None
        return f"json needs a json/jsonb/text column, not {column.type}"

    def reads_email_map(self) -> bool:
        return any(sub.reads_email_map() for _, _, sub in self.compiled)

    def value_fn(self, run: Compiler) -> ValueFn:
        steps = [(path_steps, sub.json_rewrite(run)) for _, path_steps, sub in self.compiled]

        def fn(value: str) -> str:
            try:
                doc = json.loads(value)
            except ValueError:
                raise ValueError("the column holds text that is not JSON") from None
            for path_steps, rewrite in steps:
                doc = apply_path(doc, path_steps, rewrite)
            return json.dumps(doc, ensure_ascii=False)

        return run.cached(fn)
