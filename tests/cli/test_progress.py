"""Progress: percent, rate and ETA where a total is known, phase labels, drills' phases
as they pass, and one unit system (IEC) — through the real CLI on a real terminal.

Rich draws progress on a TTY only, so the CLI runs here with its stderr on a pseudo
terminal (``pty.openpty``), exactly as an operator's shell would give it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import termios
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drkit.cli.progress import Snapshot, done_line, progress_events
from drkit.progress import Meter, ProgressEvent, eta_seconds, human_size, percent
from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_s3 import RepoTarget

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def run_on_tty(
    *args: str, policy_dir: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> tuple[int, str, str]:
    """``drkit ARGS`` with stderr on a 160-column pseudo terminal; (code, stdout, tty text)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    full_env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", **(env or {})}
    for name in ("NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        full_env.pop(name, None)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "drkit", "--policy-dir", str(policy_dir), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            env=full_env,
            timeout=timeout,
            check=False,
        )
    finally:
        os.close(slave)
        reader.join(timeout=30)
        os.close(master)
    tty = _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))
    return proc.returncode, proc.stdout.decode(), tty


@pytest.fixture
def prod(sample_db: tuple[str, str], file_repo: RepoTarget, make_policy: PolicyWriter) -> Path:
    _name, url = sample_db
    return make_policy("prod", url, file_repo, objectives={"rpo": "1h", "rto": "30m"})


# -- pure logic ----------------------------------------------------------------------------


def test_sizes_are_iec_everywhere() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(1024) == "1.0 KiB"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(5 * 1024**2) == "5.0 MiB"
    assert human_size(3 * 1024**3) == "3.0 GiB"
    assert human_size(2 * 1024**4) == "2.0 TiB"
    assert human_size(2048 * 1024**5) == "2.0 EiB"


def test_eta_is_the_rest_at_the_average_rate() -> None:
    assert eta_seconds(25, 100, 10.0) == pytest.approx(30.0)
    assert eta_seconds(50, 100, 10.0) == pytest.approx(10.0)
    assert eta_seconds(100, 100, 10.0) == 0.0
    assert eta_seconds(150, 100, 10.0) == 0.0  # an estimate passed: no negative ETA
    assert eta_seconds(10, None, 10.0) is None  # no total: no ETA
    assert eta_seconds(0, 100, 10.0) is None  # nothing done yet: no rate
    assert eta_seconds(10, 100, 0.0) is None
    assert percent(25, 100) == 25.0
    assert percent(150, 100) == 100.0
    assert percent(1, None) is None
    assert percent(1, 0) is None


def test_a_line_with_a_total_says_percent_rate_and_eta() -> None:
    text = Snapshot(done=25 * 1024**2, total=100 * 1024**2, unit="bytes", estimate=False,
                    elapsed=5.0).text()  # fmt: skip
    assert "25%" in text
    assert "25.0 MiB/100.0 MiB" in text
    assert "5.0 MiB/s" in text
    assert "ETA 15.0s" in text
    assert "≈" not in text


def test_an_estimated_total_is_marked_and_never_claims_done() -> None:
    text = Snapshot(done=30, total=100, unit="bytes", estimate=True, elapsed=1.0).text()
    assert "≈ 30%" in text and "/≈100 B" in text
    passed = Snapshot(done=150, total=100, unit="bytes", estimate=True, elapsed=1.0).text()
    assert "≈99%" in passed and "100%" not in passed and "ETA" not in passed


def test_without_a_total_a_line_says_amount_and_rate() -> None:
    text = Snapshot(done=5000, total=None, unit="rows", estimate=False, elapsed=2.0).text()
    assert text.startswith("5,000 rows")
    assert "2,500 rows/s" in text
    assert "%" not in text and "ETA" not in text
    # a phase that counts nothing (pg_restore --jobs, WAL replay): its time only
    assert Snapshot(done=0, total=None, unit="bytes", estimate=False, elapsed=3.0).text() == "3.0s"
    assert done_line("fetch", "app", 2048, "bytes", 0.25) == "✓ fetch app: 2.0 KiB in 0.2s"
    assert done_line("validation", "", 0, "bytes", 75) == "✓ validation: 1m15s"


