"""Sanitize's worker processes (:mod:`drkit.sanitize.workers`): a table's blocks
computed in forked processes must come back exactly as the run's own thread would have
computed them, in order, and a worker that fails or dies must fail the copy, never hang
it, never outlive the run, and never hand a stale result to the next table.

The mechanism is attacked directly (a worker that raises, one whose error cannot cross
the pipe, one killed mid-block, a run killed with its workers busy), and a whole run is
held equal, table by table, to the same run computed in process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drkit.sanitize.pump import Result
from drkit.sanitize.scan.leakfilter import LeakFilter, Prepared, prepare
from drkit.sanitize.strategies.pseudomap import PseudonymMap, PutLog
from drkit.sanitize.workers import Computing, WorkerDied, Workers, forked_workers
from tests.fix_cli import DrkitRunner, Env
from tests.sanitize.helpers import ENV, alive, rules_doc, table_dump, write_rules

DEADLINE = 60.0


def tagged(key: str, columns: list[str]) -> Callable[[bytes], Result]:
    """Each block upper-cased, reported with the worker's pid; ``slow`` blocks take a
    while (so a later block is done first), ``raise`` and ``die`` blocks fail."""

    def fn(block: bytes) -> Result:
        if block.startswith(b"slow"):
            time.sleep(0.3)
        if block.startswith(b"raise"):
            raise ValueError(f"cannot read a value of {key}.{columns[0]}")
        if block.startswith(b"weird"):

            class Local(Exception):  # a class no other process can unpickle
                pass

            raise Local("a value no strategy reads")
        if block.startswith(b"die"):
            os.kill(os.getpid(), signal.SIGKILL)
        return block.upper(), (key, os.getpid())

    return fn


@pytest.fixture
def workers() -> Iterator[Workers]:
    found = Workers(2, tagged)
    try:
        yield found
    finally:
        found.close()


def through(computing: Computing, key: str, blocks: list[bytes]) -> list[tuple[bytes, Result]]:
    with computing.stage(key, ["c"]) as stage:
        done = []
        for block in blocks:
            done += stage.put(block)
        return done + stage.drain()


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    """``fn`` started in a thread of its own; what it raised, once it ends."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, failed


def test_a_tables_blocks_come_back_in_order_from_every_worker(workers: Workers) -> None:
    blocks = [b"slow 0\n", *(b"row %d\n" % i for i in range(1, 12)), b"slow 12\n"]
    done = through(Computing(tagged, workers), "public.t", blocks)
    assert [block for block, _ in done] == blocks
    assert [out for _, (out, _) in done] == [b.upper() for b in blocks]
    pids = {report[1] for _, (_, report) in done}  # type: ignore[index]
    assert os.getpid() not in pids
    assert len(pids) == 2  # one table's blocks, under way in both workers


def test_in_process_computing_gives_the_same_results() -> None:
    blocks = [b"row %d\n" % i for i in range(5)]
    done = through(Computing(tagged, None), "public.t", blocks)
    assert [out for _, (out, _) in done] == [b.upper() for b in blocks]
    assert {report[1] for _, (_, report) in done} == {os.getpid()}  # type: ignore[index]


def test_a_workers_error_is_raised_in_the_run_and_no_result_goes_stale(
    workers: Workers,
) -> None:
    computing = Computing(tagged, workers)
    with pytest.raises(ValueError, match=r"cannot read a value of public\.t\.c"):
        through(computing, "public.t", [b"row 1\n", b"slow 2\n", b"raise 3\n", b"row 4\n"])
    # every worker is lent again, and only once it owes nothing: the next table gets
    # its own results, from both workers
    blocks = [b"slow next\n", *(b"next %d\n" % i for i in range(6))]
    done = through(computing, "public.u", blocks)
    assert [out for _, (out, _) in done] == [b.upper() for b in blocks]
    assert {report[0] for _, (_, report) in done} == {"public.u"}  # type: ignore[index]
    assert len({report[1] for _, (_, report) in done}) == 2  # type: ignore[index]


