"""The status page's rendering (no server): every value escaped, no secret shown, a
failed job with its error line, and the whole page from one snapshot."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from drkit.config import load_policy
from drkit.schedule.endpoints import job_status
from drkit.schedule.jobs import JobState
from drkit.schedule.metrics import CatalogSnapshot, MetricsView
from drkit.schedule.page import DrillCharts, render_page
from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_s3 import RepoTarget

SECRET = "s3cr3t-Pa55word"  # what must never appear
HOSTILE = "<script>alert(1)</script>"


def test_page_escapes_everything_masks_urls_and_names_the_failed_job(
    file_repo: RepoTarget, make_policy: PolicyWriter
) -> None:
    policy_dir = make_policy("prod", f"postgresql://app:{SECRET}@db/app", file_repo)
    policy = load_policy("prod", policy_dir)
    now = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    failed = JobState("prod", "logical_backup", "0 2 * * *", "UTC", timedelta(days=1), now)
    failed.last_status = "failure"
    failed.last_started = now - timedelta(hours=1)
    # an error line as a job could raise it: a URL with its password, and markup
    failed.last_error = f"connection to postgresql://app:{SECRET}@db/app failed {HOSTILE}"
    catalog = CatalogSnapshot("prod", now, error=f"listing s3://b/{HOSTILE} failed")
    view = MetricsView([policy], [failed], {"prod": catalog}, {"prod": True}, now)
    status = job_status([failed], {}, now, now)

    page = render_page(view, status, DrillCharts())

    assert SECRET not in page
    assert "<script" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # error, problem, catalog
    assert re.search(r'id="overall">attention<', page)
    row = re.search(r"<tr><td>logical_backup</td>.*?</tr>", page)
    assert row and 'class="failing"' in row.group(0)
    assert "postgresql://app:***@db/app failed" in row.group(0)
    assert "2026-12-08T02:00:00Z" in row.group(0)  # the next run
    assert "No backup is stored." in page and "No drill report is stored yet." in page


def test_page_does_not_load_or_run_anything(
    file_repo: RepoTarget, make_policy: PolicyWriter, tmp_path: Path
) -> None:
    policy = load_policy("prod", make_policy("prod", "postgresql://app@db/app", file_repo))
    now = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    view = MetricsView([policy], [], {}, {}, now)
    page = render_page(view, job_status([], {}, now, now), DrillCharts())
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "The repository catalog has not been read yet." in page


def test_an_empty_or_missing_token_file_refuses_to_start(
    file_repo: RepoTarget, make_policy: PolicyWriter, run_drkit: DrkitRunner, tmp_path: Path
) -> None:
    """A daemon asked for a token never starts open because the file held none."""
    policy_dir = make_policy("prod", "postgresql://app@db/app", file_repo)
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    for path in (empty, tmp_path / "absent"):
        done = run_drkit(
            "schedule", "run", "prod", "--token-file", str(path), policy_dir=policy_dir
        )
        assert done.code == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and str(path) in done.stderr


def test_page_shows_the_streaming_slot_lag(
    file_repo: RepoTarget, make_policy: PolicyWriter
) -> None:
    """With wal_streaming, the page shows the slot's lag and marks an inactive slot."""
    from drkit.restore import WalReach
    from drkit.wal import SlotLag

    policy_dir = make_policy(
        "prod", "postgresql://app@db/app", file_repo, wal_archiving=True, wal_streaming=True
    )
    policy = load_policy("prod", policy_dir)
    now = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    catalog = CatalogSnapshot("prod", now, wal=WalReach())
    catalog.slot = SlotLag("drkit_prod", True, True, False, 48 * 1024 * 1024, 1800.0)
    view = MetricsView([policy], [], {"prod": catalog}, {"prod": True}, now)
    page = render_page(view, job_status([], {}, now, now), DrillCharts())
    line = re.search(r"<li[^>]*>streaming slot drkit_prod: .*?</li>", page)
    assert line, page
    assert 'class="no"' in line.group(0) and "INACTIVE" in line.group(0)
    assert "48.0 MiB" in line.group(0) or "48 MiB" in line.group(0), line.group(0)
