"""The real program in a real terminal: tmux for what a person sees, a pseudo-terminal whose
other end goes away for the dropped-SSH case."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(self, width: int, height: int, command: str) -> None:
        self.name = f"bt-{uuid.uuid4().hex[:8]}"
        self.marker = ROOT / f".tmux-{self.name}.status"
        # tmux may create a detached window at its default size (80x24) and resize it a moment
        # later: a program started at once can read the first size and miss the change.
        wrapped = (
            f"sleep 1; {command}; echo $? > {self.marker}; stty -a > {self.marker}.stty; sleep 30"
        )
        subprocess.run(
            [
                "tmux",
                "new-session",
                "-d",
                "-s",
                self.name,
                "-x",
                str(width),
                "-y",
                str(height),
                "-c",
                str(ROOT),
                wrapped,
            ],
            check=True,
        )

    def screen(self) -> str:
        result = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True
        )
        return result.stdout

    def keys(self, *keys: str) -> None:
        for key in keys:
            subprocess.run(["tmux", "send-keys", "-t", self.name, key], check=True)
            time.sleep(0.3)

    def wait_for_all(
        self, *strings: str, absent: tuple[str, ...] = (), timeout: float = 15.0
    ) -> str:
        """The first capture that shows every one of ``strings`` and none of ``absent``: a test
        asserts only on a capture taken for what it asserts, never on a half-drawn frame."""
        return self.wait_for(
            lambda screen: (
                all(s in screen for s in strings) and not any(s in screen for s in absent)
            ),
            timeout,
        )

    def wait_for(self, check: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if check(text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"screen never matched; last screen:\n{text}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)
        for path in (self.marker, Path(f"{self.marker}.stty")):
            path.unlink(missing_ok=True)


def written(path: Path, timeout: float = 15.0) -> str:
    """A file the shell in the pane writes once the program has exited, after its last line
    is complete (the shell may still be writing when it first appears)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if text.endswith("\n"):
                return text
        time.sleep(0.05)
    raise AssertionError(f"{path} was never written")


@pytest.fixture
def tmux_demo() -> Iterator[Tmux]:
    session = Tmux(120, 40, f"{sys.executable} -m monitor --demo --demo-seed 3")
    try:
        yield session
    finally:
        session.close()


@needs_tmux
def test_demo_open_model_back_and_quit(tmux_demo: Tmux) -> None:
    tmux_demo.wait_for_all("req/m", "claude", "LOCAL", "CloudWatch off")
    tmux_demo.keys("Enter")
    tmux_demo.wait_for_all("MODEL", "latency p50", "Prompt cache", "esc back")
    tmux_demo.keys("Escape")
    tmux_demo.wait_for_all("req/m", absent=("MODEL",))
    tmux_demo.keys("q")
    assert written(tmux_demo.marker).strip() == "0"
    stty = written(Path(f"{tmux_demo.marker}.stty"))
    # The terminal is back in cooked mode with echo.
    assert " icanon" in stty and " echo" in stty
    # The alternate screen is gone: the table is no longer on the terminal.
    tmux_demo.wait_for(lambda screen: "req/m" not in screen)


@needs_tmux
def test_sigterm_restores_the_terminal(tmux_demo: Tmux) -> None:
    tmux_demo.wait_for_all("req/m")
    pane_pid = int(
        subprocess.run(
            ["tmux", "display-message", "-p", "-t", tmux_demo.name, "#{pane_pid}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    children = [
        p for p in psutil.Process(pane_pid).children(recursive=True) if "python" in p.name()
    ]
    assert children
    children[0].terminate()
    assert written(tmux_demo.marker).strip() == "143"
    stty = written(Path(f"{tmux_demo.marker}.stty"))
    assert " icanon" in stty and " echo" in stty


def test_exits_when_the_terminal_goes_away_without_sighup(tmp_path: Path) -> None:
    """The far end of the terminal closes (as when an SSH connection drops) and no SIGHUP
    arrives: stdin then reads end of file forever. The program must exit, not spin."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="100", LINES="30")
    # A new session without this pty as controlling terminal: closing the master sends no SIGHUP.
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor", "--demo", "--demo-models", "3"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    try:
        seen = b""
        deadline = time.monotonic() + 15
        while b"req/m" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        assert b"req/m" in seen, seen[-500:]
        os.close(master)
        closed_at = time.monotonic()
        status = process.wait(timeout=8)
        took = time.monotonic() - closed_at
        assert took < 6
        assert status != 0  # a hang-up, not a normal quit
    finally:
        if process.poll() is None:
            cpu = psutil.Process(process.pid).cpu_percent(interval=1.0)
            process.kill()
            process.wait()
            pytest.fail(f"still running after the terminal went away (CPU {cpu:.0f}%)")
