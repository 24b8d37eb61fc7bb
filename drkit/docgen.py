"""Generate the reference docs under ``docs/`` from the code: ``python -m drkit.docgen``.

Everything written here is derived from the objects that define behaviour, so the docs
cannot drift from the code: the CLI reference from the click tree of the typer app, the
policy and rules references and their JSON Schemas from the pydantic models, the exit
codes from :data:`drkit.errors.EXIT_CODES`.  The prose that a model cannot hold (what a
key means) lives in :mod:`drkit.docgen_text`, keyed by the names the models use, except a
sanitize strategy's, which its own module holds (``DOC`` and ``FIELD_DOCS``), and a
scheduled job's, which its row of :data:`drkit.schedule.jobs.JOBS` holds; a key without
a meaning is reported, never silently left blank.  ``tests/cli/test_docs.py``
regenerates into a temporary directory and fails when the committed files differ.

Only imported when run: nothing at drkit's start-up depends on it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from drkit import docgen_text as text
from drkit.config import SIZE_PATTERN

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: where a string stands in for a number or a boolean: it names a variable that the
#: loader expands before validation (``level: ${ZSTD_LEVEL:-3}``)
VAR_REFERENCE = r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"
DURATION_PATTERN = r"^\s*(\d+\s*[wdhmsWDHMS]\s*)+$"


class _DrkitSchema(GenerateJsonSchema):
    """Durations are written ``30m``, ``1h``, ``7d`` or a number of seconds, not ISO 8601."""

    def timedelta_schema(self, schema: core_schema.TimedeltaSchema) -> JsonSchemaValue:
        return {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN},
                {"type": "number", "minimum": 0},
            ]
        }

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            from drkit.config import format_duration

            return format_duration(dft)
        return super().encode_default(dft)


# ---------------------------------------------------------------------------
# Schema helpers
# ---------------------------------------------------------------------------


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Resolve every ``$ref`` into ``#/$defs`` (the policy models are not recursive)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
            rest = {k: _inline(v, defs) for k, v in node.items() if k != "$ref"}
            return {**target, **rest}
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def _allow_var_references(node: Any) -> Any:
    """A number, boolean or fixed choice may also be written as a ``${VAR}`` string."""
    if isinstance(node, list):
        return [_allow_var_references(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _allow_var_references(v) for k, v in node.items()}
    kind = node.get("type")
    if kind in ("integer", "number", "boolean") or ("enum" in node and kind == "string"):
        meta = {k: node.pop(k) for k in ("default", "description") if k in node}
        return {"anyOf": [node, {"type": "string", "pattern": VAR_REFERENCE}], **meta}
    return node


def _properties(schema: dict[str, Any]) -> dict[str, Any]:
    """The properties of an object schema, looking through ``anyOf: [object, null]``."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "object" and "properties" in option:
            props: dict[str, Any] = option["properties"]
            return props
    return {}


def _describe(schema: dict[str, Any], meanings: dict[str, str], prefix: str = "") -> None:
    """Put each key's meaning into the schema (editors show it on hover)."""
    for key, sub in _properties(schema).items():
        path = f"{prefix}{key}"
        if path in meanings:
            sub["description"] = meanings[path]
        _describe(sub, meanings, f"{path}.")
        items = sub.get("items")
        if isinstance(items, dict):
            _describe(items, meanings, f"{path}[].")
        named = sub.get("additionalProperties")
        if isinstance(named, dict):  # a mapping of names to sections (copies.NAME)
            _describe(named, meanings, f"{path}.NAME.")


