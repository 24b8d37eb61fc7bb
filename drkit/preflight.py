"""``drkit check ENV``: prove the whole chain works, end to end, against the real systems.

``policy check`` is offline (does the file parse?); this is its online twin, the
equivalent of pgBackRest's and Barman's ``check``, run after every change.  Each check
connects to what it checks and reports PASS or FAIL in one line; nothing here raises
for a failed check (the caller decides the exit code), and nothing is left behind:

1. ``database``: login to every database of the policy, the server version;
2. ``privileges``: what each configured feature needs — read access to every table
   (logical backups), REPLICATION and ``pg_create_restore_point`` (base backups, WAL),
   BYPASSRLS where a table has row-level security (backups and sanitize sources);
3. ``archiving`` (only with ``wal_archiving: true``): ``archive_mode`` and
   ``archive_command`` as the server has them, then a real round trip: a WAL switch and
   a wait until that segment is in the repository, cut short (with the server's last
   archiver failure and its log line) as soon as ``pg_stat_archiver`` records a failure;
   ``streaming`` (only with ``wal_streaming``): ``max_slot_wal_keep_size`` is set (a slot
   nobody drains must not fill the server's disk: unlimited is a FAIL), the role may
   replicate, pg_receivewal is installed, and the slot ``drkit_<env>``, where it exists,
   has not lost WAL;
4. ``object lock`` (only with ``repository.object_lock``): the bucket has object lock
   enabled, FAIL otherwise (and no probe is written: the store would refuse its lock);
   ``repository``: a probe object written (through compression and encryption), read
   back, compared and deleted (with object lock, S3 keeps the probe's locked version
   until its retention ends and hides it behind a delete marker);
5. ``encryption``: the recipients parse, and the identity (where one is configured)
   exists, is readable and decrypts what the recipients encrypt;
6. ``schedule``: every cron entry and its next run;
7. ``incremental backups`` (only when ``schedule.physical_incremental_backup`` is set):
   the server is PostgreSQL 17+ with ``summarize_wal = on``;
8. ``clock``: drkit's host clock against the server's ``clock_timestamp()``, and
   ``backup clocks``: the backups in the repository taken while the host clock was off.
   Both WARN (never FAIL) beyond :data:`~drkit.catalog.order.SKEW_BOUND`: backups are
   ordered by the server, so a wrong host clock only makes ids and host times wrong;
9. ``sanitize target`` (where a rules file next to the policies copies into this
   environment): what a sanitize run needs of the role on the server (CREATEDB, the
   database's ownership); and, for every environment (a run may name its rules file
   anywhere), the builds killed runs left next to the database, dropped here (a live
   run's never: :func:`~drkit.pg.builddb.drop_leftovers`).

Messages never contain a secret: connection errors go through :mod:`drkit.pg.connect`.
"""

from __future__ import annotations

import io
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from drkit.config import Policy
from drkit.documents import Document, Shape, described
from drkit.drill import FAIL, PASS, WARN
from drkit.errors import DrkitError

log = logging.getLogger(__name__)


#: how long the archive round trip waits for the switched segment
ARCHIVE_TIMEOUT = 60.0


@dataclass
class CheckResult:
    name: str
    status: str
    detail: str

    def document(self) -> CheckLine:
        return CheckLine(name=self.name, status=self.status, detail=self.detail)


@dataclass
class CheckReport:
    environment: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status in (PASS, WARN) for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status not in (PASS, WARN)]

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.results.append(CheckResult(name, PASS if ok else FAIL, detail))

    def warn(self, name: str, detail: str) -> None:
        self.results.append(CheckResult(name, WARN, detail))

    def document(self) -> CheckDocument:
        return CheckDocument(
            ok=self.ok,
            environment=self.environment,
            checks=[r.document() for r in self.results],
        )


def _needs_base_backups(policy: Policy) -> bool:
    return policy.wal_archiving or policy.schedule.physical_backup is not None


