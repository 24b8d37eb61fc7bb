"""WAL names and LSN arithmetic (pure, no server)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drkit.lsn import format_lsn, parse_lsn
from drkit.wal import (
    backup_file_name,
    following_segments,
    is_archivable,
    is_history,
    is_segment,
    lsn_to_segment_name,
    next_segment_name,
    parse_history,
    parse_segment,
    segments_between,
)


def test_lsn_to_segment_matches_postgres() -> None:
    # values as pg_walfile_name() prints them on a 16 MB-segment cluster
    assert lsn_to_segment_name("0/3000028", 1) == "000000010000000000000003"
    assert lsn_to_segment_name("16/B374D848", 1) == "0000000100000016000000B3"
    assert lsn_to_segment_name("0/FFFFFFF", 2) == "00000002000000000000000F"
    assert lsn_to_segment_name("1/0", 3) == "000000030000000100000000"
    # 64 MB segments: 64 per "log"
    assert lsn_to_segment_name("0/C000000", 1, 64 * 1024 * 1024) == "000000010000000000000003"


def test_next_segment_wraps_into_the_next_log() -> None:
    assert next_segment_name("0000000100000000000000FE") == "0000000100000000000000FF"
    assert next_segment_name("0000000100000000000000FF") == "000000010000000100000000"
    assert next_segment_name("00000001000000000000003F", 64 * 1024 * 1024) == (
        "000000010000000100000000"
    )
    assert following_segments("000000010000000000000009", 3) == [
        "00000001000000000000000A",
        "00000001000000000000000B",
        "00000001000000000000000C",
    ]


def test_name_classes() -> None:
    assert is_segment("000000010000000000000003")
    assert not is_segment("000000010000000000000003.partial")
    assert is_history("00000002.history")
    assert not is_history("0000002.history")
    for name in (
        "000000010000000000000003",
        "00000002.history",
        "000000010000000000000002.00000028.backup",
        "000000010000000000000005.partial",
    ):
        assert is_archivable(name)
    for name in ("RECOVERYXLOG", "00000001000000000000000g", "../etc/passwd", ""):
        assert not is_archivable(name)
    with pytest.raises(ValueError):
        parse_segment("RECOVERYXLOG")
    with pytest.raises(ValueError):
        parse_segment("000000010000000000000100")  # 0x100 >= 256 segments per log


def test_backup_file_name() -> None:
    assert backup_file_name("0/2000028", 1) == "000000010000000000000002.00000028.backup"


@given(
    st.integers(min_value=0, max_value=2**64 - 2**31),
    st.integers(min_value=1, max_value=0xFFFF),
    st.sampled_from([1, 16, 64, 1024]),
)
def test_segment_name_round_trip(position: int, tli: int, size_mb: int) -> None:
    size = size_mb * 1024 * 1024
    segno = position // size
    from drkit.wal import Segment

    seg = Segment(segno, tli)
    name = seg.name(size)
    assert parse_segment(name, size) == seg
    assert parse_segment(next_segment_name(name, size), size).segno == segno + 1


def test_history_parsing_and_order() -> None:
    text = "1\t0/5000060\tno recovery target specified\n\n2\t0/7000000\tat restore point\n"
    switches = parse_history(text)
    assert [(s.timeline, format_lsn(s.switch_lsn)) for s in switches] == [
        (1, "0/5000060"),
        (2, "0/7000000"),
    ]
    with pytest.raises(ValueError):
        parse_history("2\t0/7000000\n1\t0/5000060\n")
    # a timeline that left its parent before the parent's own switch point (PostgreSQL
    # writes this when recovery stops on timeline 2 before 2 began): still a history
    odd = parse_history("1\t0/4000000\tno target\n2\t0/30001B8\tbefore ...\n")
    assert [s.timeline for s in odd] == [1, 2]
    from drkit.wal import timeline_at

    assert timeline_at(parse_lsn("0/3000000"), 3, odd) == 1
    assert timeline_at(parse_lsn("0/30001B8"), 3, odd) == 3
    assert timeline_at(parse_lsn("0/5000000"), 3, odd) == 3
    with pytest.raises(ValueError):
        parse_history("1\n")


def test_segments_between_follows_a_timeline_switch() -> None:
    history = parse_history("1\t0/5000060\treason\n")
    names = list(segments_between("0/3000028", "0/7000100", 2, history))
    assert names == [
        "000000010000000000000003",
        "000000010000000000000004",
        # the segment holding the switch point is read from the new timeline
        "000000020000000000000005",
        "000000020000000000000006",
        "000000020000000000000007",
    ]
    # no history: everything on the target timeline
    assert list(segments_between("0/3000028", "0/3000100", 1)) == ["000000010000000000000003"]
    # a switch exactly at a segment boundary
    history = parse_history("1\t0/5000000\treason\n")
    assert list(segments_between("0/4000000", "0/5000001", 2, history)) == [
        "000000010000000000000004",
        "000000020000000000000005",
    ]
    with pytest.raises(ValueError):
        list(segments_between("0/5000000", "0/4000000", 1))


def test_a_segments_first_page_names_its_cluster() -> None:
    """The long page header at the start of a segment carries the system identifier; a
    file whose first bytes are not such a header (of this segment size) names no one."""
    import struct

    from drkit.wal import LONG_HEADER_SIZE, segment_system_identifier

    seg = 16 * 1024 * 1024
    head = struct.pack("=HHIQI4xQII", 0xD110, 0x0002 | 0x0004, 1, 0x3000000, 0, 7, seg, 8192)
    assert len(head) == LONG_HEADER_SIZE
    assert segment_system_identifier(head, seg) == 7
    assert segment_system_identifier(head, 1024 * 1024) is None  # another segment size
    short = head[:2] + struct.pack("=H", 0x0004) + head[4:]  # no XLP_LONG_HEADER
    assert segment_system_identifier(short, seg) is None
    assert segment_system_identifier(head[:39], seg) is None
    assert segment_system_identifier(bytes(40), seg) is None
