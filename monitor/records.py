"""The usage record, format version 1: one JSON object per line of the usage log.

This module is the only place that parses, validates and serialises records. The wrapper and the
demo write through :func:`record_line`; the log tailer reads through :func:`parse_line` and
:func:`parse_chunk`. The format is documented in ``docs/usage-record.md``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from operator import attrgetter, eq
from typing import Annotated, Final, Literal, NotRequired, TypedDict, Unpack

import msgspec

RECORD_VERSION: Final = 1

# Larger than any context window Bedrock serves by two orders of magnitude: a count above this is
# a corrupted record, not a big request.
MAX_TOKENS: Final = 100_000_000
# A day. Bedrock's own read timeout is minutes; anything longer is a clock or unit bug.
MAX_LATENCY_MS: Final = 86_400_000.0
# A line longer than this cannot be a v1 record (records are ~300 bytes); it is rejected without
# being held in memory.
MAX_LINE_BYTES: Final = 64 * 1024

Operation = Literal["InvokeModel", "InvokeModelWithResponseStream", "Converse", "ConverseStream"]
Status = Literal["ok", "client_error", "server_error", "throttled", "aborted"]
TokenSource = Literal["header", "body", "stream", "estimate", "none"]

OPERATIONS: Final[tuple[str, ...]] = (
    "InvokeModel",
    "InvokeModelWithResponseStream",
    "Converse",
    "ConverseStream",
)
STATUSES: Final[tuple[str, ...]] = ("ok", "client_error", "server_error", "throttled", "aborted")
TOKEN_SOURCES: Final[tuple[str, ...]] = ("header", "body", "stream", "estimate", "none")

TokenCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
Millis = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_LATENCY_MS)]
ShortString = Annotated[str, msgspec.Meta(max_length=256)]
TagKey = Annotated[str, msgspec.Meta(max_length=64)]
Tags = Annotated[dict[TagKey, ShortString], msgspec.Meta(max_length=32)]


class UsageRecord(msgspec.Struct, kw_only=True, gc=False):
    """One Bedrock runtime call, as the wrapper saw it.

    ``input_tokens`` excludes prompt-cache tokens, as Bedrock reports it. ``ts`` is the end of the
    request. Unknown fields in a line are ignored so that newer writers stay readable.
    """

    v: Literal[1]
    ts: Annotated[datetime, msgspec.Meta(tz=True)]
    request_id: Annotated[str, msgspec.Meta(max_length=256)]
    model_id: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    operation: Operation
    region: ShortString = ""
    input_tokens: TokenCount
    output_tokens: TokenCount
    cache_read_input_tokens: TokenCount = 0
    cache_write_input_tokens: TokenCount = 0
    latency_ms: Millis
    ttft_ms: Millis | None = None
    status: Status
    error_code: ShortString | None = None
    token_source: TokenSource
    app: ShortString | None = None
    tags: Tags | None = None
    # The output tokens the request asked for (max_tokens, maxTokens, ...): what Bedrock reserves
    # against the tokens-per-minute quota when the call starts. None: not set or not read.
    max_tokens: TokenCount | None = None
    # Who made the call, where a source knows it (the fleet's invocation logs: the IAM role and
    # session, or user). Optional and ignored by older readers, so the record stays version 1.
    caller: ShortString | None = None

    @property
    def epoch(self) -> float:
        """Request end as POSIX seconds."""
        return self.ts.timestamp()


class RecordError(ValueError):
    """A line that is not a valid v1 record. ``reason`` is short and countable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_decoder: Final = msgspec.json.Decoder(UsageRecord)


_NO_TAGS: Final = msgspec.Raw(b"null")


class _RawTagsRecord(UsageRecord, kw_only=True, gc=False):
    """A record decoded with its tags left as raw JSON: building the tags object (a dict and a
    string per value) and freeing it later is most of a record's cost in a catch-up, and a
    writer's tags are nearly always the same on every line. Decoded only in blocks; each record
    becomes a :class:`UsageRecord` before it leaves this module (see :func:`_settle_tags`)."""

    tags: msgspec.Raw = _NO_TAGS  # type: ignore[assignment]


_raw_tags_decoder: Final = msgspec.json.Decoder(_RawTagsRecord)
_tags_decoder: Final = msgspec.json.Decoder(Tags | None)
_tags_of: Final = attrgetter("tags")
# Tags objects already validated, by their JSON text: one writer's lines repeat a few.
_known_tags: dict[bytes, dict[str, str] | None] = {}
_KNOWN_TAGS_LIMIT: Final = 256
_encoder: Final = msgspec.json.Encoder()
_BOM: Final = b"\xef\xbb\xbf"
_FIELD_AT = re.compile(r"at `\$\.([A-Za-z_]+)")
_MISSING = re.compile(r"missing required field `([A-Za-z_]+)`")


