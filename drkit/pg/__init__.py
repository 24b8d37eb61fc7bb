"""PostgreSQL as drkit runs and reaches it.

This face names the servers drkit runs and their OS user (:mod:`.server`), and the
guard of the data directories root fills for that user (:mod:`.datadir`): the CLI,
backup, restore, drills, the demo, the tests and the benchmarks import them from here.  It loads
no database driver, so importing any ``drkit.pg`` module stays cheap; the modules that
do are imported by name where they are used:

- :mod:`.conninfo` (connection strings as libpq reads them) and :mod:`.connect`;
- :mod:`.binaries` (which PostgreSQL programs) and :mod:`.process` (streaming children);
- :mod:`.pgrestore` (every ``pg_restore`` command line) and :mod:`.archive` (custom-format
  archives' data offsets);
- :mod:`.tables` (listing and counting tables) and :mod:`.builddb` (building a database
  aside, then swapping it in).
"""

from __future__ import annotations

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
from drkit.pg.server import run_as as run_as
