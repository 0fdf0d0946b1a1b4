"""The fleet source in several regions: one :class:`FleetSource` per polled region.

CloudWatch Logs is regional, and Bedrock's invocation logging is configured per region (each
region delivers to a log group of its own, or nowhere), so each region gets its own source: its
own clients, its own invocation-logging group (discovered there), schedule and state. They all
feed one :class:`~monitor.store.Store` and one :class:`~monitor.groups.GroupIndex`: the fleet is
one view of every caller, each record carrying its region, and the same request id is never
counted twice. A fault in one region shows in that region only. Cost: each region's requests add
up (the header shows the total per hour); Live Tail, when on, runs one session per region.

With one region the set holds one source and behaves, and reports, exactly as that source does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from monitor.groups import GroupIndex
from monitor.sources.aws import (
    HEADLESS_DEADLINE_S,
    SourceHealth,
    classify_error,
    deadline_passed,
)
from monitor.sources.cloudwatch_regions import worst_status
from monitor.sources.fleet import PERMISSIONS, SERVICE, FleetSource
from monitor.store import Store


class FleetRegions:
    """Several regions' fleet sources as one (the interface of :class:`FleetSource`)."""

    def __init__(
        self,
        regions: Sequence[str | None],
        profile: str | None = None,
        endpoint_url: str | None = None,
        *,
        since: float | None = None,
        **options: Any,
    ) -> None:
        self.store = Store(since=since)
        self.groups = GroupIndex(since=since)
        self.sources = [
            FleetSource(
                region,
                profile,
                endpoint_url,
                since=since,
                store=self.store,
                groups=self.groups,
                **options,
            )
            for region in dict.fromkeys(regions or [None])
        ]

    # -- what a single source offers ---------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return any(source.enabled for source in self.sources)

    @property
    def region(self) -> str | None:
        return ",".join(str(s.region) for s in self.sources) if self.several else self._one.region

    @property
    def several(self) -> bool:
        return len(self.sources) > 1

    @property
    def _one(self) -> FleetSource:
        return self.sources[0]

    @property
    def version(self) -> int:
        return self.store.version + self.groups.version

    @property
    def log_groups(self) -> list[str]:
        return [name for source in self.sources for name in source.log_groups]

    @property
    def live_tail(self) -> bool:
        return self._one.live_tail

    @property
    def tail_open(self) -> bool:
        return any(source.tail_open for source in self.sources)

    @property
    def live_tail_note(self) -> str:
        notes = [
            f"{source.region}: {source.live_tail_note}" if self.several else source.live_tail_note
            for source in self.sources
            if source.live_tail_note
        ]
        return "; ".join(notes)

    @property
    def rejected(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for source in self.sources:
            total.update(source.rejected)
        return total

    def requests_per_hour(self) -> float:
        return sum(source.requests_per_hour() for source in self.sources)

    def live_tail_minutes(self) -> float:
        return sum(source.live_tail_minutes() for source in self.sources)

    def set_live_tail(self, on: bool) -> None:
        for source in self.sources:
            source.set_live_tail(on)

    def health(self) -> SourceHealth:
        """One region: its health. Several: the worst state, with the regions in it named."""
        healths = [source.health() for source in self.sources]
        if not self.several:
            return healths[0]
        status = worst_status(health.status for health in healths)
        worst = [health for health in healths if health.status == status]
        goods = [health.last_good for health in healths if health.last_good is not None]
        return SourceHealth(
            name="fleet",
            status=status,
            message="; ".join(_in_region(h) for h in worst if h.message),
            region=self.region,
            last_good=min(goods) if len(goods) == len(healths) else None,
            stale_since=min(
                (h.stale_since for h in healths if h.stale_since is not None), default=None
            ),
            last_error=next((h.last_error for h in worst if h.last_error), None),
            cost_per_hour_usd=sum(health.cost_per_hour_usd for health in healths),
        )

    def snapshot(self) -> dict[str, Any]:
        """``sources.fleet`` of the report: with several regions, the figures added up and
        ``regions``: region -> that region's own ``sources.fleet`` object."""
        if not self.several:
            return self._one.snapshot()
        parts = {str(source.region): source.snapshot() for source in self.sources}
        rejected = self.rejected
        return {
            **self.health().as_report(),
            "kind": "fleet",
            "log_groups": [name for part in parts.values() for name in part["log_groups"]],
            "events": sum(source.events for source in self.sources),
            "records": self.store.stats.accepted,
            "rejected": sum(rejected.values()),
            "rejected_by_reason": dict(rejected.most_common()),
            "requests": sum(source.requests for source in self.sources),
            "requests_per_hour": round(self.requests_per_hour(), 1),
            "live_tail": self.live_tail,
            "live_tail_minutes": round(self.live_tail_minutes(), 2),
            "folded": self._one.snapshot()["folded"],
            "regions": parts,
        }

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.gather(*(source.start() for source in self.sources))

    def run_in_background(self) -> None:
        for source in self.sources:
            source.run_in_background()

    async def poll_once(self, now: float | None = None) -> None:
        await asyncio.gather(*(source.poll_once(now) for source in self.sources))

    async def stop(self) -> None:
        await asyncio.gather(*(source.stop() for source in self.sources), return_exceptions=True)


def fleet_regions_report(
    regions: Sequence[str | None],
    profile: str | None,
    endpoint_url: str | None,
    since_epoch: float,
    now: float,
    *,
    log_groups: Sequence[str] = (),
    enabled: bool = True,
    disabled_message: str = "off",
    max_attempts: int = 4,
    read_timeout_s: float = 20.0,
    deadline_s: float = HEADLESS_DEADLINE_S,
    clock: Callable[[], float] | None = None,
) -> FleetRegions:
    """For ``--once``: one FilterLogEvents pass over [since, now) in every region at once,
    within the report's one deadline (a region still waiting then is reported as timed out;
    the others keep what they read). Never raises for AWS faults."""
    fleet = FleetRegions(
        regions,
        profile,
        endpoint_url,
        since=since_epoch,
        log_groups=log_groups,
        enabled=enabled,
        disabled_message=disabled_message,
        max_attempts=max_attempts,
        read_timeout_s=read_timeout_s,
        clock=clock or (lambda: now),
    )
    if not enabled:
        return fleet

    async def one(source: FleetSource) -> None:
        try:
            await asyncio.wait_for(source.poll_once(now), deadline_s)
        except TimeoutError:
            source._fail(classify_error(deadline_passed(deadline_s), SERVICE, PERMISSIONS))

    async def run() -> None:
        try:
            await asyncio.gather(*(one(source) for source in fleet.sources))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(fleet.stop(), 2.0)

    asyncio.run(run())
    return fleet


__all__ = ["FleetRegions", "fleet_regions_report"]


def _in_region(health: SourceHealth) -> str:
    """A region's message, prefixed with its region unless the message names it already."""
    region = health.region or ""
    if region and region in health.message:
        return health.message
    return f"{region}: {health.message}" if region else health.message
