"""``drkit sanitize`` killed, blocked or cut off at its worst moments: the real process
gets SIGKILL (or a closed stdout, or a lock it cannot get), and the tests assert what is
left on the server and on the host, not only exit codes.

No half-states: a killed run's build is readable by no one but drkit's role and the
next run, ``sanitize check`` and ``check`` drop it (never a live run's); DST keeps
accepting connections; the fake pool's workers die with the run; the swap waits for
DST's lock a bounded time; once the copy is published the exit is 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from drkit.pg.builddb import LOCK_CLASS
from tests.fix_cli import DrkitRunner, Env
from tests.fix_pg import PgServer
from tests.sanitize.helpers import (
    ENV,
    alive,
    leftovers,
    other_role,  # noqa: F401  (the fixture)
    role_url,
    rows,
    rules_doc,
    rules_for,
    sanitize,
    table_dump,
    write_rules,
)

DEADLINE = 120.0


def drkit_process(e: Env, *args: str, env: dict[str, str] | None = None, **popen: Any) -> Any:
    """The real CLI, started and left running."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-m", "drkit", "--policy-dir", str(e.policy_dir), *args],
        env={**os.environ, **ENV, **(env or {})},
        text=True,
        **popen,
    )


def wait_for(what: str, ready: Callable[[], Any], proc: Any) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        found = ready()
        if found:
            return found
        assert proc.poll() is None, (what, proc.communicate())
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def kill(proc: Any) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def builds(e: Env) -> list[str]:
    """The builds next to this test's staging database (not other tests')."""
    mine = f"{e.dsts['staging']}__drkit_"
    return [b for b in leftovers(e) if b.startswith(mine) and "__drkit_old_" not in b]


def error_lines(stderr: str) -> list[str]:
    """drkit's own lines on stderr (log records aside): a failure is exactly one."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("drkit:")]


def datallowconn(e: Env, name: str) -> list[tuple[Any, ...]]:
    return rows(
        e.dsn("postgres"), "SELECT datallowconn FROM pg_database WHERE datname = %s", [name]
    )


@contextmanager
def locked_build_table(e: Env, proc: Any, table: str = "agent") -> Iterator[str]:
    """Waits for the run's build to hold its tables, then locks one: the copy stops
    there, with the other tables already written.  Yields the build's name."""
    held: list[psycopg.Connection[Any]] = []

    def lock() -> str | None:
        for name in builds(e):
            try:
                conn = psycopg.connect(e.dsn(name))
                conn.execute(
                    sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE NOWAIT").format(
                        sql.Identifier(table)
                    )
                )
            except psycopg.Error:
                continue
            held.append(conn)
            return name
        return None

    try:
        name = wait_for("the build's tables", lock, proc)
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = %s"
        )
        wait_for(
            "the copy reaching the locked table",
            lambda: rows(e.dsn("postgres"), waiting, [name]) != [(0,)],
            proc,
        )
        yield name
    finally:
        for conn in held:
            conn.close()