def test_events_from_a_meter_draw_on_a_terminal_and_nothing_elsewhere() -> None:
    from rich.console import Console

    class Sink:
        def __init__(self) -> None:
            self.events: list[ProgressEvent] = []

        def __call__(self, event: ProgressEvent) -> None:
            self.events.append(event)

    sink = Sink()
    with Meter(sink, "pg_restore", "app", total=10) as meter:
        meter(4)
        meter(0)  # nothing to say
        meter(6)
    assert [(e.advance, e.total, e.state) for e in sink.events] == [
        (0, 10, "running"),
        (4, None, "running"),
        (6, None, "running"),
        (0, None, "done"),
    ]
    assert sink.events[-1].seconds is not None

    import io

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with progress_events(console, enabled=True) as draw:
        for event in sink.events:
            draw(event)
    assert "pg_restore app" in buffer.getvalue() and "✓ pg_restore app: 10 B in" in (
        _ANSI.sub("", buffer.getvalue())
    )
    quiet = io.StringIO()
    with progress_events(Console(file=quiet, force_terminal=True), enabled=False) as draw:
        for event in sink.events:
            draw(event)
    assert quiet.getvalue() == ""
    not_a_tty = io.StringIO()
    with progress_events(Console(file=not_a_tty), enabled=True) as draw:
        for event in sink.events:
            draw(event)
    assert not_a_tty.getvalue() == ""


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, OSError])
def test_an_interrupted_phase_never_shows_a_check_mark(
    interruption: type[BaseException],
) -> None:
    """Ctrl-C (or an error) in the middle of a phase: it ends aborted, and the terminal
    shows no ✓ for it, through the Meter's ``with`` block and a drill's phase alike."""
    import io

    from rich.console import Console

    from drkit.drill.context import PhaseTimer
    from drkit.drill.report import DrillReport

    events: list[ProgressEvent] = []
    with (
        pytest.raises(interruption),
        Meter(events.append, "dump", "app", total=100, estimate=True) as meter,
    ):
        meter(40)
        raise interruption()
    report = DrillReport(id="d", environment="prod", started_at=datetime.now(UTC))
    timer = PhaseTimer(report, events.append)
    with pytest.raises(interruption), timer.phase("restore", "app", total=10) as meter:
        meter(3)
        raise interruption()
    assert [e.state for e in events if e.advance == 0 and e.total is None] == [
        "aborted",
        "aborted",
    ]
    assert all(e.state != "done" for e in events)
    buffer = io.StringIO()
    with progress_events(
        Console(file=buffer, force_terminal=True, width=120), enabled=True
    ) as draw:
        for event in events:
            draw(event)
    assert "✓" not in _ANSI.sub("", buffer.getvalue())


def test_a_dump_ends_near_its_estimated_total_or_claims_none(
    sample_db: tuple[str, str], pg_server: Any, file_repo: RepoTarget, make_policy: PolicyWriter
) -> None:
    """The dump's total is an estimate of the dump, not ``pg_database_size`` (indexes,
    free space, catalogs: a dump ended at 62 % of it, and at 3 % of a small database)."""
    from drkit.backup.logical import run_logical_backup
    from drkit.config import load_policy

    name, url = sample_db
    policy = load_policy("prod", make_policy("prod", url, file_repo))

    def dump_total_and_size() -> tuple[int | None, int]:
        events: list[ProgressEvent] = []
        run_logical_backup(policy, on_progress=events.append)
        dump = [e for e in events if e.phase == "dump"]
        assert dump[0].estimate and dump[-1].state == "done"
        return dump[0].total, sum(e.advance for e in dump)

    pg_server.query(name, "ANALYZE")
    total, size = dump_total_and_size()  # wide rows, text and indexes
    assert total is not None and 0.75 <= size / total <= 1.33, (size, total)
    # a narrow table nobody analyzed yet: its rows (so their headers) are unknown
    pg_server.query(
        name,
        "CREATE TABLE narrow (a int, b int); "
        "INSERT INTO narrow SELECT g, g FROM generate_series(1, 50000) g",
    )
    total, size = dump_total_and_size()
    assert total is None  # no percent rather than a wrong one
    pg_server.query(name, "ANALYZE narrow")
    total, size = dump_total_and_size()
    assert total is not None and 0.75 <= size / total <= 1.33, (size, total)


# -- the real CLI on a terminal ------------------------------------------------------------


