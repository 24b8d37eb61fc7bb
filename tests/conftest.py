"""Test harness: real PostgreSQL and a real S3 API over HTTP (see ARCHITECTURE.md, Tests).

The fixtures load as pytest plugins, one module per concern, and test modules import
the helper classes (``PgServer``, ``RepoTarget``, ``DrkitRunner``...) from those modules,
never from this file:

- ``tests/fix_pg.py``: PostgreSQL, in order ``$DRKIT_TEST_DSN``; a testcontainers
  PostgreSQL where a Docker engine answers; else a throwaway cluster from the local
  binaries (as the ``postgres`` OS user when the tests run as root).  WAL and PITR tests
  need a cluster whose configuration they control and always use ``local_cluster``;
- ``tests/fix_s3.py``: S3, MinIO via testcontainers where Docker answers, else moto's
  standalone server on 127.0.0.1, and the repositories over file:// and S3;
- ``tests/fix_cli.py``: policies, the ``drkit`` command line, age keys.

Builders of policies, manifests and pg_wal directories are in ``tests/builders.py``.
Nothing here skips when something is missing: a fixture that cannot get its server
fails with a message saying what to install.
"""

from __future__ import annotations

import signal

import pytest

pytest_plugins = ["tests.fix_pg", "tests.fix_s3", "tests.fix_cli"]


def pytest_configure(config: pytest.Config) -> None:
    """A run started in the background (``cmd &`` in a script, ``nohup``) inherits SIGINT
    ignored, and so would every drkit the tests start: the tests that interrupt drkit
    with SIGINT would see it run to the end.  Handled here, the signal reaches the
    processes the tests start with its default action, however this run was started."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
