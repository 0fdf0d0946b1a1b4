"""Quotas as the live screen sees them: the Service Quotas source, the usage against each limit
(evaluated every few seconds), and the alarms, which go through the budgets' path (the bell, a
notice, and ``on_threshold`` with ``BEDROCK_TOP_QUOTA`` and friends). No Textual import."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from monitor.budgets import run_on_threshold
from monitor.quotas import ModelQuotas, QuotaTracker, reservation, reservation_hint
from monitor.session import Session
from monitor.sources.service_quotas import ServiceQuotasSource
from monitor.sources.service_quotas_regions import ServiceQuotasRegions
from monitor.ui.hooks import QuotaAlarm

_log = logging.getLogger(__name__)
QUOTA_REFRESH_S = 5.0
HINT_CALLS = 100  # recent calls the reservation hint looks at
_STATE_WORDS = {
    "ok": "ok",
    "starting": "starting",
    "stale": "stale",
    "error": "error",
    "disabled": "off",
    "no-credentials": "no credentials",
    "access-denied": "access denied",
}


class LiveQuotas:
    """Quota use per model for the screen, from the session's stores."""

    def __init__(
        self,
        session: Session,
        source: ServiceQuotasRegions | ServiceQuotasSource | None,
        every_s: float = QUOTA_REFRESH_S,
    ) -> None:
        """``source``: one region's quotas, or one source per polled region."""
        self.session = session
        if isinstance(source, ServiceQuotasSource):
            single = source
            source = ServiceQuotasRegions([source.target.region], lambda _region: single)
        self.source = source
        self.every_s = every_s
        self.tracker = QuotaTracker()
        self._evaluated_at: float | None = None
        self._shown: dict[str, ModelQuotas] = {}
        self._fresh = False
        self._day_start = 0.0
        self._inputs: tuple[object, ...] | None = None

    async def start(self) -> None:
        if self.source is not None:
            self.source.run_in_background()

    async def stop(self) -> None:
        if self.source is not None:
            await self.source.stop()

    def model_quotas(self, now: float) -> Mapping[str, ModelQuotas]:
        # The day's total walks up to 1440 minutes per model: every few seconds, not per frame,
        # and only when a store, the quota list or the minute changed.
        due = self._evaluated_at is None or not 0 <= now - self._evaluated_at < self.every_s
        if due:
            cloud = self.session.cloudwatch_store
            regional = self.session.region_stores()
            if self.source is not None:
                # --all-regions: a region CloudWatch found gets its quotas read too.
                self.source.follow(regional)
            inputs = (
                self.session.feed.store.version,
                None if cloud is None else cloud.version,
                tuple((name, store.version) for name, store in regional.items()),
                None if self.source is None else self.source.version,
                int(now) // 60,
                id(self.session.config),
            )
            due = inputs != self._inputs
            self._inputs = inputs
            if not due:
                self._evaluated_at = now
        if due:
            by_region = self.source.quotas_by_region() if self.source is not None else {}
            self._shown = self.session.regional_quota_statuses(now, by_region)
            self._day_start = self.session.quota_day_start(now)
            self._evaluated_at = now
            self._fresh = True
        return self._shown

    def crossed(self) -> Sequence[QuotaAlarm]:
        """Crossings since the last evaluation; each also runs ``on_threshold``."""
        if not self._fresh:
            return []
        self._fresh = False
        command = self.session.config.on_threshold
        alarms = []
        for event in self.tracker.update(self._shown.values(), self._day_start):
            if command:
                run_on_threshold(command, event, on_error=_log.warning)
            alarms.append(QuotaAlarm(event.message, final=event.threshold >= 1.0))
        return alarms

    def state_text(self) -> str:
        if self.source is None:
            return "config only"
        health = self.source.health
        return _STATE_WORDS.get(health.status, health.status)

    def state_message(self) -> str:
        return "" if self.source is None else self.source.health.message

    def reservation_hint(self, model_id: str) -> str:
        recent = self.session.feed.store.recent_requests(model_id, HINT_CALLS)
        found = reservation((r.max_tokens, r.output_tokens, r.status) for r in recent)
        entry = self._shown.get(model_id)
        return reservation_hint(found, entry.burndown if entry is not None else 1.0)
