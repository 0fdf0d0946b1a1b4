"""Matching AWS's human model names to model ids: one matcher for every caller.

Service Quotas names a model "Anthropic Claude Haiku 4.5", Cost Explorer's usage types write
``Claude3Haiku``, and the ids bedrock-top sees read ``anthropic.claude-3-haiku-20240307-v1:0``.
AWS publishes no map between them, so both sides are split into lower-case words and numbers and a
name matches the id whose words contain all of the name's words with the fewest left over. A tie
matches nothing: a wrong match would put one model's quota or bill on another.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Final

# Runs of letters or of digits: "Claude3Haiku" -> Claude, 3, Haiku (then camel case is split).
_RUNS: Final = re.compile(r"[A-Za-z]+|[0-9]+")
_CAMEL: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")


# Every match splits every candidate id again: the few ids and names seen are kept split.
@functools.lru_cache(maxsize=8192)
def name_words(text: str) -> frozenset[str]:
    """The lower-case words and numbers of a name or an id.

    >>> sorted(name_words("Anthropic Claude Haiku 4.5"))
    ['4', '5', 'anthropic', 'claude', 'haiku']
    >>> sorted(name_words("Claude3Haiku"))
    ['3', 'claude', 'haiku']
    """
    words: set[str] = set()
    for run in _RUNS.findall(text):
        if run.isdigit():
            # "05" and "5" are the same version number.
            words.add(str(int(run)))
        else:
            words.update(part.lower() for part in _CAMEL.findall(run))
    return frozenset(words)


def match_model(name: str | frozenset[str], model_ids: Iterable[str]) -> str | None:
    """The id whose words contain every word of ``name`` with the fewest left over; None when
    nothing contains them all or when two ids tie."""
    wanted = name if isinstance(name, frozenset) else name_words(name)
    if not wanted:
        return None
    best: str | None = None
    best_extra = -1
    tied = False
    for model_id in dict.fromkeys(model_ids):
        words = name_words(model_id)
        if not wanted <= words:
            continue
        extra = len(words - wanted)
        if best is None or extra < best_extra:
            best, best_extra, tied = model_id, extra, False
        elif extra == best_extra:
            tied = True
    return None if tied else best


def match_names(names: Iterable[str], model_ids: Iterable[str]) -> dict[str, str]:
    """Each name's id, where the match holds both ways: the id is the name's best match
    (:func:`match_model`) and, among all ``names`` whose words fit in that id, this name leaves
    the fewest words over (a tie matches nothing). Matched pairs leave the field and the rest
    are matched again, so that "Claude 3.5 Sonnet" gets the first 3.5 Sonnet once "Claude 3.5
    Sonnet V2" has taken the ``-v2:0`` id.

    Matching against the ids seen so far only, "Claude 3 Haiku" would otherwise take
    ``claude-3-5-haiku`` when ``claude-3-haiku`` has not been seen; the name "Claude 3.5 Haiku"
    in the same list fits that id better and keeps it.
    """
    ids = list(dict.fromkeys(model_ids))
    id_words = {model_id: name_words(model_id) for model_id in ids}
    words = {name: name_words(name) for name in dict.fromkeys(names)}
    matched: dict[str, str] = {}
    while True:
        found = _mutual_matches(words, ids, id_words)
        if not found:
            return matched
        matched.update(found)
        taken = set(found.values())
        ids = [model_id for model_id in ids if model_id not in taken]
        words = {name: w for name, w in words.items() if name not in found}


def _mutual_matches(
    words: dict[str, frozenset[str]], ids: list[str], id_words: dict[str, frozenset[str]]
) -> dict[str, str]:
    matched: dict[str, str] = {}
    for name, wanted in words.items():
        target = match_model(wanted, ids)
        if target is None:
            continue
        target_words = id_words[target]
        fits = [
            len(target_words - other) for other in words.values() if other and other <= target_words
        ]
        least = min(fits)
        if len(target_words - wanted) == least and fits.count(least) == 1:
            matched[name] = target
    return matched