def _has_rules(policy_dir: Path | None, pattern: str) -> bool:
    from drkit.config import resolve_policy_dir

    directories = {Path("sanitize_rules"), resolve_policy_dir(policy_dir).parent / "sanitize_rules"}
    return any(any(d.glob(pattern)) for d in directories if d.is_dir())


def is_sanitize_source(policy: Policy, policy_dir: Path | None) -> bool:
    """True where a rules file next to the policies copies from this environment."""
    return _has_rules(policy_dir, f"{policy.name}-to-*.yaml")


def is_sanitize_target(policy: Policy, policy_dir: Path | None) -> bool:
    """True where a rules file next to the policies copies into this environment."""
    return _has_rules(policy_dir, f"*-to-{policy.name}.yaml")


def _check_sanitize_target(report: CheckReport, policy: Policy, *, target: bool) -> None:
    """The builds killed runs left next to this environment's databases (dropped), and,
    for a ``target`` of sanitize runs, the privileges a run needs.  Elsewhere a server
    that does not let the role look is no failure: only reported when a build is found."""
    from drkit.pg import clean_leftovers, prove_privileges, with_dbname

    url = policy.database.url.get_secret_value()
    for name in policy.database.database_names():
        dsn = with_dbname(url, name)
        try:
            proved = prove_privileges(dsn) if target else ""
            found = clean_leftovers(dsn)
        except DrkitError as exc:
            if target:
                report.add(f"sanitize target {name}", False, str(exc))
            else:
                log.info("no look for interrupted sanitize builds next to %s: %s", name, exc)
            continue
        if not target and not (found.dropped or found.live or found.failed):
            continue
        notes = [proved] if proved else []
        if found.dropped:
            notes.append(f"dropped {', '.join(found.dropped)} (interrupted runs' builds)")
        if found.live:
            notes.append(f"{', '.join(found.live)} belong to runs going on")
        failed = "; ".join(
            f"cannot drop {n}, an interrupted run's build: {w}" for n, w in found.failed
        )
        report.add(f"sanitize target {name}", not failed, failed or "; ".join(notes))


def _check_database(report: CheckReport, policy: Policy, sanitize_source: bool) -> Any:
    """Login and privileges; returns an open connection to the first database, or None."""
    from drkit.pg import connect, first_line, server_version

    dsn = policy.database.url.get_secret_value()
    first = None
    for name in policy.database.database_names():
        try:
            conn = connect(dsn, name)
        except DrkitError as exc:
            report.add(f"database {name}", False, str(exc))
            continue
        try:
            user = conn.execute("SELECT current_user").fetchone()
            report.add(
                f"database {name}",
                True,
                f"PostgreSQL {server_version(conn)}, connected as {user[0] if user else '?'}",
            )
            _check_table_access(report, conn, name, sanitize_source)
            _check_restore_privileges(report, conn, name)
            _check_collation(report, conn, name, _needs_base_backups(policy))
        except Exception as exc:  # a failed catalog query is a failed check, not a crash
            report.add(f"privileges {name}", False, first_line(exc))
        if first is None:
            first = conn
        else:
            conn.close()
    if first is not None and _needs_base_backups(policy):
        _check_physical_privileges(report, first)
    return first


def _check_table_access(report: CheckReport, conn: Any, name: str, sanitize_source: bool) -> None:
    role = conn.execute(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    superuser, bypassrls = (bool(role[0]), bool(role[1])) if role else (False, False)
    unreadable = [
        str(r[0])
        for r in conn.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', "
            "'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%' "
            "AND NOT has_table_privilege(c.oid, 'SELECT') ORDER BY 1"
        ).fetchall()
    ]
    with_rls = [
        str(r[0])
        for r in conn.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relrowsecurity AND c.relkind IN ('r', 'p') ORDER BY 1"
        ).fetchall()
    ]
    problems = []
    if unreadable:
        more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        problems.append(
            f"cannot read {', '.join(unreadable[:3])}{more}: GRANT SELECT (or pg_read_all_data)"
        )
    if with_rls and not (superuser or bypassrls):
        what = "backups and sanitize" if sanitize_source else "backups"
        problems.append(
            f"{with_rls[0]} has row-level security and the role lacks BYPASSRLS: {what} would "
            "miss rows; ALTER ROLE ... BYPASSRLS"
        )
    detail = "; ".join(problems) or (
        "every table readable"
        + (", row-level security bypassed" if (superuser or bypassrls) else "")
        + (" (sanitize source)" if sanitize_source else "")
    )
    report.add(f"privileges {name}", not problems, detail)