def walk_keys(schema: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every key of an object schema as ``(dotted.path, schema)``, depth first; a
    required key's schema is marked ``required: True`` (a copy, for the tables)."""
    required = set()
    for option in schema.get("anyOf", [schema]):
        required |= set(option.get("required", []))
    for key, sub in _properties(schema).items():
        path = f"{prefix}{key}"
        yield path, ({**sub, "required": True} if key in required else sub)
        yield from walk_keys(sub, f"{path}.")
        items = sub.get("items")
        if isinstance(items, dict):
            yield from walk_keys(items, f"{path}[].")
        named = sub.get("additionalProperties")
        if isinstance(named, dict):
            yield from walk_keys(named, f"{path}.NAME.")


# ---------------------------------------------------------------------------
# Policy
# ---------------------------------------------------------------------------

#: fields of :class:`drkit.config.Policy` that the loader fills in, not the file
INTERNAL_POLICY_FIELDS = ("name", "source", "copy_name")
#: keys :func:`drkit.config.parse_policy` fills in from the environment's name and checks
#: itself (a ``${VAR}`` there is an error), with their JSON type
LOADER_CHECKED_POLICY_KEYS = {"rank": "integer", "protected": "boolean"}


def policy_schema() -> dict[str, Any]:
    """JSON Schema of a policy file, from :class:`drkit.config.Policy`."""
    from drkit.config import STANDARD_RANKS, Policy

    raw = Policy.model_json_schema(schema_generator=_DrkitSchema)
    schema: dict[str, Any] = _strip_titles(_inline(raw, raw.get("$defs", {})))
    for internal in INTERNAL_POLICY_FIELDS:
        schema["properties"].pop(internal, None)
    # environment defaults to the file's stem; rank to the standard names' rank
    schema["required"] = [
        key
        for key in schema.get("required", [])
        if key not in (*INTERNAL_POLICY_FIELDS, "environment", "rank")
    ]
    schema = _allow_var_references(schema)
    # keys the loader defaults from the environment's name and type-checks after ${VAR}
    # expansion: written as a plain value, and their default is in the prose, not here
    for key, kind in LOADER_CHECKED_POLICY_KEYS.items():
        if key in schema["properties"]:
            schema["properties"][key] = {"type": kind}
    standard = ", ".join(f"{k} {v}" for k, v in STANDARD_RANKS.items())
    meanings = {**_model_descriptions(Policy), **text.POLICY_KEYS, **_job_descriptions()}
    meanings["rank"] = meanings["rank"].format(standard=standard)
    # a copy's keys are the repository section's and its retention is a retention
    for path, meaning in list(meanings.items()):
        section, _, rest = path.partition(".")
        if rest and section in ("repository", "retention"):
            key = f"copies.NAME.{rest if section == 'repository' else path}"
            meanings.setdefault(key, meaning)
    _describe(schema, meanings)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "drkit policy (policies/ENV.yaml)",
        "description": text.POLICY_SUMMARY,
        **{k: v for k, v in schema.items() if k not in ("description", "$schema")},
    }


def _job_descriptions() -> dict[str, str]:
    """``schedule.<job>``: what each job's schedule key means, from the jobs table."""
    from drkit.schedule import JOBS

    return {f"schedule.{job.name}": job.doc for job in JOBS.values()}


