"""Theme files: a small TOML format loaded into Textual themes.

A theme file (``<name>.toml``)::

    name = "bedrock-dark"          # lower-case letters, digits and dashes
    description = "..."            # optional
    dark = true                    # optional, default true
    ansi = false                   # optional: true when colours are ANSI names (ansi_blue, ...)

    [colors]                       # primary is required; the rest are optional
    primary = "#4aa3df"
    secondary = "#7b8fa6"
    accent = "#f0a030"
    warning = "#e0b040"
    error = "#e05050"
    success = "#50c070"
    foreground = "#d8dee6"
    background = "#10161d"
    surface = "#18212b"
    panel = "#22303d"
    boost = "#2b3a48"              # optional

    [variables]                    # optional Textual design variables, e.g.
    footer-key-foreground = "#f0a030"

Built-in themes ship in the package (the top-level ``themes/`` folder); users add files to
``<user config dir>/bedrock-top/themes/``. A file that cannot be used is reported and skipped:
the app then starts with the default theme.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

from monitor.paths import user_themes_dir

DEFAULT_THEME = "bedrock-dark"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_COLOR_KEYS = (
    "primary",
    "secondary",
    "accent",
    "warning",
    "error",
    "success",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)
_TOP_KEYS = {"name", "description", "dark", "ansi", "colors", "variables"}
_DATA_DIR = "share/bedrock-top/themes"


class ThemeFileError(ValueError):
    """A theme file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class ThemeFile:
    theme: Theme
    path: Path
    description: str
    builtin: bool


@dataclass
class ThemeCatalog:
    themes: dict[str, ThemeFile] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        return list(self.themes)


def builtin_themes_dir() -> Path | None:
    """The packaged theme folder: the source tree's ``themes/`` when running from a checkout,
    else the wheel's data files (``<prefix>/share/bedrock-top/themes``)."""
    source_tree = Path(__file__).resolve().parents[2] / "themes"
    if (source_tree / f"{DEFAULT_THEME}.toml").is_file():
        return source_tree
    # Imported here: only an installed copy looks, and the import costs tens of milliseconds of
    # every start (before the first frame).
    import importlib.metadata

    try:
        files = importlib.metadata.files("bedrock-top") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if str(entry).replace("\\", "/").endswith(f"{_DATA_DIR}/{DEFAULT_THEME}.toml"):
            return Path(str(entry.locate())).parent
    for prefix in (sys.prefix, sys.base_prefix):
        candidate = Path(prefix) / _DATA_DIR
        if candidate.is_dir():
            return candidate
    return None


def parse_theme(text: str, where: str) -> tuple[Theme, str]:
    """Build a Textual theme from the text of a theme file. Raises :class:`ThemeFileError`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ThemeFileError(f"{where}: not valid TOML: {err}") from None
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ThemeFileError(
            f"{where}: unknown key {unknown[0]!r} (expected {', '.join(sorted(_TOP_KEYS))})"
        )
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ThemeFileError(
            f"{where}: 'name' must be lower-case letters, digits and dashes, got {name!r}"
        )
    for flag in ("dark", "ansi"):
        if flag in data and not isinstance(data[flag], bool):
            raise ThemeFileError(f"{where}: {flag!r} must be true or false")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ThemeFileError(f"{where}: 'description' must be a string")
    colors = data.get("colors")
    if not isinstance(colors, dict) or "primary" not in colors:
        raise ThemeFileError(f"{where}: a [colors] table with at least 'primary' is required")
    parsed: dict[str, str] = {}
    for key, value in colors.items():
        if key not in _COLOR_KEYS:
            raise ThemeFileError(
                f"{where}: colors.{key} is not a theme colour (expected {', '.join(_COLOR_KEYS)})"
            )
        parsed[key] = _color(value, f"{where}: colors.{key}")
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ThemeFileError(f"{where}: [variables] must be a table")
    for key, value in variables.items():
        if not isinstance(value, str):
            raise ThemeFileError(f"{where}: variables.{key} must be a string")
    theme = Theme(
        name=name,
        dark=data.get("dark", True),
        ansi=data.get("ansi", False),
        variables=dict(variables),
        **parsed,  # type: ignore[arg-type]
    )
    return theme, description


def _color(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ThemeFileError(f"{where} must be a colour string such as '#1e90ff'")
    if value.startswith("ansi_"):
        return value
    try:
        Color.parse(value)
    except ColorParseError:
        raise ThemeFileError(f"{where}: {value!r} is not a colour") from None
    return value


def load_themes(user_dir: Path | None = None) -> ThemeCatalog:
    """Built-in themes, then the user's (a user theme may replace a built-in one by name)."""
    catalog = ThemeCatalog()
    folders: list[tuple[Path, bool]] = []
    builtin = builtin_themes_dir()
    if builtin is None:
        catalog.problems.append("built-in themes not found; using Textual's default theme")
    else:
        folders.append((builtin, True))
    folders.append((user_dir if user_dir is not None else user_themes_dir(), False))
    for folder, is_builtin in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                theme, description = parse_theme(path.read_text(encoding="utf-8"), str(path))
            except (OSError, UnicodeDecodeError) as err:
                catalog.problems.append(f"{path}: cannot read: {err}")
                continue
            except ThemeFileError as err:
                catalog.problems.append(str(err))
                continue
            catalog.themes[theme.name] = ThemeFile(theme, path, description, is_builtin)
    return catalog


def list_themes_text(catalog: ThemeCatalog) -> str:
    lines = []
    for name, entry in catalog.themes.items():
        origin = "built-in" if entry.builtin else str(entry.path)
        default = " (default)" if name == DEFAULT_THEME else ""
        lines.append(f"{name:<16} {entry.description}{default}  [{origin}]")
    return "\n".join(lines)


def print_theme_list() -> int:
    """``--list-themes``: the themes and any file that could not be used (on stderr)."""
    catalog = load_themes()
    print(list_themes_text(catalog))
    for problem in catalog.problems:
        print(f"bedrock-top: theme file skipped: {problem}", file=sys.stderr)
    return 0
