"""Writing the configuration file: one path for every write, kind to the file and safe.

- Edits (the screen's budget dialog, and any later edit) go through tomlkit, which keeps the
  file's comments, order and formatting: only the changed value's text changes. A fresh file
  (``init-config``) is written with tomli-w by the caller.
- A symlinked configuration (dotfiles repositories do this) is followed: the target is
  rewritten, the link stays a link.
- The file keeps its permission bits, and the backup of the previous text gets the same ones
  (a configuration may be private; its backup must not be readable by more people).
- Every write is atomic: a temporary file in the same directory, flushed to disk, renamed over
  the target. A reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

import tomlkit
from tomlkit.items import AoT, Table

BACKUP_SUFFIX = ".bak"
LIMIT_KEYS = ("limit_usd", "limit_tokens")


class EditError(ValueError):
    """The edit cannot be made to this document (the key path that was looked for is named)."""

    def __init__(self, key_path: str, expected: str) -> None:
        super().__init__(f"{key_path}: expected {expected}")
        self.key_path = key_path
        self.expected = expected


def write_target(path: Path) -> Path:
    """The file a write to ``path`` must replace: the end of its chain of symlinks."""
    return Path(os.path.realpath(path))


def backup_path(path: Path) -> Path:
    """Where the previous text of ``path`` is kept: ``config.toml`` -> ``config.toml.bak``,
    beside the real file (not beside a symlink to it)."""
    target = write_target(path)
    return target.with_name(target.name + BACKUP_SUFFIX)


def write_text_atomically(path: Path, text: str, *, backup: str | None = None) -> Path:
    """Replace the file ``path`` names (following symlinks) with ``text``, atomically, keeping
    its permission bits. With ``backup``, that text is first written (atomically, with the same
    bits) to :func:`backup_path`. A new file is private (0600). Returns the file written."""
    target = write_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    if backup is not None:
        _replace(backup_path(target), backup, mode)
    _replace(target, text, mode)
    return target


def _replace(target: Path, text: str, mode: int | None) -> None:
    # mkstemp creates the file 0600, so the text is never readable by more people than the
    # final bits allow, even for a moment.
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        if mode is not None:
            os.chmod(temp_name, mode)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    # The rename itself reaches the disk with the directory.
    with contextlib.suppress(OSError):
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def set_budget_limit(text: str, budget_name: str, key: str, value: float | int) -> str:
    """``text`` with the ``[[budgets]]`` entry named ``budget_name`` limited by ``key``
    (``limit_usd`` or ``limit_tokens``) = ``value``. Everything else keeps its bytes: changing
    the value of the same key rewrites only that value; switching the kind of limit removes the
    other key's line and adds the new key at the end of that table. Raises EditError."""
    if key not in LIMIT_KEYS:
        raise ValueError(f"not a limit key: {key}")
    document = tomlkit.parse(text)
    budgets = document.get("budgets")
    if not isinstance(budgets, AoT | list):
        raise EditError("budgets", "an array of [[budgets]] tables")
    entry = next(
        (
            item
            for item in budgets
            if isinstance(item, Table | dict) and item.get("name") == budget_name
        ),
        None,
    )
    if entry is None:
        raise EditError("budgets", f"a budget named {budget_name!r} to change")
    for other in LIMIT_KEYS:
        if other != key and other in entry:
            del entry[other]
    entry[key] = value
    return tomlkit.dumps(document)