def _model_descriptions(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """``Field(description=...)`` of a model and its sub-models, by dotted path."""
    found: dict[str, str] = {}
    for name, info in model.model_fields.items():
        if info.description:
            found[f"{prefix}{name}"] = info.description
        for arg in _model_args(info.annotation):
            found.update(_model_descriptions(arg, f"{prefix}{name}."))
    return found


def _model_args(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [a for arg in getattr(annotation, "__args__", ()) for a in _model_args(arg)]


# ---------------------------------------------------------------------------
# Sanitize rules
# ---------------------------------------------------------------------------


def rules_schema() -> dict[str, Any]:
    """JSON Schema of a sanitize rules file: the strategy models with their reference
    text (the registry of :mod:`drkit.sanitize.strategies`), and the document around them
    as :mod:`drkit.sanitize.rules` parses it."""
    from drkit.sanitize import KINDS, STRATEGIES, Defaults

    models = [(model, "validation") for model in (*STRATEGIES.values(), Defaults)]
    _, top = models_json_schema(
        models,  # type: ignore[arg-type]
        ref_template="#/$defs/{model}",
        schema_generator=_DrkitSchema,
    )
    defs: dict[str, Any] = _strip_titles(top["$defs"])
    names: dict[str, str] = {}
    for name, model in STRATEGIES.items():
        definition = defs[model.__name__]
        for field in model.LOADER_FIELDS:
            definition["properties"].pop(field, None)
        definition["required"] = ["strategy", *definition.get("required", [])]
        definition["properties"]["strategy"] = {"const": name}
        definition["description"] = model.DOC
        for field, meaning in model.FIELD_DOCS.items():
            if field in definition["properties"]:
                definition["properties"][field]["description"] = meaning
        names[name] = model.__name__
    bare = [name for name, model in names.items() if not defs[model].get("required", [])[1:]]
    column = _strategy_choice(names, bare)
    keep = defs[names["keep"]]
    for choice in keep["properties"]["pii"]["anyOf"]:  # the kinds a review may accept
        if choice.get("type") == "array":
            choice["items"] = {"enum": list(KINDS)}
            choice["minItems"] = 1
    column["anyOf"].append(
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["pii"],
            "properties": {"pii": keep["properties"]["pii"]},
            "description": "keep, with a person's review: {pii: none} is {strategy: keep, pii: none}",
        }
    )
    nested = {k: v for k, v in names.items() if STRATEGIES[k].AT_JSON_PATH}
    defs["ColumnStrategy"] = column
    defs["JsonPathStrategy"] = _strategy_choice(nested, [b for b in bare if b in nested])
    defs[names["json"]]["properties"]["paths"]["additionalProperties"] = {
        "$ref": "#/$defs/JsonPathStrategy"
    }
    defs["TableRule"] = _table_rule_schema()
    defs = {k: v for k, v in defs.items() if _is_referenced(k, defs)}
    for field, meaning in text.RULES_KEYS.items():
        if field.startswith("defaults."):
            defs["Defaults"]["properties"][field.split(".", 1)[1]]["description"] = meaning
    defs = _allow_var_references(defs)
    defs["Defaults"]["description"] = text.RULES_KEYS["defaults"]
    document: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "drkit sanitize rules (sanitize_rules/SRC-to-DST.yaml)",
        "description": text.RULES_SUMMARY,
        "type": "object",
        "additionalProperties": False,
        "required": ["from", "to"],
        "properties": {
            "version": {"const": 1, "default": 1},
            "from": {"type": "string", "minLength": 1},
            "to": {"type": "string", "minLength": 1},
            "salt": {"type": "string"},
            # the loader reads an empty (null) defaults or tables as none given
            "defaults": {"anyOf": [{"$ref": "#/$defs/Defaults"}, {"type": "null"}]},
            "tables": {
                "type": ["object", "null"],
                "additionalProperties": {"$ref": "#/$defs/TableRule"},
            },
            "subset": {
                "type": "object",
                "additionalProperties": False,
                "required": ["start"],
                "properties": {
                    "start": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["table"],
                        "properties": {
                            "table": {"type": "string", "minLength": 1},
                            "where": {"type": "string"},
                        },
                    },
                    "follow": {"const": "foreign_keys", "default": "foreign_keys"},
                },
            },
        },
        "$defs": dict(sorted(defs.items())),
    }
    for key, meaning in text.RULES_KEYS.items():
        target = _rules_key(document, key)
        if target is not None:
            target["description"] = meaning
    return document


def _is_referenced(name: str, defs: dict[str, Any]) -> bool:
    needle = json.dumps(f"#/$defs/{name}")
    return name in ("ColumnStrategy", "TableRule", "Defaults") or any(
        needle in json.dumps(d) for k, d in defs.items() if k != name
    )


def _rules_key(document: dict[str, Any], key: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = document
    for part in key.split("."):
        if node is None:
            return None
        if "$ref" in node:
            node = document["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        props = node.get("properties", {})
        node = props.get(part)
    return node


def _strategy_choice(names: dict[str, str], bare: list[str]) -> dict[str, Any]:
    return {
        "anyOf": [
            {"enum": bare, "description": "a strategy without options, by name"},
            *({"$ref": f"#/$defs/{model}"} for model in names.values()),
        ]
    }


def _table_rule_schema() -> dict[str, Any]:
    rule = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "columns": {
                "anyOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "additionalProperties": {"$ref": "#/$defs/ColumnStrategy"},
                    },
                    {"type": "array", "items": {"type": "string", "minLength": 1}},
                ]
            },
            "rows": {"enum": ["all", "none"], "default": "all"},
            "where": {"type": ["string", "null"]},
            "copy": {"type": "boolean", "default": False},
            "skip": {"type": "boolean", "default": False},
        },
    }
    for key, sub in rule["properties"].items():  # type: ignore[attr-defined]
        sub["description"] = text.TABLE_KEYS[key]
    return {
        "anyOf": [
            rule,
            {"enum": ["copy", "skip"], "description": text.TABLE_SHORTHAND},
            {"type": "null", "description": "an empty rule: every column by `defaults`"},
        ]
    }


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------


