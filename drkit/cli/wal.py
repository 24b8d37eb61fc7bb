"""WAL commands: ``archive-command`` (the lines PostgreSQL runs), ``wal-push``,
``promote-timeline``, ``wal-fetch`` and ``wal-receive``.

PostgreSQL's plain ``wal-push``/``wal-fetch`` lines never get here: :mod:`drkit.cli.entry`
runs them without typer or rich.  These are the forms with --json, -v and the like.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated

import typer

from drkit.cli.common import (
    EnvArg,
    JsonOpt,
    PolicyDirOpt,
    RepoOpt,
    emit_json,
    err,
    load,
    out,
    settle,
    state,
)
from drkit.pg import cluster_os_user
from drkit.storage import Repository
from drkit.wal import (
    apply_env_file,
    archive_wal,
    fetch_error_line,
    load_wal_policy,
    promote_timeline,
    run_fetch,
    server_timeline,
    set_up_archiving,
)

#: this module's commands, registered on drkit's root by drkit.cli.app
commands = typer.Typer()

EnvFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--env-file",
        metavar="FILE",
        help="The env file drkit archive-command wrote: applied before the policy is read.",
        show_default=False,
    ),
]


@commands.command("archive-command")
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
    file:// repository, write into it (drkit prepares both where it can).  They run in
    the server's environment, not this shell's: the variables the policy needs are
    resolved here and written to an env file (0600, the server's OS user's) that the
    lines name."""
    from drkit.config import resolve_policy_dir  # lazy: pydantic costs ~0.3 s

    st = settle(json_out, policy_dir)
    policy = load(env)
    user = os_user or cluster_os_user()
    if user is not None and user == getpass.getuser():
        user = None
    lines = set_up_archiving(policy, resolve_policy_dir(st.policy_dir), user)
    if st.json:
        emit_json(lines)
        return
    quote = "'"
    out.print("# postgresql.conf (or ALTER SYSTEM SET ...), then restart the server", markup=False)
    if lines.env_file is not None:  # names only: the values (credentials among them) stay in it
        out.print(
            f"# {lines.env_file} holds {', '.join(lines.env_variables)} as resolved here; run "
            f"drkit archive-command {env} again when they change",
            markup=False,
            highlight=False,
        )
    out.print("archive_mode = on", markup=False, highlight=False)
    for name, line in (
        ("archive_command", lines.archive_command),
        ("restore_command", lines.restore_command),
    ):
        out.print(
            f"{name} = {quote}{line.replace(quote, quote * 2)}{quote}",
            markup=False,
            highlight=False,
        )


@commands.command("wal-push")
def wal_push(
    env: EnvArg,
    path: Annotated[Path, typer.Argument(help="WAL file path (%p).")],
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Archive one WAL segment or history file (archive_command)."""
    st = settle(json_out, policy_dir)
    if env_file is not None:
        apply_env_file(env_file)
    report = archive_wal(load_wal_policy(env, st.policy_dir), path, st.policy_dir)
    if st.json:
        emit_json(report.document())


@commands.command("promote-timeline")
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
    from drkit.wal import promote_document  # lazy: pydantic

    settle(json_out, policy_dir)
    policy = load(env)
    source = "drkit promote-timeline"
    if timeline is None:
        timeline = server_timeline(policy.database.url.get_secret_value())
        source += " (the database server's current timeline)"
    recorded = promote_document(
        env, promote_timeline(Repository.for_policy(policy), timeline, source)
    )
    if state.json:
        emit_json(recorded)
        return
    previous = recorded.previous if recorded.previous is not None else "none recorded"
    out.print(
        f"[green]✓[/green] timeline {recorded.timeline} recorded as {env}'s production timeline "
        f"(previously: {previous})"
    )


@commands.command("wal-fetch")
def wal_fetch(
    env: EnvArg,
    name: Annotated[str, typer.Argument(help="WAL file name (%f).")],
    path: Annotated[Path, typer.Argument(help="Where to write it (%p).")],
    env_file: EnvFileOpt = None,
    repo_name: RepoOpt = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Fetch one WAL file from the archive (restore_command); exit 1 when it does not exist."""
    st = settle(json_out, policy_dir)
    if env_file is not None:
        apply_env_file(env_file)
    code, message = run_fetch(
        lambda: load_wal_policy(env, st.policy_dir, repo_name), name, path, st.policy_dir
    )
    if message:
        err.print(fetch_error_line(name, message), markup=False, highlight=False)
    if st.json:
        from drkit.wal import fetch_document  # lazy: pydantic

        emit_json(fetch_document(name, code))
    if code:
        raise typer.Exit(code)


@commands.command("wal-receive")
def wal_receive(
    env: EnvArg,
    drop_slot: Annotated[
        bool,
        typer.Option(
            "--drop-slot",
            help="Remove the replication slot drkit_ENV (refused while a receiver uses it) "
            "and exit, so the server stops holding WAL for it.",
        ),
    ] = False,
    spool: Annotated[
        Path | None,
        typer.Option(
            "--spool",
            metavar="DIR",
            help="Local directory pg_receivewal writes into (default: "
            "$DRKIT_RECEIVE_DIR/ENV, else /var/lib/drkit/receive/ENV as root).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Stream WAL from the slot drkit_ENV into the repository (policy: wal_streaming).

    pg_receivewal streams from the physical replication slot drkit_ENV (created if
    missing); each finished segment is stored as wal-push stores it, and the segment
    being received every wal_streaming.partial_interval, for restore latest and drills.
    Runs until SIGTERM or Ctrl-C, then stores what it received and exits 0."""
    import signal
    import threading

    from drkit.wal import drop_slot as drop
    from drkit.wal import receive_wal, slot_name

    st = settle(json_out, policy_dir)
    policy = load(env)
    if drop_slot:
        slot = drop(policy)
        if st.json:
            emit_json(slot.dropped_document(env))
            return
        what = "dropped" if slot.exists else "did not exist"
        out.print(f"[green]✓[/green] replication slot {slot.name} {what}", highlight=False)
        return
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        report = receive_wal(policy, spool=spool, stop=stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if st.json:
        emit_json(report.document(env))
        return
    out.print(
        f"[green]✓[/green] {slot_name(env)}: {len(report.segments)} segment(s) and "
        f"{report.partials} partial copies stored",
        highlight=False,
    )
