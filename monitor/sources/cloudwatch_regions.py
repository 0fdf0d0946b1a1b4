"""CloudWatch in several regions, both Bedrock namespaces, and linked accounts: one
:class:`~monitor.sources.cloudwatch.CloudWatchSource` per scope (region, namespace, account).

CloudWatch is regional and Bedrock records a call in the region the caller called (cross-region
inference profiles included), so each region has its own clients, poll schedule, store and state:
a fault in one region marks only that region stale. Traffic to the OpenAI- and
Anthropic-compatible endpoint (bedrock-mantle) is published to `AWS/BedrockMantle` and read by a
source of its own per region; its rows are marked ``mantle`` and never merged into AWS/Bedrock's.

Cost: every source bills the same way ($0.01 per 1,000 metrics requested), so the total is the sum
of the sources' projections. A region or namespace without metrics costs one ListMetrics call per
discovery and no GetMetricData at all. ``--all-regions`` finds the regions with `AWS/Bedrock` or
`AWS/BedrockMantle` metrics with one ListMetrics call per region of botocore's list for Bedrock,
at most once an hour.

Linked accounts (CloudWatch cross-account observability): from a monitoring account, ListMetrics
with ``IncludeLinkedAccounts`` names each metric's ``OwningAccount``; each account found gets its
sources, whose ListMetrics ask for ``OwningAccount`` and whose queries carry ``AccountId``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from monitor.cloudwatch_store import CloudWatchStore, combine_report_objects
from monitor.sources.aws import (
    ACCESS_DENIED,
    DISABLED,
    ERROR,
    HEADLESS_DEADLINE_S,
    NO_CREDENTIALS,
    OK,
    STALE,
    STARTING,
    classify_error,
    deadline_passed,
)
from monitor.sources.cloudwatch import (
    BEDROCK,
    DEFAULT_INTERVAL_S,
    MANTLE,
    USD_PER_METRIC,
    CloudWatchSource,
    CloudWatchState,
    NamespaceSpec,
    PeriodStarts,
    Schedule,
    utc_period_starts,
)

REGION_SCAN_EVERY_S: Final = 3600.0  # --all-regions and linked accounts: looked for again hourly
REGION_PATTERN: Final = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
# Worst first: the state a region shows when its sources disagree.
_SEVERITY: Final = (NO_CREDENTIALS, ACCESS_DENIED, ERROR, STALE, STARTING, OK, DISABLED)


def parse_regions(text: str | Iterable[str] | None) -> list[str]:
    """``us-east-1,eu-west-1`` (or a list of names) as a list without repeats. Raises
    ValueError naming the entry that is not a region name."""
    if text is None:
        return []
    parts = text.split(",") if isinstance(text, str) else list(text)
    regions: list[str] = []
    for part in parts:
        name = part.strip()
        if not name:
            continue
        if not REGION_PATTERN.match(name):
            raise ValueError(
                f"{name!r} is not an AWS region name (such as us-east-1); "
                "separate several regions with commas"
            )
        if name not in regions:
            regions.append(name)
    return regions


def bedrock_regions(profile: str | None = None) -> list[str]:
    """botocore's list of the regions where Amazon Bedrock is offered (no request is sent)."""
    import botocore.session

    session = botocore.session.Session(profile=profile)
    return sorted(session.get_available_regions("bedrock"))


def worst_status(statuses: Iterable[str]) -> str:
    found = list(statuses)
    for status in _SEVERITY:
        if status in found:
            return status
    return found[0] if found else DISABLED


@dataclass(frozen=True, slots=True)
class Scope:
    """What one source reads: a region, a namespace, and (linked accounts) an account."""

    region: str | None
    namespace: NamespaceSpec = BEDROCK
    account_id: str | None = None


