"""The benchmark runner's own arithmetic and report (``python -m benchmarks``).

No benchmark runs here and nothing asserts a time: these check that the figures the
report prints are the ones measured — a goal missed at one size is not hidden by
another, a missing peer is not given a ratio, and a peak RSS is the measured process's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmarks.__main__ import rows_for
from benchmarks.measure import measured
from benchmarks.report import Goal, fit_line, write_report


def test_peak_rss_is_the_child_s_own_not_the_forking_process_s() -> None:
    ballast = bytearray(300 * 2**20)  # this process is now > 300 MB resident
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    sample, out = measured(["sh", "-c", "echo hi"])
    assert out == "hi\n"
    assert 0 < sample.rss_kib < 50 * 1024, sample  # sh is a few MB, not our 300


def test_a_straight_line_fits_exactly_and_a_flat_one_has_no_slope() -> None:
    fit = fit_line([0.25, 1, 4], [3 + 10 * x for x in (0.25, 1, 4)])
    assert math.isclose(fit.a, 3) and math.isclose(fit.b, 10) and math.isclose(fit.r2, 1)
    assert fit_line([0.25, 1, 4], [5, 5, 5]).b == 0
    assert math.isnan(fit_line([1], [2]).r2)


def test_goals_compare_in_the_right_direction() -> None:
    assert Goal(1.10, at_most=True).met(1.10) and not Goal(1.10, at_most=True).met(1.11)
    assert Goal(1.5, at_most=False).met(1.5) and not Goal(1.5, at_most=False).met(1.49)


def test_sizes_map_to_rows_that_grow_with_them() -> None:
    assert rows_for(0.001) == 2_000
    assert rows_for(0.25) < rows_for(1) < rows_for(4)
    assert 4_000_000 < rows_for(1) < 6_500_000


def results(backup_s: list[float], peer_s: list[float]) -> dict[str, Any]:
    """Three sizes; drkit's file:// backup at ``backup_s`` seconds, the peer's at
    ``peer_s``; drkit's peak RSS 100 MB everywhere (the S3 run)."""
    sizes = []
    for i, gb in enumerate((0.25, 1.0, 4.0)):
        logical = {
            "drkit_file": [[backup_s[i], 90_000]] * 3,
            "pgdump_zstd": [[peer_s[i], 20_000]] * 3,
            "drkit_s3": [[backup_s[i] * 1.1, 97_000]] * 3,
            "drkit_restore_j2": [[peer_s[i], 80_000]] * 3,
            "pg_restore_j2": [[peer_s[i], 10_000]] * 3,
        }
        sizes.append(
            {"target_gb": gb, "rows": rows_for(gb), "database_bytes": gb * 1e9, "logical": logical}
        )
    return {
        "command": "python -m benchmarks",
        "quick": False,
        "rounds": 3,
        "started_utc": "x",
        "finished_utc": "y",
        "machine": {"nproc": "2"},
        "sizes": sizes,
        "skipped": {},
        "wal": {
            "segments": 32,
            "rates": {"drkit file://": [20.0, 20.0, 12.0], "pgBackRest async": [10.0] * 3},
            "missing": {"barman-cloud-wal-archive": "not installed"},
        },
        "breakdown": {
            "database_bytes": 1e9,
            "segment": {"zstd level 3 (1 thread)": 0.25, "drkit wal-push (end to end)": 1.0},
            "backup": {"backup: drkit backup (end to end)": 2.0},
            "restore": {"restore: drkit restore --jobs 2 (end to end)": 4.0},
        },
    }


def row(report: str, starts: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith(f"| {starts}"))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


def test_report_marks_a_goal_missed_at_one_size_and_draws_every_plot(tmp_path: Path) -> None:
    # 1.05x and 1.08x meet the 1.10 goal; 1.2x at 4 GB does not
    doc = results([10.5, 43.2, 192.0], [10.0, 40.0, 160.0])
    json.dumps(doc)  # what the runner saves must be JSON
    report = write_report(doc, tmp_path).read_text()

    backup = row(report, "`drkit backup` file://")
    assert backup[1] == "1.05× @ 0.25 GB, 1.08× @ 1.00 GB, 1.20× @ 4.00 GB"
    assert backup[3] == "**no**"
    assert row(report, "`drkit restore --jobs 2`")[3] == "yes"
    rss = row(report, "peak RSS of `drkit backup` to S3")
    assert "99 MB" in rss[1] and rss[3] == "yes"
    # the median WAL ratio (2.0) meets 1.5, one round (1.2) does not
    wal = row(report, "WAL backlog drain")
    assert wal[1].startswith("2.00×") and wal[3] == "**no**"
    barman = row(report, "WAL drain to S3")
    assert barman[1].startswith("not measured") and barman[3] == "—"
    assert "time = a + b·size" in report and "python -m benchmarks" in report
    assert row(report, "zstd level 3 (1 thread)") == ["zstd level 3 (1 thread)", "0.250", "25%"]
    for name in ("backup", "restore"):
        png = tmp_path / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{name}]({name}.png)" in report
    assert not (tmp_path / "sanitize.png").exists()  # nothing measured, nothing drawn


def test_wal_s3_goal_missed_in_one_round_is_not_hidden_by_the_median() -> None:
    from benchmarks.bench_wal import Drained
    from benchmarks.bench_wal_s3 import DRKIT, PGBACKREST, Run, markdown, summary

    def run(rate: float) -> Run:
        return Run(32, rate, rate / 2, 0.1, 0.05, 0.02, 32, 1.0)

    # rounds at 2x, 2x and 1.4x: the median ratio is 2, the goal still fails
    runs = {DRKIT: [run(4), run(4), run(2.8)], PGBACKREST: [run(2), run(2), run(2)]}
    report = summary(runs)
    assert report["ratio_per_round"] == [2, 2, 1.4]
    assert report["medians"][DRKIT]["first_to_last"] == 4
    assert not report["goal_met_every_round"] and not report["goal_met_every_round_from_switch_on"]
    full = {
        **report,
        "rounds": {name: [r.__dict__ for r in rs] for name, rs in runs.items()},
        "segments": 32,
        "load_before": [1, 1, 1],
        "load_after": [2, 2, 2],
        "machine": {"nproc": 2},
        "pgbackrest": "pgBackRest 2.45",
    }
    text = markdown(full, "python -m benchmarks.bench_wal_s3")
    assert "| 3 | 2.80 | 2.00 | 1.40x | **no** |" in text
    assert "in every round (first to last archived): **no**" in text
    # 32 segments, the first archived at 1 s, the last at 4.1 s: 31 segments in 3.1 s
    assert math.isclose(Drained(32, 1.0, 4.1).first_to_last, 10)
