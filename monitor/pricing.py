"""Prices per model and the cost of a tally. Pure: no I/O.

The built-in table is dated (:data:`PRICES_AS_OF`) and its source is given in ``docs/pricing.md``;
the configuration overrides or extends it per model id or glob. A model without a price is
*unpriced*: :meth:`PriceBook.cost_usd` returns ``None`` for it, never ``0.0``.

Resolution of a model id, as Bedrock received it (see ``docs/pricing.md``):

1. The id as given (an inference-profile id or an ARN included) is matched against every key;
   a key that matches it was written for exactly that id, so no profile multiplier applies.
2. Otherwise the id is reduced to its base model (``us.anthropic.x`` -> ``anthropic.x``; the
   resource of a ``foundation-model/`` or ``inference-profile/`` ARN), matched again, and the
   multiplier configured for its inference-profile prefix (``profile_multipliers``) is applied.

Among the keys that match, the most specific wins: an exact id beats any glob, a glob with more
literal characters beats one with fewer, and at equal specificity a configured price beats a
built-in one.

Prices learned from the bill (``learned``, per model id) are used only where neither the
configuration nor the built-in table has a price for the model, by the same two steps: configured
> built-in > learned > unpriced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final, Literal

from monitor.store import Tally

PRICES_AS_OF: Final = "2026-01"
PRICES_SOURCE: Final = "third-party compilations of Amazon Bedrock on-demand prices, dated 2026"

# Anthropic's prompt-cache prices on Bedrock, as multiples of the input price.
CLAUDE_CACHE_WRITE_FACTOR: Final = 1.25
CLAUDE_CACHE_READ_FACTOR: Final = 0.1

# Cross-region inference-profile prefixes seen in CloudWatch's ModelId dimension.
PROFILE_PREFIXES: Final[tuple[str, ...]] = (
    "us-gov.",
    "us.",
    "eu.",
    "apac.",
    "jp.",
    "au.",
    "global.",
)

_GLOB_CHARS: Final = frozenset("*?[")
_ARN: Final = re.compile(
    r"^arn:[^:]+:bedrock:[^:]*:[^:]*:"
    r"(?P<kind>foundation-model|inference-profile|application-inference-profile)/(?P<id>.+)$"
)
_PREFIX_SHAPE: Final = re.compile(r"^[a-z][a-z0-9-]*\.$")

PriceOrigin = Literal["built-in", "config", "learned"]


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. A cache price of ``None`` means "not known" (or, for Claude
    models, the standard multiple of the input price; see :meth:`PriceBook.price_for`)."""

    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None


@dataclass(frozen=True, slots=True)
class ResolvedPrice:
    """The price that applies to one model id, multiplier already applied."""

    model_id: str  # as asked
    base_model_id: str  # what the matched key was compared with
    matched_key: str  # the table key (id or glob) that won
    origin: PriceOrigin
    multiplier: float  # 1.0 unless a profile multiplier applied
    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float | None
    cache_write_per_mtok: float | None
    as_of: str | None = None  # the date of a learned price (the bill's last day)


@dataclass(frozen=True, slots=True)
class CostSummary:
    """Cost over several models: the priced part and what could not be priced."""

    cost_usd: float
    unpriced_tokens: int
    unpriced_models: tuple[str, ...]


def _claude(input_per_mtok: float, output_per_mtok: float) -> Price:
    return Price(
        input_per_mtok,
        output_per_mtok,
        cache_read_per_mtok=round(input_per_mtok * CLAUDE_CACHE_READ_FACTOR, 6),
        cache_write_per_mtok=round(input_per_mtok * CLAUDE_CACHE_WRITE_FACTOR, 6),
    )


# On-demand, standard tier, USD per million tokens (see docs/pricing.md for the dates and the
# models deliberately left out, such as Llama, whose published prices disagree).
BUILT_IN_PRICES: Final[Mapping[str, Price]] = {
    "anthropic.claude-opus-4-[5-9]*": _claude(5.0, 25.0),
    "anthropic.claude-sonnet-4-*": _claude(3.0, 15.0),
    "anthropic.claude-haiku-4-5-*": _claude(1.0, 5.0),
    "anthropic.claude-3-5-haiku-*": _claude(0.80, 4.0),
    "anthropic.claude-3-haiku-*": _claude(0.25, 1.25),
    "amazon.nova-micro-v1:0": Price(0.035, 0.14),
    "amazon.nova-lite-v1:0": Price(0.06, 0.24),
    "amazon.nova-pro-v1:0": Price(0.80, 3.20),
    "amazon.titan-text-express-v1": Price(0.20, 0.60),
}


