"""Service Quotas in several regions: one :class:`ServiceQuotasSource` per polled region.

Bedrock's quotas are per account and region (a model's tokens per minute in us-east-1 and in
eu-central-1 are two limits), so each region polled for CloudWatch gets its own quotas source,
refreshed on its own schedule; a fault in one region shows in that region only. Service Quotas
requests are free: more regions add nothing to the AWS bill. With one region nothing changes:
the set holds one source and reports exactly what that source reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from monitor.quotas import ServiceQuota
from monitor.sources.aws import (
    HEADLESS_DEADLINE_S,
    OK,
    STARTING,
    SourceHealth,
    classify_error,
    deadline_passed,
)
from monitor.sources.cloudwatch_regions import worst_status
from monitor.sources.service_quotas import (
    PERMISSIONS,
    SERVICE,
    SOURCE_NAME,
    ServiceQuotasSource,
)

MakeSource = Callable[[str | None], ServiceQuotasSource]


class ServiceQuotasRegions:
    """One quotas source per region. ``make``: the source of one region (None: botocore's own
    region). ``follow_found``: regions CloudWatch finds later (``--all-regions``) get a source
    too, through :meth:`follow`."""

    def __init__(
        self, regions: Iterable[str | None], make: MakeSource, *, follow_found: bool = False
    ) -> None:
        self._make = make
        self._follow_found = follow_found
        self.sources: dict[str | None, ServiceQuotasSource] = {}
        self._running = False
        for region in regions:
            self.sources.setdefault(region, make(region))

    @property
    def version(self) -> int:
        return sum(source.version for source in self.sources.values()) + len(self.sources)

    @property
    def several(self) -> bool:
        return len(self.sources) > 1

    def follow(self, regions: Iterable[str]) -> None:
        """Add a source for each region not read yet (CloudWatch found it polling)."""
        if not self._follow_found:
            return
        for region in regions:
            if region and region not in self.sources:
                source = self.sources[region] = self._make(region)
                if self._running:
                    source.run_in_background()

    def quotas_by_region(self) -> dict[str, list[ServiceQuota]]:
        """Region -> its quota list (the region as CloudWatch's stores name it)."""
        return {
            self._name(region, source): source.quotas for region, source in self.sources.items()
        }

    @staticmethod
    def _name(region: str | None, source: ServiceQuotasSource) -> str:
        return region or source.health.region or ""

    @property
    def health(self) -> SourceHealth:
        """One region: its source's health. Several: the worst state, the regions that are in
        it named in the message."""
        healths = [source.health for source in self.sources.values()]
        if not healths:  # --all-regions before CloudWatch found a region
            return SourceHealth(SOURCE_NAME, STARTING, "waiting for the regions CloudWatch finds")
        if len(healths) == 1:
            return healths[0]
        status = worst_status(health.status for health in healths)
        worst = [health for health in healths if health.status == status]
        goods = [health.last_good for health in healths if health.last_good is not None]
        message = "; ".join(f"{health.region}: {health.message}" for health in worst)
        return SourceHealth(
            name=healths[0].name,
            status=status,
            message=message if status != OK else f"{len(healths)} regions",
            region=",".join(str(health.region) for health in healths),
            last_good=min(goods) if len(goods) == len(healths) else None,
            stale_since=min(
                (h.stale_since for h in healths if h.stale_since is not None), default=None
            ),
            last_error=next((h.last_error for h in worst if h.last_error), None),
            cost_per_hour_usd=0.0,  # Service Quotas requests are free
        )

    def as_report(self) -> dict[str, Any]:
        """``sources.service_quotas``: with several regions, ``regions``: region -> its state."""
        report = self.health.as_report()
        if self.several:
            report["regions"] = {
                self._name(region, source): source.health.as_report()
                for region, source in self.sources.items()
            }
        return report

    def run_in_background(self) -> None:
        self._running = True
        for source in self.sources.values():
            source.run_in_background()

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(
            *(source.stop() for source in self.sources.values()), return_exceptions=True
        )


def service_quotas_regions_once(
    regions: Iterable[str | None],
    profile: str | None,
    endpoint_url: str | None,
    *,
    enabled: bool = True,
    disabled_message: str = "disabled",
    max_attempts: int = 2,
    read_timeout_s: float = 10.0,
    deadline_s: float = HEADLESS_DEADLINE_S,
) -> ServiceQuotasRegions:
    """For ``--once``: every region's quotas fetched at the same time, within the report's one
    deadline (a region still waiting then is reported as timed out; the others keep theirs)."""

    def make(region: str | None) -> ServiceQuotasSource:
        return ServiceQuotasSource(
            region,
            profile,
            endpoint_url,
            enabled=enabled,
            disabled_message=disabled_message,
            max_attempts=max_attempts,
            read_timeout_s=read_timeout_s,
        )

    group = ServiceQuotasRegions(list(regions) or [None], make)
    if not enabled:
        return group

    async def one(source: ServiceQuotasSource) -> None:
        try:
            await asyncio.wait_for(source.refresh(), deadline_s)
        except TimeoutError:
            failure = classify_error(deadline_passed(deadline_s), SERVICE, PERMISSIONS)
            source._fail(failure, time.time())

    async def run() -> None:
        with contextlib.suppress(Exception):
            await asyncio.gather(*(one(source) for source in group.sources.values()))

    asyncio.run(run())
    return group
