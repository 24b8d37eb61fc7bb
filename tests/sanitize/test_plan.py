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


def test_a_column_added_to_a_pinned_copy_table_is_drift() -> None:
    pinned = {"org": {"copy": True, "columns": ["id"]}, "user": GOOD_USER}
    plan = build_plan(rules(pinned), schema())
    assert plan.coverage.unlisted_columns == ["public.org.name"]
    assert plan.coverage.unpinned == {}
    with pytest.raises(CheckFailed, match=r"column public\.org\.name is not in the rules"):
        plan.coverage.raise_for_failures("r.yaml")
    # a mapping of keeps pins as well; under unlisted_columns: keep the column is kept
    keeps = {"org": {"copy": True, "columns": {"id": "keep"}}, "user": GOOD_USER}
    assert build_plan(rules(keeps), schema()).coverage.unlisted_columns == ["public.org.name"]
    lenient = build_plan(rules(pinned, unlisted_columns="keep"), schema())
    assert lenient.coverage.failures() == []
    assert ("public.org" in lenient.by_key()) and lenient.by_key()["public.org"].action == "copy"


def test_an_unpinned_copy_table_is_reported_for_pinning() -> None:
    plan = build_plan(rules({"org": {"copy": True}, "user": GOOD_USER}), schema())
    assert plan.coverage.unpinned == {"public.org": ["id", "name"]}
    assert plan.coverage.failures() == []


def test_a_pinned_column_that_is_gone_is_a_rules_error() -> None:
    with pytest.raises(RulesError, match=r"tables\.org\.columns\.ghost: no column ghost"):
        build_plan(rules({"org": {"copy": True, "columns": ["id", "ghost"]}}), schema())


def test_the_email_primer_registers_template_outputs_from_rows_in_any_column_order() -> None:
    from drkit.sanitize.emailmap import primer_for
    from drkit.sanitize.strategies import Compiler, Pseudonymizer, ReplacePii

    plan = build_plan(rules({"org": {"copy": True}, "user": GOOD_USER}), schema())
    compiler = Compiler(Pseudonymizer(b"primer-test-salt"))
    assert primer_for(plan.by_key()["public.org"], compiler) is None
    live = primer_for(plan.by_key()["public.user"], compiler)
    assert live is not None and live.columns == ["id", "email"]
    backup = primer_for(
        plan.by_key()["public.user"], compiler, order=["phone", "email", "ip", "id", "org_id"]
    )
    assert backup is not None
    backup.feed(b"+1 555 0100\tAnna@X.example\t10.0.0.1\t7\t1\n")
    live.feed(b"8\tbob@x.example\n")
    replace = compiler.value_fn(ReplacePii(kinds=["email"]))
    assert replace("to ANNA@x.example, bob@X.example") == (
        "to user_7@example.com, user_8@example.com"
    )
