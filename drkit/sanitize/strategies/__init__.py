"""The strategies: one module each (see :mod:`.base` for what a module holds), and their
registry.

Adding a strategy is its module, imported here, and one line in :data:`STRATEGIES`: the
rules loader, the plan's checks, the run's value functions and the generated reference
all read it from there.

Beside the strategies:

- :mod:`.compiler`: strategies made into value functions for one run, and the run's one
  pseudonym per e-mail address;
- :mod:`.pseudonymizer`: keyed, deterministic pseudonyms of one salt;
- :mod:`.fakepool`: Faker's values for ``fake``, made once per run (in worker processes);
- :mod:`.pseudomap`: the e-mail map's store, whose memory stays flat;
- :mod:`.piitext`: e-mail addresses, phone numbers and IPs inside text, and their keys;
- :mod:`.jsonpath`: the JSONPath subset of the ``json`` strategy.
"""

from __future__ import annotations

from drkit.sanitize.strategies.base import Strategy as Strategy
from drkit.sanitize.strategies.base import ValueFn as ValueFn
from drkit.sanitize.strategies.compiler import Compiler as Compiler
from drkit.sanitize.strategies.compiler import PiiConfig as PiiConfig
from drkit.sanitize.strategies.compiler import fake_specs as fake_specs
from drkit.sanitize.strategies.compiler import pool_values as pool_values
from drkit.sanitize.strategies.constant import Constant as Constant
from drkit.sanitize.strategies.email import Email as Email
from drkit.sanitize.strategies.fake import Fake as Fake
from drkit.sanitize.strategies.hash import Hash as Hash
from drkit.sanitize.strategies.json import JsonPaths as JsonPaths
from drkit.sanitize.strategies.keep import ALL_KINDS as ALL_KINDS
from drkit.sanitize.strategies.keep import Keep as Keep
from drkit.sanitize.strategies.mask import Mask as Mask
from drkit.sanitize.strategies.nullify import Nullify as Nullify
from drkit.sanitize.strategies.pseudonymizer import Pseudonymizer as Pseudonymizer
from drkit.sanitize.strategies.replace_pii import ReplacePii as ReplacePii
from drkit.sanitize.strategies.template import Template as Template


def _registry(*models: type[Strategy]) -> dict[str, type[Strategy]]:
    return {model.model_fields["strategy"].default: model for model in models}


#: name (as a rules file writes it) -> the strategy's model, in the reference's order
STRATEGIES: dict[str, type[Strategy]] = _registry(
    Keep,
    Nullify,
    Constant,
    Template,
    Fake,
    Hash,
    Mask,
    Email,
    ReplacePii,
    JsonPaths,
)