def app_can_connect(pg: PgServer, role: tuple[str, str], dbname: str) -> bool:
    try:
        with psycopg.connect(role_url(pg, *role, dbname), connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


@pytest.mark.parametrize(
    ("source", "cleaner"),
    [("live", "run"), ("live", "sanitize check"), ("live", "check"), ("backup", "run")],
)
def test_sigkill_during_the_copy_leaves_a_private_build_the_next_command_drops(
    run_drkit: DrkitRunner,
    envs: Env,
    pg_server: PgServer,
    other_role: tuple[str, str],  # noqa: F811
    tmp_path: Path,
    source: str,
    cleaner: str,
) -> None:
    """DST's application role (CONNECT on DST, as the README's setup grants) can never
    open the build a killed run left; the next run, ``sanitize check`` or ``check``
    drops it; the run's worker processes die with it."""
    rules = rules_for(tmp_path, "prod", "staging")
    staging_db = envs.dsts["staging"]
    assert sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules)).code == 0
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                sql.Identifier(staging_db), sql.Identifier(other_role[0])
            )
        )
    assert app_can_connect(pg_server, other_role, staging_db)
    before = table_dump(envs.dsn(staging_db))
    args: tuple[str, ...] = ()
    if source == "backup":
        assert run_drkit("backup", "prod", policy_dir=envs.policy_dir).code == 0
        args = ("--from-backup", "latest")
    proc = drkit_process(
        envs, "sanitize", "prod", "staging", "--rules", str(rules), "--force", *args
    )
    # the copy stops at a table copied after "user": the smallest one live (largest
    # tables go first), the last one by name from a backup (its data's order)
    last = "agent" if source == "live" else "vulnerability"
    try:
        with locked_build_table(envs, proc, last) as build:
            assert rows(envs.dsn(build), 'SELECT count(*) > 0 FROM "user"') == [(True,)]
            workers = children(proc.pid)  # the write pass's, computing its rows
            kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    if source == "live":
        assert workers, "the write pass runs in worker processes"
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers):  # killed with the run, by the kernel
        assert time.monotonic() < deadline, f"workers outlived the run: {workers}"
        time.sleep(0.1)
    assert builds(envs) == [build]
    acl = "SELECT has_database_privilege(%s, %s, 'CONNECT'), has_database_privilege(%s, %s, 'TEMP')"
    user = other_role[0]
    assert rows(envs.dsn("postgres"), acl, [user, build, user, build]) == [(False, False)]
    assert rows(envs.dsn("postgres"), acl, ["public", build, "public", build]) == [(False, False)]
    assert not app_can_connect(pg_server, other_role, build)
    assert table_dump(envs.dsn(staging_db)) == before
    assert datallowconn(envs, staging_db) == [(True,)]
    if cleaner == "run":
        result = sanitize(
            run_drkit, envs, "prod", "staging", "--rules", str(rules), "--force", *args
        )
        assert result.code == 0, result.stderr
        assert app_can_connect(pg_server, other_role, staging_db)  # DST's grants carried over
    elif cleaner == "sanitize check":
        result = run_drkit(
            "sanitize",
            "check",
            "prod",
            "staging",
            "--rules",
            str(rules),
            policy_dir=envs.policy_dir,
            env=ENV,
        )
        assert result.code == 0, result.stderr
        assert build in result.stdout + result.stderr
    else:
        result = run_drkit("check", "staging", policy_dir=envs.policy_dir)
        assert build in result.stdout, result.stdout + result.stderr
    assert builds(envs) == []


def test_a_live_runs_build_is_never_dropped_and_sigkill_ends_the_fake_pool(
    run_drkit: DrkitRunner,
    envs: Env,
    tmp_path: Path,
) -> None:
    """While a run waits (its schema dump blocked by a lock in SRC), ``check`` and
    ``sanitize check`` leave its build alone; the fake pool's workers, blocked on their
    pipes, die with the run when it is killed; then ``check`` drops the build."""
    rules = rules_for(tmp_path, "prod", "staging")
    with psycopg.connect(envs.dsn(envs.src_name)) as blocker:
        blocker.execute("LOCK TABLE agent IN ACCESS EXCLUSIVE MODE")
        proc = drkit_process(envs, "sanitize", "prod", "staging", "--rules", str(rules))
        try:
            waiting = (
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = %s"
            )
            wait_for(
                "the schema dump waiting",
                lambda: rows(envs.dsn("postgres"), waiting, [envs.src_name]) != [(0,)],
                proc,
            )
            build = wait_for("the build", lambda: builds(envs), proc)
            workers = wait_for("the fake pool's workers", lambda: children(proc.pid), proc)
            for command in (
                ("check", "staging"),
                ("sanitize", "check", "prod", "staging", "--rules", str(rules)),
            ):
                run_drkit(*command, policy_dir=envs.policy_dir, env=ENV)
                assert builds(envs) == build, command
            kill(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
        blocker.rollback()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers outlived the run: {workers}"
        time.sleep(0.1)
    assert builds(envs) == build
    run_drkit("check", "staging", policy_dir=envs.policy_dir)
    assert builds(envs) == []


@contextmanager
def lock_on_database(e: Env, name: str) -> Iterator[psycopg.Connection[Any]]:
    """An open transaction holding a lock on DST's database object (what any DDL on the
    database takes), from another database: the swap has to wait for it."""
    with psycopg.connect(e.dsn("postgres")) as conn:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS 'busy'").format(sql.Identifier(name)))
        yield conn
        conn.rollback()


def test_sigkill_while_the_swap_waits_leaves_dst_accepting_connections(
    run_drkit: DrkitRunner,
    envs: Env,
    tmp_path: Path,
) -> None:
    rules = rules_for(tmp_path, "prod", "staging")
    staging_db = envs.dsts["staging"]
    assert sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules)).code == 0
    before = table_dump(envs.dsn(staging_db))
    with psycopg.connect(envs.dsn(staging_db), autocommit=True) as app:
        with lock_on_database(envs, staging_db):
            proc = drkit_process(
                envs,
                "sanitize",
                "prod",
                "staging",
                "--rules",
                str(rules),
                "--force",
                env={"DRKIT_PUBLISH_LOCK_TIMEOUT": "300"},
            )
            try:
                waiting = (
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query ILIKE 'ALTER DATABASE%%'"
                )
                wait_for(
                    "the swap waiting for DST's lock",
                    lambda: rows(envs.dsn("postgres"), waiting) != [(0,)],
                    proc,
                )
                kill(proc)
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert datallowconn(envs, staging_db) == [(True,)]
        with psycopg.connect(envs.dsn(staging_db), connect_timeout=5) as again:
            again.execute("SELECT 1")
        del app
    assert table_dump(envs.dsn(staging_db)) == before
    result = sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules), "--force")
    assert result.code == 0, result.stderr
    assert builds(envs) == []


