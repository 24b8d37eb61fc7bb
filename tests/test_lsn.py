"""WAL positions as PostgreSQL writes them (drkit.lsn: pure, no server)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drkit.lsn import format_lsn, parse_lsn


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_lsn_round_trip(position: int) -> None:
    assert parse_lsn(format_lsn(position)) == position


def test_lsn_as_postgres_writes_it() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(0x3000028) == "0/3000028"


@pytest.mark.parametrize("text", ["", "0/", "3000028", "0/123456789", "x/1"])
def test_not_an_lsn_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not an LSN"):
        parse_lsn(text)
