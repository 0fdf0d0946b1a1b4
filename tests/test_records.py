from __future__ import annotations

import json
import math
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.records import (
    MAX_LINE_BYTES,
    RecordError,
    UsageRecord,
    format_epoch_ts,
    parse_chunk,
    parse_line,
    record_line,
    to_json_line,
)
from tests.conftest import record

GOOD = json.loads(to_json_line(record(epoch=1_764_000_000.123)))


def line(**changes: object) -> bytes:
    fields = dict(GOOD)
    for key, value in changes.items():
        if value is _DROP:
            fields.pop(key)
        else:
            fields[key] = value
    return json.dumps(fields).encode()


_DROP = object()


def test_round_trip_keeps_every_field() -> None:
    original = record(
        epoch=1_764_000_000.5,
        model_id="us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        cache_read_input_tokens=7,
        cache_write_input_tokens=3,
        ttft_ms=120.25,
        app="billing",
        tags={"team": "ml"},
        operation="ConverseStream",
        token_source="stream",
    )
    text = to_json_line(original)
    assert text.endswith(b"\n") and text.count(b"\n") == 1
    assert json.loads(text)["ts"] == "2025-11-24T16:00:00.500Z"
    assert parse_line(text) == original


def test_unknown_fields_are_ignored() -> None:
    parsed = parse_line(line(future_field={"x": 1}, another=3))
    assert parsed.model_id == GOOD["model_id"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"this is not json", "malformed JSON"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'"a string"', "not a JSON object"),
        (line(model_id=_DROP), "missing model_id"),
        (line(ts=_DROP), "missing ts"),
        (line(model_id=""), "invalid model_id"),
        (line(input_tokens=-1), "invalid input_tokens"),
        (line(output_tokens=1.5), "invalid output_tokens"),
        (line(output_tokens=10**12), "invalid output_tokens"),
        (line(input_tokens="12"), "invalid input_tokens"),
        (line(latency_ms=-3), "invalid latency_ms"),
        (line(ts="2026-01-01T00:00:00"), "invalid ts"),
        (line(ts="yesterday"), "invalid ts"),
        (line(status="fine"), "invalid status"),
        (line(operation="Chat"), "invalid operation"),
        (line(v=2), "unsupported version"),
        (line(tags={"k": "x" * 1000}), "invalid tags"),
        (line().replace(b'"input_tokens": 100', b'"input_tokens": NaN'), "malformed JSON"),
        (b"\x00\xff\xfe garbage \x80", "malformed JSON"),
        (b"{" * 10, "malformed JSON"),
    ],
)
def test_bad_lines_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_line(raw)
    assert caught.value.reason == reason


def test_nan_line_really_contains_nan() -> None:
    assert b"NaN" in line().replace(b'"input_tokens": 100', b'"input_tokens": NaN')


def test_bom_and_crlf_are_tolerated() -> None:
    assert parse_line(b"\xef\xbb\xbf" + line()).model_id == GOOD["model_id"]
    assert parse_line(line() + b"\r\n").model_id == GOOD["model_id"]


def test_overlong_line_is_rejected_without_parsing() -> None:
    with pytest.raises(RecordError) as caught:
        parse_line(b"x" * (MAX_LINE_BYTES + 1))
    assert caught.value.reason == "line too long"


def test_chunk_keeps_good_lines_and_locates_bad_ones() -> None:
    chunk = b"\n".join([line(), b"", b"garbage", line(), b"   ", b"[]", line()]) + b"\n"
    records, rejected = parse_chunk(chunk)
    assert len(records) == 3
    assert [(r.line_index, r.reason) for r in rejected] == [
        (2, "malformed JSON"),
        (5, "not a JSON object"),
    ]


def test_chunk_fast_path_matches_slow_path() -> None:
    lines = [to_json_line(record(epoch=1_764_000_000 + i)) for i in range(50)]
    fast, none = parse_chunk(b"".join(lines))
    slow, _ = parse_chunk(b"".join(lines) + b"junk\n")
    assert none == [] and fast == slow


def _line_by_line(block: bytes) -> tuple[list[UsageRecord], list[tuple[int, str]]]:
    records: list[UsageRecord] = []
    rejected: list[tuple[int, str]] = []
    for index, text in enumerate(block.split(b"\n")):
        if text.strip():
            try:
                records.append(parse_line(text))
            except RecordError as err:
                rejected.append((index, err.reason))
    return records, rejected