#: the objects a restore over the database drops and re-creates (``--clean``), each with
#: its owner; the schemas and extensions initdb made are left alone by pg_restore
_RESTORED_OBJECTS = """
WITH objects AS (
    SELECT 'schema' AS kind, quote_ident(n.nspname) AS name, n.nspowner AS owner, n.oid,
           'pg_namespace'::regclass AS catalog
    FROM pg_namespace n WHERE n.oid >= 16384
    UNION ALL
    SELECT 'relation', format('%I.%I', n.nspname, c.relname), c.relowner, c.oid,
           'pg_class'::regclass
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.oid >= 16384
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
    UNION ALL
    SELECT 'function', format('%I.%I', n.nspname, p.proname), p.proowner, p.oid,
           'pg_proc'::regclass
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE p.oid >= 16384 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    UNION ALL
    SELECT 'extension', quote_ident(e.extname), e.extowner, e.oid, 'pg_extension'::regclass
    FROM pg_extension e WHERE e.oid >= 16384
)
SELECT o.kind, o.name, pg_get_userbyid(o.owner) FROM objects o
WHERE NOT pg_has_role(current_user, o.owner, 'USAGE')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = o.catalog
                  AND d.objid = o.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def _check_restore_privileges(report: CheckReport, conn: Any, name: str) -> None:
    """What ``drkit restore ENV latest --force`` needs as this role: to drop and
    re-create every object of the database, as its owner (or a member of its owner's
    role); the grants on system functions a non-superuser restore leaves out are said."""
    from drkit.pg import is_superuser

    if is_superuser(conn):
        report.add(f"privileges restore {name}", True, "superuser: restores everything")
        return
    foreign = conn.execute(_RESTORED_OBJECTS).fetchall()
    row = conn.execute(
        "SELECT pg_has_role(current_user, datdba, 'USAGE'), "
        "has_database_privilege(current_database(), 'CREATE'), "
        "(SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user) "
        "FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    owns, create, createdb = (bool(v) for v in row) if row else (False, False, False)
    problems = []
    if foreign:
        kind, obj, owner = foreign[0]
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        problems.append(
            f"a restore over {name} cannot drop {kind} {obj}{more}, owned by {owner}: "
            f"GRANT {owner} TO the role, or ALTER ... OWNER TO it"
        )
    if not (owns or create):
        problems.append(f"no CREATE on database {name}: ALTER DATABASE {name} OWNER TO the role")
    recreate = (
        "re-creates it if dropped (CREATEDB)"
        if createdb
        else "cannot re-create it if dropped (no CREATEDB: a superuser runs CREATE DATABASE "
        f"{name} OWNER the role first)"
    )
    report.add(
        f"privileges restore {name}",
        not problems,
        "; ".join(problems)
        or f"owns what a restore re-creates; {recreate}; grants on system functions "
        "(pg_create_restore_point, pg_switch_wal) are a superuser's to re-make in a new database",
    )


def _check_collation(report: CheckReport, conn: Any, name: str, physical: bool) -> None:
    """The database's collation version against the server's libc now, and (where base
    backups are taken) against this host's, where drills and restores start the copy:
    text indexes built under one version are out of order under another."""
    if conn.info.server_version < 150000:  # datcollversion is PostgreSQL 15+
        return
    row = conn.execute(
        "SELECT datlocprovider, datcollate, datcollversion, "
        "pg_database_collation_actual_version(oid) FROM pg_database "
        "WHERE datname = current_database()"
    ).fetchone()
    if row is None:
        return
    provider, collate, recorded, actual = (str(v) if v is not None else "" for v in row)
    check = f"collation {name}"
    if recorded != actual:
        report.warn(
            check,
            f"{name} was created with collation version {recorded or 'none'}, the server's "
            f"libraries now give {actual or 'none'}: REINDEX its text indexes, then ALTER "
            f"DATABASE {name} REFRESH COLLATION VERSION",
        )
        return
    # C, POSIX and C.<encoding> sort by code point on every libc: PostgreSQL versions none
    if not physical or provider != "c" or collate in ("C", "POSIX") or collate.startswith("C."):
        report.add(check, True, f"collation version {recorded or 'not versioned'} ({collate})")
        return
    libc, _, version = _host_libc().partition(" ")
    here = f"{libc} {version}".strip() or "a libc that is not glibc"
    if not recorded:
        report.warn(
            check,
            f"{name} ({collate}) reports no collation version (musl libc, as in an alpine "
            f"image, records none): a base backup restored or drilled on {here} keeps text "
            "indexes sorted by the other libc: REINDEX them after such a restore",
        )
    elif libc != "glibc" or version != recorded:
        report.warn(
            check,
            f"{name} ({collate}) has collation version {recorded}, this host (where drills "
            f"and point-in-time restores start the copy) has {here}: text indexes of a base "
            "backup are out of order there: REINDEX them after such a restore",
        )
    else:
        report.add(check, True, f"collation version {recorded} ({collate}) as on this host")


def _host_libc() -> str:
    """This host's C library as glibc names itself at run time ("glibc 2.36"); "" for
    another (musl has no such name)."""
    import os

    try:
        return os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return ""


def _check_physical_privileges(report: CheckReport, conn: Any) -> None:
    row = conn.execute(
        "SELECT rolsuper, rolreplication, "
        "has_function_privilege('pg_create_restore_point(text)', 'EXECUTE'), "
        "has_function_privilege('pg_switch_wal()', 'EXECUTE') "
        "FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    superuser, replication, restore_point, switch = (bool(v) for v in row) if row else (False,) * 4
    missing = []
    if not (superuser or replication):
        missing.append("REPLICATION (for pg_basebackup): ALTER ROLE ... REPLICATION")
    if not (superuser or restore_point):
        missing.append("EXECUTE on pg_create_restore_point(text)")
    if not (superuser or switch):
        missing.append("EXECUTE on pg_switch_wal()")
    report.add(
        "privileges base backup",
        not missing,
        "; ".join(missing) or "replication, restore points and WAL switches allowed",
    )


def _check_incremental(report: CheckReport, conn: Any) -> None:
    row = conn.execute(
        "SELECT current_setting('server_version_num')::int / 10000, "
        "(SELECT setting FROM pg_settings WHERE name = 'summarize_wal')"
    ).fetchone()
    major, summarize = (int(row[0]), row[1]) if row else (0, None)
    if major < 17:
        report.add(
            "incremental backups",
            False,
            f"schedule.physical_incremental_backup needs PostgreSQL 17+; the server is {major}",
        )
    elif summarize != "on":
        report.add(
            "incremental backups",
            False,
            "summarize_wal is off: set summarize_wal = on (ALTER SYSTEM SET summarize_wal = on; "
            "SELECT pg_reload_conf()), then take a full base backup",
        )
    else:
        report.add("incremental backups", True, f"PostgreSQL {major}, summarize_wal = on")


def _check_archiving(report: CheckReport, policy: Policy, conn: Any, repo: Any) -> None:
    from drkit.backup import wait_for_wal
    from drkit.pg import first_line

    settings = dict(
        conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('archive_mode', 'archive_command', 'archive_library')"
        ).fetchall()
    )
    mode = settings.get("archive_mode", "off")
    command = settings.get("archive_command") or ""
    if mode not in ("on", "always"):
        report.add(
            "archive_mode",
            False,
            f"archive_mode is {mode}: set archive_mode = on and restart the server",
        )
        return
    if settings.get("archive_library"):
        report.add(
            "archive_command",
            False,
            "archive_library is set: drkit archives through archive_command; unset it",
        )
        return
    if "wal-push" not in command or policy.name not in command:
        report.add(
            "archive_command",
            False,
            f"archive_command does not run 'drkit wal-push {policy.name}': "
            f"run drkit archive-command {policy.name} for a line that works",
        )
        return
    if "drkit-runtime-" in command and " -I -S -c " not in command:
        report.add(
            "archive_command",
            False,
            "archive_command runs drkit from a runtime it does not check before running it "
            "(the line of an older drkit; anyone who re-creates that directory runs code as "
            f"the server): run drkit archive-command {policy.name} and set the line it prints",
        )
        return
    report.add("archive_command", True, f"archive_mode = {mode}, drkit wal-push {policy.name}")
    started = time.monotonic()
    try:
        # the server's clock before the switch: an archiver failure from then on is
        # reported as soon as the server records it, not after ARCHIVE_TIMEOUT
        row = conn.execute("SELECT clock_timestamp(), txid_current()").fetchone()
        switched_at = row[0] if row else None  # txid_current: WAL to switch away from
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        segment = str(row[0]) if row else ""
        dsn = policy.database.url.get_secret_value()
        wait_for_wal(repo, [segment], ARCHIVE_TIMEOUT, dsn, failed_since=switched_at)
    except DrkitError as exc:
        report.add("archive round trip", False, str(exc))
        return
    except Exception as exc:
        report.add("archive round trip", False, f"switching WAL: {first_line(exc)}")
        return
    report.add(
        "archive round trip",
        True,
        f"{segment} archived to {repo.location} in {time.monotonic() - started:.1f}s",
    )


def _check_streaming(report: CheckReport, policy: Policy, conn: Any) -> None:
    """What ``drkit wal-receive`` needs of the server, and that its slot cannot fill the
    server's disk."""
    from drkit.pg import find_client, server_major
    from drkit.wal import slot_name

    slot = slot_name(policy.name)
    row = conn.execute(
        "SELECT current_setting('max_slot_wal_keep_size'), "
        "(SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user), "
        "(SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s)",
        (slot,),
    ).fetchone()
    keep, may_replicate, wal_status = row if row else ("-1", False, None)
    problems = []
    if str(keep).strip() in ("-1", ""):
        problems.append(
            "max_slot_wal_keep_size is unlimited (-1): a stopped wal-receive would let slot "
            f"{slot} hold WAL until the disk fills; set it (ALTER SYSTEM SET "
            "max_slot_wal_keep_size = '10GB'; SELECT pg_reload_conf())"
        )
    if not may_replicate:
        problems.append("the role lacks REPLICATION (ALTER ROLE ... REPLICATION)")
    if wal_status == "lost":
        problems.append(
            f"slot {slot} lost WAL it held (max_slot_wal_keep_size exceeded): drop it with "
            f"drkit wal-receive {policy.name} --drop-slot, restart wal-receive, take a base backup"
        )
    try:
        find_client("pg_receivewal", server_major(conn))
    except DrkitError as exc:
        problems.append(str(exc))
    state = "exists" if wal_status is not None else "will be created by wal-receive"
    report.add(
        "streaming",
        not problems,
        "; ".join(problems) or f"max_slot_wal_keep_size = {keep}, slot {slot} {state}",
    )


