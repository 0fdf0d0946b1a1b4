"""EMF blocks on the wrapper's records, and records on standard output, from real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from monitor import emf
from monitor.records import MAX_LINE_BYTES, UsageRecord, parse_line, record_line
from monitor.wrapper import hooks as hooks_module
from monitor.wrapper import instrument
from monitor.wrapper.extract import Counts
from tests.bedrock_server import (
    TEST_AWS_ENV,
    BedrockServer,
    converse_reply,
    converse_stream_reply,
    error_reply,
    invoke_reply,
    throttle_reply,
)
from tests.emf_spec import emf_problems

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": [{"text": "Name three rivers."}]}]
BODY = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 9, "messages": []})
NO_RETRY = Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=5)
RECORD_FIELDS = frozenset(UsageRecord.__struct_fields__)
EMF_MEMBERS = frozenset({"_aws", emf.APP_DIMENSION, emf.MODEL_DIMENSION, *emf.METRICS})


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, server: BedrockServer) -> None:
    for key, value in TEST_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    for key in ("BEDROCK_TOP_TAGS", "BEDROCK_TOP_APP", "BEDROCK_TOP_EMF", "BEDROCK_TOP_LOG"):
        monkeypatch.delenv(key, raising=False)
    server.reset()


def make_client(server: BedrockServer) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-west-2",
        endpoint_url=server.endpoint_url,
        config=NO_RETRY,
    )


def lines_of(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines(keepends=True) if line.strip()]


def test_each_record_carries_a_valid_emf_block_and_stays_a_v1_record(
    server: BedrockServer, tmp_path: Path
) -> None:
    log = tmp_path / "usage.jsonl"
    client = instrument(make_client(server), log=log, app="search-api", emf=True, tags={"t": "1"})
    server.script(
        converse_reply(input_tokens=40, output_tokens=9, cache_read=300, cache_write=12),
        invoke_reply(input_tokens=11, output_tokens=7),
        throttle_reply(),
        error_reply(400, "ValidationException"),
        converse_stream_reply(),
    )
    client.converse(modelId="us.anthropic.claude-sonnet-4-5-20250929-v1:0", messages=MESSAGES)
    client.invoke_model(modelId="amazon.nova-lite-v1:0", body=BODY)["body"].read()
    for _ in range(2):
        with pytest.raises(botocore.exceptions.ClientError):
            client.converse(modelId="amazon.nova-lite-v1:0", messages=MESSAGES)
    list(client.converse_stream(modelId="amazon.nova-lite-v1:0", messages=MESSAGES)["stream"])

    lines = lines_of(log)
    assert len(lines) == 5
    now_ms = int(time.time() * 1000)
    for line in lines:
        assert emf_problems(line, now_ms) == [], line
        record = parse_line(line)  # still a v1 record: the reader ignores the EMF members
        root = json.loads(line)
        (directive,) = root["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "BedrockTop"
        assert directive["Dimensions"] == [["App", "ModelId"], ["ModelId"]]
        assert (root["App"], root["ModelId"]) == ("search-api", record.model_id)
        assert root["_aws"]["Timestamp"] == int(record.epoch * 1000)
        assert root["Requests"] == 1
        assert (root["InputTokens"], root["OutputTokens"]) == (
            record.input_tokens,
            record.output_tokens,
        )
        assert (root["CacheReadInputTokens"], root["CacheWriteInputTokens"]) == (
            record.cache_read_input_tokens,
            record.cache_write_input_tokens,
        )
        assert root["Errors"] == int(record.status in ("client_error", "server_error"))
        assert root["Throttles"] == int(record.status == "throttled")
        # Latency is that of successful calls, as the local view counts it.
        defined = {metric["Name"] for metric in directive["Metrics"]}
        if record.status == "ok":
            assert root["Latency"] == record.latency_ms
            assert "Latency" in defined
        else:
            assert "Latency" not in root and "Latency" not in defined
        # Low cardinality: only the app and the model are dimensions, never an id or a tag.
        dimension_values = {root[name] for dims in directive["Dimensions"] for name in dims}
        assert dimension_values == {"search-api", record.model_id}
    statuses = [parse_line(line).status for line in lines]
    assert statuses == ["ok", "ok", "throttled", "client_error", "ok"]
    assert json.loads(lines[0])["CacheReadInputTokens"] == 300


def test_emf_members_cannot_collide_with_record_fields(
    server: BedrockServer, tmp_path: Path
) -> None:
    assert not EMF_MEMBERS & RECORD_FIELDS
    plain_log, emf_log = tmp_path / "plain.jsonl", tmp_path / "emf.jsonl"
    plain = instrument(make_client(server), log=plain_log, app="a")
    with_emf = instrument(make_client(server), log=emf_log, app="a", emf=True)
    for client in (plain, with_emf):
        server.script(converse_reply(request_id="req-same"))
        client.converse(modelId="m", messages=MESSAGES)
    emf_line, plain_line = lines_of(emf_log)[0], lines_of(plain_log)[0]
    root = json.loads(emf_line)
    assert set(root) - set(json.loads(plain_line)) == EMF_MEMBERS
    # Without its EMF members the line is the plain record, field for field.
    stripped = {key: value for key, value in root.items() if key not in EMF_MEMBERS}
    ours, theirs = parse_line(json.dumps(stripped).encode()), parse_line(plain_line)
    assert (ours.request_id, ours.input_tokens, ours.app) == (theirs.request_id, 13, "a")
    assert parse_line(emf_line) == ours


def test_emf_is_off_by_default_and_on_with_the_environment(
    server: BedrockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "usage.jsonl"
    instrument(make_client(server), log=log).converse(modelId="m", messages=MESSAGES)
    monkeypatch.setenv("BEDROCK_TOP_EMF", "1")
    instrument(make_client(server), log=log).converse(modelId="m", messages=MESSAGES)
    monkeypatch.setenv("BEDROCK_TOP_EMF", "true")
    instrument(make_client(server), log=log, emf=False).converse(modelId="m", messages=MESSAGES)
    assert ["_aws" in json.loads(line) for line in lines_of(log)] == [False, True, False]


def test_dimension_values_are_valid_whatever_the_app_or_model() -> None:
    assert emf.dimension_value("search-api") == "search-api"
    assert emf.dimension_value("café ☕ api") == "caf? ? api"
    assert emf.dimension_value("tab\tand\nnewline") == "tab?and?newline"
    assert emf.dimension_value("") == emf.UNKNOWN_APP
    assert emf.dimension_value("   ") == emf.UNKNOWN_APP
    assert emf.dimension_value(None) == emf.UNKNOWN_APP
    assert len(emf.dimension_value("x" * 5000)) == 1024
    # The longest model id a record may hold, an app of control characters: still valid.
    line = record_line(
        epoch=time.time(),
        request_id="r",
        model_id="arn:aws:bedrock:" + "m" * 2032,
        operation="Converse",
        input_tokens=1,
        output_tokens=2,
        latency_ms=3.0,
        status="ok",
        token_source="body",
        app="\x01\x02",
    )
    members = emf.emf_members(
        epoch=time.time(),
        app="\x01\x02",
        model_id="arn:aws:bedrock:" + "m" * 2032,
        status="ok",
        input_tokens=1,
        output_tokens=2,
        cache_read_input_tokens=0,
        cache_write_input_tokens=0,
        latency_ms=3.0,
    )
    extended = emf.add_emf(line, members)
    assert emf_problems(extended) == []
    assert parse_line(extended).app == "\x01\x02"
    assert json.loads(extended)["App"] == "??"


def test_a_record_too_long_for_its_emf_block_is_kept_without_it() -> None:
    # Escaped control characters in the tags and the app, the longest model id: a record just
    # under the reader's limit, which its EMF block would push over it.
    tags = {f"k{i:02d}\x01".ljust(60, "\x01"): "\x01" * 256 for i in range(32)}
    fields: dict[str, Any] = {"model_id": "m" * 2048, "app": "\x01" * 256}
    line = record_line(
        epoch=time.time(),
        request_id="r",
        operation="Converse",
        input_tokens=1,
        output_tokens=2,
        latency_ms=3.0,
        status="ok",
        token_source="body",
        tags=tags,
        **fields,
    )
    meter = SimpleNamespace(
        start_epoch=time.time(), instrumentation=SimpleNamespace(app=fields["app"]), **fields
    )
    full = emf.add_emf(
        line,
        emf.emf_members(
            epoch=time.time(),
            app=fields["app"],
            model_id=fields["model_id"],
            status="ok",
            input_tokens=1,
            output_tokens=2,
            cache_read_input_tokens=0,
            cache_write_input_tokens=0,
            latency_ms=3.0,
        ),
    )
    assert len(line) <= MAX_LINE_BYTES < len(full)
    assert hooks_module._with_emf(line, meter, "ok", Counts(1, 2), 3.0) == line  # type: ignore[arg-type]
    shorter = line.replace(b"\\u0001" * 256, b"x", 1)
    assert b"_aws" in hooks_module._with_emf(shorter, meter, "ok", Counts(1, 2), 3.0)  # type: ignore[arg-type]


# -- standard output, from real processes -------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import os, sys, threading
    import boto3
    from botocore.config import Config
    from monitor.wrapper import dropped_records, instrument

    endpoint, mode = sys.argv[1], sys.argv[2]
    messages = [{"role": "user", "content": [{"text": "hi"}]}]
    config = Config(retries={"total_max_attempts": 1})
    client = boto3.client(
        "bedrock-runtime", endpoint_url=endpoint, region_name="us-east-1", config=config
    )
    if mode == "explicit":
        instrument(client, log="-", emf=True, app="lambda-fn")
    else:
        instrument(client)  # BEDROCK_TOP_LOG=- and BEDROCK_TOP_EMF=1 from the environment
    print("app output before the call")
    client.converse(modelId="first-model", messages=messages)
    sys.stdout.write("app output without its newline yet... ")
    sys.stdout.write("finished\\n")
    if mode == "threads":
        def calls():
            for _ in range(25):
                client.converse(modelId="threaded-model", messages=messages)
        workers = [threading.Thread(target=calls) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    if mode == "closed":
        os.close(1)
        client.converse(modelId="lost-model", messages=messages)
        print(f"dropped={dropped_records()}", file=sys.stderr)
        sys.stdout = None
    else:
        print("app output after", flush=False)
    """
)


