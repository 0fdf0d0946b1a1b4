"""The one key table: bindings, the footer, the help screen and the command palette all come
from here. Each binding has an id; users remap keys by id in the configuration
(``[keys]`` table, applied with ``App.set_keymap``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True, slots=True)
class KeySpec:
    id: str
    keys: str  # Textual key names, comma separated
    action: str
    description: str  # short: footer
    help: str  # one line: help screen and command palette
    scope: str  # app | overview | model
    show: bool = True
    priority: bool = False
    display: str | None = None


KEYS: tuple[KeySpec, ...] = (
    KeySpec("quit", "q", "quit", "quit", "Quit bedrock-top", "app"),
    KeySpec("interrupt", "ctrl+c", "quit", "quit", "Quit (as q)", "app", show=False, priority=True),
    KeySpec("help", "question_mark", "help", "help", "Show this list of keys", "app", display="?"),
    KeySpec(
        "pause", "p", "pause", "pause", "Pause or resume the view (sources keep collecting)", "app"
    ),
    KeySpec(
        "faster",
        "plus,equals_sign",
        "faster",
        "faster",
        "Refresh more often",
        "app",
        show=False,
        display="+",
    ),
    KeySpec(
        "slower", "minus", "slower", "slower", "Refresh less often", "app", show=False, display="-"
    ),
    KeySpec("theme", "t", "next_theme", "theme", "Switch to the next theme", "app", show=False),
    KeySpec(
        "palette",
        "ctrl+p",
        "command_palette",
        "palette",
        "Open the command palette",
        "app",
        show=False,
        priority=True,
    ),
    KeySpec("redraw", "ctrl+l", "redraw", "redraw", "Redraw the whole screen", "app", show=False),
    KeySpec(
        "edit-budget",
        "b",
        "edit_budget",
        "budget",
        "Change a budget's limit and save it to the configuration file",
        "app",
        show=False,
    ),
    KeySpec(
        "live-tail",
        "l",
        "live_tail",
        "live tail",
        "Follow the fleet's log groups with Live Tail (1 s fresh, billed per minute) or stop",
        "app",
        show=False,
    ),
    KeySpec("open", "enter", "open_model", "open", "Open the selected model", "overview"),
    KeySpec(
        "group",
        "g",
        "group_next",
        "group",
        "Group the overview by model, app, caller, region, account",
        "overview",
        show=False,
    ),
    KeySpec(
        "fleet",
        "f",
        "next_source",
        "fleet",
        "Show this host's log (local) or every caller's invocation logs (fleet)",
        "overview",
        show=False,
    ),
    KeySpec(
        "filter",
        "slash",
        "filter",
        "filter",
        "Filter models by a part of their id",
        "overview",
        display="/",
    ),
    KeySpec(
        "clear-filter",
        "escape",
        "clear_filter",
        "clear",
        "Clear the filter",
        "overview",
        show=False,
    ),
    KeySpec("sort", "s", "sort_next", "sort", "Sort by the next column", "overview"),
    KeySpec(
        "sort-left",
        "less_than_sign",
        "sort_previous",
        "sort ←",
        "Sort by the column to the left",
        "overview",
        show=False,
        display="<",
    ),
    KeySpec(
        "sort-right",
        "greater_than_sign",
        "sort_next",
        "sort →",
        "Sort by the column to the right",
        "overview",
        show=False,
        display=">",
    ),
    KeySpec("reverse", "r", "reverse", "reverse", "Reverse the sort order", "overview"),
    KeySpec("back", "escape", "back", "back", "Back to the overview", "model"),
    KeySpec(
        "previous-model",
        "left_square_bracket,left",
        "step(-1)",
        "prev",
        "Previous model",
        "model",
        display="[",
    ),
    KeySpec(
        "next-model",
        "right_square_bracket,right",
        "step(1)",
        "next",
        "Next model",
        "model",
        display="]",
    ),
    KeySpec("window", "w", "next_window", "window", "Chart window: 5m, 15m, 1h, 24h", "model"),
)


def bindings(scope: str) -> list[Binding]:
    return [
        Binding(
            spec.keys,
            spec.action,
            spec.description,
            show=spec.show,
            key_display=spec.display,
            priority=spec.priority,
            id=spec.id,
            tooltip=spec.help,
        )
        for spec in KEYS
        if spec.scope == scope
    ]


def specs(scopes: Iterable[str]) -> list[KeySpec]:
    wanted = set(scopes)
    return [spec for spec in KEYS if spec.scope in wanted]


def key_ids() -> set[str]:
    return {spec.id for spec in KEYS}


MODIFIERS = ("ctrl", "shift", "alt", "meta", "super", "hyper")


def key_name_known(name: str) -> bool:
    """Whether Textual can ever send ``name`` (``q``, ``ctrl+r``, ``escape``, ``f5``,
    ``question_mark``): a key name that no key produces would leave a binding dead."""
    from textual.keys import Keys, _character_to_key, key_to_character

    *modifiers, base = name.split("+")
    if not base or any(modifier not in MODIFIERS for modifier in modifiers):
        return False
    if len(base) == 1:
        return base.isprintable()
    named = {key.value.rsplit("+", 1)[-1] for key in Keys}
    if base in named or key_to_character(base) is not None:
        return True
    return _character_to_key(base) != base  # a Unicode character name Textual knows


def keymap_problems(keymap: dict[str, str]) -> list[str]:
    """What is wrong with a ``[keys]`` table, one line per problem, naming the key path:
    unknown binding ids, key names no key produces, and a key taken by two bindings that are
    active together (``pause = "q"`` would leave nothing bound to quit on ``q``)."""
    problems: list[str] = []
    ids = key_ids()
    for binding, keys_text in keymap.items():
        if binding not in ids:
            problems.append(
                f"keys.{binding}: no key binding has this id (ids: {', '.join(sorted(ids))})"
            )
            continue
        for name in keys_text.split(","):
            if not key_name_known(name.strip()):
                problems.append(
                    f"keys.{binding}: {name.strip()!r} is not a key name "
                    '(e.g. "q", "ctrl+r", "escape", "f5", "question_mark")'
                )
    if problems:
        return problems
    # Which binding each key reaches, per scope (app bindings are active on every screen).
    owners: dict[tuple[str, str], str] = {}
    for spec in KEYS:
        for name in keymap.get(spec.id, spec.keys).split(","):
            scopes = ("overview", "model") if spec.scope == "app" else (spec.scope,)
            for scope in scopes:
                other = owners.setdefault((scope, name.strip()), spec.id)
                if other == spec.id:
                    continue
                # Name the binding the configuration changed; the other kept its key.
                changed, kept = (spec.id, other) if spec.id in keymap else (other, spec.id)
                problems.append(f"keys.{changed}: {name.strip()!r} is already the key of {kept}")
    return list(dict.fromkeys(problems))
