"""The chart of ``drkit drill --report-dir`` through the real CLI: a real backup and two
real drills, the second with the first in its trend."""

from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image

from drkit.drill.chart import CHART_NAME
from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget


def test_drill_report_dir_embeds_a_png_chart_of_rto_and_rpo(
    database: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    pg_server: PgServer,
    run_drkit: DrkitRunner,
    tmp_path: Path,
) -> None:
    name, url = database
    pg_server.query(name, "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1), (2)")
    policy_dir = make_policy("prod", url, file_repo, objectives={"rpo": "1h", "rto": "30m"})
    run_drkit("backup", "prod", policy_dir=policy_dir, check=True)
    first = tmp_path / "first"
    run_drkit("drill", "prod", "--report-dir", str(first), policy_dir=policy_dir, check=True)
    second = tmp_path / "second"
    run_drkit("drill", "prod", "--report-dir", str(second), policy_dir=policy_dir, check=True)

    first_id = json.loads((first / "report.json").read_text())["id"]
    assert first_id in (second / "report.md").read_text()  # the trend holds the first drill
    for directory in (first, second):
        chart = directory / CHART_NAME
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{chart} is not a PNG"
        with Image.open(chart) as image:
            image.verify()
        with Image.open(chart) as image:
            assert image.size[0] >= 800 and image.size[1] >= 400
        markdown = (directory / "report.md").read_text()
        (link,) = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", markdown)
        assert (directory / link).resolve() == chart.resolve()
        assert json.loads((directory / "report.json").read_text())["verdict"] == "PASS"
