"""Sanitize's worker processes: the Python of both passes on every core.

The strategies, the originals' forms and the in-flight scan are Python per row, and one
process runs one thread of Python at a time (the GIL): with ``--jobs 2`` the run's two
table threads took turns on one core.  So each pass forks ``--jobs`` workers
(:class:`Workers`) once what it reads stops changing (see
:mod:`drkit.sanitize.pipeline`): each holds a copy of the run as it stands,
copy-on-write (the filters' arrays are shared, never written), and only computes.  A
table's thread in the run reads the source and puts each block of COPY text into a
:class:`Flow`, which hands it to whichever worker is idle (one table's blocks are under
way in several workers at once) and takes the results back in the order the blocks were
put: the originals' forms, names and e-mail map puts, which the run stores; or the block
as it is to be written and what the scan found in it, which the run records, before it
writes the block.  Connections, counts, the leak index and every decision stay in the
run.  Where the run cannot fork (another thread runs, no ``fork`` on the platform,
``DRKIT_SANITIZE_WORKERS=0``), the same block functions run in the tables' own threads
(:class:`Computing`).

Raw values travel from the run to a worker and back through a pipe, in memory, never
through a file.  A worker dies with the run however the run ends
(:mod:`drkit.forked`).  A worker that dies fails its table's copy (the block it had is
not written, nor any after it), and so the run, which publishes nothing; a table
waiting for a worker when none is left fails at once.  An error a worker meets (a value
a strategy cannot read) is raised again in the run, its class and message kept (one
line, when its class cannot cross the pipe).  A worker is lent again only once it owes
no result: a table given up on an error takes what it is still owed first.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import os
import pickle
import queue
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from drkit.errors import OperationError
from drkit.forked import can_fork, die_with_parent, end
from drkit.sanitize.pump import InProcess, Result, Stage

log = logging.getLogger(__name__)

#: in a worker: (table key, the rows' columns) -> that table's block function
Setup = Callable[[str, list[str]], Callable[[bytes], Result]]


class WorkerDied(OperationError):
    """A worker process ended while it held a block."""


class Worker:
    """One forked worker: a pipe to it, and the tables it is ready for."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.tables: set[str] = set()
        self.finished: list[str] = []  # tables it holds whose flows ended: to drop
        self.dead = False

    def send(self, request: tuple[object, ...], data: bytes | None = None) -> None:
        """A request, and the block it is about (raw bytes: no copy into a pickle)."""
        try:
            self.conn.send(request)
            if data is not None:
                self.conn.send_bytes(data)
        except (EOFError, OSError):
            raise self._died() from None

    def receive(self) -> Result:
        try:
            status, payload, written = self.conn.recv()
            out = self.conn.recv_bytes() if written else None
        except (EOFError, OSError):
            raise self._died() from None
        if status == "error":
            raise payload
        return out, payload

    def _died(self) -> WorkerDied:
        self.dead = True
        return WorkerDied(
            f"a sanitize worker process ({self.process.pid}) ended unexpectedly (killed, or "
            "out of memory?): the copy is not finished"
        )


