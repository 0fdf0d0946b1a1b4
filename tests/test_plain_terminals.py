"""The smaller ways to break a run: absurd windows, unreadable logs, bad key bindings, terminals
without colour, cursor addressing or UTF-8, and a stdout that is closed or full."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.ui.keys import keymap_problems
from tests.conftest import record, write_lines
from tests.test_tmux import ROOT, Tmux, needs_tmux


def once(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", "--once", "--no-cloudwatch", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.parametrize("since", ["99999999d", "0001-01-01T00:00:00Z", "9" * 400 + "s"])
def test_an_absurd_since_is_a_usage_error(since: str) -> None:
    result = once("--since", since)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("bedrock-top: --since:") and "1970" in result.stderr


def test_an_unreadable_log_exits_non_zero_naming_it(tmp_path: Path) -> None:
    result = once("--log", str(tmp_path))  # a directory: there is nothing to read
    assert result.returncode == 1
    assert f"cannot read {tmp_path}" in result.stderr and "directory" in result.stderr


def test_a_closed_stdout_is_one_line_on_stderr(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    write_lines(log, record())
    result = subprocess.run(
        f"{shlex.quote(sys.executable)} -m monitor --once --no-cloudwatch --log {log} >&-",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "bedrock-top: stdout is closed: the report has nowhere to go"
    ]


def test_a_full_stdout_is_one_line_on_stderr(tmp_path: Path) -> None:
    with open("/dev/full", "w") as full:
        result = once("--json", "--log", str(tmp_path / "none.jsonl"), stdout=full.fileno())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "bedrock-top: cannot write the report to stdout: No space left on device"
    ]


def test_key_bindings_are_checked_like_the_rest_of_the_configuration() -> None:
    assert keymap_problems({}) == []
    assert keymap_problems({"quit": "x", "pause": "q"}) == []  # q moved, then reused
    assert keymap_problems({"pause": "q"}) == ["keys.pause: 'q' is already the key of quit"]
    assert keymap_problems({"filter": "question_mark"}) == [
        "keys.filter: 'question_mark' is already the key of help"
    ]
    (unknown,) = keymap_problems({"pasue": "f5"})
    assert unknown.startswith("keys.pasue: no key binding has this id")
    (bad_name,) = keymap_problems({"pause": "f5,ctrl+bogus"})
    assert bad_name.startswith("keys.pause: 'ctrl+bogus' is not a key name")
    assert keymap_problems({"pause": "f5,ctrl+r,space,ü", "back": "backspace"}) == []
    # Keys of different screens may repeat: escape clears the filter and leaves a model.
    assert keymap_problems({"clear-filter": "escape", "back": "escape"}) == []


def wait_for_exit(tmux: Tmux) -> str:
    deadline = time.monotonic() + 30
    while not tmux.marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)
    return tmux.marker.read_text().strip()


@needs_tmux
def test_a_bad_key_binding_stops_the_live_screen_with_a_message(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[keys]\npause = "q"\n')
    tmux = Tmux(
        120,
        30,
        f"env -u COLUMNS -u LINES {shlex.quote(sys.executable)} -m monitor --demo "
        f"--config {config}",
    )
    try:
        assert wait_for_exit(tmux) == "2"
        # The line wraps at the pane's width, and a wrap at a space drops that space.
        screen = "".join(tmux.screen().split())
        wanted = f"bedrock-top: {config}: keys.pause: 'q' is already the key of quit"
        assert "".join(wanted.split()) in screen
    finally:
        tmux.close()


def _live(tmp_path: Path, environment: str) -> Tmux:
    log = tmp_path / "usage.jsonl"
    write_lines(log, *(record() for _ in range(3)))
    return Tmux(
        120,
        30,
        f"env -u COLUMNS -u LINES {environment} {shlex.quote(sys.executable)} -m monitor "
        f"--no-cloudwatch --log {log}",
    )


@needs_tmux
def test_no_color_gets_a_screen_without_colour(tmp_path: Path) -> None:
    tmux = _live(tmp_path, "NO_COLOR=1 TERM=xterm-256color")
    try:
        tmux.wait_for(lambda s: "req/m" in s and "claude" in s, timeout=20)
        coloured = subprocess.run(
            ["tmux", "capture-pane", "-e", "-p", "-t", tmux.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        # No foreground or background colour anywhere: only bold, dim and reverse.
        assert not re.search(r"\x1b\[[0-9;]*(?:3[0-8]|4[0-8]|9[0-7]|10[0-7])[;m]", coloured)
        assert "\x1b[1m" in coloured or "\x1b[1;" in coloured
    finally:
        tmux.close()


@needs_tmux
@pytest.mark.parametrize(
    ("environment", "why"),
    [("TERM=dumb", "TERM=dumb cannot draw"), ("LC_ALL=C TERM=xterm", "locale is not UTF-8")],
)
def test_a_terminal_that_cannot_draw_gets_the_report(
    tmp_path: Path, environment: str, why: str
) -> None:
    tmux = _live(tmp_path, environment)
    try:
        assert wait_for_exit(tmux) == "0"
        screen = tmux.screen()
        assert why in screen and "showing the report" in screen
        assert "MODEL (local: this host)" in screen and "TOTAL" in screen
        if "LC_ALL=C" in environment:
            assert screen.isascii(), screen
    finally:
        tmux.close()
