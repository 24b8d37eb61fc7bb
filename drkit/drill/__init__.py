"""Restore drills: restore a backup into a scratch cluster, measure RTO and RPO,
validate, report.

This is the package's face: the CLI, the scheduler, the demo and the benchmarks import
from here (see ARCHITECTURE.md, Drill).  Inside, by stage:

- :mod:`.runner`: :func:`run_drill`, the orchestration (choose the backup, the work
  directory, the stage, the verdict, the teardown, the stored report);
- :mod:`.context`: what the stages share (the run, the phase timer);
- :mod:`.logical` and :mod:`.physical`: restoring each kind of backup, timed by phase;
- :mod:`.roles`: the policy's role (and the roles it depends on) mirrored into the
  scratch cluster, so a logical drill restores as the real restore would;
- :mod:`.checks`: the validation ladder (connections, row counts, SQL checks, amcheck,
  collation versions);
- :mod:`.objectives`: RTO and RPO judged against the policy's objectives;
- :mod:`.report` and :mod:`.chart`: the report, its renderings and the trend chart.

Importing the package stays cheap (no database driver): the stages are loaded when a
drill runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drkit import lazy_face
from drkit.drill.context import DrillCannotRun as DrillCannotRun
from drkit.drill.report import ERROR as ERROR
from drkit.drill.report import FAIL as FAIL
from drkit.drill.report import NOT_RUN as NOT_RUN
from drkit.drill.report import PASS as PASS
from drkit.drill.report import PHASE_TITLES as PHASE_TITLES
from drkit.drill.report import WARN as WARN
from drkit.drill.report import Check as Check
from drkit.drill.report import DrillDocument as DrillDocument
from drkit.drill.report import DrillReport as DrillReport
from drkit.drill.report import check_label as check_label
from drkit.drill.report import kind_verdicts as kind_verdicts
from drkit.drill.runner import DrillResult as DrillResult
from drkit.drill.runner import run_drill as run_drill

if TYPE_CHECKING:
    from drkit.drill.chart import chart_svg as chart_svg

#: loaded on first use (the status page draws the trend chart; a drill does not)
lazy_face(
    __name__,
    {
        "chart": "chart_svg",
    },
)
