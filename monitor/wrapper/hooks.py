"""Instrumenting a bedrock-runtime client through botocore's event hooks.

Per call: ``provide-client-params`` starts a :class:`CallMeter` (the clock starts here, at the
request, never at client creation) and keeps it in the request context; ``after-call`` reads the
headers and parsed response; ``after-call-error`` sees calls that got no response at all.
Bodies and event streams are read later by the caller, so the objects the caller receives are
given a metered subclass of their own class (same object, same attributes, same methods) that
watches the bytes and events go by. Every path out of a meter writes exactly one record.

Per stream event the wrapper does as little as it can: events are kept, and read when the
stream ends, where the counts are in the last event or two (``metadata``, or the
``amazon-bedrock-invocationMetrics`` of the last chunk); only until the first content arrives
is each one looked at on arrival, for ``ttft_ms``. Long streams are read in batches of
``HOLD_EVENTS`` so that memory stays bounded.

Nothing in this module may change what the caller sees or raise into the caller: every hook and
every metering step catches its own failures and counts the record as dropped.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import logging
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from monitor.emf import add_emf, emf_members
from monitor.paths import LOG_ENV, default_log_path
from monitor.records import MAX_LINE_BYTES, MAX_TOKENS, Operation, record_line
from monitor.wrapper import estimate as estimating
from monitor.wrapper.extract import (
    HEADER_REQUEST_ID,
    METRICS_KEY,
    Counts,
    counts_from_body,
    counts_from_converse_usage,
    counts_from_headers,
    counts_from_invocation_metrics,
    requested_max_tokens,
    status_for_error,
)
from monitor.wrapper.stdout import STDOUT_TARGET, StdoutWriter, stdout_writer
from monitor.wrapper.writer import (
    ROTATE_ENV,
    UsageLogWriter,
    parse_max_bytes,
    record_dropped,
    writer_for,
)

logger = logging.getLogger("monitor.wrapper")

APP_ENV: Final = "BEDROCK_TOP_APP"
TAGS_ENV: Final = "BEDROCK_TOP_TAGS"
EMF_ENV: Final = "BEDROCK_TOP_EMF"
SERVICE: Final = "bedrock-runtime"
OPERATIONS: Final[tuple[Operation, ...]] = (
    "InvokeModel",
    "InvokeModelWithResponseStream",
    "Converse",
    "ConverseStream",
)

_CLIENT_ATTR: Final = "_bedrock_top_instrumentation"
_METER_ATTR: Final = "_bedrock_top_meter"
_CONTEXT_KEY: Final = "bedrock_top_meter"

# A non-streaming body larger than this is not kept for reading its usage (image payloads):
# the record then falls back to an estimate.
MAX_BODY_BYTES: Final = 16 * 1024 * 1024

# Anthropic and Amazon Nova stream chunks that carry bookkeeping, not generated content.
_NON_CONTENT_TYPES: Final = frozenset({"message_start", "message_delta", "message_stop", "ping"})
_NON_CONTENT_KEYS: Final = frozenset(
    {"messageStart", "messageStop", "metadata", "contentBlockStop", METRICS_KEY}
)

_json_decode = msgspec.json.decode

# A chunk without any of these carries no count: once the first content has been seen, such
# chunks are kept undecoded (for an estimate, should no count ever arrive) instead of parsed.
# A chunk that may carry counts; any other chunk is only kept in case an estimate is needed.
_COUNT_MARKER: Final = re.compile(rb"usage|invocationMetrics|metadata|token_count|TokenCount")
_METRICS_MARKER: Final = b"invocationMetrics"
# Output kept (unparsed) for an estimate, per call, at most.
MAX_PENDING_OUTPUTS: Final = 4096
# Stream events kept before they are read as a batch.
HOLD_EVENTS: Final = 512
# How far from a stream's end its final counts are looked for before reading every event.
TAIL_EVENTS: Final = 3


class CallMeter:
    """What is known about one call, until its record is written."""

    __slots__ = (
        "body_parts",
        "body_size",
        "content_length",
        "counts",
        "done",
        "final",
        "held",
        "instrumentation",
        "latency_ms",
        "max_tokens",
        "model_id",
        "operation",
        "output_text",
        "params",
        "pending_chunks",
        "pending_outputs",
        "pending_size",
        "region",
        "request_id",
        "start",
        "start_epoch",
        "text_budget",
        "token_source",
        "ttft_ms",
    )

    def __init__(
        self,
        instrumentation: Instrumentation,
        operation: Operation,
        model_id: str,
        region: str,
        params: Mapping[str, Any] | None,
        max_tokens: int | None = None,
    ) -> None:
        self.start_epoch = time.time()
        self.start = time.perf_counter()
        self.instrumentation = instrumentation
        self.operation = operation
        self.model_id = model_id
        self.region = region
        self.max_tokens = max_tokens
        # Kept only for an estimate, and dropped as soon as the record is written.
        self.params = params
        self.output_text: list[str] | None = [] if params is not None else None
        self.text_budget = estimating.MAX_TEXT_CHARS
        self.request_id = ""
        self.counts: Counts | None = None
        self.token_source = "none"
        self.final = False
        self.latency_ms: float | None = None
        self.ttft_ms: float | None = None
        self.pending_chunks: list[bytes] = []
        self.pending_outputs: list[Any] = []
        self.pending_size = 0
        self.body_parts: list[bytes] | None = None
        self.body_size = 0
        self.content_length: int | None = None
        # Stream events, kept to be read when the stream ends.
        self.held: list[Any] = []
        self.done = False

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000.0

    # -- the response ------------------------------------------------------------------------

    def on_response(self, status_code: int, raw_headers: Mapping[str, str], parsed: Any) -> None:
        metadata = parsed.get("ResponseMetadata") or {}
        # botocore's plain copy of the headers, lower-cased: much cheaper to look up than the
        # case-insensitive mapping of the raw response.
        headers = metadata.get("HTTPHeaders")
        if type(headers) is not dict:
            headers = raw_headers
        self.request_id = metadata.get("RequestId") or headers.get(HEADER_REQUEST_ID) or ""
        if status_code >= 300:
            self.latency_ms = self.elapsed_ms()
            code = (parsed.get("Error") or {}).get("Code") or None
            self.finish(status_for_error(status_code, code), code or f"HTTP{status_code}")
            return
        operation = self.operation
        if operation == "InvokeModel":
            self.latency_ms = self.elapsed_ms()
            counts = counts_from_headers(headers)
            if counts is not None:
                self.set_counts(counts, "header")
                self.finish("ok")
                return
            body = parsed.get("body")
            if body is None or not hasattr(body, "read"):
                self.finish("ok")
                return
            length = headers.get("content-length")
            self.content_length = int(length) if length and length.isdigit() else None
            self.body_parts = []
            _attach(body, self, _MeteredBody, _MeteredAsyncBody, is_async=_is_async_body(body))
        elif operation == "Converse":
            self.latency_ms = self.elapsed_ms()
            counts = counts_from_converse_usage(parsed.get("usage"))
            if counts is not None:
                self.set_counts(counts, "body")
            elif self.output_text is not None:
                self.collect_output(parsed.get("output"))
            self.finish("ok")
        else:
            key = "stream" if operation == "ConverseStream" else "body"
            stream = parsed.get(key)
            if stream is None:
                self.finish("ok")
                return
            _attach(
                stream,
                self,
                _MeteredEventStream,
                _MeteredAsyncEventStream,
                is_async=hasattr(type(stream), "__aiter__"),
            )

    def on_exception(self, exception: BaseException) -> None:
        """No response at all (connection refused, timeout): Bedrock's side of the call failed
        as far as the caller can tell."""
        self.latency_ms = self.elapsed_ms()
        self.finish("server_error", type(exception).__name__)

    def set_counts(self, counts: Counts, source: str, final: bool = True) -> None:
        self.counts = counts
        self.token_source = source
        self.final = final

    # -- InvokeModel body ----------------------------------------------------------------------

    def on_body_data(self, data: bytes, at_end: bool) -> None:
        if self.done:
            return
        self.body_size += len(data)
        parts = self.body_parts
        if parts is not None:
            if self.body_size <= MAX_BODY_BYTES:
                parts.append(bytes(data))
            else:
                self.body_parts = None
        if at_end or (self.content_length is not None and self.body_size >= self.content_length):
            self.on_body_end()

    def on_body_end(self) -> None:
        if self.done:
            return
        parts, self.body_parts = self.body_parts, None
        if parts:
            try:
                doc = _json_decode(b"".join(parts))
            except msgspec.DecodeError:
                doc = None
            counts = counts_from_body(doc)
            if counts is not None:
                self.set_counts(counts, "body")
            elif self.output_text is not None:
                self.collect_output(doc)
        self.finish("ok")

    # -- streams -------------------------------------------------------------------------------

    def note_first_content(self, event: Mapping[str, Any]) -> None:
        """``ttft_ms`` is the time to the stream's first content event: events are looked at one
        by one only until it arrives."""
        if self.operation == "ConverseStream":
            if "contentBlockDelta" in event or "contentBlockStart" in event:
                self.ttft_ms = self.elapsed_ms()
            return
        chunk = event.get("chunk")
        data = chunk.get("bytes") if isinstance(chunk, Mapping) else None
        if not data:
            return
        try:
            doc = _json_decode(data)
        except msgspec.DecodeError:
            doc = None
        if not isinstance(doc, dict) or (
            doc.get("type") not in _NON_CONTENT_TYPES and not _NON_CONTENT_KEYS.issuperset(doc)
        ):
            self.ttft_ms = self.elapsed_ms()

    def _on_converse_event(self, event: Mapping[str, Any]) -> None:
        delta = event.get("contentBlockDelta")
        if delta is not None:
            if self.output_text is not None:
                self.defer_output(delta.get("delta"))
        elif "metadata" in event:
            counts = counts_from_converse_usage((event["metadata"] or {}).get("usage"))
            if counts is not None:
                self.set_counts(counts, "stream")
                self.latency_ms = self.elapsed_ms()

    def _on_chunk(self, event: Mapping[str, Any]) -> None:
        chunk = event.get("chunk")
        data = chunk.get("bytes") if isinstance(chunk, Mapping) else None
        if not data:
            return
        if not _COUNT_MARKER.search(data):
            if self.output_text is not None and self.pending_size < MAX_BODY_BYTES:
                self.pending_chunks.append(data)
                self.pending_size += len(data)
            return
        try:
            doc = _json_decode(data)
        except msgspec.DecodeError:
            return
        if not isinstance(doc, dict):
            return
        kind = doc.get("type")
        metrics = counts_from_invocation_metrics(doc.get(METRICS_KEY))
        if metrics is not None:
            self.set_counts(metrics, "stream")
            self.latency_ms = self.elapsed_ms()
        elif kind == "message_start":  # Anthropic: input and cache counts up front
            usage = (doc.get("message") or {}).get("usage")
            counts = counts_from_body({"usage": usage}) if isinstance(usage, dict) else None
            if counts is not None and not self.final:
                self.set_counts(counts, "stream", final=False)
        elif kind == "message_delta":  # Anthropic: output_tokens so far, cumulative: keep the last
            usage = doc.get("usage")
            if isinstance(usage, dict) and usage.get("output_tokens") is not None:
                output_tokens = int(usage["output_tokens"])
                if self.counts is not None:
                    self.counts.output_tokens = output_tokens
                    self.final = True
                else:
                    self.set_counts(Counts(output_tokens=output_tokens), "stream", final=False)
        elif isinstance(doc.get("metadata"), dict):  # Amazon Nova through InvokeModel
            counts = counts_from_converse_usage(doc["metadata"].get("usage"))
            if counts is not None and not self.final:
                self.set_counts(counts, "stream")
                self.latency_ms = self.elapsed_ms()
        if self.output_text is not None and not self.final:
            self.defer_output(doc)

    def read_held(self, at_end: bool = False) -> None:
        """Read the events kept so far. At the end of a stream the final counts are usually in
        its last events: then the others need no reading at all."""
        held = self.held
        try:
            if self.done or not held or (at_end and self._final_counts_at(held[-TAIL_EVENTS:])):
                return
            step = self._on_converse_event if self.operation == "ConverseStream" else self._on_chunk
            for event in held:
                step(event)
        finally:
            held.clear()

    def _final_counts_at(self, events: list[Any]) -> bool:
        for event in reversed(events):
            if self.operation == "ConverseStream":
                metadata = event.get("metadata")
                counts = counts_from_converse_usage((metadata or {}).get("usage"))
            else:
                chunk = event.get("chunk")
                data = chunk.get("bytes") if isinstance(chunk, Mapping) else None
                if not data or _METRICS_MARKER not in data:
                    continue
                try:
                    doc = _json_decode(data)
                except msgspec.DecodeError:
                    continue
                counts = (
                    counts_from_invocation_metrics(doc.get(METRICS_KEY))
                    if isinstance(doc, dict)
                    else None
                )
            if counts is not None:
                self.set_counts(counts, "stream")
                return True
        return False

    def on_stream_end(self) -> None:
        self.read_held(at_end=True)
        if self.latency_ms is None:
            self.latency_ms = self.elapsed_ms()
        self.finish("ok")

    def on_stream_error(self, error: BaseException) -> None:
        self.read_held(at_end=True)
        response = getattr(error, "response", None)
        code = None
        if isinstance(response, Mapping):
            code = (response.get("Error") or {}).get("Code")
        self.finish("aborted", code or type(error).__name__)

    def abandon(self) -> None:
        """The caller closed, stopped reading, or dropped the body or stream."""
        if self.done:
            return
        if self.operation == "InvokeModel":
            self.on_body_end()
        else:
            self.read_held(at_end=True)
            self.finish("ok" if self.final else "aborted")

    # -- the record ----------------------------------------------------------------------------

    def defer_output(self, value: Any) -> None:
        """Keep streamed output for an estimate; its text is only walked if one is needed."""
        if len(self.pending_outputs) < MAX_PENDING_OUTPUTS:
            self.pending_outputs.append(value)

    def collect_output(self, value: Any) -> None:
        if self.output_text is not None and self.text_budget > 0:
            self.text_budget = estimating.collect_text(
                value, estimating.RESPONSE_TEXT_KEYS, self.output_text, self.text_budget
            )

    def finish(self, status: str, error_code: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        _unfinished.discard(self)
        try:
            counts = self.counts
            if counts is not None and self.final and (status == "ok" or status == "aborted"):
                source = self.token_source
            else:
                counts, source = self._resolved_counts(status)
            latency = self.latency_ms if self.latency_ms is not None else self.elapsed_ms()
            instrumentation = self.instrumentation
            line = record_line(
                epoch=self.start_epoch + latency / 1000.0,
                request_id=self.request_id[:256],
                model_id=self.model_id,
                operation=self.operation,
                region=self.region,
                input_tokens=min(counts.input_tokens, MAX_TOKENS),
                output_tokens=min(counts.output_tokens, MAX_TOKENS),
                cache_read_input_tokens=min(counts.cache_read_input_tokens, MAX_TOKENS),
                cache_write_input_tokens=min(counts.cache_write_input_tokens, MAX_TOKENS),
                latency_ms=latency,
                ttft_ms=self.ttft_ms,
                status=status,  # type: ignore[arg-type]
                error_code=error_code[:256] if error_code else None,
                token_source=source,  # type: ignore[arg-type]
                app=instrumentation.app,
                tags=instrumentation.tags,
                max_tokens=None if self.max_tokens is None else min(self.max_tokens, MAX_TOKENS),
            )
            if instrumentation.emf:
                line = _with_emf(line, self, status, counts, latency)
        except Exception as err:
            record_dropped(f"cannot build the record of a {self.operation} call: {err!r}")
            return
        finally:
            self.params = None
            self.output_text = None
            self.body_parts = None
            self.pending_chunks = []
            self.pending_outputs = []
            self.held.clear()
        instrumentation.writer.write(line)

    def _resolved_counts(self, status: str) -> tuple[Counts, str]:
        if status not in ("ok", "aborted"):
            return Counts(), "none"  # a refused call is not billed
        counts = self.counts
        if counts is not None and self.final:
            return counts, self.token_source
        if self.params is None:  # estimates off
            return (counts, self.token_source) if counts is not None else (Counts(), "none")
        for value in self.pending_outputs:
            self.collect_output(value)
        for data in self.pending_chunks:
            with contextlib.suppress(msgspec.DecodeError):
                self.collect_output(_json_decode(data))
        known = counts or Counts()
        input_tokens = known.input_tokens
        if counts is None:
            input_tokens = estimating.count_tokens(_request_text(self.operation, self.params))
        output_tokens = max(known.output_tokens, estimating.count_tokens(self.output_text or ()))
        return (
            Counts(
                input_tokens,
                output_tokens,
                known.cache_read_input_tokens,
                known.cache_write_input_tokens,
            ),
            "estimate",
        )


def _request_text(operation: str, params: Mapping[str, Any]) -> list[str]:
    texts: list[str] = []
    keys = estimating.REQUEST_TEXT_KEYS
    budget = estimating.MAX_TEXT_CHARS
    if operation.startswith("Converse"):
        budget = estimating.collect_text(params.get("system"), keys | {"system"}, texts, budget)
        estimating.collect_text(params.get("messages"), keys, texts, budget)
        return texts
    body = params.get("body")
    if isinstance(body, (bytes, bytearray, str)):
        try:
            doc = _json_decode(body)
        except msgspec.DecodeError:
            doc = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
            return [doc[:budget]]
        estimating.collect_text(doc, keys, texts, budget)
    return texts


# -- metered bodies and streams ----------------------------------------------------------------


def _meter_of(obj: Any) -> CallMeter | None:
    meter = obj.__dict__.get(_METER_ATTR)
    return meter if meter is not None and not meter.done else None


def _guarded(meter: CallMeter, step: Any, *args: Any) -> None:
    """Run one metering step; a failure loses this record, never the caller's data."""
    try:
        step(*args)
    except Exception as err:
        _metering_failed(meter, err)


