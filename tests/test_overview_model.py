"""The overview's cached figures equal the store's own answers at every refresh: the caches
follow the store's change marks, so no figure is older than the refresh that shows it."""

from __future__ import annotations

import random

import pytest

from monitor.store import Store
from monitor.ui.overview_model import LATENCY_WINDOW_S, SPARK_POINTS, SPEND_WINDOW_S, SparkCache
from tests.conftest import record

NOW = 1_790_000_000.0
MODELS = ("anthropic.claude-3-haiku-20240307-v1:0", "amazon.nova-lite-v1:0")


def test_cached_latency_trend_and_spend_hour_match_the_store() -> None:
    rng = random.Random(5)
    store = Store(since=NOW - 3600)
    store.ingest(
        [
            record(
                epoch=NOW - rng.uniform(1, 3000),
                model_id=rng.choice(MODELS),
                latency_ms=rng.lognormvariate(6, 1),
            )
            for _ in range(3000)
        ],
        NOW,
    )
    cache = SparkCache()
    now = NOW
    for step in range(240):  # four minutes of one-second refreshes
        now += 1.0
        batch = [
            record(epoch=now - rng.uniform(0, 1), model_id=rng.choice(MODELS))
            for _ in range(rng.randrange(0, 4))
        ]
        if step % 37 == 0:  # a late record, two minutes back
            batch.append(record(epoch=now - 120, model_id=MODELS[0], latency_ms=9999.0))
        if batch:
            store.ingest(batch, now)
        for model_id in MODELS:
            want = store.latency(model_id, now, LATENCY_WINDOW_S)
            got = cache.latency(store, model_id, now)
            assert (got.count, got.p50, got.p90, got.p99, got.max) == (
                want.count,
                want.p50,
                want.p90,
                want.p99,
                want.max,
            )
            assert got.avg == pytest.approx(want.avg)
            assert cache.values(store, model_id, now) == [
                *store.minute_quantiles(model_id, now - 60, 0.5, SPARK_POINTS - 1),
                *store.minute_quantiles(model_id, now, 0.5, 1),
            ]
            assert cache.hour_tally(store, model_id, now) == store.tally_between(
                model_id, now - SPEND_WINDOW_S, now
            )
