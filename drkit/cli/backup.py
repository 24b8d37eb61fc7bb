"""Backup commands: ``backup``, ``backups`` (the list), ``verify``, ``prune``, one
backup by hand: ``keep`` and ``delete``, and ``copy`` (to the policy's copies)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from drkit.catalog import list_backups, resolve_backup
from drkit.cli.common import (
    EnvArg,
    JsonOpt,
    PolicyDirOpt,
    RepoOpt,
    emit_json,
    load,
    out,
    settle,
    state,
)
from drkit.cli.render import Col, live_progress, print_table, ts_text
from drkit.errors import CheckFailed, NotFoundError, UsageError
from drkit.progress import Meter, human_size
from drkit.storage import Repository

if TYPE_CHECKING:
    from drkit.backup import RestorePoint
    from drkit.catalog import Manifest

#: this module's commands, registered on drkit's root by drkit.cli.app
commands = typer.Typer()


@commands.command("backup")
def backup(
    env: EnvArg,
    physical: Annotated[bool, typer.Option("--physical", help="Base backup for PITR.")] = False,
    incremental: Annotated[
        bool,
        typer.Option("--incremental", help="With --physical: incremental (PostgreSQL 17+)."),
    ] = False,
    database: Annotated[
        list[str] | None,
        typer.Option("--database", metavar="NAME", help="Back up only this database (repeatable)."),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            metavar="N",
            min=1,
            help="Directory format, N parallel pg_dump jobs, one object per table file "
            "(default: only above the policy's backup.parallel_threshold).",
        ),
    ] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Take a logical backup (pg_dump per database) or, with --physical, a base backup."""
    settle(json_out, policy_dir)
    policy = load(env)
    if incremental and not physical:
        raise UsageError("--incremental applies to base backups: add --physical")
    if physical:
        if database:
            raise UsageError("--database applies to logical backups; a base backup is the cluster")
        if jobs is not None:
            raise UsageError("--jobs applies to logical backups (pg_dump in directory format)")
        from drkit.backup import run_physical_backup  # lazy: psycopg, pydantic

        with live_progress() as progress:
            manifest = run_physical_backup(policy, on_progress=progress, incremental=incremental)
    else:
        from drkit.backup import backup_logical  # lazy: psycopg, pydantic

        with live_progress() as progress:
            manifest = backup_logical(
                policy, databases=database or None, jobs=jobs, on_progress=progress
            )
    if state.json:
        from drkit.backup import backup_document

        emit_json(backup_document(manifest))
        return
    out.print(
        f"[green]✓[/green] backup [bold]{manifest.id}[/bold]: {', '.join(manifest.databases)} — "
        f"{human_size(manifest.size)} stored ({human_size(manifest.raw_size)} raw) "
        f"in {manifest.duration:.1f}s"
    )


