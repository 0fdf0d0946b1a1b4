"""Token estimates for calls whose response carries no count.

With a tokenizer configured (``configure_estimator`` or ``BEDROCK_TOP_TOKENIZER``: a path to a
``tokenizer.json``, a directory holding one, or a Hugging Face repository id looked up in the
local cache only), text is counted with the ``tokenizers`` library. Otherwise the rule is one
token per :data:`CHARS_PER_TOKEN` characters, rounded up. Nothing is ever downloaded.

Only text is counted: prompt and system text, message text blocks, and the generated text.
Images, documents and tool schemas are not, so an estimate is a lower bound for multimodal calls.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger("monitor.wrapper")

TOKENIZER_ENV = "BEDROCK_TOP_TOKENIZER"

# The usual rule of thumb for English text with the BPE vocabularies of current chat models
# (Anthropic and OpenAI both document "about 4 characters per token").
CHARS_PER_TOKEN = 4

# Text beyond this many characters per call is not kept for counting, so memory stays bounded;
# the estimate of a larger call is then a lower bound.
MAX_TEXT_CHARS = 1_000_000

# Keys whose string values are text a model reads (request) or writes (response), across the
# request and response bodies of the providers Bedrock serves.
REQUEST_TEXT_KEYS = frozenset(
    {"prompt", "inputText", "text", "texts", "content", "system", "input", "message"}
)
RESPONSE_TEXT_KEYS = frozenset(
    {"text", "outputText", "generation", "completion", "partial_json", "content", "input"}
)


class _Encoder(Protocol):
    def count(self, text: str) -> int: ...


class CharsPerToken:
    """The fallback rule: ``ceil(len(text) / CHARS_PER_TOKEN)``."""

    name = f"{CHARS_PER_TOKEN} characters per token"

    def count(self, text: str) -> int:
        return math.ceil(len(text) / CHARS_PER_TOKEN)


class TokenizerFile:
    """A ``tokenizers`` tokenizer loaded from a local ``tokenizer.json``."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.name = str(path)
        self._tokenizer = Tokenizer.from_file(str(path))

    def count(self, text: str) -> int:
        if not text:
            return 0
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


def find_tokenizer_file(spec: str) -> Path | None:
    """Resolve a tokenizer choice to a local ``tokenizer.json`` without touching the network.

    ``spec`` is a file, a directory containing ``tokenizer.json``, or a repository id such as
    ``Xenova/claude-tokenizer`` that was downloaded earlier into the Hugging Face cache
    (``HF_HUB_CACHE`` or ``HF_HOME`` are honoured).
    """
    candidate = Path(spec).expanduser()
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        inner = candidate / "tokenizer.json"
        return inner if inner.is_file() else None
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    cache_dir = os.environ.get("HF_HUB_CACHE")
    if cache_dir is None and os.environ.get("HF_HOME"):
        cache_dir = os.path.join(os.environ["HF_HOME"], "hub")
    found = try_to_load_from_cache(spec, "tokenizer.json", cache_dir=cache_dir)
    return Path(found) if isinstance(found, str) else None


_lock = threading.Lock()
_choice: str | None = None
_configured = False
_encoder: _Encoder | None = None


def configure_estimator(tokenizer: str | None) -> None:
    """Choose the tokenizer for estimates: a ``tokenizer.json`` path, a directory, or a Hugging
    Face repository id found in the local cache. ``None`` means ``$BEDROCK_TOP_TOKENIZER``, and
    without it the characters-per-token rule. The tokenizer is loaded on first use."""
    global _choice, _configured, _encoder
    with _lock:
        _choice, _configured, _encoder = tokenizer, True, None


def current_encoder() -> _Encoder:
    """The encoder in use, loading it on first call. A tokenizer that cannot be found or loaded
    is reported once and replaced by the characters-per-token rule."""
    global _encoder
    encoder = _encoder
    if encoder is not None:
        return encoder
    with _lock:
        if _encoder is None:
            spec = _choice if _configured and _choice else os.environ.get(TOKENIZER_ENV)
            _encoder = _load(spec)
        return _encoder


def _load(spec: str | None) -> _Encoder:
    if not spec:
        return CharsPerToken()
    path = find_tokenizer_file(spec)
    if path is None:
        logger.warning(
            "bedrock-top: tokenizer %r not found (not a tokenizer.json, nor in the local "
            "Hugging Face cache); estimating %d characters per token",
            spec,
            CHARS_PER_TOKEN,
        )
        return CharsPerToken()
    try:
        return TokenizerFile(path)
    except Exception as err:
        logger.warning(
            "bedrock-top: cannot load tokenizer %s (%s); estimating %d characters per token",
            path,
            err,
            CHARS_PER_TOKEN,
        )
        return CharsPerToken()


def count_tokens(texts: Iterable[str]) -> int:
    """Estimated tokens of some pieces of text."""
    encoder = current_encoder()
    return sum(encoder.count(text) for text in texts if text)


def collect_text(value: Any, keys: frozenset[str], out: list[str], budget: int) -> int:
    """Append the strings found under ``keys`` anywhere in a decoded JSON document to ``out``.

    Returns the characters budget left; collection stops when it is spent.
    """
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack and budget > 0:
        item, is_text = stack.pop()
        if isinstance(item, str):
            if is_text:
                out.append(item[:budget])
                budget -= len(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((child, key in keys))
        elif isinstance(item, list):
            for child in reversed(item):
                stack.append((child, is_text))
    return budget
