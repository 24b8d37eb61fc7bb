"""A logical backup as ``pg_restore`` streams it: its sections, and its data section's
``COPY`` blocks.

The backup is a ``pg_dump`` archive in the repository.  Each pass opens it as a decoded
stream and feeds it to ``pg_restore`` on stdin (a directory-format dump is fetched and
checked once, then read from disk): the table-of-contents pass (``-l``) stops early
(pg_restore closes its input), the pre- and post-data passes restore into a database,
and the data pass turns the data section into plain ``COPY ... FROM stdin`` blocks that
:class:`DataSection` splits into tables and rows.  Production is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from drkit.catalog import Manifest
from drkit.errors import SubprocessError
from drkit.pg import PipeProcess
from drkit.storage import Repository, StoredObject

log = logging.getLogger(__name__)

CHUNK = 1 << 16

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_QUALIFIED = rf"({_IDENT})\.({_IDENT})"
_COPY_RE = re.compile(rf"^COPY {_QUALIFIED} \((.*)\) FROM stdin;$")
_SETVAL_RE = re.compile(r"^SELECT pg_catalog\.setval\('((?:[^']|'')+)', (-?\d+), (true|false)\);$")


def unquote(ident: str) -> str:
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident


def split_idents(text: str) -> list[str]:
    return [unquote(p.strip()) for p in re.findall(rf"{_IDENT}", text)]


@dataclass
class CopyBlock:
    schema: str
    table: str
    columns: list[str]


@dataclass
class DataSection:
    """pg_restore's plain data section, walked once: :meth:`blocks` yields the tables'
    rows; the sequence values and the entries no copy gets are kept on the way."""

    sequences: list[tuple[str, int, bool]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def blocks(self, lines: IO[bytes]) -> Iterator[tuple[CopyBlock, BlockRows]]:
        """Each ``COPY`` block and its rows (COPY text lines); the rows a consumer leaves
        are skipped before the next block (and rows skipped unread refuse to be read)."""
        for raw in lines:
            line = raw.rstrip(b"\n").decode("utf-8", "replace")
            m = _COPY_RE.match(line)
            if m:
                block = CopyBlock(
                    unquote(m.group(1)), unquote(m.group(2)), split_idents(m.group(3))
                )
                rows = BlockRows(lines, f"{block.schema}.{block.table}")
                yield block, rows
                rows.skip()  # whatever the consumer left
                continue
            s = _SETVAL_RE.match(line)
            if s:
                self.sequences.append(
                    (s.group(1).replace("''", "'"), int(s.group(2)), s.group(3) == "true")
                )
            elif line.startswith(("SELECT pg_catalog.lo_", "BEGIN;", "COMMIT;")):
                self.skipped.append(line[:60])


class BlockRows:
    """The rows of one ``COPY`` block, read from the data section as it streams by.

    They can be read only while the stream is at them: once the section moved on to the
    next block (:meth:`skip`), reading them raises, rather than give no rows, so a table
    taken out of order is never copied empty."""

    def __init__(self, lines: IO[bytes], table: str) -> None:
        self._lines = lines
        self._table = table
        self._skipped = False
        self._done = False  # the block's end was read

    def __iter__(self) -> Iterator[bytes]:
        if self._skipped:
            raise RuntimeError(f"the backup's rows of {self._table} were taken out of order")
        return self._until_end()

    def _until_end(self) -> Iterator[bytes]:
        for raw in self._lines:
            if raw == b"\\.\n" or raw == b"\\.":
                self._done = True
                return
            yield raw
        self._done = True

    def skip(self) -> None:
        """The stream moves on: what was not read of this block is passed over (from
        where the stream is: a consumer may have stopped halfway)."""
        self._skipped = True
        if not self._done:
            for _ in self._until_end():
                pass


def dump_object(manifest: Manifest, database: str) -> StoredObject:
    """The stored dump of ``database`` in a custom-format backup."""
    found = manifest.dump_objects(database)
    if found:
        return found[0]
    names = ", ".join(str(o.database) for o in manifest.objects if o.database is not None)
    raise SubprocessError(
        f"backup {manifest.id} holds no dump of database {database} (it has: {names or 'none'})"
    )


@contextlib.contextmanager
def restore_from_stream(
    repo: Repository,
    obj: StoredObject | Path,
    args: list[str],
    env: dict[str, str],
    what: str,
    *,
    stdout: int | None = None,
) -> Iterator[PipeProcess]:
    """Run pg_restore reading the decoded backup on stdin (fed by a thread), or, for a
    directory-format dump already fetched and checked (``obj`` a local directory), from it.

    The caller reads stdout if it asked for it; leaving the block waits for the feeder,
    then for pg_restore, and raises if either failed.  Leaving it by an exception (the
    caller stopped reading: a strategy error, a database error) kills pg_restore first:
    the feeder may be blocked writing to it while it is blocked on the stdout no one
    reads any more, and neither would ever finish.
    """
    if isinstance(obj, Path):
        with PipeProcess([*args, str(obj)], env=env, what=what, stdout=stdout) as local:
            yield local
            local.wait()
        return
    with PipeProcess(args, env=env, what=what, stdin=-1, stdout=stdout) as proc:
        failure: list[BaseException] = []

        def feed() -> None:
            try:
                with repo.open_decoded(obj) as stream:
                    while chunk := stream.read(CHUNK):
                        proc.stdin.write(chunk)
            except (BrokenPipeError, ConnectionResetError, ValueError):
                pass  # pg_restore had all it needed (schema passes stop early)
            except BaseException as exc:  # surfaced by the caller
                failure.append(exc)
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        feeder = threading.Thread(target=feed, name="drkit-backup-feed", daemon=True)
        feeder.start()
        try:
            yield proc
        except BaseException:
            proc.kill()  # unblocks the feeder (its writes now fail), then it is waited for
            feeder.join()
            raise
        feeder.join()
        if failure:
            raise failure[0]
        proc.wait()  # after the feeder: closing stdin early would truncate the input
