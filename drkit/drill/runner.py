"""``drkit drill ENV``: restore a backup into a scratch cluster, measure, validate, report.

The drill is drkit's proof that a backup is restorable within the objectives (see
ARCHITECTURE.md, Drill).  This module is its orchestration; the stages live beside it:

1. pick a backup (``latest``, an id, or ``random``; with ``--point-in-time`` a base
   backup) and, for ``latest`` logical drills, each policy database's own newest backup.
   Asked for no backup in particular (what the schedule runs), the drill proves every
   kind of backup the policy takes (:func:`drill_kinds`): the newest logical backup, and
   the newest base backup replayed to the end of the recoverable window; each kind gets
   its own verdict in one report, and a kind the policy takes but the repository lacks
   FAILs, never drops out;
2. make the drill's private work directory (below ``$DRKIT_TMPDIR``, refused when
   others could swap what root writes there);
3. restore and validate: a logical backup into a scratch cluster of the drill's own
   (:mod:`.logical`), a physical one by point-in-time recovery (:mod:`.physical`), each
   timing the phases of the RTO and climbing the validation ladder (:mod:`.checks`);
4. compare the RTO and the achieved RPO with the policy's objectives (:mod:`.objectives`);
5. tear every scratch server down, on failure and on Ctrl-C too, unless ``keep``;
6. store ``drills/<id>/report.json`` in the repository (and with ``report_dir`` the
   report.json / report.md / junit.xml trio, :mod:`.report`).

A damaged backup is a *finding*, not a crash: a corrupt object or a failing pg_restore
is a FAIL check and the verdict FAIL.  Only when the drill itself cannot run (no scratch
cluster) is the verdict ERROR.
"""

from __future__ import annotations

import logging
import random
import secrets
import shlex
import shutil
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drkit import __version__
from drkit.catalog import (
    ID_FORMAT,
    KINDS,
    Manifest,
    list_backups,
    newest_holding,
    resolve_backup,
)
from drkit.config import Policy
from drkit.drill.context import DrillRun, PhaseCallback, PhaseTimer, backup_major
from drkit.drill.report import FAIL, Check, DrillReport, store_report, write_report_dir
from drkit.errors import DrkitError, UsageError
from drkit.pg import (
    Owner,
    PostgresServer,
    cluster_os_user,
    logical_target_major,
    scratch_directory,
)
from drkit.restore import RecoveryTarget, past_reports
from drkit.storage import Repository

log = logging.getLogger(__name__)


@dataclass
class DrillResult:
    """What :func:`run_drill` hands back: the report and where it went."""

    report: DrillReport
    repository_key: str | None
    files: list[Path]
    kept: dict[str, Any] | None = None

    @property
    def verdict(self) -> str:
        return self.report.verdict


def new_drill_id(started: datetime, kind: str) -> str:
    return f"{started.astimezone(UTC).strftime(ID_FORMAT)}-{kind}-{secrets.token_hex(2)}"


def run_drill(
    policy: Policy,
    *,
    backup_ref: str | None = None,
    point_in_time: datetime | None = None,
    keep: bool = False,
    report_dir: Path | None = None,
    jobs: int = 1,
    point: RecoveryTarget | None = None,
    repo: Repository | None = None,
    on_phase: PhaseCallback | None = None,
    rng: random.Random | None = None,
    target_major: int | None = None,
) -> DrillResult:
    """Run one drill of ``policy``'s environment; see the module docstring.

    ``backup_ref`` None (with no ``point_in_time`` and no ``target_major``) drills every
    kind of backup the policy takes, one after the other, into one report; ``latest``
    is the newest backup of either kind.
    ``point``: a recovery target of any kind instead of ``point_in_time`` (a physical
    drill; the recovery chooses the base backup that precedes it).

    Raises (before any scratch cluster exists) when no backup can be selected; returns
    a result whose ``verdict`` is PASS, FAIL or ERROR otherwise.  KeyboardInterrupt
    propagates after the scratch cluster is torn down.
    """
    started_at = datetime.now(UTC)
    own_repo = repo is None
    repo = repo or Repository.for_policy(policy)
    try:
        every = (
            backup_ref is None and point_in_time is None and point is None and target_major is None
        )
        kinds = drill_kinds(policy, repo) if every else ()
        if len(kinds) > 1 and list_backups(repo):  # none at all: refused as ever, below
            return _run_every_kind(
                policy,
                repo,
                started_at,
                kinds,
                keep=keep,
                report_dir=report_dir,
                jobs=jobs,
                on_phase=on_phase,
            )
        return _run(
            policy,
            repo,
            started_at,
            backup_ref=backup_ref or "latest",
            kinds=kinds or None,
            point_in_time=point_in_time,
            keep=keep,
            report_dir=report_dir,
            jobs=jobs,
            on_phase=on_phase,
            rng=rng,
            target_major=target_major,
            point=point,
        )
    finally:
        if own_repo:
            repo.close()