def test_the_swap_waits_for_dsts_lock_a_bounded_time_then_refuses(
    run_drkit: DrkitRunner,
    envs: Env,
    tmp_path: Path,
) -> None:
    rules = rules_for(tmp_path, "prod", "staging")
    staging_db = envs.dsts["staging"]
    assert sanitize(run_drkit, envs, "prod", "staging", "--rules", str(rules)).code == 0
    before = table_dump(envs.dsn(staging_db))
    with lock_on_database(envs, staging_db):
        started = time.monotonic()
        result = run_drkit(
            "sanitize",
            "prod",
            "staging",
            "--rules",
            str(rules),
            "--force",
            policy_dir=envs.policy_dir,
            env={**ENV, "DRKIT_PUBLISH_LOCK_TIMEOUT": "2"},
            timeout=DEADLINE,
        )
        assert time.monotonic() - started < DEADLINE
        with psycopg.connect(envs.dsn(staging_db), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    assert result.code == 4, result.stderr
    assert "lock" in result.stderr and staging_db in result.stderr
    assert len(error_lines(result.stderr)) == 1, result.stderr
    assert table_dump(envs.dsn(staging_db)) == before
    assert datallowconn(envs, staging_db) == [(True,)]
    assert builds(envs) == []


def test_a_database_created_under_dsts_name_during_the_build_is_never_replaced(
    envs: Env,
    tmp_path: Path,
) -> None:
    """DST did not exist when the run identified it; someone creates a database of that
    name while the copy is built.  The run must not replace what it never identified,
    and must not say it succeeded: exit 4, ``ok: false``, one line; the new database
    untouched, no build left."""
    rules = rules_for(tmp_path, "prod", "staging")
    staging_db = envs.dsts["staging"]
    proc = drkit_process(envs, "--json", "sanitize", "prod", "staging", "--rules", str(rules))
    try:
        with (
            locked_build_table(envs, proc),
            psycopg.connect(envs.dsn("postgres"), autocommit=True) as admin,
        ):
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(staging_db)))
            with psycopg.connect(envs.dsn(staging_db), autocommit=True) as theirs:
                theirs.execute("CREATE TABLE theirs (v text); INSERT INTO theirs VALUES ('kept')")
        out, stderr = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 4, stderr
    assert [line for line in error_lines(stderr) if "created while" in line], stderr
    assert len(error_lines(stderr)) == 1, stderr
    assert json.loads(out)["ok"] is False
    assert rows(envs.dsn(staging_db), "SELECT v FROM theirs") == [("kept",)]
    assert builds(envs) == []


