"""The restore drill: ``drill`` restores into a scratch cluster, measures RTO/RPO,
validates, reports; its verdict becomes the exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    settle,
    sigterm_interrupts,
    state,
)
from drkit.cli.render import live_progress, print_drill
from drkit.errors import CheckFailed, OperationError, UsageError

#: this module's commands, registered on drkit's root by drkit.cli.app
commands = typer.Typer()


@commands.command("drill")
def drill(
    env: EnvArg,
    backup_ref: Annotated[
        str | None,
        typer.Option(
            "--backup",
            metavar="ID|latest|random",
            help="ID, latest (the newest backup of either kind, in the server's order; "
            "physical only with --point-in-time) or random.  Without it (and without "
            "--point-in-time): every kind the policy takes, each with its own verdict.",
            show_default=False,
        ),
    ] = None,
    point_in_time: Annotated[
        str | None,
        typer.Option(
            "--point-in-time", metavar="TS|latest", help="PITR target for a physical drill."
        ),
    ] = None,
    target_xid: TargetXidOpt = None,
    target_lsn: TargetLsnOpt = None,
    target_name: TargetNameOpt = None,
    immediate: ImmediateOpt = False,
    exclusive: ExclusiveOpt = False,
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
    repo_name: RepoOpt = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Restore drill: restore into a scratch cluster, measure RTO/RPO, validate, report."""
    # lazy: pydantic and psycopg, ~0.4 s
    from drkit.documents import dump
    from drkit.drill import PHASE_TITLES, run_drill
    from drkit.restore import parse_target

    settle(json_out, policy_dir)
    point = parse_target(
        point_in_time=point_in_time,
        xid=target_xid,
        lsn=target_lsn,
        name=target_name,
        immediate=immediate,
        exclusive=exclusive,
    )
    if (
        point is not None
        and point.kind not in ("time", "latest")
        and backup_ref not in (None, "latest")
    ):
        raise UsageError(
            "--backup goes with a drill to the end of the archive; a recovery target "
            "chooses the base backup that precedes it"
        )
    policy = load(env, repo_name)
    with sigterm_interrupts(), live_progress(PHASE_TITLES) as on_phase:
        result = run_drill(
            policy,
            backup_ref=backup_ref,
            point=point,
            keep=keep,
            report_dir=report_dir,
            on_phase=on_phase,
            target_major=target_major,
        )
    document = result.report.document()
    if state.json:
        emit_json(document)
    else:
        print_drill(dump(document), result.repository_key, result.files)
    _drill_exit(dump(document))


def _drill_exit(doc: dict[str, Any]) -> None:
    from drkit.drill import ERROR, PASS, WARN, check_label  # lazy: pulls pydantic

    if doc["verdict"] == PASS:
        return
    if doc["verdict"] == ERROR:
        raise OperationError(f"drill {doc['id']} could not run: {doc['error']}")
    failed = [check_label(c) for c in doc["checks"] if c["status"] not in (PASS, WARN)]
    raise CheckFailed(
        f"drill {doc['id']} of {doc['environment']} failed: "
        + ", ".join(failed[:5])
        + (f" (and {len(failed) - 5} more)" if len(failed) > 5 else "")
    )
