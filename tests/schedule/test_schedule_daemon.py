"""The real scheduler daemon as a subprocess: ``drkit schedule run`` against a real
PostgreSQL and a ``file://`` repository, with a ``* * * * *`` schedule that fires
within the test's first minute.

Waits below are bounded polls for an event (a backup appearing, a run being counted),
never assertions about how long something took.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from drkit.catalog import list_backups
from drkit.config import load_policy
from drkit.pg import LocalCluster, free_port
from drkit.schedule import LOCK_CLASS_ID, lock_key
from drkit.storage.repository import Repository
from tests.fix_cli import DrkitRunner, PolicyWriter
from tests.fix_pg import PgServer
from tests.fix_s3 import RepoTarget

EVERY_MINUTE = "* * * * *"
WAIT = 150.0  # bound for "the next minute's run happened" (fires within 60 s)


def wait_for(what: str, condition: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.5)


class Daemon:
    def __init__(self, policy_dir: Path, env: str, log_path: Path, *options: str) -> None:
        """``options``: more ``schedule run`` options; ``--bind 127.0.0.1`` unless one
        of them is ``--default-bind`` (then no --bind at all)."""
        self.port = free_port()
        self.log_path = log_path
        self.log = log_path.open("wb")
        bind = [] if "--default-bind" in options else ["--bind", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "drkit",
                "--policy-dir",
                str(policy_dir),
                "schedule",
                "run",
                env,
                *bind,
                "--port",
                str(self.port),
                *(o for o in options if o != "--default-bind"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
        )
        wait_for(f"the daemon on port {self.port}", self._up, timeout=60)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}: {self.stderr()}")
        try:
            self.get("/healthz")
            return True
        except OSError:
            return False

    def stderr(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def health(self) -> tuple[int, dict[str, Any]]:
        code, body = self.get("/healthz")
        return code, json.loads(body)

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200, body
        doc: dict[str, Any] = json.loads(body)
        return doc

    def job(self, name: str = "logical_backup") -> dict[str, Any]:
        return next(j for j in self.status()["jobs"] if j["job"] == name)

    def runs(self, name: str = "logical_backup") -> dict[str, int]:
        return dict(self.job(name)["runs"])

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        code, body = self.get("/metrics")
        assert code == 200
        out = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def terminate(self, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.log.close()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(policy_dir: Path, env: str = "prod", *options: str) -> Daemon:
        daemon = Daemon(policy_dir, env, tmp_path / f"daemon-{len(started)}.log", *options)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def test_backup_runs_metrics_report_it_and_a_second_daemon_stands_by(
    pg_server: PgServer,
    database: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    daemons: Callable[[Path, str], Daemon],
) -> None:
    name, url = database
    pg_server.query(name, "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1), (2)")
    policy_dir = make_policy(
        "prod", url, file_repo, schedule={"logical_backup": EVERY_MINUTE, "timezone": "UTC"}
    )
    first, second = daemons(policy_dir), daemons(policy_dir)
    assert first.health()[0] == 200 and second.health()[0] == 200  # nothing due yet

    def both_ran() -> bool:
        return all(sum(d.runs().values()) >= 1 for d in (first, second))

    wait_for("both daemons' first run", both_ran)
    runs = {d.port: d.runs() for d in (first, second)}
    holder, standby = (first, second) if runs[first.port]["success"] else (second, first)
    assert runs[holder.port]["success"] >= 1 and runs[holder.port]["skipped"] == 0
    assert runs[standby.port]["success"] == 0 and runs[standby.port]["skipped"] >= 1
    assert runs[holder.port]["failure"] == runs[standby.port]["failure"] == 0

    # exactly one lock holder, seen from PostgreSQL
    classid, objid = lock_key("prod")
    held = pg_server.query(
        name,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = %s::bigint::oid AND objid = %s::bigint::oid",
        (classid, objid & 0xFFFFFFFF),
    )
    assert held == [(1,)] and classid == LOCK_CLASS_ID

    metrics = holder.metrics()
    repo = Repository.for_policy(load_policy("prod", policy_dir))
    backups = list_backups(repo)
    count = int(metrics[("drkit_backups_stored", labels(env="prod", kind="logical"))])
    assert count >= 1 and len(backups) >= count
    assert len(backups) == holder.runs()["success"]  # only the holder ever backed up
    newest_seen = backups[count - 1]
    stamp = metrics[
        ("drkit_backup_last_success_timestamp_seconds", labels(env="prod", kind="logical"))
    ]
    assert stamp == newest_seen.finished_at.timestamp()
    assert (
        metrics[("drkit_backup_last_size_bytes", labels(env="prod", kind="logical"))]
        == newest_seen.size
    )
    assert (
        metrics[
            (
                "drkit_job_runs_total",
                labels(env="prod", drkit_job="logical_backup", status="success"),
            )
        ]
        >= 1
    )
    assert metrics[("drkit_scheduler_lock_held", labels(env="prod"))] == 1
    assert standby.metrics()[("drkit_scheduler_lock_held", labels(env="prod"))] == 0
    assert (
        metrics[("drkit_backup_expected_interval_seconds", labels(env="prod", kind="logical"))]
        == 60
    )
    assert metrics[("drkit_rpo_exposure_seconds", labels(env="prod"))] >= 0

    assert holder.health()[0] == 200 and holder.status()["ok"] is True
    assert standby.job()["status"] == "standby" and standby.status()["ok"] is True

    for d in (holder, standby):
        assert d.terminate() == 0, d.stderr()
    log = holder.stderr() + standby.stderr()
    assert "job prod/logical_backup succeeded" in holder.stderr()
    assert "another scheduler holds the lock" in standby.stderr()
    password = psycopg.conninfo.conninfo_to_dict(url).get("password")
    if password:
        assert str(password) not in log

    # a restarted daemon reports the repository's state at once, before any run
    restarted = daemons(policy_dir)
    newest = list_backups(repo)[-1]
    key = ("drkit_backup_last_success_timestamp_seconds", labels(env="prod", kind="logical"))
    assert restarted.metrics()[key] == newest.finished_at.timestamp()
    assert restarted.job()["last_success"] == newest.finished_at.isoformat().replace("+00:00", "Z")
    assert restarted.terminate() == 0


def test_status_names_the_failing_job_healthz_stays_alive_and_sighup_reloads(
    tmp_path: Path,
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    local_cluster: Callable[..., LocalCluster],
    daemons: Callable[[Path, str], Daemon],
) -> None:
    cluster = local_cluster()
    url = cluster.create_database("app")
    policy_dir = make_policy(
        "prod", url, file_repo, schedule={"logical_backup": EVERY_MINUTE, "timezone": "UTC"}
    )
    cluster.stop()
    daemon = daemons(policy_dir)
    assert daemon.status()["ok"] is True  # not run yet, not overdue

    # SIGHUP: a policy that no longer validates is refused, the running one kept ...
    policy_file = policy_dir / "prod.yaml"
    good = yaml.safe_load(policy_file.read_text())
    policy_file.write_text(yaml.safe_dump({**good, "retention": {"daily": -1}}))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for("the refused reload", lambda: "policies not reloaded" in daemon.stderr(), 60)
    assert [j["job"] for j in daemon.status()["jobs"]] == ["logical_backup"]
    # ... and a valid one is applied
    good["schedule"]["prune"] = "0 4 * * *"
    policy_file.write_text(yaml.safe_dump(good))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(
        "the reloaded prune job",
        lambda: {j["job"] for j in daemon.status()["jobs"]} == {"logical_backup", "prune"},
        60,
    )

    wait_for("a failed run", lambda: daemon.runs()["failure"] >= 1)
    doc = daemon.status()
    assert doc["ok"] is False and doc["status"] == "attention"
    # the container stays healthy: restarting it would not bring the database back
    code, alive = daemon.health()
    assert code == 200 and alive["status"] == "alive"
    assert any(p.startswith("prod/logical_backup: last run failed") for p in doc["problems"])
    assert daemon.job()["status"] == "failing"
    assert daemon.proc.poll() is None  # a failing job never kills the daemon
    metrics = daemon.metrics()
    key = ("drkit_job_runs_total", labels(env="prod", drkit_job="logical_backup", status="failure"))
    assert metrics[key] >= 1
    assert (
        metrics[("drkit_job_last_run_success", labels(env="prod", drkit_job="logical_backup"))] == 0
    )
    assert daemon.terminate() == 0
    log = daemon.stderr()
    assert "job prod/logical_backup failed" in log
    assert cluster.password not in log and cluster.password not in json.dumps(doc)


def test_sigterm_during_a_backup_lets_it_finish(
    pg_server: PgServer,
    database: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    daemons: Callable[[Path, str], Daemon],
    run_drkit: DrkitRunner,
) -> None:
    name, url = database
    pg_server.query(name, "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1), (2)")
    policy_dir = make_policy(
        "prod", url, file_repo, schedule={"logical_backup": EVERY_MINUTE, "timezone": "UTC"}
    )
    with psycopg.connect(pg_server.dsn(name)) as blocker:
        # the backup will wait on this lock: it is provably running when SIGTERM arrives
        blocker.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        daemon = daemons(policy_dir)

        def backup_waiting() -> bool:
            rows = pg_server.query(
                name,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'",
            )
            return rows[0][0] > 0

        wait_for("the backup to block on the table lock", backup_waiting)
        assert daemon.job()["running"] is True
        daemon.proc.send_signal(signal.SIGTERM)
        wait_for("the daemon to take SIGTERM", lambda: "SIGTERM received" in daemon.stderr(), 60)
        assert daemon.proc.poll() is None  # still finishing the backup
        blocker.rollback()  # let the backup go on
    assert daemon.terminate() == 0, daemon.stderr()
    repo = Repository.for_policy(load_policy("prod", policy_dir))
    backups = list_backups(repo)
    assert len(backups) == 1
    assert backups[0].row_counts[name] == {"public.t": 2}
    verified = run_drkit("verify", "prod", "latest", policy_dir=policy_dir)
    assert verified.code == 0, verified.stderr


def test_port_in_use_is_one_line_exit_1(
    tmp_path: Path, make_policy: PolicyWriter, run_drkit: DrkitRunner
) -> None:
    policy_dir = make_policy(
        "prod",
        "postgresql://u:sekret@127.0.0.1:1/app",
        {"url": f"file://{tmp_path}/repo"},
        schedule={"logical_backup": "0 2 * * *"},
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_drkit(
            "schedule",
            "run",
            "prod",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            policy_dir=policy_dir,
            timeout=60,
        )
    assert result.code == 1
    assert result.stderr.strip().splitlines() == [
        f"drkit: error: port {port} on 127.0.0.1 is already in use: stop the other process "
        "or choose another with --port"
    ]
    assert not (tmp_path / "repo").exists()


def test_schedule_show_lists_next_three_runs(
    tmp_path: Path, make_policy: PolicyWriter, run_drkit: DrkitRunner
) -> None:
    policy_dir = make_policy(
        "prod",
        "postgresql://u:sekret@127.0.0.1:1/app",
        {"url": f"file://{tmp_path}/repo"},
        schedule={
            "logical_backup": "0 2 * * *",
            "physical_backup": "0 3 * * 0",
            "timezone": "Europe/Rome",
        },
    )
    rows = run_drkit(
        "schedule", "show", "prod", "--json", policy_dir=policy_dir, check=True
    ).json()["jobs"]
    assert [(r["env"], r["job"], r["cron"]) for r in rows] == [
        ("prod", "logical_backup", "0 2 * * *"),
        ("prod", "physical_backup", "0 3 * * 0"),
    ]
    now = datetime.now(UTC)
    for row in rows:
        runs = [datetime.fromisoformat(r) for r in row["next_runs"]]
        assert len(runs) == 3 and runs == sorted(runs) and runs[0] > now
    daily = [datetime.fromisoformat(r) for r in rows[0]["next_runs"]]
    assert all((r.hour, r.minute) == (2, 0) for r in daily)
    weekly = [datetime.fromisoformat(r) for r in rows[1]["next_runs"]]
    assert all(r.isoweekday() == 7 and r.hour == 3 for r in weekly)  # Sunday, as in cron
    text = run_drkit("schedule", "show", "prod", policy_dir=policy_dir, check=True).stdout
    assert "prod/physical_backup" in text and "Sun" in text
    assert "sekret" not in text
    assert not (tmp_path / "repo").exists()  # show touches nothing


TOKEN = "page-token-4f1c9a"


def test_status_page_in_a_browser_with_real_backups_a_drill_and_a_token(
    pg_server: PgServer,
    database: tuple[str, str],
    file_repo: RepoTarget,
    make_policy: PolicyWriter,
    run_drkit: DrkitRunner,
    daemons: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    """The page at ``/`` as a person sees it in Chromium: the newest backup, the last
    drill against the objectives with its chart, the next jobs; behind the bearer
    token, on 127.0.0.1 when no --bind is given; and the drill's report.html in the
    same browser.  The screenshots stay in the test's tmp dir."""
    from playwright.sync_api import sync_playwright

    name, url = database
    pg_server.query(name, "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1), (2)")
    policy_dir = make_policy(
        "prod",
        url,
        file_repo,
        objectives={"rpo": "1h", "rto": "30m"},
        schedule={"logical_backup": "0 3 * * *", "drill": "0 5 * * 0", "timezone": "UTC"},
    )
    run_drkit("backup", "prod", policy_dir=policy_dir, check=True)
    reports = tmp_path / "drill"
    run_drkit("drill", "prod", "--report-dir", str(reports), policy_dir=policy_dir, check=True)
    drill_doc = json.loads((reports / "report.json").read_text())
    backup = list_backups(Repository.for_policy(load_policy("prod", policy_dir)))[-1]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")

    daemon = daemons(policy_dir, "prod", "--default-bind", "--token-file", str(token_file))
    assert f"on 127.0.0.1:{daemon.port}" in daemon.stderr()  # loopback unless --bind
    assert daemon.get("/")[0] == 401
    assert daemon.get("/status", {"Authorization": "Bearer wrong-token"})[0] == 401
    assert daemon.get("/metrics")[0] == 401
    assert daemon.health()[0] == 200  # the liveness probe carries no token
    auth = {"Authorization": f"Bearer {TOKEN}"}
    code, body = daemon.get("/", auth)
    assert code == 200 and body.startswith("<!DOCTYPE html>")
    password = psycopg.conninfo.conninfo_to_dict(url).get("password")
    if password:
        assert str(password) not in body

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox"]
        )
        try:
            context = browser.new_context(extra_http_headers=auth)
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{daemon.port}/")
            page.screenshot(path=str(tmp_path / "status-page.png"), full_page=True)
            section = page.locator("#env-prod")
            text = section.inner_text()
            assert backup.id in text and "stands by" not in text
            assert drill_doc["id"] in text and "PASS" in text
            rows = {
                r.split("\t")[0]: r.split("\t") for r in section.locator("tr").all_inner_texts()
            }
            assert rows["logical"][1] == backup.id and rows["logical"][3].endswith("B")
            assert rows["RTO"][2] == "30m" and rows["RTO"][3] == "yes"
            assert rows["RPO"][2] == "1h" and rows["RPO"][3] == "yes"
            assert rows["logical_backup"][1] == "ok"
            assert rows["logical_backup"][2].endswith("T03:00:00Z")
            assert rows["drill"][2].endswith("T05:00:00Z")
            chart = section.locator("figure svg")
            assert chart.count() == 1 and chart.bounding_box() is not None
            assert "RTO of the last drills" in (chart.text_content() or "")
            assert page.locator("#overall").inner_text() == "ok"

            report = context.new_page()
            report.goto((reports / "report.html").as_uri())
            report.screenshot(path=str(tmp_path / "report-html.png"), full_page=True)
            assert report.locator("#verdict").inner_text() == "PASS"
            checks = report.locator("#checks tr").all_inner_texts()[1:]
            assert len(checks) == len(drill_doc["checks"]) > 0
            assert report.locator("#chart svg").bounding_box() is not None
        finally:
            browser.close()
    assert (tmp_path / "status-page.png").stat().st_size > 0
    assert daemon.terminate() == 0