def is_glob(pattern: str) -> bool:
    return any(ch in _GLOB_CHARS for ch in pattern)


def glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable model-id glob, or ``None`` when it is.

    ``fnmatch`` silently treats a malformed pattern as literal text, which would make a typo
    match nothing; catching it here turns it into a configuration error instead.
    """
    if not pattern:
        return "an empty pattern"
    if any(ch.isspace() for ch in pattern):
        return "whitespace (model ids have none)"
    index = 0
    while index < len(pattern):
        if pattern[index] == "[":
            start = index + 2 if pattern[index + 1 : index + 2] == "!" else index + 1
            close = pattern.find("]", start)
            if close <= start:  # missing, or "[]": fnmatch would read either literally
                return f"an unclosed or empty '[' at position {index + 1}"
            index = close
        elif pattern[index] == "]":
            return f"an unmatched ']' at position {index + 1}"
        index += 1
    return None


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` is not an inference-profile prefix such as ``"us."``, or ``None``."""
    if not _PREFIX_SHAPE.match(prefix):
        return 'a lower-case prefix ending with a dot, such as "us." or "global."'
    return None


def _specificity(key: str) -> float:
    if not is_glob(key):
        return float("inf")
    return float(sum(1 for ch in key if ch not in "*?"))


def split_model_id(model_id: str, prefixes: Iterable[str] = PROFILE_PREFIXES) -> tuple[str, str]:
    """``(profile_prefix, base_model_id)``: ``("us.", "anthropic.x")`` for ``"us.anthropic.x"``.

    ARNs of foundation models and system inference profiles are reduced to their resource id
    first. An application inference profile's ARN names no model, so it stays as it is (give
    it a price under its ARN).
    """
    arn = _ARN.match(model_id)
    if arn and arn.group("kind") != "application-inference-profile":
        model_id = arn.group("id")
    # Longest first, so that "us-gov." is not read as "us." by a custom prefix list.
    for prefix in sorted(prefixes, key=len, reverse=True):
        rest = model_id[len(prefix) :]
        if model_id.startswith(prefix) and "." in rest:
            return prefix, rest
    return "", model_id