@dataclass(frozen=True, slots=True)
class RegionState:
    """One region as the header shows it: its sources' worst state and their total cost."""

    region: str
    status: str
    message: str
    last_good_poll: float | None
    cost_per_hour_usd: float
    calls: int
    metrics_requested: int
    cost_usd: float
    percentiles: str
    accounts: tuple[str, ...] = ()

    def as_report(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "state": self.status,
            "message": self.message,
            "calls": self.calls,
            "metrics_requested": self.metrics_requested,
            "estimated_cost_usd": round(self.cost_usd, 6),
            "projected_cost_per_hour_usd": round(self.cost_per_hour_usd, 6),
            "percentiles": self.percentiles,
        }
        if self.accounts:
            report["accounts"] = list(self.accounts)
        return report


def region_state(region: str, states: Sequence[CloudWatchState]) -> RegionState:
    """The states of one region's sources as one (the worst status; costs add up)."""
    status = worst_status(state.status for state in states)
    worst = next((state for state in states if state.status == status), None)
    message = worst.message if worst is not None else ""
    if worst is not None and worst.namespace != BEDROCK.name and status != OK:
        message = f"{worst.namespace}: {message}"
    goods = [state.last_good_poll for state in states if state.last_good_poll is not None]
    runtime = [state for state in states if state.namespace == BEDROCK.name]
    return RegionState(
        region=region,
        status=status,
        message=message,
        last_good_poll=min(goods) if len(goods) == len(states) and goods else None,
        cost_per_hour_usd=sum(state.projected_cost_per_hour_usd for state in states),
        calls=sum(state.calls for state in states),
        metrics_requested=sum(state.metrics_requested for state in states),
        cost_usd=sum(state.cost_usd for state in states),
        percentiles=runtime[0].percentiles if runtime else "unknown",
        accounts=tuple(sorted({s.account_id for s in states if s.account_id is not None})),
    )


