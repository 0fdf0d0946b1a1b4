"""Where bedrock-top's files live by default (platformdirs locations and environment overrides)."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir, user_config_dir, user_data_dir

APP_NAME = "bedrock-top"
LOG_ENV = "BEDROCK_TOP_LOG"
CONFIG_ENV = "BEDROCK_TOP_CONFIG"
CACHE_ENV = "BEDROCK_TOP_CACHE_DIR"


def default_log_path() -> Path:
    """The usage log the wrapper writes and the monitor tails: ``$BEDROCK_TOP_LOG`` if set, else
    ``<user_data_dir>/usage.jsonl``."""
    override = os.environ.get(LOG_ENV)
    if override:
        return Path(override).expanduser()
    return Path(user_data_dir(APP_NAME)) / "usage.jsonl"


def default_config_path() -> Path:
    """``$BEDROCK_TOP_CONFIG`` if set, else ``<user_config_dir>/config.toml``."""
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    return Path(user_config_dir(APP_NAME)) / "config.toml"


def user_themes_dir() -> Path:
    """Where users drop their own theme files."""
    return Path(user_config_dir(APP_NAME)) / "themes"


def user_cache_path() -> Path:
    """Where fetched data is cached (the bill): ``$BEDROCK_TOP_CACHE_DIR`` if set, else the
    per-user cache directory (``~/.cache/bedrock-top`` on Linux)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    return Path(user_cache_dir(APP_NAME))