def _check_clock(report: CheckReport, conn: Any) -> None:
    """drkit's host clock against the server's (its ids and host times come from it)."""
    from drkit.backup import read_position
    from drkit.catalog import describe_skew, skewed
    from drkit.pg import first_line

    try:
        reading, _ = read_position(conn, None)
    except Exception as exc:
        report.add("clock", False, f"reading the server's clock: {first_line(exc)}")
        return
    skew = reading.clock_skew
    if skewed(skew):
        report.warn(
            "clock",
            f"this host's clock is {describe_skew(skew)} the database server's: new backup "
            "ids and start times would be off by as much (backups are ordered by the server), "
            "and status would measure ages against it; fix the host clock (NTP)",
        )
    else:
        report.add("clock", True, f"this host's clock is within {abs(skew):.1f}s of the server's")


def _check_backup_clocks(report: CheckReport, repo: Any) -> None:
    """The backups taken while the host clock was off (their ids and host times lie)."""
    from drkit.catalog import list_backups, skewed_backups
    from drkit.status import skew_attention

    try:
        manifests = list_backups(repo)
    except DrkitError as exc:
        report.add("backup clocks", False, f"{repo.location}: {exc}")
        return
    skewed = skewed_backups(manifests)
    if skewed:
        report.warn("backup clocks", skew_attention(skewed))
    else:
        report.add(
            "backup clocks",
            True,
            f"{len(manifests)} backup(s), none taken with a skewed host clock",
        )


