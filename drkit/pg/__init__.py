"""PostgreSQL as drkit runs and reaches it.

This is the package's face: callers outside it import from here.  Inside:

- :mod:`.server`: every server drkit runs (start, wait, stop, inspect) and their OS user;
  :mod:`.datadir`: the guard of the data directories root fills for that user;
- :mod:`.conninfo` (connection strings as libpq reads them, never a secret in a message),
  :mod:`.connect` (a connection, its errors in one line) and :mod:`.identity` (which
  server a connection reached, by its own word);
- :mod:`.binaries` (which PostgreSQL programs) and :mod:`.process` (streaming children);
- :mod:`.pgrestore` (every ``pg_restore`` command line) and :mod:`.archive` (custom-format
  archives' data offsets);
- :mod:`.tables` (listing and counting tables), :mod:`.builddb` (building a database
  aside, then swapping it in) and :mod:`.urlshape` (a connection url's shape, checked
  without a driver).

The servers and the data-directory guard load with the face, and load no database
driver; every other name is loaded on first use (:func:`drkit.lazy_face`), so that
importing any ``drkit.pg`` module stays free of psycopg until a connection is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drkit import lazy_face
from drkit.pg.datadir import DIRECTORY_FLAGS as DIRECTORY_FLAGS
from drkit.pg.datadir import Owner as Owner
from drkit.pg.datadir import claim_data_directory as claim_data_directory
from drkit.pg.datadir import guard_data_directory as guard_data_directory
from drkit.pg.datadir import scratch_directory as scratch_directory
from drkit.pg.server import LocalCluster as LocalCluster
from drkit.pg.server import PostgresServer as PostgresServer
from drkit.pg.server import chown_tree as chown_tree
from drkit.pg.server import cluster_os_user as cluster_os_user
from drkit.pg.server import free_port as free_port
from drkit.pg.server import postmaster_running as postmaster_running
from drkit.pg.server import run_as as run_as

if TYPE_CHECKING:
    from drkit.pg.archive import OffsetFinder as OffsetFinder
    from drkit.pg.archive import set_data_offsets as set_data_offsets
    from drkit.pg.binaries import binary_major as binary_major
    from drkit.pg.binaries import find_binary as find_binary
    from drkit.pg.binaries import find_client as find_client
    from drkit.pg.binaries import find_server as find_server
    from drkit.pg.binaries import installs as installs
    from drkit.pg.binaries import logical_target_major as logical_target_major
    from drkit.pg.builddb import build_aside as build_aside
    from drkit.pg.builddb import clean_leftovers as clean_leftovers
    from drkit.pg.builddb import prove_privileges as prove_privileges
    from drkit.pg.connect import connect as connect
    from drkit.pg.connect import first_line as first_line
    from drkit.pg.connect import is_superuser as is_superuser
    from drkit.pg.connect import server_major as server_major
    from drkit.pg.connect import server_version as server_version
    from drkit.pg.conninfo import Resolved as Resolved
    from drkit.pg.conninfo import describe as describe
    from drkit.pg.conninfo import for_subprocess as for_subprocess
    from drkit.pg.conninfo import parse as parse
    from drkit.pg.conninfo import resolve as resolve
    from drkit.pg.conninfo import with_dbname as with_dbname
    from drkit.pg.identity import Identity as Identity
    from drkit.pg.identity import identity as identity
    from drkit.pg.identity import system_identifier as system_identifier
    from drkit.pg.pgrestore import LARGE_OBJECT_KINDS as LARGE_OBJECT_KINDS
    from drkit.pg.pgrestore import SECRET_KINDS as SECRET_KINDS
    from drkit.pg.pgrestore import list_file as list_file
    from drkit.pg.pgrestore import read_toc as read_toc
    from drkit.pg.pgrestore import restore_args as restore_args
    from drkit.pg.pgrestore import restore_file as restore_file
    from drkit.pg.pgrestore import script_args as script_args
    from drkit.pg.pgrestore import stream_toc as stream_toc
    from drkit.pg.pgrestore import system_acl_entries as system_acl_entries
    from drkit.pg.pgrestore import toc_args as toc_args
    from drkit.pg.process import PIPE_SIZE as PIPE_SIZE
    from drkit.pg.process import PipeProcess as PipeProcess
    from drkit.pg.process import widen_pipe as widen_pipe
    from drkit.pg.tables import count_rows as count_rows
    from drkit.pg.tables import count_rows_concurrently as count_rows_concurrently
    from drkit.pg.tables import dump_size_estimate as dump_size_estimate
    from drkit.pg.tables import list_tables as list_tables
    from drkit.pg.tables import split_key as split_key
    from drkit.pg.tables import table_key as table_key
    from drkit.pg.urlshape import check_url as check_url

#: the names loaded on first use, by the module of this package that defines them
lazy_face(
    __name__,
    {
        "archive": "OffsetFinder set_data_offsets",
        "binaries": (
            "binary_major find_binary find_client find_server installs logical_target_major"
        ),
        "builddb": "build_aside clean_leftovers prove_privileges",
        "connect": "connect first_line is_superuser server_major server_version",
        "conninfo": "Resolved describe for_subprocess parse resolve with_dbname",
        "identity": "Identity identity system_identifier",
        "pgrestore": (
            "LARGE_OBJECT_KINDS SECRET_KINDS list_file read_toc restore_args restore_file "
            "script_args stream_toc system_acl_entries toc_args"
        ),
        "process": "PIPE_SIZE PipeProcess widen_pipe",
        "tables": (
            "count_rows count_rows_concurrently dump_size_estimate list_tables split_key table_key"
        ),
        "urlshape": "check_url",
    },
)
