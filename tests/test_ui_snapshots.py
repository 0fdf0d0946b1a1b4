"""Screen snapshots with a seeded workload and a frozen clock (pytest-textual-snapshot).

Update after an intended change with ``pytest tests/test_ui_snapshots.py --snapshot-update``
and look at the report before committing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.ui.app import BedrockTopApp, seeded_demo_feed
from monitor.ui.themes import load_themes

NOW = 1_790_000_000.0
SIZES = [(80, 24), (160, 48)]


@pytest.fixture
def frozen_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BedrockTopApp:
    monkeypatch.chdir(tmp_path)
    feed = seeded_demo_feed(Path("usage.jsonl"), NOW, models=7, seed=11)
    return BedrockTopApp(
        feed, clock=lambda: NOW, follow=False, catalog=load_themes(tmp_path / "no-themes")
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_overview(snap_compare, frozen_app: BedrockTopApp, size: tuple[int, int]) -> None:
    assert snap_compare(frozen_app, terminal_size=size, press=["_"])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_drill_down(snap_compare, frozen_app: BedrockTopApp, size: tuple[int, int]) -> None:
    assert snap_compare(frozen_app, terminal_size=size, press=["_", "enter", "_"])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(snap_compare, frozen_app: BedrockTopApp, size: tuple[int, int]) -> None:
    assert snap_compare(frozen_app, terminal_size=size, press=["_", "question_mark", "_"])
