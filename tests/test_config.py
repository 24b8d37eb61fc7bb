"""Policies: expansion, validation errors naming file/key/problem, masking, timestamps."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from drkit.config import (
    expand_vars,
    load_policies,
    load_policy,
    mask_url,
    parse_duration,
    parse_timestamp,
)
from drkit.errors import PolicyError, UsageError

REPO = Path(__file__).resolve().parent.parent

BASE = {
    "environment": "prod",
    "database": {"url": "postgresql://app:s3cret@db:5432/app"},
    "repository": {"url": "file:///tmp/repo"},
}


def write(tmp_path: Path, env: str, doc: object) -> Path:
    (tmp_path / f"{env}.yaml").write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return tmp_path


def test_shipped_policies_hold_the_seed_plan() -> None:
    policies = {p.name: p for p in load_policies(policy_dir=REPO / "policies")}
    assert set(policies) == {"dev", "test", "staging", "prod"}
    prod, staging = policies["prod"], policies["staging"]
    assert (prod.retention.daily, prod.retention.weekly, prod.retention.monthly) == (30, 8, 6)
    assert prod.schedule.logical_backup == "0 2 * * *"
    assert prod.objectives.rpo == timedelta(hours=1)
    assert prod.objectives.rto == timedelta(minutes=30)
    assert prod.rank == 3 and prod.wal_archiving
    assert staging.retention.daily == 7
    assert staging.schedule.sanitize is not None
    assert (staging.schedule.sanitize.source, staging.schedule.sanitize.rules) == ("prod", None)
    assert (REPO / "sanitize_rules" / "prod-to-staging.yaml").is_file()  # its default rules
    assert staging.objectives.rpo == timedelta(hours=24)
    assert staging.objectives.rto == timedelta(hours=4)
    for name in ("dev", "test"):
        r = policies[name].retention
        assert (r.daily, r.weekly, r.monthly) == (0, 0, 0)
    assert [policies[n].rank for n in ("dev", "test", "staging", "prod")] == [0, 1, 2, 3]


def test_expansion_with_defaults_and_errors() -> None:
    env = {"A": "one", "EMPTY": ""}
    tree = {"x": "${A}/${B:-two}", "y": ["${EMPTY:-dflt}"], "z": 5}
    assert expand_vars(tree, source="f", env=env) == {"x": "one/two", "y": ["dflt"], "z": 5}
    with pytest.raises(
        PolicyError, match=r"f: database\.url: environment variable NOPE is not set"
    ):
        expand_vars({"database": {"url": "${NOPE}"}}, source="f", env=env)


def test_an_unset_variable_is_read_from_its_file(tmp_path: Path) -> None:
    """Docker secrets: ``${DB_URL}`` reads the file ``DB_URL_FILE`` names, one trailing
    newline dropped, and the value never reaches an error."""
    secret = tmp_path / "db_url"
    secret.write_text("postgresql://app:s3cret@db/app\n")
    env = {"DB_URL_FILE": str(secret)}
    assert expand_vars({"u": "${DB_URL}"}, source="f", env=env) == {
        "u": "postgresql://app:s3cret@db/app"
    }
    # both set: which one is meant is a guess, so refuse
    with pytest.raises(PolicyError, match=r"f: u: both DB_URL and DB_URL_FILE are set") as info:
        expand_vars({"u": "${DB_URL}"}, source="f", env={**env, "DB_URL": "postgresql://x"})
    assert "s3cret" not in str(info.value)
    # a named file that cannot be read is an error, never the default
    missing = {"DB_URL_FILE": str(tmp_path / "absent")}
    with pytest.raises(PolicyError, match=r"f: u: DB_URL_FILE: cannot read .*absent") as info:
        expand_vars({"u": "${DB_URL:-postgresql://fallback}"}, source="f", env=missing)
    assert "fallback" not in str(info.value)


def test_a_policy_reads_its_secret_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "url"
    secret.write_text("postgresql://app:s3cret@db:5432/app")
    monkeypatch.delenv("DRKIT_T_URL", raising=False)
    monkeypatch.setenv("DRKIT_T_URL_FILE", str(secret))
    write(tmp_path, "prod", {**BASE, "database": {"url": "${DRKIT_T_URL}"}})
    policy = load_policy("prod", tmp_path)
    assert policy.database.url.get_secret_value() == "postgresql://app:s3cret@db:5432/app"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"retention": {"daily": -1}}, r"retention\.daily: .*greater than or equal to 0"),
        (
            {"schedule": {"logical_backup": "61 * * * *"}},
            r"schedule.*logical_backup.*does not parse",
        ),
        ({"schedule": {"logical_backup": "every day"}}, r"five-field cron"),
        ({"schedule": {"physical_backup": "0 3 * * 8"}}, r"physical_backup.*day of week '8'"),
        ({"schedule": {"timezone": "Mars/Olympus"}}, r"schedule\.timezone: unknown timezone"),
        ({"surprise": 1}, r"surprise: unknown key"),
        ({"repository": {"url": "ftp://x"}}, r"repository\.url: .*file:// or s3://"),
        ({"repository": {"url": "file:///r", "colour": "red"}}, r"repository\.colour: unknown key"),
        ({"objectives": {"rpo": "soon"}}, r"objectives\.rpo: .*not a duration"),
        ({"environment": "qa"}, r"rank: required for environment 'qa'"),
        ({"wal_archiving": "perhaps"}, r"wal_archiving"),
        (  # prod is protected: no schedule may sanitize into it
            {"schedule": {"sanitize": {"cron": "0 4 * * *", "source": "staging"}}},
            r"schedule\.sanitize: prod is protected",
        ),
        (
            {"protected": False, "schedule": {"sanitize": {"cron": "0 4 * * *", "source": "prod"}}},
            r"schedule\.sanitize\.source: prod is this environment",
        ),
        (
            {"database": {"url": "${UNSET_DRKIT_VAR}"}},
            r"database\.url: environment variable UNSET_DRKIT_VAR",
        ),
    ],
)
def test_invalid_policies_name_file_key_and_problem(
    tmp_path: Path, patch: dict[str, object], message: str
) -> None:
    doc = {**BASE, **patch}
    write(tmp_path, "prod", doc)
    with pytest.raises(PolicyError, match=message) as info:
        load_policy("prod", tmp_path)
    assert str(tmp_path / "prod.yaml") in str(info.value)
    assert "s3cret" not in str(info.value)


def test_cron_weekdays_are_read_as_the_scheduler_reads_them(tmp_path: Path) -> None:
    """cron(5) numbering: 7 is Sunday like 0; the check and the daemon agree."""
    write(
        tmp_path,
        "prod",
        {**BASE, "schedule": {"physical_backup": "0 3 * * 7", "drill": "0 5 * * 5-7"}},
    )
    assert load_policy("prod", tmp_path).schedule.physical_backup == "0 3 * * 7"


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, "prod", "environment: prod\ndatabase: [unclosed\n")
    with pytest.raises(PolicyError, match=r"prod\.yaml: line \d+ invalid YAML"):
        load_policy("prod", tmp_path)


def test_custom_environment_with_rank(tmp_path: Path) -> None:
    write(tmp_path, "qa", {**BASE, "environment": "qa", "rank": 1})
    assert load_policy("qa", tmp_path).rank == 1


def test_masked_policy_hides_the_password(tmp_path: Path) -> None:
    write(tmp_path, "prod", BASE)
    masked = load_policy("prod", tmp_path).masked()
    assert masked["database"]["url"] == "postgresql://app:***@db:5432/app"
    assert "s3cret" not in repr(masked)
    assert "s3cret" not in repr(load_policy("prod", tmp_path))


def test_mask_url_inside_text() -> None:
    text = "failed: postgresql://u:pw@h/db and host=h password='p w' x"
    assert mask_url(text) == "failed: postgresql://u:***@h/db and host=h password=*** x"


def test_durations() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration(45) == timedelta(seconds=45)
    for bad in ("", "1x", "h", "-1h", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_timestamps_must_carry_a_zone() -> None:
    assert parse_timestamp("2026-11-27T10:15:00Z").utcoffset() == timedelta(0)
    assert parse_timestamp("2026-11-27 11:15:00+01:00").utcoffset() == timedelta(hours=1)
    with pytest.raises(UsageError, match="no time zone"):
        parse_timestamp("2026-11-27 11:15:00")
    with pytest.raises(UsageError, match="not an ISO 8601"):
        parse_timestamp("yesterday")


def test_policy_check_cli(tmp_path: Path, run_drkit) -> None:  # type: ignore[no-untyped-def]
    write(tmp_path, "prod", BASE)
    ok = run_drkit("policy", "check", "--json", policy_dir=tmp_path)
    assert ok.code == 0, ok.stderr
    data = ok.json()
    assert data["ok"] and data["policies"]["prod"]["policy"]["database"]["url"].endswith(
        "***@db:5432/app"
    )
    assert "s3cret" not in ok.stdout + ok.stderr
    write(tmp_path, "staging", {**BASE, "environment": "staging", "retention": {"weekly": "x"}})
    bad = run_drkit("policy", "check", policy_dir=tmp_path)
    assert bad.code == 2
    assert "staging.yaml: retention.weekly" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = run_drkit("backups", "nowhere", policy_dir=tmp_path)
    assert missing.code == 2 and "no policy for environment 'nowhere'" in missing.stderr


@pytest.mark.parametrize(
    ("patch", "line"),
    [
        ({"retention": {"weekley": 8}}, "retention.weekley: unknown key (did you mean weekly?)"),
        ({"objectivs": {"rpo": "1h"}}, "objectivs: unknown key (did you mean objectives?)"),
        (
            {"schedule": {"logical_bakup": "0 2 * * *"}},
            "schedule.logical_bakup: unknown key (did you mean logical_backup?)",
        ),
        (
            {"repository": {"url": "file:///r", "compresion": {"algorithm": "zstd"}}},
            "repository.compresion: unknown key (did you mean compression?)",
        ),
        ({"retention": {"zzzzzz": 1}}, "retention.zzzzzz: unknown key"),  # nothing close
    ],
)
def test_a_misspelt_policy_key_names_the_nearest_one_in_one_line_exit_2(
    tmp_path: Path,
    run_drkit,  # type: ignore[no-untyped-def]
    patch: dict[str, object],
    line: str,
) -> None:
    write(tmp_path, "prod", {**BASE, **patch})
    result = run_drkit("policy", "check", "prod", policy_dir=tmp_path)
    assert result.code == 2
    error_lines = [x for x in result.stderr.splitlines() if x.startswith("drkit: error:")]
    assert error_lines == [f"drkit: error: {tmp_path / 'prod.yaml'}: {line}"]
    if "did you mean" not in line:
        assert "did you mean" not in result.stderr


def test_a_misspelt_environment_names_the_nearest_policy(tmp_path: Path) -> None:
    write(tmp_path, "prod", BASE)
    write(tmp_path, "staging", {**BASE, "environment": "staging"})
    with pytest.raises(PolicyError, match=r"'prd' in .* \(did you mean prod\?\) \(policies found"):
        load_policy("prd", tmp_path)
    with pytest.raises(PolicyError) as far:
        load_policy("qa", tmp_path)
    assert "did you mean" not in str(far.value)


def test_retention_wal_is_a_positive_duration_or_absent(tmp_path: Path) -> None:
    write(tmp_path, "prod", {**BASE, "retention": {"daily": 7, "wal": "14d"}})
    policy = load_policy("prod", tmp_path)
    assert policy.retention.wal == timedelta(days=14)
    assert policy.masked()["retention"]["wal"] == "14d"
    write(tmp_path, "prod", BASE)
    assert load_policy("prod", tmp_path).retention.wal is None  # WAL from the oldest kept backup
    for bad in ("0s", "two weeks"):
        write(tmp_path, "prod", {**BASE, "retention": {"wal": bad}})
        with pytest.raises(PolicyError, match=r"retention\.wal") as info:
            load_policy("prod", tmp_path)
        assert info.value.exit_code == 2


def test_a_size_is_read_whole_or_refused(tmp_path: Path) -> None:
    """Sizes are pydantic's ByteSize (KB = 1000, KiB = 1024), but only a whole size:
    trailing text, bits, signs or booleans are a policy error, never a prefix read."""
    for text, expected in (
        ("1.5TiB", int(1.5 * 1024**4)),
        ("500MB", 500 * 1000**2),
        (" 10 gib ", 10 * 1024**3),
        (4096, 4096),
    ):
        write(tmp_path, "prod", {**BASE, "backup": {"parallel_threshold": text}})
        assert load_policy("prod", tmp_path).backup.parallel_threshold == expected
    for bad in ("10GiB of data", "10GiB;", "8bit", "-5", -5, True, "lots", "1e3"):
        write(tmp_path, "prod", {**BASE, "backup": {"parallel_threshold": bad}})
        with pytest.raises(PolicyError, match=r"backup\.parallel_threshold") as info:
            load_policy("prod", tmp_path)
        assert info.value.exit_code == 2