class CloudWatchRegions:
    """Every CloudWatch source of a run, made and scheduled alike (one shape, many instances).

    ``regions``: the regions asked for (None: botocore's own resolution, one region).
    ``all_regions``: every region of botocore's Bedrock list that has metrics.
    ``mantle``: also read `AWS/BedrockMantle`. ``linked_accounts``: read the source accounts
    linked to this monitoring account. ``options``: passed to every :class:`CloudWatchSource`.
    """

    def __init__(
        self,
        regions: Sequence[str | None] = (None,),
        *,
        all_regions: bool = False,
        mantle: bool = True,
        linked_accounts: bool = False,
        profile: str | None = None,
        endpoint_url: str | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        models_from_config: Iterable[str] = (),
        period_starts: PeriodStarts = utc_period_starts,
        enabled: bool = True,
        clock: Callable[[], float] = time.time,
        candidate_regions: Callable[[], Sequence[str]] | None = None,
        **options: Any,
    ) -> None:
        self.asked_regions: list[str | None] = list(regions) or [None]
        self.all_regions = all_regions
        self.mantle = mantle
        self.linked_accounts = linked_accounts
        self.profile = profile
        self.endpoint_url = endpoint_url
        self.interval_s = interval_s
        self.enabled = enabled
        self.period_starts = period_starts
        self._clock = clock
        self._config_models = list(models_from_config)
        self._candidates = candidate_regions or (lambda: bedrock_regions(profile))
        self._options = options
        self.sources: dict[Scope, CloudWatchSource] = {}
        # Sources that only look for linked accounts (they never poll).
        self._finders: dict[Scope, CloudWatchSource] = {}
        self._scanned_at: float | None = None
        self._scan_problems: list[tuple[str, str, str]] = []
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._paused = False
        self._visible: list[str] | None = None
        self._focus: str | None = None
        self.scan_list_calls = 0
        if not (all_regions or linked_accounts) or not enabled:
            for region in self.asked_regions:
                self._add(Scope(region, BEDROCK))
                if mantle:
                    self._add(Scope(region, MANTLE))

    @classmethod
    def of_source(cls, source: CloudWatchSource) -> CloudWatchRegions:
        """One existing source as a set of one (what a single-region caller already has)."""
        regions = cls(regions=[source.region], mantle=False, enabled=source.enabled)
        regions.sources = {Scope(source.region, source.namespace, source.account_id): source}
        return regions

    # -- the sources ---------------------------------------------------------------------------

    def _new_source(self, scope: Scope) -> CloudWatchSource:
        return CloudWatchSource(
            region=scope.region,
            profile=self.profile,
            endpoint_url=self.endpoint_url,
            interval_s=self.interval_s,
            models_from_config=self._config_models if scope.namespace is BEDROCK else (),
            enabled=self.enabled,
            period_starts=self.period_starts,
            clock=self._clock,
            namespace=scope.namespace,
            account_id=scope.account_id,
            **self._options,
        )

    def _add(self, scope: Scope, source: CloudWatchSource | None = None) -> CloudWatchSource:
        existing = self.sources.get(scope)
        if existing is not None:
            return existing
        source = source or self._new_source(scope)
        self.sources[scope] = source
        source.set_paused(self._paused)
        source.set_visible_models(self._visible)
        source.set_focus_model(self._focus)
        if self._running:
            source.run_in_background()
        return source

    def regions(self) -> list[str]:
        """The regions polled, in the order asked (found ones sorted after)."""
        seen: list[str] = []
        for scope in self.sources:
            name = scope.region or self.sources[scope].region or "no region"
            if name not in seen:
                seen.append(name)
        return seen

    @property
    def multi_region(self) -> bool:
        return self.all_regions or len([r for r in self.asked_regions if r]) > 1

    def runtime_sources(self) -> list[CloudWatchSource]:
        return [s for scope, s in self.sources.items() if scope.namespace is BEDROCK]

    def mantle_sources(self) -> list[CloudWatchSource]:
        return [s for scope, s in self.sources.items() if scope.namespace is MANTLE]

    def stores(self, namespace: NamespaceSpec = BEDROCK) -> list[CloudWatchStore]:
        return [s.store for scope, s in self.sources.items() if scope.namespace is namespace]

    @property
    def version(self) -> int:
        # A new source (a region or account found) changes what is shown even before its data.
        return sum(s.store.version for s in self.sources.values()) + len(self.sources)

    def region_stores(self) -> dict[str, CloudWatchStore]:
        """Region -> the credentials' own AWS/Bedrock store there (what that region's Service
        Quotas are measured against; linked accounts have quotas of their own)."""
        return {
            scope.region or source.region or "": source.store
            for scope, source in self.sources.items()
            if scope.namespace is BEDROCK and scope.account_id is None
        }

    # -- finding regions and accounts -----------------------------------------------------------

    async def scan(self, now: float | None = None) -> None:
        """--all-regions and linked accounts: find the scopes that have metrics (at most once an
        hour). Regions that cannot be read are left out and named in :meth:`scan_problems`."""
        if not self.enabled or not (self.all_regions or self.linked_accounts):
            return
        now = self._clock() if now is None else now
        if self._scanned_at is not None and now - self._scanned_at < REGION_SCAN_EVERY_S:
            return
        self._scanned_at = now
        problems: list[tuple[str, str, str]] = []
        if self.all_regions:
            regions: list[str | None] = list(await asyncio.to_thread(self._candidates))
        else:
            regions = list(self.asked_regions)
        namespaces = (BEDROCK, MANTLE) if self.mantle else (BEDROCK,)
        probes = [(region, namespace) for region in regions for namespace in namespaces]
        found = await asyncio.gather(*(self._probe(r, ns, problems) for r, ns in probes))
        for (region, namespace), accounts in zip(probes, found, strict=True):
            for account in accounts:
                self._add(Scope(region, namespace, account))
        if self.all_regions:
            # A region with AWS/Bedrock metrics gets its mantle source too (and the reverse).
            for region in {scope.region for scope in self.sources}:
                for namespace in namespaces:
                    accounts_seen = {s.account_id for s in self.sources if s.region == region}
                    for account in accounts_seen:
                        self._add(Scope(region, namespace, account))
        self._scan_problems = problems

    async def _probe(
        self, region: str | None, namespace: NamespaceSpec, problems: list[tuple[str, str, str]]
    ) -> list[str | None]:
        """The accounts with metrics in one region and namespace: [None] for the credentials'
        own account when it has any, the owning accounts with linked accounts; [] for none."""
        scope = Scope(region, namespace)
        if self.linked_accounts:
            finder = self._finders.get(scope) or self._new_source(scope)
            self._finders[scope] = finder
            try:
                accounts = await finder.owning_accounts(recently_active=True)
            except Exception as exc:
                problems.append((str(region), *_failure(exc)))
                return []
            finally:
                self.scan_list_calls = sum(f.list_calls for f in self._finders.values())
            if finder.state.status not in (OK, STARTING) and not accounts:
                problems.append((str(region), finder.state.status, finder.state.message))
            return list(accounts)
        source = self.sources.get(scope) or self._new_source(scope)
        try:
            await source.start()
            if source.state.status not in (STARTING, OK):
                problems.append((str(region), source.state.status, source.state.message))
                await source.stop()
                return []
            await source.discover(recently_active=True)
        except Exception as exc:
            problems.append((str(region), *_failure(exc)))
            await source.stop()
            return []
        finally:
            self.scan_list_calls += 1
        if not source.model_ids():
            await source.stop()
            return []
        self._add(scope, source)
        return [None]

    def note_scan_problem(self, exc: BaseException) -> None:
        """A scan that could not finish (the report's deadline passed): said in the state."""
        self._scanned_at = self._scanned_at or self._clock()
        self._scan_problems = [*self._scan_problems, ("all regions", *_failure(exc))]

    def scan_problems(self) -> list[str]:
        """What kept regions out of the scan, one line per distinct problem."""
        regions_by_message: dict[str, list[str]] = {}
        for region, _status, message in self._scan_problems:
            regions_by_message.setdefault(message, [])
            if region not in regions_by_message[message]:
                regions_by_message[message].append(region)
        return [
            f"{message} ({', '.join(regions)})" for message, regions in regions_by_message.items()
        ]

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the scopes (when asked to), then open every source's clients."""
        await self.scan()
        await asyncio.gather(*(source.start() for source in self.sources.values()))

    def run_in_background(self) -> asyncio.Task[None]:
        """Every source polls on its own schedule; this task looks for new scopes hourly."""
        self._running = True
        for source in self.sources.values():
            source.run_in_background()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._rescan_forever(), name="cloudwatch-regions")
        return self._task

    async def _rescan_forever(self) -> None:
        if not (self.all_regions or self.linked_accounts):
            return
        while True:
            await asyncio.sleep(REGION_SCAN_EVERY_S)
            await self.scan()

    async def stop(self) -> None:
        self._running = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        everything = [*self.sources.values(), *self._finders.values()]
        await asyncio.gather(*(source.stop() for source in everything), return_exceptions=True)

    async def poll_once(self) -> None:
        await asyncio.gather(*(source.poll_once() for source in self.sources.values()))

    # -- what the view tells the sources -------------------------------------------------------

    def set_paused(self, paused: bool) -> None:
        self._paused = paused
        for source in self.sources.values():
            source.set_paused(paused)

    def set_visible_models(self, model_ids: Iterable[str] | None) -> None:
        self._visible = None if model_ids is None else list(model_ids)
        for source in self.sources.values():
            source.set_visible_models(self._visible)

    def set_focus_model(self, model_id: str | None) -> None:
        self._focus = model_id
        for source in self.sources.values():
            source.set_focus_model(model_id)

    # -- state ---------------------------------------------------------------------------------

    def region_states(self) -> list[RegionState]:
        by_region: dict[str, list[CloudWatchState]] = {}
        for scope, source in self.sources.items():
            name = scope.region or source.region or "no region"
            by_region.setdefault(name, []).append(source.state)
        return [region_state(region, states) for region, states in by_region.items()]

    def projected_cost_per_hour_usd(self) -> float:
        return sum(s.state.projected_cost_per_hour_usd for s in self.sources.values())

    def report_state(self, disabled_message: str = "") -> dict[str, Any]:
        """``sources.cloudwatch`` of the report. With one region: the fields a single region
        always had (its AWS/Bedrock and mantle sources' calls and costs added); with several
        regions, the same fields over all of them and ``regions``: region -> its state."""
        states = self.region_states()
        if not self.enabled:
            first = states[0] if states else None
            return {
                "region": first.region if first and first.region != "no region" else None,
                "state": DISABLED,
                "message": disabled_message,
                "calls": 0,
                "metrics_requested": 0,
                "estimated_cost_usd": 0.0,
                "percentiles": "unknown",
            }
        if not states and self._scanned_at is None:
            looking = "accounts" if self.linked_accounts else "regions"
            states_report: dict[str, Any] = {
                "region": None,
                "state": STARTING,
                "message": f"looking for {looking} with Bedrock metrics",
            }
            return states_report
        if not states:
            problems = self.scan_problems()
            status = (
                worst_status(status for _, status, _ in self._scan_problems) if problems else OK
            )
            message = "; ".join(problems) or "no region has Bedrock metrics"
            return {
                "region": None,
                "state": status,
                "message": message,
                "calls": 0,
                "metrics_requested": 0,
                "estimated_cost_usd": 0.0,
                "percentiles": "unknown",
                "regions": {},
            }
        worst = worst_status(state.status for state in states)
        messages = [
            f"{state.region}: {state.message}" if len(states) > 1 else state.message
            for state in states
            if state.status == worst and state.message
        ]
        cost = sum(state.cost_usd for state in states)
        scan_calls = self.scan_list_calls
        report: dict[str, Any] = {
            "region": ",".join(state.region for state in states)
            if states[0].region != "no region"
            else None,
            "state": worst,
            "message": "; ".join(messages),
            "calls": sum(state.calls for state in states),
            "metrics_requested": sum(state.metrics_requested for state in states),
            "estimated_cost_usd": round(cost, 6),
            "percentiles": states[0].percentiles,
        }
        if self.multi_region or self.linked_accounts or len(states) > 1:
            report["regions"] = {state.region: state.as_report() for state in states}
        if self.all_regions or self.linked_accounts:
            report["scan_list_calls"] = scan_calls
            if self._scan_problems:
                report["scan_problems"] = self.scan_problems()
        return report

    # -- the headless report -------------------------------------------------------------------

    async def window_reports(
        self, start: float, end: float, deadline_s: float | None = None
    ) -> dict[Scope, dict[str, dict[str, Any]]]:
        """Per scope: model -> its ``cloudwatch`` object over [start, end). With ``deadline_s``,
        a source that has not answered by then is marked timed out and reports nothing; the
        others keep what they read."""
        scopes = list(self.sources)

        async def one(source: CloudWatchSource) -> dict[str, dict[str, Any]]:
            try:
                totals = await asyncio.wait_for(source.window_report(start, end), deadline_s)
            except TimeoutError:
                source._set_failure(classify_error(deadline_passed(deadline_s or 0.0)), end)
                return {}
            return {model: t.as_report() for model, t in totals.items()}

        reports = await asyncio.gather(*(one(self.sources[scope]) for scope in scopes))
        return dict(zip(scopes, reports, strict=True))