def heavy(key: str, columns: list[str]) -> Callable[[bytes], Result]:
    """A table whose setup holds 40 MiB (a table's strategies' caches and scan)."""
    held = b"x" * (40 << 20)
    return lambda block: (None, len(held))


def test_a_table_is_dropped_by_the_workers_when_it_ends() -> None:
    """Twenty tables through two workers, one after the other: what each table's setup
    holds is freed as the table ends, so a worker holds a table or two, not twenty."""
    workers = Workers(2, heavy)
    try:
        computing = Computing(heavy, workers)
        pids = [w.process.pid for w in workers._all if w.process.pid is not None]
        through(computing, "public.t0", [b"slow\n", b"row\n", b"row\n"])
        # a fork's resident set counts the pages it shares with this (test) process:
        # what counts is how much it grows
        before = [_rss_mib(pid) for pid in pids]
        for n in range(1, 20):
            through(computing, f"public.t{n}", [b"slow\n", b"row\n", b"row\n"])
        after = [_rss_mib(pid) for pid in pids]
    finally:
        workers.close()
    assert len(pids) == 2
    growth = [a - b for a, b in zip(after, before, strict=True)]
    assert max(growth) < 150, (before, after)  # nineteen more tables kept: about 760 MiB


def _rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no process {pid}")


def test_an_error_that_cannot_cross_the_pipe_still_fails_in_one_line(workers: Workers) -> None:
    with pytest.raises(RuntimeError, match=r"^Local: a value no strategy reads$"):
        through(Computing(tagged, workers), "public.t", [b"weird\n"])


def test_a_worker_killed_mid_block_fails_the_copy_and_nothing_hangs(workers: Workers) -> None:
    computing = Computing(tagged, workers)
    with pytest.raises(WorkerDied, match="ended unexpectedly"):
        through(computing, "public.t", [b"row 1\n", b"die\n", b"row 3\n"])
    # the other worker still serves; once both are gone, a table fails at once
    assert [out for _, (out, _) in through(computing, "public.u", [b"x\n"])] == [b"X\n"]
    with pytest.raises(WorkerDied):
        through(computing, "public.v", [b"die\n", b"die\n"])
    thread, failed = in_thread(lambda: through(computing, "public.w", [b"row\n"]))
    thread.join(DEADLINE)
    assert not thread.is_alive(), "a table waits for workers that are gone"
    assert len(failed) == 1 and isinstance(failed[0], WorkerDied)


def test_a_table_waiting_for_a_worker_is_released_when_the_workers_close() -> None:
    workers = Workers(1, tagged)
    computing = Computing(tagged, workers)
    held = workers.take()  # the only worker, lent elsewhere
    thread, failed = in_thread(lambda: through(computing, "public.t", [b"row\n"]))
    time.sleep(0.5)
    assert thread.is_alive()
    workers.close()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert len(failed) == 1 and isinstance(failed[0], WorkerDied)
    assert not held.process.is_alive()


def test_no_fork_while_another_thread_runs_nor_when_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert forked_workers(2, tagged) is None  # a lock it holds would be copied held
    finally:
        stop.set()
        other.join()
    monkeypatch.setenv("DRKIT_SANITIZE_WORKERS", "0")
    assert forked_workers(2, tagged) is None
    monkeypatch.delenv("DRKIT_SANITIZE_WORKERS")
    found = forked_workers(2, tagged)
    assert found is not None
    found.close()