@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
def test_a_published_copy_exits_0_even_into_a_closed_pipe(
    envs: Env,
    tmp_path: Path,
    json_out: bool,
) -> None:
    rules = rules_for(tmp_path, "prod", "staging")
    read, write = os.pipe()
    os.close(read)  # every write to stdout fails (EPIPE)
    try:
        proc = drkit_process(
            envs,
            *(["--json"] if json_out else []),
            "sanitize",
            "prod",
            "staging",
            "--rules",
            str(rules),
            stdout=write,
        )
    finally:
        os.close(write)
    _out, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert rows(envs.dsn(envs.dsts["staging"]), 'SELECT count(*) > 0 FROM "user"') == [(True,)]
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


@pytest.mark.parametrize("failure", ["strategy", "database"])
def test_from_backup_fails_promptly_when_a_pass_fails_partway(
    run_drkit: DrkitRunner,
    envs: Env,
    tmp_path: Path,
    failure: str,
) -> None:
    """A strategy that cannot read a value (json on plain text), or rows the build
    refuses (a CHECK the pseudonyms break, which a backup cannot try beforehand): the
    run ends with exit 1 and one line, and never waits on the pg_restore it was
    reading."""
    with psycopg.connect(envs.dsn(envs.src_name), autocommit=True) as conn:
        # after "user" in the archive (tables' data go in name order), enough that
        # does not compress for pg_restore's input and output to outgrow their pipes
        conn.execute(
            "INSERT INTO vulnerability (id, cve_id, severity, cvss, description, published_at) "
            "SELECT 1000000 + i, 'CVE-2099-' || i, severity, cvss, "
            "(SELECT string_agg(md5(random()::text || g), '') FROM generate_series(i, i + 7) g), "
            "published_at FROM generate_series(1, 20000) i, "
            "(SELECT severity, cvss, published_at FROM vulnerability LIMIT 1) v"
        )
        if failure == "database":
            conn.execute(
                "ALTER TABLE \"user\" ADD CONSTRAINT no_templates CHECK (username NOT LIKE 'user\\_%')"
            )
    assert run_drkit("backup", "prod", policy_dir=envs.policy_dir).code == 0
    doc = rules_doc()
    if failure == "strategy":
        doc["tables"]["user"]["columns"]["full_name"] = {
            "strategy": "json",
            "paths": {"$.a": "nullify"},
        }
    rules = write_rules(tmp_path / "prod-to-staging.yaml", doc)
    result = run_drkit(
        "sanitize",
        "prod",
        "staging",
        "--rules",
        str(rules),
        "--from-backup",
        "latest",
        policy_dir=envs.policy_dir,
        env=ENV,
        timeout=DEADLINE,
    )
    assert result.code == 1, result.stderr
    assert len(error_lines(result.stderr)) == 1, result.stderr
    assert builds(envs) == []


def test_check_drops_a_killed_runs_build_next_to_any_environment_but_a_live_ones(
    run_drkit: DrkitRunner,
    envs: Env,
) -> None:
    """No rules file names ``test`` as a target here (a run may take its rules from
    anywhere): ``check test`` still drops what a killed run left next to its database,
    the server state exactly (a build's name, no run holding its lock), and keeps a
    build whose run still holds it."""
    db = envs.dsts["test"]
    envs.pg.create_database(db)
    dead, live = f"{db}__drkit_0badc0de", f"{db}__drkit_f00dfeed"
    for name in (dead, live):
        envs.pg.create_database(name)
    try:
        with psycopg.connect(envs.dsn("postgres"), autocommit=True) as run:
            token = int("f00dfeed", 16) - (1 << 32)  # the int4 key of the live run's lock
            run.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_CLASS, token])
            result = run_drkit("check", "test", policy_dir=envs.policy_dir)
            assert dead in result.stdout, result.stdout + result.stderr
            mine = [b for b in leftovers(envs) if b.startswith(f"{db}__drkit_")]
            assert mine == [live]
    finally:
        for name in (dead, live):
            envs.pg.drop_database(name)
