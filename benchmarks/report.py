"""``benchmarks/results/REPORT.md`` and its PNG plots from the results of one run.

The results are the JSON document ``python -m benchmarks`` writes beside the report
(``results.json``); ``python -m benchmarks --report-only results.json`` draws them again.
Figures are medians over the rounds of one invocation; ratios compare drkit with the
peer measured in the same invocation, round by round interleaved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.measure import median

GB = 1e9


def megabytes(kib: int) -> float:
    """KiB (as ``ru_maxrss`` counts) to MB of 10⁶ bytes, the unit of the goals."""
    return kib * 1024 / 1e6


@dataclass(frozen=True)
class Goal:
    """A ratio goal: ``figure <= limit`` (``at_most``) or ``figure >= limit``."""

    limit: float
    at_most: bool

    def met(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit

    def __str__(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.limit:g}"


@dataclass(frozen=True)
class Row:
    measure: str
    figure: str
    goal: str
    met: bool | None  # None: no goal, or nothing to compare with

    def cells(self) -> list[str]:
        verdict = "—" if self.met is None else ("yes" if self.met else "**no**")
        return [self.measure, self.figure, self.goal, verdict]


@dataclass(frozen=True)
class Fit:
    """time = a + b·size (size in GB), least squares, with its R²."""

    a: float
    b: float
    r2: float


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> Fit:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if n < 2 or sxx == 0:
        return Fit(my, 0.0, math.nan)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    return Fit(a, b, 1 - ss_res / ss_tot if ss_tot else 1.0)


# --- the curves: which series each plot shows -------------------------------------------

#: plot name → (suite, series, legend label); drkit first, then its peers
CURVES: dict[str, list[tuple[str, str, str]]] = {
    "backup": [
        ("logical", "drkit_file", "drkit backup → file://"),
        ("logical", "drkit_s3", "drkit backup → S3 (moto)"),
        ("logical", "pgdump_zstd", "pg_dump -Fc -Z0 | zstd -3 -T2"),
        ("logical", "pgdump_fc", "pg_dump -Fc"),
    ],
    "restore": [
        ("logical", "drkit_restore_j2", "drkit restore --jobs 2"),
        ("logical", "pg_restore_j2", "pg_restore -j 2 (local file)"),
    ],
    "verify": [
        ("logical", "drkit_verify", "drkit verify (file://)"),
        ("logical", "verify_peer", "sha256sum + zstd -t (peer's file)"),
    ],
    "sanitize": [
        ("sanitize", "drkit_sanitize", "drkit sanitize --jobs 2"),
        ("sanitize", "pg_dump_restore", "pg_dump -Fc | pg_restore (unmasked)"),
    ],
}


def samples(size: dict[str, Any], suite: str, series: str) -> list[tuple[float, int]]:
    return [(float(s), int(k)) for s, k in size.get(suite, {}).get(series, [])]


def curve(
    results: dict[str, Any], suite: str, series: str
) -> tuple[list[float], list[list[float]], list[float]]:
    """(sizes in GB, seconds per round at each size, peak RSS MB at each size)."""
    xs: list[float] = []
    times: list[list[float]] = []
    peaks: list[float] = []
    for size in results["sizes"]:
        runs = samples(size, suite, series)
        if not runs:
            continue
        xs.append(size["database_bytes"] / GB)
        times.append([s for s, _ in runs])
        peaks.append(megabytes(max(k for _, k in runs)))
    return xs, times, peaks


def plot(results: dict[str, Any], name: str, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [(label, *curve(results, suite, series)) for suite, series, label in CURVES[name]]
    lines = [line for line in lines if line[1]]
    if not lines:
        return None
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
    markers = "osD^v"
    for i, (label, xs, times, peaks) in enumerate(lines):
        med = [median(t) for t in times]
        low = [m - min(t) for m, t in zip(med, times, strict=True)]
        high = [max(t) - m for m, t in zip(med, times, strict=True)]
        fit = fit_line(xs, med)
        style = {"marker": markers[i % len(markers)], "linestyle": "-" if i == 0 else "--"}
        if label.startswith("drkit"):
            style["linestyle"] = "-"
        ax_t.errorbar(
            xs, med, yerr=[low, high], capsize=3, label=f"{label} (R² {fit.r2:.3f})", **style
        )
        ax_m.plot(xs, peaks, label=label, **style)
    ax_t.set_title(f"{name}: wall time (median, whiskers min–max)")
    ax_t.set_xlabel("database size (GB, pg_database_size)")
    ax_t.set_ylabel("wall time (s)")
    ax_m.set_title(f"{name}: peak RSS of the tool's process")
    ax_m.set_xlabel("database size (GB, pg_database_size)")
    ax_m.set_ylabel("peak RSS (MB)")
    for ax in (ax_t, ax_m):
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- the ratio table ---------------------------------------------------------------------


def per_size_ratio(
    results: dict[str, Any], suite: str, num: str, den: str
) -> list[tuple[float, float]]:
    """(size GB, median(num) / median(den)) at each size that measured both."""
    out = []
    for size in results["sizes"]:
        a, b = samples(size, suite, num), samples(size, suite, den)
        if a and b:
            out.append(
                (size["database_bytes"] / GB, median([s for s, _ in a]) / median([s for s, _ in b]))
            )
    return out


def ratio_row(
    measure: str, pairs: list[tuple[float, float]], goal: Goal | None, unit: str = "×"
) -> Row:
    if not pairs:
        return Row(measure, "not measured", f"{goal}{unit}" if goal else "—", None)
    figure = ", ".join(f"{v:.2f}{unit} @ {gb:.2f} GB" for gb, v in pairs)
    met = all(goal.met(v) for _, v in pairs) if goal else None
    return Row(measure, figure, f"{goal}{unit}" if goal else "—", met)


def logical_rows(results: dict[str, Any]) -> list[Row]:
    if "logical" in results.get("skipped", {}):
        return []
    rows = [
        ratio_row(
            "`drkit backup` file:// / `pg_dump -Fc -Z0 | zstd -3 -T2`",
            per_size_ratio(results, "logical", "drkit_file", "pgdump_zstd"),
            Goal(1.10, True),
        ),
        ratio_row(
            "`drkit restore --jobs 2` / `pg_restore -j 2`",
            per_size_ratio(results, "logical", "drkit_restore_j2", "pg_restore_j2"),
            Goal(1.10, True),
        ),
        ratio_row(
            "`drkit backup` S3 (moto) / file://",
            per_size_ratio(results, "logical", "drkit_s3", "drkit_file"),
            Goal(1.3, True),
        ),
        ratio_row(
            "`drkit verify` / `sha256sum` + `zstd -t` of the peer's dump",
            per_size_ratio(results, "logical", "drkit_verify", "verify_peer"),
            None,
        ),
    ]
    # the same work as a call in a running Python (the scheduler daemon's way): what
    # is left once the command's process start and imports are taken away
    for series, peer, what, peer_label in (
        ("drkit_backup_in_process", "pgdump_zstd", "backup", "pg_dump -Fc -Z0 | zstd -3 -T2"),
        ("drkit_restore_in_process", "pg_restore_j2", "restore --jobs 2", "pg_restore -j 2"),
    ):
        pairs = per_size_ratio(results, "logical", series, peer)
        if pairs:
            measure = f"`drkit {what}` in a running Python (as the scheduler runs it)"
            rows.append(ratio_row(f"{measure} / `{peer_label}`", pairs, None))
    xs, _, peaks = curve(results, "logical", "drkit_s3")
    if peaks:
        spread = (max(peaks) - min(peaks)) / min(peaks)
        figure = ", ".join(f"{p:.0f} MB @ {x:.2f} GB" for x, p in zip(xs, peaks, strict=True))
        rows.append(
            Row(
                "peak RSS of `drkit backup` to S3 (spread across sizes)",
                f"{figure} (spread {spread:.0%})",
                "≤ 120 MB, flat (spread ≤ 20%)",
                max(peaks) <= 120 and spread <= 0.20,
            )
        )
    return rows


def sanitize_rows(results: dict[str, Any]) -> list[Row]:
    if "sanitize" in results.get("skipped", {}):
        return []
    rows = [
        ratio_row(
            "`drkit sanitize` / unmasked `pg_dump | pg_restore`",
            per_size_ratio(results, "sanitize", "drkit_sanitize", "pg_dump_restore"),
            None,
        )
    ]
    pairs = []
    for size in results["sizes"]:
        s = size.get("sanitize", {})
        if s.get("pynonymizer_rows_per_s"):
            pairs.append(
                (
                    size["database_bytes"] / GB,
                    median(s["drkit_mask_invocation_rows_per_s"])
                    / median(s["pynonymizer_rows_per_s"]),
                )
            )
    row = ratio_row(
        "masking throughput (users/s, whole invocation) / pynonymizer", pairs, Goal(10, False)
    )
    if not pairs:
        reason = results.get("skipped", {}).get("pynonymizer", "did not run")
        row = Row(row.measure, f"not measured (pynonymizer {reason})", row.goal, None)
    return [*rows, row]


def wal_rows(results: dict[str, Any]) -> list[Row]:
    wal = results.get("wal")
    if not wal:
        return []
    rates: dict[str, list[float]] = wal["rates"]
    rows = []
    for measure, num, den, goal in (
        (
            "WAL backlog drain, drkit file:// / pgBackRest async (segments/s)",
            "drkit file://",
            "pgBackRest async",
            Goal(1.5, False),
        ),
        (
            "WAL drain to S3 (moto), drkit / barman-cloud-wal-archive",
            "drkit s3 (moto)",
            "barman-cloud-wal-archive",
            Goal(10, False),
        ),
    ):
        if num in rates and den in rates:
            each = [a / b for a, b in zip(rates[num], rates[den], strict=True)]
            value = median(rates[num]) / median(rates[den])
            figure = (
                f"{value:.2f}× ({median(rates[num]):.1f} vs {median(rates[den]):.1f} seg/s); "
                f"per round {', '.join(f'{r:.2f}' for r in each)}"
            )
            rows.append(
                Row(measure, figure, f"{goal}× in every round", all(goal.met(r) for r in each))
            )
        else:
            missing = wal.get("missing", {}).get(den, "did not run")
            rows.append(Row(measure, f"not measured ({den} {missing})", f"{goal}×", None))
    return rows


def physical_rows(results: dict[str, Any]) -> list[Row]:
    phys = results.get("physical")
    if not phys:
        return []
    sec = {k: median(v) for k, v in phys["seconds"].items()}
    gb = phys["database_bytes"] / GB
    return [
        ratio_row(
            "`drkit backup --physical` / `pgbackrest backup --type=full`",
            [(gb, sec["drkit backup --physical"] / sec["pgbackrest backup --type=full"])],
            Goal(1.2, True),
        ),
        ratio_row(
            "PITR `drkit restore --point-in-time` / `pgbackrest restore --type=time` + replay",
            [
                (
                    gb,
                    sec["drkit restore --point-in-time"]
                    / sec["pgbackrest restore --type=time (+ replay)"],
                )
            ],
            Goal(1.3, True),
        ),
    ]


def drill_rows(results: dict[str, Any]) -> list[Row]:
    drill = results.get("drill")
    if not drill:
        return []
    share = drill["overhead_share_of_restore"]
    gb = drill["database_bytes"] / GB
    return [
        Row(
            "drill overhead (wall − fetch − pg_restore) / the restore itself",
            f"{share:.0%} @ {gb:.2f} GB ({drill['drill_overhead_seconds']:.1f} s of "
            f"{drill['drill_restore_itself_seconds']:.1f} s)",
            "≤ 15%",
            share <= 0.15,
        )
    ]


def walsearch_rows(results: dict[str, Any]) -> list[Row]:
    """``drkit wal-search`` over about 1 GB of archived WAL (issue 24: under a minute)."""
    search = results.get("walsearch")
    if not search:
        return []
    seconds = search["median_seconds"]
    return [
        Row(
            "wal-search over archived WAL (one table, every segment decoded)",
            f"{seconds:.1f} s @ {search['wal_bytes'] / GB:.2f} GB ({search['segments']} segments)",
            "< 60 s @ 1 GB",
            seconds < 60,
        )
    ]


def startup_rows(results: dict[str, Any]) -> list[Row]:
    """drkit's start (issue 22: ``--version`` and a backup's first pg_dump within 0.15 s)."""
    startup = results.get("startup")
    if not startup:
        return []
    medians, ratios = startup["medians"], startup["ratios_to_python_c_pass"]
    rows = []
    for series, measure, goal in (
        ("this: drkit --version", "`drkit --version`", 0.15),
        ("this: drkit --help", "`drkit --help`", None),
        ("this: drkit backup, start to pg_dump", "`drkit backup`: process start to pg_dump", 0.15),
    ):
        if series in medians:
            figure = f"{medians[series]:.3f} s ({ratios[series]:.2f}× `python -c pass`)"
            met = None if goal is None else medians[series] <= goal
            rows.append(Row(measure, figure, "—" if goal is None else f"≤ {goal:g} s", met))
    return rows


# --- the document -------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return out


def linearity_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, lines in CURVES.items():
        for suite, series, label in lines:
            xs, times, peaks = curve(results, suite, series)
            if not xs:
                continue
            fit = fit_line(xs, [median(t) for t in times])
            spread = (max(peaks) - min(peaks)) / min(peaks) if min(peaks) else math.nan
            rows.append(
                [
                    name,
                    label,
                    f"{fit.a:.2f}",
                    f"{fit.b:.1f}",
                    "n/a" if math.isnan(fit.r2) else f"{fit.r2:.3f}",
                    f"{min(peaks):.0f}–{max(peaks):.0f}",
                    f"{spread:.0%}",
                ]
            )
    return rows


def peak_cell(kib: int) -> str:
    """A peak RSS for the medians table; 0 is "not measured" (a call in the benchmark's
    own process)."""
    return f"{megabytes(kib):.0f}" if kib else "—"


def medians_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for size in results["sizes"]:
        for suite in ("logical", "sanitize"):
            for series, runs in size.get(suite, {}).items():
                if not runs or not isinstance(runs[0], list):
                    continue
                seconds = [float(r[0]) for r in runs]
                rows.append(
                    [
                        f"{size['database_bytes'] / GB:.3f}",
                        f"{size['rows']:,}",
                        series,
                        f"{median(seconds):.2f}",
                        ", ".join(f"{s:.2f}" for s in seconds),
                        peak_cell(max(int(r[1]) for r in runs)),
                    ]
                )
    return rows


def write_report(results: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    plots = [p for p in (plot(results, name, out) for name in CURVES) if p is not None]
    machine = results["machine"]
    lines = ["# drkit benchmark report", ""]
    if results.get("quick"):
        lines += [
            "> **Validation run at tiny sizes (`--quick`).** These figures check that the "
            "runner works end to end; they say nothing about drkit's speed at scale.",
            "",
        ]
    lines += [
        f"Produced by `{results['command']}` (from the repository root), started "
        f"{results['started_utc']}, finished {results.get('finished_utc', '(not finished)')}; every figure is the "
        f"median of {results['rounds']} rounds in this one invocation, drkit and its peer "
        "interleaved round by round.",
        "",
        "## Machine",
        "",
        *table(["fact", "value"], [[k, str(v)] for k, v in machine.items()]),
        "",
        "## Ratios against the peers",
        "",
    ]
    rows: list[Row] = []
    for part in (
        logical_rows,
        sanitize_rows,
        wal_rows,
        physical_rows,
        drill_rows,
        walsearch_rows,
        startup_rows,
    ):
        rows += part(results)
    lines += table(["measure", "figure (median ratio)", "goal", "met?"], [r.cells() for r in rows])
    skipped = results.get("skipped", {})
    if skipped:
        lines += ["", "Not run: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + "."]
    curves = linearity_rows(results)
    if curves:
        lines += curves_section(curves, plots, medians_rows(results))
    lines += ["", *extra_sections(results)]
    report = out / "REPORT.md"
    report.write_text("\n".join(lines))
    return report


def curves_section(
    curves: list[list[str]], plots: list[Path], medians: list[list[str]]
) -> list[str]:
    lines = [
        "",
        "## Cost curves",
        "",
        "Time fitted as `time = a + b·size` (least squares over the medians; size in GB as "
        "`pg_database_size` reports it). Peak RSS is that of the tool's own process "
        "(for drkit the Python process, not the pg_dump/pg_restore it runs; a pipeline's "
        "is the sum of its two processes); the spread is (max − min) / min across sizes.",
        "",
        *table(
            ["plot", "tool", "a (s)", "b (s/GB)", "R²", "peak RSS (MB)", "RSS spread"],
            curves,
        ),
        "",
    ]
    for path in plots:
        lines += [f"![{path.stem}]({path.name})", ""]
    lines += [
        "## Medians at each size",
        "",
        *table(
            ["size (GB)", "sample rows", "series", "median (s)", "rounds (s)", "peak RSS (MB)"],
            medians,
        ),
        "",
    ]
    return lines


def cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {cell(v)}" for k, v in value.items())
    return str(value)


def rounds_table(header: list[str], series: dict[str, list[float]], spec: str) -> list[str]:
    """One row a series: its name, its median and every round."""
    return table(
        header,
        [
            [k, format(median(v), spec), ", ".join(format(r, spec) for r in v)]
            for k, v in series.items()
        ],
    )


def breakdown_section(results: dict[str, Any]) -> list[str]:
    bd = results.get("breakdown")
    if not bd:
        return []
    lines = [
        "## Where the time goes",
        "",
        f"Each stage measured alone with the primitives drkit uses, beside the drkit command "
        f"end to end (database {bd['database_bytes'] / GB:.2f} GB; one real 16 MiB WAL "
        "segment). Stages that drkit overlaps (the row count runs while pg_dump streams) "
        'cost less together than their sum, so "the rest" is a lower bound of what is '
        "left to explain. Medians; share of the end-to-end time.",
        "",
    ]
    for part, title in (
        ("segment", "one WAL segment, `drkit wal-push`"),
        ("backup", "logical backup, file://"),
        ("restore", "logical restore, `--jobs 2`"),
    ):
        stages: dict[str, float] = bd[part]
        end = next(k for k in stages if "(end to end)" in k)
        lines += [f"**{title}**", ""]
        lines += table(
            ["stage", "median (s)", "share"],
            [
                [k, f"{v:.3f}", f"{v / stages[end]:.0%}" if stages[end] else "—"]
                for k, v in stages.items()
            ],
        )
        lines.append("")
    if "backup_zstd_1_thread" in bd:
        lines += [
            f"(zstd of the dump with one thread instead of two: {bd['backup_zstd_1_thread']:.3f} s.)",
            "",
        ]
    return lines


def extra_sections(results: dict[str, Any]) -> list[str]:
    lines: list[str] = breakdown_section(results)
    wal = results.get("wal")
    if wal:
        lines += [
            "## WAL archiving",
            "",
            f"Backlog of at least {wal['segments']} segments drained by PostgreSQL's archiver "
            "(archiving switched on with the backlog waiting); segments per second, per round:",
            "",
            *rounds_table(["archiver", "median seg/s", "rounds"], wal["rates"], ".1f"),
            "",
        ]
    phys = results.get("physical")
    if phys:
        lines += [
            "## Physical backup and PITR",
            "",
            f"pgbench scale {phys['scale']} ({phys['database_bytes'] / GB:.2f} GB); seconds:",
            "",
            *rounds_table(["run", "median (s)", "rounds (s)"], phys["seconds"], ".2f"),
            "",
            f"drkit PITR phases (last round): `{phys.get('drkit_phases')}`",
            "",
        ]
    drill = results.get("drill")
    if drill:
        lines += [
            "## Restore drill",
            "",
            *table(["figure", "value"], [[k, cell(v)] for k, v in drill.items()]),
            "",
        ]
    return lines
