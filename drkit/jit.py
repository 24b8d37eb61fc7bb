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
  compiles again (a few seconds), and nothing else changes;
* lazy: decorating a function loads nothing; numba (about a second and 60-120 MB) is
  imported when a compiled loop first runs, so importing a module that holds one costs
  nothing to the commands that never call it.

A compiled loop may call another (in its own module or imported from another): on its
first call, the loops it names among its module's globals are compiled first, so numba
sees compiled functions where the module names them.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

_F = TypeVar("_F", bound=Callable[..., Any])
_LOCK = threading.RLock()  # one compilation at a time (a loop may compile its callees)


class _Loop:
    """A function compiled on its first call."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self._compiled: Callable[..., Any] | None = None

    def compiled(self) -> Callable[..., Any]:
        if self._compiled is None:
            with _LOCK:
                if self._compiled is None:
                    self._compiled = self._compile()
        return self._compiled

    def _compile(self) -> Callable[..., Any]:
        import numba  # only once a compiled loop runs

        names = self.fn.__globals__
        for name in self.fn.__code__.co_names:  # the globals the function reads
            value = names.get(name)
            if isinstance(value, _Loop) and value is not self:
                names[name] = value.compiled()  # what numba can call from compiled code
        try:
            compiled = numba.njit(nogil=True, cache=True)(self.fn)
        except RuntimeError:  # no cache location this process may write: compile each time
            compiled = numba.njit(nogil=True, cache=False)(self.fn)
        return cast(Callable[..., Any], compiled)

    def __call__(self, *args: Any) -> Any:
        return self.compiled()(*args)


def njit(fn: _F) -> _F:
    """``fn`` compiled on its first call (or loaded from the cache), without the GIL."""
    return cast(_F, _Loop(fn))
