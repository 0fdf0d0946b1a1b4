"""CloudWatch Embedded Metric Format (EMF) blocks for usage records: namespace ``BedrockTop``.

With EMF on, the wrapper adds to each record's line an ``_aws`` member and a few root-level
members that CloudWatch Logs turns into metrics, so that CloudWatch itself adds up every host's
and every Lambda's calls per app and model. The metrics source reads them back
(``monitor.sources.app_metrics``). Both sides use the names defined here.

Layout: the v1 record's own fields stay as they are (snake_case); the EMF members are
``_aws``, the dimensions ``App`` and ``ModelId`` and the metrics in CamelCase, names that no
record field has, so a line with an EMF block is still a valid v1 record (the reader ignores
unknown fields) and the record's fields never become metrics.

Cardinality (the bill) is set by the dimension values: one app name and one model id per
series, never a request id or a tag. Pure: no I/O.
"""

from __future__ import annotations

from typing import Final

import msgspec

NAMESPACE: Final = "BedrockTop"
APP_DIMENSION: Final = "App"
MODEL_DIMENSION: Final = "ModelId"
DIMENSION_SETS: Final = ((APP_DIMENSION, MODEL_DIMENSION), (MODEL_DIMENSION,))

REQUESTS: Final = "Requests"
INPUT_TOKENS: Final = "InputTokens"
OUTPUT_TOKENS: Final = "OutputTokens"
CACHE_READ: Final = "CacheReadInputTokens"
CACHE_WRITE: Final = "CacheWriteInputTokens"
ERRORS: Final = "Errors"  # client and server errors, as the local store counts them
THROTTLES: Final = "Throttles"
LATENCY: Final = "Latency"  # successful calls only, as the local store's latency
COUNT_METRICS: Final = (
    REQUESTS,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    CACHE_READ,
    CACHE_WRITE,
    ERRORS,
    THROTTLES,
)
METRICS: Final = (*COUNT_METRICS, LATENCY)

# A dimension value CloudWatch accepts: 1 to 1024 printable ASCII characters, not all blank.
MAX_DIMENSION_VALUE: Final = 1024
UNKNOWN_APP: Final = "unknown"

_encode = msgspec.json.Encoder().encode


def _directive(metrics: tuple[str, ...]) -> bytes:
    definitions = [
        {"Name": name, "Unit": "Milliseconds" if name == LATENCY else "Count"} for name in metrics
    ]
    return _encode(
        [
            {
                "Namespace": NAMESPACE,
                "Dimensions": [list(dims) for dims in DIMENSION_SETS],
                "Metrics": definitions,
            }
        ]
    )


# Encoded once: the directive is the same for every record of its kind.
_WITH_LATENCY: Final = msgspec.Raw(_directive(METRICS))
_WITHOUT_LATENCY: Final = msgspec.Raw(_directive(COUNT_METRICS))
_ERROR_STATUSES: Final = frozenset({"client_error", "server_error"})


def dimension_value(text: str | None, fallback: str = UNKNOWN_APP) -> str:
    """``text`` as a dimension value: non-ASCII and control characters become ``?``, cut to
    1024 characters; an empty or blank value becomes ``fallback``."""
    fits = text and len(text) <= MAX_DIMENSION_VALUE and text.isascii() and text.isprintable()
    if fits and text and not text.isspace():
        return text
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in (text or ""))
    cleaned = cleaned[:MAX_DIMENSION_VALUE].strip()
    return cleaned or fallback


def emf_members(
    *,
    epoch: float,
    app: str | None,
    model_id: str,
    status: str,
    input_tokens: int,
    output_tokens: int,
    cache_read_input_tokens: int,
    cache_write_input_tokens: int,
    latency_ms: float,
) -> bytes:
    """The EMF members of one record, encoded, without the enclosing braces."""
    ok = status == "ok"
    members: dict[str, object] = {
        "_aws": {
            "Timestamp": int(epoch * 1000),
            "CloudWatchMetrics": _WITH_LATENCY if ok else _WITHOUT_LATENCY,
        },
        APP_DIMENSION: dimension_value(app),
        MODEL_DIMENSION: dimension_value(model_id, "unknown-model"),
        REQUESTS: 1,
        INPUT_TOKENS: input_tokens,
        OUTPUT_TOKENS: output_tokens,
        CACHE_READ: cache_read_input_tokens,
        CACHE_WRITE: cache_write_input_tokens,
        ERRORS: 1 if status in _ERROR_STATUSES else 0,
        THROTTLES: 1 if status == "throttled" else 0,
    }
    if ok:
        members[LATENCY] = latency_ms
    return _encode(members)[1:-1]


def add_emf(line: bytes, members: bytes) -> bytes:
    """A record line (one JSON object and its newline) with the EMF members appended."""
    return line[:-2] + b"," + members + b"}\n"
