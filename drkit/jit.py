"""Compiled byte loops: numba's ``njit``, the way drkit uses it.

The sanitize scan reads every byte of what a copy keeps.  Its loops over those bytes are
compiled to machine code by numba (a JIT compiler for numpy code, from PyPI) instead of
being written as many whole-array numpy passes: one pass per block, in native code, and
without the GIL, so the ``--jobs`` threads of a run search their blocks at once.

:func:`njit` is the one decorator those loops use:

* ``nogil``: a compiled loop never holds the GIL;
* cached: the machine code is written once per installation, next to the module (its
  ``__pycache__``) or, where that is not writable, in the user's own cache directory
  (``~/.cache/numba``), or where ``$NUMBA_CACHE_DIR`` says; with neither, every process
  compiles again (a few seconds), and nothing else changes.

Only modules that need compiled loops import this one (numba is not loaded by any
package face, nor by a command that does not search a copy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

_F = TypeVar("_F", bound=Callable[..., Any])


def njit(fn: _F) -> _F:
    """``fn`` compiled (on its first call, or loaded from the cache), without the GIL."""
    try:
        compiled = numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # no cache location this process may write: compile each time
        compiled = numba.njit(nogil=True, cache=False)(fn)
    return cast(_F, compiled)