def drill_kinds(policy: Policy, repo: Repository) -> tuple[str, ...]:
    """The kinds of backup a drill of the policy proves: each kind it takes (logical
    with a logical schedule; physical with a base backup schedule or WAL archiving, the
    point-in-time path behind a short RPO) and each kind the repository holds."""
    schedule = policy.schedule
    taken = {m.kind for m in list_backups(repo)}
    if schedule.logical_backup:
        taken.add("logical")
    if schedule.physical_backup or schedule.physical_incremental_backup or policy.wal_archiving:
        taken.add("physical")
    return tuple(k for k in KINDS if k in taken)


def _run_every_kind(
    policy: Policy,
    repo: Repository,
    started_at: datetime,
    kinds: tuple[str, ...],
    *,
    keep: bool,
    report_dir: Path | None,
    jobs: int,
    on_phase: PhaseCallback | None,
) -> DrillResult:
    """One drill per kind, one after the other (one scratch cluster at a time), each
    with its own verdict, combined into one stored report."""
    parts: list[DrillReport] = []
    kept: dict[str, Any] | None = None
    for kind in kinds:
        if not list_backups(repo, kind):
            parts.append(_missing_kind(policy, repo, kind))
            continue
        result = _run(
            policy,
            repo,
            datetime.now(UTC),
            backup_ref="latest",
            kinds=(kind,),
            point_in_time=None,
            keep=keep,
            report_dir=None,
            jobs=jobs,
            on_phase=on_phase,
            rng=None,
            publish=False,
        )
        parts.append(result.report)
        kept = kept or result.kept
    report = combine_reports(started_at, parts)
    files: list[Path] = []
    if report_dir is not None:
        files = write_report_dir(report_dir, report, past_reports(repo, exclude=report.id))
    key = store_report(repo, report)
    log.info("drill %s: verdict %s, report %s", report.id, report.verdict, key)
    return DrillResult(report, key, files, kept)


def _missing_kind(policy: Policy, repo: Repository, kind: str) -> DrillReport:
    """The verdict of a kind the policy takes but the repository holds no backup of."""
    now = datetime.now(UTC)
    report = DrillReport(
        id=new_drill_id(now, kind),
        environment=policy.name,
        started_at=now,
        backup_kind=kind,
        drkit_version=__version__,
        finished_at=now,
    )
    why = "a base backup schedule or WAL archiving" if kind == "physical" else "a schedule"
    report.add(
        Check(
            f"a {kind} backup to drill",
            "restore",
            FAIL,
            expected=f"a {kind} backup (the policy takes them: {why})",
            observed="none",
            detail=f"no {kind} backup in {repo.location}: run drkit backup {policy.name}"
            + (" --physical" if kind == "physical" else ""),
        )
    )
    return report


def combine_reports(started_at: datetime, parts: list[DrillReport]) -> DrillReport:
    """One report of a drill of several kinds: every check, tagged with its kind; the
    verdict PASS only when every kind passed; the measures (RTO, RPO, recovery point) of
    the physical drill when it ran (the path behind the RPO), else the first; each
    kind's own report under ``kinds``."""
    ran = [p for p in parts if p.backup_id is not None]
    main = next((p for p in ran if p.backup_kind == "physical"), ran[0] if ran else parts[0])
    errors = [f"{p.backup_kind}: {p.error}" for p in parts if p.error is not None]
    report = replace(
        main,
        id=new_drill_id(started_at, "every"),
        started_at=started_at,
        checks=[replace(c, backup_kind=p.backup_kind) for p in parts for c in p.checks],
        error="; ".join(errors) if errors else None,
        notes=[f"{p.backup_kind}: {n}" for p in parts for n in p.notes],
        parts=list(parts),
        finished_at=max((p.finished_at for p in parts if p.finished_at), default=None),
    )
    report.cleanup = {p.backup_kind or "": p.cleanup for p in parts}
    return report


