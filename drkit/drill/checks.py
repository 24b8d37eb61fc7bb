"""The validation ladder of a drill: each rung a :class:`~drkit.drill.report.Check`.

1. the restored server accepts connections (:func:`check_connect`);
2. the row count of every table equals the backup manifest's (:func:`check_row_counts`,
   several connections at once); a database the drill could not restore or reach gets
   its counts NOT_RUN, never silently skipped;
3. the policy's SQL checks return true (:func:`check_sql`: read only, under a statement
   timeout, in the policy's own database unless a check names another);
4. ``pg_amcheck`` finds no corruption (:func:`check_amcheck`; :class:`AmcheckRun` runs
   it in a thread beside the row counts); a scratch server without the amcheck
   extension is NOT_RUN with what to install.  Installing amcheck takes a superuser:
   where the policy's role is none, the scratch server's own superuser runs it over
   the server's private socket (the server is drkit's, not the operator's);
5. a physical copy's collation version is the one its new server's libraries give
   (:func:`check_collation`): on another libc (musl to glibc, another glibc) text
   indexes are sorted the old way; that is a WARN saying to REINDEX them, since
   amcheck, not this, tells whether they are out of order.

A finding is a check's verdict (FAIL, or ERROR when the check itself broke), never an
exception out of the drill.
"""

from __future__ import annotations

import os
import threading

import psycopg
from psycopg import sql

from drkit.catalog import Manifest
from drkit.config import Policy
from drkit.drill.report import ERROR, FAIL, NOT_RUN, PASS, WARN, Check, DrillReport
from drkit.errors import DrkitError, OperationError
from drkit.pg import (
    PostgresServer,
    connect,
    count_rows_concurrently,
    find_binary,
    first_line,
    for_subprocess,
    is_superuser,
    list_tables,
    run_as,
    split_key,
    table_key,
)

#: connections that count rows at once (the scratch cluster is on this host)
COUNT_JOBS = max(2, min(4, os.cpu_count() or 1))
SQL_CHECK_TIMEOUT = "10min"


def not_run_after_failed_restore(
    policy: Policy,
    expected: dict[str, int] | None,
    report: DrillReport,
    database: str,
    why: str = "the restore failed",
) -> None:
    if policy.drill.checks.row_counts:
        report.add(
            Check(
                f"rows {database}",
                "row_count",
                NOT_RUN,
                expected=f"{len(expected or {})} tables as in the manifest",
                detail=why,
                database=database,
            )
        )


def check_connect(report: DrillReport, dsn: str, database: str) -> bool:
    try:
        with connect(dsn) as conn:
            conn.execute("SELECT 1")
    except DrkitError as exc:
        report.add(
            Check(
                f"connect {database}",
                "connect",
                FAIL,
                expected="accepts connections",
                observed="refused",
                detail=str(exc),
                database=database,
            )
        )
        return False
    report.add(
        Check(
            f"connect {database}",
            "connect",
            PASS,
            expected="accepts connections",
            observed="accepts connections",
            database=database,
        )
    )
    return True


def row_counts_not_run(report: DrillReport, database: str, why: str) -> None:
    report.add(
        Check(
            f"rows {database}",
            "row_count",
            NOT_RUN,
            expected="row counts recorded at backup time",
            detail=why,
            database=database,
        )
    )