def _failure(exc: BaseException) -> tuple[str, str]:
    failure = classify_error(exc)
    return failure.status, failure.message


def add_up(objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several ``cloudwatch`` objects of the same source as one: one object is kept as it is
    (percentiles included); several add up (see ``combine_report_objects``)."""
    if len(objects) == 1:
        return dict(objects[0])
    return combine_report_objects(objects)


def per_model_objects(
    reports: Mapping[Scope, Mapping[str, Mapping[str, Any]]],
    namespace: NamespaceSpec,
    *,
    linked_accounts: bool = False,
    several_regions: bool = True,
) -> dict[str, dict[str, Any]]:
    """Model -> its summed ``cloudwatch`` object with (``several_regions``) ``regions``
    (region -> the same fields)
    and, with linked accounts, ``accounts`` (account -> the same fields)."""
    by_model: dict[str, dict[str, dict[str, list[Mapping[str, Any]]]]] = {}
    for scope, per_model in reports.items():
        if scope.namespace is not namespace:
            continue
        region = scope.region or "default"
        for model_id, obj in per_model.items():
            entry = by_model.setdefault(model_id, {"regions": {}, "accounts": {}})
            entry["regions"].setdefault(region, []).append(obj)
            if scope.account_id is not None:
                entry["accounts"].setdefault(scope.account_id, []).append(obj)
    result: dict[str, dict[str, Any]] = {}
    for model_id, parts in sorted(by_model.items()):
        regions = {region: add_up(objs) for region, objs in parts["regions"].items()}
        every = [obj for objs in parts["regions"].values() for obj in objs]
        combined = add_up(every)
        if several_regions:  # one region: the object every single-region report had
            combined["regions"] = regions
        if linked_accounts:
            combined["accounts"] = {a: add_up(objs) for a, objs in parts["accounts"].items()}
        result[model_id] = combined
    return result


def regions_report(
    regions: Sequence[str | None],
    profile: str | None,
    endpoint_url: str | None,
    since_epoch: float,
    now: float,
    *,
    all_regions: bool = False,
    mantle: bool = True,
    linked_accounts: bool = False,
    enabled: bool = True,
    disabled_message: str = "disabled (--no-cloudwatch)",
    models_from_config: Iterable[str] = (),
    read_timeout_s: float = 20.0,
    max_attempts: int = 4,
    period_starts: PeriodStarts | None = None,
    candidate_regions: Callable[[], Sequence[str]] | None = None,
    deadline_s: float = HEADLESS_DEADLINE_S,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], dict[str, Any], CloudWatchRegions]:
    """For ``--once``: AWS/Bedrock per model, bedrock-mantle per model, ``sources.cloudwatch``,
    and the sources, stopped, with their stores (filled by one regular poll when
    ``period_starts`` is given, for budgets and quotas). Runs its own event loop; never raises
    for AWS faults. The regions are read at the same time and share the run's one
    ``deadline_s``: a source still waiting then is reported as timed out, and the others keep
    what they read."""
    group = CloudWatchRegions(
        regions,
        all_regions=all_regions,
        mantle=mantle,
        linked_accounts=linked_accounts,
        profile=profile,
        endpoint_url=endpoint_url,
        models_from_config=models_from_config,
        period_starts=utc_period_starts if period_starts is None else period_starts,
        enabled=enabled,
        clock=lambda: now,
        candidate_regions=candidate_regions,
        read_timeout_s=read_timeout_s,
        max_attempts=max_attempts,
    )
    if not enabled:
        return {}, {}, group.report_state(disabled_message), group

    async def run() -> dict[Scope, dict[str, dict[str, Any]]]:
        ends_at = time.monotonic() + deadline_s

        def left() -> float:
            return max(0.0, ends_at - time.monotonic())

        reports: dict[Scope, dict[str, dict[str, Any]]] = {}
        try:
            try:
                await asyncio.wait_for(group.scan(now), left())
            except TimeoutError:
                group.note_scan_problem(deadline_passed(deadline_s))
            reports = await group.window_reports(since_epoch, now, left())
            if period_starts is not None and any(reports.values()):
                polls = asyncio.gather(*(s.poll_once() for s in group.runtime_sources()))
                # The budgets' recent minutes are a bonus: the report keeps its totals.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(polls, left())
            return reports
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(group.stop(), 2.0)

    reports = asyncio.run(run())
    several = group.multi_region or linked_accounts
    runtime = per_model_objects(
        reports, BEDROCK, linked_accounts=linked_accounts, several_regions=several
    )
    mantle_rows = per_model_objects(
        reports, MANTLE, linked_accounts=linked_accounts, several_regions=several
    )
    return runtime, mantle_rows, group.report_state(), group


__all__ = [
    "USD_PER_METRIC",
    "CloudWatchRegions",
    "RegionState",
    "Schedule",
    "Scope",
    "add_up",
    "bedrock_regions",
    "parse_regions",
    "per_model_objects",
    "regions_report",
]
