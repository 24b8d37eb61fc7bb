"""A rules file as the run reads it: the defaults, one rule per table, the subset.

What each field means for the copy is in :mod:`drkit.sanitize.plan` (the rules meet
SRC's schema) and in the strategies (:mod:`drkit.sanitize.strategies`).  The salt is a
``SecretStr`` and never appears in a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from drkit.config import StrictModel
from drkit.errors import RulesError
from drkit.sanitize.rules.sqlfilter import RowFilter
from drkit.sanitize.strategies import JsonPaths, Strategy

DEFAULT_SCHEMA = "public"


@dataclass(frozen=True)
class TableRule:
    name: str  # as written in the file
    schema: str
    table: str
    columns: dict[str, Strategy] = field(default_factory=dict)
    rows: Literal["all", "none"] = "all"
    where: RowFilter | None = None
    copy: bool = False
    skip: bool = False
    # copy: true with a column list (or a mapping of keeps): only those columns are
    # copied; any other column of the table is schema drift.  Without one, the first
    # ``sanitize check`` or run pins the table's columns (drkit.sanitize.rules.pins).
    pinned: bool = False

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class SubsetRule:
    schema: str
    table: str
    where: RowFilter
    follow: Literal["foreign_keys"] = "foreign_keys"

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.table}"


class Defaults(StrictModel):
    unlisted_tables: Literal["fail", "copy", "skip"] = "fail"
    unlisted_columns: Literal["fail", "keep"] = "fail"


@dataclass(frozen=True)
class Rules:
    source: str  # the file, for messages
    from_env: str
    to_env: str
    salt: SecretStr | None
    defaults: Defaults
    tables: dict[str, TableRule]  # by "schema.table"
    subset: SubsetRule | None = None

    def salt_bytes(self) -> bytes:
        if self.salt is None:
            raise RulesError(
                f"{self.source}: salt: not set (set the environment variable the file names, "
                "e.g. DRKIT_SANITIZE_SALT)"
            )
        return self.salt.get_secret_value().encode("utf-8")

    def table(self, schema: str, table: str) -> TableRule | None:
        return self.tables.get(f"{schema}.{table}")

    def strategies(self) -> list[Strategy]:
        """Every strategy in the file, including those inside json paths."""
        found: list[Strategy] = []
        for rule in self.tables.values():
            for strategy in rule.columns.values():
                found.append(strategy)
                if isinstance(strategy, JsonPaths):
                    found.extend(s for _, _, s in strategy.compiled)
        return found


def split_table_name(name: str) -> tuple[str, str]:
    schema, dot, table = name.partition(".")
    if not dot:
        return DEFAULT_SCHEMA, name
    return schema, table


def default_rules_path(src: str, dst: str) -> Path:
    return Path("sanitize_rules") / f"{src}-to-{dst}.yaml"
