"""The Prometheus endpoint: bedrock-top export as a process of its own, scraped over HTTP and parsed
with prometheus_client's own parsers, against the --once --json report of the same log."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from monitor.records import UsageRecord
from tests.conftest import record, write_lines

REPO = Path(__file__).resolve().parents[1]
ANNOUNCED = re.compile(r"metrics on (http://\S+/metrics)")
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA = "amazon.nova-lite-v1:0"
UNPRICED = "example.unpriced-model-v1:0"
# The report's totals object field -> the counter that must equal it.
COUNTER_OF = {
    "requests": "bedrock_top_requests",
    "input_tokens": "bedrock_top_input_tokens",
    "output_tokens": "bedrock_top_output_tokens",
    "cache_read_input_tokens": "bedrock_top_cache_read_input_tokens",
    "cache_write_input_tokens": "bedrock_top_cache_write_input_tokens",
    "errors": "bedrock_top_errors",
    "throttles": "bedrock_top_throttles",
    "estimated_requests": "bedrock_top_estimated_requests",
}


def known_log(path: Path, now: float) -> list[UsageRecord]:
    """Every kind of record the counters tell apart, in the last ten minutes."""
    records = []
    for index in range(30):
        model = (HAIKU, NOVA, UNPRICED)[index % 3]
        status = ("ok", "ok", "ok", "client_error", "server_error", "throttled")[index % 6]
        records.append(
            record(
                epoch=now - 600 + index * 7,
                model_id=model,
                input_tokens=100 + index,
                output_tokens=20 + index,
                latency_ms=150.0 + 90 * index,
                status=status,
                # Cache tokens only where the model has cache prices (else it is unpriced).
                cache_read_input_tokens=5 * index if model == HAIKU and index % 4 == 0 else 0,
                cache_write_input_tokens=3 * index if model == HAIKU and index % 5 == 0 else 0,
                ttft_ms=40.0 + index if index % 2 == 0 else None,
                token_source="estimate" if index % 7 == 0 else "body",
                operation="ConverseStream" if index % 2 == 0 else "Converse",
            )
        )
    write_lines(path, *records)
    return records


def run_once_json(log: Path, *extra: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "monitor", "--once", "--json", "--no-cloudwatch"]
    result = subprocess.run(
        [*command, "--log", str(log), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


class Exporter:
    """``bedrock-top export`` in a process of its own, on a free port."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.stderr_path = tmp_path / f"export-{time.monotonic_ns()}.stderr"
        with self.stderr_path.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitor", "export", *args],
                stdout=subprocess.DEVNULL,
                stderr=sink,
                stdin=subprocess.DEVNULL,
                cwd=tmp_path,
                env=env,
            )
        self.url = self._wait_for_url()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def _wait_for_url(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = ANNOUNCED.search(self.stderr)
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"export did not start: {self.stderr}")

    def text(self, openmetrics: bool = False) -> str:
        request = urllib.request.Request(self.url)
        if openmetrics:
            request.add_header("Accept", "application/openmetrics-text; version=1.0.0")
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(response.read().decode())

    def scrape(self) -> dict[str, Any]:
        """Families by name, parsed with prometheus_client's text-format parser."""
        return {family.name: family for family in text_string_to_metric_families(self.text())}

    def wait_for(self, check: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        families: dict[str, Any] = {}
        while time.monotonic() < deadline:
            families = self.scrape()
            if check(families):
                return families
            time.sleep(0.2)
        raise AssertionError(f"the endpoint never showed what was expected: {families}")

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@pytest.fixture
def exporters() -> Iterator[list[Exporter]]:
    started: list[Exporter] = []
    yield started
    for exporter in started:
        if exporter.process.poll() is None:
            exporter.stop()


def counter(families: dict[str, Any], name: str, **labels: str) -> float:
    """The sum of a counter's _total samples whose labels include ``labels``."""
    family = families.get(name)
    if family is None:
        return 0.0
    return sum(
        sample.value
        for sample in family.samples
        if sample.name == name + "_total" and labels.items() <= sample.labels.items()
    )


def test_counters_equal_the_report_type_by_type(tmp_path: Path, exporters: list[Exporter]) -> None:
    now = time.time()
    log = tmp_path / "usage.jsonl"
    records = known_log(log, now)
    report = run_once_json(log)
    exporter = Exporter(tmp_path, "--log", str(log), "--no-cloudwatch", "--prometheus", "0")
    exporters.append(exporter)
    families = exporter.wait_for(lambda f: counter(f, "bedrock_top_requests") == len(records))
    for field, name in COUNTER_OF.items():
        assert family_type(families, name) == "counter"
        assert counter(families, name) == report["totals"]["local"][field], field
        for entry in report["models"]:
            got = counter(families, name, model_id=entry["model_id"], source="local")
            assert got == entry["local"][field], (entry["model_id"], field)
    # Priced usage only: the unpriced model has no cost sample at all, never a zero.
    assert counter(families, "bedrock_top_cost_usd") == pytest.approx(
        report["totals"]["local"]["cost_usd"], abs=1e-5
    )
    cost_models = {s.labels["model_id"] for s in families["bedrock_top_cost_usd"].samples}
    assert UNPRICED not in cost_models and {HAIKU, NOVA} <= cost_models
    # Latency histograms: successful calls only, in seconds, with exact counts and sums.
    ok = [r for r in records if r.status == "ok"]
    latency = {s.name: s for s in histogram_samples(families, "bedrock_top_latency_seconds")}
    assert latency["bedrock_top_latency_seconds_count"].value == len(ok)
    assert latency["bedrock_top_latency_seconds_sum"].value == pytest.approx(
        sum(r.latency_ms for r in ok) / 1000
    )
    streamed = [r for r in records if r.ttft_ms is not None]
    ttft_count = sum(
        s.value
        for s in families["bedrock_top_ttft_seconds"].samples
        if s.name == "bedrock_top_ttft_seconds_count"
    )
    assert ttft_count == len(streamed)
    assert_buckets_cumulative(families, "bedrock_top_latency_seconds", ok)
    assert gauge(families, "bedrock_top_source_up", source="local") == 1.0
    assert gauge(families, "bedrock_top_scrape_ok") == 1.0
    # The same numbers in OpenMetrics, parsed with its own parser (which checks the format).
    open_families = {f.name: f for f in openmetrics_families(exporter.text(openmetrics=True))}
    assert open_families["bedrock_top_requests"].type == "counter"
    total = sum(
        s.value for s in open_families["bedrock_top_requests"].samples if s.name.endswith("_total")
    )
    assert total == report["totals"]["local"]["requests"]
    assert exporter.stop() == 0


def family_type(families: dict[str, Any], name: str) -> str:
    return str(families[name].type)


def histogram_samples(families: dict[str, Any], name: str) -> list[Any]:
    """A histogram's samples summed over its label sets, by sample name (and le)."""
    merged: dict[tuple[str, str], Any] = {}
    for sample in families[name].samples:
        key = (sample.name, sample.labels.get("le", ""))
        if key in merged:
            merged[key] = merged[key]._replace(value=merged[key].value + sample.value)
        else:
            merged[key] = sample
    return [s for (n, le), s in merged.items() if not le]


def assert_buckets_cumulative(families: dict[str, Any], name: str, ok: list[UsageRecord]) -> None:
    by_le: dict[float, float] = {}
    for sample in families[name].samples:
        if sample.name == name + "_bucket":
            le = float(sample.labels["le"])
            by_le[le] = by_le.get(le, 0.0) + sample.value
    bounds = sorted(by_le)
    assert bounds[-1] == float("inf") and by_le[bounds[-1]] == len(ok)
    assert all(by_le[a] <= by_le[b] for a, b in itertools.pairwise(bounds))
    for bound in bounds[:-1]:
        # Within the sketch's 2 % of the bound.
        low = sum(1 for r in ok if r.latency_ms / 1000 <= bound * 0.97)
        high = sum(1 for r in ok if r.latency_ms / 1000 <= bound * 1.03)
        assert low <= by_le[bound] <= high, bound


def gauge(families: dict[str, Any], name: str, **labels: str) -> float | None:
    family = families.get(name)
    if family is None:
        return None
    for sample in family.samples:
        if labels.items() <= sample.labels.items():
            return float(sample.value)
    return None


def test_new_records_and_a_rotation_while_scraping(
    tmp_path: Path, exporters: list[Exporter]
) -> None:
    """Scrapes go on while the log is appended to, rotated away and started afresh: the counters
    never go back and end at every record written."""
    now = time.time()
    log = tmp_path / "usage.jsonl"
    written = len(known_log(log, now))
    exporter = Exporter(tmp_path, "--log", str(log), "--no-cloudwatch", "--prometheus", "0")
    exporters.append(exporter)
    exporter.wait_for(lambda f: counter(f, "bedrock_top_requests") == written)
    seen = [float(written)]
    for round_number in range(3):
        write_lines(log, *(record(epoch=time.time(), model_id=NOVA) for _ in range(5)))
        written += 5
        if round_number == 1:
            log.rename(tmp_path / "usage.jsonl.1")  # as logrotate does, then a new file
            write_lines(tmp_path / "usage.jsonl.1", record(epoch=time.time(), model_id=NOVA))
            written += 1
            write_lines(log, *(record(epoch=time.time(), model_id=HAIKU) for _ in range(4)))
            written += 4
        seen.append(counter(exporter.scrape(), "bedrock_top_requests"))
    families = exporter.wait_for(lambda f: counter(f, "bedrock_top_requests") == written)
    seen.append(counter(families, "bedrock_top_requests"))
    assert seen == sorted(seen), "a counter went back"
    assert gauge(families, "bedrock_top_source_up", source="local") == 1.0


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "usage.jsonl"
    known_log(log, time.time())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_export(
            tmp_path, "--log", str(log), "--no-cloudwatch", "--prometheus", str(port)
        )
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr and "already in use" in result.stderr


@pytest.mark.parametrize("bad", ["70000", "abc", "-1", "host:"])
def test_bad_ports_are_refused_before_anything_starts(tmp_path: Path, bad: str) -> None:
    result = run_export(tmp_path, "--demo", "--prometheus", bad)
    assert result.returncode == 2
    assert "--prometheus" in result.stderr and "port from 1 to 65535" in result.stderr


def test_export_without_a_port_says_how_to_give_one(tmp_path: Path) -> None:
    result = run_export(tmp_path, "--demo")
    assert result.returncode == 2
    assert "--prometheus PORT" in result.stderr and "export.prometheus_port" in result.stderr


def test_the_port_can_come_from_the_configuration(
    tmp_path: Path, exporters: list[Exporter]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "config.toml"
    config.write_text(f'[export]\nprometheus_port = {port}\nprometheus_host = "127.0.0.1"\n')
    log = tmp_path / "usage.jsonl"
    written = len(known_log(log, time.time()))
    exporter = Exporter(tmp_path, "--config", str(config), "--log", str(log), "--no-cloudwatch")
    exporters.append(exporter)
    assert exporter.url == f"http://127.0.0.1:{port}/metrics"
    exporter.wait_for(lambda f: counter(f, "bedrock_top_requests") == written)


def test_a_bad_port_in_the_configuration_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[export]\nprometheus_port = 99999\n")
    result = run_export(tmp_path, "--config", str(config), "--demo")
    assert result.returncode == 2
    assert "export.prometheus_port" in result.stderr and "line 2" in result.stderr


def test_budget_fractions_equal_the_report(tmp_path: Path, exporters: list[Exporter]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[[budgets]]\nname = "daily"\nperiod = "day"\nlimit_usd = 0.05\nsource = "local"\n'
        '[[budgets]]\nname = "tokens"\nperiod = "month"\nlimit_tokens = 100000\n'
        'source = "local"\n'
    )
    log = tmp_path / "usage.jsonl"
    known_log(log, time.time())
    report = run_once_json(log, "--config", str(config))
    exporter = Exporter(
        tmp_path, "--config", str(config), "--log", str(log), "--no-cloudwatch", "--prometheus", "0"
    )
    exporters.append(exporter)
    families = exporter.wait_for(lambda f: "bedrock_top_budget_fraction" in f)
    for budget in report["budgets"]:
        got = gauge(families, "bedrock_top_budget_fraction", budget=budget["name"])
        assert got == pytest.approx(budget["fraction"], rel=1e-3), budget["name"]
        assert families["bedrock_top_budget_fraction"].type == "gauge"


def test_many_model_ids_are_bounded_and_still_add_up(
    tmp_path: Path, exporters: list[Exporter]
) -> None:
    from monitor.metrics import MAX_MODEL_LABELS, OTHER_MODELS

    now = time.time()
    log = tmp_path / "usage.jsonl"
    count = MAX_MODEL_LABELS + 30
    write_lines(log, *(record(epoch=now - 60, model_id=f"made.up-{i:04d}") for i in range(count)))
    exporter = Exporter(tmp_path, "--log", str(log), "--no-cloudwatch", "--prometheus", "0")
    exporters.append(exporter)
    families = exporter.wait_for(lambda f: counter(f, "bedrock_top_requests") == count)
    labels = {s.labels["model_id"] for s in families["bedrock_top_requests"].samples}
    labels = {label for label in labels if label}
    assert len(labels) == MAX_MODEL_LABELS + 1 and OTHER_MODELS in labels
    assert counter(families, "bedrock_top_requests", model_id=OTHER_MODELS) == 30


def test_a_log_that_cannot_be_read_is_source_down(
    tmp_path: Path, exporters: list[Exporter]
) -> None:
    log = tmp_path / "usage.jsonl"
    log.mkdir()  # a directory where the log should be: reading it fails
    exporter = Exporter(tmp_path, "--log", str(log), "--no-cloudwatch", "--prometheus", "0")
    exporters.append(exporter)
    families = exporter.wait_for(lambda f: "bedrock_top_source_up" in f)
    assert gauge(families, "bedrock_top_source_up", source="local") == 0.0
    assert gauge(families, "bedrock_top_scrape_ok") == 1.0


def run_export(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", "export", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ},
    )


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_live_screen_serves_metrics_from_its_own_store(tmp_path: Path) -> None:
    """The real screen in tmux with --prometheus: a scrape is answered from the store the screen
    reads while it keeps refreshing, and quitting closes the port."""
    from monitor.sources.demo import BASE_MODELS
    from tests.test_tmux import Tmux

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    screen = Tmux(120, 40, f"{sys.executable} -m monitor --demo --demo-seed 3 --prometheus {port}")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        screen.wait_for(lambda s: "req/m" in s and "claude" in s, timeout=60)

        def scrape() -> dict[str, Any]:
            with urllib.request.urlopen(url, timeout=30) as response:
                text = response.read().decode()
            return {f.name: f for f in text_string_to_metric_families(text)}

        first = scrape()
        models = {s.labels["model_id"] for s in first["bedrock_top_requests"].samples}
        assert models == {model.model_id for model in BASE_MODELS[:7]}
        assert gauge(first, "bedrock_top_scrape_ok") == 1.0
        deadline = time.monotonic() + 30
        before = counter(first, "bedrock_top_requests")
        while counter(scrape(), "bedrock_top_requests") <= before:
            assert time.monotonic() < deadline, "the demo's new records never reached the counters"
            time.sleep(0.5)
        screen.keys("q")
        deadline = time.monotonic() + 20
        while not screen.marker.exists():
            assert time.monotonic() < deadline, "the screen did not quit"
            time.sleep(0.1)
        assert screen.marker.read_text().strip() == "0"
        with pytest.raises(OSError):
            urllib.request.urlopen(url, timeout=5)
    finally:
        screen.close()


def test_quota_fractions_equal_the_report(tmp_path: Path, exporters: list[Exporter]) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[quotas."anthropic.claude-3-haiku-*"]\nrpm = 50\ntpm = 100000\n')
    log = tmp_path / "usage.jsonl"
    now = time.time()
    # All in one minute a little while ago, so both runs see the same busiest minute.
    minute = (int(now) // 60 - 2) * 60
    write_lines(log, *(record(epoch=minute + 5 + i, model_id=HAIKU) for i in range(20)))
    report = run_once_json(log, "--config", str(config))
    quota = next(m for m in report["models"] if m["model_id"] == HAIKU)["quota"]
    exporter = Exporter(
        tmp_path, "--config", str(config), "--log", str(log), "--no-cloudwatch", "--prometheus", "0"
    )
    exporters.append(exporter)
    families = exporter.wait_for(lambda f: "bedrock_top_quota_fraction" in f)
    assert families["bedrock_top_quota_fraction"].type == "gauge"
    for measure in ("rpm", "tpm"):
        got = gauge(families, "bedrock_top_quota_fraction", model_id=HAIKU, quota=measure)
        assert got == pytest.approx(quota[measure]["fraction"], rel=1e-6), measure
    assert gauge(families, "bedrock_top_quota_fraction", model_id=HAIKU, quota="rpm") == 0.4