def _reason_for(err: msgspec.MsgspecError) -> RecordError:
    text = str(err)
    # ValidationError subclasses DecodeError: anything else is not JSON at all.
    if not isinstance(err, msgspec.ValidationError):
        return RecordError("malformed JSON", text)
    missing = _MISSING.search(text)
    if missing:
        return RecordError(f"missing {missing.group(1)}", text)
    field = _FIELD_AT.search(text)
    if field:
        name = field.group(1)
        if name == "v":
            return RecordError("unsupported version", text)
        return RecordError(f"invalid {name}", text)
    if "Expected `object`" in text:
        return RecordError("not a JSON object", text)
    return RecordError("invalid record", text)


def parse_line(line: bytes) -> UsageRecord:
    """Parse one line (without or with its newline). Raises :class:`RecordError`."""
    if len(line) > MAX_LINE_BYTES:
        raise RecordError("line too long", f"{len(line)} bytes (limit {MAX_LINE_BYTES})")
    if line.startswith(_BOM):
        line = line[3:]
    try:
        record = _decoder.decode(line)
    except msgspec.MsgspecError as err:
        raise _reason_for(err) from None
    if math.isnan(record.latency_ms):  # pragma: no cover - JSON has no NaN literal
        raise RecordError("invalid latency_ms", "NaN")
    return record


@dataclass(frozen=True, slots=True)
class Rejection:
    """A line that was not accepted, with where it was."""

    reason: str
    detail: str
    line_index: int  # 0-based index of the line within the chunk


# A block is decoded in pieces of about this size: a bad line then costs a line-by-line parse
# of its piece only (about 70 lines), not of the whole block, and no more than the piece's
# decode is thrown away. Each piece is one decoder call, so the call's own cost stays
# negligible.
PIECE_BYTES: Final = 32 * 1024


def parse_chunk(chunk: bytes) -> tuple[list[UsageRecord], list[Rejection]]:
    """Parse a block of complete lines (ending in ``\\n``); see :func:`parse_block`."""
    records, rejected, _lines = parse_block(chunk)
    return records, rejected


def parse_block(
    data: bytes, size: int | None = None
) -> tuple[list[UsageRecord], list[Rejection], int]:
    """Parse the complete lines of ``data[:size]``; returns the records, the rejected lines and
    how many lines there were (newlines counted).

    The block is decoded piece by piece, each piece of lines in one call; only a piece that
    contains a bad line is parsed again line by line, so that every good line is kept and every
    bad one is located. Blank lines are skipped and not counted as rejected. ``size`` spares
    the caller a copy of the block without its unfinished last line.
    """
    size = len(data) if size is None else size
    records: list[UsageRecord] = []
    rejected: list[Rejection] = []
    view = memoryview(data)
    start = 0
    line_index = 0
    # Pieces are first decoded with raw tags; once a piece's lines carry different tags, the
    # rest of the block is decoded with the tags (the one decode a piece then needs).
    raw_tags = True
    while start < size:
        end = data.find(b"\n", start + PIECE_BYTES, size) + 1 or size
        piece = view[start:end]
        try:
            if raw_tags:
                settled = _raw_tags_decoder.decode_lines(piece)
                raw_tags = _settle_tags(settled)
            if raw_tags:
                records += settled
            else:
                records += _decoder.decode_lines(piece)
        except msgspec.MsgspecError:
            _parse_lines(data[start:end], line_index, records, rejected)
        line_index += data.count(b"\n", start, end)
        start = end
    return records, rejected, line_index


def _settle_tags(records: list[_RawTagsRecord]) -> bool:
    """Turn a piece's raw-tags records into :class:`UsageRecord`, all sharing one validated
    tags object, if their tags are all the same; False (records untouched) if they are not or
    the tags are invalid, for the piece to be decoded with its tags, which finds the bad line.
    The check, the assignment and the change of class run as C loops: a few tens of ns a
    record, against about 1 us for building and later freeing a tags object per record."""
    if not records:
        return True
    raws: list[msgspec.Raw] = list(map(_tags_of, records))
    first = raws[0]
    if not all(map(eq, raws, repeat(first))):
        return False
    text = bytes(first)
    if text in _known_tags:
        tags = _known_tags[text]
    else:
        try:
            tags = _tags_decoder.decode(text)
        except msgspec.MsgspecError:
            return False
        if len(_known_tags) >= _KNOWN_TAGS_LIMIT:
            _known_tags.clear()
        _known_tags[text] = tags
    # Every record of a piece shares the tags object: no reader changes a record's tags.
    any(map(setattr, records, repeat("tags"), repeat(tags)))
    any(map(setattr, records, repeat("__class__"), repeat(UsageRecord)))
    return True


