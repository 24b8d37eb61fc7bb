"""``drkit restore``: a logical restore, or with a recovery target (--point-in-time,
--target-xid, --target-lsn, --target-name, --immediate) a physical point-in-time
recovery; with --continue, a paused recovery moved on to a later target."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from drkit.cli.common import (
    EnvArg,
    ExclusiveOpt,
    ImmediateOpt,
    JsonOpt,
    PolicyDirOpt,
    RepoOpt,
    TargetLsnOpt,
    TargetNameOpt,
    TargetXidOpt,
    emit_json,
    load,
    out,
    settle,
    sigterm_interrupts,
    state,
)
from drkit.cli.render import live_progress, ts_text
from drkit.errors import UsageError

#: this module's commands, registered on drkit's root by drkit.cli.app
commands = typer.Typer()

if TYPE_CHECKING:
    from drkit.restore import PitrResult, RecoveryTarget


@commands.command("restore")
def restore(
    env: EnvArg,
    backup_ref: Annotated[
        str | None,
        typer.Argument(
            metavar="[ID|latest]",
            help="A backup id, or latest (default): the newest logical backup, in the "
            "server's order (a newer base backup is restored with --point-in-time).",
            show_default=False,
        ),
    ] = None,
    target_db: Annotated[
        str | None,
        typer.Option("--target-db", metavar="URL", help="Restore into this database URL."),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", metavar="N", min=1, help="Parallel pg_restore jobs.")
    ] = 1,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Restore over a database that holds tables; with --table (and no --as), "
            "replace the live table of the same name.",
        ),
    ] = False,
    database: Annotated[
        str | None,
        typer.Option(
            "--database", metavar="NAME", help="Restore only this database of the backup."
        ),
    ] = None,
    tables: Annotated[
        list[str] | None,
        typer.Option(
            "--table",
            metavar="T",
            help="Restore only this table (T in any schema, or SCHEMA.T); repeatable. "
            "With its indexes and constraints, in one transaction; an existing table is "
            "replaced only with --force. With a recovery target, from a scratch recovery "
            "into --target-db.",
        ),
    ] = None,
    rename: Annotated[
        str | None,
        typer.Option(
            "--as",
            metavar="NEWNAME",
            help="Restore the one --table under this name (NEWNAME or SCHEMA.NEWNAME), next "
            "to the live table; an existing table of that name is never replaced.",
        ),
    ] = None,
    point_in_time: Annotated[
        str | None,
        typer.Option(
            "--point-in-time",
            metavar="TS|latest",
            help="Physical PITR target: ISO timestamp with zone, or latest.",
        ),
    ] = None,
    target_xid: TargetXidOpt = None,
    target_lsn: TargetLsnOpt = None,
    target_name: TargetNameOpt = None,
    immediate: ImmediateOpt = False,
    exclusive: ExclusiveOpt = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--continue",
            help="Move the server paused in --pgdata (--target-action pause) on to a later "
            "target, without restoring again.",
        ),
    ] = False,
    pgdata: Annotated[
        Path | None, typer.Option("--pgdata", metavar="DIR", help="Empty data directory for PITR.")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", metavar="PORT", help="Port of the recovered server.")
    ] = None,
    target_action: Annotated[
        str,
        typer.Option(
            "--target-action", metavar="promote|pause|shutdown", help="promote | pause | shutdown"
        ),
    ] = "promote",
    no_start: Annotated[
        bool, typer.Option("--no-start", help="Prepare the data directory, do not start it.")
    ] = False,
    timeline: Annotated[
        str,
        typer.Option(
            "--timeline",
            metavar="current|latest|N",
            help="current (production's recorded timeline) | latest (highest archived) | N",
        ),
    ] = "current",
    archive_mode: Annotated[
        str,
        typer.Option(
            "--archive-mode",
            metavar="off|preserve",
            help="off: the recovered server never archives; preserve: it is the new primary",
        ),
    ] = "off",
    allow_gap: Annotated[
        bool,
        typer.Option("--allow-gap", help="Recover latest up to a gap in the WAL archive."),
    ] = False,
    repo_name: RepoOpt = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Logical restore, or with --point-in-time a physical point-in-time recovery.

    A physical recovery takes exactly one target: --point-in-time TS|latest,
    --target-xid, --target-lsn, --target-name (a restore point drkit recorded) or
    --immediate; --exclusive stops just before a time, transaction or LSN.  The server
    pauses at the target and drkit checks what it replayed before the --target-action.
    --continue moves a server paused in --pgdata on to a later target.  With a target,
    --table S.T --target-db URL [--as NEWNAME] puts tables back into a live database from
    a scratch recovery, which is removed afterwards."""
    settle(json_out, policy_dir)
    from drkit.restore import parse_target

    point = parse_target(
        point_in_time=point_in_time,
        xid=target_xid,
        lsn=target_lsn,
        name=target_name,
        immediate=immediate,
        exclusive=exclusive,
    )
    if point is None:
        if resume:
            raise UsageError("--continue needs the later target to move the paused server on to")
        _refuse_pitr_options(pgdata, port, no_start, allow_gap, timeline, archive_mode)
        _restore_logical(
            env, backup_ref, target_db, jobs, force, database, tables or [], rename, repo_name
        )
        return
    if backup_ref is not None:
        raise UsageError(
            "a backup id is for logical restores; a recovery chooses the base backup "
            "that precedes its target"
        )
    if tables:
        if resume or pgdata is not None or port is not None or no_start or jobs != 1:
            raise UsageError(
                "--table with a recovery target restores into --target-db from a scratch "
                "cluster: --continue, --pgdata, --port, --no-start and --jobs do not apply"
            )
        if target_action != "promote" or archive_mode != "off":
            raise UsageError("--target-action and --archive-mode do not apply to --table")
        _restore_tables(
            env, point, tables, rename, force, target_db, database, timeline, allow_gap, repo_name
        )
        return
    if rename is not None:
        from drkit.restore import parse_choice

        parse_choice([], rename, force)  # the one message for --as without --table
    recovery = _recovery(
        point,
        pgdata,
        port=port,
        target_action=target_action,
        start=not no_start,
        timeline=timeline,
        archive_mode=archive_mode,
        allow_gap=allow_gap,
        target_db=target_db,
        database=database,
        tables=tables or [],
        resume=resume,
    )
    _restore_pitr(env, recovery, repo_name)