@commands.command("backups")
def backups(
    env: EnvArg,
    repo_name: RepoOpt = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """List backups: id, kind, started, duration, size, databases, retention tiers.

    Newest first, in the server's order (WAL position, then the server's time), never by
    id or host time; a backup taken while the host clock was off is flagged.
    A repository that does not exist is an error (exit 1), not an empty list."""
    from drkit.backup import list_environment
    from drkit.catalog import SKEW_BOUND, skewed_backups

    settle(json_out, policy_dir)
    policy = load(env, repo_name)
    repo = Repository.for_policy(policy)
    repo.backend.check_reachable()
    listed = list_environment(policy, repo)
    if state.json:
        emit_json(listed.document())
        return
    points, manifests = listed.restore_points, listed.manifests
    if points:
        _print_restore_points(env, repo, points)
    if not manifests:
        out.print(f"no backups in {repo.location}", markup=False, highlight=False)
        return
    print_table(
        f"backups of {env} in {repo.location}",
        # an id is what restore takes: never cut it; the other columns fold first
        [
            Col("id", fold=False),
            Col("kind"),
            Col("started"),
            Col("duration", right=True),
            Col("size", right=True),
            Col("databases"),
            Col("tiers"),
        ],
        [
            [
                m.id,
                m.kind if m.parent is None else f"{m.kind}, incremental on {m.parent}",
                ts_text(m.started_at) + (f" ({skew_text(m)})" if m.clock_skewed else ""),
                f"{m.duration:.1f}s",
                human_size(m.size),
                ", ".join(m.databases),
                ", ".join(listed.tiers.get(m.id, [])) or "-",
            ]
            for m in manifests
        ],
    )
    skewed = skewed_backups(list(reversed(manifests)))
    if skewed:
        out.print(
            f"warning: {len(skewed)} backup(s) taken while drkit's host clock was off by more "
            f"than {SKEW_BOUND.total_seconds() / 60:g} minutes (newest: {skewed[-1].id}, {skew_text(skewed[-1])}"
            "): their ids and started times are wrong; backups are listed, restored and "
            "pruned in the server's order. Fix the host clock (NTP).",
            markup=False,
            highlight=False,
        )


def _print_restore_points(env: str, repo: Repository, points: list[RestorePoint]) -> None:
    from rich.table import Table

    table = Table(title=f"restore points of {env} in {repo.location}")
    table.add_column("name", no_wrap=True)
    for col in ("created", "lsn", "timeline", "segment"):
        table.add_column(col, overflow="fold")
    for p in points:
        table.add_row(p.name, ts_text(p.created_at), p.lsn, str(p.timeline), p.segment)
    out.print(table)


@commands.command("restore-point")
def restore_point(
    env: EnvArg,
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME", help="The restore point's name (what --target-name takes later)."
        ),
    ],
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Create a named restore point, wait until its WAL is archived, and record it.

    pg_create_restore_point, then pg_switch_wal; the record
    (ENV/restore-points/NAME.json: time, LSN, timeline, system identifier) is written
    only once the segment holding it is in the repository, and never replaced: a name
    already recorded is refused (exit 4).  The wait is bounded by DRKIT_ARCHIVE_WAIT
    seconds (exit 1 past it).  drkit restore ENV --target-name NAME recovers to it."""
    from drkit.backup import check_restore_point_name, create_restore_point

    settle(json_out, policy_dir)
    check_restore_point_name(name)
    policy = load(env)
    point = create_restore_point(policy, name)
    if state.json:
        emit_json(point.document())
        return
    out.print(
        f"[green]✓[/green] restore point {point.name} at {point.lsn} (timeline {point.timeline}, "
        f"{ts_text(point.created_at)}), WAL {point.segment} archived; recover to it with "
        f"drkit restore {env} --target-name {point.name} --pgdata DIR",
        highlight=False,
    )


def skew_text(manifest: Manifest) -> str:
    from drkit.catalog import describe_skew

    skew = manifest.host_skew
    return "host clock skew unknown" if skew is None else f"host clock {describe_skew(skew)} server"


@commands.command("verify")
def verify(
    env: EnvArg,
    backup_ref: Annotated[
        str | None,
        typer.Argument(
            metavar="[ID|latest]",
            help="A backup id, or latest (default): the newest backup of either kind, in "
            "the server's order.",
            show_default=False,
        ),
    ] = None,
    all_backups: Annotated[bool, typer.Option("--all", help="Verify every backup.")] = False,
    repo_name: RepoOpt = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Re-read stored objects: sizes, sha256, decoding, and the WAL chain of physical backups."""
    from drkit.backup import WalReading, verify_backup, verify_document

    settle(json_out, policy_dir)
    if all_backups and backup_ref:
        raise UsageError("give a backup ID or --all, not both")
    policy = load(env, repo_name)
    repo = Repository.for_policy(policy)
    if all_backups:
        manifests = list_backups(repo)
        if not manifests:
            raise NotFoundError(f"no backups in {repo.location} to verify")
    else:
        manifests = [resolve_backup(repo, backup_ref)]
    verdicts = []
    wal = WalReading()  # WAL shared by several backups' chains is read once
    wal_plan = None
    if any(m.kind == "physical" for m in manifests):
        from drkit.backup import plan_prune

        wal_plan = plan_prune(repo, policy).wal_plan  # what prune keeps of the WAL
    with live_progress() as progress:
        for m in manifests:
            with Meter(progress, "verify", m.id, total=m.raw_size) as meter:
                verdicts.append(verify_backup(repo, m, meter, wal, wal_plan))
    bad = [v for v in verdicts if not v.ok]
    if state.json:
        emit_json(verify_document(verdicts))
    else:
        for v in verdicts:
            mark = "[green]✓ OK[/green]" if v.ok else "[red]✗ FAILED[/red]"
            out.print(f"{mark} {v.backup_id} ({v.objects} objects, {human_size(v.bytes)})")
            for key, value in v.details.items():
                if key == "wal_checked":
                    value = _wal_checked_text(value)
                out.print(f"    {key}: {value}", markup=False)
            for problem in v.problems:
                out.print(f"    {problem}", markup=False)
    if bad:
        first = bad[0]
        raise CheckFailed(
            f"verify failed for {len(bad)} backup(s); {first.backup_id}: {first.problems[0]}"
        )


