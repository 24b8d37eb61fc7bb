"""Restores: logical restore and physical point-in-time recovery, and what they can reach.

This is the package's face for what the rest of drkit reads about recoverability:

- :mod:`.window`: the catalog view (:class:`CatalogView`): the newest backup of each
  kind, the newest WAL, how far ``restore latest`` gets (gaps, foreign segments), the
  recoverable window, each database's RPO exposure, the stored drill reports;
- :mod:`.pitr`: point-in-time recovery; :mod:`.logical` and :mod:`.dirrestore`: logical
  restores; :mod:`.datadir`: the data directory a restore writes.
"""

from __future__ import annotations

from drkit.restore.window import REPORT_NAME as REPORT_NAME
from drkit.restore.window import CatalogView as CatalogView
from drkit.restore.window import DatabaseExposure as DatabaseExposure
from drkit.restore.window import DrillSummary as DrillSummary
from drkit.restore.window import RecoverableWindow as RecoverableWindow
from drkit.restore.window import WalReach as WalReach
from drkit.restore.window import exposure_at as exposure_at
from drkit.restore.window import latest_report as latest_report
from drkit.restore.window import parse_drill_report as parse_drill_report
from drkit.restore.window import past_reports as past_reports
from drkit.restore.window import report_finished_at as report_finished_at
from drkit.restore.window import report_key as report_key
from drkit.restore.window import rpo_exposure as rpo_exposure
from drkit.restore.window import worst_database as worst_database
