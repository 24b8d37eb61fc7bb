"""``drkit demo``: the whole workflow in a throwaway sandbox, no configuration needed.

The demo is a client of drkit, not a part of it: it uses only the public faces of the
packages (the functions the CLI calls), and nothing in drkit but the CLI layer imports
it.  ``STEPS`` is the order the demo runs; each step's ``summary`` is what
``drkit demo --help`` says it does.

* ``sandbox``: the temporary directory, cluster, policies and repository steps share;
* ``runner``: :func:`run_demo`, which builds the sandbox and runs :data:`STEPS`;
* ``backup_step``, ``drill_step``, ``sanitize_step``, ``pitr_step``: the steps;
* ``sample``: the SentriKat-shaped sample database (also used by tests and benchmarks);
* ``document``: what ``drkit demo --json`` prints.

The face loads a module only when one of its names is first used
(:func:`drkit.lazy_face`): the CLI's table of ``--json`` documents names
:class:`DemoDocument` without running a demo's imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# ``import drkit``, not ``from drkit import lazy_face``: the demo's layout test takes every
# ``from drkit import x`` for the module ``drkit.x``
import drkit

if TYPE_CHECKING:
    from drkit.demo.document import DemoDocument as DemoDocument
    from drkit.demo.runner import STEPS as STEPS
    from drkit.demo.runner import run_demo as run_demo
    from drkit.demo.sandbox import Say as Say
    from drkit.demo.sandbox import Step as Step

#: the face's names, by the module of this package that defines them
__all__ = drkit.lazy_face(
    __name__,
    {
        "document": "DemoDocument",
        "runner": "STEPS run_demo",
        "sandbox": "Say Step",
    },
)
