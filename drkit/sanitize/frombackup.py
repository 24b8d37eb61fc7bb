"""Reading SRC from a logical backup (``--from-backup``) instead of the live database.

The backup is a ``pg_dump -Fc`` archive in the repository.  Each pass opens it as a
decoded stream and feeds it to ``pg_restore`` on stdin: the schema passes stop after
the archive's table of contents (pg_restore closes its input early), the data pass
turns the data section into plain ``COPY ... FROM stdin`` blocks that are parsed here
and streamed through the strategies.  Production is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

from drkit.backup.catalog import Manifest
from drkit.errors import SubprocessError
from drkit.pg.process import PipeProcess
from drkit.sanitize.schema import ForeignKey, Schema
from drkit.storage.repository import Repository, StoredObject

log = logging.getLogger(__name__)

CHUNK = 1 << 16

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_QUALIFIED = rf"({_IDENT})\.({_IDENT})"
_COPY_RE = re.compile(rf"^COPY {_QUALIFIED} \((.*)\) FROM stdin;$")
_SETVAL_RE = re.compile(r"^SELECT pg_catalog\.setval\('((?:[^']|'')+)', (-?\d+), (true|false)\);$")
_CONSTRAINT_RE = re.compile(
    rf"ALTER TABLE ONLY {_QUALIFIED}\s+ADD CONSTRAINT ({_IDENT}) "
    rf"(PRIMARY KEY|UNIQUE|FOREIGN KEY) \(([^)]*)\)"
    rf"(?: REFERENCES {_QUALIFIED}\(([^)]*)\))?"
)
_UNIQUE_INDEX_RE = re.compile(
    rf"CREATE UNIQUE INDEX {_IDENT} ON (?:ONLY )?{_QUALIFIED} USING \w+ \(([^)]*)\);"
)


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
    """What the data pass found besides the rows."""

    sequences: list[tuple[str, int, bool]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def dump_object(manifest: Manifest, database: str | None) -> StoredObject:
    dumps = [o for o in manifest.objects if o.database is not None]
    for obj in dumps:
        if database is None or obj.database == database:
            return obj
    names = ", ".join(str(o.database) for o in dumps) or "none"
    raise SubprocessError(
        f"backup {manifest.id} holds no dump of database {database} (it has: {names})"
    )


@contextlib.contextmanager
def restore_from_stream(
    repo: Repository,
    obj: StoredObject,
    args: list[str],
    env: dict[str, str],
    what: str,
    *,
    stdout: int | None = None,
) -> Iterator[PipeProcess]:
    """Run pg_restore reading the decoded backup on stdin (fed by a thread).

    The caller reads stdout if it asked for it; leaving the block waits for the feeder,
    then for pg_restore, and raises if either failed.
    """
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
        finally:
            feeder.join()
        if failure:
            raise failure[0]
        proc.wait()  # after the feeder: closing stdin early would truncate the input


def read_post_data(
    repo: Repository, obj: StoredObject, pg_restore: str, env: dict[str, str]
) -> str:
    args = [pg_restore, "--section=post-data", "-f", "-"]
    with restore_from_stream(
        repo, obj, args, env, "pg_restore (post-data of the backup)", stdout=-1
    ) as proc:
        text = proc.stdout.read().decode("utf-8", "replace")
    return text


def add_constraints(schema: Schema, post_data_sql: str) -> None:
    """Primary, unique and foreign keys from pg_dump's post-data SQL."""
    for m in _CONSTRAINT_RE.finditer(post_data_sql):
        key = f"{unquote(m.group(1))}.{unquote(m.group(2))}"
        table = schema.tables.get(key)
        if table is None:
            continue
        name, kind, cols = unquote(m.group(3)), m.group(4), tuple(split_idents(m.group(5)))
        if kind == "PRIMARY KEY":
            table.primary_key = cols
        elif kind == "UNIQUE":
            table.unique_keys.append(cols)
        elif m.group(6):
            ref = f"{unquote(m.group(6))}.{unquote(m.group(7))}"
            table.foreign_keys.append(
                ForeignKey(name, cols, ref, tuple(split_idents(m.group(8) or "")))
            )
    for m in _UNIQUE_INDEX_RE.finditer(post_data_sql):
        key = f"{unquote(m.group(1))}.{unquote(m.group(2))}"
        table = schema.tables.get(key)
        if table is not None:
            cols = tuple(split_idents(m.group(3)))
            if cols not in table.unique_keys:
                table.unique_keys.append(cols)


def parse_data_section(
    lines: IO[bytes],
    on_block: Callable[[CopyBlock, Iterator[bytes]], None],
) -> DataSection:
    """Walk pg_restore's plain data section; ``on_block`` consumes each block's rows."""
    found = DataSection()
    for raw in lines:
        line = raw.rstrip(b"\n").decode("utf-8", "replace")
        m = _COPY_RE.match(line)
        if m:
            block = CopyBlock(unquote(m.group(1)), unquote(m.group(2)), split_idents(m.group(3)))
            rows = _rows_until_end(lines)
            on_block(block, rows)
            for _ in rows:  # whatever the consumer left
                pass
            continue
        s = _SETVAL_RE.match(line)
        if s:
            found.sequences.append(
                (s.group(1).replace("''", "'"), int(s.group(2)), s.group(3) == "true")
            )
        elif line.startswith(("SELECT pg_catalog.lo_", "BEGIN;", "COMMIT;")):
            found.skipped.append(line[:60])
    return found


def _rows_until_end(lines: IO[bytes]) -> Iterator[bytes]:
    for raw in lines:
        if raw == b"\\.\n" or raw == b"\\.":
            return
        yield raw
