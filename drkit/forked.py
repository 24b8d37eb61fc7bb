"""Worker processes forked from a run, that never outlive it.

A run forks workers to compute on the other core (sanitize's fake pools, its write
pass).  A worker must die with the run however the run ends: on the way out the run ends
its workers itself (:func:`end`: the pipe closed first, then SIGTERM, then SIGKILL, never
an unbounded wait), and should the run be killed (SIGKILL), the kernel kills them
(Linux's parent-death signal, :func:`die_with_parent`) instead of leaving them blocked
on a pipe no one reads, holding their memory.

Forking is safe only from a process with one thread (another thread may hold a lock the
child would inherit held): :func:`can_fork` says whether this process may fork now.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

log = logging.getLogger(__name__)

#: prctl(2)'s PR_SET_PDEATHSIG: a signal the kernel sends when the parent dies
_PR_SET_PDEATHSIG = 1

#: seconds :func:`end` gives a terminated worker before SIGKILL
CLOSE_WAIT = 5.0


def can_fork(*, threads: bool = True) -> bool:
    """Whether this platform forks and, with ``threads``, whether this process runs one
    thread only (a fork copies locks another thread may hold)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    return not threads or threading.active_count() == 1


def die_with_parent(parent: int) -> None:
    """In a worker: SIGKILL from the kernel the moment the process that forked it dies
    (Linux); a parent already gone by now ends the worker at once.  The run handles
    Ctrl-C and SIGTERM and ends its workers itself: a worker ignores SIGINT."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:  # not Linux: the run's end() still ends it
        log.debug("no parent-death signal here: %s", exc)
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def end(workers: Iterable[tuple[BaseProcess, Connection]]) -> None:
    """End every worker, whatever it is doing: its pipe is closed first, so one blocked
    writing to it fails at once (EPIPE) even if a signal could not reach it; then
    SIGTERM, and SIGKILL for one still there after :data:`CLOSE_WAIT` seconds."""
    workers = list(workers)
    for process, conn in workers:
        conn.close()
        if process.is_alive():
            process.terminate()
    for process, _ in workers:
        process.join(CLOSE_WAIT)
        if process.is_alive():
            log.info("worker %s ignored SIGTERM: killed", process.pid)
            process.kill()
            process.join()
