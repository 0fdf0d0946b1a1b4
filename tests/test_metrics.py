"""What the metrics endpoint publishes, below HTTP: the pure board and its readers, and CloudWatch's
account-wide counters from a real CloudWatch API on loopback (moto's server)."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.cloudwatch_store import INPUT_TOKENS, INVOCATIONS, OUTPUT_TOKENS, THROTTLES
from monitor.exporter import SnapshotCollector, cloudwatch_health
from monitor.metrics import (
    OTHER_MODELS,
    MetricsBoard,
    ModelLabels,
    RevisedMinuteTotal,
    cloudwatch_usage,
    log_health,
    store_usage,
)
from monitor.store import LatencySketch, Store
from tests.conftest import record
from tests.test_app_metrics import bedrock_env  # noqa: F401 (fixture)
from tests.test_cloudwatch_source import (  # noqa: F401 (fixtures)
    aws_env,
    cw,
    make_source,
    minute_start,
    moto_url,
    put,
)


def families_of(board: MetricsBoard) -> dict[str, Any]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(board.snapshot))
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def total(families: dict[str, Any], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in families[name].samples
        if s.name == name + "_total" and labels.items() <= s.labels.items()
    )


def test_revised_minutes_replace_and_settled_minutes_fold() -> None:
    counter = RevisedMinuteTotal(since=600.0, revise_s=300.0)
    assert counter.update([(540.0, 9.0), (600.0, 2.0), (660.0, 3.0)], settled_at=None) == 5.0
    # CloudWatch revises a minute upward as late data lands: replaced, not added.
    assert counter.update([(600.0, 4.0), (660.0, 3.0)], settled_at=None) == 7.0
    # A shrinking revision never takes a published total back.
    assert counter.update([(600.0, 1.0)], settled_at=None) == 7.0
    # Once the source has polled well past them, minutes are folded away.
    assert counter.update([(600.0, 4.0), (660.0, 3.0), (1200.0, 1.0)], settled_at=1100.0) == 8.0
    assert counter.open_from == 780.0
    # A late value for a folded minute is not counted again, and memory keeps only open minutes.
    assert counter.update([(600.0, 50.0), (1200.0, 2.0)], settled_at=1100.0) == 9.0
    assert len(counter._open) == 1


def test_model_labels_are_bounded_and_sticky() -> None:
    labels = ModelLabels(limit=2)
    assert [labels.label(m) for m in ("a", "b", "c", "a", "d", "b")] == [
        "a",
        "b",
        OTHER_MODELS,
        "a",
        OTHER_MODELS,
        "b",
    ]


def test_sketch_bucket_counts_are_within_the_relative_error() -> None:
    rng = random.Random(5)
    values = [rng.lognormvariate(6.5, 1.2) for _ in range(5000)]
    sketch = LatencySketch()
    for value in values:
        sketch.add(value)
    for bound in (50.0, 250.0, 1000.0, 2500.0, 10_000.0):
        got = sketch.count_at_most(bound)
        assert (
            sum(v <= bound * 0.97 for v in values) <= got <= sum(v <= bound * 1.03 for v in values)
        )
    assert sketch.count_at_most(-1.0) == 0
    assert sketch.count_at_most(1e9) == len(values)


def test_store_usage_counts_since_the_window_and_folds_extra_models() -> None:
    now = time.time()
    store = Store(since=now - 3600)
    store.ingest(
        [
            record(epoch=now - 7200, model_id="a"),  # before the window: not counted
            record(epoch=now - 60, model_id="a", input_tokens=7),
            record(epoch=now - 50, model_id="b", status="throttled"),
            record(epoch=now - 40, model_id="c", output_tokens=5),
        ],
        now,
    )
    board = MetricsBoard(created=now - 3600)
    board.add_usage(store_usage(store, "local", labels=ModelLabels(limit=2)))
    families = families_of(board)
    assert total(families, "bedrock_top_requests") == 3
    assert total(families, "bedrock_top_input_tokens", model_id="a") == 7
    assert total(families, "bedrock_top_throttles", model_id="b") == 1
    assert total(families, "bedrock_top_output_tokens", model_id=OTHER_MODELS) == 5
    # No prices were given: nothing is published as a cost, rather than $0.
    assert all(
        s.name != "bedrock_top_cost_usd_total" for s in families["bedrock_top_cost_usd"].samples
    )


def test_log_health() -> None:
    assert log_health("local", {"errors": {}, "files": {"a": 1}}).up
    down = log_health("local", {"errors": {"/x": "permission denied"}})
    assert not down.up and "permission denied" in down.message
    assert (
        log_health("local", {"errors": {}, "files": {}, "waiting_for": ["/x"]}).status == "starting"
    )


async def test_cloudwatch_counters_follow_revisions_without_counting_twice(
    cw: Any,  # noqa: F811 (the imported fixture)
    moto_url: str,  # noqa: F811
) -> None:
    model = "amazon.nova-lite-v1:0"
    now = time.time()
    for offset, invocations in ((-5, 3), (-4, 4), (-3, 5)):
        minute = minute_start(offset, now)
        put(cw, model, INVOCATIONS, minute, invocations)
        put(cw, model, INPUT_TOKENS, minute, 100 * invocations)
        put(cw, model, OUTPUT_TOKENS, minute, 10 * invocations)
    put(cw, model, THROTTLES, minute_start(-4, now), 2)
    source = make_source(moto_url)
    try:
        await source.poll_once(now)
        assert source.state.status == "ok", source.state.message
        board = MetricsBoard()
        board.add_usage(
            cloudwatch_usage(
                source.store,
                now - 3600,
                lambda: source.state.last_good_poll,
                source.schedule.revise_s + 60,
                cost=lambda _m, tally: tally.input_tokens * 1e-6,
            )
        )
        families = families_of(board)
        labels = {"model_id": model, "source": "cloudwatch"}
        assert total(families, "bedrock_top_requests", **labels) == 12
        assert total(families, "bedrock_top_input_tokens", **labels) == 1200
        assert total(families, "bedrock_top_throttles", **labels) == 2
        assert total(families, "bedrock_top_cost_usd", **labels) == pytest.approx(1200e-6)
        # A late datapoint for a minute already counted: CloudWatch's sum for it grows.
        put(cw, model, INVOCATIONS, minute_start(-4, now), 6)
        await source.poll_once(now + 60)
        for _ in range(2):  # scraped twice: the same answer
            families = families_of(board)
            assert total(families, "bedrock_top_requests", **labels) == 18
        assert cloudwatch_health(source).up
    finally:
        await source.stop()


async def test_cloudwatch_unreachable_is_source_down(aws_env: None) -> None:  # noqa: F811
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    source = make_source(dead)
    try:
        await source.poll_once(time.time())
        health = cloudwatch_health(source)
        assert not health.up and health.name == "cloudwatch"
        assert "unreachable" in health.message or "failed" in health.message
    finally:
        await source.stop()


def test_a_source_is_one_registration_with_its_health() -> None:
    from monitor.sources.aws import SourceHealth

    store = Store(since=time.time() - 3600)
    store.ingest([record(model_id="a")], time.time())
    board = MetricsBoard()
    board.add_source(store_usage(store, "local"), lambda: SourceHealth("local", "ok"))
    board.add_source(
        None, lambda: SourceHealth("cloudwatch", "stale", "throttled", cost_per_hour_usd=0.03)
    )
    families = families_of(board)
    up = {s.labels["source"]: s.value for s in families["bedrock_top_source_up"].samples}
    assert up == {"local": 1.0, "cloudwatch": 0.0}
    cost = families["bedrock_top_source_cost_per_hour_usd"].samples
    assert {s.labels["source"]: s.value for s in cost} == {"local": 0.0, "cloudwatch": 0.03}
    assert total(families, "bedrock_top_requests", source="local") == 1


async def test_bedrocktop_counters_carry_the_app_and_equal_the_records(
    cw: Any,  # noqa: F811
    moto_url: str,  # noqa: F811
    server: Any,
    bedrock_env: None,  # noqa: F811
    tmp_path: Any,
) -> None:
    """The wrapper's EMF blocks, added up by CloudWatch per app and model (moto), become
    counters labelled with the app, equal to the records' own sums and apart from the rest."""
    from monitor.metrics import app_metrics_usage
    from monitor.records import parse_line
    from tests.test_app_metrics import emit_fleet, hand_sums, ship, source_for

    lines = emit_fleet(server, tmp_path / "usage.jsonl")
    records = [parse_line(line) for line in lines]
    ship(cw, lines)
    source = source_for(moto_url)
    try:
        await source.poll_once()
        assert source.health.status == "ok", source.health.message
        board = MetricsBoard()
        board.add_source(
            app_metrics_usage(
                source.store,
                time.time() - 3600,
                lambda: source.health.last_good,
                source.schedule.revise_s + 60,
            ),
            lambda: source.health,
        )
        families = families_of(board)
        expected = hand_sums(records)
        for app in ("search-api", "batch-etl"):
            for field in ("requests", "input_tokens", "output_tokens", "errors", "throttles"):
                got = total(families, f"bedrock_top_{field}", app=app, source="apps_cloudwatch")
                assert got == expected[app][field], (app, field)
        up = {s.labels["source"]: s.value for s in families["bedrock_top_source_up"].samples}
        assert up == {"apps_cloudwatch": 1.0}
    finally:
        await source.stop()