def _check_repository(
    report: CheckReport, policy: Policy, repo: Any, name: str = "repository"
) -> bool:
    """A probe through the whole encoding; decrypted only where an identity is configured.
    ``name``: the check's name (``copy NAME`` for a copy)."""
    payload = b"drkit check probe " + secrets.token_hex(16).encode()
    base = f"check/probe-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    stored = None
    try:
        stored = repo.store(base, io.BytesIO(payload))
        encryption = policy.repository.encryption
        if encryption is None or encryption.identities():
            with repo.open_decoded(stored) as stream:
                back = stream.read()
            if back != payload:
                raise DrkitError(f"{stored.key}: read back different bytes than were written")
            verb = "written, read back and deleted"
        else:
            if len(repo.backend.get_bytes(stored.key)) != stored.stored_size:
                raise DrkitError(f"{stored.key}: read back a different size than was written")
            verb = "written, read (encrypted; no identity here to decrypt) and deleted"
        repo.delete(stored.key)
        if repo.backend.head(stored.key) is not None:
            raise DrkitError(f"{stored.key}: still present after delete")
    except DrkitError as exc:
        report.add(name, False, f"{repo.location}: {exc}")
        return False
    finally:
        if stored is not None:
            try:
                repo.delete(stored.key)
            except DrkitError:
                log.warning("could not remove the probe object %s", stored.key)
    report.add(name, True, f"{repo.location}: probe object {verb}")
    return True


