"""The billing source as the live screen sees it. No Textual import.

The bill is refreshed rarely (every ``sources.billing_refresh_h`` hours, from the disk cache when it
is fresh) in the app's event loop. When a new bill arrives, it is read as models and its prices are
learned (:meth:`Session.apply_billing`); with CloudWatch on, one GetMetricData window query over the
bill's days gives CloudWatch's estimate beside it (one call per new bill, not per refresh).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from monitor.billing import UNMATCHED
from monitor.reconcile import cloudwatch_tally, estimate
from monitor.session import Session
from monitor.sources.billing import BillingSource
from monitor.ui.hooks import BillingLine, BillingPanelData, BillingState

_log = logging.getLogger(__name__)
PANEL_REFRESH_S = 10.0  # a month of the log's buckets per model: not recomputed every frame
PANEL_MODELS = 2  # with the two summary lines and the unmatched one: 5 lines


class LiveBilling:
    def __init__(
        self, session: Session, source: BillingSource, *, cloudwatch_on: bool = False
    ) -> None:
        self.session = session
        self.source = source
        self.cloudwatch_on = cloudwatch_on
        self._applied = -1
        self._panel: tuple[float, int, BillingPanelData | None] | None = None
        self._cloudwatch: dict[str, dict[str, Any]] | None = None
        self._cloudwatch_window: tuple[float, float] | None = None
        self._cloudwatch_task: asyncio.Task[None] | None = None
        self._version = 0

    @property
    def version(self) -> int:
        return self.source.version + self._version

    async def start(self) -> None:
        self.source.run_in_background()

    async def stop(self) -> None:
        await self.source.stop()
        task, self._cloudwatch_task = self._cloudwatch_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def billing_state(self) -> BillingState:
        # The header is drawn first in every refresh: a new bill is read (and its prices
        # learned) before any row, total or budget of the same frame is computed.
        self._apply()
        health = self.source.health()
        return BillingState(
            state=health.status,
            message="" if health.status == "ok" else health.message,
            cache_age_s=self.source.cache_age_s(),
            cost_per_day_usd=self.source.cost_per_day_usd(),
        )

    def _apply(self) -> None:
        """A new bill (or a new state): read it as models and learn its prices."""
        if self._applied == self.source.version:
            return
        self._applied = self.source.version
        self.session.apply_billing(self.source.data)
        self._panel = None
        window = self.session.billing_window()
        if self.cloudwatch_on and window is not None and window != self._cloudwatch_window:
            self._cloudwatch_window = window
            with contextlib.suppress(RuntimeError):  # no running loop (tests without one)
                self._cloudwatch_task = asyncio.get_running_loop().create_task(
                    self._fetch_cloudwatch(window)
                )

    async def _fetch_cloudwatch(self, window: tuple[float, float]) -> None:
        from monitor.sources.cloudwatch import CloudWatchSource

        sources = self.session.config.sources
        now = self.session.clock()
        source = CloudWatchSource(
            region=sources.region,
            profile=sources.profile,
            endpoint_url=sources.endpoint_url,
            models_from_config=self.session.config.models,
            clock=lambda: now,
        )
        try:
            totals = await source.window_report(window[0], min(window[1], now))
        except Exception:  # never fatal: the panel says "not available"
            _log.exception("CloudWatch estimate for the bill's days failed")
            return
        finally:
            await source.stop()
        if source.state.status == "ok":
            self._cloudwatch = {model: t.as_report() for model, t in totals.items()}
            self._panel = None
            self._version += 1

    def billing_panel(self, now: float) -> BillingPanelData | None:
        self._apply()
        cached = self._panel
        if cached is not None and 0 <= now - cached[0] < PANEL_REFRESH_S:
            return cached[2]
        panel = self._build()
        self._panel = (now, self.session.feed.store.version, panel)
        return panel

    def _build(self) -> BillingPanelData | None:
        summary = self.session.billing_summary
        window = self.session.billing_window()
        if summary is None:
            return None
        book = self.session.price_book
        local = None
        if window is not None:
            store = self.session.feed.store
            local = estimate(
                ((m, store.tally_between(m, *window)) for m in store.model_ids()), book
            )
        cloud = None
        if self._cloudwatch is not None:
            cloud = estimate(
                ((m, cloudwatch_tally(obj)) for m, obj in self._cloudwatch.items()), book
            )
        lines = []
        ranked = [(m, usd) for m, usd in summary.by_model.items() if m != UNMATCHED]
        for model_id, usd in ranked[:PANEL_MODELS]:
            lines.append(
                BillingLine(
                    model_id,
                    usd,
                    None if local is None else local.by_model.get(model_id),
                    None if cloud is None else cloud.by_model.get(model_id),
                )
            )
        unmatched = summary.unmatched
        if unmatched:
            lines.append(BillingLine(UNMATCHED, summary.by_model.get(UNMATCHED, 0.0)))
        return BillingPanelData(
            month_to_date_usd=summary.month_to_date_usd,
            through=summary.through,
            first_day=summary.start,
            lines=lines,
            local_usd=None if local is None else local.usd,
            cloudwatch_usd=None if cloud is None else cloud.usd,
            unmatched_usage_types=len(unmatched),
            estimated=bool(summary.estimated_days),
            learned_models=sum(
                1
                for model_id in self.session.learned_prices
                if (price := book.price_for(model_id)) is not None and price.origin == "learned"
            ),
        )
