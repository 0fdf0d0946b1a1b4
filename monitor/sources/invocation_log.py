"""CloudWatch Logs events -> usage records: Bedrock's model invocation logs and shipped v1 records.

Pure: no I/O. One event's message is one of

* a Bedrock ``ModelInvocationLog`` record (``schemaType``), one JSON object per call, written by
  Bedrock's model invocation logging for every caller in the account and region;
* a bedrock-top v1 usage record (``"v": 1``), a whole line as the wrapper writes it, or the JSON
  part of a Lambda log line (``<time>\\t<request id>\\tINFO\\t{...}``).

Privacy: prompt and response bodies (``inputBodyJson``, ``outputBodyJson``) are never decoded
into Python objects, kept or passed on. The decoder's types name only counts and ids, so msgspec
skips everything else; of ``outputBodyJson`` only ``metrics.latencyMs`` is read, from the raw
bytes, with a type that has no other field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import msgspec

from monitor.records import (
    MAX_LATENCY_MS,
    MAX_LINE_BYTES,
    MAX_TOKENS,
    OPERATIONS,
    RecordError,
    Status,
    UsageRecord,
    parse_line,
)

INVOCATION_SCHEMA: Final = "ModelInvocationLog"
# Invocation-log events carry the bodies (up to 100 KB each before Bedrock moves them to S3).
MAX_EVENT_BYTES: Final = 1024 * 1024
MAX_TAGS: Final = 32
_MAX_EPOCH: Final = 253_402_300_800.0  # 10000-01-01: four-digit years, as the record's ts

# Error codes of the runtime API, by what they say about the call.
THROTTLE_CODES: Final = frozenset(
    {"ThrottlingException", "ServiceQuotaExceededException", "TooManyRequestsException"}
)
SERVER_CODES: Final = frozenset(
    {
        "InternalServerException",
        "ServiceUnavailableException",
        "ModelErrorException",
        "ModelNotReadyException",
        "ModelTimeoutException",
        "ModelStreamErrorException",
    }
)


class _Identity(msgspec.Struct):
    arn: str | None = None


class _Input(msgspec.Struct):
    inputTokenCount: int | None = None  # the log's own field names
    cacheReadInputTokenCount: int | None = None
    cacheWriteInputTokenCount: int | None = None


class _Output(msgspec.Struct):
    outputTokenCount: int | None = None
    # Raw bytes, never decoded as a whole: only metrics.latencyMs is read from them.
    outputBodyJson: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class _Metrics(msgspec.Struct):
    latencyMs: float | None = None


class _BodyMetrics(msgspec.Struct):
    metrics: _Metrics | None = None


class _InvocationLog(msgspec.Struct):
    schemaType: str
    timestamp: str | None = None
    requestId: str | None = None
    operation: str | None = None
    modelId: str | None = None
    region: str | None = None
    inferenceRegion: str | None = None
    identity: _Identity | None = None
    requestMetadata: dict[str, str | int | float | bool | None] | None = None
    input: _Input | None = None
    output: _Output | None = None
    errorCode: str | None = None


class _Kind(msgspec.Struct):
    """Just enough to tell the two kinds apart."""

    schemaType: str | None = None
    v: int | None = None


_kind_decoder: Final = msgspec.json.Decoder(_Kind)
_log_decoder: Final = msgspec.json.Decoder(_InvocationLog)
_body_decoder: Final = msgspec.json.Decoder(_BodyMetrics)
_ASSUMED_ROLE = re.compile(r"^arn:[^:]+:sts::\d*:assumed-role/(.+)$")
_IAM = re.compile(r"^arn:[^:]+:iam::\d*:(user|role)/(?:.*/)?([^/]+)$")


@dataclass(frozen=True, slots=True)
class EventRejection:
    """An event that was not turned into a record: why (short, countable) and which event."""

    reason: str
    detail: str
    event_id: str = ""


def short_caller(arn: str | None) -> str | None:
    """A caller as a person reads it: an assumed role as ``role/session``, an IAM user as
    ``user/name``, a role as ``role/name``, the account root as ``root``; anything else as
    given (bounded to the record's 256 characters)."""
    if not arn:
        return None
    assumed = _ASSUMED_ROLE.match(arn)
    if assumed:
        return assumed.group(1)[:256]
    iam = _IAM.match(arn)
    if iam:
        return f"{iam.group(1)}/{iam.group(2)}"[:256]
    if arn.endswith(":root"):
        return "root"
    return arn[:256]


def _status(error_code: str | None) -> Status:
    if not error_code:
        return "ok"
    if error_code in THROTTLE_CODES:
        return "throttled"
    if error_code in SERVER_CODES:
        return "server_error"
    return "client_error"


def _count(value: int | None, name: str) -> int:
    if value is None:
        return 0
    if not 0 <= value <= MAX_TOKENS:
        raise RecordError("absurd token count", f"{name} = {value}")
    return value


def _epoch(text: str | None, fallback_ms: int | None) -> float:
    if text:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise RecordError("invalid timestamp", text[:64]) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if fallback_ms is not None:
        return fallback_ms / 1000.0
    raise RecordError("missing timestamp", "neither the record nor the event has a time")


def _latency_ms(output: _Output | None) -> float:
    """``outputBodyJson.metrics.latencyMs`` where the body has it (Converse), else 0."""
    if output is None or not output.outputBodyJson:
        return 0.0
    try:
        body = _body_decoder.decode(output.outputBodyJson)
    except msgspec.MsgspecError:  # a stream's list of events, or another provider's body
        return 0.0
    latency = body.metrics.latencyMs if body.metrics is not None else None
    if latency is None or not 0.0 <= latency <= MAX_LATENCY_MS:
        return 0.0
    return float(latency)


def _tags(metadata: dict[str, str | int | float | bool | None] | None) -> dict[str, str] | None:
    """The caller's ``requestMetadata`` as record tags, within the record's limits."""
    if not metadata:
        return None
    tags: dict[str, str] = {}
    for key, value in metadata.items():
        if value is None or len(key) > 64 or len(tags) >= MAX_TAGS:
            continue
        tags[key] = str(value)[:256]
    return tags or None


def from_invocation_log(log: _InvocationLog, event_ms: int | None) -> UsageRecord:
    operation = log.operation or ""
    if operation not in OPERATIONS:
        raise RecordError("unsupported operation", operation[:64] or "no operation")
    if not log.modelId:
        raise RecordError("missing modelId", "the invocation log has no modelId")
    entry = log.input or _Input()
    out = log.output or _Output()
    input_tokens = _count(entry.inputTokenCount, "inputTokenCount")
    output_tokens = _count(out.outputTokenCount, "outputTokenCount")
    metadata = log.requestMetadata or {}
    app = metadata.get("app")
    tags = _tags(log.requestMetadata)
    if log.inferenceRegion:
        tags = {**(tags or {}), "inference_region": log.inferenceRegion[:256]}
        if len(tags) > MAX_TAGS:
            tags.pop(next(iter(tags)))
    counted = entry.inputTokenCount is not None or out.outputTokenCount is not None
    epoch = _epoch(log.timestamp, event_ms)
    if not 0.0 <= epoch < _MAX_EPOCH:
        raise RecordError("invalid timestamp", f"{epoch!r} is not a time between 1970 and 9999")
    error_code = log.errorCode[:256] if log.errorCode else None
    # Built directly, not through record_line and the decoder (a third of the cost): every
    # value was checked against the record's limits above or is cut to them here.
    return UsageRecord(
        v=1,
        ts=datetime.fromtimestamp(epoch, tz=UTC),
        request_id=(log.requestId or "")[:256],
        model_id=log.modelId[:2048],
        operation=operation,  # type: ignore[arg-type]  # checked against OPERATIONS above
        region=(log.region or "")[:256],
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_input_tokens=_count(entry.cacheReadInputTokenCount, "cacheReadInputTokenCount"),
        cache_write_input_tokens=_count(
            entry.cacheWriteInputTokenCount, "cacheWriteInputTokenCount"
        ),
        latency_ms=_latency_ms(out),
        status=_status(log.errorCode),
        error_code=error_code,
        # Bedrock's own counts, as the response body carries them.
        token_source="body" if counted else "none",
        app=None if app is None else str(app)[:256],
        tags=tags,
        caller=short_caller(log.identity.arn if log.identity is not None else None),
    )


def _json_part(message: bytes) -> bytes:
    """The JSON object in a message: the whole message, or what follows a Lambda line's prefix
    (``<time>\\t<request id>\\tINFO\\t``)."""
    stripped = message.strip()
    if stripped.startswith(b"{"):
        return stripped
    start = stripped.find(b"{")
    return stripped[start:] if start > 0 else stripped


def parse_event(message: str | bytes, event_ms: int | None = None) -> UsageRecord:
    """One CloudWatch Logs event's message as a record. ``event_ms``: the event's timestamp,
    used where the message has none. Raises :class:`~monitor.records.RecordError`."""
    raw = message.encode("utf-8", "replace") if isinstance(message, str) else message
    if len(raw) > MAX_EVENT_BYTES:
        raise RecordError("event too long", f"{len(raw)} bytes (limit {MAX_EVENT_BYTES})")
    body = _json_part(raw)
    try:
        kind = _kind_decoder.decode(body)
    except msgspec.ValidationError:
        raise RecordError("unknown schema", "a JSON value that is not a record") from None
    except msgspec.DecodeError:
        raise RecordError("not JSON", raw[:80].decode("utf-8", "replace")) from None
    if kind.schemaType == INVOCATION_SCHEMA:
        try:
            log = _log_decoder.decode(body)
        except msgspec.ValidationError as err:
            raise RecordError("invalid invocation log", str(err)[:200]) from None
        return from_invocation_log(log, event_ms)
    if kind.v is not None:
        if len(body) > MAX_LINE_BYTES:
            raise RecordError("line too long", f"{len(body)} bytes (limit {MAX_LINE_BYTES})")
        return parse_line(body)
    raise RecordError("unknown schema", f"schemaType {kind.schemaType!r}"[:80])