def _wal_checked_text(checked: dict[str, Any]) -> str:
    """``4 WAL files read (zstd frame checksum: 4), 1 damaged``"""
    how = ", ".join(f"{k}: {n}" for k, n in checked.get("by", {}).items())
    text = f"{checked.get('files', 0)} WAL files read" + (f" ({how})" if how else "")
    return text + (f", {checked['damaged']} damaged" if checked.get("damaged") else "")


@commands.command("prune")
def prune(
    env: EnvArg,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show keep/delete, delete nothing.")
    ] = False,
    repo_name: RepoOpt = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Apply the retention policy (grandfather-father-son).

    Prunes the primary repository only; ``--repo NAME`` prunes the copy NAME with the
    copy's own retention (``copies.NAME.retention``).  Each repository is pruned by its
    own run, so one command never deletes from the primary and its copies at once."""
    from drkit.backup import prune as run_prune
    from drkit.backup import running_backups

    settle(json_out, policy_dir)
    policy = load(env, repo_name)
    repo = Repository.for_policy(policy)
    if repo_name is not None:  # pruning a copy must never reach the primary
        from drkit.backup import refuse_same_repository

        refuse_same_repository(Repository.for_policy(load(env)), repo, repo_name)
    result = run_prune(repo, policy, dry_run=dry_run, running=running_backups(policy))
    if state.json:
        emit_json(result.document())
        return
    verb = "would be" if dry_run else "were"
    out.print(
        f"retention of {env} in {repo.location} (days in {policy.schedule.timezone})"
        + (" -- dry run, nothing deleted" if dry_run else ""),
        markup=False,
        highlight=False,
    )
    if not result.plan.decisions:
        out.print("no backups", markup=False)
    for d in result.plan.decisions:
        m = result.manifests[d.backup.id]
        why = ", ".join(d.reasons) or "no rule keeps it"
        if result.wal_scope(m.id) == "consistent point only":
            why += "; WAL: consistent point only"
        line = f"{d.action:<6} {m.id}  {ts_text(m.started_at)}  {human_size(m.size):>10}  {why}"
        out.print(line, markup=False, highlight=False, style="green" if d.keep else "red")
    for o in result.orphans:
        what = "DELETE" if o.action == "DELETE" else "KEEP  "
        out.print(
            f"{what} {o.id}: {o.reason}; {o.objects} objects, {human_size(o.size)}, "
            f"last written {ts_text(o.last_modified)}",
            markup=False,
        )
    for backup_id, problem in sorted(result.unreadable.items()):
        out.print(f"KEEP   {backup_id}: manifest unreadable, left alone: {problem}", markup=False)
    wal = result.wal_plan
    if wal.anchor is not None:
        keep_for = f" (retention.wal {policy.retention.wal_text})" if wal.retention else ""
        out.print(
            f"WAL kept for point-in-time recovery from {wal.cutoff} on: from backup "
            f"{wal.anchor.id}, consistent at {ts_text(wal.pitr_from)}{keep_for}",
            markup=False,
            highlight=False,
        )
    if wal.consistent_only:
        out.print(
            f"{len(wal.consistent_only)} older kept base backup(s) keep only the WAL that makes "
            "them consistent and restore to their consistent point only: "
            + ", ".join(b.id for b in wal.consistent_only),
            markup=False,
            highlight=False,
        )
    if result.wal_deleted:
        outside = " outside those backups' start..stop" if wal.consistent_only else ""
        out.print(
            f"{len(result.wal_deleted)} WAL files older than {result.wal_cutoff}{outside} "
            f"{verb} deleted",
            markup=False,
        )
    if result.wal_locked:
        out.print(
            f"{len(result.wal_locked)} WAL files older than {result.wal_cutoff} kept: locked by "
            f"the store until {ts_text(result.wal_locked_until)} (object lock)",
            markup=False,
        )
    for problem in result.errors:
        out.print(f"note: {problem}", markup=False, highlight=False)
    out.print(
        f"{len(result.plan.kept)} kept, {len(result.plan.deleted)} {verb} deleted; "
        f"oldest restorable point: {ts_text(result.oldest_restorable)}; "
        f"newest: {ts_text(result.newest_restorable)}",
        markup=False,
    )


@commands.command("keep")
def keep(
    env: EnvArg,
    backup_id: Annotated[str, typer.Argument(metavar="ID", help="The backup id to keep.")],
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            metavar="DATE",
            help="Keep it until this ISO 8601 time, with its zone (2027-01-31T00:00:00Z); "
            "default: until released.",
            show_default=False,
        ),
    ] = None,
    release: Annotated[
        bool, typer.Option("--release", help="End the keep: retention applies again.")
    ] = False,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Keep one backup through prune, until a date or until released (shown in backups)."""
    from drkit.backup import keep_backup, release_backup
    from drkit.config import parse_timestamp

    settle(json_out, policy_dir)
    if release and until is not None:
        raise UsageError("give --until DATE or --release, not both")
    deadline = parse_timestamp(until, option="--until") if until is not None else None
    policy = load(env)
    repo = Repository.for_policy(policy)
    result = release_backup(repo, backup_id) if release else keep_backup(repo, backup_id, deadline)
    if state.json:
        emit_json(result.document())
        return
    if release:
        line = (
            f"released backup {backup_id}: prune applies the retention rules to it again"
            if result.previous is not None
            else f"backup {backup_id} was not kept by hand: nothing to release"
        )
    else:
        assert result.hold is not None
        line = f"backup {backup_id} is {result.hold.reason}: prune will not delete it"
    out.print(line, markup=False, highlight=False)


