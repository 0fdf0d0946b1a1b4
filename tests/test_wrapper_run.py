"""``bedrock-top run -- CMD``: an unmodified program, its calls recorded, its exit status kept."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from monitor.wrapper.run import main, parse_args
from tests.bedrock_server import TEST_AWS_ENV, BedrockServer, read_records

ROOT = Path(__file__).resolve().parents[1]

APP = textwrap.dedent(
    """
    import asyncio, json, sys
    import boto3
    from aiobotocore.session import get_session
    import monitor  # the program's own module of that name must stay its own

    endpoint = sys.argv[1]
    messages = [{"role": "user", "content": [{"text": "hi"}]}]
    client = boto3.client("bedrock-runtime", endpoint_url=endpoint, region_name="ap-northeast-1")
    client.converse(modelId="jp.anthropic.claude-haiku-4-5-20251001-v1:0", messages=messages)
    body = client.invoke_model(modelId="m", body=json.dumps({"prompt": "hi"}))["body"].read()
    events = list(client.converse_stream(modelId="m", messages=messages)["stream"])
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")  # not instrumented

    async def main():
        async with get_session().create_client(
            "bedrock-runtime", endpoint_url=endpoint, region_name="ap-northeast-1"
        ) as aio:
            await aio.converse(modelId="async-model", messages=messages)
    asyncio.run(main())
    if len(sys.argv) > 2:
        from monitor.wrapper import instrument
        instrument(client, app="explicit")
        client.converse(modelId="explicit-model", messages=messages)
    print(getattr(monitor, "WHO", "bedrock-top"), len(body), len(events))
    sys.exit(3)
    """
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "orders_app.py").write_text(APP)
    (tmp_path / "monitor.py").write_text('WHO = "own-monitor"\n')
    return tmp_path


def run(args: list[str], log: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **TEST_AWS_ENV, BEDROCK_TOP_LOG=str(log))
    env.pop("BEDROCK_TOP_APP", None)
    env["PYTHONPATH"] = str(ROOT)  # so that `-m monitor.wrapper.run` is found from anywhere
    return subprocess.run(
        [sys.executable, "-m", "monitor.wrapper.run", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_records_every_bedrock_call_and_keeps_the_exit_status(
    server: BedrockServer, app_dir: Path
) -> None:
    log = app_dir / "logs" / "usage.jsonl"
    done = run(
        [
            "--tag",
            "env=test",
            "--",
            sys.executable,
            str(app_dir / "orders_app.py"),
            server.endpoint_url,
        ],
        log,
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout.split()[0] == "own-monitor"
    records = read_records(log)
    assert [(r.operation, r.model_id) for r in records] == [
        ("Converse", "jp.anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("InvokeModel", "m"),
        ("ConverseStream", "m"),
        ("Converse", "async-model"),
    ]
    assert {r.app for r in records} == {"orders_app"}
    assert all(r.tags == {"env": "test"} and r.region == "ap-northeast-1" for r in records)
    assert [(r.input_tokens, r.output_tokens) for r in records] == [
        (13, 5),
        (11, 7),
        (17, 6),
        (13, 5),
    ]
    assert "Traceback" not in done.stderr


def test_explicit_instrument_inside_run_does_not_double(
    server: BedrockServer, app_dir: Path
) -> None:
    (app_dir / "monitor.py").unlink()  # this program uses bedrock-top's own package
    log = app_dir / "usage.jsonl"
    done = run(
        [
            "--app",
            "orders",
            sys.executable,
            str(app_dir / "orders_app.py"),
            server.endpoint_url,
            "x",
        ],
        log,
    )
    assert done.returncode == 3, done.stderr
    records = read_records(log)
    assert len(records) == 5
    assert [r.app for r in records] == ["orders"] * 4 + ["explicit"]


def test_run_without_python_or_with_failures(app_dir: Path) -> None:
    log = app_dir / "usage.jsonl"
    assert run(["--", "sh", "-c", "exit 7"], log).returncode == 7
    missing = run(["--", "no-such-command-bedrock-top"], log)
    assert missing.returncode == 127
    assert "command not found: no-such-command-bedrock-top" in missing.stderr
    assert not log.exists()


def test_usage_errors() -> None:
    assert main([]) == 2
    assert main(["--tag", "novalue", "--", "true"]) == 2
    assert main(["--bogus", "x"]) == 2
    settings, command = parse_args(["--app=a", "--log", "x.jsonl", "--", "python", "-V", "--app"])
    assert command == ["python", "-V", "--app"]
    assert settings["BEDROCK_TOP_APP"] == "a"
    assert settings["BEDROCK_TOP_LOG"].endswith("x.jsonl")
    assert parse_args(["python", "app.py"])[1] == ["python", "app.py"]


def test_bedrock_top_run_takes_the_tokenizer_from_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'tokenizer = "{tmp_path / "tokenizer.json"}"\n')
    env = dict(os.environ, BEDROCK_TOP_CONFIG=str(config))
    env.pop("BEDROCK_TOP_TOKENIZER", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "run",
            "--",
            "sh",
            "-c",
            'echo "tokenizer=$BEDROCK_TOP_TOKENIZER"; exit 5',
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 5, done.stderr
    assert done.stdout.strip() == f"tokenizer={tmp_path / 'tokenizer.json'}"
    # --tokenizer on the command line wins over the file.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "run",
            "--tokenizer",
            "other.json",
            "--",
            "sh",
            "-c",
            'echo "tokenizer=$BEDROCK_TOP_TOKENIZER"',
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "tokenizer=other.json"
