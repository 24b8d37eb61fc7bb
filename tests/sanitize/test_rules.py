"""Rules files: every problem is a RulesError (exit 2) naming file, table, column and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from drkit.errors import RulesError
from drkit.sanitize.rules import FilterError, load_rules, parse_filter, parse_rules
from drkit.sanitize.strategies import Fake, JsonPaths, Template

SALT = "a-test-salt-that-is-long-enough"
ENV = {"DRKIT_SANITIZE_SALT": SALT}


def doc(**tables: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "from": "prod",
        "to": "staging",
        "salt": "${DRKIT_SANITIZE_SALT}",
        "tables": tables,
    }


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "prod-to-staging.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def error_of(tmp_path: Path, data: dict[str, Any]) -> str:
    path = write(tmp_path, data)
    with pytest.raises(RulesError) as info:
        load_rules(path, ENV)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert str(path) in message
    assert SALT not in message
    return message


def test_a_valid_file_loads_with_every_strategy(tmp_path: Path) -> None:
    rules = load_rules(
        write(
            tmp_path,
            doc(
                user={
                    "columns": {
                        "id": "keep",
                        "email": {"strategy": "template", "template": "user_{id}@example.com"},
                        "full_name": {"strategy": "fake", "provider": "name"},
                        "phone": {"strategy": "fake", "provider": "phone_number", "unique": True},
                        "ip": "nullify",
                        "pw": {"strategy": "constant", "value": "$2b$12$sanitized"},
                        "api_key": {"strategy": "hash", "length": 24},
                        "card": {"strategy": "mask", "keep_end": 4},
                        "contact": {"strategy": "email", "domain": "Example.org"},
                        "bio": {"strategy": "replace_pii", "kinds": ["email", "ip"]},
                        "prefs": {
                            "strategy": "json",
                            "paths": {"$.owner.mail": "email", "$.tags[*]": "hash"},
                        },
                    }
                },
                alert_log={"rows": "none"},
                sync_log={"where": "created_at >= now() - interval '7 days'"},
                vulnerability={"copy": True},
            ),
        ),
        ENV,
    )
    user = rules.tables["public.user"]
    assert isinstance(user.columns["email"], Template)
    assert user.columns["email"].fields() == ["id"]
    assert isinstance(user.columns["phone"], Fake) and user.columns["phone"].unique
    prefs = user.columns["prefs"]
    assert isinstance(prefs, JsonPaths) and [p for p, _, _ in prefs.compiled] == [
        "$.owner.mail",
        "$.tags[*]",
    ]
    assert rules.tables["public.alert_log"].rows == "none"
    where = rules.tables["public.sync_log"].where
    assert where is not None and where.columns == {"created_at"}
    assert rules.salt_bytes() == SALT.encode()
    assert SALT not in repr(rules)


@pytest.mark.parametrize(
    ("column_rule", "reason"),
    [
        ({"strategy": "scramble"}, "unknown strategy 'scramble'"),
        ({"strategy": "fake", "provider": "no_such_provider"}, "unknown Faker provider"),
        ({"strategy": "fake", "provider": "name", "args": {"bogus": 1}}, "rejects its args"),
        ({"strategy": "hash", "length": 3}, "length"),
        ({"strategy": "mask", "colour": "red"}, "unknown option"),
        ({"strategy": "hash", "lenght": 8}, "lenght: unknown option (did you mean length?)"),
        ({"strategy": "nullfy"}, "unknown strategy 'nullfy' (did you mean nullify?)"),
        ({"strategy": "template", "template": "{id.__class__}"}, "must name a column"),
        ({"strategy": "template", "template": "user_{nope}"}, "{nope} is not a column"),
        ({"strategy": "json", "paths": {"a.b": "keep"}}, "must start with $"),
        ({"strategy": "json", "paths": {"$.a": {"strategy": "json", "paths": {}}}}, "cannot"),
        ({"strategy": "email", "domain": "not a domain"}, "not a mail domain"),
    ],
)
def test_bad_column_rules_name_file_table_column_and_reason(
    tmp_path: Path, column_rule: dict[str, Any], reason: str
) -> None:
    message = error_of(tmp_path, doc(user={"columns": {"id": "keep", "email": column_rule}}))
    assert "tables.user.columns.email" in message
    assert reason in message


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("1=1; DROP TABLE x", "exactly one boolean expression"),
        ("id IN (WITH d AS (DELETE FROM x RETURNING id) SELECT id FROM d)", "subqueries"),
        ("EXISTS (SELECT 1 FROM pg_user)", "subqueries"),
        ("pg_terminate_backend(1) AND true", "pg_terminate_backend() is not allowed"),
        ("other.id = 1", "another table"),
        ("id + 1", "boolean expression"),
        ("id = $1", "not allowed"),
        ("", "empty"),
        ("id = 'unterminated", "not valid SQL"),
        ("DROP TABLE x", "DROP"),
    ],
)
def test_where_injection_attempts_are_rules_errors(tmp_path: Path, where: str, reason: str) -> None:
    message = error_of(tmp_path, doc(sync_log={"where": where}))
    assert "tables.sync_log.where" in message
    assert reason in message


def test_subset_filter_is_checked_too(tmp_path: Path) -> None:
    data = doc(user={"copy": True})
    data["subset"] = {"start": {"table": "user", "where": "1=1; DELETE FROM user"}}
    assert "subset.start.where" in error_of(tmp_path, data)


def test_filters_render_from_the_checked_tree() -> None:
    checked = parse_filter("id % 10 = 0 /* comment */ AND user.active", table="user")
    assert checked.sql == "id % 10 = 0 AND active"
    assert checked.columns == {"id", "active"}
    with pytest.raises(FilterError):
        checked.check_columns(["id"])


@pytest.mark.parametrize(
    ("data", "where", "reason"),
    [
        ({"vesion": 1}, "vesion", "unknown key"),
        ({"tables": {"user": {"colums": {}}}}, "tables.user.colums", "unknown key"),
        ({"tables": {"user": {"rows": "some"}}}, "tables.user.rows", "'all' or 'none'"),
        ({"defaults": {"unlisted_tables": "maybe"}}, "defaults", "unlisted_tables"),
        ({"to": None}, "to", "missing"),
        ({"salt": "short"}, "salt", "too short"),
        ({"tables": {"v": {"columns": ["id"]}}}, "tables.v.columns", "needs copy: true"),
        ({"tables": {"v": {"copy": True, "columns": ["id", "id"]}}}, "tables.v.columns", "twice"),
        ({"tables": {"v": {"copy": True, "columns": ["id", 3]}}}, "tables.v.columns", "names"),
        ({"tables": {"v": {"copy": True, "pinned": ["id"]}}}, "tables.v.pinned", "unknown key"),
        # a misspelt key names the nearest known one
        ({"vesion": 1}, "vesion", "unknown key (did you mean version?)"),
        ({"tables": {"user": {"colums": {}}}}, "tables.user.colums", "(did you mean columns?)"),
        ({"subset": {"strat": {}}}, "subset.strat", "unknown key (did you mean start?)"),
        (
            {"defaults": {"unlisted_table": "skip"}},
            "defaults",
            "unknown option (did you mean unlisted_tables?)",
        ),
    ],
)
def test_file_level_problems(tmp_path: Path, data: dict[str, Any], where: str, reason: str) -> None:
    full = doc()
    full.update(data)
    message = error_of(tmp_path, full)
    assert f": {where}" in message
    assert reason in message


def test_an_unset_salt_is_reported_when_needed_never_shown(tmp_path: Path) -> None:
    rules = parse_rules(doc(user={"copy": True}), "r.yaml", env={})
    with pytest.raises(RulesError, match="salt: not set"):
        rules.salt_bytes()


def test_short_salt_message_does_not_contain_it(tmp_path: Path) -> None:
    data = doc()
    data["salt"] = "s3cr3t!"
    message = error_of(tmp_path, data)
    assert "s3cr3t!" not in message


def test_copy_true_with_a_column_list_pins_those_columns(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, doc(v={"copy": True, "columns": ["id", "cve"]})), ENV)
    rule = rules.tables["public.v"]
    assert rule.copy and rule.pinned and list(rule.columns) == ["id", "cve"]
    assert not load_rules(write(tmp_path, doc(v={"copy": True})), ENV).tables["public.v"].pinned


def test_pins_written_into_a_file_read_back_exactly(tmp_path: Path) -> None:
    from drkit.sanitize.rules import write_pins

    path = tmp_path / "prod-to-staging.yaml"
    path.write_text(
        "# keep me\nversion: 1\nfrom: prod\nto: staging\nsalt: ${DRKIT_SANITIZE_SALT}\n"
        "tables:\n  v: copy   # a comment\n  w: {copy: true}\n",
        encoding="utf-8",
    )
    odd = ["id", "a, b", "x]: y", "#c", "ünï", "yes", "null", "{z}"]
    write_pins(path, {"v": odd, "w": ["id"]})
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# keep me\n") and "# a comment" in text
    assert "${DRKIT_SANITIZE_SALT}" in text
    rules = load_rules(path, ENV)
    assert list(rules.tables["public.v"].columns) == odd and rules.tables["public.v"].pinned
    assert list(rules.tables["public.w"].columns) == ["id"]
    with pytest.raises(ValueError, match="already has columns"):
        write_pins(path, {"w": ["id"]})


def test_a_review_of_a_kept_column_is_checked(tmp_path: Path) -> None:
    """``pii: none`` (or the kinds accepted) records a person's review of a kept column;
    anything else is a rules error (exit 2), and only kept columns carry one."""
    from drkit.sanitize.strategies import ALL_KINDS, Keep

    def column(spec: Any) -> Any:
        doc = {
            "version": 1,
            "from": "prod",
            "to": "staging",
            "tables": {"t": {"columns": {"id": "keep", "note": spec}}},
        }
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump(doc))
        return load_rules(path).tables["public.t"].columns["note"]

    reviewed = column({"strategy": "keep", "pii": "none"})
    assert isinstance(reviewed, Keep) and reviewed.accepted_pii() == ALL_KINDS
    assert column({"pii": "none"}) == reviewed
    assert column({"strategy": "keep", "pii": ["ip"]}).accepted_pii() == {"ip"}
    assert column("keep").accepted_pii() is None
    for bad, reason in (
        ({"strategy": "keep", "pii": "maybe"}, "pii"),
        ({"strategy": "keep", "pii": ["zip"]}, "unknown kind 'zip'"),
        ({"strategy": "keep", "pii": []}, "empty list"),
        ({"strategy": "email", "pii": "none"}, "pii: unknown option"),
    ):
        with pytest.raises(RulesError, match=reason):
            column(bad)