# -- logical ------------------------------------------------------------------------------


def _refuse_pitr_options(
    pgdata: Path | None,
    port: int | None,
    no_start: bool,
    allow_gap: bool,
    timeline: str,
    archive_mode: str,
) -> None:
    """A logical restore takes none of the options of a point-in-time recovery."""
    if (
        pgdata is not None
        or port is not None
        or no_start
        or allow_gap
        or timeline != "current"
        or archive_mode != "off"
    ):
        raise UsageError(
            "--pgdata, --port, --no-start, --timeline, --archive-mode and --allow-gap "
            "go with a recovery target (--point-in-time, --target-xid, --target-lsn, "
            "--target-name, --immediate)"
        )


def _restore_logical(
    env: str,
    ref: str | None,
    target_db: str | None,
    jobs: int,
    force: bool,
    database: str | None,
    tables: list[str],
    rename: str | None,
    repo_name: str | None,
) -> None:
    from drkit.restore import restore_logical  # lazy: psycopg, pydantic, ~1 s

    policy = load(env, repo_name)
    started = time.monotonic()
    with live_progress() as progress:
        result = restore_logical(
            policy,
            ref,
            target_db=target_db,
            database=database,
            tables=tables,
            rename=rename,
            jobs=jobs,
            force=force,
            on_progress=progress,
        )
    elapsed = time.monotonic() - started
    if state.json:
        took = round(elapsed, 3)
        emit_json(result.document(duration=took))
        return
    for d in result.databases:
        for t in d.restored:
            out.print(
                f"[green]✓[/green] {t.source} restored from {d.backup_id or result.backup_id} "
                + ("over the live table" if force and not rename else f"as {t.table}")
                + f" in {d.target}: {t.rows} rows",
                highlight=False,
            )
        for fk in d.dropped_foreign_keys:
            out.print(f"  [yellow]![/yellow] foreign key {fk} left out", highlight=False)
        out.print(
            f"[green]✓[/green] restored {d.database} from {d.backup_id or result.backup_id} "
            f"into {d.target}: "
            f"{d.tables} tables, {d.rows} rows match the manifest ({elapsed:.1f}s)"
        )


# -- tables from a recovery ---------------------------------------------------------------