def type_text(schema: dict[str, Any]) -> str:
    """A short human name for a key's type."""
    options = [o for o in _flat_options(schema) if o.get("type") != "null"]
    options = [o for o in options if o.get("pattern") != VAR_REFERENCE] or options
    parts = []
    for option in options:
        if "const" in option:
            parts.append(f"`{option['const']}`")
        elif "enum" in option:
            parts.append(" | ".join(f"`{v}`" for v in option["enum"]))
        elif option.get("pattern") == DURATION_PATTERN:
            parts.append("duration")
        elif option.get("pattern") == SIZE_PATTERN:
            parts.append("size")
        elif option.get("type") == "array":
            parts.append(f"list of {type_text(option.get('items', {}))}")
        elif option.get("type") == "object":
            parts.append("mapping")
        elif option.get("format") == "password":
            parts.append("string (secret)")
        elif isinstance(option.get("type"), list):
            parts += [kind for kind in option["type"] if kind != "null"]
        elif "type" in option:
            parts.append(str(option["type"]) + _bounds(option))
        elif "$ref" in option:
            parts.append("mapping")
    unique = list(dict.fromkeys(parts))
    if unique == ["duration", "number ≥ 0"]:
        return "duration"
    if unique == ["size", "integer ≥ 0"]:
        return "size (10GiB, 500MB or bytes)"
    return " or ".join(unique) or "any"


def _flat_options(schema: dict[str, Any]) -> list[dict[str, Any]]:
    if "anyOf" not in schema:
        return [schema]
    return [flat for option in schema["anyOf"] for flat in _flat_options(option)]


def _bounds(option: dict[str, Any]) -> str:
    low, high = option.get("minimum"), option.get("maximum")
    if low is not None and high is not None:
        return f" {low}–{high}"
    if low is not None:
        return f" ≥ {low}"
    return ""


def default_text(schema: dict[str, Any]) -> str:
    if schema.get("required") is True:
        return "required"
    if "default" not in schema:
        return ""
    value = schema["default"]
    if value is None or value == [] or isinstance(value, dict):
        return ""
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f"`{value}`"


def _cell(value: str) -> str:
    """One table cell: on one line, its pipes escaped (GFM, code spans included)."""
    return " ".join(value.replace("|", "\\|").split())


def key_table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind, default, meaning in rows:
        lines.append(f"| `{key}` | {_cell(kind)} | {_cell(default)} | {_cell(meaning)} |")
    return "\n".join(lines)


def policy_markdown(schema: dict[str, Any]) -> str:
    rows = [
        (key, type_text(sub), default_text(sub), sub.get("description", ""))
        for key, sub in walk_keys(schema)
    ]
    return text.POLICY_DOC.format(table=key_table(rows), summary=text.POLICY_SUMMARY)


def rules_markdown(schema: dict[str, Any]) -> str:
    from drkit.sanitize import STRATEGIES

    defs = schema["$defs"]
    sections = []
    for name, model in STRATEGIES.items():
        definition, meaning = defs[model.__name__], model.DOC
        rows = [
            (key, type_text(sub), default_text(sub), sub.get("description", ""))
            for key, sub in walk_keys(definition)
            if key != "strategy"
        ]
        body = key_table(rows) if rows else "No options."
        sections.append(f"### `{name}`\n\n{meaning}\n\n{body}")
    top_rows = [
        (key, type_text(sub), default_text(sub), sub.get("description", ""))
        for key, sub in walk_keys(schema)
    ]
    at = [row[0] for row in top_rows].index("defaults") + 1
    top_rows[at:at] = [
        (key, type_text(sub), default_text(sub), sub.get("description", ""))
        for key, sub in walk_keys(defs["Defaults"], "defaults.")
    ]
    table_rule = defs["TableRule"]["anyOf"][0]
    table_rows = [
        (key, type_text(sub), default_text(sub), sub.get("description", ""))
        for key, sub in walk_keys(table_rule)
    ]
    return text.RULES_DOC.format(
        summary=text.RULES_SUMMARY,
        top=key_table(top_rows),
        table=key_table(table_rows),
        shorthand=text.TABLE_SHORTHAND,
        strategies="\n\n".join(sections),
    )