def check_row_counts(
    report: DrillReport, dsn: str, database: str, expected: dict[str, int] | None
) -> None:
    if expected is None:
        row_counts_not_run(report, database, "the backup records no row counts for this database")
        return
    if not expected:  # an empty database: nothing to compare, and that is a pass
        report.add(
            Check(
                f"rows {database}",
                "row_count",
                PASS,
                expected="0 tables (the backup recorded an empty database)",
                observed="0 tables, 0 rows counted",
                database=database,
            )
        )
        return
    try:
        with connect(dsn) as conn:
            present = {table_key(s, t) for s, t in list_tables(conn)}
        wanted = [split_key(k) for k in expected if k in present]
        observed = count_rows_concurrently(dsn, wanted, COUNT_JOBS)
    except DrkitError as exc:
        report.add(
            Check(
                f"rows {database}",
                "row_count",
                ERROR,
                expected=f"{len(expected)} tables as in the manifest",
                detail=str(exc),
                database=database,
            )
        )
        return
    for key, want in sorted(expected.items()):
        got = observed.get(key)
        if got is None:
            check = Check(f"rows {database}:{key}", "row_count", FAIL, want, None, "table missing")
        else:
            check = Check(f"rows {database}:{key}", "row_count", PASS if got == want else FAIL)
            check.expected, check.observed = want, got
        check.database = database
        report.add(check)


def check_sql(
    policy: Policy,
    report: DrillReport,
    cluster: PostgresServer,
    manifest: Manifest,
    restored: list[str],
) -> None:
    # the policy's own (first) database, where the backup holds it: not whichever of a
    # whole cluster's databases sorts first
    own = policy.database.database_names()[0]
    default_db = own if own in manifest.databases or own in restored else None
    default_db = default_db or next((o.database for o in manifest.objects if o.database), None)
    default_db = default_db or next(iter(manifest.databases), None)
    for sql_check in policy.drill.checks.sql:
        database = sql_check.database or default_db or "postgres"
        name = f"sql: {sql_check.name}"
        whole_cluster = manifest.kind == "physical" and database not in manifest.databases
        if database not in restored and not whole_cluster:
            report.add(
                Check(
                    name,
                    "sql",
                    NOT_RUN,
                    expected=True,
                    detail=f"database {database} was not restored",
                    database=database,
                )
            )
            continue
        try:
            with connect(cluster.dsn(database), autocommit=False) as conn:
                conn.execute(
                    sql.SQL("SET LOCAL statement_timeout = {}").format(
                        sql.Literal(SQL_CHECK_TIMEOUT)
                    )
                )
                conn.execute("SET TRANSACTION READ ONLY")
                row = conn.execute(sql_check.query).fetchone()
                conn.rollback()
        except (DrkitError, psycopg.Error) as exc:
            report.add(
                Check(
                    name,
                    "sql",
                    ERROR,
                    expected=True,
                    detail=first_line(exc),
                    database=database,
                )
            )
            continue
        value = row[0] if row else None
        report.add(
            Check(
                name,
                "sql",
                PASS if value is True else FAIL,
                expected=True,
                observed=value if isinstance(value, bool | int | float | None) else str(value),
                detail="" if value is True else "the query must return one row whose value is true",
                database=database,
            )
        )


class CheckList(list[Check]):
    """Checks collected apart from the report (by a thread), added to it afterwards."""

    def add(self, check: Check) -> Check:
        self.append(check)
        return check


class AmcheckRun(threading.Thread):
    def __init__(self, cluster: PostgresServer, databases: list[str]) -> None:
        super().__init__(name="drkit-drill-amcheck", daemon=True)
        self._cluster = cluster
        self._databases = databases
        self.checks = CheckList()

    def run(self) -> None:
        for database in self._databases:
            try:
                check_amcheck(self.checks, self._cluster, database)
            except (DrkitError, OSError) as exc:
                self.checks.add(
                    Check(
                        f"amcheck {database}",
                        "amcheck",
                        ERROR,
                        expected="no corruption",
                        detail=str(exc),
                        database=database,
                    )
                )


