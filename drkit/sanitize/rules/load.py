"""Reading a sanitize rules file: the YAML, its models and every check that needs no
database.

Everything that can be checked without a database is checked here, so that a bad rules
file stops before any connection is made: unknown keys and strategies, what each
strategy checks of its own options (unknown Faker providers or arguments, template
fields, JSON paths: :meth:`~drkit.sanitize.strategies.base.Strategy.checked`), template
fields that are not columns, and ``where``/subset filters (through
:mod:`drkit.sanitize.rules.sqlfilter`).  Each problem is a
:class:`~drkit.errors.RulesError` (exit 2) naming the file, the table, the column and
the reason.  The salt is a ``SecretStr`` and never appears in a message.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from drkit.config import Policy, expand_vars, read_yaml
from drkit.errors import RulesError, UsageError
from drkit.sanitize.rules.model import (
    Defaults,
    Rules,
    SubsetRule,
    TableRule,
    default_rules_path,
    split_table_name,
)
from drkit.sanitize.rules.sqlfilter import FilterError, RowFilter, parse_filter
from drkit.sanitize.strategies import STRATEGIES, Strategy, Template
from drkit.suggest import did_you_mean, model_keys, unknown_key

MIN_SALT_LENGTH = 8

_TOP_KEYS = {"version", "from", "to", "salt", "defaults", "tables", "subset"}
_TABLE_KEYS = {"columns", "rows", "where", "copy", "skip"}


def _pydantic_reason(exc: ValidationError, model: Any = None) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            known = model_keys(model, err["loc"][:-1]) if model is not None else []
            msg = "unknown option" + did_you_mean(err["loc"][-1], known)
        problems.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(problems)


class _Context:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, where: str, reason: str) -> RulesError:
        return RulesError(f"{self.source}: {where}: {reason}")


def parse_strategy(raw: Any, *, inside_json: bool = False) -> Strategy:
    """One column's strategy from YAML (``keep`` or ``{strategy: ..., ...}``)."""
    if isinstance(raw, str):
        raw = {"strategy": raw}
    if raw is None:
        raise ValueError("empty strategy (write keep, nullify, or {strategy: ...})")
    if not isinstance(raw, dict):
        raise ValueError("a strategy is a name (keep) or a mapping {strategy: ..., ...}")
    if "strategy" not in raw and "pii" in raw:
        raw = {"strategy": "keep", **raw}  # {pii: none}: a kept column, reviewed
    name = raw.get("strategy")
    if not isinstance(name, str):
        raise ValueError("the mapping needs a 'strategy' key")
    model = STRATEGIES.get(name)
    if model is None:
        raise ValueError(
            f"unknown strategy {name!r}{did_you_mean(name, STRATEGIES)} "
            f"(known: {', '.join(STRATEGIES)})"
        )
    if inside_json and not model.AT_JSON_PATH:
        raise ValueError(f"strategy {name!r} cannot be used at a JSON path")
    data = {k: v for k, v in raw.items() if k not in model.LOADER_FIELDS}
    try:
        strategy = model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_pydantic_reason(exc, model)) from None
    return strategy.checked(_AT_JSON_PATH)


#: how a ``json`` strategy reads the strategies of its paths
_AT_JSON_PATH = functools.partial(parse_strategy, inside_json=True)


def _parse_table(ctx: _Context, name: str, raw: Any, defaults: Defaults) -> TableRule:
    where_prefix = f"tables.{name}"
    if not isinstance(name, str) or not name:
        raise ctx.error("tables", "a table name must be a non-empty string")
    schema, table = split_table_name(name)
    if raw in ("copy", "skip"):
        raw = {raw: True}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ctx.error(
            where_prefix, "a table rule is a mapping (columns, rows, where, copy, skip)"
        )
    unknown = sorted(str(k) for k in raw if k not in _TABLE_KEYS)
    if unknown:
        raise ctx.error(f"{where_prefix}.{unknown[0]}", unknown_key(unknown[0], _TABLE_KEYS))
    rows = raw.get("rows", "all")
    if rows not in ("all", "none"):
        raise ctx.error(f"{where_prefix}.rows", "must be 'all' or 'none'")
    for flag in ("copy", "skip"):
        if not isinstance(raw.get(flag, False), bool):
            raise ctx.error(f"{where_prefix}.{flag}", "must be true or false")
    raw_columns = raw.get("columns") or {}
    if isinstance(raw_columns, list):
        raw_columns = _pinned_list(ctx, where_prefix, raw_columns, copy=bool(raw.get("copy")))
    if not isinstance(raw_columns, dict):
        raise ctx.error(f"{where_prefix}.columns", "must map column names to strategies")
    columns: dict[str, Strategy] = {}
    for column, spec in raw_columns.items():
        if not isinstance(column, str) or not column:
            raise ctx.error(f"{where_prefix}.columns", "a column name must be a non-empty string")
        try:
            columns[column] = parse_strategy(spec)
        except ValueError as exc:
            raise ctx.error(f"{where_prefix}.columns.{column}", str(exc)) from None
    if raw.get("copy") and any(s.MASKS for s in columns.values()):
        raise ctx.error(f"{where_prefix}.copy", "copy: true keeps every column; remove the masks")
    where: RowFilter | None = None
    if raw.get("where") is not None:
        try:
            where = parse_filter(raw["where"], table=table)
        except FilterError as exc:
            raise ctx.error(f"{where_prefix}.where", str(exc)) from None
    # template fields must be columns; against the listed columns when the file lists all
    for column, strategy in columns.items():
        if not isinstance(strategy, Template):
            continue
        for name_ in strategy.fields():
            target = columns.get(name_)
            if target is None and defaults.unlisted_columns == "fail" and not raw.get("copy"):
                raise ctx.error(
                    f"{where_prefix}.columns.{column}",
                    f"template field {{{name_}}} is not a column of {name}",
                )
            if isinstance(target, Template):
                raise ctx.error(
                    f"{where_prefix}.columns.{column}",
                    f"template field {{{name_}}} is itself a template column",
                )
    return TableRule(
        name=name,
        schema=schema,
        table=table,
        columns=columns,
        rows=rows,
        where=where,
        copy=bool(raw.get("copy", False)),
        skip=bool(raw.get("skip", False)),
        pinned=bool(raw.get("copy", False)) and bool(columns),
    )