def exit_codes_markdown() -> str:
    from drkit.errors import EXIT_CODES

    lines = ["| code | meaning |", "|---|---|"]
    lines += [f"| {code} | {meaning} |" for code, meaning in EXIT_CODES.items()]
    return text.EXIT_CODES_DOC.format(table="\n".join(lines))


# ---------------------------------------------------------------------------
# The CLI reference
# ---------------------------------------------------------------------------


def cli_markdown() -> str:
    from drkit.cli import click_command

    root = click_command()
    sections = list(_command_sections(root, None, "drkit"))
    index = "\n".join(f"- [`{path}`](#{_anchor(path)})" for path, _ in sections)
    body = "\n\n".join(section for _, section in sections)
    return text.CLI_DOC.format(index=index, body=body)


def _anchor(path: str) -> str:
    return "".join(c for c in path.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def _command_sections(command: Any, parent: Any, name: str) -> Iterator[tuple[str, str]]:
    ctx = command.context_class(command, info_name=name, parent=parent)
    path = ctx.command_path
    yield path, _command_section(command, ctx, path)
    for sub_name in getattr(command, "commands", {}):
        sub = command.commands[sub_name]
        if sub.hidden and sub_name != getattr(command, "default_command", None):
            continue
        yield from _command_sections(sub, ctx, sub_name)


def _command_section(command: Any, ctx: Any, path: str) -> str:
    pieces = command.collect_usage_pieces(ctx)
    lines = [f"## `{path}`", "", "```", f"{path} {' '.join(pieces)}".rstrip(), "```", ""]
    lines += [_help_text(command.help or ""), ""]
    arguments = [p for p in command.get_params(ctx) if p.param_type_name == "argument"]
    options = [
        p for p in command.get_params(ctx) if p.param_type_name == "option" and p.name != "help"
    ]
    if arguments:
        lines += ["| argument | required | help |", "|---|---|---|"]
        for arg in arguments:
            name = arg.metavar or arg.name.upper()
            required = "yes" if arg.required else "no"
            cells = [f"`{name}`", required, getattr(arg, "help", "") or ""]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    if options:
        lines += ["| option | value | default | help |", "|---|---|---|---|"]
        for opt in options:
            flags = ", ".join(f"`{o}`" for o in [*opt.opts, *opt.secondary_opts])
            value = "" if opt.is_flag else f"`{opt.metavar}`" if opt.metavar else ""
            cells = [flags, value, _option_default(opt), opt.help or ""]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    from drkit.cli import exit_code_summary

    if command.epilog == exit_code_summary():
        lines += ["Exit codes: [exit-codes.md](exit-codes.md).", ""]
    elif command.epilog:
        lines += [_help_text(command.epilog), ""]
    return "\n".join(lines).rstrip()


def _help_text(help_text: str) -> str:
    out = []
    for paragraph in help_text.split("\n\n"):
        if paragraph.startswith("\b\n"):  # click's "do not re-wrap": preformatted
            out.append("```\n" + paragraph.removeprefix("\b\n").rstrip() + "\n```")
        elif paragraph.strip():
            out.append(" ".join(paragraph.split()))
    return "\n\n".join(out)


def _option_default(opt: Any) -> str:
    if opt.name == "help" or opt.show_default is False:
        return ""
    default = opt.default
    if opt.is_flag and not opt.secondary_opts:
        return ""
    if default is None or callable(default) or default == [] or default == ():
        return ""
    if isinstance(default, bool):
        return f"`{opt.opts[0] if default else opt.secondary_opts[0]}`"
    return f"`{default}`"


# ---------------------------------------------------------------------------
# The --json documents (drkit.cli.documents)
# ---------------------------------------------------------------------------

OUTPUT_DIR = "schemas/output"


def output_schema(name: str) -> dict[str, Any]:
    """The schema of one command's ``--json`` document: its own shape or, when the
    command failed before it had anything to report, the failure document."""
    from drkit.cli import DOCUMENTS, SCHEMA_VERSION, Failure

    model = DOCUMENTS[name]
    _, top = models_json_schema(
        [(model, "validation"), (Failure, "validation")],
        ref_template="#/$defs/{model}",
    )
    description = (model.__doc__ or "").strip()
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$comment": f"drkit --json document shapes, version {SCHEMA_VERSION}",
        "title": f"drkit {name} --json",
        "description": f"{description}; or, on an early failure, the failure document",
        "anyOf": [
            {"$ref": f"#/$defs/{model.__name__}"},
            {"$ref": "#/$defs/Failure"},
        ],
        "$defs": _strip_titles(top["$defs"]),
    }


