"""drkit.jit: the one way a byte loop is compiled."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import pytest

from drkit import jit


def _count_at_signs(data: npt.NDArray[np.uint8]) -> int:
    n = 0
    for byte in data:
        if byte == 64:
            n += 1
    return n


def test_a_compiled_loop_answers_as_the_python_one() -> None:
    compiled = jit.njit(_count_at_signs)
    data = np.frombuffer(b"a@b@@c\t@\n" * 1000, dtype=np.uint8)
    assert compiled(data) == _count_at_signs(data) == 4000


def test_without_a_cache_location_every_process_compiles_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """numba refuses ``cache=True`` when no cache directory is writable (a read-only
    install, no home): the loop is compiled in memory instead, and still answers."""
    real = numba.njit
    asked: list[bool] = []

    def njit(**options: Any) -> Any:
        asked.append(options["cache"])
        if options["cache"]:
            raise RuntimeError("cannot cache function: no locator available")
        assert options["nogil"], "a compiled loop must release the GIL"
        return real(**options)

    monkeypatch.setattr(numba, "njit", njit)
    compiled = jit.njit(_count_at_signs)
    assert asked == [True, False]
    assert compiled(np.frombuffer(b"@@x", dtype=np.uint8)) == 2