def _check_object_lock(
    report: CheckReport, policy: Policy, repo: Any, name: str = "object lock"
) -> bool:
    """With ``repository.object_lock``: the store has object lock enabled for the bucket."""
    lock = policy.repository.object_lock
    if lock is None:
        return True
    try:
        enabled = repo.backend.object_lock_enabled()
    except DrkitError as exc:
        report.add(name, False, f"{repo.location}: {exc}")
        return False
    if not enabled:
        report.add(
            name,
            False,
            f"{repo.location}: the bucket does not have object lock enabled, so nothing "
            "drkit writes can be locked: use a bucket created with object lock or remove "
            "repository.object_lock",
        )
        return False
    report.add(
        name,
        True,
        f"{repo.location}: object lock enabled; every object is retained {lock.days} days "
        f"({lock.mode} mode)",
    )
    return True


def _check_copies(report: CheckReport, policy: Policy) -> None:
    """Each copy (``copies.NAME``) reachable and writable, proved by the same probe as
    the primary repository (and its object lock, where it has one)."""
    from drkit.storage import Repository

    for name in sorted(policy.copies):
        copy = policy.for_copy(name)
        try:
            repo = Repository.for_policy(copy)
        except DrkitError as exc:
            report.add(f"copy {name}", False, str(exc))
            continue
        try:
            if _check_object_lock(report, copy, repo, f"copy {name} object lock"):
                _check_repository(report, copy, repo, f"copy {name}")
        finally:
            repo.close()


