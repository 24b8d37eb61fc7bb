"""Judging a drill against the policy's objectives: RTO and RPO as checks of kind
``objective``.

The RTO is the drill's own measured time to a validated restore.  The RPO achieved is
the drill's start minus the newest point it restored, when it restored the newest it
could (``latest``, no point in time): the last replayed commit of a physical drill, the
backup's consistent point of a logical one.  A drill of an older point on purpose
measures the repository's newest recoverable point instead (its age is the backup
age).  An objective the policy does not set is NOT_RUN with what to add; one that was
not measured is NOT_RUN too; a drill that could not run is not judged.
"""

from __future__ import annotations

from drkit.catalog import Manifest
from drkit.config import Policy
from drkit.drill.report import FAIL, NOT_RUN, PASS, Check, DrillReport
from drkit.restore import CatalogView
from drkit.storage import Repository


def judge_objectives(
    policy: Policy,
    repo: Repository,
    manifest: Manifest,
    report: DrillReport,
    backup_ref: str,
    targeted: bool,
) -> None:
    """RTO and RPO as checks of kind ``objective`` (a missing objective is NOT_RUN)."""
    if report.error is not None:
        return
    if backup_ref == "latest" and not targeted and report.reached_point is not None:
        report.rpo_achieved = (report.started_at - report.reached_point).total_seconds()
        report.rpo_basis = "drill start minus the newest point this drill restored " + (
            "(last replayed commit)" if manifest.kind == "physical" else "(backup consistent point)"
        )
    else:
        newest = CatalogView(policy, repo).newest_recoverable_point
        if newest is not None:
            report.rpo_achieved = (report.started_at - newest).total_seconds()
        report.rpo_basis = (
            "drill start minus the repository's newest recoverable point (this drill restored "
            "an older point on purpose; its age is the backup age)"
        )
    for label, measured, objective in (
        ("rto", report.rto_total, report.rto_objective),
        ("rpo", report.rpo_achieved, report.rpo_objective),
    ):
        name = f"objective {label.upper()}"
        if objective is None:
            report.add(
                Check(
                    name,
                    "objective",
                    NOT_RUN,
                    detail=f"the policy sets no objectives.{label}: add one so drills can judge it",
                )
            )
        elif measured is None:
            report.add(
                Check(name, "objective", NOT_RUN, f"<= {objective:g}s", None, "not measured")
            )
        else:
            met = measured <= objective
            report.add(
                Check(
                    name,
                    "objective",
                    PASS if met else FAIL,
                    expected=f"<= {objective:g}s",
                    observed=f"{measured:.1f}s",
                    detail="" if met else f"{label.upper()} objective breached",
                )
            )