def _restore_tables(
    env: str,
    point: RecoveryTarget,
    tables: list[str],
    rename: str | None,
    force: bool,
    target_db: str | None,
    database: str | None,
    timeline: str,
    allow_gap: bool,
    repo_name: str | None,
) -> None:
    # lazy: pydantic and psycopg
    from drkit.restore import parse_choice, parse_timeline, restore_tables_at

    choice = parse_choice(tables, rename, force)
    if target_db is None:
        raise UsageError(
            "--table with a recovery target needs --target-db URL (the live database the "
            "tables go into)"
        )
    if allow_gap:
        raise UsageError("--allow-gap does not apply to --table: the target must be reached")
    policy = load(env, repo_name)
    started = time.monotonic()
    with sigterm_interrupts(), live_progress() as progress:
        result = restore_tables_at(
            policy,
            point,
            choice,
            target_db,
            database=database,
            timeline=parse_timeline(timeline),
            on_progress=progress,
        )
    took = round(time.monotonic() - started, 3)
    if state.json:
        emit_json(result.document(duration=took))
        return
    for t in result.tables:
        out.print(
            f"[green]✓[/green] {t.source} as of {ts_text(result.reached_at)} (asked: "
            f"{result.target}, backup {result.backup_id}) restored "
            + ("over the live table" if result.replaced else "as " + t.table)
            + f" in {result.target_db}: {t.rows} rows ({took:.1f}s)",
            highlight=False,
        )
    for fk in result.dropped_foreign_keys:
        out.print(f"  [yellow]![/yellow] foreign key {fk} left out", highlight=False)
    out.print(f"  scratch cluster: {result.scratch}", markup=False)


# -- point in time ------------------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    """A point-in-time recovery as the command line asks for it, its options checked."""

    point: RecoveryTarget
    pgdata: Path
    port: int | None
    target_action: str
    start: bool
    archive: bool
    timeline: str | int
    allow_gap: bool
    resume: bool = False


def _recovery(
    point: RecoveryTarget,
    pgdata: Path | None,
    *,
    port: int | None,
    target_action: str,
    start: bool,
    timeline: str,
    archive_mode: str,
    allow_gap: bool,
    target_db: str | None,
    database: str | None,
    tables: list[str],
    resume: bool,
) -> Recovery:
    """Check the options of a point-in-time recovery, in the order their errors are
    reported (--target-db, --database and --table belong to logical restores), and parse
    its target and timeline."""
    if database is not None or tables:
        raise UsageError("--database and --table are for logical restores")
    flag = point.describe().split(" ", 1)[0]
    if pgdata is None:
        if resume:
            raise UsageError(
                "--continue needs --pgdata DIR (the data directory of the paused server)"
            )
        raise UsageError(f"{flag} needs --pgdata DIR (an empty data directory)")
    if resume and (port is not None or not start or archive_mode != "off" or allow_gap):
        raise UsageError(
            "--continue moves the paused server as it runs: --port, --no-start, "
            "--archive-mode and --allow-gap go with a first recovery"
        )
    if target_db is not None:
        raise UsageError("--target-db is for logical restores; PITR recovers a whole cluster")
    if target_action not in ("promote", "pause", "shutdown"):
        raise UsageError("--target-action must be promote, pause or shutdown")
    if archive_mode not in ("off", "preserve"):
        raise UsageError("--archive-mode must be off or preserve")
    from drkit.restore import parse_timeline  # lazy: pydantic and psycopg, ~0.5 s

    follow = parse_timeline(timeline)
    return Recovery(
        point=point,
        pgdata=pgdata,
        port=port,
        target_action=target_action,
        start=start,
        archive=archive_mode == "preserve",
        timeline=follow,
        allow_gap=allow_gap,
        resume=resume,
    )


def _restore_pitr(env: str, recovery: Recovery, repo_name: str | None) -> None:
    # lazy: pydantic and psycopg
    from drkit.restore import continue_recovery, restore_point_in_time

    policy = load(env, repo_name)
    with live_progress() as progress:
        if recovery.resume:
            result = continue_recovery(
                policy,
                recovery.point,
                recovery.pgdata,
                target_action=recovery.target_action,
                timeline=recovery.timeline,
                on_progress=progress,
            )
        else:
            result = restore_point_in_time(
                policy,
                None,
                recovery.pgdata,
                point=recovery.point,
                port=recovery.port,
                target_action=recovery.target_action,
                start=recovery.start,
                archive=recovery.archive,
                timeline=recovery.timeline,
                allow_gap=recovery.allow_gap,
                on_progress=progress,
            )
    if state.json:
        emit_json(result.document())
        return
    _print_recovery(result)


