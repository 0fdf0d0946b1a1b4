"""Turning numbers and model ids into short text, shared by the report and the screen."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime

from monitor.pricing import split_model_id

# What must never reach a terminal as it is: C0 controls (newline and tab included), DEL, C1
# controls (8-bit CSI, OSC...), and the bidirectional overrides, embeddings, isolates and marks
# that reorder what is shown. Text from logs, AWS and configuration is other people's text.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` safe to show in a terminal: control characters, C1 codes and bidi controls
    become visible escapes (``\\x1b``, ``\\u202e``), never interpreted. The one boundary for
    untrusted text on every view; JSON output is not passed through it (it stays exact).
    ``keep_newlines``: for a multi-line panel whose line breaks are its own."""
    # The common case, at C speed: nothing to do, no copy. (isprintable() is also False for a
    # few harmless characters, such as a no-break space; the pattern decides those.)
    if text.isprintable() or _UNPRINTABLE.search(text) is None:
        return text
    if keep_newlines:
        return "\n".join(_UNPRINTABLE.sub(_escape, line) for line in text.split("\n"))
    return _UNPRINTABLE.sub(_escape, text)


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w`` -> seconds. Raises ValueError."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 90s, 15m, 2h, 7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def parse_since(text: str, now: float) -> float:
    """A duration back from ``now`` or an ISO-8601 timestamp (naive means UTC) -> POSIX
    seconds. Raises ValueError with a message fit for the command line."""
    try:
        epoch = now - parse_duration(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(
                f"--since: {text!r} is neither a duration (90s, 15m, 2h, 7d) "
                "nor an ISO-8601 timestamp (2026-11-26T09:00:00Z)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        epoch = moment.timestamp()
    # Usage records are stamped from 1970 on; a window reaching further back is a typo (and
    # cannot even be written as a date).
    if not 0 <= epoch < float("inf"):
        raise ValueError(f"--since: {text!r} reaches back before 1970; give a shorter window")
    return epoch


def iso_utc(epoch: float) -> str:
    """``2026-11-26T17:21:21Z`` (seconds precision, for reports)."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_count(value: float) -> str:
    """1234 -> ``1.2k``; 5600000 -> ``5.6M``; small values keep one decimal if fractional."""
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.1f}{suffix}"
    if value == int(value):
        return str(int(value))
    return f"{value:.1f}"


def format_ms(value: float | None) -> str:
    """Milliseconds as ``830ms`` or ``4.2s``; ``-`` when unknown."""
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.0f}s"
    if value >= 1000:
        return f"{value / 1000:.1f}s"
    return f"{value:.0f}ms"


def format_usd(value: float | None) -> str:
    """Dollars; ``unpriced`` when the price is unknown (never ``$0``)."""
    if value is None:
        return "unpriced"
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 0.01 or value == 0:
        return f"${value:,.2f}"
    return f"${value:.4f}"


def base_model_id(model_id: str) -> str:
    """The foundation model behind an id: inference-profile prefix and ARN removed."""
    return split_model_id(model_id)[1]


@functools.lru_cache(maxsize=4096)  # every row, every refresh: the same few ids and widths
def short_model_id(model_id: str, width: int) -> str:
    """Fit a model id in ``width`` cells: drop the provider, then the version suffix, then the
    date stamp, then cut the end. The profile prefix stays, because it changes the price."""
    if len(model_id) <= width:
        return model_id
    if model_id.startswith("arn:"):
        model_id = model_id.rsplit("/", 1)[-1]
    prefix, rest = split_model_id(model_id)
    _provider, dot, name = rest.partition(".")
    if dot:
        rest = name
    for shorter in (
        rest,
        re.sub(r"-v\d+(:\d+)?$", "", rest),
        re.sub(r"-\d{8}", "", re.sub(r"-v\d+(:\d+)?$", "", rest)),
    ):
        if len(prefix + shorter) <= width:
            return prefix + shorter
    text = prefix + shorter
    return text[: max(width - 1, 0)] + "…" if width > 0 else ""