def test_backup_and_restore_show_phases_with_percent(prod: Path, run_drkit: DrkitRunner) -> None:
    code, _stdout, tty = run_on_tty("backup", "prod", policy_dir=prod)
    assert code == 0, tty
    # the dump's total is an estimate from its tables' data, said so
    assert re.search(r"dump \S+ .*≈\s*\d+%", tty), tty
    assert re.search(r"✓ dump \S+: [\d.]+ (B|KiB|MiB|GiB) in", tty), tty
    assert " MB" not in tty and "/?" not in tty

    code, _stdout, tty = run_on_tty("restore", "prod", "latest", "--force", policy_dir=prod)
    assert code == 0, tty
    # the manifest knows the dump's size: an exact percent, no "≈"
    assert re.search(r"pg_restore \S+ .*\b\d+%", tty), tty
    assert re.search(r"pg_restore \S+ .*100%", tty) or "✓ pg_restore" in tty, tty
    assert not re.search(r"pg_restore \S+ .*≈", tty), tty
    assert re.search(r"✓ pg_restore \S+: [\d.]+ (B|KiB|MiB|GiB) in [\d.]+s", tty), tty
    assert re.search(r"✓ row counts \S+: ", tty), tty

    code, _stdout, tty = run_on_tty(
        "restore", "prod", "latest", "--force", "--jobs", "2", policy_dir=prod
    )
    assert code == 0, tty
    assert re.search(r"✓ fetch \S+: [\d.]+ (B|KiB|MiB|GiB) in", tty), tty
    assert re.search(r"✓ pg_restore \S+: [\d.]+s", tty), tty


def test_json_draws_no_progress_even_on_a_terminal(prod: Path) -> None:
    code, stdout, tty = run_on_tty("backup", "prod", "--json", policy_dir=prod)
    assert code == 0, tty
    assert stdout.lstrip().startswith("{")
    assert tty.strip() == ""


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="drkit-test-progress-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_a_drill_shows_each_phase_as_it_passes(prod: Path, scratch_root: Path) -> None:
    code, _stdout, tty = run_on_tty("backup", "prod", policy_dir=prod)
    assert code == 0, tty
    code, stdout, tty = run_on_tty(
        "drill", "prod", policy_dir=prod, env={"DRKIT_TMPDIR": str(scratch_root)}
    )
    assert code == 0, stdout + tty
    # each phase leaves a line with its duration when it ends, in the order they pass
    starts = [
        tty.index(f"✓ {label}")
        for label in ("fetch from the repository", "pg_restore", "validation")
    ]
    assert starts == sorted(starts), tty
    assert re.search(r"✓ fetch from the repository \S+: [\d.]+ (B|KiB|MiB) in [\d.]+s", tty)
    assert re.search(r"✓ scratch cluster accepts connections: [\d.]+s", tty), tty
    assert re.search(r"✓ validation: [\d.]+s", tty), tty
    assert "verdict: PASS" in stdout


# -- JSON: every size and duration names its unit -----------------------------------------

_UNIT_KEY = re.compile(r"(_bytes|_seconds)$")


def _unitless(schema: dict[str, object], where: str) -> Iterator[str]:
    props = schema.get("properties")
    if isinstance(props, dict):
        for key, sub in props.items():
            if not isinstance(sub, dict):
                continue
            text = str(sub.get("description", ""))
            alias = text.startswith("the same as ")
            says_unit = re.search(r"\b(bytes|seconds)\b", text) is not None
            if says_unit and not alias and not _UNIT_KEY.search(key) and "_seconds" not in text:
                yield f"{where}.{key}: {text}"
            if alias:
                target = re.match(r"the same as (\w+)", text)
                assert target is not None and target.group(1) in props, f"{where}.{key}"
            yield from _unitless(sub, f"{where}.{key}")
    for name in ("items", "additionalProperties"):
        sub = schema.get(name)
        if isinstance(sub, dict):
            yield from _unitless(sub, where)
    for name in ("anyOf", "allOf", "oneOf"):
        for sub in schema.get(name) or []:  # type: ignore[attr-defined]
            if isinstance(sub, dict):
                yield from _unitless(sub, where)
    defs = schema.get("$defs")
    if isinstance(defs, dict):
        for name, sub in defs.items():
            yield from _unitless(sub, name)


