"""drkit.jit: the one way a byte loop is compiled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
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
    assert compiled(np.frombuffer(b"@@x", dtype=np.uint8)) == 2
    assert asked == [True, False]


LOOPS = """
import sys
import numpy as np
from drkit.jit import njit

@njit
def counted(data):
    n = 0
    for byte in data:
        if byte == 64:
            n += 1
    return n

@njit
def twice(data):
    return 2 * counted(data)

print("numba" in sys.modules)
print(twice(np.frombuffer(b"a@b@", dtype=np.uint8)))
print("numba" in sys.modules)
"""


def test_a_compiled_loop_calls_another_and_loads_numba_only_when_it_runs(
    tmp_path: Path,
) -> None:
    """Decorating loads nothing; the first call compiles the loops the function's module
    names (here ``counted``) before the function itself, and caches them beside it."""
    (tmp_path / "loops.py").write_text(LOOPS)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "loops.py")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["False", "4", "True"]
    assert list((tmp_path / "__pycache__").glob("loops.twice-*.nbi")), "not cached"