def _metering_failed(meter: CallMeter, err: Exception) -> None:
    meter.done = True
    _unfinished.discard(meter)
    meter.held.clear()
    record_dropped(f"internal error metering a {meter.operation} call: {err!r}")


class _Metered:
    """What every metered body and stream does when the caller closes it or it is collected:
    its record is finished with what is known."""

    def _bedrock_top_abandon(self) -> None:
        meter = _meter_of(self)
        if meter is not None:
            _guarded(meter, meter.abandon)

    def close(self) -> None:
        self._bedrock_top_abandon()
        super().close()  # type: ignore[misc]

    def __del__(self) -> None:
        # Collected unread or half read. botocore's own bodies leave the raw stream alone when
        # collected (their ``__del__`` does nothing), and so does this.
        self._bedrock_top_abandon()


class _MeteredBody(_Metered):
    """Mixed into a botocore ``StreamingBody``: its read paths all end in ``read``/``readinto``."""

    def read(self, amt: int | None = None) -> bytes:
        meter = _meter_of(self)
        try:
            data: bytes = super().read(amt)  # type: ignore[misc]
        except BaseException:
            if meter is not None:
                _guarded(meter, meter.on_body_end)
            raise
        if meter is not None:
            _guarded(meter, meter.on_body_data, data, amt is None or not data)
        return data

    def readinto(self, b: Any) -> int:
        meter = _meter_of(self)
        count: int = super().readinto(b)  # type: ignore[misc]
        if meter is not None:
            _guarded(meter, meter.on_body_data, bytes(memoryview(b)[:count]), count == 0)
        return count

    def __exit__(self, *exc_info: Any) -> None:
        # ``with body as raw`` hands the caller urllib3's stream itself, bypassing ``read``: the
        # bytes are not seen, so the record is finished (with an estimate) when the block ends.
        super().__exit__(*exc_info)  # type: ignore[misc]
        self._bedrock_top_abandon()


