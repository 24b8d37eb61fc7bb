"""The ``fake`` pools made ahead in worker processes are exactly the pools made in process.

A pool is part of every pseudonym a ``fake`` column gives, so the faster ways of making
one (the cumulative-weights random, the forked workers) must give the very same values,
and a worker that dies must cost time, never a different pool or a hang.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal

import pytest

from drkit.sanitize.strategies import Fake, Pseudonymizer, ReplacePii, fake_specs
from drkit.sanitize.strategies.fakepool import PoolPrefetch, faker_for, generate_pool, to_text

SALT = b"fake-pool-test-salt"
SIZE = 256

# weighted tables (names), formats within formats (user_name), arguments, other locales
SPECS = [
    Fake(provider="name"),
    Fake(provider="user_name", unique=True),
    Fake(provider="first_name", locale="de_DE"),
    Fake(provider="phone_number"),
    Fake(provider="address"),
    Fake(provider="pyint", args={"min_value": 1, "max_value": 99}),
    Fake(provider="date_between", args=["-30y", "-20y"]),
]


def stock_pool(seed: int, spec: Fake) -> tuple[str, ...]:
    """The pool as plain Faker with its stock ``random.Random`` makes it."""
    from faker import Faker

    faker = Faker(spec.locale)
    faker.seed_instance(seed)
    method = getattr(faker, spec.provider)
    if isinstance(spec.args, dict):
        values = [method(**spec.args) for _ in range(SIZE)]
    elif isinstance(spec.args, list):
        values = [method(*spec.args) for _ in range(SIZE)]
    else:
        values = [method() for _ in range(SIZE)]
    return tuple(to_text(v) or "" for v in values)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.provider}-{s.locale}")
def test_pools_are_plain_fakers_draws(spec: Fake) -> None:
    assert isinstance(faker_for(spec.locale).random, random.Random)
    seed = 0x1234_5678_9ABC
    expected = stock_pool(seed, spec)
    assert generate_pool(seed, spec.provider, spec.args, spec.locale, SIZE) == expected
    # and again: the sums kept from the first pool change nothing
    assert generate_pool(seed, spec.provider, spec.args, spec.locale, SIZE) == expected


def test_prefetched_pools_equal_pools_made_in_process() -> None:
    ahead = Pseudonymizer(SALT, pool_size=SIZE)
    ahead.prefetch(SPECS)
    try:
        made_ahead = [ahead.pool(spec) for spec in SPECS]
        pseudonyms = [ahead.fake(spec, "anna@example.com") for spec in SPECS]
    finally:
        ahead.close()
    here = Pseudonymizer(SALT, pool_size=SIZE)
    assert [here.pool(spec) for spec in SPECS] == made_ahead
    assert [here.fake(spec, "anna@example.com") for spec in SPECS] == pseudonyms
    assert not multiprocessing.active_children()


def test_close_ends_workers_still_making_pools() -> None:
    pseudo = Pseudonymizer(SALT)  # full-size pools: the workers are still busy
    pseudo.prefetch(SPECS)
    assert multiprocessing.active_children()
    pseudo.close()
    assert not multiprocessing.active_children()


def test_a_killed_worker_costs_time_not_the_pool() -> None:
    prefetch = PoolPrefetch()
    spec = Fake(provider="name")
    key = ("name", "null", "en_US")
    prefetch.start([(key, 42, None)], SIZE)
    try:
        children = multiprocessing.active_children()
        assert children, "no worker started"
        for child in children:
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            child.join()
        made = prefetch.take(key)  # must not hang
    finally:
        prefetch.close()
    assert made is None or made == generate_pool(42, spec.provider, None, spec.locale, SIZE)
    assert prefetch.take(key) is None  # taken once; then made in process


def test_prefetch_off_makes_pools_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRKIT_FAKE_PREFETCH", "0")
    pseudo = Pseudonymizer(SALT, pool_size=SIZE)
    pseudo.prefetch(SPECS)
    assert not multiprocessing.active_children()
    assert pseudo.pool(SPECS[0]) == Pseudonymizer(SALT, pool_size=SIZE).pool(SPECS[0])
    pseudo.close()


def test_replace_pii_prefetches_the_pools_it_uses() -> None:
    specs = fake_specs([ReplacePii(kinds=["email", "phone", "ip"]), Fake(provider="name")])
    providers = sorted(s.provider for s in specs)
    assert providers == ["ipv4", "ipv6", "name", "phone_number"]
    assert fake_specs([Fake(provider="name")]) == [Fake(provider="name")]


def test_close_never_waits_without_limit_on_a_worker_a_signal_cannot_reach() -> None:
    """A worker that cannot act on SIGTERM (stopped here; in CI one was seen blocked in
    a send that no SIGTERM ended) is killed after a bounded wait: close() returns and
    leaves no process behind."""
    import threading

    pseudo = Pseudonymizer(SALT)  # full-size pools: the workers are busy or blocked
    pseudo.prefetch(SPECS)
    workers = multiprocessing.active_children()
    assert workers
    for worker in workers:
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGSTOP)
    closing = threading.Thread(target=pseudo.close, daemon=True)
    closing.start()
    closing.join(60)
    try:
        assert not closing.is_alive(), "close() is still waiting for a worker"
        assert not multiprocessing.active_children()
    finally:
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGKILL)
