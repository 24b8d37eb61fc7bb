"""The rules file ``sanitize_rules/SRC-to-DST.yaml``: what it says and how it is checked.

- :mod:`.model`: the rules as a run reads them (defaults, table rules, subset, salt);
- :mod:`.load`: reading the YAML and every check that needs no database (exit 2);
- :mod:`.sqlfilter`: ``where`` and subset filters, parsed with sqlglot and allowed only
  when safe;
- :mod:`.pins`: the column lists of ``copy: true`` tables, written into the file when a
  run or ``sanitize check`` first meets them.

A column's strategy is one of :mod:`drkit.sanitize.strategies`.
"""

from __future__ import annotations

from drkit.sanitize.rules.load import load_rules as load_rules
from drkit.sanitize.rules.load import parse_rules as parse_rules
from drkit.sanitize.rules.load import parse_strategy as parse_strategy
from drkit.sanitize.rules.load import resolve_rules as resolve_rules
from drkit.sanitize.rules.model import Defaults as Defaults
from drkit.sanitize.rules.model import Rules as Rules
from drkit.sanitize.rules.model import SubsetRule as SubsetRule
from drkit.sanitize.rules.model import TableRule as TableRule
from drkit.sanitize.rules.model import default_rules_path as default_rules_path
from drkit.sanitize.rules.pins import settle_pins as settle_pins
from drkit.sanitize.rules.pins import write_pins as write_pins
from drkit.sanitize.rules.sqlfilter import FilterError as FilterError
from drkit.sanitize.rules.sqlfilter import RowFilter as RowFilter
from drkit.sanitize.rules.sqlfilter import parse_filter as parse_filter
