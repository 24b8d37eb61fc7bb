"""The ``drkit`` command line (typer + rich).

This is the only module that prints for people, draws progress, and turns exceptions
into exit codes (DESIGN.md §1): DrkitError subclasses carry their own code; usage
errors are 2; Ctrl-C is 130; anything unexpected is 1, with a traceback only under -v.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

from drkit import __version__
from drkit.errors import DrkitError, Interrupted, UsageError
from drkit.redact import mask_url

try:  # typer >= 0.20 ships its own copy of click; older ones use click itself
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exc  # type: ignore[no-redef]

log = logging.getLogger("drkit")

# ---------------------------------------------------------------------------
# Shared state and options
# ---------------------------------------------------------------------------


@dataclass
class State:
    policy_dir: Path | None = None
    json: bool = False
    verbose: bool = False
    quiet: bool = False
    #: the command's --json document, written by :func:`run` once the exit code is known
    document: Any = None


_state = State()
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine output (JSON) on stdout.")]
PolicyDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy-dir",
        metavar="DIR",
        help="Directory of ENV.yaml policies (default ./policies or $DRKIT_POLICY_DIR).",
        show_default=False,
    ),
]
EnvArg = Annotated[str, typer.Argument(help="Environment: the stem of a policy file.")]


def settle(json_out: bool = False, policy_dir: Path | None = None) -> State:
    """Merge a command's own --json/--policy-dir with the global ones."""
    if json_out:
        _state.json = True
    if policy_dir is not None:
        _state.policy_dir = policy_dir
    return _state


def emit_json(data: dict[str, Any]) -> None:
    """The command's one ``--json`` document; :func:`run` writes it with ``ok`` (and
    ``error`` when the command then fails), so stdout holds exactly one document."""
    _state.document = data