class _MeteredAsyncBody(_Metered):
    """Mixed into an aiobotocore streaming body (aiohttp or httpx)."""

    async def read(self, amt: int | None = None) -> bytes:
        meter = _meter_of(self)
        try:
            data: bytes = await super().read(amt)  # type: ignore[misc]
        except BaseException:
            if meter is not None:
                _guarded(meter, meter.on_body_end)
            raise
        if meter is not None:
            _guarded(meter, meter.on_body_data, data, amt is None or not data)
        return data

    async def readinto(self, b: Any) -> int:
        meter = _meter_of(self)
        count: int = await super().readinto(b)  # type: ignore[misc]
        if meter is not None:
            _guarded(meter, meter.on_body_data, bytes(memoryview(b)[:count]), count == 0)
        return count


class _MeteredEventStream(_Metered):
    """Mixed into a botocore ``EventStream``."""

    def __iter__(self) -> Any:
        meter = _meter_of(self)
        events = super().__iter__()  # type: ignore[misc]
        if meter is None:
            yield from events
            return
        try:
            for event in events:
                _hold(meter, event)
                yield event
        except GeneratorExit:
            # The caller left the loop: this iterator is gone, so is the rest of the stream.
            _guarded(meter, meter.abandon)
            events.close()
            raise
        except BaseException as err:
            _guarded(meter, meter.on_stream_error, err)
            raise
        _guarded(meter, meter.on_stream_end)