@pytest.mark.parametrize(
    "tags_of",
    [
        pytest.param(lambda i: {"team": "payments", "env": "prod"}, id="the same tags"),
        pytest.param(lambda i: None, id="no tags"),
        pytest.param(lambda i: {"n": str(i % 3)}, id="tags that differ"),
        pytest.param(lambda i: {"team": "a"} if i % 2 else None, id="some lines without"),
        pytest.param(lambda i: {"k": "v" * 300} if i == 40 else {"k": "v"}, id="a value too long"),
        pytest.param(lambda i: {"k": 7} if i == 3 else {"k": "v"}, id="a value not text"),
        pytest.param(lambda i: {f"k{j}": "v" for j in range(33)}, id="too many tags on every line"),
    ],
)
def test_blocks_decode_tags_as_lines_do(tags_of: Callable[[int], object]) -> None:
    """A block's lines are decoded with their tags left raw while all lines of a piece carry
    the same tags; the records, their tags and the rejected lines are those of parsing each
    line on its own."""
    lines = []
    for index in range(3000):  # several pieces
        fields = dict(GOOD, request_id=f"r-{index}", tags=tags_of(index))
        lines.append(json.dumps(fields, separators=(",", ":")).encode())
    block = b"\n".join(lines) + b"\n"
    records, rejected = parse_chunk(block)
    want_records, want_rejected = _line_by_line(block)
    assert {type(record) for record in records} <= {UsageRecord}
    assert records == want_records
    assert [(r.line_index, r.reason) for r in rejected] == want_rejected
    assert [record.tags for record in records] == [record.tags for record in want_records]


_KINDS = {
    "good": lambda i: json.dumps(dict(GOOD, request_id=f"r-{i}"), separators=(",", ":")).encode(),
    "bad": lambda i: b'{"v":1,"request_id":"broken","model_id":',
    "blank": lambda i: b"   ",
    "bom": lambda i: b"\xef\xbb\xbf" + json.dumps(dict(GOOD, request_id=f"b-{i}")).encode(),
    "crlf": lambda i: json.dumps(dict(GOOD, request_id=f"c-{i}")).encode() + b"\r",
    "not an object": lambda i: b"[1, 2]",
    "invalid field": lambda i: json.dumps(dict(GOOD, input_tokens=-1)).encode(),
}


@settings(max_examples=60, deadline=None)
@given(
    # About half the lines good, the rest spread over the faulty kinds.
    st.lists(st.sampled_from([*sorted(_KINDS), *["good"] * 6]), min_size=1, max_size=400),
    st.booleans(),
)
def test_pieces_with_bad_lines_parse_as_lines_do(kinds: list[str], final_newline: bool) -> None:
    """Pieces that fail to decode, wherever their bad lines are (first, last, side by side,
    many, in several pieces), give the records and the rejected lines with their line numbers
    of parsing each line on its own."""
    block = b"\n".join(_KINDS[kind](index) for index, kind in enumerate(kinds))
    if final_newline:
        block += b"\n"
    records, rejected = parse_chunk(block)
    want_records, want_rejected = _line_by_line(block)
    assert records == want_records
    assert [(r.line_index, r.reason) for r in rejected] == want_rejected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_parser_never_raises_anything_but_record_error(raw: bytes) -> None:
    try:
        parsed = parse_line(raw)
    except RecordError as err:
        assert err.reason
    else:
        assert parsed.input_tokens >= 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(GOOD)), json_values, max_size=6))
def test_field_mutations_either_parse_valid_or_reject(changes: dict[str, object]) -> None:
    raw = line(**changes)
    try:
        parsed = parse_line(raw)
    except RecordError as err:
        assert err.reason.split()[0] in {"invalid", "missing", "unsupported", "malformed", "not"}
        return
    assert parsed.input_tokens >= 0 and parsed.output_tokens >= 0
    assert math.isfinite(parsed.latency_ms) and parsed.latency_ms >= 0
    assert parsed.ts.tzinfo is not None
    assert parse_line(to_json_line(parsed)) == parsed


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=100_000_000),
    st.integers(min_value=0, max_value=100_000_000),
    st.floats(min_value=0, max_value=86_400_000, allow_nan=False),
    st.floats(min_value=0, max_value=4_102_444_800),
)
def test_valid_records_round_trip(inp: int, out: int, latency: float, epoch: float) -> None:
    original = record(epoch=epoch, input_tokens=inp, output_tokens=out, latency_ms=latency)
    assert parse_line(to_json_line(original)) == original


VALID_FIELDS: dict[str, object] = {
    "epoch": 1_764_000_000.25,
    "request_id": "r",
    "model_id": "m",
    "operation": "Converse",
    "region": "us-east-1",
    "input_tokens": 1,
    "output_tokens": 2,
    "cache_read_input_tokens": 0,
    "cache_write_input_tokens": 0,
    "latency_ms": 3.5,
    "ttft_ms": None,
    "status": "ok",
    "error_code": None,
    "token_source": "header",
    "app": None,
    "tags": None,
    "max_tokens": None,
}


