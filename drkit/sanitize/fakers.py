"""One Faker instance per locale, shared by the rules check and the strategies.

Faker is imported on first use only: a run whose rules fake nothing never pays for it.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=16)
def faker_for(locale: str) -> Any:
    """The process's Faker for ``locale`` (AttributeError for an unknown locale)."""
    from faker import Faker

    return Faker(locale)