def _hold(meter: CallMeter, event: Any) -> None:
    """One event passing to the caller: kept, and read at the end (or a batch at a time); the
    first content event sets the time to first token."""
    if meter.done:
        return
    held = meter.held
    held.append(event)
    if meter.ttft_ms is None:
        _guarded(meter, meter.note_first_content, event)
    if len(held) >= HOLD_EVENTS:
        _guarded(meter, meter.read_held)


class _MeteredAsyncEventStream(_Metered):
    """Mixed into an aiobotocore ``AioEventStream`` (``async for`` only)."""

    def __aiter__(self) -> Any:
        return self._bedrock_top_events(super().__aiter__())  # type: ignore[misc]

    async def _bedrock_top_events(self, events: Any) -> Any:
        meter = _meter_of(self)
        if meter is None:
            async for event in events:
                yield event
            return
        try:
            async for event in events:
                _hold(meter, event)
                yield event
        except GeneratorExit:
            _guarded(meter, meter.abandon)
            raise
        except BaseException as err:
            _guarded(meter, meter.on_stream_error, err)
            raise
        _guarded(meter, meter.on_stream_end)


_metered_classes: dict[tuple[type, type], type] = {}


def _metered_class(base: type, mixin: type) -> type:
    cls = _metered_classes.get((base, mixin))
    if cls is None:
        # Same name, module and qualified name as the original, so reprs and error messages
        # the caller sees do not change.
        cls = type(
            base.__name__,
            (mixin, base),
            {"__module__": base.__module__, "__qualname__": base.__qualname__},
        )
        _metered_classes[(base, mixin)] = cls
    return cls