def _write_document(document: dict[str, Any], code: int, message: str | None) -> None:
    document = dict(document)
    document["ok"] = bool(document.get("ok", True)) and code == 0
    if code != 0 and message is not None and "error" not in document:
        # a report with its own "error" field (a drill's) keeps it as it is
        document["error"] = {"code": code, "message": message}
    document = {"ok": document.pop("ok"), **document}
    sys.stdout.write(json.dumps(document, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def load(env: str) -> Any:
    from drkit.config import load_policy

    return load_policy(env, _state.policy_dir)


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def ts_text(ts: datetime | None) -> str:
    if ts is None:
        return "-"
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@contextmanager
def byte_progress(label: str) -> Iterator[Callable[[str, int], None]]:
    """A transient rich progress display (bytes, rate, elapsed) on a TTY; silent otherwise."""
    if _state.json or _state.quiet or not err.is_terminal:
        yield lambda _name, _n: None
        return
    from rich.progress import (
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    tasks: dict[str, Any] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:

        def advance(name: str, n: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"{label} {name}", total=None)
            progress.advance(tasks[name], n)

        yield advance


def _named(progress: Callable[[str, int], None], name: str) -> Callable[[int], None]:
    return lambda n: progress(name, n)


# ---------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------

app = typer.Typer(
    name="drkit",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"drkit {__version__}\n")
        raise typer.Exit()


@app.callback()
def main_options(
    policy_dir: PolicyDirOpt = None,
    json_out: JsonOpt = False,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Debug logging and tracebacks.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("-q", "--quiet", help="Errors only: no progress, no warnings.")
    ] = False,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            metavar="debug|info|warning|error",
            help="Log level (default warning; -v is debug, -q is error).",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format", metavar="text|json", help="Log lines as text or one JSON object each."
        ),
    ] = "text",
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """Backups, point-in-time recovery, sanitized copies and restore drills for PostgreSQL.

    Global options (-v, -q, --json, --log-level, --log-format, --policy-dir) go before or
    after the command.  ENV is the stem of a policy file (policies/ENV.yaml).  Reference:
    docs/cli.md, docs/policy.md, docs/sanitize-rules.md; the exit codes follow."""
    from drkit.logconfig import configure_logging

    if verbose and quiet:
        raise UsageError("-v and -q contradict each other: give one")
    _state.policy_dir = policy_dir
    _state.json = json_out
    _state.verbose = verbose
    _state.quiet = quiet
    level = "debug" if verbose else "error" if quiet else (log_level or "warning").lower()
    try:  # every record is masked (botocore's debug log prints credentials)
        configure_logging(level, log_format.lower())
    except ValueError as exc:
        raise UsageError(f"--log-level/--log-format: {exc}") from None


# -- policy ------------------------------------------------------------------------

policy_app = typer.Typer(help="Validate policies and rules files.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def policy_check(
    env: Annotated[str | None, typer.Argument(help="Only this environment.")] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Validate policies (and sanitize rules files); print the resolved config, secrets masked."""
    from drkit.config import Policy, check_policies
    from drkit.errors import PolicyError

    st = settle(json_out, policy_dir)
    results: dict[str, Any] = {}
    problems: list[str] = []
    for name, outcome in check_policies([env] if env else None, st.policy_dir):
        if isinstance(outcome, Policy):
            results[name] = {"ok": True, "policy": outcome.masked()}
        else:
            results[name] = {"ok": False, "error": outcome.message}
            problems.append(outcome.message)
    rules = _check_rules_files(env)
    problems += [message for message in rules.values() if message]
    if st.json:
        emit_json(
            {
                "ok": not problems,
                "policies": results,
                "rules": {p: {"ok": not m, "error": m} for p, m in rules.items()},
            }
        )
    else:
        import yaml

        for name, result in results.items():
            if result["ok"]:
                out.print(f"[green]✓[/green] policy [bold]{name}[/bold]")
                out.print(yaml.safe_dump(result["policy"], sort_keys=False).rstrip(), markup=False)
            else:
                out.print(f"[red]✗[/red] policy [bold]{name}[/bold]: ", end="")
                out.print(result["error"], markup=False)
        for path, message in rules.items():
            if message:
                out.print(f"[red]✗[/red] rules {path}: ", end="")
                out.print(message, markup=False)
            else:
                out.print(f"[green]✓[/green] rules {path}")
    if problems:
        raise PolicyError(
            problems[0] + (f" (and {len(problems) - 1} more)" if problems[1:] else "")
        )


def _check_rules_files(env: str | None) -> dict[str, str]:
    """Validate the sanitize rules files next to the policies (offline)."""
    from drkit.config import resolve_policy_dir
    from drkit.sanitize.rules import load_rules

    candidates = [
        Path("sanitize_rules"),
        resolve_policy_dir(_state.policy_dir).parent / "sanitize_rules",
    ]
    seen: dict[str, str] = {}
    for directory in candidates:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.yaml")):
            key = str(path.resolve())
            if key in {str(Path(p).resolve()) for p in seen}:
                continue
            if (
                env
                and not path.stem.startswith(f"{env}-to-")
                and not path.stem.endswith(f"-to-{env}")
            ):
                continue
            try:
                load_rules(path)
                seen[str(path)] = ""
            except DrkitError as exc:
                seen[str(path)] = str(exc)
    return seen


# -- online checks and archiving set-up ------------------------------------------------


@app.command("check")
def check(env: EnvArg, json_out: JsonOpt = False, policy_dir: PolicyDirOpt = None) -> None:
    """Prove the chain end to end: login, privileges, archive round trip, repository, keys.

    One line per check; exit 3 when any fails.  `drkit policy check` stays offline."""
    from drkit.errors import CheckFailed
    from drkit.preflight import run_checks

    st = settle(json_out, policy_dir)
    report = run_checks(load(env), st.policy_dir)
    if st.json:
        emit_json(report.to_dict())
    else:
        for result in report.results:
            mark = "[green]PASS[/green]" if result.status == "PASS" else "[red]FAIL[/red]"
            out.print(f"{mark} {result.name}: ", end="")
            out.print(result.detail, markup=False, highlight=False)
    if not report.ok:
        first = report.failures[0]
        more = len(report.failures) - 1
        raise CheckFailed(
            f"{env}: {first.name}: {first.detail}" + (f" (and {more} more)" if more else "")
        )


@app.command("archive-command")
def archive_command_lines(
    env: EnvArg,
    os_user: Annotated[
        str | None,
        typer.Option(
            "--os-user",
            metavar="USER",
            help="The OS user the PostgreSQL server runs as (default: postgres when run as "
            "root, else the current user).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Print archive_command and restore_command lines that work for this install.

    The lines are tested: the server's OS user must be able to start drkit and, for a
    file:// repository, write into it (drkit prepares both where it can)."""
    from drkit.config import resolve_policy_dir
    from drkit.pg.cluster import cluster_os_user
    from drkit.walcmd import (
        archive_command,
        prepare_file_repository,
        reachable_by,
        restore_command,
    )

    st = settle(json_out, policy_dir)
    policy = load(env)
    user = os_user or cluster_os_user()
    if user is not None and user == _current_user():
        user = None
    if policy.repository.url.startswith("file://"):
        prepare_file_repository(policy.repository.url, env, user)
    directory = resolve_policy_dir(st.policy_dir)
    policy_file = directory / f"{env}.yaml"
    if user is not None and not reachable_by(policy_file, user):
        raise UsageError(
            f"{policy_file} is not reachable by the OS user {user}, who runs archive_command: "
            "move the policies to a directory it can read (e.g. /etc/drkit/policies) "
            "and pass --policy-dir"
        )
    archive = archive_command(env, directory, user)
    restore_line = restore_command(env, directory, user)
    if st.json:
        emit_json(
            {
                "ok": True,
                "environment": env,
                "os_user": user or _current_user(),
                "archive_mode": "on",
                "archive_command": archive,
                "restore_command": restore_line,
            }
        )
        return
    quote = "'"
    out.print("# postgresql.conf (or ALTER SYSTEM SET ...), then restart the server", markup=False)
    out.print("archive_mode = on", markup=False, highlight=False)
    for name, line in (("archive_command", archive), ("restore_command", restore_line)):
        out.print(
            f"{name} = {quote}{line.replace(quote, quote * 2)}{quote}",
            markup=False,
            highlight=False,
        )


def _current_user() -> str:
    import getpass

    return getpass.getuser()


# -- backups -----------------------------------------------------------------------


@app.command("backup")
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
        from drkit.backup.physical import run_physical_backup

        with byte_progress("base backup") as progress:
            manifest = run_physical_backup(policy, on_progress=progress, incremental=incremental)
    else:
        from drkit.backup.logical import run_logical_backup

        with byte_progress("dumping") as progress:
            manifest = run_logical_backup(policy, databases=database or None, on_progress=progress)
    summary = backup_summary(manifest)
    if _state.json:
        emit_json(summary)
        return
    out.print(
        f"[green]✓[/green] backup [bold]{manifest.id}[/bold]: {', '.join(manifest.databases)} — "
        f"{human_size(manifest.size)} stored ({human_size(manifest.raw_size)} raw) "
        f"in {manifest.duration:.1f}s"
    )


def backup_summary(manifest: Any) -> dict[str, Any]:
    from drkit.backup.catalog import iso  # RFC 3339 with Z, like every other document

    data = {
        "id": manifest.id,
        "kind": manifest.kind,
        "environment": manifest.environment,
        "databases": manifest.databases,
        "started_at": iso(manifest.started_at),
        "finished_at": iso(manifest.finished_at),
        "consistent_at": iso(manifest.consistent_at),
        "duration": round(manifest.duration, 3),
        "size": manifest.size,
        "raw_size": manifest.raw_size,
    }
    if manifest.kind == "logical":
        data["tables"] = sum(len(t) for t in manifest.row_counts.values())
        data["rows"] = sum(sum(t.values()) for t in manifest.row_counts.values())
    else:
        data.update(
            wal_start=manifest.wal_start, wal_stop=manifest.wal_stop, timeline=manifest.timeline
        )
    return data


@app.command("backups")
def backups(env: EnvArg, json_out: JsonOpt = False, policy_dir: PolicyDirOpt = None) -> None:
    """List backups: id, kind, started, duration, size, databases, retention tiers.

    A repository that does not exist is an error (exit 1), not an empty list."""
    from drkit.backup.catalog import list_backups
    from drkit.backup.retention import current_tiers
    from drkit.storage.repository import Repository

    settle(json_out, policy_dir)
    policy = load(env)
    repo = Repository.for_policy(policy)
    repo.backend.check_reachable()
    manifests = list_backups(repo)
    tiers = current_tiers(policy, manifests)
    rows = []
    for m in reversed(manifests):
        row = backup_summary(m)
        row["tiers"] = tiers.get(m.id, [])
        rows.append(row)
    if _state.json:
        emit_json({"environment": env, "repository": repo.location, "backups": rows})
        return
    if not rows:
        out.print(f"no backups in {repo.location}", markup=False, highlight=False)
        return
    table = Table(title=f"backups of {env} in {repo.location}")
    # an id is what restore takes: never cut it; the other columns wrap first
    table.add_column("id", no_wrap=True, min_width=max(len(m.id) for m in manifests))
    for col in ("kind", "started", "duration", "size", "databases", "tiers"):
        table.add_column(
            col, justify="right" if col in ("duration", "size") else "left", overflow="fold"
        )
    for m, row in zip(reversed(manifests), rows, strict=True):
        table.add_row(
            m.id,
            m.kind,
            ts_text(m.started_at),
            f"{m.duration:.1f}s",
            human_size(m.size),
            ", ".join(m.databases),
            ", ".join(row["tiers"]) or "-",
        )
    out.print(table)


@app.command("verify")
def verify(
    env: EnvArg,
    backup_ref: Annotated[str | None, typer.Argument(metavar="[ID|latest]")] = None,
    all_backups: Annotated[bool, typer.Option("--all", help="Verify every backup.")] = False,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Re-read stored objects: sizes, sha256, decoding, and the WAL chain of physical backups."""
    from drkit.backup.catalog import list_backups, resolve_backup
    from drkit.backup.verify import verify_backup
    from drkit.errors import CheckFailed
    from drkit.storage.repository import Repository

    settle(json_out, policy_dir)
    if all_backups and backup_ref:
        raise UsageError("give a backup ID or --all, not both")
    policy = load(env)
    repo = Repository.for_policy(policy)
    if all_backups:
        manifests = list_backups(repo)
        if not manifests:
            from drkit.errors import NotFoundError

            raise NotFoundError(f"no backups in {repo.location} to verify")
    else:
        manifests = [resolve_backup(repo, backup_ref)]
    verdicts = []
    with byte_progress("verifying") as progress:
        for m in manifests:
            verdicts.append(verify_backup(repo, m, _named(progress, m.id)))
    bad = [v for v in verdicts if not v.ok]
    if _state.json:
        emit_json({"ok": not bad, "backups": [v.to_dict() for v in verdicts]})
    else:
        for v in verdicts:
            mark = "[green]✓ OK[/green]" if v.ok else "[red]✗ FAILED[/red]"
            out.print(f"{mark} {v.backup_id} ({v.objects} objects, {human_size(v.bytes)})")
            for key, value in v.details.items():
                out.print(f"    {key}: {value}", markup=False)
            for problem in v.problems:
                out.print(f"    {problem}", markup=False)
    if bad:
        first = bad[0]
        raise CheckFailed(
            f"verify failed for {len(bad)} backup(s); {first.backup_id}: {first.problems[0]}"
        )


@app.command("prune")
def prune(
    env: EnvArg,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show keep/delete, delete nothing.")
    ] = False,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Apply the retention policy (grandfather-father-son)."""
    from drkit.backup.lock import running_backups
    from drkit.backup.prune import prune as run_prune
    from drkit.storage.repository import Repository

    settle(json_out, policy_dir)
    policy = load(env)
    repo = Repository.for_policy(policy)
    result = run_prune(repo, policy, dry_run=dry_run, running=running_backups(policy))
    if _state.json:
        emit_json(result.to_dict())
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
        line = f"{d.action:<6} {m.id}  {ts_text(m.started_at)}  {human_size(m.size):>10}  {why}"
        out.print(line, markup=False, highlight=False, style="green" if d.keep else "red")
    for o in result.orphans:
        what = "DELETE" if o.action == "DELETE" else "KEEP  "
        out.print(
            f"{what} {o.id}: no manifest, {o.objects} objects, {human_size(o.size)}, "
            f"last written {ts_text(o.last_modified)}",
            markup=False,
        )
    for backup_id, problem in sorted(result.unreadable.items()):
        out.print(f"KEEP   {backup_id}: manifest unreadable, left alone: {problem}", markup=False)
    if result.wal_deleted:
        out.print(
            f"{len(result.wal_deleted)} WAL files older than {result.wal_cutoff} {verb} deleted",
            markup=False,
        )
    out.print(
        f"{len(result.plan.kept)} kept, {len(result.plan.deleted)} {verb} deleted; "
        f"oldest restorable point: {ts_text(result.oldest_restorable)}; "
        f"newest: {ts_text(result.newest_restorable)}",
        markup=False,
    )


@app.command("restore")
def restore(
    env: EnvArg,
    backup_ref: Annotated[str | None, typer.Argument(metavar="[ID|latest]")] = None,
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
    from drkit.config import parse_timestamp
    from drkit.restore.pitr import parse_timeline

    follow = parse_timeline(timeline)

    target = (
        None
        if point_in_time == "latest"
        else parse_timestamp(point_in_time, option="--point-in-time")
    )
    from drkit.restore.pitr import restore_point_in_time

    policy = load(env)
    with byte_progress("restoring") as progress:
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
    if _state.json:
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
    if result.gap is not None:
        out.print(
            f"  [yellow]![/yellow] stopped at a gap (--allow-gap): WAL segment "
            f"{result.gap.missing} is missing; {result.gap.newer_segments} newer segment(s) "
            "were not replayed"
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
    from drkit.restore.logical import restore_logical

    policy = load(env)
    started = time.monotonic()
    with byte_progress("restoring") as progress:
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
    if _state.json:
        emit_json({**result.to_dict(), "duration": round(elapsed, 3)})
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
    from drkit.wal import load_wal_policy
    from drkit.walasync import archive_wal

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
    from drkit.storage.repository import Repository
    from drkit.timelines import promote_timeline, server_timeline

    settle(json_out, policy_dir)
    policy = load(env)
    source = "drkit promote-timeline"
    if timeline is None:
        timeline = server_timeline(policy.database.url.get_secret_value())
        source += " (the database server's current timeline)"
    doc = promote_timeline(Repository.for_policy(policy), timeline, source)
    if _state.json:
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
    from drkit.wal import load_wal_policy, run_fetch

    st = settle(json_out, policy_dir)
    code, message = run_fetch(
        lambda: load_wal_policy(env, st.policy_dir), name, path, st.policy_dir
    )
    if message:
        err.print(f"drkit: wal-fetch {name}: {mask_url(message)}", markup=False, highlight=False)
    if st.json:
        emit_json({"name": name, "fetched": code == 0})
    if code:
        raise typer.Exit(code)


# -- sanitize ------------------------------------------------------------------------


class DefaultRunGroup(TyperGroup):
    """``drkit sanitize SRC DST`` runs the copy; ``check`` and ``init`` are subcommands."""

    #: the hidden command that runs when the first word is not a subcommand
    default_command = "run"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        parsed: list[str] = super().parse_args(ctx, args)
        return parsed


sanitize_app = typer.Typer(
    cls=DefaultRunGroup,
    subcommand_metavar="SRC DST | COMMAND [ARGS]...",
    help=(
        "Copy SRC's data into DST through the sanitize rules: drkit sanitize SRC DST "
        "[OPTIONS] (--rules, --from-backup, --dry-run, --json and the others: drkit sanitize "
        "SRC DST --help), or the subcommands check and init."
    ),
    no_args_is_help=True,
)
app.add_typer(sanitize_app, name="sanitize")


class SanitizeRunContext(typer.Context):
    """``drkit sanitize SRC DST``, not ``drkit sanitize run``, in usage lines and hints."""

    @property
    def command_path(self) -> str:
        parent = self.parent.command_path if self.parent is not None else "drkit sanitize"
        return f"{parent} SRC DST"


class SanitizeRunCommand(TyperCommand):
    context_class = SanitizeRunContext

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [self.options_metavar] if self.options_metavar else []


RulesOpt = Annotated[
    Path | None,
    typer.Option(
        "--rules", metavar="FILE", help="Rules file (default sanitize_rules/SRC-to-DST.yaml)."
    ),
]


@sanitize_app.command("run", hidden=True, cls=SanitizeRunCommand)
def sanitize_run(
    src: Annotated[str, typer.Argument(help="Source environment.")],
    dst: Annotated[str, typer.Argument(help="Target environment.")],
    rules: RulesOpt = None,
    from_backup: Annotated[
        str | None,
        typer.Option(
            "--from-backup", metavar="ID|latest", help="Read SRC's data from a backup (ID|latest)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan, copy nothing.")
    ] = False,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Tables copied in parallel.")] = 1,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace a DST that holds tables; terminate sessions connected to it."
        ),
    ] = False,
    keep_old: Annotated[
        bool,
        typer.Option("--keep-old", help="Keep the replaced DST database (renamed aside)."),
    ] = False,
    scan_only: Annotated[
        bool, typer.Option("--scan-only", help="Only run the leak scan on DST.")
    ] = False,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Copy SRC's data into DST's database through the rules."""
    settle(json_out, policy_dir)
    from drkit.sanitize.engine import LeakFound, Options, sanitize

    if dry_run and scan_only:
        raise UsageError("--dry-run and --scan-only do not go together")
    options = Options(
        rules_path=rules,
        from_backup=from_backup,
        dry_run=dry_run,
        jobs=jobs,
        force=force,
        scan_only=scan_only,
        keep_old=keep_old,
    )
    source, target = load(src), load(dst)
    try:
        with _sigterm_interrupts(), row_progress("sanitizing") as progress:
            report = sanitize(source, target, options, on_progress=progress)
    except LeakFound as exc:
        _print_sanitize_report(exc.report)
        raise
    _print_sanitize_report(report)


@contextmanager
def row_progress(label: str) -> Iterator[Callable[[str, int], None]]:
    """Rows per table, on a TTY only (like byte_progress, counting rows)."""
    if _state.json or _state.quiet or not err.is_terminal:
        yield lambda _name, _n: None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.completed:,.0f} rows"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:

        def advance(name: str, n: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"{label} {name}", total=None)
            progress.advance(tasks[name], n)

        yield advance


def _print_sanitize_report(report: Any) -> None:
    if _state.json:
        emit_json(report.to_dict())
        return
    title = {
        "run": "sanitized copy",
        "dry-run": "plan (dry run: nothing copied)",
        "scan-only": "leak scan only",
    }[report.mode]
    table = Table(title=f"{report.src} → {report.dst}: {title} ({report.source})")
    for column in ("table", "action", "rows", "selection", "masked columns"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for t in report.tables:
        masked = ", ".join(f"{c}={s}" for c, s in t.strategies.items()) or "-"
        rows = "-" if t.rows is None else f"{t.rows:,}"
        table.add_row(t.table, t.action, rows, t.selection, masked)
    out.print(table)
    for label, items in (
        ("unlisted tables", report.unlisted_tables),
        ("unlisted columns", report.unlisted_columns),
        ("kept columns that look like personal data", report.pii_kept),
    ):
        if items:
            out.print(f"[yellow]![/yellow] {label}: {', '.join(items)}", markup=True)
    if report.mode == "dry-run" and report.target_tables:
        out.print(
            f"[yellow]![/yellow] {report.dst}'s database holds {report.target_tables} tables: "
            "the run needs --force to replace it"
        )
    if report.phases:
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in report.phases.items())
        out.print(f"phases: {phases}")
    leak = report.leak
    if leak is not None:
        if leak.clean:
            out.print(
                f"[green]✓[/green] leak scan clean: {leak.originals:,} original values searched "
                f"in {leak.columns_scanned} columns ({leak.rows_scanned:,} rows) and "
                f"{leak.objects_scanned:,} catalog objects ("
                f"{leak.seconds:.1f}s)"
                + (f"; {leak.ambiguous} equal a generated value" if leak.ambiguous else "")
            )
        else:
            for where, count in sorted(leak.hits.items()):
                err.print(f"[red]✗[/red] leak: {where}: {count} original value(s)")
    elif report.mode == "run":
        out.print(f"[green]✓[/green] {report.rows:,} rows copied")


@sanitize_app.command("check")
def sanitize_check(
    src: Annotated[str, typer.Argument(help="Source environment.")],
    dst: Annotated[str, typer.Argument(help="Target environment.")],
    rules: RulesOpt = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Validate the rules against SRC's live schema without copying anything."""
    settle(json_out, policy_dir)
    from drkit.errors import CheckFailed
    from drkit.sanitize.check import check_rules

    report = check_rules(load(src), load(dst), rules)
    if _state.json:
        emit_json(report.to_dict())
    else:
        for key, info in report.tables.items():
            masked = ", ".join(f"{c}={s}" for c, s in info["strategies"].items())
            mark = "[green]✓[/green]" if info["listed"] else "[yellow]?[/yellow]"
            detail = f" where {info['where']}" if info["where"] else ""
            out.print(
                f"{mark} {key}: {info['action']}{detail}" + (f" ({masked})" if masked else "")
            )
        for item in report.unlisted_tables:
            out.print(f"[yellow]![/yellow] table {item} is not in the rules")
        for item in report.unlisted_columns:
            out.print(f"[yellow]![/yellow] column {item} is not in the rules")
        for item in report.pii_kept:
            out.print(f"[yellow]![/yellow] kept as is but looks like personal data: {item}")
        for key, columns in report.pinned.items():
            out.print(
                f"[yellow]![/yellow] pinned {key} (copy: true) to its columns "
                f"{', '.join(columns)} in {report.rules}: review them"
            )
        if not report.salt_set:
            out.print("[yellow]![/yellow] the salt variable is not set: a run would stop")
        if report.ok:
            out.print(f"[green]✓[/green] {report.rules} covers {report.src}'s schema")
    if not report.ok:
        raise CheckFailed(
            f"{report.rules}: "
            + "; ".join(report.failures[:5])
            + (f" (and {len(report.failures) - 5} more)" if len(report.failures) > 5 else "")
        )


@sanitize_app.command("init")
def sanitize_init(
    src: Annotated[str, typer.Argument(help="Source environment.")],
    out_file: Annotated[
        Path | None, typer.Option("--out", metavar="FILE", help="Write the draft here.")
    ] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Draft a rules file from SRC's schema, guessing personal-data columns."""
    settle(json_out, policy_dir)
    from drkit.sanitize.draft import draft_rules

    text = draft_rules(load(src))
    if out_file is not None:
        if out_file.exists():
            raise UsageError(f"{out_file} exists: choose another --out or remove it first")
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(text, encoding="utf-8")
    if _state.json:
        emit_json({"out": str(out_file) if out_file else None, "rules": text})
    elif out_file is None:
        sys.stdout.write(text)
    else:
        out.print(f"[green]✓[/green] drafted {out_file}: review every '# guessed' line")


# -- drills and status ----------------------------------------------------------------


@app.command("drill")
def drill(
    env: EnvArg,
    backup_ref: Annotated[
        str, typer.Option("--backup", metavar="ID|latest|random", help="ID, latest or random.")
    ] = "latest",
    point_in_time: Annotated[
        str | None,
        typer.Option(
            "--point-in-time", metavar="TS|latest", help="PITR target for a physical drill."
        ),
    ] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--report-dir", metavar="DIR", help="Also write report.json/.md and junit.xml here."
        ),
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the scratch cluster running.")
    ] = False,
    target_major: Annotated[
        int | None,
        typer.Option(
            "--target-major",
            help="Restore a logical backup into a scratch cluster of this (newer) PostgreSQL "
            "major: an upgrade rehearsal.",
        ),
    ] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Restore drill: restore into a scratch cluster, measure RTO/RPO, validate, report."""
    from drkit.config import parse_timestamp
    from drkit.drill.runner import run_drill

    settle(json_out, policy_dir)
    policy = load(env)
    target = parse_timestamp(point_in_time, option="--point-in-time") if point_in_time else None
    with _sigterm_interrupts(), _phase_status(f"drill {env}") as on_phase:
        result = run_drill(
            policy,
            backup_ref=backup_ref,
            point_in_time=target,
            keep=keep,
            report_dir=report_dir,
            on_phase=on_phase,
            target_major=target_major,
        )
    doc = result.report.to_dict()
    if _state.json:
        emit_json(doc)
    else:
        _print_drill(doc, result.repository_key, result.files)
    _drill_exit(doc)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends a drill like Ctrl-C: the scratch cluster is torn down on the way out."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _phase_status(label: str) -> Iterator[Callable[[str], None]]:
    """A spinner naming the running phase, on a TTY only."""
    if _state.json or _state.quiet or not err.is_terminal:
        yield lambda _phase: None
        return
    from drkit.drill.report import PHASE_TITLES

    with err.status(label) as status:
        yield lambda phase: status.update(f"{label}: {PHASE_TITLES.get(phase, phase)}")


def _print_drill(doc: dict[str, Any], key: str | None, files: list[Path]) -> None:
    from drkit.drill.report import FAIL, PASS

    backup = doc["backup"]
    age = backup["age_seconds"]
    out.print(
        f"drill {doc['id']} of {doc['environment']}: backup {backup['id']} ({backup['kind']}"
        + (f", {age:.0f}s old" if age is not None else "")
        + ")",
        markup=False,
        highlight=False,
    )
    rto, rpo = doc["rto"], doc["rpo"]
    phases = ", ".join(f"{p} {s:.1f}s" for p, s in rto["phases"].items())
    out.print(f"  phases: {phases}", markup=False, highlight=False)
    for label, block, value in (("RTO", rto, rto["total"]), ("RPO", rpo, rpo["achieved"])):
        measured = "not measured" if value is None else _seconds_text(value)
        objective = "none" if block["objective"] is None else _seconds_text(block["objective"])
        mark = {True: "met", False: "BREACHED", None: "not judged"}[block["met"]]
        out.print(
            f"  {label} {measured} (objective {objective}): {mark}", markup=False, highlight=False
        )
    summary = ", ".join(f"{n} {s}" for s, n in doc["summary"].items())
    out.print(f"  checks: {summary}", markup=False, highlight=False)
    for check in doc["checks"]:
        if check["status"] != PASS:
            line = (
                f"  {check['status']:<7} {check['name']}: expected {check['expected']}, "
                f"observed {check['observed']}"
            )
            if check.get("detail"):
                line += f" ({check['detail']})"
            out.print(line, markup=False, highlight=False)
    cleanup = doc.get("cleanup") or {}
    if cleanup.get("scratch_cluster") == "kept":
        out.print(
            f"  scratch cluster kept on port {cleanup['port']}: connect with  {cleanup['connect']}",
            markup=False,
            highlight=False,
        )
        out.print(f"  when done:  {cleanup['stop']}", markup=False, highlight=False)
    elif cleanup.get("scratch_cluster") != "removed":
        out.print(f"  clean-up: {cleanup}", markup=False, highlight=False)
    if key:
        out.print(f"  report: {key}", markup=False, highlight=False)
    for path in files:
        out.print(f"  wrote {path}", markup=False, highlight=False)
    style = "green" if doc["verdict"] == PASS else "red"
    verdict = doc["verdict"] if doc["verdict"] != FAIL else "FAIL"
    out.print(f"verdict: [{style}]{verdict}[/{style}]")


def _seconds_text(seconds: float) -> str:
    from datetime import timedelta

    from drkit.config import format_duration

    return f"{seconds:.1f}s" if seconds < 60 else format_duration(timedelta(seconds=round(seconds)))


def _drill_exit(doc: dict[str, Any]) -> None:
    from drkit.drill.report import ERROR, PASS
    from drkit.errors import CheckFailed, OperationError

    if doc["verdict"] == PASS:
        return
    if doc["verdict"] == ERROR:
        raise OperationError(f"drill {doc['id']} could not run: {doc['error']}")
    failed = [c["name"] for c in doc["checks"] if c["status"] != PASS]
    raise CheckFailed(
        f"drill {doc['id']} of {doc['environment']} failed: "
        + ", ".join(failed[:5])
        + (f" (and {len(failed) - 5} more)" if len(failed) > 5 else "")
    )


@app.command("status")
def status(env: EnvArg, json_out: JsonOpt = False, policy_dir: PolicyDirOpt = None) -> None:
    """Current RPO exposure, last backup, last archived WAL, last drill, objectives."""
    from drkit.status import collect_status, render_status

    settle(json_out, policy_dir)
    report = collect_status(load(env))
    if _state.json:
        emit_json(report.to_dict())
    else:
        for line in render_status(report):
            out.print(line, markup=False, highlight=False)
    if report.breached:
        from drkit.errors import CheckFailed

        raise CheckFailed(f"{env}: objective breached: {'; '.join(report.breached)}")


# -- scheduler ---------------------------------------------------------------------------

schedule_app = typer.Typer(help="The scheduler daemon.", no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("run")
def schedule_run(
    envs: Annotated[list[str] | None, typer.Argument(metavar="[ENV...]")] = None,
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", help="HTTP port for /metrics and /healthz.")
    ] = 9187,
    bind: Annotated[
        str, typer.Option("--bind", metavar="ADDRESS", help="Address to listen on.")
    ] = "0.0.0.0",  # noqa: S104
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Run the scheduler daemon (the container's entry point)."""
    from drkit.schedule.daemon import run_daemon

    state = settle(json_out, policy_dir)
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: not a TCP port (0-65535)")
    if not state.verbose:  # a daemon reports its jobs: INFO on stderr
        logging.getLogger("drkit").setLevel(logging.INFO)
    run_daemon(envs or None, state.policy_dir, bind=bind, port=port)


@schedule_app.command("show")
def schedule_show(
    envs: Annotated[list[str] | None, typer.Argument(metavar="[ENV...]")] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Each scheduled job and its next run times."""
    from zoneinfo import ZoneInfo

    from drkit.schedule.daemon import show_schedule

    state = settle(json_out, policy_dir)
    rows = show_schedule(envs or None, state.policy_dir)
    if state.json:
        emit_json({"jobs": rows})
        return
    if not rows:
        out.print("no scheduled jobs (no schedule entries in the policies)", markup=False)
        return
    for row in rows:
        runs = ", ".join(
            datetime.fromisoformat(r)
            .astimezone(ZoneInfo(row["timezone"]))
            .strftime("%a %Y-%m-%d %H:%M %Z")
            for r in row["next_runs"]
        )
        out.print(
            f"{row['env']}/{row['job']:<16} {row['cron']:<14} ({row['timezone']})  "
            f"next: {runs or 'never'}",
            markup=False,
            highlight=False,
        )


# -- demo ------------------------------------------------------------------------------


@app.command("demo")
def demo(
    rows: Annotated[int, typer.Option("--rows", metavar="N", help="Sample rows to load.")] = 20_000,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the sandbox directory.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Self-contained sandbox: the whole workflow on a throwaway PostgreSQL, no setup.

    Starts a PostgreSQL cluster from the local binaries and loads SentriKat sample data,
    then runs: logical backup → verify → restore into a second database (row counts
    compared) → restore drill (RTO/RPO measured, checks run) → sanitize prod → staging
    with the shipped rules (leak scan) → continuous WAL archiving → physical base backup
    → point-in-time recovery to a noted moment before an accidental delete, into a new
    cluster.  Everything lives in one temporary directory, removed at the end unless
    --keep."""
    from drkit.demo import run_demo

    settle(json_out)
    report = run_demo(rows=rows, keep=keep, say=_demo_say)
    if _state.json:
        emit_json(report)


def _demo_say(kind: str, text: str) -> None:
    if _state.json:
        return
    styles = {"step": "[bold cyan]▶[/bold cyan] ", "ok": "  [green]✓[/green] ", "info": "    "}
    out.print(styles.get(kind, ""), end="")
    out.print(text, markup=False, highlight=False)


# ---------------------------------------------------------------------------
# Entry point: the one place exceptions become exit codes
# ---------------------------------------------------------------------------


def click_command() -> Any:
    """The click command tree of :data:`app`, its help polished (drkit.helptext)."""
    from drkit.helptext import polish

    return polish(typer.main.get_command(app))


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    code = run(args)
    sys.stdout.flush()
    raise SystemExit(code)


def _print_traceback() -> None:
    """The current exception's traceback (``-v``), secrets masked."""
    import traceback

    err.print(mask_url(traceback.format_exc()).rstrip(), markup=False, highlight=False)


#: global options that may also follow the command (DESIGN.md §1)
_GLOBAL_FLAGS = frozenset({"-v", "--verbose", "-q", "--quiet", "--json"})
_GLOBAL_VALUED = frozenset({"--log-level", "--log-format", "--policy-dir"})


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options written after the command in front of it (up to ``--``)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in _GLOBAL_FLAGS:
            front.append(arg)
        elif arg in _GLOBAL_VALUED and i + 1 < len(args):
            front += [arg, args[i + 1]]
            i += 1
        elif "=" in arg and arg.split("=", 1)[0] in _GLOBAL_VALUED:
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


def run(args: list[str]) -> int:
    """Run one command line; returns the exit code.  Under ``--json`` stdout gets exactly
    one document with ``ok`` (and ``error`` on failure), whatever happened."""
    args = hoist_global_options(list(args))
    verbose = "-v" in args or "--verbose" in args
    json_mode = "--json" in args
    _state.document = None
    code, line = _run_app(args, verbose)
    if line:
        err.print(line, markup=False, highlight=False)
    if json_mode or _state.json:
        message = line.removeprefix("drkit: error: ").removeprefix("drkit: ") if line else None
        if code != 0 and message is None:
            message = f"exit status {code}"
        _write_document(_state.document or {}, code, message)
    return code


def _run_app(args: list[str], verbose: bool) -> tuple[int, str | None]:
    """(exit code, the one error line or None)."""
    from drkit.outcome import INTERRUPTED_LINE, failure

    try:
        result = click_command().main(args=args, prog_name="drkit", standalone_mode=False)
        code = int(result) if isinstance(result, int) else 0
    except typer.Exit as exc:
        code = int(exc.exit_code)
    except typer.Abort:
        return Interrupted.exit_code, INTERRUPTED_LINE
    except click_exc.ClickException as exc:
        message = exc.format_message()
        hint = ""
        if isinstance(exc, click_exc.UsageError) and exc.ctx is not None:
            hint = f" (see: {exc.ctx.command_path} --help)"
        return (
            2 if isinstance(exc, click_exc.UsageError) else exc.exit_code,
            f"drkit: error: {message}{hint}",
        )
    except BrokenPipeError:
        return 1, None
    except (Exception, KeyboardInterrupt) as exc:  # one line; a traceback only with -v
        if verbose and not isinstance(exc, KeyboardInterrupt):
            _print_traceback()
        return failure(exc)
    # typer turns Ctrl-C into Exit(130)
    return code, INTERRUPTED_LINE if code == Interrupted.exit_code else None