def test_a_fork_the_system_refuses_leaves_the_rows_to_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second fork fails (a process limit): the first worker is ended, and the run
    computes in process instead of failing."""
    from multiprocessing.context import ForkProcess

    started: list[ForkProcess] = []
    real_start = ForkProcess.start

    def start(self: ForkProcess) -> None:
        if started:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        real_start(self)
        started.append(self)

    monkeypatch.setattr(ForkProcess, "start", start)
    assert forked_workers(2, tagged) is None
    assert len(started) == 1
    started[0].join(DEADLINE)
    assert not started[0].is_alive()


def test_workers_die_with_a_killed_run() -> None:
    """SIGKILL to the run, its workers busy: the kernel ends them too."""
    script = textwrap.dedent(
        """
            import sys, time
            from drkit.sanitize.workers import Workers

            def setup(key, columns):
                def fn(block):
                    time.sleep(600)
                return fn

            workers = Workers(2, setup)
            for worker in workers._all:
                worker.send(("table", "t", ["c"]))
                worker.receive()
                worker.send(("block", "t"), b"row\\n")
            print(" ".join(str(w.process.pid) for w in workers._all), flush=True)
            time.sleep(600)
            """
    )
    proc = subprocess.Popen(  # "-c": this tree's drkit, from the working directory
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + DEADLINE
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"workers outlived the run: {pids}"
        time.sleep(0.1)


def test_the_map_is_never_read_while_it_is_being_filled() -> None:
    held = PseudonymMap()
    held.put_min("ann@x", "u1@example.com")
    filling = PutLog(held, readable=False)
    filling.put_min("bob@x", "u2@example.com")
    for read in (
        lambda: filling.get("ann@x"),
        lambda: filling.first_or_smallest("ann@x"),
        lambda: filling.may_hold_value("u1@example.com"),
    ):
        with pytest.raises(RuntimeError, match="being filled"):
            read()
    assert held.get("bob@x") is None  # a put is the run's to make
    assert filling.drain() == [("bob@x", "u2@example.com")]
    assert filling.drain() == []
    filled = PutLog(held, readable=True)
    assert filled.get("ann@x") == "u1@example.com"
    held.close()


def test_a_run_in_workers_writes_exactly_what_a_run_in_process_writes(
    run_drkit: DrkitRunner, envs: Env, tmp_path: Path
) -> None:
    """The e-mail map filled by the originals pass (a template renders addresses) and
    read by replace_pii, names observed, copied tables scanned: every table of the copy
    the same, whichever computes the blocks."""
    dumps = {}
    for dst, workers in (("staging", "0"), ("dev", "1")):
        doc = rules_doc()
        doc["from"], doc["to"] = "prod", dst
        doc["tables"]["user"]["columns"]["email"] = {
            "strategy": "template",
            "template": "u{id}@corp.example",
        }
        rules = write_rules(tmp_path / f"{dst}.yaml", doc)
        result = run_drkit(
            "-v",
            "sanitize",
            "prod",
            dst,
            "--rules",
            str(rules),
            "--jobs",
            "2",  # two tables at once: the template table beside the others
            policy_dir=envs.policy_dir,
            env={**ENV, "DRKIT_SANITIZE_WORKERS": workers},
        )
        assert result.code == 0, result.stderr
        forked = "worker processes compute" in result.stderr
        assert forked == (workers == "1"), result.stderr
        dumps[dst] = table_dump(envs.dsn(envs.dsts[dst]))
    assert dumps["staging"] == dumps["dev"]
    assert dumps["staging"]["user"]


def test_forms_made_ready_in_a_worker_fill_the_filter_exactly_as_added_here(
    workers: Workers,
) -> None:
    """The originals pass's workers prepare the forms (``prepare``), the run stores
    them: the filter's bits, lengths and stored forms are those ``add`` would make."""
    forms = {b"anna.rossi@example.org", b"rossi", b"x" * 300, b"abc", b" pad ", b"+393471234567"}
    added, stored = LeakFilter(), LeakFilter()
    added.add(forms)
    ready = Workers(1, lambda key, columns: lambda block: (None, prepare(forms)))
    try:
        done = through(Computing(tagged, ready), "t", [b"row\n"])
    finally:
        ready.close()
    prepared = done[0][1][1]
    assert isinstance(prepared, Prepared)
    stored.store(prepared)
    for one, other in ((added._prefix, stored._prefix), (added._whole, stored._whole)):
        assert (one.words == other.words).all() and (one.front == other.front).all()
    assert (added._lengths, added._tokens, added.distinct) == (
        stored._lengths,
        stored._tokens,
        stored.distinct,
    )
    wanted = forms | {b"never-added-form"}
    assert added.confirm(wanted, set()) == stored.confirm(wanted, set())
    assert stored.confirm(wanted, set())[0]
    added.close()
    stored.close()