def _is_async_body(body: Any) -> bool:
    return inspect.iscoroutinefunction(type(body).read)


def _attach(
    obj: Any, meter: CallMeter, sync_mixin: type, async_mixin: type, is_async: bool
) -> None:
    """Give the caller's own object a metered class; it records when finished, closed or
    collected."""
    base = type(obj)
    if base in _metered_classes.values():
        meter.finish("ok")
        return
    obj.__class__ = _metered_class(base, async_mixin if is_async else sync_mixin)
    obj.__dict__[_METER_ATTR] = meter
    _unfinished.add(meter)


# Meters of bodies and streams handed to the caller and not finished yet. A body or stream that
# is collected finishes its record from its ``__del__``; the ones still alive when the
# interpreter exits are finished here.
_unfinished: set[CallMeter] = set()


def _finish_unfinished() -> None:
    for meter in list(_unfinished):
        _guarded(meter, meter.abandon)


atexit.register(_finish_unfinished)
if hasattr(os, "register_at_fork"):
    # A forked child does not own its parent's calls: their records are the parent's to write.
    os.register_at_fork(after_in_child=_unfinished.clear)


# -- the client's hooks ------------------------------------------------------------------------


LineWriter = UsageLogWriter | StdoutWriter


class Instrumentation:
    """The settings and event handlers attached to one client."""

    def __init__(
        self,
        writer: LineWriter,
        app: str | None,
        tags: dict[str, str] | None,
        estimate: bool,
        emf: bool = False,
    ) -> None:
        self.configure(writer, app, tags, estimate, emf)

    def configure(
        self,
        writer: LineWriter,
        app: str | None,
        tags: dict[str, str] | None,
        estimate: bool,
        emf: bool = False,
    ) -> None:
        self.writer = writer
        self.app = app
        self.tags = tags
        self.estimate = estimate
        self.emf = emf

    def on_params(self, params: Any, model: Any, context: Any, **_: Any) -> None:
        try:
            context[_CONTEXT_KEY] = CallMeter(
                self,
                model.name,
                str(params.get("modelId", "")),
                str(context.get("client_region") or ""),
                params if self.estimate else None,
                requested_max_tokens(model.name, params),
            )
        except Exception as err:
            record_dropped(f"internal error starting a call: {err!r}")

    def on_after_call(self, http_response: Any, parsed: Any, context: Any, **_: Any) -> None:
        meter = context.pop(_CONTEXT_KEY, None)
        if meter is None:
            return
        try:  # what _guarded does, inline: this runs on every call
            meter.on_response(
                int(getattr(http_response, "status_code", 0) or 0),
                getattr(http_response, "headers", None) or {},
                parsed if type(parsed) is dict or isinstance(parsed, Mapping) else {},
            )
        except Exception as err:
            _metering_failed(meter, err)

    def on_after_call_error(self, exception: BaseException, context: Any, **_: Any) -> None:
        meter = context.pop(_CONTEXT_KEY, None)
        if meter is not None:
            _guarded(meter, meter.on_exception, exception)


