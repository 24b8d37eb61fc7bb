"""Restore and WAL commands: ``restore`` (logical, or PITR with --point-in-time),
``wal-push``, ``promote-timeline`` and ``wal-fetch``.

PostgreSQL's plain ``wal-push``/``wal-fetch`` lines never get here: :mod:`drkit.cli.entry`
runs them without typer or rich.  These are the forms with --json, -v and the like.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from drkit.cli.app import app
from drkit.cli.common import (
    EnvArg,
    JsonOpt,
    PolicyDirOpt,
    emit_json,
    err,
    load,
    out,
    settle,
    state,
)
from drkit.cli.render import live_progress, ts_text
from drkit.errors import UsageError, wal_fetch_line
from drkit.storage.repository import Repository
from drkit.timelines import promote_timeline, server_timeline
from drkit.wal import load_wal_policy, run_fetch
from drkit.walasync import archive_wal


@app.command("restore")
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
        bool, typer.Option("--force", help="Restore over a database that holds tables.")
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
            "Like pg_restore -t: no indexes or constraints.",
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
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Logical restore, or with --point-in-time a physical point-in-time recovery."""
    settle(json_out, policy_dir)
    if point_in_time is None:
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
                "go with --point-in-time"
            )
        _restore_logical(env, backup_ref, target_db, jobs, force, database, tables or [])
        return
    if database is not None or tables:
        raise UsageError("--database and --table are for logical restores")
    if pgdata is None:
        raise UsageError("--point-in-time needs --pgdata DIR (an empty data directory)")
    if target_db is not None:
        raise UsageError("--target-db is for logical restores; PITR recovers a whole cluster")
    if target_action not in ("promote", "pause", "shutdown"):
        raise UsageError("--target-action must be promote, pause or shutdown")
    if archive_mode not in ("off", "preserve"):
        raise UsageError("--archive-mode must be off or preserve")
    # lazy: pydantic and psycopg, ~0.5 s
    from drkit.config import parse_timestamp
    from drkit.restore.pitr import parse_timeline, restore_point_in_time

    follow = parse_timeline(timeline)

    target = (
        None
        if point_in_time == "latest"
        else parse_timestamp(point_in_time, option="--point-in-time")
    )
    policy = load(env)
    with live_progress() as progress:
        result = restore_point_in_time(
            policy,
            target,
            pgdata,
            port=port,
            target_action=target_action,
            start=not no_start,
            archive=archive_mode == "preserve",
            timeline=follow,
            allow_gap=allow_gap,
            on_progress=progress,
        )
    if state.json:
        emit_json({"ok": True, **result.to_dict()})
        return
    if not result.started:
        out.print(
            f"[green]✓[/green] {result.pgdata} prepared from {result.backup_id} for recovery to "
            f"{result.target} (port {result.port}); start it with pg_ctl -D {result.pgdata} start"
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


def _restore_logical(
    env: str,
    ref: str | None,
    target_db: str | None,
    jobs: int,
    force: bool,
    database: str | None,
    tables: list[str],
) -> None:
    from drkit.restore.logical import restore_logical  # lazy: psycopg, pydantic, ~1 s

    policy = load(env)
    started = time.monotonic()
    with live_progress() as progress:
        result = restore_logical(
            policy,
            ref,
            target_db=target_db,
            database=database,
            tables=tables,
            jobs=jobs,
            force=force,
            on_progress=progress,
        )
    elapsed = time.monotonic() - started
    if state.json:
        took = round(elapsed, 3)
        emit_json({**result.to_dict(), "duration": took, "duration_seconds": took})
        return
    for d in result.databases:
        out.print(
            f"[green]✓[/green] restored {d.database} from {d.backup_id or result.backup_id} "
            f"into {d.target}: "
            f"{d.tables} tables, {d.rows} rows match the manifest ({elapsed:.1f}s)"
        )


# -- WAL -----------------------------------------------------------------------------


@app.command("wal-push")
def wal_push(
    env: EnvArg,
    path: Annotated[Path, typer.Argument(help="WAL file path (%p).")],
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Archive one WAL segment or history file (archive_command)."""
    st = settle(json_out, policy_dir)
    report = archive_wal(load_wal_policy(env, st.policy_dir), path, st.policy_dir)
    if st.json:
        emit_json(report.to_dict())


@app.command("promote-timeline")
def promote_timeline_cmd(
    env: EnvArg,
    timeline: Annotated[
        int | None,
        typer.Argument(
            metavar="TLI", min=1, help="Timeline ID (default: the policy database's current one)."
        ),
    ] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Record a timeline as production's: `latest` restores and drills follow it."""
    settle(json_out, policy_dir)
    policy = load(env)
    source = "drkit promote-timeline"
    if timeline is None:
        timeline = server_timeline(policy.database.url.get_secret_value())
        source += " (the database server's current timeline)"
    doc = promote_timeline(Repository.for_policy(policy), timeline, source)
    if state.json:
        emit_json({"ok": True, "environment": env, **doc})
        return
    previous = doc["previous"] if doc["previous"] is not None else "none recorded"
    out.print(
        f"[green]✓[/green] timeline {doc['timeline']} recorded as {env}'s production timeline "
        f"(previously: {previous})"
    )


@app.command("wal-fetch")
def wal_fetch(
    env: EnvArg,
    name: Annotated[str, typer.Argument(help="WAL file name (%f).")],
    path: Annotated[Path, typer.Argument(help="Where to write it (%p).")],
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Fetch one WAL file from the archive (restore_command); exit 1 when it does not exist."""
    st = settle(json_out, policy_dir)
    code, message = run_fetch(
        lambda: load_wal_policy(env, st.policy_dir), name, path, st.policy_dir
    )
    if message:
        err.print(wal_fetch_line(name, message), markup=False, highlight=False)
    if st.json:
        emit_json({"name": name, "fetched": code == 0})
    if code:
        raise typer.Exit(code)
