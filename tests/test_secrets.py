"""Secrets never show: not in a child's argv, not in any log record, not half-masked.

* ``drkit -v backup`` to S3 with AWS keys and a session token in the environment:
  botocore's debug log prints signed requests; stderr must hold none of them.
* While pg_dump runs, ``/proc/PID/cmdline`` of every child of drkit holds neither the
  password nor the ``sslpassword`` of the database url (they travel in ``PGPASSWORD``
  and a 0600 service file that is gone afterwards).
* A password holding ``@`` is masked whole.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from drkit.config import mask_url as config_mask_url
from drkit.pg.conninfo import for_subprocess, parse
from drkit.redact import RedactFilter, mask_url
from drkit.schedule import scrub
from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget


def test_a_password_holding_at_signs_is_masked_whole() -> None:
    assert mask_url("x postgresql://u:p@ss@host/db y") == "x postgresql://u:***@host/db y"
    assert mask_url("postgresql://u:a@b@c@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("host=h sslpassword=s3cr3t password='a b' x") == (
        "host=h sslpassword=*** password=*** x"
    )
    assert mask_url("key AGE-SECRET-KEY-1QQQQQQQ and AKIAIOSFODNN7EXAMPLE") == "key *** and ***"
    # one function: the daemon's scrub and config's name are the same masking
    assert scrub("a postgresql://u:p@ss@h/db\nsecond") == "a postgresql://u:***@h/db"
    assert config_mask_url is mask_url


def test_the_log_filter_masks_arguments_and_tracebacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLETOKEN")
    record = logging.LogRecord(
        "botocore.endpoint", logging.DEBUG, __file__, 1, "Sending %s", ("headers",), None
    )
    record.args = ({"X-Amz-Security-Token": b"FwoGZXIvYXdzEXAMPLETOKEN"},)
    try:
        raise RuntimeError("cannot connect to postgresql://u:p@ss@h/db")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert RedactFilter().filter(record)
    assert "FwoGZXIvYXdzEXAMPLETOKEN" not in record.getMessage()
    assert record.exc_text and "p@ss" not in record.exc_text and "u:***@h" in record.exc_text


def test_json_log_lines_hold_no_secret_in_tracebacks_extras_or_stacks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--log-format json``: every channel a JSON formatter fills (the message, a
    traceback it formats itself from the exception, ``extra`` fields, nested or not, a
    stack) is masked; the line keeps its shape (ts in UTC with Z, level, logger, message,
    exception)."""
    import json

    from drkit.logconfig import configure_logging

    monkeypatch.setenv("PGPASSWORD", "pgpass-Secret-42")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("info", "json")
        log = logging.getLogger("drkit.test")
        try:
            raise RuntimeError("cannot connect to postgresql://u:p@ss@h/db")
        except RuntimeError:
            log.exception(
                "connecting with password %s failed",
                "pgpass-Secret-42",
                extra={
                    "dsn": "postgresql://app:s3cret-X@db/app",
                    "detail": {"keys": ["AGE-SECRET-KEY-1QQQQQQQQQ", "pgpass-Secret-42"]},
                },
                stack_info=True,
            )
    finally:
        root.handlers[:], root.level = saved
    line = capsys.readouterr().err.strip()
    for secret in ("p@ss", "pgpass-Secret-42", "s3cret-X", "AGE-SECRET-KEY"):
        assert secret not in line, line
    (document,) = [json.loads(text) for text in line.splitlines()]
    assert document["level"] == "error" and document["logger"] == "drkit.test"
    assert document["ts"].endswith("Z") and document["message"].endswith("*** failed")
    assert "u:***@h" in document["exception"] and "RuntimeError" in document["exception"]


def test_verbose_s3_backup_logs_no_aws_credentials(
    database: tuple[str, str],
    request: pytest.FixtureRequest,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
) -> None:
    target = _s3_target(request)
    _, url = database
    policy_dir = make_policy("prod", url, target)
    secrets = {
        "AWS_ACCESS_KEY_ID": "ASIAQWERTYUIOPASDFGH",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMIK7MDENGbPxRfiCYzzSECRETKEY1",
        "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKENzzz",
    }
    done = run_drkit("-v", "backup", "prod", policy_dir=policy_dir, env=secrets)
    assert done.code == 0, done.stderr[-2000:]
    assert "botocore" in done.stderr  # the debug log did run
    for name, value in secrets.items():
        assert value not in done.stderr, f"{name} printed by drkit -v"
        assert value not in done.stdout


def _s3_target(request: pytest.FixtureRequest) -> RepoTarget:
    s3 = request.getfixturevalue("s3_server")
    bucket = s3.create_bucket()
    return RepoTarget("s3", f"s3://{bucket}/drkit", endpoint_url=s3.endpoint, bucket=bucket)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def test_child_processes_never_see_secrets_in_argv(
    pg_server: PgServer, database: tuple[str, str], file_repo: RepoTarget, make_policy: PolicyWriter
) -> None:
    name, _ = database
    params = parse(pg_server.dsn(name))
    password = params.get("password") or ""
    assert password, "the test server must use a password"
    sslpassword = "ssl-Pass-phrase-42"
    url = (
        f"postgresql://{quote(params.get('user', 'postgres'), safe='')}:{quote(password, safe='')}"
        f"@{params.get('host', '127.0.0.1')}:{params.get('port', '5432')}/{name}"
        f"?sslpassword={quote(sslpassword, safe='')}&sslmode=disable"
    )
    pg_server.query(name, "CREATE TABLE held (id int)")
    policy_dir = make_policy("prod", url, file_repo)
    with psycopg.connect(pg_server.dsn(name)) as blocker:
        blocker.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")  # pg_dump waits on it
        proc = subprocess.Popen(
            [sys.executable, "-m", "drkit", "--policy-dir", str(policy_dir), "backup", "prod"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        service_file: Path | None = None
        seen: dict[int, bytes] = {}
        deadline = time.monotonic() + 120
        # until the dump itself runs: a `pg_dump --version` probe may come first
        while service_file is None and proc.poll() is None:
            assert time.monotonic() < deadline, f"no child got PGSERVICEFILE: {seen}"
            for child in _children(proc.pid):
                try:
                    seen[child] = Path(f"/proc/{child}/cmdline").read_bytes()
                    environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                for item in environ:
                    if item.startswith(b"PGSERVICEFILE="):
                        service_file = Path(item.split(b"=", 1)[1].decode())
            time.sleep(0.05)
        assert any(b"pg_dump" in c for c in seen.values()), seen
        assert service_file is not None and service_file.exists()
        assert stat.S_IMODE(service_file.stat().st_mode) == 0o600
        assert f"sslpassword={sslpassword}" in service_file.read_text()
        blocker.rollback()
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    for cmdline in seen.values():
        assert password.encode() not in cmdline
        assert quote(password, safe="").encode() not in cmdline
        assert sslpassword.encode() not in cmdline
    assert not service_file.exists(), "the service file must be removed afterwards"
    # the same holds for the API every subprocess wrapper uses
    conninfo, env = for_subprocess(url)
    assert password not in conninfo and sslpassword not in conninfo
    assert env["PGPASSWORD"] == password
    path = Path(env["PGSERVICEFILE"])
    assert path.exists()
    del env
    assert not path.exists()