@commands.command("delete")
def delete(
    env: EnvArg,
    backup_id: Annotated[str, typer.Argument(metavar="ID", help="The backup id to delete.")],
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Delete one backup; refuses the newest, a parent of an incremental, a kept or locked one.

    The refusals exit 4 and delete nothing.  The manifest goes first, as in prune: from
    then on the backup no longer exists, and leftovers of an interrupted delete are
    removed by prune."""
    from drkit.backup import delete_by_hand

    settle(json_out, policy_dir)
    policy = load(env)
    repo = Repository.for_policy(policy)
    result = delete_by_hand(repo, policy, backup_id)
    if state.json:
        emit_json(result.document())
        return
    out.print(
        f"deleted backup {backup_id}: {result.deleted_objects} objects, "
        f"{human_size(result.deleted_bytes)}"
        + (f" (it satisfied: {', '.join(result.tiers)})" if result.tiers else ""),
        markup=False,
        highlight=False,
    )


@commands.command("copy")
def copy(
    env: EnvArg,
    repo_name: Annotated[
        str | None,
        typer.Option(
            "--repo",
            metavar="NAME",
            help="Bring only the copy NAME up to date (default: every copy of the policy).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Copy the backups and WAL each copy lacks into the policy's copies, verified.

    Objects are copied as stored (never decoded or re-encrypted) and each is read back
    from the copy and its sha256 compared with the bytes sent; a mismatch removes it and
    fails (exit 3).  A backup is published in the copy (its manifest) only once all its
    objects are there; a rerun completes an interrupted copy and sends nothing twice.
    What a copy's own retention would prune is not copied.  One copy failing does not
    stop the others; the command then fails with the first error."""
    from drkit.backup import copy_all, copy_document

    settle(json_out, policy_dir)
    policy = load(env)
    results = copy_all(policy, repo_name)
    failed = [r for r in results if r.error is not None]
    if state.json:
        emit_json(copy_document(env, results))
    else:
        if not results:
            out.print(f"{env} has no copies (policy key copies)", markup=False, highlight=False)
        for r in results:
            mark = "✗" if r.error is not None else "✓"
            out.print(
                f"{mark} copy {r.name} ({r.location}): {r.copied_objects} objects copied "
                f"({human_size(r.copied_bytes)}), {r.present_objects} already there, "
                f"{len(r.published)} backups published"
                + (f", {len(r.skipped)} left to its retention" if r.skipped else "")
                + (f"; failed: {r.error}" if r.error is not None else ""),
                markup=False,
                highlight=False,
            )
    if failed:
        error = failed[0].error
        assert error is not None
        raise error
