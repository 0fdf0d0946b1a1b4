"""What the terminal bedrock-top runs in can show: whether the live screen can draw at all, and
whether text may use characters beyond ASCII. Never imports Textual."""

from __future__ import annotations

import locale
import os
from collections.abc import Mapping


def locale_is_utf8() -> bool:
    """Whether the user's locale (LC_ALL, LC_CTYPE, LANG) asks for UTF-8. Python itself may run
    in UTF-8 mode under the C locale; the terminal behind it need not."""
    try:
        previous = locale.setlocale(locale.LC_CTYPE)
        try:
            locale.setlocale(locale.LC_CTYPE, "")
            codeset = locale.nl_langinfo(locale.CODESET)
        finally:
            locale.setlocale(locale.LC_CTYPE, previous)
    except (locale.Error, AttributeError, ValueError):
        return True  # nothing to go by: assume a modern terminal
    return codeset.replace("-", "").upper() == "UTF8"


def live_screen_problem(env: Mapping[str, str] | None = None) -> str | None:
    """Why the live screen cannot draw here, or None. A dumb terminal has no cursor
    addressing; a terminal in a non-UTF-8 locale would show the screen's lines and bars as
    garbage. Either way the report (``--once``) is shown instead."""
    environ = os.environ if env is None else env
    if environ.get("TERM", "") in ("dumb", "unknown"):
        return f"TERM={environ.get('TERM')} cannot draw the live screen"
    if not locale_is_utf8():
        return "the locale is not UTF-8 (set LANG=C.UTF-8 or similar for the live screen)"
    return None
