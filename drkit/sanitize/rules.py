"""Sanitize rules (DESIGN.md §5): the YAML file, its models and its checks.

Everything that can be checked without a database is checked here, so that a bad
rules file stops before any connection is made: unknown keys and strategies, unknown
Faker providers or arguments, template fields that are not columns, JSON paths, and
``where``/subset filters (through :mod:`drkit.sanitize.sqlfilter`).  Each problem is a
:class:`~drkit.errors.RulesError` (exit 2) naming the file, the table, the column and
the reason.  The salt is a ``SecretStr`` and never appears in a message.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator

from drkit.config import StrictModel, expand_vars, read_yaml
from drkit.errors import RulesError
from drkit.sanitize.fakers import faker_for
from drkit.sanitize.jsonpath import JsonPathError, Step, parse_path
from drkit.sanitize.sqlfilter import FilterError, RowFilter, parse_filter

DEFAULT_SCHEMA = "public"
MIN_SALT_LENGTH = 8
PiiKind = Literal["email", "phone", "ip"]
PII_KINDS: tuple[PiiKind, ...] = ("email", "phone", "ip")

# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------


class Keep(StrictModel):
    strategy: Literal["keep"] = "keep"


class Nullify(StrictModel):
    strategy: Literal["nullify"] = "nullify"


class Constant(StrictModel):
    strategy: Literal["constant"] = "constant"
    value: str | int | float | bool | None


class Template(StrictModel):
    strategy: Literal["template"] = "template"
    template: str

    def fields(self) -> list[str]:
        return template_fields(self.template)

    def renders_email(self) -> bool:
        """The literal text has an ``@``: the column holds e-mail addresses."""
        return any("@" in literal for literal, *_ in string.Formatter().parse(self.template))


class Fake(StrictModel):
    strategy: Literal["fake"] = "fake"
    provider: str
    args: dict[str, Any] | list[Any] | None = None
    unique: bool = False
    locale: str = "en_US"


class Hash(StrictModel):
    strategy: Literal["hash"] = "hash"
    length: int = Field(default=32, ge=8, le=64)


class Mask(StrictModel):
    strategy: Literal["mask"] = "mask"
    keep_start: int = Field(default=0, ge=0)
    keep_end: int = Field(default=0, ge=0)
    char: str = Field(default="*", min_length=1, max_length=1)


class Email(StrictModel):
    strategy: Literal["email"] = "email"
    domain: str = "example.com"

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        if not v or "@" in v or any(c.isspace() for c in v) or "." not in v:
            raise ValueError(f"{v!r} is not a mail domain")
        return v.lower()


class ReplacePii(StrictModel):
    strategy: Literal["replace_pii"] = "replace_pii"
    kinds: list[PiiKind] = Field(default_factory=lambda: list(PII_KINDS), min_length=1)


class JsonPaths(StrictModel):
    strategy: Literal["json"] = "json"
    paths: dict[str, Any] = Field(min_length=1)
    # filled by the loader: the parsed path and its strategy, in file order
    compiled: tuple[tuple[str, tuple[Step, ...], Any], ...] = ()


Strategy = (
    Keep | Nullify | Constant | Template | Fake | Hash | Mask | Email | ReplacePii | JsonPaths
)

STRATEGIES: dict[str, type[StrictModel]] = {
    "keep": Keep,
    "nullify": Nullify,
    "constant": Constant,
    "template": Template,
    "fake": Fake,
    "hash": Hash,
    "mask": Mask,
    "email": Email,
    "replace_pii": ReplacePii,
    "json": JsonPaths,
}

# strategies whose output is produced entirely by drkit (no part of the input kept)
GENERATED = (Nullify, Constant, Template, Fake, Hash, Email)


def is_masked(strategy: Strategy) -> bool:
    return not isinstance(strategy, Keep)


def describe_strategy(strategy: Strategy) -> str:
    if isinstance(strategy, Fake):
        return f"fake:{strategy.provider}" + (" unique" if strategy.unique else "")
    if isinstance(strategy, JsonPaths):
        return "json(" + ", ".join(p for p, _, _ in strategy.compiled) + ")"
    return strategy.strategy


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


# ---------------------------------------------------------------------------
# Tables, defaults, subset, the file
# ---------------------------------------------------------------------------


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
    # ``sanitize check`` or run pins the table's columns (drkit.sanitize.pins).
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


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

_TOP_KEYS = {"version", "from", "to", "salt", "defaults", "tables", "subset"}
_TABLE_KEYS = {"columns", "rows", "where", "copy", "skip"}


def _pydantic_reason(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown option"
        problems.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(problems)


class _Context:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, where: str, reason: str) -> RulesError:
        return RulesError(f"{self.source}: {where}: {reason}")


def check_fake(strategy: Fake) -> None:
    """The provider exists and accepts the arguments (one trial call)."""
    try:
        faker = faker_for(strategy.locale)
    except AttributeError:
        raise ValueError(f"unknown Faker locale {strategy.locale!r}") from None
    if strategy.provider.startswith("_") or strategy.provider in {"seed", "seed_instance"}:
        raise ValueError(f"{strategy.provider!r} is not a Faker provider")
    try:
        method = getattr(faker, strategy.provider)
    except AttributeError:
        method = None
    if method is None or not callable(method):
        raise ValueError(f"unknown Faker provider {strategy.provider!r}")
    try:
        if isinstance(strategy.args, dict):
            method(**strategy.args)
        elif isinstance(strategy.args, list):
            method(*strategy.args)
        else:
            method()
    except Exception as exc:  # any failure of the trial call is a rules problem
        raise ValueError(
            f"Faker provider {strategy.provider!r} rejects its args: {type(exc).__name__}: {exc}"
        ) from None


def parse_strategy(raw: Any, *, inside_json: bool = False) -> Strategy:
    """One column's strategy from YAML (``keep`` or ``{strategy: ..., ...}``)."""
    if isinstance(raw, str):
        raw = {"strategy": raw}
    if raw is None:
        raise ValueError("empty strategy (write keep, nullify, or {strategy: ...})")
    if not isinstance(raw, dict):
        raise ValueError("a strategy is a name (keep) or a mapping {strategy: ..., ...}")
    name = raw.get("strategy")
    if not isinstance(name, str):
        raise ValueError("the mapping needs a 'strategy' key")
    model = STRATEGIES.get(name)
    if model is None:
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})")
    if inside_json and name in ("json", "template"):
        raise ValueError(f"strategy {name!r} cannot be used at a JSON path")
    data = dict(raw)
    if name == "json":
        data.pop("compiled", None)
    try:
        strategy: Any = model.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_pydantic_reason(exc)) from None
    if isinstance(strategy, Template):
        strategy.fields()
    elif isinstance(strategy, Fake):
        check_fake(strategy)
    elif isinstance(strategy, JsonPaths):
        compiled = []
        for path, sub in strategy.paths.items():
            try:
                steps = parse_path(path)
                inner = parse_strategy(sub, inside_json=True)
            except (JsonPathError, ValueError) as exc:
                raise ValueError(f"paths[{path!r}]: {exc}") from None
            compiled.append((path, steps, inner))
        strategy = strategy.model_copy(update={"compiled": tuple(compiled)})
    result: Strategy = strategy
    return result


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
        raise ctx.error(f"{where_prefix}.{unknown[0]}", "unknown key")
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
    if raw.get("copy") and any(is_masked(s) for s in columns.values()):
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
        raise ctx.error(unknown[0], "unknown key")
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
        raise ctx.error("defaults", _pydantic_reason(exc)) from None
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
        raise ctx.error(f"subset.{unknown[0]}", "unknown key")
    follow = raw.get("follow", "foreign_keys")
    if follow != "foreign_keys":
        raise ctx.error("subset.follow", "only 'foreign_keys' is supported")
    start = raw.get("start")
    if not isinstance(start, dict) or not isinstance(start.get("table"), str):
        raise ctx.error("subset.start", "needs {table: NAME, where: EXPRESSION}")
    unknown = sorted(str(k) for k in start if k not in ("table", "where"))
    if unknown:
        raise ctx.error(f"subset.start.{unknown[0]}", "unknown key")
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


def default_rules_path(src: str, dst: str) -> Path:
    return Path("sanitize_rules") / f"{src}-to-{dst}.yaml"