def run_script(
    server: BedrockServer, tmp_path: Path, mode: str, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "handler.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, **TEST_AWS_ENV, PYTHONPATH=str(ROOT), **env_extra)
    env.pop("BEDROCK_TOP_APP", None)
    return subprocess.run(
        [sys.executable, str(script), server.endpoint_url, mode],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def split_output(stdout: str, with_emf: bool = True) -> tuple[list[str], list[UsageRecord]]:
    """The program's own lines, and the records, each line parsed by the one record parser
    (and, ``with_emf``, checked against the EMF specification)."""
    own, records = [], []
    for line in stdout.splitlines():
        if line.startswith("{"):
            assert ("_aws" in json.loads(line)) == with_emf, line
            if with_emf:
                assert emf_problems(line.encode()) == [], line
            records.append(parse_line(line.encode()))
        else:
            own.append(line)
    return own, records


def test_records_go_to_stdout_with_emf_from_the_environment(
    server: BedrockServer, tmp_path: Path
) -> None:
    done = run_script(server, tmp_path, "env", BEDROCK_TOP_LOG="-", BEDROCK_TOP_EMF="1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # The program's output keeps its place around the record, which is a line of its own.
    assert lines[0] == "app output before the call"
    assert json.loads(lines[1])["model_id"] == "first-model"
    assert lines[2:] == ["app output without its newline yet... finished", "app output after"]
    _, records = split_output(done.stdout)
    assert [r.app for r in records] == ["handler"]
    assert not list(tmp_path.glob("*.jsonl")) and not (tmp_path / "-").exists()


def test_instrument_log_dash_writes_stdout_from_many_threads(
    server: BedrockServer, tmp_path: Path
) -> None:
    done = run_script(server, tmp_path, "threads", BEDROCK_TOP_LOG="-")
    assert done.returncode == 0, done.stderr
    own, records = split_output(done.stdout, with_emf=False)  # EMF is opt-in
    assert own == [
        "app output before the call",
        "app output without its newline yet... finished",
        "app output after",
    ]
    assert len(records) == 1 + 100
    assert len({r.request_id for r in records}) == len(records)

    explicit = run_script(server, tmp_path, "explicit")
    assert explicit.returncode == 0, explicit.stderr
    _, records = split_output(explicit.stdout)
    assert [(r.app, r.model_id) for r in records] == [("lambda-fn", "first-model")]
    assert '"_aws"' in explicit.stdout


def test_closed_stdout_drops_the_record_and_the_call_still_returns(
    server: BedrockServer, tmp_path: Path
) -> None:
    done = run_script(server, tmp_path, "closed", BEDROCK_TOP_LOG="-")
    assert done.returncode == 0, done.stderr
    assert "dropped=1" in done.stderr
    assert "cannot write to standard output" in done.stderr
    assert "Traceback" not in done.stderr


def test_bedrock_top_run_log_dash_and_emf(server: BedrockServer, tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, boto3
            client = boto3.client("bedrock-runtime", endpoint_url=sys.argv[1],
                                  region_name="eu-west-1")
            client.converse(modelId="eu.model", messages=[{"role": "user", "content": []}])
            print("worker done")
            """
        )
    )
    env = dict(os.environ, **TEST_AWS_ENV, PYTHONPATH=str(ROOT))
    env.pop("BEDROCK_TOP_LOG", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "run",
            "--app",
            "nightly",
            "--log",
            "-",
            "--emf",
            "--",
            sys.executable,
            str(script),
            server.endpoint_url,
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    own, records = split_output(done.stdout)
    assert own == ["worker done"]
    shipped = [(r.app, r.model_id, r.region) for r in records]
    assert shipped == [("nightly", "eu.model", "eu-west-1")]
    assert json.loads(done.stdout.splitlines()[0])["App"] == "nightly"


def test_the_monitor_does_not_follow_a_file_named_dash(tmp_path: Path) -> None:
    from monitor.config import load_config

    shipped = load_config(None, env={"BEDROCK_TOP_LOG": "-"})
    assert shipped.sources.logs == load_config(None, env={}).sources.logs
    assert shipped.provenance["sources.logs"].kind == "default"
    named = load_config(None, env={"BEDROCK_TOP_LOG": str(tmp_path / "u.jsonl")})
    assert named.sources.logs == [str(tmp_path / "u.jsonl")]