def _print_recovery(result: PitrResult) -> None:
    if not result.started:
        out.print(
            f"[green]✓[/green] {result.pgdata} prepared from {result.backup_id} for recovery to "
            f"{result.target} (port {result.port}); start it with pg_ctl -D {result.pgdata} start"
        )
    elif result.continued:
        out.print(
            f"[green]✓[/green] moved on to {ts_text(result.reached_at)} (asked: {result.target}) "
            f"in the same data directory, recovered from {result.backup_id}: timeline "
            f"{result.timeline}, {result.state}, port {result.port}, data in {result.pgdata}"
        )
    else:
        out.print(
            f"[green]✓[/green] recovered from {result.backup_id} to {ts_text(result.reached_at)} "
            f"(asked: {result.target}), timeline {result.timeline}, {result.state}, "
            f"port {result.port}, data in {result.pgdata}"
        )
    if result.followed is not None:
        f = result.followed
        others = ", ".join(map(str, f.others)) or "none"
        out.print(
            f"  followed timeline {f.timeline} ({f.source}); production's recorded timeline: "
            f"{f.recorded if f.recorded is not None else 'none recorded'}; "
            f"other timelines in the archive: {others}",
            markup=False,
        )
    if result.lsn is not None:
        out.print(
            f"  replayed to {result.lsn}"
            + (f", the planned end being {result.end_lsn}" if result.end_lsn else ""),
            markup=False,
        )
    if result.gap is not None:
        gap = result.gap
        out.print(
            f"  [yellow]![/yellow] stopped at a gap (--allow-gap): WAL segment {gap.missing} "
            f"is missing; left out: {gap.newer_segments} newer segment(s) up to "
            f"{gap.newest_segment}, archived {ts_text(gap.newest_end)}",
            highlight=False,
        )
    out.print(
        "  archiving: "
        + (
            "preserved — this server archives into the repository as the new primary"
            if result.archive_mode == "preserve"
            else "off — this server never archives into the repository"
        ),
        markup=False,
    )


@commands.command("wal-search")
def wal_search(
    env: EnvArg,
    table: Annotated[
        str,
        typer.Option(
            "--table", metavar="SCHEMA.T", help="The table to search for (schema-qualified)."
        ),
    ],
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="TS",
            help="Only transactions committed at or after TS (ISO 8601 with a zone); the "
            "search starts from the newest base backup consistent before it.",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            metavar="TS",
            help="Only transactions committed at or before TS (ISO 8601 with a zone).",
        ),
    ] = None,
    op: Annotated[
        str | None,
        typer.Option(
            "--op",
            metavar="insert|update|delete|truncate|drop",
            help="Only transactions that did this to the table.",
        ),
    ] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """List the transactions that touched a table in the archived WAL, with restore flags.

    The table is looked up in the relation catalog of a base backup (the newest one
    consistent before --since, else the oldest that has one) and followed by its relation
    file through the archived WAL of production's timeline, decoded segment by segment
    with pg_waldump, across TRUNCATE, VACUUM FULL and rewriting ALTER TABLE (the new file
    is the first one the rewriting transaction created; a transaction that replaced the
    files of several tables at once is refused, exit 3) up to DROP TABLE.  For each
    committed transaction: its ID, commit time, timeline, LSN range, the operations with
    row counts, and the flags that restore to just before it: drkit restore ENV
    --target-xid XID --exclusive --pgdata DIR."""
    from drkit.config import parse_timestamp
    from drkit.restore import search_table

    settle(json_out, policy_dir)
    start = parse_timestamp(since, option="--since") if since is not None else None
    end = parse_timestamp(until, option="--until") if until is not None else None
    policy = load(env)
    from drkit.storage import Repository

    result = search_table(Repository.for_policy(policy), table, since=start, until=end, op=op)
    if state.json:
        emit_json(result.document())
        return
    from drkit.cli.render import Col, print_table

    rows = [
        [
            str(t.xid),
            ts_text(t.committed_at),
            str(t.timeline),
            f"{t.first_lsn}..{t.commit_lsn}",
            ", ".join(f"{k} {v}" for k, v in t.operations.items()),
            t.restore_flags,
        ]
        for t in result.transactions
    ]
    print_table(
        f"{result.table} in {result.database}: {len(rows)} transaction(s), WAL "
        f"{result.searched_from}..{result.searched_to} on timeline {result.timeline} "
        f"(catalog of backup {result.backup})",
        [
            Col("xid", right=True, fold=False),
            Col("committed"),
            Col("tli", right=True),
            Col("lsn range", fold=False),
            Col("operations"),
            Col("restore just before it", fold=False),
        ],
        rows,
    )
