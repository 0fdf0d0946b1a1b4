"""Saving configuration: kind to the file (comments, order and formatting kept), through a
symlink, with the file's permissions on the file and its backup, and atomically."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from monitor.config import ConfigError, load_config, save_budget_limit, write_config
from monitor.config_write import backup_path, write_text_atomically

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_an_edit_keeps_the_commented_file_byte_for_byte_outside_the_value(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    shutil.copy(EXAMPLE, path)
    before = path.read_text()
    assert before.count("limit_usd = 5.0\n") == 1

    save_budget_limit(path, "haiku daily", limit_usd=7.25)

    assert path.read_text() == before.replace("limit_usd = 5.0\n", "limit_usd = 7.25\n")
    assert load_config(path, env={}).budgets[0].limit_usd == 7.25


def test_a_hand_formatted_value_keeps_its_spacing_and_comment(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    text = (
        "# my budgets\n"
        "[[budgets]]\n"
        'name   = "team"    # who pays\n'
        'period = "month"\n'
        "limit_tokens   =   2_000_000   # two million\n"
        "\n"
        "[[budgets]]\n"
        'name = "other"\n'
        'period = "day"\n'
        "limit_usd = 1.0\n"
    )
    path.write_text(text)
    save_budget_limit(path, "team", limit_tokens=5_000_000)
    assert path.read_text() == text.replace("2_000_000", "5000000")
    # Switching the kind of limit: the other key goes, the rest of the file stays as it was.
    save_budget_limit(path, "other", limit_tokens=10)
    after = path.read_text()
    assert "limit_usd" not in after and after.startswith(text.replace("2_000_000", "5000000")[:80])
    assert load_config(path, env={}).budgets[1].limit_tokens == 10


def test_a_symlinked_config_is_followed_and_stays_a_link(tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "bedrock-top.toml"
    shutil.copy(EXAMPLE, real)
    link = tmp_path / "config.toml"
    link.symlink_to(real)

    written = save_budget_limit(link, "haiku daily", limit_usd=9.0)

    assert link.is_symlink() and link.resolve() == real
    assert written == real
    assert load_config(link, env={}).budgets[0].limit_usd == 9.0
    # The backup sits beside the real file, holding the previous text.
    assert backup_path(link) == dotfiles / "bedrock-top.toml.bak"
    assert (dotfiles / "bedrock-top.toml.bak").read_text() == EXAMPLE.read_text()
    assert not (tmp_path / "config.toml.bak").exists()


def test_init_config_force_through_a_symlink_rewrites_the_target(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    real.write_text('timezone = "UTC"\n')
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    write_config(link, {"timezone": "Europe/Berlin"})
    assert link.is_symlink()
    assert 'timezone = "Europe/Berlin"' in real.read_text()


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644])
def test_the_file_and_its_backup_keep_the_original_permissions(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "config.toml"
    shutil.copy(EXAMPLE, path)
    path.chmod(mode)
    old_umask = os.umask(0o022)
    try:
        save_budget_limit(path, "haiku daily", limit_usd=6.0)
    finally:
        os.umask(old_umask)
    assert mode_of(path) == mode
    assert mode_of(backup_path(path)) == mode


def test_a_private_config_never_gets_a_readable_backup(tmp_path: Path) -> None:
    """An older backup left world-readable is replaced by one with the file's own bits."""
    path = tmp_path / "config.toml"
    shutil.copy(EXAMPLE, path)
    path.chmod(0o600)
    stale = backup_path(path)
    stale.write_text("old")
    stale.chmod(0o644)
    save_budget_limit(path, "haiku daily", limit_usd=6.0)
    assert mode_of(stale) == 0o600


def test_a_failed_write_leaves_the_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    shutil.copy(EXAMPLE, path)
    before = path.read_bytes()
    real_replace = os.replace

    def replace(src: str, dst: str | Path) -> None:
        if Path(dst) == path:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        save_budget_limit(path, "haiku daily", limit_usd=6.0)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "config.toml.bak"]


def test_a_bad_edit_raises_a_config_error_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    shutil.copy(EXAMPLE, path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="no-such-budget"):
        save_budget_limit(path, "no-such-budget", limit_usd=1.0)
    with pytest.raises(ConfigError):
        save_budget_limit(path, "haiku daily", limit_usd=-1.0)
    assert path.read_bytes() == before
    assert not backup_path(path).exists()


def test_a_new_file_is_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        written = write_text_atomically(tmp_path / "new" / "config.toml", "x = 1\n")
    finally:
        os.umask(old_umask)
    assert mode_of(written) == 0o600