class PriceBook:
    """Built-in prices merged with configured overrides, with per-prefix multipliers."""

    def __init__(
        self,
        overrides: Mapping[str, Price] | None = None,
        profile_multipliers: Mapping[str, float] | None = None,
        *,
        built_in: Mapping[str, Price] = BUILT_IN_PRICES,
        learned: Mapping[str, tuple[Price, str]] | None = None,
    ) -> None:
        """``learned``: model id -> (price, as-of date), from the bill."""
        table: dict[str, tuple[Price, PriceOrigin]] = {
            key: (price, "built-in") for key, price in built_in.items()
        }
        for key, price in (overrides or {}).items():
            table[key] = (price, "config")
        # Most specific first; at equal specificity configured before built-in, then by key so
        # that the outcome never depends on dictionary order.
        self._entries: list[tuple[str, Price, PriceOrigin]] = sorted(
            ((key, price, origin) for key, (price, origin) in table.items()),
            key=lambda entry: (-_specificity(entry[0]), entry[2] != "config", entry[0]),
        )
        self._exact: dict[str, tuple[Price, PriceOrigin]] = {
            key: (price, origin) for key, price, origin in self._entries if not is_glob(key)
        }
        self._multipliers: dict[str, float] = dict(profile_multipliers or {})
        self._prefixes: tuple[str, ...] = tuple(
            dict.fromkeys((*PROFILE_PREFIXES, *self._multipliers))
        )
        self._learned: dict[str, tuple[Price, str]] = dict(learned or {})
        self._cache: dict[str, ResolvedPrice | None] = {}

    @property
    def learned(self) -> Mapping[str, tuple[Price, str]]:
        return self._learned

    def with_learned(self, learned: Mapping[str, tuple[Price, str]]) -> PriceBook:
        """The same book with these learned prices (replacing any learned before)."""
        book = PriceBook.__new__(PriceBook)
        book._entries = self._entries
        book._exact = self._exact
        book._multipliers = self._multipliers
        book._prefixes = self._prefixes
        book._learned = dict(learned)
        book._cache = {}
        return book

    def _match(self, model_id: str) -> tuple[str, Price, PriceOrigin] | None:
        exact = self._exact.get(model_id)
        if exact is not None:
            return model_id, exact[0], exact[1]
        for key, price, origin in self._entries:
            if is_glob(key) and fnmatchcase(model_id, key):
                return key, price, origin
        return None

    def price_for(self, model_id: str) -> ResolvedPrice | None:
        """The price for ``model_id`` as Bedrock received it, or ``None`` when unpriced."""
        if model_id in self._cache:
            return self._cache[model_id]
        multiplier = 1.0
        base = model_id
        found = self._match(model_id)
        if found is None:
            prefix, base = split_model_id(model_id, self._prefixes)
            if base != model_id:
                found = self._match(base)
                multiplier = self._multipliers.get(prefix, 1.0)
        as_of = None
        if found is None and self._learned:
            found, as_of, base, multiplier = self._match_learned(model_id)
        resolved = None if found is None else _resolve(model_id, base, found, multiplier, as_of)
        # Bounded: one entry per distinct model id, and model ids are few.
        if len(self._cache) < 10_000:
            self._cache[model_id] = resolved
        return resolved

    def _match_learned(
        self, model_id: str
    ) -> tuple[tuple[str, Price, PriceOrigin] | None, str | None, str, float]:
        """A learned price for the id as given, else for its base model (times the prefix's
        multiplier): ``(match, as_of, base, multiplier)``."""
        learned = self._learned.get(model_id)
        if learned is not None:
            return (model_id, learned[0], "learned"), learned[1], model_id, 1.0
        prefix, base = split_model_id(model_id, self._prefixes)
        learned = self._learned.get(base) if base != model_id else None
        if learned is None:
            return None, None, model_id, 1.0
        multiplier = self._multipliers.get(prefix, 1.0)
        return (base, learned[0], "learned"), learned[1], base, multiplier

    def cost_usd(self, model_id: str, tally: Tally) -> float | None:
        """USD for ``tally`` of ``model_id``; ``None`` when the model, or a kind of token the
        tally holds (cache reads or writes), has no price."""
        price = self.price_for(model_id)
        if price is None:
            return None
        total = tally.input_tokens * price.input_per_mtok
        total += tally.output_tokens * price.output_per_mtok
        for tokens, per_mtok in (
            (tally.cache_read_input_tokens, price.cache_read_per_mtok),
            (tally.cache_write_input_tokens, price.cache_write_per_mtok),
        ):
            if tokens:
                if per_mtok is None:
                    return None
                total += tokens * per_mtok
        return total / 1_000_000

    def unpriced_tokens(self, model_id: str, tally: Tally) -> int:
        """All of the tally's tokens when it cannot be priced, else 0."""
        return tally.total_tokens if self.cost_usd(model_id, tally) is None else 0

    def summarize(self, tallies: Iterable[tuple[str, Tally]]) -> CostSummary:
        """Priced cost and unpriced tokens over ``(model_id, tally)`` pairs (the totals row)."""
        cost = 0.0
        unpriced_tokens = 0
        unpriced_models: list[str] = []
        for model_id, tally in tallies:
            model_cost = self.cost_usd(model_id, tally)
            if model_cost is None:
                if tally.total_tokens:
                    unpriced_tokens += tally.total_tokens
                    unpriced_models.append(model_id)
            else:
                cost += model_cost
        return CostSummary(cost, unpriced_tokens, tuple(unpriced_models))


def _resolve(
    model_id: str,
    base: str,
    found: tuple[str, Price, PriceOrigin],
    multiplier: float,
    as_of: str | None = None,
) -> ResolvedPrice:
    key, price, origin = found
    cache_read = price.cache_read_per_mtok
    cache_write = price.cache_write_per_mtok
    if base.startswith("anthropic.claude"):
        if cache_read is None:
            cache_read = price.input_per_mtok * CLAUDE_CACHE_READ_FACTOR
        if cache_write is None:
            cache_write = price.input_per_mtok * CLAUDE_CACHE_WRITE_FACTOR
    return ResolvedPrice(
        model_id=model_id,
        base_model_id=base,
        matched_key=key,
        origin=origin,
        multiplier=multiplier,
        input_per_mtok=price.input_per_mtok * multiplier,
        output_per_mtok=price.output_per_mtok * multiplier,
        cache_read_per_mtok=None if cache_read is None else cache_read * multiplier,
        cache_write_per_mtok=None if cache_write is None else cache_write * multiplier,
        as_of=as_of,
    )
