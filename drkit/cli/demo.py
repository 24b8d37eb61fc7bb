"""``drkit demo``: the whole workflow on a throwaway PostgreSQL (a thin call into
:mod:`drkit.demo`)."""

from __future__ import annotations

from typing import Annotated

import typer

from drkit.cli.common import JsonOpt, emit_json, settle, state
from drkit.cli.render import demo_say

#: this module's commands, registered on drkit's root by drkit.cli.app
commands = typer.Typer()


@commands.command("demo")
def demo(
    rows: Annotated[int, typer.Option("--rows", metavar="N", help="Sample rows to load.")] = 20_000,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the sandbox directory.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Self-contained sandbox: the whole workflow on a throwaway PostgreSQL, no setup.

    Starts a PostgreSQL cluster from the local binaries and loads SentriKat sample data,
    then runs: logical backup → verify → restore into a second database (row counts
    compared) → restore drill (RTO/RPO measured, checks run) → sanitize prod → staging
    with the shipped rules (leak scan) → continuous WAL archiving → physical base backup
    → an accidental delete found with wal-search → point-in-time recovery to just before
    it, into a new cluster.  Everything lives in one temporary directory, removed at the end unless
    --keep."""
    from drkit.demo import run_demo  # lazy: psycopg, pydantic, ~0.4 s

    settle(json_out)
    report = run_demo(rows=rows, keep=keep, say=demo_say)
    if state.json:
        emit_json(report)