def test_the_fleet_is_a_source_of_its_own_beside_the_local_log(tmp_path: Any) -> None:
    from monitor.cli import parse_args
    from monitor.exporter import build_board
    from monitor.session import open_session
    from monitor.sources.fleet import FleetSource
    from tests.conftest import write_lines

    now = time.time()
    log = tmp_path / "usage.jsonl"
    write_lines(
        log, *(record(epoch=now - 60, request_id=f"l{i}", input_tokens=7) for i in range(3))
    )
    config = tmp_path / "config.toml"
    config.write_text("# defaults\n")
    args = parse_args(["--once", "--no-cloudwatch", "--log", str(log), "--config", str(config)])
    session = open_session(args, now=now)
    fleet = FleetSource("us-east-1", None, "http://127.0.0.1:9", log_groups=["/aws/bedrock/x"])
    try:
        session.feed.catch_up()
        fleet.store.ingest(
            [record(epoch=now - 30, request_id=f"f{i}", input_tokens=100) for i in range(5)], now
        )
        families = families_of(build_board(session, None, fleet=fleet))
        requests = "bedrock_top_requests"
        assert total(families, requests, source="local") == 3
        assert total(families, requests, source="fleet") == 5
        assert total(families, "bedrock_top_input_tokens", source="fleet") == 500
        up = {s.labels["source"]: s.value for s in families["bedrock_top_source_up"].samples}
        assert "fleet" in up and "local" in up
    finally:
        session.close()
