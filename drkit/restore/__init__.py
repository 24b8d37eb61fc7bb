"""Restores: a logical backup into a database, a physical one to a point in time.

This is the package's face: the CLI, drills, ``drkit status``, the demo and the
benchmarks import from here.  Inside, by stage:

- :mod:`.logical`: ``drkit restore ENV [ID]``, a dump streamed into ``pg_restore``
  (:mod:`.dirrestore` fetches a directory-format dump back first), then row counts;
- :mod:`.target`: the recovery target the command line names (a time, a transaction,
  an LSN, a restore point, or the end of the backup);
- :mod:`.plan`: what point-in-time recovery can reach and how (timeline, base
  backup, WAL chain, explicit end), decided before anything is written;
- :mod:`.recovery_conf`: the recovery settings written into the data directory;
- :mod:`.pitr`: ``drkit restore ENV --point-in-time TS --pgdata DIR``, the stages in
  order (unpack, configure, replay to a pause, check, promote), and the observer a
  drill watches it through; :mod:`.replay`: the recovering server watched (replay
  progress, the wait for its pause, promote or stop); :mod:`.goal`: where a recovery
  must end and the checks of what it reached (never promoted short of it);
- :mod:`.tables`: ``--table`` (``--as``, ``--force``) from a scratch copy, logical or
  recovered, published into the live database in one transaction;
- :mod:`.walsearch`: ``drkit wal-search``, the transactions that touched a table in the
  archived WAL, each with the target that stops just before it;
- :mod:`.window`: the catalog view (:class:`CatalogView`): the newest backup of each
  kind, the newest WAL, how far ``restore latest`` gets (gaps, foreign segments), the
  recoverable window, each database's RPO exposure, the stored drill reports;
- :mod:`.documents`: the ``--json`` documents of ``drkit restore``.
"""

from __future__ import annotations

from drkit.restore.dirrestore import fetch_directory as fetch_directory
from drkit.restore.dirrestore import fetched_directory as fetched_directory
from drkit.restore.documents import PitrDocument as PitrDocument
from drkit.restore.documents import RestoreDocument as RestoreDocument
from drkit.restore.documents import TableRestoreDocument as TableRestoreDocument
from drkit.restore.goal import RecoveryStoppedShort as RecoveryStoppedShort
from drkit.restore.logical import RestoreResult as RestoreResult
from drkit.restore.logical import restore_archive as restore_archive
from drkit.restore.logical import restore_logical as restore_logical
from drkit.restore.pitr import PitrResult as PitrResult
from drkit.restore.pitr import RecoveryObserver as RecoveryObserver
from drkit.restore.pitr import continue_recovery as continue_recovery
from drkit.restore.pitr import restore_point_in_time as restore_point_in_time
from drkit.restore.plan import RecoveryPlan as RecoveryPlan
from drkit.restore.plan import TimelineChoice as TimelineChoice
from drkit.restore.plan import Window as Window
from drkit.restore.plan import consistent_point as consistent_point
from drkit.restore.plan import parse_timeline as parse_timeline
from drkit.restore.plan import plan_recovery as plan_recovery
from drkit.restore.tables import parse_choice as parse_choice
from drkit.restore.tables import restore_tables_at as restore_tables_at
from drkit.restore.target import RecoveryTarget as RecoveryTarget
from drkit.restore.target import parse_target as parse_target
from drkit.restore.walsearch import SearchResult as SearchResult
from drkit.restore.walsearch import WalSearchDocument as WalSearchDocument
from drkit.restore.walsearch import search_table as search_table
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
