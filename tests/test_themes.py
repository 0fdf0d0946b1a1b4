"""Theme files: the format, broken files, user themes, and themes from an installed wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from textual.color import Color

from monitor.ui.app import BedrockTopApp, seeded_demo_feed
from monitor.ui.themes import DEFAULT_THEME, ThemeFileError, load_themes, parse_theme

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ["ansi", "bedrock-dark", "bedrock-light", "high-contrast"]


def test_builtin_themes_load() -> None:
    catalog = load_themes(Path("/nonexistent"))
    assert catalog.problems == []
    assert sorted(catalog.names()) == BUILTIN


def _xterm_256() -> list[tuple[int, int, int]]:
    levels = [0, 95, 135, 175, 215, 255]
    cube = [(r, g, b) for r in levels for g in levels for b in levels]
    greys = [(8 + 10 * i,) * 3 for i in range(24)]
    return cube + greys  # type: ignore[return-value]


def test_default_theme_surfaces_stay_distinct_in_256_colours() -> None:
    """Over SSH colours are reduced to 256: background, surface and panel must not collapse."""
    theme = load_themes(Path("/nonexistent")).themes[DEFAULT_THEME].theme
    palette = _xterm_256()

    def nearest(value: str | None) -> tuple[int, int, int]:
        assert value is not None
        color = Color.parse(value)
        return min(
            palette,
            key=lambda p: (p[0] - color.r) ** 2 + (p[1] - color.g) ** 2 + (p[2] - color.b) ** 2,
        )

    reduced = {nearest(theme.background), nearest(theme.surface), nearest(theme.panel)}
    assert len(reduced) == 3
    assert nearest(theme.foreground) not in reduced


def test_ansi_theme_uses_only_ansi_colours() -> None:
    theme = load_themes(Path("/nonexistent")).themes["ansi"].theme
    assert theme.ansi
    for value in (
        theme.primary,
        theme.secondary,
        theme.accent,
        theme.warning,
        theme.error,
        theme.success,
        theme.foreground,
        theme.background,
        theme.surface,
        theme.panel,
    ):
        assert value is not None and value.startswith("ansi_")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name = 'x'\n[colors\n", "not valid TOML"),
        ("name = 'Bad Name'\n[colors]\nprimary = '#fff'\n", "'name' must be"),
        ("name = 'ok'\n", "[colors] table"),
        ("name = 'ok'\n[colors]\nprimary = 'not-a-colour'\n", "colors.primary"),
        ("name = 'ok'\n[colors]\nprimary = '#fff'\nglow = '#000'\n", "colors.glow"),
        ("name = 'ok'\ncolour = 1\n[colors]\nprimary = '#fff'\n", "unknown key 'colour'"),
        ("name = 'ok'\ndark = 'yes'\n[colors]\nprimary = '#fff'\n", "'dark' must be"),
    ],
)
def test_broken_theme_text_names_the_problem(text: str, expected: str) -> None:
    with pytest.raises(ThemeFileError) as caught:
        parse_theme(text, "my.toml")
    assert expected in str(caught.value) and "my.toml" in str(caught.value)


def test_user_themes_add_and_broken_ones_are_reported(tmp_path: Path) -> None:
    (tmp_path / "sunset.toml").write_text(
        'name = "sunset"\ndescription = "warm"\n[colors]\nprimary = "#ff8800"\n'
        'background = "#201010"\n'
    )
    (tmp_path / "broken.toml").write_text('name = "broken"\n[colors]\nprimary = 12\n')
    catalog = load_themes(tmp_path)
    assert "sunset" in catalog.names() and "broken" not in catalog.names()
    assert len(catalog.problems) == 1 and "broken.toml" in catalog.problems[0]


async def test_broken_user_theme_requested_falls_back_to_default_with_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    themes = tmp_path / "themes"
    themes.mkdir()
    (themes / "mine.toml").write_text('name = "mine"\n[colors]\nprimary = "nope"\n')
    monkeypatch.chdir(tmp_path)
    now = 1_790_000_000.0
    feed = seeded_demo_feed(Path("usage.jsonl"), now, models=2, seed=1)
    app = BedrockTopApp(
        feed, clock=lambda: now, follow=False, theme="mine", catalog=load_themes(themes)
    )
    async with app.run_test() as pilot:
        await pilot.pause()
        assert app.theme == DEFAULT_THEME
        messages = [str(n.message) for n in app._notifications]
        assert any("mine.toml" in m for m in messages)
        assert any("'mine' not found" in m for m in messages)


def test_list_themes_from_the_source_tree() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "--list-themes"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert sorted(names) == BUILTIN


def test_themes_load_from_an_installed_wheel(tmp_path: Path) -> None:
    """Build a wheel, install it into a fresh virtual environment (dependencies borrowed from
    this one through a .pth file, so nothing is downloaded), and list the themes from outside
    the source tree."""
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(dist.glob("bedrock_top-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(env_dir / "bin" / "bedrock-top"), "--list-themes"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert sorted(names) == BUILTIN
    where = subprocess.run(
        [str(python), "-c", "import monitor.ui.themes as t; print(t.builtin_themes_dir())"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert str(env_dir) in where and "share/bedrock-top/themes" in where
