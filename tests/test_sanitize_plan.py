"""Rules against a schema: misfits are rules errors (exit 2), drift is a check failure (exit 3)."""

from __future__ import annotations

from typing import Any

import pytest

from drkit.errors import CheckFailed, RulesError
from drkit.sanitize.plan import build_plan
from drkit.sanitize.rules import parse_rules
from drkit.sanitize.schema import Column, ForeignKey, Schema, Table


def col(name: str, typname: str = "text", *, not_null: bool = False) -> Column:
    category = {"text": "S", "int4": "N", "inet": "I", "jsonb": "U"}[typname]
    return Column(name, typname, typname, category, "", False, not_null)


def schema() -> Schema:
    org = Table("public", "org", 10, [col("id", "int4", not_null=True), col("name")], ("id",))
    user = Table(
        "public",
        "user",
        100,
        [
            col("id", "int4", not_null=True),
            col("org_id", "int4"),
            col("email", not_null=True),
            col("phone"),
            col("ip", "inet"),
        ],
        ("id",),
        [("email",)],
        [ForeignKey("user_org_fk", ("org_id",), "public.org", ("id",))],
    )
    return Schema({t.key: t for t in (org, user)}, [])


def rules(tables: dict[str, Any], **defaults: str) -> Any:
    doc = {
        "version": 1,
        "from": "prod",
        "to": "staging",
        "salt": "0123456789abcdef",
        "defaults": defaults or {"unlisted_tables": "fail", "unlisted_columns": "fail"},
        "tables": tables,
    }
    return parse_rules(doc, "r.yaml")


GOOD_USER = {
    "columns": {
        "id": "keep",
        "org_id": "keep",
        "email": {"strategy": "template", "template": "user_{id}@example.com"},
        "phone": {"strategy": "fake", "provider": "phone_number"},
        "ip": "nullify",
    }
}


def test_a_complete_file_plans_every_table() -> None:
    plan = build_plan(rules({"org": {"copy": True}, "user": GOOD_USER}), schema())
    by_key = plan.by_key()
    assert by_key["public.org"].action == "copy"
    assert by_key["public.user"].action == "mask"
    assert plan.coverage.failures() == []
    assert plan.coverage.pii_kept == ["public.org.name (name)"]


@pytest.mark.parametrize(
    ("user_columns", "reason"),
    [
        ({"nope": "keep"}, "no column nope in public.user"),
        ({"email": {"strategy": "template", "template": "{phone}@x.org"}}, "unique column"),
        ({"email": {"strategy": "fake", "provider": "email"}}, "needs unique: true"),
        ({"email": {"strategy": "hash", "length": 8}}, "length >= 16"),
        ({"email": {"strategy": "constant", "value": "x"}}, "collide"),
        ({"email": "nullify"}, "NOT NULL"),
        ({"ip": {"strategy": "hash"}}, "needs a text column"),
    ],
)
def test_rules_that_do_not_fit_the_schema(user_columns: dict[str, Any], reason: str) -> None:
    columns = {**GOOD_USER["columns"], **user_columns}
    with pytest.raises(RulesError) as info:
        build_plan(rules({"org": {"copy": True}, "user": {"columns": columns}}), schema())
    assert reason in str(info.value)
    assert "r.yaml: tables.user" in str(info.value)


def test_unknown_table_and_filter_column() -> None:
    with pytest.raises(RulesError) as ghost:
        build_plan(rules({"ghost": {"copy": True}}), schema())
    assert "no table public.ghost" in str(ghost.value)
    with pytest.raises(RulesError) as where:
        build_plan(rules({"org": {"copy": True, "where": "email = 'x'"}}), schema())
    assert "tables.org.where: column 'email'" in str(where.value)


def test_drift_fails_under_fail_and_passes_under_keep_or_copy() -> None:
    user = {"columns": {k: v for k, v in GOOD_USER["columns"].items() if k != "phone"}}
    plan = build_plan(rules({"user": user}), schema())
    assert plan.coverage.unlisted_tables == ["public.org"]
    assert plan.coverage.unlisted_columns == ["public.user.phone"]
    with pytest.raises(CheckFailed) as info:
        plan.coverage.raise_for_failures("r.yaml")
    assert info.value.exit_code == 3
    lenient = build_plan(
        rules({"user": user}, unlisted_tables="copy", unlisted_columns="keep"), schema()
    )
    assert lenient.coverage.failures() == []
    assert "public.user.phone (phone)" in lenient.coverage.pii_kept