def _pinned_list(
    ctx: _Context, where_prefix: str, names: list[Any], *, copy: bool
) -> dict[str, Any]:
    """``copy: true, columns: [id, cve]``: the columns the rules have seen, all kept."""
    where = f"{where_prefix}.columns"
    if not copy:
        raise ctx.error(
            where, "a list of columns needs copy: true (else map each column to a strategy)"
        )
    if not all(isinstance(n, str) and n for n in names):
        raise ctx.error(where, "a pinned list holds column names")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ctx.error(where, f"{name} is listed twice")
        seen.add(name)
    return dict.fromkeys(names, "keep")


def parse_rules(raw: Any, source: str, env: Mapping[str, str] | None = None) -> Rules:
    ctx = _Context(source)
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: a rules file is a mapping (version, from, to, salt, tables)")
    unknown = sorted(str(k) for k in raw if k not in _TOP_KEYS)
    if unknown:
        raise ctx.error(unknown[0], unknown_key(unknown[0], _TOP_KEYS))
    if raw.get("version", 1) != 1:
        raise ctx.error("version", "only version 1 is supported")
    salt_raw = raw.get("salt")
    rest = {k: v for k, v in raw.items() if k != "salt"}
    data = expand_vars(rest, source=source, env=env, error=RulesError)
    salt: SecretStr | None = None
    if salt_raw is not None:
        try:
            salt_text = expand_vars(salt_raw, source=source, env=env, error=RulesError, path="salt")
        except RulesError:
            salt_text = None  # unset variable: reported when a run needs the salt
        if salt_text is not None:
            if not isinstance(salt_text, str):
                raise ctx.error("salt", "must be a string")
            if len(salt_text) < MIN_SALT_LENGTH:
                raise ctx.error("salt", f"too short: use at least {MIN_SALT_LENGTH} characters")
            salt = SecretStr(salt_text)
    for key in ("from", "to"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ctx.error(key, "missing: name the environment")
    try:
        defaults = Defaults.model_validate(data.get("defaults") or {})
    except ValidationError as exc:
        raise ctx.error("defaults", _pydantic_reason(exc, Defaults)) from None
    tables_raw = data.get("tables") or {}
    if not isinstance(tables_raw, dict):
        raise ctx.error("tables", "must map table names to rules")
    tables: dict[str, TableRule] = {}
    for name, table_raw in tables_raw.items():
        rule = _parse_table(ctx, str(name), table_raw, defaults)
        if rule.key in tables:
            raise ctx.error(f"tables.{name}", f"{rule.key} is listed twice")
        tables[rule.key] = rule
    subset = _parse_subset(ctx, data.get("subset"))
    return Rules(
        source=source,
        from_env=data["from"],
        to_env=data["to"],
        salt=salt,
        defaults=defaults,
        tables=tables,
        subset=subset,
    )


def _parse_subset(ctx: _Context, raw: Any) -> SubsetRule | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ctx.error("subset", "must be a mapping {start: {table, where}, follow}")
    unknown = sorted(str(k) for k in raw if k not in ("start", "follow"))
    if unknown:
        raise ctx.error(f"subset.{unknown[0]}", unknown_key(unknown[0], ("start", "follow")))
    follow = raw.get("follow", "foreign_keys")
    if follow != "foreign_keys":
        raise ctx.error("subset.follow", "only 'foreign_keys' is supported")
    start = raw.get("start")
    if not isinstance(start, dict) or not isinstance(start.get("table"), str):
        raise ctx.error("subset.start", "needs {table: NAME, where: EXPRESSION}")
    unknown = sorted(str(k) for k in start if k not in ("table", "where"))
    if unknown:
        raise ctx.error(f"subset.start.{unknown[0]}", unknown_key(unknown[0], ("table", "where")))
    schema, table = split_table_name(start["table"])
    try:
        where = parse_filter(start.get("where") or "", table=table)
    except FilterError as exc:
        raise ctx.error(f"subset.start.where ({start['table']})", str(exc)) from None
    return SubsetRule(schema=schema, table=table, where=where)


def load_rules(path: Path | str, env: Mapping[str, str] | None = None) -> Rules:
    """Read and check a rules file.  An unset salt variable is left for the run to report."""
    path = Path(path)
    raw = read_yaml(path, RulesError)
    return parse_rules(raw, str(path), env)


def resolve_rules(
    src: Policy, dst: Policy, path: Path | None, *, salt_required: bool = True
) -> Rules:
    """The rules file for SRC -> DST (default ``sanitize_rules/SRC-to-DST.yaml``), which
    must say it is for that pair; a run also needs its salt (``sanitize check`` does not)."""
    rules = load_rules(path or default_rules_path(src.name, dst.name))
    if (rules.from_env, rules.to_env) != (src.name, dst.name):
        raise UsageError(
            f"{rules.source}: the rules are for {rules.from_env} -> {rules.to_env}, "
            f"not {src.name} -> {dst.name}"
        )
    if salt_required:
        rules.salt_bytes()  # an unset salt stops here, before any connection
    return rules
