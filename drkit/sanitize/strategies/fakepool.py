"""The ``fake`` pools: Faker's values for one (seed, provider, args, locale), made once.

A pool is a pure function of its seed (derived from the salt by
:class:`~.pseudonymizer.Pseudonymizer`) and the installed Faker, so it may be made
anywhere: :class:`PoolPrefetch` starts making a run's pools in worker processes (forked,
on the other core) as soon as the rules are loaded, while the run itself connects,
builds the target database and restores the schema; the first row that needs a pool
takes it from there, or makes it in process when no worker could
(``DRKIT_FAKE_PREFETCH=0``: every pool is made in process, no worker is started).
A worker dies with the run, however the run ends: the run ends its workers on the way
out, and, should the run be killed (SIGKILL), the kernel kills them (Linux's parent-death
signal, :mod:`drkit.forked`) instead of leaving them blocked on a pipe no one reads.

Faker draws a weighted element (a first name, a last name) by re-adding thousands of
weights on every call; :class:`_CumulativeRandom` keeps the running sums of a population
it has seen, so the draws (the same ``cum_weights``, the same bisection, the same random
numbers) are exactly those of :meth:`random.Random.choices`, only cheaper.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import multiprocessing
import os
import random
import threading
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from drkit.forked import can_fork, die_with_parent, end

log = logging.getLogger(__name__)

Args = dict[str, Any] | list[Any] | None
PoolKey = tuple[str, str, str]  # (provider, args as JSON, locale)

# at most this many worker processes (one per pool up to it): the scheduler then balances
# pools of very different costs over the cores, while the run itself mostly waits
WORKERS = 4


class _CumulativeRandom(random.Random):
    """``random.Random`` whose weighted ``choices`` reuse the running sums of weights.

    The sums are keyed by the population object (Faker passes the same tuple of keys for
    the same weighted table every time) and used only while the weights are equal."""

    def __init__(self) -> None:
        super().__init__()
        self._sums: dict[int, tuple[Sequence[Any], tuple[float, ...], list[float]]] = {}

    def choices(  # type: ignore[override]
        self,
        population: Sequence[Any],
        weights: Sequence[float] | None = None,
        *,
        cum_weights: Sequence[float] | None = None,
        k: int = 1,
    ) -> list[Any]:
        if weights is None or cum_weights is not None:
            return super().choices(population, weights, cum_weights=cum_weights, k=k)
        key = id(population)
        found = self._sums.get(key)
        # the population is kept referenced, so its id is never another object's
        if found is None or found[0] is not population or found[1] != tuple(weights):
            found = (population, tuple(weights), list(itertools.accumulate(weights)))
            self._sums[key] = found
        return super().choices(population, cum_weights=found[2], k=k)


def to_text(value: Any) -> str | None:
    """A Python value (Faker's output, a constant) as PostgreSQL input text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, list | tuple | dict | set):
        return json.dumps(list(value) if isinstance(value, set | tuple) else value, default=str)
    return str(value)


@functools.lru_cache(maxsize=16)
def faker_for(locale: str) -> Any:
    from faker import Faker

    faker: Any = Faker(locale)
    faker.random = _CumulativeRandom()
    return faker


faker_lock = threading.Lock()


def generate_pool(seed: int, provider: str, args: Args, locale: str, size: int) -> tuple[str, ...]:
    """``size`` values of ``provider`` from a Faker seeded with ``seed``, as text."""
    with faker_lock:
        faker = faker_for(locale)
        faker.seed_instance(seed)
        try:
            method = getattr(faker, provider)
            if isinstance(args, dict):
                values = [method(**args) for _ in range(size)]
            elif isinstance(args, list):
                values = [method(*args) for _ in range(size)]
            else:
                values = [method() for _ in range(size)]
        finally:
            faker.seed_instance(None)
    return tuple(to_text(v) or "" for v in values)


Job = tuple[PoolKey, int, Args]  # (pool key, seed, provider args)


def _work(jobs: list[Job], size: int, out: Connection, parent: int, theirs: Connection) -> None:
    """A worker process: make each pool of ``jobs`` in turn and send it."""
    die_with_parent(parent)
    theirs.close()  # the parent's end of the pipe, inherited at the fork: only it reads
    global faker_lock
    faker_lock = threading.Lock()  # whatever state the parent's was in at the fork
    try:
        for key, seed, args in jobs:
            provider, _, locale = key
            out.send((key, generate_pool(seed, provider, args, locale, size)))
    except BaseException:  # noqa: S110 - the parent sees the pipe close and makes it itself
        pass
    finally:
        out.close()


class _Worker:
    def __init__(self, process: BaseProcess, results: Connection) -> None:
        self.process = process
        self.results = results
        self.received: dict[PoolKey, tuple[str, ...]] = {}
        self.done = False


class PoolPrefetch:
    """Pools being made in worker processes; :meth:`take` waits for one (or says to make
    it in process when its worker is gone), :meth:`close` ends the workers."""

    def __init__(self) -> None:
        self._workers: list[_Worker] = []
        self._where: dict[PoolKey, _Worker] = {}

    def start(self, jobs: Iterable[Job], size: int) -> None:
        """Start making the pools of ``jobs`` ((key, seed, args) each); nothing happens
        where processes cannot be forked."""
        todo = list(jobs)
        if not todo or not can_fork(threads=False):
            return
        if os.environ.get("DRKIT_FAKE_PREFETCH", "1") == "0":
            return
        context = multiprocessing.get_context("fork")
        count = min(WORKERS, len(todo))
        for n in range(count):
            share = todo[n::count]
            results, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_work,
                args=(share, size, sender, os.getpid(), results),
                name="drkit-fake-pool",
                daemon=True,
            )
            try:
                process.start()
            except OSError as exc:
                log.info("fake pools are made in process: no worker (%s)", exc)
                results.close()
                sender.close()
                break
            sender.close()  # the child's end: the pipe reads EOF when the child is gone
            worker = _Worker(process, results)
            self._workers.append(worker)
            for key, _, _ in share:
                self._where[key] = worker

    def take(self, key: PoolKey) -> tuple[str, ...] | None:
        """The pool made for ``key`` (waiting for it), or None: make it in process."""
        worker = self._where.pop(key, None)
        if worker is None:
            return None
        while key not in worker.received and not worker.done:
            try:
                got, pool = worker.results.recv()
            except (EOFError, OSError):  # the worker is gone: what it did not send is ours
                worker.done = True
                break
            worker.received[got] = pool
        return worker.received.pop(key, None)

    def close(self) -> None:
        """End every worker, whatever it is doing: its pipe is closed first, so one
        blocked sending a pool fails at once (EPIPE) even if a signal could not reach it;
        then SIGTERM, and SIGKILL for one still there after a few seconds
        (:func:`drkit.forked.end`).
        Never waits without limit."""
        workers, self._workers = self._workers, []
        self._where.clear()
        end((worker.process, worker.results) for worker in workers)
