"""The fleet source: Bedrock's model invocation logs and shipped usage records in CloudWatch Logs.

Every caller in the account and region, attributed (``identity.arn``, ``requestMetadata``), a few
seconds after each call: what neither the local log (this host only) nor CloudWatch metrics (per
model, per minute, no caller) can say. Runs in the app's event loop (aiobotocore); clients come
from :class:`~monitor.sources.aws.AwsConnection` and faults are classified by its
:func:`~monitor.sources.aws.classify_error`.

Exact totals: ``FilterLogEvents`` is polled from the newest event time seen, less an overlap for
events that CloudWatch Logs ingests late; events are deduplicated by stream, time and message
within that overlap, and records by request id (the store's rule: the last record of a request
id wins). Live Tail (``StartLiveTail``), when asked for, adds one-second freshness; a sampled
update, a session that ends or drops, and a restart are each followed by a ``FilterLogEvents``
backfill, so Live Tail never decides a total on its own.

Records go into the source's own :class:`~monitor.store.Store` and
:class:`~monitor.groups.GroupIndex`: fleet numbers are never added to the local log's or to
CloudWatch's.

Cost: ``FilterLogEvents`` is an ordinary API request (the header shows requests per hour); Live
Tail is billed per session minute (1,800 free minutes a month, then about $0.01 a minute), so it
is off by default and the header shows the minutes used.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from monitor.groups import GroupIndex, ingest_usage
from monitor.records import RecordError, UsageRecord
from monitor.sources.aws import (
    ACCESS_DENIED,
    DISABLED,
    ERROR,
    NO_CREDENTIALS,
    OK,
    STALE,
    STARTING,
    AwsConnection,
    AwsTarget,
    SourceFailure,
    SourceHealth,
    classify_error,
)
from monitor.sources.invocation_log import parse_event
from monitor.store import Store

SERVICE: Final = "CloudWatch Logs"
PERMISSIONS: Final = (
    "logs:FilterLogEvents, logs:DescribeLogGroups and logs:StartLiveTail on the log groups, and "
    "bedrock:GetModelInvocationLoggingConfiguration"
)
DEFAULT_INTERVAL_S: Final = 10.0
MIN_INTERVAL_S: Final = 2.0
# CloudWatch Logs may ingest an event some time after its timestamp: each poll asks again for this
# much before the newest event seen.
OVERLAP_S: Final = 120.0
# With Live Tail on, FilterLogEvents still runs this often, as a safety net.
LIVE_BACKFILL_S: Final = 300.0
# Sessions end after 3 hours; reopened a little before.
LIVE_SESSION_S: Final = 3 * 3600.0 - 300.0
STOP_WAIT_S: Final = 5.0  # how long stop() waits for its cancelled tasks
LIVE_REOPEN_MIN_S: Final = 10.0  # a session that ends at once is not reopened in a loop
LIVE_TAIL_USD_PER_MINUTE: Final = 0.01  # after the free minutes; unconfirmed
DISCOVERY_EVERY_S: Final = 600.0
MAX_BACKOFF_S: Final = 300.0
CREDENTIALS_RETRY_S: Final = 300.0
MAX_PAGES_PER_POLL: Final = 1000  # 10,000 events a page: a backfill spreads over several polls
LOGGING_OFF: Final = (
    "Bedrock model invocation logging is off in {region} (or delivers to S3 only): turn it on "
    "with a CloudWatch Logs destination (see docs/fleet.md), or pass --log-group NAME"
)


@dataclass(slots=True)
class _GroupCursor:
    """Where polling of one log group stands."""

    name: str
    start_ms: int  # the next poll asks from here
    newest_ms: int | None = None  # the newest event time seen
    # (stream, time, message hash) -> time, for the events inside the overlap.
    seen: dict[tuple[str, int, int], int] | None = None


class FleetSource:
    """Follows one or more CloudWatch Logs groups into a :class:`Store` of its own."""

    def __init__(
        self,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        *,
        log_groups: Sequence[str] = (),
        interval_s: float = DEFAULT_INTERVAL_S,
        live_tail: bool = False,
        enabled: bool = True,
        disabled_message: str = "off (--no-fleet or sources.fleet = false)",
        since: float | None = None,
        start_epoch: float | None = None,
        overlap_s: float = OVERLAP_S,
        max_attempts: int = 4,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 20.0,
        clock: Callable[[], float] = time.time,
        store: Store | None = None,
        groups: GroupIndex | None = None,
    ) -> None:
        """``store`` and ``groups``: shared by the sources of several regions (one fleet, its
        records kept apart by request id); new ones by default."""
        self.region = region
        self.target = AwsTarget(region, profile, endpoint_url)
        self.enabled = enabled
        self.interval_s = max(MIN_INTERVAL_S, float(interval_s))
        self.live_tail = live_tail
        self.overlap_ms = int(overlap_s * 1000)
        self.store = store if store is not None else Store(since=since)
        self.groups = groups if groups is not None else GroupIndex(since=since)
        self.rejected: Counter[str] = Counter()
        self.requests = 0  # API requests sent (FilterLogEvents pages, discovery, Live Tail)
        self.events = 0  # events read
        self.live_tail_seconds = 0.0
        self.live_tail_sessions = 0
        self._configured = [name for name in dict.fromkeys(log_groups) if name]
        self._start_ms = int(
            (start_epoch if start_epoch is not None else (since or clock())) * 1000
        )
        self._cursors: dict[str, _GroupCursor] = {}
        self._arns: dict[str, str] = {}
        self._clock = clock
        self._retry = (max_attempts, connect_timeout_s, read_timeout_s)
        self._connection: AwsConnection | None = None
        self._logs: Any = None
        self._tail_logs: Any = None
        self._bedrock: Any = None
        self._status = STARTING if enabled else DISABLED
        self._message = "waiting for the first poll" if enabled else disabled_message
        self._last_good: float | None = None
        self._stale_since: float | None = None
        self._last_error: str | None = None
        self._failures = 0
        self._last_discovery: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._tail_task: asyncio.Task[None] | None = None
        self._backfill: asyncio.Event | None = None  # made in the running loop
        self._tail_open_since: float | None = None
        self._tail_note = ""

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.store.version + self.groups.version

    @property
    def log_groups(self) -> list[str]:
        return list(self._cursors)

    async def _connect(self) -> None:
        attempts, connect_timeout, read_timeout = self._retry
        connection = AwsConnection(
            self.target,
            max_attempts=attempts,
            connect_timeout_s=connect_timeout,
            read_timeout_s=read_timeout,
        )
        try:
            self.region = await connection.open()
            self._logs = await connection.client("logs")
            self._bedrock = await connection.client("bedrock")
            # Live Tail's operation has a host prefix ("stream-"), which a local endpoint has not.
            extra = (
                {"inject_host_prefix": False}
                if connection.endpoint_configured("CLOUDWATCH_LOGS")
                else {}
            )
            # A session streams for hours: no read timeout of its own beyond a quiet minute.
            self._tail_logs = await connection.client("logs", read_timeout_s=120.0, **extra)
        except BaseException:
            await connection.close()
            self._logs = self._tail_logs = self._bedrock = None
            raise
        self._connection = connection

    async def start(self) -> None:
        """Resolve region and credentials and open the clients; failures become the state."""
        if not self.enabled or self._logs is not None:
            return
        try:
            await self._connect()
        except Exception as exc:
            self._fail(classify_error(exc, SERVICE, PERMISSIONS))

    async def stop(self) -> None:
        tasks = [task for task in (self._task, self._tail_task) if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task that does not end when cancelled must not keep the program open.
            done, _pending = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: its failure was already the state
        self._task = self._tail_task = None
        self._close_tail_clock()
        await self._close_clients()

    async def _close_clients(self) -> None:
        connection, self._connection = self._connection, None
        self._logs = self._tail_logs = self._bedrock = None
        if connection is not None:
            await connection.close()

    def run_in_background(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run_forever(), name="fleet-poller")
        return self._task

    async def run_forever(self) -> None:
        """Poll, then wait until the next poll is due (or a backfill is asked for); one poll at a
        time. With Live Tail on, the tail runs beside it in a task of its own."""
        if not self.enabled:
            return
        self._backfill = asyncio.Event()
        while True:
            await self.poll_once()
            self._sync_tail()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation that
            # comes as the event is set, and stop() would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.next_delay()):
                    await self._backfill.wait()
            self._backfill.clear()

    def set_live_tail(self, on: bool) -> None:
        """Follow with Live Tail (1-second freshness, billed per minute) or stop doing so."""
        self.live_tail = on
        self._sync_tail()
        if not on:
            self._tail_note = ""

    def _sync_tail(self) -> None:
        running = self._tail_task is not None and not self._tail_task.done()
        want = self.live_tail and self.enabled and bool(self._cursors) and self._logs is not None
        if want and not running:
            with contextlib.suppress(RuntimeError):  # no running loop (report mode)
                self._tail_task = asyncio.get_running_loop().create_task(
                    self._tail_forever(), name="fleet-live-tail"
                )
        elif not want and running and self._tail_task is not None:
            self._tail_task.cancel()
            self._tail_task = None
            self._close_tail_clock()
            self._ask_backfill()

    def next_delay(self) -> float:
        if self._status in (NO_CREDENTIALS, ACCESS_DENIED) or (
            self._status == ERROR and self._logs is None
        ):
            return CREDENTIALS_RETRY_S
        if self._status == DISABLED:  # logging off: look again now and then
            return min(DISCOVERY_EVERY_S, 60.0)
        interval = self.interval_s
        if self._failures:
            interval = min(interval * 2 ** min(self._failures, 10), MAX_BACKOFF_S)
        elif self._tail_task is not None and not self._tail_task.done():
            interval = LIVE_BACKFILL_S
        return interval

    def _ask_backfill(self) -> None:
        if self._backfill is not None:
            self._backfill.set()

    # -- state ---------------------------------------------------------------------------------
    def _fail(self, failure: SourceFailure) -> None:
        now = self._clock()
        self._failures += 1
        self._last_error = failure.message
        status = failure.status
        if status == STALE and self._last_good is None:
            status = ERROR
        if status != OK and self._stale_since is None:
            self._stale_since = now
        self._status = status
        message = failure.message
        if self._last_good is not None:
            message = f"{message} (last good poll {now - self._last_good:.0f} s ago)"
        self._message = message

    def requests_per_hour(self) -> float:
        """What the current schedule sends: one FilterLogEvents page per group per poll (more
        while catching up), discovery every ten minutes."""
        if not self.enabled or self._status in (NO_CREDENTIALS, ACCESS_DENIED):
            return 0.0
        groups = max(1, len(self._cursors))
        discovery = 0.0 if self._configured else 3600.0 / DISCOVERY_EVERY_S
        return groups * 3600.0 / self.next_delay() + discovery

    def live_tail_minutes(self) -> float:
        open_for = 0.0
        if self._tail_open_since is not None:
            open_for = max(0.0, time.monotonic() - self._tail_open_since)
        return (self.live_tail_seconds + open_for) / 60.0

    def _close_tail_clock(self) -> None:
        if self._tail_open_since is not None:
            self.live_tail_seconds += max(0.0, time.monotonic() - self._tail_open_since)
            self._tail_open_since = None

    @property
    def live_tail_note(self) -> str:
        """What Live Tail last did (on, sampled, ended, dropped), for the header."""
        return self._tail_note

    @property
    def tail_open(self) -> bool:
        return self._tail_open_since is not None

    def health(self) -> SourceHealth:
        message = self._message
        if self._tail_note:
            message = f"{message}; {self._tail_note}" if message else self._tail_note
        live = self.tail_open
        return SourceHealth(
            name="fleet",
            status=self._status,
            message=message,
            region=self.region,
            last_good=self._last_good,
            stale_since=self._stale_since if self._status != OK else None,
            last_error=self._last_error,
            cost_per_hour_usd=60 * LIVE_TAIL_USD_PER_MINUTE if live else 0.0,
        )

    def snapshot(self) -> dict[str, Any]:
        """``sources.fleet`` of the report."""
        return {
            **self.health().as_report(),
            "kind": "fleet",
            "log_groups": self.log_groups or list(self._configured),
            "events": self.events,
            "records": self.store.stats.accepted,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(self.rejected.most_common()),
            "requests": self.requests,
            "requests_per_hour": round(self.requests_per_hour(), 1),
            "live_tail": self.live_tail,
            "live_tail_minutes": round(self.live_tail_minutes(), 2),
            "folded": {
                dimension: dict(
                    zip(("groups", "records"), self.groups.folded(dimension), strict=True)
                )
                for dimension in self.groups.dimensions
            },
        }

    # -- polling -------------------------------------------------------------------------------
    async def poll_once(self, now: float | None = None) -> None:
        """Discovery when due, then one FilterLogEvents pass over every group. Never raises."""
        if not self.enabled:
            return
        now = self._clock() if now is None else now
        if self._logs is None:
            await self.start()
            if self._logs is None:
                return
        try:
            if not self._cursors or (
                not self._configured
                and (
                    self._last_discovery is None or now - self._last_discovery >= DISCOVERY_EVERY_S
                )
            ):
                await self._discover(now)
            if not self._cursors:
                return
            for cursor in list(self._cursors.values()):
                await self._poll_group(cursor, now)
        except Exception as exc:
            failure = classify_error(exc, SERVICE, PERMISSIONS)
            code = _error_code(exc)
            if code == "ResourceNotFoundException":
                failure = SourceFailure(
                    STALE,
                    f"log group not found ({', '.join(self._cursors) or 'none'}): check "
                    "--log-group, or the invocation-logging configuration",
                )
                self._arns.clear()
                self._last_discovery = None
            self._fail(failure)
            if failure.status in (NO_CREDENTIALS, ACCESS_DENIED):
                await self._close_clients()
            return
        self._failures = 0
        self._last_good = now
        self._stale_since = None
        self._status = OK
        notes = [f"{len(self._cursors)} log group(s)", f"{self.events} events"]
        rejected = sum(self.rejected.values())
        if rejected:
            notes.append(f"{rejected} rejected")
        self._message = ", ".join(notes)

    async def _discover(self, now: float) -> None:
        """The log groups: those configured, else the invocation-logging configuration's."""
        self._last_discovery = now
        names = list(self._configured)
        if not names:
            self.requests += 1
            answer = await self._bedrock.get_model_invocation_logging_configuration()
            config = answer.get("loggingConfig") or {}
            name = (config.get("cloudWatchConfig") or {}).get("logGroupName")
            if not name:
                self._cursors.clear()
                self._status = DISABLED
                self._message = LOGGING_OFF.format(region=self.region or "this region")
                return
            names = [name]
        for name in names:
            if name not in self._cursors:
                self._cursors[name] = _GroupCursor(name, self._start_ms, seen={})
        for name in [n for n in self._cursors if n not in names]:
            del self._cursors[name]

    async def _poll_group(self, cursor: _GroupCursor, now: float) -> None:
        params: dict[str, Any] = {
            "logGroupName": cursor.name,
            "startTime": cursor.start_ms,
            "endTime": int(now * 1000) + 1,
        }
        pages = 0
        while True:
            self.requests += 1
            page = await self._logs.filter_log_events(**params)
            pages += 1
            self.ingest_events(cursor, page.get("events") or [], now)
            token = page.get("nextToken")
            if not token or pages >= MAX_PAGES_PER_POLL:
                break
            params["nextToken"] = token
        self._advance(cursor)

    def _advance(self, cursor: _GroupCursor) -> None:
        """The next poll starts an overlap before the newest event; older seen keys are let go."""
        if cursor.newest_ms is None:
            return
        cursor.start_ms = max(cursor.start_ms, cursor.newest_ms - self.overlap_ms)
        seen = cursor.seen
        if seen:
            floor = cursor.start_ms
            for key in [key for key, ms in seen.items() if ms < floor]:
                del seen[key]

    def ingest_events(
        self,
        cursor: _GroupCursor | None,
        events: Iterable[dict[str, Any]],
        now: float,
        *,
        advance: bool = True,
    ) -> int:
        """Parse events (FilterLogEvents' or Live Tail's) into records; returns how many were
        new. Events already seen within the overlap are skipped; bad ones are counted by
        reason. Only FilterLogEvents ``advance`` the cursor: Live Tail may have sampled events
        away, so the backfill starts where FilterLogEvents left off."""
        batch: list[UsageRecord] = []
        for event in events:
            message = event.get("message")
            stamp = event.get("timestamp")
            stamp_ms = int(stamp) if isinstance(stamp, int | float) else None
            if cursor is not None and cursor.seen is not None and stamp_ms is not None:
                key = (str(event.get("logStreamName", "")), stamp_ms, hash(message))
                if key in cursor.seen:
                    continue
                cursor.seen[key] = stamp_ms
                if advance and (cursor.newest_ms is None or stamp_ms > cursor.newest_ms):
                    cursor.newest_ms = stamp_ms
            self.events += 1
            if not isinstance(message, str):
                self.rejected["no message"] += 1
                continue
            try:
                batch.append(parse_event(message, stamp_ms))
            except RecordError as err:
                self.rejected[err.reason] += 1
        if batch:
            ingest_usage(self.store, self.groups, batch, now)
        return len(batch)

    # -- Live Tail -----------------------------------------------------------------------------
    async def _group_arns(self) -> list[str]:
        arns = []
        for name in self._cursors:
            arn = self._arns.get(name)
            if arn is None:
                self.requests += 1
                answer = await self._logs.describe_log_groups(logGroupNamePrefix=name)
                for group in answer.get("logGroups") or []:
                    if group.get("logGroupName") == name:
                        arn = group.get("logGroupArn") or str(group.get("arn", "")).removesuffix(
                            ":*"
                        )
                if not arn:
                    raise SourceFailure(STALE, f"log group {name} not found for Live Tail")
                self._arns[name] = arn
            arns.append(arn)
        return arns[:10]  # a session takes 1 to 10 groups

    async def _tail_forever(self) -> None:
        while self.live_tail:
            opened = time.monotonic()
            try:
                async with asyncio.timeout(LIVE_SESSION_S):  # never loses a cancellation
                    await self._tail_session()
                self._tail_note = "live tail session ended; reopening"
            except TimeoutError:
                self._tail_note = "live tail reopened before its 3-hour end"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = classify_error(exc, SERVICE, PERMISSIONS)
                self._tail_note = f"live tail dropped: {failure.message}"
            finally:
                self._close_tail_clock()
            # Whatever the session missed (or sampled away) comes from FilterLogEvents.
            self._ask_backfill()
            if time.monotonic() - opened < LIVE_REOPEN_MIN_S:
                await asyncio.sleep(max(LIVE_REOPEN_MIN_S, self.interval_s))

    async def _tail_session(self) -> None:
        arns = await self._group_arns()
        cursors = {
            arn: self._cursors[name] for name, arn in self._arns.items() if name in self._cursors
        }
        self.requests += 1
        answer = await self._tail_logs.start_live_tail(logGroupIdentifiers=arns)
        self.live_tail_sessions += 1
        self._tail_open_since = time.monotonic()
        self._tail_note = "live tail on"
        stream = answer["responseStream"]
        async for event in stream:
            update = event.get("sessionUpdate")
            if update is None:
                continue
            results = update.get("sessionResults") or []
            by_group: dict[str, list[dict[str, Any]]] = {}
            for result in results:
                by_group.setdefault(str(result.get("logGroupIdentifier", "")), []).append(result)
            now = self._clock()
            for arn, group_events in by_group.items():
                cursor = cursors.get(arn.removesuffix(":*"))
                self.ingest_events(cursor, group_events, now, advance=False)
            if (update.get("sessionMetadata") or {}).get("sampled"):
                self._tail_note = "live tail sampled (over 500 events a second): backfilling"
                self._ask_backfill()


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code", ""))
    return ""
