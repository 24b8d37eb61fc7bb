"""Backups: logical and physical backups, retention and prune, verify, copies (the
catalog that lists them, their manifests and order, is :mod:`drkit.catalog`).

This is the package's face: callers outside it import from here (see ARCHITECTURE.md,
Backup).  Inside, by stage:

- taking a backup: :mod:`.logical` (``drkit backup ENV``: ``pg_dump`` in a snapshot whose
  rows are counted; :mod:`.dirdump` for the directory format), :mod:`.physical`
  (``--physical``: ``pg_basebackup`` streamed; :mod:`.archivewait`, its WAL waited for),
  :mod:`.relations` (the relation catalog a base backup records for ``wal-search``),
  :mod:`.chain` (incremental chains) and :mod:`.lock` (one backup of a kind at a time);
- what a backup needs to be restored: :mod:`.walchain` (the WAL chain, how far the
  archive reaches along a timeline) and :mod:`.unpack` (a base backup, or a chain, into a
  data directory);
- named points: :mod:`.restorepoint` (``drkit restore-point``);
- looking after backups: :mod:`.listing` (``drkit backup``/``backups`` reports),
  :mod:`.verify` (every object re-read), :mod:`.retention` (the plan, pure),
  :mod:`.prune` (the plan applied, in a crash-safe order), :mod:`.keep` (``drkit keep``)
  and :mod:`.copy` (``drkit copy``, the policy's copies brought up to date).

The face loads a module only when one of its names is first used
(:func:`drkit.lazy_face`): Python runs this file whenever any ``drkit.backup``
module is imported, and most of them bring psycopg, which ``drkit.restore`` or a
``drkit verify`` need not pay for through the face.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drkit import lazy_face

if TYPE_CHECKING:
    from drkit.backup.archivewait import wait_for_wal as wait_for_wal
    from drkit.backup.chain import by_id as by_id
    from drkit.backup.chain import chain_ok as chain_ok
    from drkit.backup.chain import resolve_chain as resolve_chain
    from drkit.backup.copy import CopyDocument as CopyDocument
    from drkit.backup.copy import copy_all as copy_all
    from drkit.backup.copy import copy_document as copy_document
    from drkit.backup.copy import refuse_same_repository as refuse_same_repository
    from drkit.backup.dirdump import MEMBER_NAME as MEMBER_NAME
    from drkit.backup.dirdump import TOC as TOC
    from drkit.backup.keep import KeepDocument as KeepDocument
    from drkit.backup.keep import keep_backup as keep_backup
    from drkit.backup.keep import release_backup as release_backup
    from drkit.backup.listing import BackupDocument as BackupDocument
    from drkit.backup.listing import BackupsDocument as BackupsDocument
    from drkit.backup.listing import backup_document as backup_document
    from drkit.backup.listing import list_environment as list_environment
    from drkit.backup.lock import running_backups as running_backups
    from drkit.backup.logical import backup_logical as backup_logical
    from drkit.backup.logical import read_position as read_position
    from drkit.backup.logical import run_logical_backup as run_logical_backup
    from drkit.backup.physical import run_physical_backup as run_physical_backup
    from drkit.backup.prune import DeleteDocument as DeleteDocument
    from drkit.backup.prune import PruneDocument as PruneDocument
    from drkit.backup.prune import delete_by_hand as delete_by_hand
    from drkit.backup.prune import plan_prune as plan_prune
    from drkit.backup.prune import prune as prune
    from drkit.backup.prune import prune_policy as prune_policy
    from drkit.backup.relations import CATALOG_KEY as CATALOG_KEY
    from drkit.backup.restorepoint import RestorePoint as RestorePoint
    from drkit.backup.restorepoint import RestorePointDocument as RestorePointDocument
    from drkit.backup.restorepoint import check_restore_point_name as check_restore_point_name
    from drkit.backup.restorepoint import create_restore_point as create_restore_point
    from drkit.backup.restorepoint import get_restore_point as get_restore_point
    from drkit.backup.unpack import unpack_chain as unpack_chain
    from drkit.backup.verify import VerifyDocument as VerifyDocument
    from drkit.backup.verify import verify_backup as verify_backup
    from drkit.backup.verify import verify_document as verify_document
    from drkit.backup.walchain import Reach as Reach
    from drkit.backup.walchain import WalIndex as WalIndex
    from drkit.backup.walchain import WalReading as WalReading
    from drkit.backup.walchain import archived_timelines as archived_timelines
    from drkit.backup.walchain import backup_on_timeline as backup_on_timeline
    from drkit.backup.walchain import own_tail as own_tail
    from drkit.backup.walchain import reach_on_timeline as reach_on_timeline
    from drkit.backup.walchain import segment_on_path as segment_on_path
    from drkit.backup.walchain import timeline_history as timeline_history

#: the public names, by the module of this package that defines them
__all__ = lazy_face(
    __name__,
    {
        "archivewait": "wait_for_wal",
        "chain": "by_id chain_ok resolve_chain",
        "copy": "CopyDocument copy_all copy_document refuse_same_repository",
        "dirdump": "MEMBER_NAME TOC",
        "keep": "KeepDocument keep_backup release_backup",
        "listing": "BackupDocument BackupsDocument backup_document list_environment",
        "lock": "running_backups",
        "logical": "backup_logical read_position run_logical_backup",
        "physical": "run_physical_backup",
        "prune": "DeleteDocument PruneDocument delete_by_hand plan_prune prune prune_policy",
        "relations": "CATALOG_KEY",
        "restorepoint": (
            "RestorePoint RestorePointDocument check_restore_point_name "
            "create_restore_point get_restore_point"
        ),
        "unpack": "unpack_chain",
        "verify": "VerifyDocument verify_backup verify_document",
        "walchain": (
            "Reach WalIndex WalReading archived_timelines backup_on_timeline own_tail "
            "reach_on_timeline segment_on_path timeline_history"
        ),
    },
)