def check_collation(report: DrillReport, dsn: str, database: str) -> None:
    """WARN when the database's recorded collation version differs from the one the
    restored server's libraries give (PostgreSQL 15+ records it); nothing otherwise."""
    with connect(dsn) as conn:
        if conn.info.server_version < 150000:
            return
        row = conn.execute(
            "SELECT datcollversion, pg_database_collation_actual_version(oid) "
            "FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    recorded, actual = (str(v) if v is not None else "" for v in row) if row else ("", "")
    if recorded == actual:
        return
    report.add(
        Check(
            f"collation {database}",
            "collation",
            WARN,
            expected=recorded or "none recorded (musl libc records none)",
            observed=actual or "none",
            detail="the restored server's libraries sort text differently from the ones "
            f"that built {database}'s indexes: REINDEX its text indexes after such a "
            f"restore, then ALTER DATABASE {database} REFRESH COLLATION VERSION",
            database=database,
        )
    )


def check_amcheck(report: DrillReport | CheckList, cluster: PostgresServer, database: str) -> None:
    name = f"amcheck {database}"

    def not_run(why: str) -> None:
        report.add(
            Check(
                name,
                "amcheck",
                NOT_RUN,
                expected="no corruption",
                detail=f"{why}, or set drill.checks.amcheck: false in the policy",
                database=database,
            )
        )

    try:
        binary = find_binary("pg_amcheck", cluster.major)
    except OperationError as exc:
        not_run(f"{exc} (postgresql-contrib / the server package ships it)")
        return
    with connect(cluster.dsn(database)) as conn:  # some builds (the pgserver wheel) lack contrib
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'"
        ).fetchone()
        superuser = is_superuser(conn)
        bootstrap = conn.execute("SELECT rolname FROM pg_roles WHERE oid = 10").fetchone()
    if available is None:
        not_run(
            f"the scratch server (PostgreSQL {cluster.major}, {cluster.bin_dir}) has no "
            f"amcheck extension: install postgresql-{cluster.major} (its contrib ships it)"
        )
        return
    jobs = max(1, min(4, os.cpu_count() or 1))
    common = [binary, "--install-missing", f"--jobs={jobs}", "-d", database]
    if superuser:
        conninfo, env = for_subprocess(cluster.dsn(database))
        params = dict(p.split("=", 1) for p in conninfo.split())
        args = [
            *common,
            "-h",
            params.get("host", "127.0.0.1"),
            "-p",
            params.get("port", str(cluster.port)),
            "-U",
            params.get("user", "postgres"),
        ]
        proc = run_as(args, None, env=env, check=False, timeout=24 * 3600, what="pg_amcheck")
    elif cluster.socket_dir is not None and bootstrap is not None:
        # the policy's role may not install amcheck (a superuser's right): the scratch
        # server is drkit's own, so its superuser runs it, over the server's private
        # socket, as the OS user the server runs as (the data directory's own pg_hba)
        args = [*common, "-h", str(cluster.socket_dir), "-p", str(cluster.port)]
        args += ["-U", str(bootstrap[0])]
        proc = run_as(args, cluster.os_user, check=False, timeout=24 * 3600, what="pg_amcheck")
        if proc.returncode != 0 and not proc.stdout.strip():
            why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            not_run(
                "the policy's role is not a superuser (amcheck needs one) and the recovered "
                f"server refused its superuser {bootstrap[0]} over its own socket ({why}): "
                "allow it a local connection in pg_hba.conf (peer or trust)"
            )
            return
    else:
        not_run("the policy's role is not a superuser, and amcheck needs one")
        return
    output = (proc.stdout + proc.stderr).strip().splitlines()
    if proc.returncode == 0 and not proc.stdout.strip():
        report.add(Check(name, "amcheck", PASS, "no corruption", "no corruption", "", database))
    elif proc.stdout.strip():  # pg_amcheck reports corruption on stdout
        report.add(
            Check(
                name,
                "amcheck",
                FAIL,
                expected="no corruption",
                observed=f"{len(proc.stdout.strip().splitlines())} lines of findings",
                detail=output[0] if output else "",
                database=database,
            )
        )
    else:
        report.add(
            Check(
                name,
                "amcheck",
                ERROR,
                expected="no corruption",
                observed=f"pg_amcheck exit {proc.returncode}",
                detail=output[-1] if output else "",
                database=database,
            )
        )
