"""The backup source (``--from-backup``): SRC's schema and rows come from a logical backup
in SRC's repository; production is never touched.

The backup's pre-data section is restored into the database the orchestrator names when
it opens the source (the build database, or a scratch one for ``--dry-run`` and
``--scan-only``), and the schema is read from that catalog by the same reader as a live
source, so inheritance, partitions and domains look the same either way.  Rows are
parsed out of ``pg_restore --section=data`` (:mod:`.archive`): one pass over the archive
serves every read, in the archive's order, and finds the sequence values on the way.

A backup cannot filter rows, nor try the strategies on rows before loading them: every
row is loaded, and the orchestrator applies ``where`` and subset filters in the build,
to the already sanitized rows (which is why they may only read kept columns); the
build's own CHECK constraints are the test of the strategies' outputs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from drkit.catalog import Manifest, resolve_backup
from drkit.config import Policy
from drkit.errors import UsageError
from drkit.pg import (
    connect,
    describe,
    find_binary,
    find_client,
    for_subprocess,
    list_file,
    restore_args,
    script_args,
    toc_args,
)
from drkit.restore import fetched_directory
from drkit.sanitize.plan import Plan, TablePlan
from drkit.sanitize.schema import Schema, read_schema
from drkit.sanitize.sources.archive import DataSection, dump_object, restore_from_stream
from drkit.sanitize.sources.base import NOT_COPIED, Read, Rows, SequenceValue
from drkit.sanitize.strategies import Compiler
from drkit.sanitize.subset import Selection
from drkit.storage import Repository, StoredObject

log = logging.getLogger(__name__)


@contextlib.contextmanager
def open_backup(policy: Policy, ref: str, *, jobs: int, catalog: str) -> Iterator[BackupSource]:
    """The logical backup ``ref`` of ``policy``'s database; its DDL goes into ``catalog``
    (a database the caller made) for its schema to be read."""
    repo = Repository.for_policy(policy)
    database = policy.database.database_names()[0]
    manifest = resolve_backup(repo, ref, kinds=("logical",), database=database)
    members = manifest.directory_members(database)
    if members is None:  # custom format: every pass streams the stored object
        yield BackupSource(repo, manifest, database, dump_object(manifest, database), catalog)
        return
    # directory format (backup --jobs): pg_restore reads a directory, fetched once, checked
    with fetched_directory(repo, members, jobs=max(1, jobs)) as local:
        yield BackupSource(repo, manifest, database, local, catalog)


class BackupSource:
    concurrent = False

    def __init__(
        self,
        repo: Repository,
        manifest: Manifest,
        database: str,
        obj: StoredObject | Path,
        catalog: str,
    ) -> None:
        self.label = f"backup {manifest.id}"
        self._repo = repo
        self._obj = obj
        self._catalog = catalog
        self._counts = manifest.row_counts.get(database, {})
        # the dump's archive format is its pg_dump's: a pg_restore of its major (or newer)
        major = int(manifest.server_version.split(".")[0]) if manifest.server_version else 0
        self._pg_restore = find_client("pg_restore", major) if major else find_binary("pg_restore")
        self._env = for_subprocess("")[1]
        self._sequences: list[SequenceValue] = []

    def schema(self) -> Schema:
        self._restore(self._catalog, "pre-data")
        with connect(self._catalog, autocommit=False) as conn:
            schema = read_schema(conn)
            conn.rollback()
        return schema

    def check_fit(self, plan: Plan, compiler: Compiler) -> None:
        return None  # no rows to try before loading: the build's CHECK constraints decide

    def select(self, plan: Plan) -> None:
        return None  # filters run in the build

    def count(self, table: TablePlan, selection: Selection) -> int | None:
        return self._counts.get(table.key)  # as the backup counted them

    def pre_data(self, dsn: str) -> None:
        if dsn != self._catalog:  # else already there: the schema was read from it
            self._restore(dsn, "pre-data")

    def rows(self, reads: Sequence[Read], *, only_these: bool = False) -> Iterator[Rows]:
        wanted = {read.table.key: read for read in reads}
        assert len(wanted) == len(reads), "one read per table"
        assert all(r.selection.everything for r in reads), "a backup cannot filter rows"
        tables = [read.table.table.name for read in reads] if only_these else []
        args = script_args(self._pg_restore, section="data", tables=tables)
        what = "pg_restore (data of the backup)"
        if only_these:
            what = "pg_restore (data of some tables of the backup)"
        section = DataSection()
        with restore_from_stream(self._repo, self._obj, args, self._env, what, stdout=-1) as proc:
            for block, lines in section.blocks(proc.stdout):
                read = wanted.get(f"{block.schema}.{block.table}")
                if read is None:
                    continue
                copied = {c.name for c, _ in read.table.columns}
                unknown = [c for c in block.columns if c not in copied]
                if unknown:
                    raise UsageError(
                        f"the backup's {read.table.key} has column {unknown[0]} the schema lacks"
                    )
                yield Rows(read, block.columns, functools.partial(_already_open, lines))
        if not only_these:
            if section.skipped:
                log.warning("backup data entries not copied: %s", "; ".join(section.skipped[:3]))
            self._sequences = section.sequences

    def post_data(self, dsn: str, jobs: int) -> None:
        self._restore(dsn, "post-data")  # a piped archive restores in one job

    def sequences(self) -> list[SequenceValue]:
        return self._sequences

    def _restore(self, dsn: str, section: str) -> None:
        """One section into ``dsn``, without the entries a copy never gets."""
        with restore_from_stream(
            self._repo,
            self._obj,
            toc_args(self._pg_restore),
            self._env,
            "pg_restore -l of the backup",
            stdout=-1,
        ) as proc:
            toc = proc.stdout.read().decode("utf-8", "replace")
        with list_file(toc, NOT_COPIED) as listing:
            args, env = restore_args(self._pg_restore, dsn, section=section, listing=listing)
            with restore_from_stream(
                self._repo,
                self._obj,
                args,
                env,
                f"pg_restore --section={section} into {describe(dsn)}",
            ):
                pass


def _already_open(lines: Iterable[bytes]) -> AbstractContextManager[Iterable[bytes]]:
    """A block's rows are being read already: opening them is just taking them."""
    return contextlib.nullcontext(lines)
