"""A physical drill passes on an ordinary cluster.

An ordinary cluster has more than the application's database: an empty ``postgres``,
another empty database, the template databases, and the policy connects as a superuser.
Row counts are compared wherever there are rows; an empty database is a PASS (zero
tables, zero rows), never NOT_RUN; the policy's SQL check runs in the policy's own
database, not in whichever database sorts first.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from drkit.pg import chown_tree, cluster_os_user
from tests.fix_cli import DrkitRunner, checks_by_name, drill
from tests.fix_pg import assert_scratch_gone
from tests.wal_support import Archived, archived_cluster, file_repo_block, shared_dir

pytestmark = pytest.mark.slow


@pytest.fixture
def archived() -> Iterator[Archived]:
    with shared_dir() as root, archived_cluster(root, file_repo_block(root)) as arch:
        yield arch


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="drkit-test-pdrill-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_physical_drill_of_a_cluster_with_empty_databases_passes(
    archived: Archived, run_drkit: DrkitRunner, scratch_root: Path
) -> None:
    arch = archived
    arch.execute("CREATE DATABASE shop")
    arch.execute("CREATE DATABASE extra")  # empty, and sorts before shop
    shop = arch.dsn("shop")
    arch.execute("CREATE TABLE item (id int PRIMARY KEY)", shop)
    arch.execute("INSERT INTO item SELECT generate_series(1, 40)", shop)
    superuser = arch.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", shop)
    assert superuser == [(True,)]
    doc = {
        "environment": "prod",
        "database": {"url": shop},
        "repository": arch.repo_block,
        "wal_archiving": True,
        "objectives": {"rpo": "1h", "rto": "30m"},
        "drill": {
            "checks": {
                "row_counts": True,
                "sql": [{"name": "items", "query": "SELECT count(*) = 40 FROM item"}],
            }
        },
    }
    (arch.policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    chown_tree(arch.policy_dir, cluster_os_user())
    backup = run_drkit("backup", "prod", "--physical", "--json", policy_dir=arch.policy_dir)
    assert backup.code == 0, backup.stderr

    done = drill(run_drkit, arch.policy_dir, scratch_root, "--json", timeout=600)
    report = done.json()
    checks = checks_by_name(report)
    not_passed = {c["name"]: c["status"] for c in report["checks"] if c["status"] != "PASS"}
    assert done.code == 0, not_passed
    assert report["verdict"] == "PASS"
    item = checks["rows shop:public.item"]
    assert (item["status"], item["expected"], item["observed"]) == ("PASS", 40, 40)
    for empty in ("postgres", "extra"):
        assert checks[f"rows {empty}"]["status"] == "PASS"
        assert checks[f"rows {empty}"]["observed"] == "0 tables, 0 rows counted"
    assert checks["sql: items"]["status"] == "PASS" and checks["sql: items"]["database"] == "shop"
    assert not any(name.startswith(("rows template", "connect template")) for name in checks)
    assert_scratch_gone(scratch_root)
