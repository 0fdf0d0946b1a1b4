"""Billing source: Amazon Bedrock's month-to-date cost from Cost Explorer, cached on disk.

One ``GetCostAndUsage`` query (daily, ``SERVICE = Amazon Bedrock``, grouped by ``USAGE_TYPE``,
``UnblendedCost`` and ``UsageQuantity``) for the current UTC month, followed page by page.

Cost is the design constraint: Cost Explorer bills $0.01 per request, and each page is a request.
So the source is off unless asked for, the answer is cached in the per-user cache directory
(written atomically), and it is fetched again only when the cache is older than the refresh
interval (6 hours by default, at least 1) or is of another month. The bill itself is a few hours
to a day late and refreshes up to three times a day, so nothing is lost by asking rarely.

Faults go through :func:`monitor.sources.aws.classify_error`: no permission or Cost Explorer not
enabled is a state the header shows; the cache, if any, keeps being shown with its age.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import msgspec

from monitor.billing import BillingData, BillingRow
from monitor.paths import user_cache_path
from monitor.sources.aws import (
    DISABLED,
    HEADLESS_DEADLINE_S,
    NO_CREDENTIALS_MESSAGE,
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

SERVICE: Final = "Cost Explorer"
PERMISSIONS: Final = "ce:GetCostAndUsage"
# Cost Explorer has one endpoint, in us-east-1, whatever region the rest of bedrock-top uses.
CE_REGION: Final = "us-east-1"
USD_PER_REQUEST: Final = 0.01
DEFAULT_REFRESH_H: Final = 6.0
MIN_REFRESH_H: Final = 1.0
RETRY_AFTER_FAULT_S: Final = 3600.0  # a transient fault: ask again in an hour (or at the refresh)
MAX_PAGES: Final = 40  # $0.40 at most per refresh, whatever the account holds
MAX_ROWS: Final = 200_000  # bounded memory: about 31 days x 6,000 usage types
CACHE_VERSION: Final = 1
BEDROCK_SERVICE: Final = "Amazon Bedrock"


def month_range(now: float) -> tuple[str, str]:
    """``(first day of the UTC month, tomorrow)``: Cost Explorer's dates are UTC, the end is
    exclusive, and today's partial figures are included."""
    today = datetime.fromtimestamp(now, UTC).date()
    return today.replace(day=1).isoformat(), (today + timedelta(days=1)).isoformat()


def request_arguments(start: str, end: str, token: str | None = None) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "TimePeriod": {"Start": start, "End": end},
        "Granularity": "DAILY",
        "Filter": {"Dimensions": {"Key": "SERVICE", "Values": [BEDROCK_SERVICE]}},
        "GroupBy": [{"Type": "DIMENSION", "Key": "USAGE_TYPE"}],
        "Metrics": ["UnblendedCost", "UsageQuantity"],
    }
    if token:
        arguments["NextPageToken"] = token
    return arguments


def cache_file(cache_dir: Path, target: AwsTarget) -> Path:
    """One cache per profile and endpoint, so that two accounts never share a bill."""
    endpoint = (
        target.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_COST_EXPLORER")
        or os.environ.get("AWS_ENDPOINT_URL")
        or ""
    )
    key = json.dumps([target.profile or os.environ.get("AWS_PROFILE") or "", endpoint])
    return cache_dir / f"billing-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


class _CachedBill(msgspec.Struct):
    fetched_at: float
    start: str
    end: str
    rows: list[tuple[str, str, float, float, str]]
    pages: int = 1
    estimated_days: list[str] = []


class _CacheFile(msgspec.Struct):
    version: int
    data: _CachedBill


_CACHE_DECODER: Final = msgspec.json.Decoder(_CacheFile)


def read_cache(path: Path) -> tuple[BillingData | None, str | None]:
    """``(data, notice)``: a missing file is no data and no notice; a corrupt one is ignored with
    a notice that says where and why."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as err:
        return None, f"billing cache {path} unreadable ({err.strerror or err}): ignored"
    try:
        # Typed decoding checks every field's type at the decoder's speed.
        document = _CACHE_DECODER.decode(raw)
        if document.version != CACHE_VERSION:
            raise ValueError(f"not a version-{CACHE_VERSION} billing cache")
        bill = document.data
        rows = tuple(map(BillingRow._make, bill.rows))
        if not all(math.isfinite(r.usd) and math.isfinite(r.quantity) for r in rows):
            raise ValueError("a cost or quantity that is not a finite number")
        data = BillingData(
            bill.fetched_at, bill.start, bill.end, rows, bill.pages, tuple(bill.estimated_days)
        )
        return data, None
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as err:
        reason = str(err) or type(err).__name__
        return None, f"billing cache {path} is corrupt ({reason[:120]}): ignored, fetching again"


def write_cache(path: Path, data: BillingData) -> None:
    """Atomically: a reader sees the old cache or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = msgspec.json.encode({"version": CACHE_VERSION, "data": data.as_json()}).decode()
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _amount(metrics: Any, name: str) -> tuple[float, str]:
    value = metrics.get(name) or {}
    number = float(value.get("Amount", 0) or 0)
    if not math.isfinite(number):
        raise ValueError(f"{name} is not a finite number")
    return number, str(value.get("Unit") or "")


