"""Configuration: search order, layers and provenance, validation messages, writing back."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.budgets import BudgetSpec
from monitor.config import (
    ConfigError,
    Origin,
    cmd_config_show,
    cmd_init_config,
    load_config,
    save_budget_limit,
    source_lines,
    starter_config,
    write_config,
)
from monitor.pricing import Price

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
BAD_CONFIGS = sorted((Path(__file__).parent / "data" / "bad_configs").glob("*.toml"))


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Per-user directories inside tmp_path, and none of our variables inherited."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.delenv("BEDROCK_TOP_CONFIG", raising=False)
    monkeypatch.delenv("BEDROCK_TOP_LOG", raising=False)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_default_file_gives_the_defaults(tmp_path: Path) -> None:
    config = load_config(None, env={})
    assert config.path is None
    assert config.sources.logs == [str(tmp_path / "xdg-data" / "bedrock-top" / "usage.jsonl")]
    assert config.sources.cloudwatch is True
    assert config.sources.interval_s == 60.0
    assert config.ui.refresh_s == 1.0
    assert config.ui.theme == "bedrock-dark"
    assert config.timezone == "UTC"
    assert config.budgets == [] and config.pricing == {} and config.keys == {}
    assert config.on_threshold is None
    assert {origin.kind for origin in config.provenance.values()} == {"default"}


def test_default_file_is_read_when_present(tmp_path: Path) -> None:
    default = tmp_path / "xdg-config" / "bedrock-top" / "config.toml"
    default.parent.mkdir(parents=True)
    write(default, 'timezone = "Asia/Tokyo"\n')
    config = load_config(None, env={})
    assert config.path == default
    assert config.timezone == "Asia/Tokyo"
    assert config.provenance["timezone"].kind == "file"
    assert config.provenance["timezone"].detail == f"{default}:1"


def test_environment_names_the_file_and_flag_beats_environment(tmp_path: Path) -> None:
    by_env = write(tmp_path / "env.toml", 'timezone = "Europe/Berlin"\n')
    by_flag = write(tmp_path / "flag.toml", 'timezone = "America/New_York"\n')
    config = load_config(None, env={"BEDROCK_TOP_CONFIG": str(by_env)})
    assert config.timezone == "Europe/Berlin"
    assert config.path_origin.kind == "environment"
    config = load_config(by_flag, env={"BEDROCK_TOP_CONFIG": str(by_env)})
    assert config.timezone == "America/New_York"
    assert config.path_origin.kind == "flag"


@pytest.mark.parametrize("named_by", ["flag", "environment"])
def test_a_named_file_that_is_missing_is_an_error(tmp_path: Path, named_by: str) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        if named_by == "flag":
            load_config(missing, env={})
        else:
            load_config(None, env={"BEDROCK_TOP_CONFIG": str(missing)})
    assert str(missing) in str(caught.value)
    assert "no such file" in str(caught.value)


def test_layers_default_file_environment_flag(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        "[sources]\n"
        'logs = ["logs/*.jsonl", "/abs/usage.jsonl"]\n'
        "interval_s = 120\n"
        "[ui]\n"
        "refresh_s = 2\n",
    )
    config = load_config(path, env={})
    # A relative path in a file is relative to the file.
    assert config.sources.logs == [str(tmp_path / "logs" / "*.jsonl"), "/abs/usage.jsonl"]
    assert config.provenance["sources.logs"].kind == "file"

    config = load_config(path, env={"BEDROCK_TOP_LOG": "/env/usage.jsonl"})
    assert config.sources.logs == ["/env/usage.jsonl"]
    assert str(config.provenance["sources.logs"]) == "environment (BEDROCK_TOP_LOG)"

    config = load_config(
        path,
        env={"BEDROCK_TOP_LOG": "/env/usage.jsonl"},
        cli_overrides={
            "sources.logs": ["/flag/a.jsonl"],
            "sources.interval_s": 30,
            "ui.refresh_s": None,  # flag not given
        },
    )
    assert config.sources.logs == ["/flag/a.jsonl"]
    assert config.sources.interval_s == 30.0
    assert config.ui.refresh_s == 2.0
    assert str(config.provenance["sources.logs"]) == "flag (--log)"
    assert str(config.provenance["sources.interval_s"]) == "flag (--poll-interval)"
    assert config.provenance["ui.refresh_s"].kind == "file"
    assert config.provenance["ui.theme"].kind == "default"


def test_a_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={}, cli_overrides={"sources.interval_s": 2})
    assert caught.value.key_path == "sources.interval_s"
    assert "--poll-interval" in str(caught.value)
    assert "at least 10" in str(caught.value)


def test_unknown_keys_are_warnings_naming_the_key(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        "colour = 1\n"
        "[ui]\n"
        'colour = "red"\n'
        "[[budgets]]\n"
        'name = "daily"\n'
        'period = "day"\n'
        "limit_usd = 1.0\n"
        "limit_eur = 1.0\n",
    )
    config = load_config(path, env={})
    assert len(config.warnings) == 3
    assert "'colour'" in config.warnings[0] and "line 1" in config.warnings[0]
    assert "'ui.colour'" in config.warnings[1] and "line 3" in config.warnings[1]
    assert "'budgets[0].limit_eur'" in config.warnings[2] and "line 8" in config.warnings[2]
    assert config.budgets[0].limit_usd == 1.0  # the rest is still read


def test_full_document_is_read_into_the_config_tree(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        'timezone = "Europe/Berlin"\n'
        'tokenizer = "tok.json"\n'
        'models = ["us.anthropic.claude-haiku-4-5-20251001-v1:0"]\n'
        'on_threshold = ["notify-send", "budget"]\n'
        "[sources]\n"
        "cloudwatch = true\n"
        'region = "eu-central-1"\n'
        'profile = "ops"\n'
        'endpoint_url = "http://127.0.0.1:5000"\n'
        "[keys]\n"
        'quit = "q,ctrl+c"\n'
        "[profile_multipliers]\n"
        '"us." = 1.1\n'
        '[pricing."amazon.nova-*"]\n'
        "input_per_mtok = 0.1\n"
        "output_per_mtok = 0.4\n"
        "cache_read_per_mtok = 0.025\n"
        "[[budgets]]\n"
        'name = "nova weekly"\n'
        'models = ["amazon.nova-*"]\n'
        'period = "week"\n'
        "limit_tokens = 5_000_000\n"
        'source = "cloudwatch"\n'
        "warn_at = [0.9, 0.25]\n",
    )
    config = load_config(path, env={})
    assert config.warnings == []
    assert config.timezone == "Europe/Berlin"
    assert config.tokenizer == "tok.json"
    assert config.models == ["us.anthropic.claude-haiku-4-5-20251001-v1:0"]
    assert config.on_threshold == ["notify-send", "budget"]
    assert config.sources.cloudwatch is True
    assert config.sources.region == "eu-central-1"
    assert config.sources.profile == "ops"
    assert config.sources.endpoint_url == "http://127.0.0.1:5000"
    assert config.keys == {"quit": "q,ctrl+c"}
    assert config.profile_multipliers == {"us.": 1.1}
    assert config.pricing == {"amazon.nova-*": Price(0.1, 0.4, cache_read_per_mtok=0.025)}
    assert config.budgets == [
        BudgetSpec(
            name="nova weekly",
            models=("amazon.nova-*",),
            period="week",
            limit_tokens=5_000_000,
            source="cloudwatch",
            warn_at=(0.25, 0.9),
        )
    ]
    assert config.provenance['pricing."amazon.nova-*"'].detail == f"{path}:14"
    assert config.provenance["budgets[0]"].detail == f"{path}:18"


def test_example_config_loads_without_errors_or_warnings() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.warnings == []
    assert [budget.name for budget in config.budgets] == ["haiku daily", "all models monthly"]
    assert config.budgets[0].limit_usd == 5.0
    assert config.budgets[1].limit_tokens == 200_000_000
    assert config.budgets[1].models is None
    assert config.timezone == "Europe/Berlin"


def test_example_config_documents_every_key() -> None:
    """Each key the loader knows appears in the example, set or commented out."""
    text = EXAMPLE.read_text()
    for key in (
        "timezone", "tokenizer", "models", "on_threshold", "logs", "cloudwatch", "region",
        "profile", "endpoint_url", "interval_s", "refresh_s", "theme", "[keys]",
        "[profile_multipliers]", "input_per_mtok", "output_per_mtok", "cache_read_per_mtok",
        "cache_write_per_mtok", "[[budgets]]", "name", "period", "limit_usd", "limit_tokens",
        "source", "warn_at", "quotas", "[burndown]", "tpm", "rpm", "tpd", "tpm_quota_code",
        "rpm_quota_code", "tpd_quota_code",
    ):  # fmt: skip
        assert re.search(rf"^#?\s*{re.escape(key)}", text, re.M), key


def test_source_lines_point_at_keys_of_the_example() -> None:
    text = EXAMPLE.read_text()
    lines = text.splitlines()
    found = source_lines(text)
    assert lines[found["budgets[1].period"] - 1] == 'period = "month"'
    assert lines[found["budgets[0].limit_usd"] - 1] == "limit_usd = 5.0"
    assert lines[found['pricing."anthropic.claude-3-haiku-*".cache_write_per_mtok'] - 1] == (
        "cache_write_per_mtok = 0.30"
    )
    assert lines[found["sources.interval_s"] - 1] == "interval_s = 60"


def _expectations(path: Path) -> dict[str, str]:
    header: dict[str, str] = {}
    for raw in path.read_bytes().decode("utf-8", "replace").splitlines():
        match = re.match(r"# expect(-key|-line)?: ?(.*)$", raw)
        if not match:
            break
        header[match.group(1) or "expect"] = match.group(2).strip()
    return header


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=[p.stem for p in BAD_CONFIGS])
def test_bad_config_is_exit_2_naming_file_line_and_key(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = _expectations(path)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    err = caught.value
    assert err.key_path == expected["-key"]
    assert err.line == (int(expected["-line"]) if expected["-line"] else None)
    message = str(err)
    assert "\n" not in message
    assert message.startswith(str(path))
    if err.line is not None:
        assert f"line {err.line}" in message
    assert expected["-key"] in message
    assert f"expected {expected['expect']}" in message

    assert cmd_config_show(path) == 2
    out, stderr = capsys.readouterr()
    assert out == ""
    assert message in stderr


def test_bad_config_corpus_covers_the_cases() -> None:
    assert len(BAD_CONFIGS) >= 25


def test_init_config_then_config_show_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "xdg-config" / "bedrock-top" / "config.toml"
    assert cmd_init_config(False, None) == 0
    assert target.is_file()
    assert str(target) in capsys.readouterr().out

    # Refuses to overwrite; --force replaces.
    write(target, 'timezone = "Asia/Tokyo"\n')
    assert cmd_init_config(False, None) == 1
    assert "--force" in capsys.readouterr().err
    assert target.read_text() == 'timezone = "Asia/Tokyo"\n'
    assert cmd_init_config(True, None) == 0
    capsys.readouterr()

    assert cmd_config_show(None, as_json=True) == 0
    out, err = capsys.readouterr()
    assert err == ""
    shown = json.loads(out)
    assert shown["file"] == str(target)
    settings = shown["settings"]
    starter = starter_config()
    assert settings["timezone"] == {
        "value": starter["timezone"],
        "source": "file",
        "detail": f"{target}:{source_lines(target.read_text())['timezone']}",
    }
    for name, value in starter["sources"].items():
        assert settings[f"sources.{name}"]["value"] == value
        assert settings[f"sources.{name}"]["source"] == "file"
    for name, value in starter["ui"].items():
        assert settings[f"ui.{name}"]["value"] == value
        assert settings[f"ui.{name}"]["source"] == "file"
    assert settings["sources.region"] == {"value": None, "source": "default", "detail": ""}


def test_config_show_text_names_each_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "c.toml", '[ui]\ntheme = "ansi-dark"\n')
    monkeypatch.setenv("BEDROCK_TOP_LOG", "/env/usage.jsonl")
    assert cmd_config_show(path) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"# file: {path} (named by --config)"
    by_key = {line.split(" = ", 1)[0]: line for line in lines if " = " in line}
    assert by_key["ui.theme"].endswith(f"# file ({path}:2)")
    assert '"ansi-dark"' in by_key["ui.theme"]
    assert by_key["sources.logs"].endswith("# environment (BEDROCK_TOP_LOG)")
    assert by_key["ui.refresh_s"].endswith("# default")


def test_write_config_is_atomic_and_keeps_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.toml"
    write_config(path, {"timezone": "UTC"})
    path.chmod(0o600)
    write_config(path, {"timezone": "Europe/Berlin", "ui": {"theme": "x"}})
    assert load_config(path, env={}).timezone == "Europe/Berlin"
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]


def test_save_budget_limit_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    shutil.copy(EXAMPLE, path)
    before = load_config(path, env={})

    save_budget_limit(path, "haiku daily", limit_usd=7.25)
    after = load_config(path, env={})
    assert after.warnings == []
    assert after.budgets[0] == BudgetSpec(
        name="haiku daily",
        models=("anthropic.claude-3-haiku-*", "us.anthropic.claude-3-haiku-*"),
        period="day",
        limit_usd=7.25,
        source="auto",
        warn_at=(0.5, 0.8, 1.0),
    )
    # Everything else loads back the same.
    assert after.budgets[1] == before.budgets[1]
    for name in ("sources", "ui", "keys", "tokenizer", "timezone", "pricing", "models"):
        assert getattr(after, name) == getattr(before, name), name
    assert after.on_threshold == before.on_threshold
    # The commented original is kept beside it, since tomli-w drops comments.
    assert (tmp_path / "config.toml.bak").read_text() == EXAMPLE.read_text()

    # Switching the kind of limit removes the other one.
    save_budget_limit(path, "haiku daily", limit_tokens=3_000_000)
    again = load_config(path, env={}).budgets[0]
    assert (again.limit_usd, again.limit_tokens) == (None, 3_000_000)


def test_save_budget_limit_refuses_bad_edits_and_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    shutil.copy(EXAMPLE, path)
    original = path.read_bytes()
    with pytest.raises(ConfigError) as caught:
        save_budget_limit(path, "no such budget", limit_usd=1.0)
    assert "no such budget" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        save_budget_limit(path, "haiku daily", limit_usd=-1.0)
    assert caught.value.key_path == "budgets[0].limit_usd"
    with pytest.raises(ValueError):
        save_budget_limit(path, "haiku daily", limit_usd=1.0, limit_tokens=5)
    with pytest.raises(ValueError):
        save_budget_limit(path, "haiku daily")
    assert path.read_bytes() == original
    assert not (tmp_path / "config.toml.bak").exists()


def test_config_modules_do_not_import_textual() -> None:
    code = (
        "import sys, monitor.config, monitor.pricing, monitor.budgets;"
        "sys.exit(1 if 'textual' in sys.modules else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert result.returncode == 0


def test_init_config_and_config_show_through_the_command_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
    }
    env.pop("BEDROCK_TOP_CONFIG", None)
    env.pop("BEDROCK_TOP_LOG", None)

    def bedrock_top(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "monitor", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    target = tmp_path / "xdg-config" / "bedrock-top" / "config.toml"
    created = bedrock_top("init-config")
    assert created.returncode == 0, created.stderr
    assert target.is_file()
    refused = bedrock_top("init-config")
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert bedrock_top("init-config", "--force").returncode == 0

    # The commented budget in the starter file becomes a real one by removing the '# '.
    text = target.read_text()
    start = text.index("# [[budgets]]")
    end = text.index("#\n", start)
    target.write_text(text[:start] + re.sub(r"^# ", "", text[start:end], flags=re.M) + text[end:])

    shown = bedrock_top("config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""
    settings = json.loads(shown.stdout)["settings"]
    assert settings["sources.interval_s"]["value"] == 60.0
    assert settings["sources.interval_s"]["source"] == "file"
    assert settings["budgets[0]"]["value"]["name"] == "daily spend"
    assert settings["budgets[0]"]["value"]["limit_usd"] == 20.0

    bad = tmp_path / "bad.toml"
    bad.write_text('[[budgets]]\nname = "x"\nperiod = "year"\nlimit_usd = 1\n')
    failed = bedrock_top("config", "show", "--config", str(bad))
    assert failed.returncode == 2
    assert failed.stdout == ""
    assert f"{bad}, line 3: budgets[0].period: expected one of day, week, month" in failed.stderr
    assert bedrock_top("config", "shwo").returncode == 2


def test_quota_tables_and_burndown_are_read_and_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor.quotas import DEFAULT_BURNDOWN, QuotaOverride

    example = load_config(EXAMPLE, env={})
    assert example.quotas == [
        QuotaOverride("anthropic.claude-3-haiku-*", {"tpm": 2_000_000, "rpm": 1_000})
    ]
    assert example.burndown == dict(DEFAULT_BURNDOWN) and example.sources.quotas
    path = tmp_path / "config.toml"
    path.write_text(
        '[sources]\nquotas = false\n[quotas."us.*"]\ntpd_quota_code = "L-44444444"\n'
        '[burndown]\n"amazon.nova-*" = 2.5\n'
    )
    config = load_config(path, env={})
    assert config.quotas == [QuotaOverride("us.*", {}, {"tpd": "L-44444444"})]
    assert config.burndown["amazon.nova-*"] == 2.5
    assert config.burndown["anthropic.claude-sonnet-4*"] == 5.0  # the defaults stay
    assert not config.sources.quotas
    assert load_config(path, env={}, cli_overrides={"sources.quotas": False}).provenance[
        "sources.quotas"
    ] == Origin("flag", "--no-quotas")
    assert cmd_config_show(path) == 0
    shown = capsys.readouterr().out
    assert 'quotas."us.*" = {tpd_quota_code = "L-44444444"}' in shown
    assert 'burndown."amazon.nova-*" = 2.5' in shown
    assert "sources.quotas = false" in shown
