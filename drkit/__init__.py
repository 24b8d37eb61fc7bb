"""drkit: backups, point-in-time recovery, sanitized copies and restore drills for PostgreSQL.

Besides the version, this module holds the one mechanism of lazy package faces
(:func:`lazy_face`; see ARCHITECTURE.md, Packages).  A package's ``__init__`` is its
face: the names other packages import.  Python runs ``drkit/backup/__init__.py`` whenever
any ``drkit.backup.x`` is imported, so a face that imported its modules eagerly would
make every importer of any one of them pay for all of them (psycopg, boto3, pydantic,
APScheduler), and the archive_command, which runs once per WAL file, would pay most.  A
face whose modules are heavy therefore calls :func:`lazy_face` with a table of its names
by module, and names the same under ``if TYPE_CHECKING:`` so that mypy checks every
caller's import (a name the face does not declare is an error, not ``Any``)::

    from drkit import lazy_face

    if TYPE_CHECKING:
        from drkit.backup.verify import verify_backup as verify_backup

    __all__ = lazy_face(__name__, {"verify": "verify_backup VerifyDocument"})

Every lazy face uses this one mechanism (PEP 562's module ``__getattr__``, on the face's
module class).  It also keeps a face's name from being hidden by a module of the same
spelling: ``drkit.pg.connect`` is both a module and the function callers want, and
Python binds the package attribute to the module once the module is first imported,
after which ``__getattr__`` would never be asked.  The face binds the function instead,
so ``from drkit.pg import connect`` is the function whatever was imported before.
``tests/test_import_cycles.py`` checks that every name of every face is the object its
module defines, and that the table and the ``TYPE_CHECKING`` imports agree.

It lives here, in the one module every drkit process has imported anyway (``drkit
--version`` and the archive_command's lean entry included), and imports only what the
interpreter loaded at its own start (``sys``, ``types``), so a face costs no module more.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping
from typing import Any

__version__ = "0.1.0"

#: what ``drkit --version`` prints
VERSION_LINE = f"drkit {__version__}"

#: where a lazy face keeps its table (name -> the package's module that defines it)
_FACE_TABLE = "__face_names__"


class LazyFace(types.ModuleType):
    """The class of a package whose face loads its names on first use."""

    def __getattr__(self, name: str) -> Any:
        home = self.__dict__.get(_FACE_TABLE, {}).get(name)
        if home is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        # __import__, not importlib.import_module: the interpreter's own import path,
        # the one ``python -X importtime`` reports
        module = f"{self.__name__}.{home}"
        __import__(module)
        value = getattr(sys.modules[module], name)
        self.__dict__[name] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        # The import system binds a submodule on its package once the submodule has run;
        # where the face names the submodule's own function of that spelling, the
        # function is what the face means.
        own = isinstance(value, types.ModuleType) and value.__name__ == f"{self.__name__}.{name}"
        if own and self.__dict__.get(_FACE_TABLE, {}).get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted({*self.__dict__, *self.__dict__.get(_FACE_TABLE, {})})


def lazy_face(package: str, names: Mapping[str, str]) -> list[str]:
    """Make ``package`` (a face's ``__name__``) load ``names`` on first use: a module of
    the package -> its public names, space-separated.  Returns the names, sorted, for
    ``__all__``.  A name listed under two modules is refused."""
    table: dict[str, str] = {}
    for module, spelled in names.items():
        for name in spelled.split():
            if name in table:
                raise ValueError(f"{package}: {name} is listed under {table[name]} and {module}")
            table[name] = module
    face = sys.modules[package]
    face.__dict__[_FACE_TABLE] = table
    face.__class__ = LazyFace
    return sorted(table)