def _run(
    policy: Policy,
    repo: Repository,
    started_at: datetime,
    *,
    backup_ref: str,
    point_in_time: datetime | None,
    keep: bool,
    report_dir: Path | None,
    jobs: int,
    on_phase: PhaseCallback | None,
    rng: random.Random | None,
    target_major: int | None = None,
    kinds: tuple[str, ...] | None = None,
    publish: bool = True,
    point: RecoveryTarget | None = None,
) -> DrillResult:
    # the stages bring psycopg and point-in-time recovery: loaded when a drill runs, so
    # that importing this package (its report, for status and check) stays cheap
    from drkit.drill.logical import drill_logical
    from drkit.drill.objectives import judge_objectives
    from drkit.drill.physical import drill_physical

    # the drill handles both kinds; a point in time needs a base backup and its WAL
    if point is not None and point.kind in ("time", "latest"):
        point_in_time, point = point.time, None
    if point_in_time is not None or point is not None:
        kinds = ("physical",)
    manifest = resolve_backup(repo, backup_ref, kinds=kinds or KINDS, rng=rng)
    scratch_major = _scratch_major(manifest, target_major)
    sources = backups_per_database(policy, repo, manifest, backup_ref)
    report = _new_report(policy, manifest, sources, started_at, backup_ref, point_in_time)
    report.target_label = point.label() if point is not None else None
    timer = PhaseTimer(report, on_phase)  # the RTO's wall time runs from here
    log.info("drill %s of %s: backup %s", report.id, policy.name, manifest.id)
    work = _work_directory()
    run = DrillRun(policy, repo, manifest, report, timer, work, jobs, point=point)
    kept: dict[str, Any] | None = None
    try:
        try:
            if manifest.kind == "logical":
                drill_logical(run, sources, scratch_major)
            else:
                drill_physical(run)
        except DrkitError as exc:  # the drill could not run (the backup got no verdict)
            log.error("drill %s could not run: %s", report.id, exc)
            report.error = str(exc)
        # any target but the end of the archive restores an older point on purpose
        targeted = point_in_time is not None or point is not None
        judge_objectives(policy, repo, manifest, report, backup_ref, targeted)
    finally:
        shutil.rmtree(run.fetch_dir, ignore_errors=True)
        scratch = run.scratch
        if keep and scratch and scratch[0].is_running() and report.error is None:
            kept = _keep_info(scratch[0], work, manifest)
            report.cleanup = {"scratch_cluster": "kept", **kept}
        else:
            report.cleanup = _tear_down(scratch, work)
    report.finished_at = datetime.now(UTC)
    if not publish:  # one kind of a drill of every kind: stored combined
        return DrillResult(report, None, [], kept)
    files: list[Path] = []
    if report_dir is not None:
        history = past_reports(repo, exclude=report.id)
        files = write_report_dir(report_dir, report, history)
    key = store_report(repo, report)
    log.info("drill %s: verdict %s, report %s", report.id, report.verdict, key)
    return DrillResult(report, key, files, kept)


def _new_report(
    policy: Policy,
    manifest: Manifest,
    sources: dict[str, Manifest | None],
    started_at: datetime,
    backup_ref: str,
    point_in_time: datetime | None,
) -> DrillReport:
    report = DrillReport(
        id=new_drill_id(started_at, manifest.kind),
        environment=policy.name,
        started_at=started_at,
        backup_id=manifest.id,
        backup_kind=manifest.kind,
        backup_selection=backup_ref,
        backup_databases={db: m.id if m else "" for db, m in sources.items()},
        backup_consistent_at=min(
            (m.consistent_at or m.finished_at for m in sources.values() if m),
            default=manifest.consistent_at or manifest.finished_at,
        ),
        target_point=point_in_time,
        drkit_version=__version__,
        backup_server_version=manifest.server_version or None,
    )
    objectives = policy.objectives
    report.rto_objective = objectives.rto_seconds
    report.rpo_objective = objectives.rpo_seconds
    return report