def _lengths(limit: int, fill: str) -> list[str]:
    return [fill * n for n in (0, 1, limit - 1, limit, limit + 1)]


# For each field: values at, just inside and just outside each of its limits, and wrong types.
BOUNDARY_VALUES: dict[str, list[object]] = {
    "epoch": [-1.0, 0.0, 253_402_300_799.0, 253_402_300_800.0, math.inf, math.nan],
    "request_id": [*_lengths(256, "r"), 5],
    "model_id": [*_lengths(2048, "m"), None],
    "operation": ["InvokeModel", "InvokeModelWithResponseStream", "ConverseStream", "Invoke", ""],
    "region": [*_lengths(256, "e"), None],
    "input_tokens": [0, 100_000_000, 100_000_001, -1, True, 2.0, "3"],
    "output_tokens": [0, 100_000_000, 100_000_001, -1, False],
    "cache_read_input_tokens": [0, 100_000_000, 100_000_001, -1],
    "cache_write_input_tokens": [0, 100_000_000, 100_000_001, -1],
    "latency_ms": [0, 0.0, 86_400_000.0, 86_400_000.0004, 86_400_000.001, -0.001, True, "1"],
    "ttft_ms": [None, 0.0, 86_400_000.0, 86_400_000.001, -0.001, math.inf, False],
    "status": ["ok", "client_error", "server_error", "throttled", "aborted", "OK", ""],
    "error_code": [None, *_lengths(256, "c"), 1],
    "token_source": ["header", "body", "stream", "estimate", "none", "guess"],
    "app": [None, *_lengths(256, "a"), 7],
    "tags": [
        None,
        {},
        *({"k" * n: "v"} for n in (1, 63, 64, 65)),
        *({"k": "v" * n} for n in (0, 255, 256, 257)),
        *({f"t{i}": "v" for i in range(n)} for n in (31, 32, 33)),
        {"k": 1},
        ["k", "v"],
    ],
    "max_tokens": [None, 0, 1, 64_000, 100_000_000, 100_000_001, -1, 1.5, True, "64"],
}


def _assert_writer_agrees_with_reader(fields: dict[str, object]) -> None:
    """record_line checks values instead of decoding its own line: it must accept exactly what
    the reader accepts, and write what the reader reads back."""
    try:
        line = record_line(**fields)  # type: ignore[arg-type]
    except RecordError:
        written = None
    else:
        written = parse_line(line)
    # What the reader makes of the same values, encoded without any check.
    raw = dict(fields)
    epoch = raw.pop("epoch")
    try:
        raw["ts"] = format_epoch_ts(epoch)  # type: ignore[arg-type]
    except (ValueError, OverflowError, OSError):
        assert written is None
        return
    for name in ("latency_ms", "ttft_ms"):
        value = raw[name]
        if isinstance(value, float):
            if not math.isfinite(value):  # JSON has no such number: the writer must refuse it
                assert written is None
                return
            raw[name] = round(value, 3)
    try:
        read = parse_line(msgspec.json.encode({"v": 1, **raw}))
    except (RecordError, TypeError, ValueError):
        read = None
    if written is None and read is not None:
        # The one rule of the writer's own: record times before 1970 are refused.
        assert read.epoch < 0, read
        return
    assert (written is None) == (read is None), (fields, written, read)
    if written is not None:
        assert written == read


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, value) for name, values in BOUNDARY_VALUES.items() for value in values],
)
def test_writer_checks_agree_with_the_reader_at_each_limit(name: str, value: object) -> None:
    _assert_writer_agrees_with_reader(dict(VALID_FIELDS, **{name: value}))


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {name: st.sampled_from(values) for name, values in BOUNDARY_VALUES.items()}
    ),
    st.sets(st.sampled_from(sorted(VALID_FIELDS)), min_size=2, max_size=3),
)
def test_writer_checks_agree_with_the_reader_on_combinations(
    candidates: dict[str, object], names: set[str]
) -> None:
    _assert_writer_agrees_with_reader(
        dict(VALID_FIELDS, **{name: candidates[name] for name in names})
    )


def test_writer_refuses_tag_keys_that_are_not_strings() -> None:
    # JSON would turn the key 1 into "1": the writer refuses rather than change the tag.
    with pytest.raises(RecordError, match="tags"):
        record_line(**dict(VALID_FIELDS, tags={1: "v"}))  # type: ignore[arg-type]