def _check_encryption(report: CheckReport, policy: Policy) -> None:
    encryption = policy.repository.encryption
    if encryption is None:
        return
    from drkit import crypto

    try:
        crypto.check_recipients(list(encryption.recipients))
    except DrkitError as exc:
        report.add("encryption recipients", False, str(exc))
        return
    report.add(
        "encryption recipients", True, f"{len(encryption.recipients)} age recipient(s) usable"
    )
    identities = encryption.identities()
    if not identities:
        report.add(
            "encryption identity",
            True,
            "no identity on this host (backups need none; restores and drills do)",
        )
        return
    try:
        crypto.check_identities(identities)
        keys = {key for path in identities for key in crypto.public_key_of(path)}
    except DrkitError as exc:
        report.add("encryption identity", False, str(exc))
        return
    native = {r for r in encryption.recipients if r.startswith("age1")}
    if native and keys and not (keys & native):
        report.add(
            "encryption identity",
            False,
            "the identity file matches none of the policy's age recipients: restores of new "
            "backups would fail",
        )
        return
    report.add("encryption identity", True, f"{len(identities)} identity file(s) readable")


def _check_schedule(report: CheckReport, policy: Policy) -> None:
    from drkit.cron import cron_trigger

    jobs = policy.schedule.jobs()
    if not jobs:
        report.add("schedule", True, "nothing scheduled (on-demand environment)")
        return
    now = datetime.now(policy.tz)
    parts = []
    try:
        for job, expr in jobs.items():
            fire = cron_trigger(expr, policy.tz).get_next_fire_time(None, now)
            parts.append(f"{job} next {fire:%Y-%m-%d %H:%M %Z}")
    except ValueError as exc:
        report.add("schedule", False, str(exc))
        return
    report.add("schedule", True, "; ".join(parts))


def run_checks(policy: Policy, policy_dir: Path | None = None) -> CheckReport:
    """Every check that applies to ``policy``, in order; never raises for a failed check."""
    from drkit.storage import Repository

    report = CheckReport(policy.name)
    conn = _check_database(report, policy, is_sanitize_source(policy, policy_dir))
    reached = conn is not None
    try:
        try:
            repo = Repository.for_policy(policy)
        except DrkitError as exc:
            report.add("repository", False, str(exc))
            repo = None
        if conn is not None:
            _check_clock(report, conn)
        if policy.schedule.physical_incremental_backup and conn is not None:
            _check_incremental(report, conn)
        if policy.wal_archiving and conn is not None and repo is not None:
            _check_archiving(report, policy, conn, repo)
        if policy.wal_streaming.enabled and conn is not None:
            _check_streaming(report, policy, conn)
        if repo is not None:
            if _check_object_lock(report, policy, repo) and _check_repository(report, policy, repo):
                _check_backup_clocks(report, repo)
            repo.close()
        _check_copies(report, policy)
    finally:
        if conn is not None:
            conn.close()
    target = is_sanitize_target(policy, policy_dir)
    if target or reached:  # an unreachable server is reported once, above
        _check_sanitize_target(report, policy, target=target)
    _check_encryption(report, policy)
    _check_schedule(report, policy)
    return report


# -- the --json documents --------------------------------------------------------


class CheckLine(Shape):
    name: str = described("what was checked")
    status: Literal["PASS", "FAIL", "WARN"] = described(
        "the verdict; WARN: something to fix that breaks nothing (ok stays true)"
    )
    detail: str = described("what was seen, or what to fix")


class CheckDocument(Document):
    """`drkit check ENV --json` (exit 3 when a check fails; a WARN alone exits 0)"""

    environment: str
    checks: list[CheckLine] = described("one entry per check, in the order they ran")
