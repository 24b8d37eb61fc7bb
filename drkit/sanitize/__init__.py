"""Sanitize: rule-driven anonymizing copies from a higher environment to a lower one.

This is the package's face: the CLI, the demo and the docs generator import from here
(see ARCHITECTURE.md, Sanitize, for the data flow).  Inside:

- :mod:`.pipeline`: ``drkit sanitize SRC DST``, the one orchestrator and its steps in
  order; :mod:`.report`: what a run takes and returns;
- :mod:`.check` and :mod:`.draft`: ``sanitize check`` and ``sanitize init`` (and the
  draft ``sanitize scan`` writes);
- :mod:`.guards`: who may be read and written, decided before anything is written;
- :mod:`.rules`: the rules file; :mod:`.strategies`: one module per strategy and the
  registry; :mod:`.sources`: where schema and rows come from (live, backup);
  :mod:`.scan`: the leak scan and the guesses of personal data;
- the steps' pieces: :mod:`.schema` (SRC's catalog), :mod:`.plan` (rules meet schema),
  :mod:`.fit` (strategies meet CHECK constraints), :mod:`.subset` (which rows),
  :mod:`.emailmap` (one pseudonym per address), :mod:`.transform` and :mod:`.pump`
  (rows through the strategies), :mod:`.copytext` (COPY's text format).
"""

from __future__ import annotations

from drkit.sanitize.check import CheckReport as CheckReport
from drkit.sanitize.check import SanitizeCheckDocument as SanitizeCheckDocument
from drkit.sanitize.check import check_rules as check_rules
from drkit.sanitize.draft import SanitizeInitDocument as SanitizeInitDocument
from drkit.sanitize.draft import draft_rules as draft_rules
from drkit.sanitize.draft import init_rules as init_rules
from drkit.sanitize.draft import review_draft as review_draft
from drkit.sanitize.pipeline import sanitize as sanitize
from drkit.sanitize.pipeline import scan_source as scan_source
from drkit.sanitize.report import LeakFound as LeakFound
from drkit.sanitize.report import Options as Options
from drkit.sanitize.report import Report as Report
from drkit.sanitize.report import SanitizeDocument as SanitizeDocument
from drkit.sanitize.report import SanitizeScanDocument as SanitizeScanDocument
from drkit.sanitize.report import TableReport as TableReport
from drkit.sanitize.rules import Defaults as Defaults
from drkit.sanitize.rules import Rules as Rules
from drkit.sanitize.rules import load_rules as load_rules
from drkit.sanitize.rules import parse_rules as parse_rules
from drkit.sanitize.scan.content import KINDS as KINDS
from drkit.sanitize.strategies import STRATEGIES as STRATEGIES
from drkit.sanitize.strategies import Strategy as Strategy