def failure_schema() -> dict[str, Any]:
    from drkit.cli import SCHEMA_VERSION, Failure

    raw = Failure.model_json_schema(ref_template="#/$defs/{model}")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$comment": f"drkit --json document shapes, version {SCHEMA_VERSION}",
        "title": "drkit failure --json",
        **_strip_titles({k: v for k, v in raw.items() if k != "title"}),
    }


def json_markdown() -> str:
    from drkit.cli import DOCUMENTS

    rows = ["| document | schema |", "|---|---|"]
    for name, model in DOCUMENTS.items():
        summary = _cell((model.__doc__ or "").strip().splitlines()[0])
        rows.append(f"| {summary} | [{name}.schema.json]({OUTPUT_DIR}/{name}.schema.json) |")
    rows.append(
        f"| any command that failed before it had anything to report | "
        f"[failure.schema.json]({OUTPUT_DIR}/failure.schema.json) |"
    )
    return text.JSON_DOC.format(table="\n".join(rows))


def output_files() -> dict[str, str]:
    from drkit.cli import DOCUMENTS

    files = {f"{OUTPUT_DIR}/{name}.schema.json": _json(output_schema(name)) for name in DOCUMENTS}
    files[f"{OUTPUT_DIR}/failure.schema.json"] = _json(failure_schema())
    files["json.md"] = json_markdown()
    return files


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def generate() -> dict[str, str]:
    """Every generated file, by its path under ``docs/``."""
    policy = policy_schema()
    rules = rules_schema()
    return {
        "README.md": text.INDEX_DOC,
        "cli.md": cli_markdown(),
        "policy.md": policy_markdown(policy),
        "sanitize-rules.md": rules_markdown(rules),
        "exit-codes.md": exit_codes_markdown(),
        "schemas/policy.schema.json": _json(policy),
        "schemas/sanitize-rules.schema.json": _json(rules),
        **output_files(),
    }


def _json(document: dict[str, Any]) -> str:
    return json.dumps(copy.deepcopy(document), indent=2, ensure_ascii=False) + "\n"


def undocumented() -> list[str]:
    """Keys of the policy and rules files that have no meaning written down."""
    missing = [
        f"policy: {key}" for key, sub in walk_keys(policy_schema()) if not sub.get("description")
    ]
    rules = rules_schema()
    for name, definition in rules["$defs"].items():
        for key, sub in walk_keys(definition):
            if key != "strategy" and not sub.get("description"):
                missing.append(f"rules: {name}.{key}")
    missing += [f"rules: {k}" for k, s in walk_keys(rules) if not s.get("description")]
    return missing


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drkit.docgen", description="Write drkit's generated reference docs."
    )
    parser.add_argument("--out", type=Path, default=Path("docs"), help="default: ./docs")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is stale"
    )
    options = parser.parse_args(argv)
    files = generate()
    stale = []
    for relative, content in files.items():
        target = options.out / relative
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == content:
            continue
        stale.append(relative)
        if not options.check:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
    for problem in undocumented():
        sys.stderr.write(f"docgen: no meaning written for {problem} (drkit/docgen_text.py)\n")
    if options.check and stale:
        sys.stderr.write(f"stale: {', '.join(stale)}; run python -m drkit.docgen\n")
        return 1
    for relative in stale:
        sys.stdout.write(f"wrote {options.out / relative}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
