"""The sanitize group: ``drkit sanitize SRC DST`` (the copy, through a hidden ``run``
command), ``sanitize check``, ``sanitize scan`` and ``sanitize init``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from drkit.cli.common import (
    JsonOpt,
    PolicyDirOpt,
    emit_json,
    load,
    out,
    settle,
    settle_outcome,
    sigterm_interrupts,
    state,
)
from drkit.cli.render import live_progress, print_sanitize_report
from drkit.errors import CheckFailed, UsageError

#: this module's commands, registered on drkit's root by drkit.cli.app
commands = typer.Typer()


class DefaultRunGroup(TyperGroup):
    """``drkit sanitize SRC DST`` runs the copy; ``check`` and ``init`` are subcommands."""

    #: the hidden command that runs when the first word is not a subcommand
    default_command = "run"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            self._refuse_misspelt_command(args[0])
            args = ["run", *args]
        parsed: list[str] = super().parse_args(ctx, args)
        return parsed

    def _refuse_misspelt_command(self, word: str) -> None:
        """``sanitize chek prod staging`` would read ``chek`` as SRC: a word close to a
        subcommand that names no environment is a typo, said as one (exit 2)."""
        from drkit.config import available_environments
        from drkit.suggest import did_you_mean

        hint = did_you_mean(word, [name for name in self.commands if name != "run"])
        if hint and word not in available_environments(state.policy_dir):
            raise UsageError(f"sanitize: {word!r} is neither a command nor an environment{hint}")


sanitize_app = typer.Typer(
    cls=DefaultRunGroup,
    subcommand_metavar="SRC DST | COMMAND [ARGS]...",
    help=(
        "Copy SRC's data into DST through the sanitize rules: drkit sanitize SRC DST "
        "[OPTIONS] (--rules, --from-backup, --dry-run, --json and the others: drkit sanitize "
        "SRC DST --help), or the subcommands check, scan and init."
    ),
    no_args_is_help=True,
)
commands.add_typer(sanitize_app, name="sanitize")


class SanitizeRunContext(typer.Context):
    """``drkit sanitize SRC DST``, not ``drkit sanitize run``, in usage lines and hints."""

    @property
    def command_path(self) -> str:
        parent = self.parent.command_path if self.parent is not None else "drkit sanitize"
        return f"{parent} SRC DST"


class SanitizeRunCommand(TyperCommand):
    context_class = SanitizeRunContext

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [self.options_metavar] if self.options_metavar else []


RulesOpt = Annotated[
    Path | None,
    typer.Option(
        "--rules", metavar="FILE", help="Rules file (default sanitize_rules/SRC-to-DST.yaml)."
    ),
]


@sanitize_app.command("run", hidden=True, cls=SanitizeRunCommand)
def sanitize_run(
    src: Annotated[str, typer.Argument(help="Source environment.")],
    dst: Annotated[str, typer.Argument(help="Target environment.")],
    rules: RulesOpt = None,
    from_backup: Annotated[
        str | None,
        typer.Option(
            "--from-backup",
            metavar="ID|latest",
            help="Read SRC's data from a backup: an id, or latest (the newest logical backup, "
            "in the server's order).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan, copy nothing.")
    ] = False,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Tables copied in parallel.")] = 1,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace a DST that holds tables; terminate sessions connected to it."
        ),
    ] = False,
    keep_old: Annotated[
        bool,
        typer.Option("--keep-old", help="Keep the replaced DST database (renamed aside)."),
    ] = False,
    scan_only: Annotated[
        bool, typer.Option("--scan-only", help="Only run the leak scan on DST.")
    ] = False,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Copy SRC's data into DST's database through the rules."""
    settle(json_out, policy_dir)
    from drkit.sanitize import LeakFound, Options, sanitize  # lazy: psycopg, numpy, sqlglot

    if dry_run and scan_only:
        raise UsageError("--dry-run and --scan-only do not go together")
    options = Options(
        rules_path=rules,
        from_backup=from_backup,
        dry_run=dry_run,
        jobs=jobs,
        force=force,
        scan_only=scan_only,
        keep_old=keep_old,
    )
    source, target = load(src), load(dst)
    with sigterm_interrupts():  # until the report is out: a published copy exits 0
        try:
            with live_progress(quiet_done=True) as progress:
                report = sanitize(
                    source, target, options, on_progress=progress, on_published=settle_outcome
                )
        except LeakFound as exc:
            print_sanitize_report(exc.report)
            raise
        print_sanitize_report(report)


