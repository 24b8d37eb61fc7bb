"""WAL archiving: what PostgreSQL's archive_command and restore_command run, and the
archive they fill (see ARCHITECTURE.md, WAL).

This is the package's face: callers outside it import from here.  Inside, shaped like
pgBackRest's ``command/archive``:

- :mod:`.names`: WAL file names, LSNs and segment arithmetic (pure);
- :mod:`.keys`: where WAL objects live in a repository, how each is checked, reading
  one back;
- :mod:`.cluster`: the data directory a WAL file comes from and its pg_control;
- :mod:`.push`: ``wal-push`` (archive_command), archiving ahead what is ready;
- :mod:`.fetch`: ``wal-fetch`` (restore_command), the prefetch spool and the journal a
  restore reads;
- :mod:`.receive`: ``wal-receive``, WAL streamed from a replication slot (pg_receivewal);
- :mod:`.archiver` and :mod:`.ack`: the asynchronous mode's worker, and the
  acknowledgements a wal-push checks before loading anything;
- :mod:`.identity`: which cluster the archive belongs to;
- :mod:`.timelines`: which timeline is production's;
- :mod:`.commands`: the command lines PostgreSQL runs, and the runtime its OS user runs;
- :mod:`.envfile`: the variables a policy needs, pinned for those lines (the env file);
- :mod:`.documents`: the ``--json`` documents of the WAL commands;
- :mod:`.setup`: ``archive-command``, those lines made to work for this install;
- :mod:`.entry`: every entry PostgreSQL runs, in one lean module (``python -m drkit.wal``).

The face loads a module only when one of its names is first used
(:func:`drkit.lazy_face`): archive_command runs
once per WAL file, and an acknowledged push or a prefetched segment must not pay for
the storage stack, the async worker or the runtime code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drkit import lazy_face

if TYPE_CHECKING:
    from drkit.wal.ack import ACK as ACK
    from drkit.wal.ack import LOCK as LOCK
    from drkit.wal.ack import SPOOL_ROOT as SPOOL_ROOT
    from drkit.wal.ack import Spool as Spool
    from drkit.wal.ack import fast_push as fast_push
    from drkit.wal.archiver import ack_outcome as ack_outcome
    from drkit.wal.archiver import archive_wal as archive_wal
    from drkit.wal.archiver import push_async as push_async
    from drkit.wal.archiver import repository_id as repository_id
    from drkit.wal.archiver import spool_for as spool_for
    from drkit.wal.archiver import trusted_ack as trusted_ack
    from drkit.wal.cluster import cluster_segment_size as cluster_segment_size
    from drkit.wal.cluster import system_identifier as system_identifier
    from drkit.wal.commands import archive_command as archive_command
    from drkit.wal.commands import drkit_argv as drkit_argv
    from drkit.wal.commands import load_wal_policy as load_wal_policy
    from drkit.wal.commands import prepare_file_repository as prepare_file_repository
    from drkit.wal.commands import reachable_by as reachable_by
    from drkit.wal.commands import restore_command as restore_command
    from drkit.wal.documents import ArchiveCommandDocument as ArchiveCommandDocument
    from drkit.wal.documents import PromoteTimelineDocument as PromoteTimelineDocument
    from drkit.wal.documents import WalFetchDocument as WalFetchDocument
    from drkit.wal.documents import WalPushDocument as WalPushDocument
    from drkit.wal.documents import WalReceiveDocument as WalReceiveDocument
    from drkit.wal.documents import fetch_document as fetch_document
    from drkit.wal.documents import promote_document as promote_document
    from drkit.wal.entry import fetch_error_line as fetch_error_line
    from drkit.wal.entry import run_fetch as run_fetch
    from drkit.wal.envfile import apply_env_file as apply_env_file
    from drkit.wal.envfile import wal_environment as wal_environment
    from drkit.wal.envfile import write_env_file as write_env_file
    from drkit.wal.fetch import SPOOL_DIR as SPOOL_DIR
    from drkit.wal.fetch import FetchOutcome as FetchOutcome
    from drkit.wal.fetch import download as download
    from drkit.wal.fetch import fetch_attempts as fetch_attempts
    from drkit.wal.fetch import fetch_wal as fetch_wal
    from drkit.wal.fetch import prefetch_into as prefetch_into
    from drkit.wal.fetch import read_fetch_journal as read_fetch_journal
    from drkit.wal.fetch import start_fetch_journal as start_fetch_journal
    from drkit.wal.fetch import write_repo_hint as write_repo_hint
    from drkit.wal.identity import ForeignWal as ForeignWal
    from drkit.wal.identity import check_identity as check_identity
    from drkit.wal.identity import read_identity as read_identity
    from drkit.wal.identity import record_identity as record_identity
    from drkit.wal.keys import CHECKSUM_SUFFIX as CHECKSUM_SUFFIX
    from drkit.wal.keys import STREAM_DIR as STREAM_DIR
    from drkit.wal.keys import WAL_DIR as WAL_DIR
    from drkit.wal.keys import StoredPartial as StoredPartial
    from drkit.wal.keys import find_wal_key as find_wal_key
    from drkit.wal.keys import open_wal_object as open_wal_object
    from drkit.wal.keys import stored_partials as stored_partials
    from drkit.wal.keys import wal_candidate_keys as wal_candidate_keys
    from drkit.wal.keys import wal_integrity as wal_integrity
    from drkit.wal.keys import write_partial as write_partial
    from drkit.wal.names import DEFAULT_SEGMENT_SIZE as DEFAULT_SEGMENT_SIZE
    from drkit.wal.names import LONG_HEADER_SIZE as LONG_HEADER_SIZE
    from drkit.wal.names import Segment as Segment
    from drkit.wal.names import TimelineSwitch as TimelineSwitch
    from drkit.wal.names import backup_file_name as backup_file_name
    from drkit.wal.names import following_segments as following_segments
    from drkit.wal.names import history_name as history_name
    from drkit.wal.names import is_archivable as is_archivable
    from drkit.wal.names import is_history as is_history
    from drkit.wal.names import is_segment as is_segment
    from drkit.wal.names import lsn_to_segment_name as lsn_to_segment_name
    from drkit.wal.names import next_segment_name as next_segment_name
    from drkit.wal.names import parse_history as parse_history
    from drkit.wal.names import parse_segment as parse_segment
    from drkit.wal.names import segment_size_from_control as segment_size_from_control
    from drkit.wal.names import segment_system_identifier as segment_system_identifier
    from drkit.wal.names import segments_between as segments_between
    from drkit.wal.names import timeline_at as timeline_at
    from drkit.wal.push import PushOutcome as PushOutcome
    from drkit.wal.push import PushReport as PushReport
    from drkit.wal.push import WalConflict as WalConflict
    from drkit.wal.push import WalRejected as WalRejected
    from drkit.wal.push import push_file as push_file
    from drkit.wal.push import push_wal as push_wal
    from drkit.wal.push import ready_files as ready_files
    from drkit.wal.receive import ReceiveReport as ReceiveReport
    from drkit.wal.receive import SlotLag as SlotLag
    from drkit.wal.receive import SlotState as SlotState
    from drkit.wal.receive import drop_slot as drop_slot
    from drkit.wal.receive import receive_wal as receive_wal
    from drkit.wal.receive import slot_lag as slot_lag
    from drkit.wal.receive import slot_name as slot_name
    from drkit.wal.receive import slot_state as slot_state
    from drkit.wal.setup import set_up_archiving as set_up_archiving
    from drkit.wal.timelines import RESTORE_MARKER as RESTORE_MARKER
    from drkit.wal.timelines import clear_restore_marker as clear_restore_marker
    from drkit.wal.timelines import note_pushed as note_pushed
    from drkit.wal.timelines import promote_timeline as promote_timeline
    from drkit.wal.timelines import recorded_timeline as recorded_timeline
    from drkit.wal.timelines import server_timeline as server_timeline
    from drkit.wal.timelines import write_restore_marker as write_restore_marker

#: the public names, by the module of this package that defines them
__all__ = lazy_face(
    __name__,
    {
        "ack": "ACK LOCK SPOOL_ROOT Spool fast_push",
        "archiver": "ack_outcome archive_wal push_async repository_id spool_for trusted_ack",
        "cluster": "cluster_segment_size system_identifier",
        "commands": (
            "archive_command drkit_argv load_wal_policy prepare_file_repository "
            "reachable_by restore_command"
        ),
        "documents": (
            "ArchiveCommandDocument PromoteTimelineDocument WalFetchDocument "
            "WalPushDocument WalReceiveDocument fetch_document promote_document"
        ),
        "entry": "fetch_error_line run_fetch",
        "envfile": "apply_env_file wal_environment write_env_file",
        "fetch": (
            "SPOOL_DIR FetchOutcome download fetch_attempts fetch_wal prefetch_into "
            "read_fetch_journal start_fetch_journal write_repo_hint"
        ),
        "identity": "ForeignWal check_identity read_identity record_identity",
        "keys": (
            "CHECKSUM_SUFFIX STREAM_DIR StoredPartial WAL_DIR find_wal_key open_wal_object "
            "stored_partials wal_candidate_keys wal_integrity write_partial"
        ),
        "names": (
            "DEFAULT_SEGMENT_SIZE LONG_HEADER_SIZE Segment TimelineSwitch backup_file_name "
            "following_segments history_name is_archivable is_history is_segment "
            "lsn_to_segment_name next_segment_name parse_history parse_segment "
            "segment_size_from_control segment_system_identifier segments_between "
            "timeline_at"
        ),
        "push": "PushOutcome PushReport WalConflict WalRejected push_file push_wal ready_files",
        "receive": (
            "ReceiveReport SlotLag SlotState drop_slot receive_wal slot_lag slot_name slot_state"
        ),
        "setup": "set_up_archiving",
        "timelines": (
            "RESTORE_MARKER clear_restore_marker note_pushed promote_timeline "
            "recorded_timeline server_timeline write_restore_marker"
        ),
    },
)