def _with_emf(line: bytes, meter: CallMeter, status: str, counts: Counts, latency: float) -> bytes:
    """The record's line with its EMF block; the plain record when the block would make the
    line longer than a reader accepts (the record matters more than its metrics)."""
    extended = add_emf(
        line,
        emf_members(
            epoch=meter.start_epoch + latency / 1000.0,
            app=meter.instrumentation.app,
            model_id=meter.model_id,
            status=status,
            input_tokens=min(counts.input_tokens, MAX_TOKENS),
            output_tokens=min(counts.output_tokens, MAX_TOKENS),
            cache_read_input_tokens=min(counts.cache_read_input_tokens, MAX_TOKENS),
            cache_write_input_tokens=min(counts.cache_write_input_tokens, MAX_TOKENS),
            latency_ms=round(latency, 3),
        ),
    )
    return extended if len(extended) <= MAX_LINE_BYTES else line


def env_flag(name: str) -> bool:
    """An on/off environment variable: ``1``, ``true``, ``yes`` or ``on`` (any case) is on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def default_app() -> str:
    """``$BEDROCK_TOP_APP``, else the running program's name (``app.py`` -> ``app``)."""
    name = os.environ.get(APP_ENV, "").strip()
    if name:
        return name[:256]
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0 in ("", "-c", "-m", "-"):
        return "python"
    path = Path(argv0)
    name = path.stem if path.suffix == ".py" else path.name
    if name == "__main__":
        name = path.parent.name
    return (name or "python")[:256]