def parse_page(answer: Any) -> tuple[list[BillingRow], list[str], int]:
    """``(rows, days still estimated, malformed groups skipped)`` of one GetCostAndUsage page."""
    rows: list[BillingRow] = []
    estimated: list[str] = []
    skipped = 0
    for period in answer.get("ResultsByTime") or []:
        day = str((period.get("TimePeriod") or {}).get("Start") or "")[:10]
        if period.get("Estimated"):
            estimated.append(day)
        for group in period.get("Groups") or []:
            try:
                usage_type = str((group.get("Keys") or [""])[0])
                metrics = group.get("Metrics") or {}
                usd, _ = _amount(metrics, "UnblendedCost")
                quantity, unit = _amount(metrics, "UsageQuantity")
                date.fromisoformat(day)
            except (ValueError, TypeError, AttributeError, IndexError):
                skipped += 1
                continue
            if usage_type:
                rows.append(BillingRow(day, usage_type, usd, quantity, unit))
    return rows, estimated, skipped


@dataclass
class BillingSource:
    """Fetches the bill when the cache is stale, keeps the last good answer, reports its state.

    ``run()`` is the live loop (in the app's event loop); ``refresh()`` is one step of it."""

    target: AwsTarget = field(default_factory=AwsTarget)
    refresh_h: float = DEFAULT_REFRESH_H
    cache_dir: Path | None = None
    enabled: bool = True
    clock: Callable[[], float] = time.time
    max_attempts: int = 4
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 20.0
    data: BillingData | None = None
    requests: int = 0  # GetCostAndUsage requests sent by this process (each billed $0.01)
    notices: list[str] = field(default_factory=list)
    version: int = 0  # changes whenever ``data`` or the state does
    _status: str = STARTING
    _message: str = "not fetched yet"
    _last_error: str | None = None
    _stale_since: float | None = None
    _next_attempt: float = 0.0
    _loaded_cache: bool = False
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.refresh_h = max(MIN_REFRESH_H, float(self.refresh_h))
        if not self.enabled:
            self._status, self._message = DISABLED, "off (--billing or sources.billing = true)"

    @property
    def cache_path(self) -> Path:
        base = self.cache_dir if self.cache_dir is not None else user_cache_path()
        return cache_file(base, AwsTarget(None, self.target.profile, self.target.endpoint_url))

    @property
    def refresh_s(self) -> float:
        return self.refresh_h * 3600.0

    def cost_per_day_usd(self) -> float:
        """What refreshing costs a day at this interval (pages per fetch as last seen)."""
        pages = self.data.pages if self.data is not None else 1
        return USD_PER_REQUEST * max(1, pages) * 24.0 / self.refresh_h

    def cache_age_s(self, now: float | None = None) -> float | None:
        if self.data is None:
            return None
        return max(0.0, (self.clock() if now is None else now) - self.data.fetched_at)

    def health(self) -> SourceHealth:
        last_good = None if self.data is None else self.data.fetched_at
        return SourceHealth(
            name="billing",
            status=self._status,
            message=self._message,
            region=CE_REGION,
            last_good=last_good,
            stale_since=self._stale_since,
            last_error=self._last_error,
            cost_per_hour_usd=self.cost_per_day_usd() / 24.0 if self.enabled else 0.0,
        )

    def _fresh(self, data: BillingData | None, now: float) -> bool:
        if data is None or data.start != month_range(now)[0]:
            return False
        return 0 <= now - data.fetched_at < self.refresh_s

    async def _load_cache(self) -> None:
        if self._loaded_cache:
            return
        self._loaded_cache = True
        # Off the event loop: the screen keeps drawing while the disk answers.
        cached, notice = await asyncio.to_thread(read_cache, self.cache_path)
        if notice:
            self.notices.append(notice)
        if cached is not None:
            self.data = cached
            self.version += 1

    async def refresh(self, *, force: bool = False) -> BillingData | None:
        """The bill: from the cache when it is fresh, else fetched (and cached). Never raises for
        AWS faults: the state says what happened, and the last good answer stays."""
        if not self.enabled:
            return None
        now = self.clock()
        await self._load_cache()
        if not force and self._fresh(self.data, now):
            if self._status in (STARTING, OK):
                self._set_ok("from the cache")
            return self.data
        connection = AwsConnection(
            AwsTarget(CE_REGION, self.target.profile, self.target.endpoint_url),
            max_attempts=self.max_attempts,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
        )
        try:
            data = await self._fetch(connection, now)
        except Exception as exc:
            failure = classify_error(exc, SERVICE, PERMISSIONS)
            self._fail(failure, now)
            return self.data
        finally:
            await connection.close()
        try:
            await asyncio.to_thread(write_cache, self.cache_path, data)
        except OSError as err:
            self.notices.append(f"billing cache {self.cache_path} not written: {err}")
        # The bill and its state change together, with no await between: a reader never sees
        # a new bill with the old state.
        self.data = data
        self._stale_since = None
        self._last_error = None
        self._next_attempt = now + self.refresh_s
        self._set_ok("fetched")
        return data

    async def _fetch(self, connection: AwsConnection, now: float) -> BillingData:
        client = await connection.client("ce")
        start, end = month_range(now)
        rows: list[BillingRow] = []
        estimated: list[str] = []
        skipped = 0
        token: str | None = None
        pages = 0
        while True:
            self.requests += 1
            pages += 1
            answer = await client.get_cost_and_usage(**request_arguments(start, end, token))
            page_rows, page_estimated, page_skipped = parse_page(answer)
            rows.extend(page_rows[: max(0, MAX_ROWS - len(rows))])
            estimated.extend(page_estimated)
            skipped += page_skipped
            token = answer.get("NextPageToken") or None
            if not token:
                break
            if pages >= MAX_PAGES or len(rows) >= MAX_ROWS:
                self.notices.append(
                    f"Cost Explorer answered with more than {pages} pages or {MAX_ROWS} rows: "
                    "the rest of the month is left out (the sums are low)"
                )
                break
        if skipped:
            self.notices.append(f"Cost Explorer: {skipped} malformed group(s) skipped")
        return BillingData(
            fetched_at=now,
            start=start,
            end=end,
            rows=tuple(rows),
            pages=pages,
            estimated_days=tuple(dict.fromkeys(estimated)),
        )

    def _set_ok(self, how: str) -> None:
        self._status = OK
        self._message = how
        self.version += 1

    def _fail(self, failure: SourceFailure, now: float) -> None:
        self._status = failure.status
        message = failure.message
        if message == NO_CREDENTIALS_MESSAGE:
            message = (
                "no AWS credentials found (environment, ~/.aws files, SSO, instance or container "
                "role): the bill is not read; set up credentials or drop --billing"
            )
        if self.data is not None:
            message += f"; showing the bill fetched {_age_text(now - self.data.fetched_at)} ago"
        self._message = message
        self._last_error = failure.message
        if self._stale_since is None:
            self._stale_since = now
        # A fault that needs a person (permission, credentials) is asked again at the refresh
        # interval; a transient one sooner, never more often than hourly (each request is billed).
        retry = (
            self.refresh_s if failure.status != STALE else min(self.refresh_s, RETRY_AFTER_FAULT_S)
        )
        self._next_attempt = now + retry
        self.version += 1

    def next_refresh_in(self) -> float:
        """Seconds until the loop should refresh again."""
        now = self.clock()
        due = self._next_attempt
        if self.data is not None and self._status == OK:
            due = max(due, self.data.fetched_at + self.refresh_s)
            # A new month needs a new query at once.
            if self.data.start != month_range(now)[0]:
                due = now
        return max(0.0, due - now)

    async def run(self) -> None:
        """The live loop: refresh, then sleep until the cache expires (or a retry is due)."""
        while True:
            await self.refresh()
            # Wake at least hourly so a new month or a changed clock is noticed.
            await asyncio.sleep(min(max(self.next_refresh_in(), 1.0), 3600.0))

    def run_in_background(self) -> None:
        if self._task is None and self.enabled:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="billing")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _age_text(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def billing_once(
    source: BillingSource, deadline_s: float = HEADLESS_DEADLINE_S
) -> BillingData | None:
    """For ``--once`` and ``prices``: the bill (cached or fetched) in an event loop of its own,
    within a headless run's deadline (after it, the state says so and the cached bill stays)."""

    async def run() -> BillingData | None:
        try:
            return await asyncio.wait_for(source.refresh(), deadline_s)
        except TimeoutError:
            failure = classify_error(deadline_passed(deadline_s), SERVICE, PERMISSIONS)
            source._fail(failure, source.clock())
            return source.data

    return asyncio.run(run())
