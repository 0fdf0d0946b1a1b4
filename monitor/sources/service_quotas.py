"""Service Quotas source: the account's Bedrock quotas (service code ``bedrock``), once an hour.

``ListServiceQuotas`` gives the applied values and ``ListAWSDefaultServiceQuotas`` AWS's defaults,
which fill in any quota without an applied value; both are paginated. Quotas change rarely (a
granted increase), so they are fetched at start and then hourly. Service Quotas API requests are
free: this source adds nothing to the AWS bill.

The client comes from :class:`~monitor.sources.aws.AwsConnection` and every fault goes through
:func:`~monitor.sources.aws.classify_error`: no access is a state the header shows (the
configuration's ``[quotas]`` limits still apply), and the last good list is kept through faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Final

from monitor.quotas import SERVICE_CODE, ServiceQuota, merge_quotas
from monitor.sources.aws import (
    ACCESS_DENIED,
    DISABLED,
    ERROR,
    HEADLESS_DEADLINE_S,
    NO_CREDENTIALS,
    OK,
    STALE,
    STARTING,
    AwsConnection,
    AwsTarget,
    SourceFailure,
    SourceHealth,
    classify_error,
    deadline_passed,
)

SERVICE: Final = "Service Quotas"
PERMISSIONS: Final = "servicequotas:ListServiceQuotas and servicequotas:ListAWSDefaultServiceQuotas"
SOURCE_NAME: Final = "service_quotas"
REFRESH_S: Final = 3600.0
RETRY_S: Final = 60.0
PAGE_SIZE: Final = 100


class ServiceQuotasSource:
    """Fetches Bedrock's quotas through one connection; the newest good list stays available."""

    def __init__(
        self,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        *,
        enabled: bool = True,
        disabled_message: str = "disabled",
        refresh_s: float = REFRESH_S,
        retry_s: float = RETRY_S,
        max_attempts: int = 4,
        read_timeout_s: float = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target = AwsTarget(region, profile, endpoint_url)
        self.enabled = enabled
        self.refresh_s = refresh_s
        self.retry_s = retry_s
        self.quotas: list[ServiceQuota] = []
        self.version = 0  # bumped whenever the list changes
        self._max_attempts = max_attempts
        self._read_timeout_s = read_timeout_s
        self._clock = clock
        self._region = region
        self._status = STARTING if enabled else DISABLED
        self._message = "waiting for the first request" if enabled else disabled_message
        self._last_good: float | None = None
        self._stale_since: float | None = None
        self._last_error: str | None = None
        self._failures = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def health(self) -> SourceHealth:
        return SourceHealth(
            name=SOURCE_NAME,
            status=self._status,
            message=self._message,
            region=self._region,
            last_good=self._last_good,
            stale_since=self._stale_since,
            last_error=self._last_error,
            cost_per_hour_usd=0.0,  # Service Quotas API requests are free
        )

    async def refresh(self) -> None:
        """Fetch both lists once. Never raises: a fault becomes the state, the old list stays."""
        if not self.enabled:
            return
        now = self._clock()
        connection = AwsConnection(
            self.target, max_attempts=self._max_attempts, read_timeout_s=self._read_timeout_s
        )
        applied: list[ServiceQuota] | None = None
        defaults: list[ServiceQuota] | None = None
        failure: SourceFailure | None = None
        try:
            self._region = await connection.open()
            client = await connection.client("service-quotas")
            try:
                applied = await _list(client, "list_service_quotas", applied=True)
            except Exception as exc:
                failure = classify_error(exc, SERVICE, PERMISSIONS)
            try:
                defaults = await _list(client, "list_aws_default_service_quotas", applied=False)
            except Exception as exc:
                failure = failure or classify_error(exc, SERVICE, PERMISSIONS)
        except Exception as exc:
            failure = classify_error(exc, SERVICE, PERMISSIONS)
        finally:
            await connection.close()
        if applied is None and defaults is None:
            assert failure is not None
            self._fail(failure, now)
            return
        quotas = merge_quotas(applied or [], defaults or [])
        if quotas != self.quotas:
            self.quotas = quotas
            self.version += 1
        self._failures = 0
        self._status = OK
        self._last_good = now
        self._stale_since = None
        count = sum(1 for quota in quotas if quota.applied)
        self._message = f"{len(quotas)} quotas ({count} applied values)"
        if failure is not None:
            # One list is better than none: say which part is missing.
            missing = "applied values" if applied is None else "AWS defaults"
            self._message += f"; {missing} unavailable: {failure.message}"
            self._last_error = failure.message

    def _fail(self, failure: SourceFailure, now: float) -> None:
        self._failures += 1
        self._last_error = failure.message
        status = failure.status
        if status == STALE and self._last_good is None:
            status = ERROR
        if self._stale_since is None and self._last_good is not None:
            self._stale_since = now
        self._status = status
        message = failure.message
        if self.quotas:
            message += f" (keeping the {len(self.quotas)} quotas fetched before)"
        elif status == ACCESS_DENIED:
            message += "; [quotas] limits in the configuration still apply"
        self._message = message

    def next_delay(self) -> float:
        """An hour after a good fetch; after a fault, backing off from a minute up to an hour
        (credentials and permissions are not fixed by asking again soon)."""
        if self._status == OK:
            return self.refresh_s
        if self._status in (ACCESS_DENIED, NO_CREDENTIALS):
            return self.refresh_s
        return float(min(self.refresh_s, self.retry_s * 2 ** min(self._failures - 1, 10)))

    async def run_forever(self) -> None:
        if not self.enabled:
            return
        while True:
            await self.refresh()
            await asyncio.sleep(self.next_delay())

    def run_in_background(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run_forever(), name="service-quotas")
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _list(client: Any, operation: str, *, applied: bool) -> list[ServiceQuota]:
    """Every page of one listing for service code ``bedrock``."""
    quotas: list[ServiceQuota] = []
    paginator = client.get_paginator(operation)
    pages = paginator.paginate(ServiceCode=SERVICE_CODE, PaginationConfig={"PageSize": PAGE_SIZE})
    async for page in pages:
        for item in page.get("Quotas", []) or []:
            code, name, value = item.get("QuotaCode"), item.get("QuotaName"), item.get("Value")
            if not code or not name or not isinstance(value, int | float):
                continue
            quotas.append(ServiceQuota(str(code), str(name), float(value), applied=applied))
    return quotas


def service_quotas_once(
    region: str | None,
    profile: str | None,
    endpoint_url: str | None,
    *,
    enabled: bool = True,
    disabled_message: str = "disabled",
    max_attempts: int = 2,
    read_timeout_s: float = 10.0,
    deadline_s: float = HEADLESS_DEADLINE_S,
) -> tuple[list[ServiceQuota], SourceHealth]:
    """For ``--once``: one fetch in an event loop of its own. Never raises for AWS faults."""
    source = ServiceQuotasSource(
        region,
        profile,
        endpoint_url,
        enabled=enabled,
        disabled_message=disabled_message,
        max_attempts=max_attempts,
        read_timeout_s=read_timeout_s,
    )
    if enabled:
        asyncio.run(_refresh_within_deadline(source, deadline_s))
    return source.quotas, source.health


async def _refresh_within_deadline(source: ServiceQuotasSource, deadline_s: float) -> None:
    # A headless report waits for AWS a bounded time in all (see Session.aws_time_left).
    try:
        await asyncio.wait_for(source.refresh(), deadline_s)
    except TimeoutError:
        failure = classify_error(deadline_passed(deadline_s), SERVICE, PERMISSIONS)
        source._fail(failure, time.time())