def _parse_lines(
    piece: bytes, first_index: int, records: list[UsageRecord], rejected: list[Rejection]
) -> tuple[list[UsageRecord], list[Rejection]]:
    """Line by line, into ``records`` and ``rejected`` (line indices from ``first_index``)."""
    for index, line in enumerate(piece.split(b"\n"), first_index):
        if not line.strip():
            continue
        try:
            records.append(parse_line(line))
        except RecordError as err:
            rejected.append(Rejection(err.reason, err.detail[:200], index))
    return records, rejected


def format_ts(moment: datetime) -> str:
    """UTC ISO-8601 with milliseconds and ``Z``: ``2026-11-26T17:21:21.123Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + f".{utc.microsecond // 1000:03d}Z"


_second_text: tuple[int, str] = (-1, "")


def format_epoch_ts(epoch: float) -> str:
    """:func:`format_ts` of a POSIX time, truncated to whole milliseconds. The writer's path: the
    date and time of day are formatted once per second, not once per record."""
    second, milli = divmod(math.floor(epoch * 1000), 1000)
    cached = _second_text
    if cached[0] != second:
        cached = _format_second(second)
    return f"{cached[1]}.{milli:03d}Z"


def _format_second(second: int) -> tuple[int, str]:
    global _second_text
    text = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    _second_text = (second, text)
    return _second_text


def to_json_line(record: UsageRecord) -> bytes:
    """Serialise a record as one line, newline included, ready for a single ``write``."""
    fields = msgspec.structs.asdict(record)
    fields["ts"] = format_ts(record.ts)
    return _encoder.encode(fields) + b"\n"


class RecordFields(TypedDict):
    """The keyword arguments of :func:`record_line` and :func:`make_record`."""

    epoch: float
    request_id: str
    model_id: str
    operation: Operation
    input_tokens: int
    output_tokens: int
    latency_ms: float
    status: Status
    token_source: TokenSource
    region: NotRequired[str]
    cache_read_input_tokens: NotRequired[int]
    cache_write_input_tokens: NotRequired[int]
    ttft_ms: NotRequired[float | None]
    error_code: NotRequired[str | None]
    app: NotRequired[str | None]
    tags: NotRequired[dict[str, str] | None]
    max_tokens: NotRequired[int | None]
    caller: NotRequired[str | None]


_OPERATION_SET: Final = frozenset(OPERATIONS)
# 10000-01-01T00:00:00Z: four-digit years only, as ISO 8601 and the decoder want them.
_MAX_EPOCH: Final = 253_402_300_800.0
_STATUS_SET: Final = frozenset(STATUSES)
_TOKEN_SOURCE_SET: Final = frozenset(TOKEN_SOURCES)


def _is_millis(value: object) -> bool:
    return type(value) in (int, float) and 0.0 <= value <= MAX_LATENCY_MS  # type: ignore[operator]


def _field_problem(
    request_id: object,
    model_id: object,
    operation: object,
    region: object,
    counts: tuple[object, ...],
    latency_ms: object,
    ttft_ms: object,
    status: object,
    error_code: object,
    token_source: object,
    app: object,
    tags: object,
    max_tokens: object = None,
    caller: object = None,
) -> str | None:
    """The first field that :class:`UsageRecord`'s constraints would reject, or None.

    The same rules as the decoder's, checked on the values before encoding: the writer's hot
    path must not pay for a decode of its own line. ``test_records`` checks, over generated
    values, that this function and the decoder always agree.
    """
    if type(request_id) is not str or len(request_id) > 256:
        return "request_id"
    if type(model_id) is not str or not 1 <= len(model_id) <= 2048:
        return "model_id"
    if operation not in _OPERATION_SET:
        return "operation"
    if type(region) is not str or len(region) > 256:
        return "region"
    for count in counts:
        if type(count) is not int or not 0 <= count <= MAX_TOKENS:
            return "token count"
    if not _is_millis(latency_ms):
        return "latency_ms"
    if ttft_ms is not None and not _is_millis(ttft_ms):
        return "ttft_ms"
    if status not in _STATUS_SET:
        return "status"
    if error_code is not None and (type(error_code) is not str or len(error_code) > 256):
        return "error_code"
    if token_source not in _TOKEN_SOURCE_SET:
        return "token_source"
    if app is not None and (type(app) is not str or len(app) > 256):
        return "app"
    if caller is not None and (type(caller) is not str or len(caller) > 256):
        return "caller"
    if tags is not None:
        if type(tags) is not dict or len(tags) > 32:
            return "tags"
        for key, value in tags.items():
            if type(key) is not str or type(value) is not str or len(key) > 64 or len(value) > 256:
                return "tags"
    if max_tokens is not None and (
        type(max_tokens) is not int or not 0 <= max_tokens <= MAX_TOKENS
    ):
        return "max_tokens"
    return None


def record_line(
    *,
    epoch: float,
    request_id: str,
    model_id: str,
    operation: Operation,
    input_tokens: int,
    output_tokens: int,
    latency_ms: float,
    status: Status,
    token_source: TokenSource,
    region: str = "",
    cache_read_input_tokens: int = 0,
    cache_write_input_tokens: int = 0,
    ttft_ms: float | None = None,
    error_code: str | None = None,
    app: str | None = None,
    tags: dict[str, str] | None = None,
    max_tokens: int | None = None,
    caller: str | None = None,
) -> bytes:
    """One valid record as a complete line, newline included, ready for a single ``write``.

    The writer's path (the wrapper and the demo): the values are checked against the record's
    constraints before the line is encoded, so a writer can never emit a line that the reader
    would reject. Raises :class:`RecordError`.
    """
    if not 0.0 <= epoch < _MAX_EPOCH:
        raise RecordError("invalid ts", f"{epoch!r} is not a time between 1970 and 9999")
    # Rounded as written; only floats, so that a bool stays a bool and is refused below.
    if type(latency_ms) is float:
        latency_ms = round(latency_ms, 3)
    if type(ttft_ms) is float:
        ttft_ms = round(ttft_ms, 3)
    # The common case in one expression, the wrapper's hot path (a function call per rule costs
    # more than the rule); anything unusual goes through _field_problem, which names the field.
    if not (
        type(request_id) is str
        and len(request_id) <= 256
        and type(model_id) is str
        and 0 < len(model_id) <= 2048
        and type(region) is str
        and len(region) <= 256
        and type(input_tokens) is int
        and type(output_tokens) is int
        and type(cache_read_input_tokens) is int
        and type(cache_write_input_tokens) is int
        and 0 <= input_tokens <= MAX_TOKENS
        and 0 <= output_tokens <= MAX_TOKENS
        and 0 <= cache_read_input_tokens <= MAX_TOKENS
        and 0 <= cache_write_input_tokens <= MAX_TOKENS
        and type(latency_ms) is float
        and 0.0 <= latency_ms <= MAX_LATENCY_MS
        and (ttft_ms is None or (type(ttft_ms) is float and 0.0 <= ttft_ms <= MAX_LATENCY_MS))
        and (error_code is None or (type(error_code) is str and len(error_code) <= 256))
        and (app is None or (type(app) is str and len(app) <= 256))
        and (caller is None or (type(caller) is str and len(caller) <= 256))
        and tags is None
        and (max_tokens is None or (type(max_tokens) is int and 0 <= max_tokens <= MAX_TOKENS))
        and operation in _OPERATION_SET
        and status in _STATUS_SET
        and token_source in _TOKEN_SOURCE_SET
    ):
        problem = _field_problem(
            request_id,
            model_id,
            operation,
            region,
            (input_tokens, output_tokens, cache_read_input_tokens, cache_write_input_tokens),
            latency_ms,
            ttft_ms,
            status,
            error_code,
            token_source,
            app,
            tags,
            max_tokens,
            caller,
        )
        if problem is not None:
            raise RecordError(f"invalid {problem}", "value outside the v1 record's limits")
    # format_epoch_ts, inline for the same reason.
    second, milli = divmod(int(epoch * 1000), 1000)
    cached = _second_text
    if cached[0] != second:
        cached = _format_second(second)
    line = (
        _encoder.encode(
            {
                "v": RECORD_VERSION,
                "ts": f"{cached[1]}.{milli:03d}Z",
                "request_id": request_id,
                "model_id": model_id,
                "operation": operation,
                "region": region,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_read_input_tokens": cache_read_input_tokens,
                "cache_write_input_tokens": cache_write_input_tokens,
                "latency_ms": latency_ms,
                "ttft_ms": ttft_ms,
                "status": status,
                "error_code": error_code,
                "token_source": token_source,
                "app": app,
                "tags": tags,
                "max_tokens": max_tokens,
                # Only written when known: the wrapper's records keep their usual size.
                **({"caller": caller} if caller is not None else {}),
            }
        )
        + b"\n"
    )
    if len(line) > MAX_LINE_BYTES:  # only reachable through escaping of long strings
        raise RecordError("line too long", f"{len(line)} bytes (limit {MAX_LINE_BYTES})")
    return line


def make_record(**fields: Unpack[RecordFields]) -> UsageRecord:
    """Build a validated record."""
    return parse_line(record_line(**fields))