class Workers:
    """``count`` workers forked now from this process (which must run one thread), each
    computing blocks through ``setup``; :meth:`flow` streams one table's blocks through
    them, :meth:`close` ends them."""

    def __init__(self, count: int, setup: Setup) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        self._all: list[Worker] = []
        self._idle: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        # the run's objects are left alone by the workers' collector: pages it would
        # touch (reference counts aside) stay shared with the run
        gc.freeze()
        try:
            for _ in range(count):
                mine, theirs = context.Pipe(duplex=True)
                process = context.Process(
                    target=_serve,
                    args=(theirs, [mine, *(w.conn for w in self._all)], setup, os.getpid()),
                    name="drkit-sanitize-worker",
                    daemon=True,
                )
                process.start()
                theirs.close()  # the worker's end: the run's reads end when it is gone
                worker = Worker(process, mine)
                self._all.append(worker)
                self._idle.put(worker)
        except BaseException:
            self.close()
            raise
        finally:
            gc.unfreeze()
        log.debug("%d worker processes compute the blocks", count)

    def flow(self, key: str, columns: list[str]) -> Flow:
        return Flow(self, key, columns)

    def idle(self) -> Worker | None:
        """An idle worker, or None when every one is busy."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return None

    def take(self) -> Worker:
        """An idle worker, waiting for one (never once they are closed or all gone)."""
        while True:
            try:
                return self._idle.get(timeout=0.5)
            except queue.Empty:
                pass
            if self._closed or all(w.dead for w in self._all):
                raise WorkerDied("the sanitize worker processes are gone: the copy is not finished")

    def give_back(self, worker: Worker) -> None:
        if not worker.dead:
            self._idle.put(worker)

    def retire(self, key: str) -> None:
        """``key``'s flow ended: every worker that set it up drops it (what a table's
        strategies and scan hold is freed as the table ends, not when the pass does)."""
        with self._lock:
            for worker in self._all:
                if key in worker.tables:
                    worker.tables.discard(key)
                    worker.finished.append(key)

    def ready(self, worker: Worker, key: str, columns: list[str]) -> None:
        """``worker`` (lent to ``key``'s flow) rid of the tables that ended, and set up
        for ``key``."""
        with self._lock:
            finished, worker.finished = worker.finished, []
        for done in finished:  # no reply: the worker drops it before the next request
            worker.send(("drop", done))
        if key not in worker.tables:
            worker.send(("table", key, columns))
            worker.receive()
            worker.tables.add(key)

    def close(self) -> None:
        self._closed = True
        workers, self._all = self._all, []
        end((w.process, w.conn) for w in workers)


class Flow:
    """One table's blocks through whichever workers are idle, several under way at once
    (a :class:`~drkit.sanitize.pump.Stage`); results are taken in the order the blocks
    were put, so the table is written in the order it was read.  A flow given up on an
    error first takes every result still owed (a worker is lent again only once it owes
    nothing)."""

    def __init__(self, workers: Workers, key: str, columns: list[str]) -> None:
        self._workers = workers
        self._key = key
        self._columns = columns
        self._owed: collections.deque[tuple[Worker, bytes]] = collections.deque()

    def put(self, block: bytes) -> list[tuple[bytes, Result]]:
        done = []
        worker = self._workers.idle()
        while worker is None:  # every worker busy: this flow's oldest result frees one
            if not self._owed:
                worker = self._workers.take()
                break
            done.append(self._oldest())
            worker = self._workers.idle()
        try:
            self._workers.ready(worker, self._key, self._columns)
            worker.send(("block", self._key), block)
        except BaseException:
            self._workers.give_back(worker)
            self.abandon()
            raise
        self._owed.append((worker, block))
        return done

    def drain(self) -> list[tuple[bytes, Result]]:
        return [self._oldest() for _ in range(len(self._owed))]

    def abandon(self) -> None:
        """Take (and drop) every result still owed; errors included."""
        while self._owed:
            worker, _ = self._owed.popleft()
            try:
                worker.receive()
            except Exception:  # noqa: S110 - given up on: the first error was raised
                pass
            finally:
                self._workers.give_back(worker)

    def _oldest(self) -> tuple[bytes, Result]:
        worker, block = self._owed.popleft()
        try:
            result = worker.receive()
        except BaseException:
            self._workers.give_back(worker)
            self.abandon()
            raise
        self._workers.give_back(worker)
        return block, result


class Computing:
    """Where a pass computes its tables' blocks: in ``workers``, or (None) in each
    table's own thread, through the same ``setup``."""

    def __init__(self, setup: Setup, workers: Workers | None) -> None:
        self.setup = setup
        self.workers = workers

    @contextlib.contextmanager
    def stage(self, key: str, columns: list[str]) -> Iterator[Stage]:
        """One table's :class:`~drkit.sanitize.pump.Stage`; a flow left on an error
        takes what it is still owed first."""
        if self.workers is None:
            yield InProcess(self.setup(key, columns))
            return
        flow = self.workers.flow(key, columns)
        try:
            yield flow
        finally:
            flow.abandon()
            self.workers.retire(key)


#: at most this many workers unless ``--jobs`` asks for more (each holds its own caches)
MAX_WORKERS = 4


def worker_count(jobs: int) -> int:
    """Workers for a run copying ``jobs`` tables at once: one per core this process may
    run on (at most :data:`MAX_WORKERS`), and never fewer than ``jobs``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(jobs, min(cores, MAX_WORKERS))


def forked_workers(count: int, setup: Setup) -> Workers | None:
    """:class:`Workers`, or None where this process may not fork now (another thread
    runs, no fork on this platform, the system refuses a process) or
    ``DRKIT_SANITIZE_WORKERS=0``: the run's own threads then compute, as they always
    could."""
    if os.environ.get("DRKIT_SANITIZE_WORKERS", "1") == "0" or count < 1:
        return None
    if not can_fork():
        log.info("the rows are computed in process: this process cannot fork now")
        return None
    try:
        return Workers(count, setup)
    except OSError as exc:  # EAGAIN, ENOMEM: a process limit; those forked are ended
        log.info("the rows are computed in process: no worker process (%s)", exc)
        return None


def _serve(conn: Connection, runs: list[Connection], setup: Setup, parent: int) -> None:
    """A worker: each request answered in turn, until the run closes the pipe."""
    die_with_parent(parent)
    for end_of_run in runs:  # the run's ends of this pipe and the earlier workers'
        end_of_run.close()
    tables: dict[str, Callable[[bytes], Result]] = {}
    while True:
        try:
            request = conn.recv()
            block = conn.recv_bytes() if request[0] == "block" else b""
        except (EOFError, OSError):
            return
        if request[0] == "drop":  # (no reply)
            tables.pop(request[1], None)
            continue
        out: bytes | None = None
        try:
            if request[0] == "table":
                tables[request[1]] = setup(request[1], request[2])
                reply: tuple[str, object, bool] = ("ok", None, False)
            else:
                out, report = tables[request[1]](block)
                reply = ("ok", report, out is not None)
        except Exception as exc:  # raised again in the run
            reply, out = ("error", _portable(exc), False), None
        try:
            conn.send(reply)
            if out is not None:
                conn.send_bytes(out)
        except (EOFError, OSError):
            return


def _portable(exc: Exception) -> Exception:
    """``exc``, or one of the same meaning that crosses the pipe (its class kept when
    it pickles back; else the one line of it)."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - this process's own object
        return exc
    except Exception:  # any failure to pickle or unpickle
        kind = OperationError if isinstance(exc, OperationError) else RuntimeError
        return kind(f"{type(exc).__name__}: {exc}")