def _work_directory() -> Path:
    """The drill's private directory: ``pg/`` for the cluster's OS user, ``fetch/`` ours."""
    # the cluster's OS user must reach work/pg; work/fetch stays private
    work = scratch_directory("drkit-drill-", Owner.cluster(cluster_os_user()))
    (work / "fetch").mkdir(mode=0o700)
    return work


def backups_per_database(
    policy: Policy, repo: Repository, manifest: Manifest, backup_ref: str
) -> dict[str, Manifest | None]:
    """Database -> the backup a drill restores it from.

    A physical backup holds the whole cluster.  A logical one selected by id (or at
    random) is drilled for what it holds.  ``latest`` means, for each database of the
    policy, the newest logical backup holding it: after ``drkit backup prod --database
    shop`` the newest backup holds only ``shop``, and the main database comes from the
    newest backup that holds it (None when no backup does: the drill fails for it)."""
    own: dict[str, Manifest | None] = {db: manifest for db in manifest.databases}
    if manifest.kind != "logical" or backup_ref != "latest":
        return own
    logical = list_backups(repo, "logical")
    chosen: dict[str, Manifest | None] = {}
    for database in [*policy.database.database_names(), *manifest.databases]:
        if database not in chosen:
            chosen[database] = own.get(database) or newest_holding(logical, database, "logical")
    return chosen


def _tear_down(scratch: list[PostgresServer], work: Path) -> dict[str, Any]:
    """Stop and remove the scratch cluster and the work directory; say whether it worked."""
    started = time.monotonic()
    for cluster in scratch:
        cluster.destroy()
    shutil.rmtree(work, ignore_errors=True)
    running = [c for c in scratch if c.is_running()]
    if running or work.exists():
        problem = (
            f"scratch server on port {running[0].port} still running"
            if running
            else f"{work} could not be removed"
        )
        log.error("drill clean-up incomplete: %s", problem)
        return {"scratch_cluster": "cleanup failed", "detail": problem}
    took = round(time.monotonic() - started, 3)
    return {"scratch_cluster": "removed", "seconds": took, "duration_seconds": took}


def _keep_info(cluster: PostgresServer, work: Path, manifest: Manifest) -> dict[str, Any]:
    database = next((o.database for o in manifest.objects if o.database), None)
    database = database or next(iter(manifest.databases), "postgres")
    q = shlex.quote
    pg_ctl = cluster.bin("pg_ctl")
    as_user = f"runuser -u {q(cluster.os_user)} -- " if cluster.os_user else ""
    return {
        "port": cluster.port,
        "data_dir": str(cluster.data_dir),
        "socket_dir": str(cluster.socket_dir),
        "connect": (
            f"psql -h {q(str(cluster.socket_dir))} -p {cluster.port} -U {q(cluster.superuser)} "
            f"{q(database)}"
        ),
        "stop": (
            f"{as_user}{q(pg_ctl)} -D {q(str(cluster.data_dir))} -m fast stop "
            f"&& rm -rf {q(str(work))}"
        ),
    }


def _scratch_major(manifest: Manifest, target_major: int | None) -> int | None:
    """The scratch cluster's major: a physical backup's own; for a logical backup
    ``target_major`` (an upgrade rehearsal), else its own major or the closest newer one."""
    own = backup_major(manifest)
    if target_major is None:
        return own if manifest.kind != "logical" else logical_target_major(own)
    if manifest.kind != "logical":
        raise UsageError(
            f"--target-major: backup {manifest.id} is physical, and a physical backup runs "
            f"only on its own major ({own}); drill a logical backup to rehearse an upgrade"
        )
    if own is not None and target_major < own:
        raise UsageError(
            f"--target-major {target_major} is older than backup {manifest.id}'s PostgreSQL "
            f"{own}: a dump restores only into the same or a newer major"
        )
    return target_major