@sanitize_app.command("check")
def sanitize_check(
    src: Annotated[str, typer.Argument(help="Source environment.")],
    dst: Annotated[str, typer.Argument(help="Target environment.")],
    rules: RulesOpt = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Validate the rules against SRC's live schema without copying anything."""
    settle(json_out, policy_dir)
    from drkit.sanitize import check_rules  # lazy: psycopg, numpy, sqlglot

    report = check_rules(load(src), load(dst), rules)
    if state.json:
        emit_json(report.document())
    else:
        for key, info in report.tables.items():
            masked = ", ".join(f"{c}={s}" for c, s in info["strategies"].items())
            mark = "[green]✓[/green]" if info["listed"] else "[yellow]?[/yellow]"
            detail = f" where {info['where']}" if info["where"] else ""
            out.print(
                f"{mark} {key}: {info['action']}{detail}" + (f" ({masked})" if masked else "")
            )
        for item in report.unlisted_tables:
            out.print(f"[yellow]![/yellow] table {item} is not in the rules")
        for item in report.unlisted_columns:
            out.print(f"[yellow]![/yellow] column {item} is not in the rules")
        for item in report.pii_kept:
            out.print(f"[yellow]![/yellow] kept as is but looks like personal data: {item}")
        for key, columns in report.pinned.items():
            out.print(
                f"[yellow]![/yellow] pinned {key} (copy: true) to its columns "
                f"{', '.join(columns)} in {report.rules}: review them"
            )
        for name in report.leftovers:
            out.print(f"[yellow]![/yellow] dropped {name}, the build of an interrupted run")
        if not report.salt_set:
            out.print("[yellow]![/yellow] the salt variable is not set: a run would stop")
        out.print(f"[green]✓[/green] {report.dst}: {report.target}")
        if report.ok:
            out.print(f"[green]✓[/green] {report.rules} covers {report.src}'s schema")
    if not report.ok:
        raise CheckFailed(
            f"{report.rules}: "
            + "; ".join(report.failures[:5])
            + (f" (and {len(report.failures) - 5} more)" if len(report.failures) > 5 else "")
        )


@sanitize_app.command("scan")
def sanitize_scan(
    src: Annotated[str, typer.Argument(help="Source environment.")],
    rules: Annotated[
        Path,
        typer.Option("--rules", metavar="FILE", help="Rules file (what a run would copy)."),
    ],
    write_draft: Annotated[
        Path | None,
        typer.Option(
            "--write-draft",
            metavar="FILE",
            help="Write a draft of rules for the columns found (never the rules file itself).",
        ),
    ] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """List the columns a run would refuse: personal data by content in what reaches DST
    unmasked, and originals of masked columns (kinds and counts, never values)."""
    settle(json_out, policy_dir)
    from drkit.sanitize import LeakFound, review_draft, scan_source  # lazy: psycopg, numpy

    if write_draft is not None:
        if write_draft.exists():
            raise UsageError(f"{write_draft} exists: choose another --write-draft or remove it")
        if write_draft.resolve() == rules.resolve():
            raise UsageError("--write-draft must not be the rules file")
    failure: LeakFound | None = None
    try:
        with sigterm_interrupts(), live_progress(quiet_done=True) as progress:
            report = scan_source(load(src), rules, on_progress=progress)
    except LeakFound as exc:
        failure, report = exc, exc.report
    document = report.scan_document()
    columns, originals = document.columns, document.originals
    if write_draft is not None and columns:
        from drkit.sanitize import load_rules

        write_draft.parent.mkdir(parents=True, exist_ok=True)
        write_draft.write_text(review_draft(columns, load_rules(rules)), encoding="utf-8")
        document = report.scan_document(draft=write_draft)
    if state.json:
        emit_json(document)
    if failure is not None:
        if state.json:
            raise failure
        for place, kinds in sorted(columns.items()):
            found = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
            out.print(f"[red]✗[/red] {place}: {found}")
        for place, count in sorted(originals.items()):
            out.print(f"[red]✗[/red] {place}: {count} original value(s) of masked columns")
        if document.draft:
            out.print(f"[yellow]![/yellow] drafted {write_draft}: review it, then merge it")
        raise failure
    if not state.json:
        out.print(f"[green]✓[/green] nothing found: {report.rules} keeps no personal data")


@sanitize_app.command("init")
def sanitize_init(
    src: Annotated[str, typer.Argument(help="Source environment.")],
    out_file: Annotated[
        Path | None, typer.Option("--out", metavar="FILE", help="Write the draft here.")
    ] = None,
    json_out: JsonOpt = False,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Draft a rules file from SRC's schema, guessing personal-data columns."""
    settle(json_out, policy_dir)
    from drkit.sanitize import init_rules  # lazy: psycopg, numpy

    drafted = init_rules(load(src), out_file)
    if state.json:
        emit_json(drafted)
    elif out_file is None:
        sys.stdout.write(drafted.rules)
    else:
        out.print(f"[green]✓[/green] drafted {out_file}: review every '# guessed' line")