def parse_tags(text: str) -> dict[str, str]:
    """``team=search,env=prod`` -> ``{"team": "search", "env": "prod"}``."""
    tags: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"tag {item.strip()!r} is not KEY=VALUE")
        tags[key.strip()] = value.strip()
    return tags


def _checked_tags(tags: Mapping[str, str]) -> dict[str, str]:
    if len(tags) > 32:
        raise ValueError(f"at most 32 tags are recorded, got {len(tags)}")
    checked: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"tag {key!r}: keys and values must be strings")
        if len(key) > 64 or len(value) > 256:
            raise ValueError(f"tag {key[:64]!r}: key at most 64, value at most 256 characters")
        checked[key] = value
    return checked


def _env_tags() -> dict[str, str] | None:
    text = os.environ.get(TAGS_ENV, "")
    if not text.strip():
        return None
    try:
        return _checked_tags(parse_tags(text))
    except ValueError as err:
        logger.warning("bedrock-top: ignoring %s: %s", TAGS_ENV, err)
        return None


def _env_max_bytes() -> int | None:
    try:
        return parse_max_bytes(os.environ.get(ROTATE_ENV))
    except ValueError as err:
        logger.warning("bedrock-top: ignoring %s: %s", ROTATE_ENV, err)
        return None


def instrument(
    client: Any,
    *,
    log_path: str | os.PathLike[str] | None = None,
    app: str | None = None,
    tags: Mapping[str, str] | None = None,
    estimate: bool = True,
    max_log_bytes: int | None = None,
    log: str | os.PathLike[str] | None = None,
    emf: bool | None = None,
) -> Any:
    """Record every InvokeModel, InvokeModelWithResponseStream, Converse and ConverseStream call
    of a boto3 or aiobotocore ``bedrock-runtime`` client in the usage log; returns the client.

    ``log_path`` defaults to ``$BEDROCK_TOP_LOG`` or the platform data directory (the file the
    monitor tails); ``app`` to ``$BEDROCK_TOP_APP`` or the program's name; ``tags`` to
    ``$BEDROCK_TOP_TAGS`` (``k=v,k=v``). ``estimate`` counts tokens locally when a response has
    no count (such records say ``token_source: "estimate"``). ``max_log_bytes`` (or
    ``$BEDROCK_TOP_LOG_MAX_BYTES``) rotates the log to ``<log>.1`` when it grows past that size.
    ``log`` is ``log_path`` by its shorter name; ``"-"`` (or ``BEDROCK_TOP_LOG=-``) writes the
    records to standard output instead of a file (Lambda, containers). ``emf`` (default
    ``$BEDROCK_TOP_EMF``) adds a CloudWatch Embedded Metric Format block to each record
    (namespace ``BedrockTop``, dimensions ``[App, ModelId]`` and ``[ModelId]``).

    Instrumenting a client again only updates these settings.
    """
    meta = getattr(client, "meta", None)
    service_model = getattr(meta, "service_model", None)
    service = getattr(service_model, "service_name", None)
    if service != SERVICE:
        raise ValueError(
            f"instrument() needs a {SERVICE!r} client, got {service or type(client).__name__!r}"
        )
    if app is not None and (not isinstance(app, str) or len(app) > 256):
        raise ValueError("app must be a string of at most 256 characters")
    if log is not None and log_path is not None and os.fspath(log) != os.fspath(log_path):
        raise ValueError("give the log as log= or log_path=, not both")
    target = log if log is not None else log_path
    if max_log_bytes is not None and max_log_bytes <= 0:
        raise ValueError("max_log_bytes must be positive")
    writer: LineWriter
    if _is_stdout(target):
        writer = stdout_writer()
    else:
        path = Path(target) if target is not None else default_log_path()
        writer = writer_for(path.expanduser(), max_log_bytes or _env_max_bytes())
    checked_tags = _checked_tags(tags) if tags is not None else _env_tags()
    app_name = app if app is not None else default_app()
    emf_on = env_flag(EMF_ENV) if emf is None else bool(emf)

    existing = client.__dict__.get(_CLIENT_ATTR)
    if existing is not None:
        # Possibly from another copy of this module (zero-code mode loads its own): same shape.
        existing.configure(writer, app_name, checked_tags, estimate, emf_on)
        return client
    instrumentation = Instrumentation(writer, app_name, checked_tags, estimate, emf_on)
    client.__dict__[_CLIENT_ATTR] = instrumentation
    events = client.meta.events
    for operation in OPERATIONS:
        events.register(
            f"provide-client-params.{SERVICE}.{operation}",
            instrumentation.on_params,
            unique_id=f"bedrock-top-params-{operation}",
        )
        events.register(
            f"after-call.{SERVICE}.{operation}",
            instrumentation.on_after_call,
            unique_id=f"bedrock-top-after-{operation}",
        )
        events.register(
            f"after-call-error.{SERVICE}.{operation}",
            instrumentation.on_after_call_error,
            unique_id=f"bedrock-top-error-{operation}",
        )
    return client


def _is_stdout(target: str | os.PathLike[str] | None) -> bool:
    if target is None:
        return os.environ.get(LOG_ENV, "").strip() == STDOUT_TARGET
    return os.fspath(target) == STDOUT_TARGET


def is_instrumented(client: Any) -> bool:
    """Whether :func:`instrument` has been applied to this client."""
    return getattr(client, "__dict__", {}).get(_CLIENT_ATTR) is not None
