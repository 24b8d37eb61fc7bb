"""The demo's restore drill: a scratch cluster, RTO/RPO against the objectives, checks."""

from __future__ import annotations

from drkit.demo.document import DemoDrill
from drkit.demo.sandbox import Sandbox, Say, Step, timed
from drkit.drill import run_drill
from drkit.errors import CheckFailed


def drill(box: Sandbox, say: Say) -> None:
    """Run a restore drill of PROD; anything but PASS stops the demo."""
    result, took = timed(
        say,
        "restore drill (scratch cluster, RTO/RPO against the objectives, validation ladder)",
        lambda: run_drill(box.policy()),
    )
    report = result.report
    phases = ", ".join(f"{p} {s:.1f}s" for p, s in report.phases.items())
    if report.verdict != "PASS":
        failed = ", ".join(c.name for c in report.failures()) or report.error
        raise CheckFailed(f"demo: drill {report.id} verdict {report.verdict}: {failed}")
    say(
        "ok",
        f"{report.id}: PASS, {len(report.checks)} checks, RTO {report.rto_total:.1f}s "
        f"({phases}), RPO {report.rpo_achieved or 0:.0f}s ({took:.1f}s)",
    )
    box.drill = DemoDrill(
        id=report.id,
        verdict=report.verdict,
        rto_seconds=report.rto_total,
        rpo_seconds=report.rpo_achieved,
        checks=len(report.checks),
    )


STEP = Step("restore drill (RTO/RPO measured, checks run)", drill)
