"""conditions.py: the one RFC 9110 decision every GET and HEAD goes through,
case by case and, for Range parsing and resolution, as properties checked with
hypothesis against a reference model written from the RFC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vidproxy.conditions import ByteRange, Plan, RangeSpec, Validators, parse_range, plan_response
from vidproxy.errors import PreconditionFailed, RangeNotSatisfiable

SIZE = 1000
ETAG = '"abc123"'
MODIFIED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
V = Validators(SIZE, ETAG, MODIFIED)


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


# ---- parse_range -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", RangeSpec(0, 99)),
        ("bytes=5-5", RangeSpec(5, 5)),
        ("bytes=100-", RangeSpec(100, None)),
        ("bytes=-100", RangeSpec(None, 100)),
        ("bytes=-0", RangeSpec(None, 0)),
        ("BYTES=1-2", RangeSpec(1, 2)),
        ("  bytes=1-2  ", RangeSpec(1, 2)),
    ],
)
def test_single_byte_ranges_are_parsed(header: str, expected: RangeSpec) -> None:
    assert parse_range(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=",
        "bytes=-",
        "bytes=5-1",
        "bytes=abc",
        "bytes=1-2,5-6",
        "bytes=0-0, -1",
        "items=0-1",
        "bytes 0-1",
        "bytes=+1-2",
        "bytes=1-2x",
    ],
)
def test_absent_invalid_and_multi_ranges_parse_to_none(header: str | None) -> None:
    assert parse_range(header) is None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (RangeSpec(0, 99), ByteRange(0, 100)),
        (RangeSpec(900, None), ByteRange(900, SIZE)),
        (RangeSpec(900, 5000), ByteRange(900, SIZE)),  # end past the size clamps
        (RangeSpec(None, 100), ByteRange(900, SIZE)),
        (RangeSpec(None, 5000), ByteRange(0, SIZE)),  # suffix longer than the object
        (RangeSpec(SIZE - 1, None), ByteRange(SIZE - 1, SIZE)),
    ],
)
def test_specs_resolve_against_the_size(spec: RangeSpec, expected: ByteRange) -> None:
    assert spec.resolve(SIZE) == expected


@pytest.mark.parametrize(
    ("spec", "size"),
    [
        (RangeSpec(None, 0), SIZE),
        (RangeSpec(SIZE, None), SIZE),
        (RangeSpec(SIZE + 1, SIZE + 5), SIZE),
        (RangeSpec(0, None), 0),
        (RangeSpec(None, 10), 0),
    ],
)
def test_unsatisfiable_specs_raise_416_with_the_size(spec: RangeSpec, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        spec.resolve(size)
    assert info.value.headers() == {"Content-Range": f"bytes */{size}"}


def test_byte_range_content_range_is_inclusive() -> None:
    assert ByteRange(10, 20).content_range(SIZE) == f"bytes 10-19/{SIZE}"


@pytest.mark.parametrize("spec", [RangeSpec(1, 2), RangeSpec(7, None), RangeSpec(None, 9)])
def test_spec_header_round_trips_through_parse_range(spec: RangeSpec) -> None:
    assert parse_range(spec.header()) == spec


# ---- plan_response -------------------------------------------------------------


def test_plain_get_is_200_full() -> None:
    assert plan_response("GET", {}, V) == Plan(200, None)


def test_range_gives_206() -> None:
    assert plan_response("GET", {"Range": "bytes=0-9"}, V) == Plan(206, ByteRange(0, 10))


def test_head_with_range_gives_206() -> None:
    assert plan_response("HEAD", {"Range": "bytes=0-9"}, V) == Plan(206, ByteRange(0, 10))


def test_invalid_range_is_ignored() -> None:
    assert plan_response("GET", {"Range": "bytes=9-1"}, V) == Plan(200, None)


def test_unsatisfiable_range_raises_416() -> None:
    with pytest.raises(RangeNotSatisfiable):
        plan_response("GET", {"Range": f"bytes={SIZE}-"}, V)


@pytest.mark.parametrize("if_match", ['"other"', 'W/"abc123"', '"x", "y"'])
def test_if_match_failing_raises_412(if_match: str) -> None:
    with pytest.raises(PreconditionFailed):
        plan_response("GET", {"If-Match": if_match}, V)


@pytest.mark.parametrize("if_match", [ETAG, "*", f'"x", {ETAG}'])
def test_if_match_holding_serves(if_match: str) -> None:
    assert plan_response("GET", {"If-Match": if_match}, V) == Plan(200, None)


def test_if_match_fails_against_a_weak_etag() -> None:
    weak = Validators(SIZE, 'W/"abc123"', MODIFIED)
    with pytest.raises(PreconditionFailed):
        plan_response("GET", {"If-Match": 'W/"abc123"'}, weak)


def test_if_unmodified_since_before_the_change_raises_412() -> None:
    headers = {"If-Unmodified-Since": http_date(MODIFIED - timedelta(seconds=1))}
    with pytest.raises(PreconditionFailed):
        plan_response("GET", headers, V)


def test_if_unmodified_since_at_the_change_serves() -> None:
    headers = {"If-Unmodified-Since": http_date(MODIFIED)}
    assert plan_response("GET", headers, V) == Plan(200, None)


def test_if_match_takes_precedence_over_if_unmodified_since() -> None:
    # RFC 9110 §13.2.2 step 2 runs only when If-Match is absent.
    headers = {"If-Match": ETAG, "If-Unmodified-Since": http_date(MODIFIED - timedelta(days=1))}
    assert plan_response("GET", headers, V) == Plan(200, None)


@pytest.mark.parametrize("if_none_match", [ETAG, 'W/"abc123"', "*", f'"x", {ETAG}'])
def test_if_none_match_matching_gives_304(if_none_match: str) -> None:
    assert plan_response("GET", {"If-None-Match": if_none_match}, V) == Plan(304, None)


def test_if_none_match_not_matching_serves() -> None:
    assert plan_response("GET", {"If-None-Match": '"other"'}, V) == Plan(200, None)


def test_if_modified_since_not_modified_gives_304() -> None:
    headers = {"If-Modified-Since": http_date(MODIFIED)}
    assert plan_response("GET", headers, V) == Plan(304, None)


def test_if_modified_since_before_the_change_serves() -> None:
    headers = {"If-Modified-Since": http_date(MODIFIED - timedelta(seconds=1))}
    assert plan_response("GET", headers, V) == Plan(200, None)


def test_if_none_match_takes_precedence_over_if_modified_since() -> None:
    headers = {"If-None-Match": '"other"', "If-Modified-Since": http_date(MODIFIED)}
    assert plan_response("GET", headers, V) == Plan(200, None)


def test_unparseable_dates_are_ignored() -> None:
    headers = {"If-Modified-Since": "yesterday", "If-Unmodified-Since": "Sun, 99 Foo"}
    assert plan_response("GET", headers, V) == Plan(200, None)


def test_precondition_failure_wins_over_not_modified() -> None:
    with pytest.raises(PreconditionFailed):
        plan_response("GET", {"If-Match": '"other"', "If-None-Match": ETAG}, V)


def test_if_range_with_the_current_etag_gives_206() -> None:
    headers = {"Range": "bytes=0-9", "If-Range": ETAG}
    assert plan_response("GET", headers, V) == Plan(206, ByteRange(0, 10))


def test_if_range_with_another_etag_gives_200_full() -> None:
    headers = {"Range": "bytes=0-9", "If-Range": '"other"'}
    assert plan_response("GET", headers, V) == Plan(200, None)


def test_if_range_with_a_weak_etag_gives_200_full() -> None:
    headers = {"Range": "bytes=0-9", "If-Range": 'W/"abc123"'}
    assert plan_response("GET", headers, V) == Plan(200, None)


def test_if_range_with_the_last_modified_date_gives_206() -> None:
    headers = {"Range": "bytes=0-9", "If-Range": http_date(MODIFIED)}
    assert plan_response("GET", headers, V) == Plan(206, ByteRange(0, 10))


def test_if_range_with_another_date_gives_200_full() -> None:
    headers = {"Range": "bytes=0-9", "If-Range": http_date(MODIFIED - timedelta(hours=1))}
    assert plan_response("GET", headers, V) == Plan(200, None)


def test_if_range_not_matching_skips_the_416() -> None:
    headers = {"Range": f"bytes={SIZE}-", "If-Range": '"other"'}
    assert plan_response("GET", headers, V) == Plan(200, None)


# ---- parse_range and resolve: properties against a reference model (hypothesis) ----

PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

DIGITS = st.text("0123456789", max_size=22)
range_like = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", DIGITS, DIGITS),
    st.builds(
        lambda u, a, b: f"{u}={a}-{b}", st.sampled_from(["BYTES", "Bytes", "items"]), DIGITS, DIGITS
    ),
    st.builds(lambda a, b, c, d: f"bytes={a}-{b},{c}-{d}", DIGITS, DIGITS, DIGITS, DIGITS),
    st.builds(
        lambda s: f"bytes={s}",
        st.text(st.sampled_from("0123456789-, \tx\u0660\u0661\uff12"), max_size=12),
    ),
    st.text(max_size=30),
)


def reference_range(header: str | None) -> RangeSpec | None:
    """RFC 9110 §14.1.1 for one range, ASCII DIGIT only; more than 20 digits and
    anything else invalid is ignored (None)."""
    if not header:
        return None
    match = re.fullmatch(r"(?i:bytes)=([0-9]{0,20})-([0-9]{0,20})", header.strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:
        return RangeSpec(None, int(last))
    if last and int(last) < int(first):
        return None
    return RangeSpec(int(first), int(last) if last else None)


@PROPERTY
@given(range_like)
@example("bytes=\u0661-\u0662")
@example("bytes=\uff11-\uff12")
@example("bytes=0-0,1-1")
@example("bytes=" + "9" * 21 + "-")
def test_parse_range_follows_the_rfc(header: str) -> None:
    assert parse_range(header) == reference_range(header)


MAX_20_DIGITS = 10**20 - 1  # longer numbers are ignored, as a server may


@PROPERTY
@given(
    st.one_of(
        st.builds(RangeSpec, st.none(), st.integers(0, MAX_20_DIGITS)),
        st.builds(RangeSpec, st.integers(0, MAX_20_DIGITS), st.none()),
        st.integers(0, MAX_20_DIGITS).flatmap(
            lambda a: st.builds(RangeSpec, st.just(a), st.integers(a, MAX_20_DIGITS))
        ),
    )
)
def test_a_parsed_range_prints_back_to_itself(spec: RangeSpec) -> None:
    assert parse_range(spec.header()) == spec


@PROPERTY
@given(
    st.one_of(
        st.builds(RangeSpec, st.none(), st.integers(0, 3000)),
        st.builds(RangeSpec, st.integers(0, 3000), st.none()),
        st.integers(0, 3000).flatmap(
            lambda a: st.builds(RangeSpec, st.just(a), st.integers(a, 3000))
        ),
    ),
    st.integers(0, 2000),
)
def test_resolve_selects_the_bytes_the_rfc_names(spec: RangeSpec, size: int) -> None:
    body = bytes(range(256)) * 8
    body = body[:size]
    if spec.start is None:
        assert spec.end is not None
        wanted = body[size - min(spec.end, size) :] if spec.end else b""
    else:
        wanted = body[spec.start : None if spec.end is None else spec.end + 1]
    try:
        chosen = spec.resolve(size)
    except RangeNotSatisfiable as exc:
        assert exc.size == size
        assert wanted == b""  # §14.1.2: satisfiable means at least one byte
    else:
        assert 0 <= chosen.start < chosen.stop <= size
        assert body[chosen.start : chosen.stop] == wanted
        assert chosen == ByteRange(chosen.start, chosen.stop)