def test_every_size_and_duration_key_names_its_unit() -> None:
    import json

    schemas = sorted(Path(__file__).parents[2].glob("docs/schemas/output/*.schema.json"))
    assert schemas
    found = []
    for path in schemas:
        found += list(_unitless(json.loads(path.read_text()), path.name))
    assert found == [], "\n".join(found)


def _bytes(text: str) -> float:
    """``37.1 MiB`` as bytes (a rounded IEC size, as progress lines print it)."""
    number, unit = text.split()
    return float(number) * 1024 ** ["B", "KiB", "MiB", "GiB", "TiB"].index(unit)


@pytest.mark.slow
def test_a_physical_backup_and_drill_show_their_phases(
    pg_major: int | None, scratch_root: Path
) -> None:
    import yaml

    from drkit.pg import chown_tree, cluster_os_user
    from tests.wal_support import archived_cluster, file_repo_block, has_wal, shared_dir

    with (
        shared_dir() as root,
        archived_cluster(root, file_repo_block(root), major=pg_major) as arch,
    ):
        doc = {
            "environment": "prod",
            "database": {"url": arch.dsn("postgres")},
            "repository": arch.repo_block,
            "wal_archiving": True,
            "objectives": {"rpo": "1h", "rto": "30m"},
            "drill": {"checks": {"row_counts": True, "amcheck": False}},
        }
        (arch.policy_dir / "prod.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        chown_tree(arch.policy_dir, cluster_os_user())
        code, _stdout, tty = run_on_tty("backup", "prod", "--physical", policy_dir=arch.policy_dir)
        assert code == 0, tty
        # the cluster's size is the (estimated) total of the base backup
        assert re.search(r"base backup base\.tar .*≈\s*\d+%", tty), tty
        assert re.search(r"✓ base backup base\.tar: [\d.]+ (KiB|MiB|GiB) in", tty), tty
        assert re.search(r"✓ WAL archived: [\d.]+s", tty), tty

        code, stdout, tty = run_on_tty(
            "drill", "prod", policy_dir=arch.policy_dir, env={"DRKIT_TMPDIR": str(scratch_root)}
        )
        assert code == 0, stdout + tty
        # the manifest knows base.tar's size: an exact percent while it unpacks
        assert re.search(r"fetch and unpack the base backup base\.tar .*\b\d+%", tty), tty
        order = [
            tty.index(f"✓ {label}")
            for label in ("fetch and unpack the base backup", "WAL replay", "validation")
        ]
        assert order == sorted(order), tty
        # WAL replay is a share of the planned span (the base backup's start to the end
        # LSN) while it runs, and the WAL replayed once the end is checked
        assert re.search(r"WAL replay [━╺╸ ]*\d+%", tty), tty
        assert re.search(r"✓ WAL replay: [\d.]+ (B|KiB|MiB) in [\d.]+s", tty), tty

        # restore --point-in-time on a terminal: the same share against the planned end
        arch.execute(
            "CREATE TABLE filler AS SELECT repeat('x', 200) AS pad FROM generate_series(1, 20000)"
        )
        arch.switch_and_wait(has_wal(arch))
        code, stdout, tty = run_on_tty(
            "restore",
            "prod",
            "--point-in-time",
            "latest",
            "--pgdata",
            str(arch.new_pgdata()),
            "--target-action",
            "shutdown",
            policy_dir=arch.policy_dir,
        )
        assert code == 0, stdout + tty
        # the span is the base backup's start to the planned end, and the ✓ counts the
        # WAL replayed, at least that span (a switch record's end may pass it)
        running = re.search(r"WAL replay [━╺╸ ]*\d+%\s+\S+ \S+/(\S+ \S+)\s", tty)
        done = re.search(r"✓ WAL replay: (\S+ \S+) in [\d.]+s", tty)
        assert running is not None and done is not None, tty
        assert _bytes(done.group(1)) >= _bytes(running.group(1)) > 1024**2, tty

        # a transaction the archive never ends: replay runs out, exit 3, and never a ✓
        xid = int(arch.execute("SELECT txid_current()")[0][0])
        code, stdout, tty = run_on_tty(
            "restore",
            "prod",
            "--target-xid",
            str(xid + 100000),
            "--pgdata",
            str(arch.new_pgdata()),
            policy_dir=arch.policy_dir,
        )
        assert code == 3, stdout + tty
        assert "WAL replay" in tty and "✓ WAL replay" not in tty, tty
