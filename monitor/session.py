"""One run of bedrock-top: configuration, sources, store, prices and budgets, assembled once for
the live screen and the headless report alike. Never imports Textual."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.app_metrics_store import AppTotals
from monitor.budgets import (
    BURN_WINDOW_LONG_S,
    BudgetStatus,
    budget_report,
    evaluate_all,
    period_bounds,
)
from monitor.cloudwatch_store import (
    CACHE_READ,
    CACHE_WRITE,
    INPUT_TOKENS,
    INVOCATIONS,
    OUTPUT_TOKENS,
    CloudWatchStore,
    combine_report_objects,
)
from monitor.config import Config, ConfigError, load_config
from monitor.feed import DAY_S, LocalFeed
from monitor.groups import GroupIndex
from monitor.pricing import PriceBook
from monitor.quotas import (
    QUOTA_DAY_PERIOD,
    ModelQuotas,
    ServiceQuota,
    UsageInputs,
    assign_quotas,
    tightest_region,
)
from monitor.quotas import evaluate_all as evaluate_quotas
from monitor.report import RATE_WINDOW_LONG_S, ReportInput, build_report
from monitor.sources.demo import HISTORY_S, DemoWorkload, DemoWriter
from monitor.store import Tally

if TYPE_CHECKING:
    from monitor.billing import BillingData, BillingSummary, LearnedPrice
    from monitor.sources.billing import BillingSource
    from monitor.sources.fleet import FleetSource
    from monitor.sources.fleet_regions import FleetRegions

LIVE_DEMO_HISTORY_RECORDS = 6000


class SessionError(Exception):
    """A problem with the configuration or arguments: exit status 2, one line."""


def load_effective_config(args: argparse.Namespace) -> Config:
    """The configuration with the command line's flags applied on top."""
    overrides: dict[str, object] = {
        "sources.logs": args.log,
        "sources.cloudwatch": False
        if getattr(args, "no_cloudwatch", False)
        else (True if getattr(args, "cloudwatch", False) else None),
        "sources.quotas": False if getattr(args, "no_quotas", False) else None,
        "sources.region": getattr(args, "region", None),
        "sources.all_regions": getattr(args, "all_regions", None),
        "sources.linked_accounts": getattr(args, "linked_accounts", None),
        "sources.profile": getattr(args, "profile", None),
        "sources.endpoint_url": getattr(args, "endpoint_url", None),
        "sources.interval_s": getattr(args, "poll_interval", None),
        "sources.billing": True if getattr(args, "billing", False) else None,
        "sources.fleet": False if getattr(args, "no_fleet", False) else None,
        "sources.log_groups": getattr(args, "log_group", None),
        "sources.live_tail": True if getattr(args, "live_tail", False) else None,
        "ui.refresh_s": getattr(args, "interval", None),
        "ui.theme": getattr(args, "theme", None),
        **prometheus_overrides(args),
    }
    try:
        config = load_config(getattr(args, "config", None), cli_overrides=overrides)
    except ConfigError as err:
        raise SessionError(str(err)) from None
    for warning in config.warnings:
        print(f"bedrock-top: warning: {warning}", file=sys.stderr)
    return config


def prometheus_overrides(args: argparse.Namespace) -> dict[str, object]:
    """``--prometheus [HOST:]PORT`` as configuration overrides (none when not given)."""
    listen = getattr(args, "prometheus", None)
    if listen is None:
        return {}
    overrides: dict[str, object] = {"export.prometheus_port": listen.port}
    if listen.host:  # a bare port keeps the configured host
        overrides["export.prometheus_host"] = listen.host
    return overrides


@dataclass
class Session:
    """Everything a view needs, built from the arguments and the configuration."""

    config: Config
    feed: LocalFeed
    price_book: PriceBook
    since: float
    demo: DemoWriter | None = None
    clock: Callable[[], float] = time.time
    # Set when CloudWatch is on: budgets with source auto or cloudwatch read it.
    cloudwatch_store: CloudWatchStore | None = None
    # Several regions (or linked accounts): one store each; budgets add them up.
    cloudwatch_stores: list[CloudWatchStore] = field(default_factory=list)
    # The live screen's sources find regions and accounts as they run: asked at each evaluation.
    cloudwatch_stores_of: Callable[[], list[CloudWatchStore]] | None = None
    # Region -> the credentials' own AWS/Bedrock store there: each region's quotas are measured
    # against its own usage. The live screen's regions can be found later: asked each time.
    cloudwatch_region_stores: dict[str, CloudWatchStore] = field(default_factory=dict)
    cloudwatch_region_stores_of: Callable[[], dict[str, CloudWatchStore]] | None = None
    # bedrock-mantle's rows of the last ``cloudwatch_once``: model id -> its cloudwatch object.
    cloudwatch_mantle: dict[str, dict[str, Any]] = field(default_factory=dict)
    args: argparse.Namespace | None = None
    # Set when the billing source is on (--billing or sources.billing): the bill, read as models.
    billing: BillingSource | None = None
    billing_summary: BillingSummary | None = None
    learned_prices: dict[str, LearnedPrice] = field(default_factory=dict)
    _also_seen: list[str] = field(default_factory=list, repr=False)
    _scratch: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)
    # The last quota match and what it was made from: matching hundreds of quota names is
    # redone only when the quotas, the models or the configuration change.
    _quota_match: dict[str, tuple[object, dict[str, Any]]] = field(default_factory=dict, repr=False)
    # When the headless run's AWS deadline ends (time.monotonic()), set by its first AWS source.
    _aws_deadline: float | None = field(default=None, repr=False)

    def local_costs(self) -> dict[str, float | None]:
        """USD per model over the report window; None where unpriced."""
        store = self.feed.store
        return {
            model_id: self.price_book.cost_usd(model_id, store.since_tally(model_id))
            for model_id in store.model_ids()
        }

    def budget_period_starts(self, now: float) -> dict[str, float]:
        """The start of each budget period in use, in the configured timezone."""
        return {
            spec.period: period_bounds(spec.period, now, self.config.timezone)[0]
            for spec in self.config.budgets
        }

    def alarm_period_starts(self, now: float) -> dict[str, float]:
        """The periods the CloudWatch source keeps totals for: every budget period, and the
        quota day (tokens per day) when quotas are on."""
        starts = self.budget_period_starts(now)
        if self.config.sources.quotas:
            starts.setdefault(QUOTA_DAY_PERIOD, self.quota_day_start(now))
        return starts

    def quota_day_start(self, now: float) -> float:
        """The start of the tokens-per-day quota's day, in the configured timezone."""
        return period_bounds("day", now, self.config.timezone)[0]

    def quota_statuses(
        self,
        now: float,
        quotas: list[ServiceQuota],
        model_ids: list[str] | None = None,
        *,
        region: str | None = None,
    ) -> dict[str, ModelQuotas]:
        """Each model's quotas against its usage: the models of the usage log, of CloudWatch
        and of the configuration. ``region``: one region's quotas, measured against that
        region's CloudWatch figures (None: the one region polled)."""
        store = self.feed.store
        cloud = self.cloudwatch_store if region is None else self.region_stores().get(region)
        if model_ids is None:
            model_ids = self.quota_model_ids()
        key = (tuple(quotas), tuple(model_ids), id(self.config))
        cached = self._quota_match.get(region or "")
        if cached is None or cached[0] != key:
            cached = self._quota_match[region or ""] = (
                key,
                assign_quotas(quotas, model_ids, self.config.quotas),
            )
        assigned = cached[1]
        inputs = UsageInputs(
            now=now,
            day_start=self.quota_day_start(now),
            store=store,
            cloudwatch=cloud,
            burndown=self.config.burndown,
        )
        return evaluate_quotas(assigned, model_ids, inputs)

    def region_stores(self) -> dict[str, CloudWatchStore]:
        if self.cloudwatch_region_stores_of is not None:
            return self.cloudwatch_region_stores_of()
        return self.cloudwatch_region_stores

    def quota_model_ids(self) -> list[str]:
        """The models quotas are matched for: the log's, every region's CloudWatch's, and the
        configuration's."""
        clouds = list(self.region_stores().values())
        if not clouds and self.cloudwatch_store is not None:
            clouds = [self.cloudwatch_store]
        cloud_ids = [m for cloud in clouds for m in cloud.model_ids()]
        return list(dict.fromkeys([*self.feed.store.model_ids(), *cloud_ids, *self.config.models]))

    def regional_quota_statuses(
        self,
        now: float,
        quotas_by_region: Mapping[str, list[ServiceQuota]],
        model_ids: list[str] | None = None,
    ) -> dict[str, ModelQuotas]:
        """Quotas are per region: with several regions each is measured against its own usage,
        and each model shows the region closest to its limit (the one throttled first), with
        every region's figures beside it. One region: :meth:`quota_statuses` as it is."""
        if len(quotas_by_region) <= 1:
            quotas = next(iter(quotas_by_region.values()), [])
            return self.quota_statuses(now, quotas, model_ids)
        model_ids = self.quota_model_ids() if model_ids is None else model_ids
        return tightest_region(
            {
                region: self.quota_statuses(now, quotas, model_ids, region=region)
                for region, quotas in quotas_by_region.items()
            }
        )

    def budget_statuses(self, now: float) -> list[BudgetStatus]:
        store = self.feed.store
        if self.cloudwatch_stores_of is not None:
            clouds = self.cloudwatch_stores_of()
        else:
            clouds = self.cloudwatch_stores or (
                [self.cloudwatch_store] if self.cloudwatch_store is not None else []
            )
        cloud = clouds or None
        return evaluate_all(
            self.config.budgets,
            now,
            self.price_book,
            tz=self.config.timezone,
            local_models=[*store.model_ids(), *self.config.models],
            local_usage=store.tally_between,
            cloudwatch_models=sorted({m for c in clouds for m in c.model_ids()}),
            cloudwatch_usage=(
                None
                if cloud is None
                else cloudwatch_usage(cloud, self.budget_period_starts(now), now)
            ),
            billed=self.billed_spend(now),
        )

    def report(
        self,
        now: float,
        sources_extra: dict[str, dict[str, Any]] | None = None,
        cloudwatch: dict[str, dict[str, Any]] | None = None,
        quotas: Mapping[str, ModelQuotas] | None = None,
        billing_cloudwatch: dict[str, dict[str, Any]] | None = None,
        fleet: FleetSource | FleetRegions | None = None,
    ) -> dict[str, Any]:
        """``cloudwatch``: model id -> its account-wide object (see cloudwatch_report); shown
        beside ``local``, never added to it. ``billing_cloudwatch``: the same over the bill's
        days, for the estimate beside the bill. ``fleet``: the CloudWatch Logs source, whose own
        store gives each model's ``fleet`` object, likewise apart."""
        store = self.feed.store
        book = self.price_book
        groups: list[tuple[str, GroupIndex]] = [("local", self.feed.groups)]
        fleet_store = None
        fleet_cost = None
        extra = dict(sources_extra or {})
        if fleet is not None:
            extra["fleet"] = fleet.snapshot()
            if fleet.enabled and fleet.log_groups:  # off, or no group to read: no numbers
                fleet_store = fleet.store
                fleet_cost = {
                    m: book.cost_usd(m, fleet_store.since_tally(m)) for m in fleet_store.model_ids()
                }
                groups.append(("fleet", fleet.groups))
        summary = self.price_book.summarize(
            (model_id, store.since_tally(model_id)) for model_id in store.model_ids()
        )
        mantle = self.cloudwatch_mantle
        report = build_report(
            ReportInput(
                now=now,
                since=self.since,
                store=store,
                sources={"log": self.feed.tailer.snapshot(), **extra},
                local_cost=self.local_costs(),
                budgets=budget_report(self.budget_statuses(now)),
                cloudwatch=cloudwatch or {},
                cloudwatch_totals=combine_report_objects(cloudwatch.values())
                if cloudwatch
                else None,
                quotas={m: q.as_report() for m, q in (quotas or {}).items()},
                fleet_store=fleet_store,
                fleet_cost=fleet_cost,
                groups=groups,
                group_cost=book.cost_usd,
                mantle=mantle,
                mantle_totals=combine_report_objects(mantle.values()) if mantle else None,
            )
        )
        report["totals"]["local"]["unpriced_tokens"] = summary.unpriced_tokens
        report["totals"]["local"]["unpriced_models"] = list(summary.unpriced_models)
        if self.billing is not None:
            report["billing"] = self.billing_report(billing_cloudwatch)
        return report

    def aws_time_left(self) -> float:
        """Seconds left of the headless run's one AWS deadline, shared by all its sources in
        turn (the first to ask starts it), so that a report never waits longer than
        HEADLESS_DEADLINE_S for AWS whatever the number of sources."""
        from monitor.sources.aws import HEADLESS_DEADLINE_S

        if self._aws_deadline is None:
            self._aws_deadline = time.monotonic() + HEADLESS_DEADLINE_S
        # A source whose turn comes after the deadline still gets a moment, then says why.
        return max(0.5, self._aws_deadline - time.monotonic())

    def cloudwatch_once(
        self, args: argparse.Namespace, now: float
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """CloudWatch over ``--since`` for the report: per model objects and the source state.
        Budgets that read CloudWatch also get its period-to-date totals and recent minutes."""
        from monitor.sources.cloudwatch import BEDROCK
        from monitor.sources.cloudwatch_regions import regions_report

        enabled, reason = cloudwatch_wanted(args, self.config)
        sources = self.config.sources
        wants_budgets = enabled and any(s.source != "local" for s in self.config.budgets)
        # Quotas need recent minutes and the day's total too.
        wants_budgets = wants_budgets or (enabled and sources.quotas)
        runtime, mantle, state, group = regions_report(
            list(sources.regions) or [None],
            sources.profile,
            sources.endpoint_url,
            self.since,
            now,
            all_regions=sources.all_regions,
            mantle=sources.mantle,
            linked_accounts=sources.linked_accounts,
            enabled=enabled,
            disabled_message=reason,
            models_from_config=self.config.models,
            period_starts=self.alarm_period_starts if wants_budgets else None,
            deadline_s=self.aws_time_left() if enabled else 0.0,
        )
        self.cloudwatch_mantle = mantle
        if wants_budgets:
            self.cloudwatch_stores = group.stores(BEDROCK)
            self.cloudwatch_region_stores = group.region_stores()
            # One region: the store every single-region reader (billing's model ids) reads.
            first = next(iter(self.cloudwatch_region_stores.values()), None)
            self.cloudwatch_store = first or next(iter(self.cloudwatch_stores), None)
        return runtime, state

    def apps_cloudwatch_once(
        self,
        args: argparse.Namespace,
        now: float,
        cloudwatch_state: Mapping[str, Any] | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Per-app account-wide totals from the ``BedrockTop`` namespace (the wrapper's EMF) over
        ``--since``, for the report's ``apps_cloudwatch``; and the source's state. When the
        CloudWatch source could not even start (no credentials, no region), this one does not
        try again: same account, same answer."""
        from monitor.app_metrics_store import apps_report
        from monitor.sources.app_metrics import app_metrics_once
        from monitor.sources.aws import ERROR, NO_CREDENTIALS, AwsTarget

        enabled, reason = cloudwatch_wanted(args, self.config)
        if (
            enabled
            and cloudwatch_state
            and cloudwatch_state.get("state") in (ERROR, NO_CREDENTIALS)
        ):
            enabled = False
            reason = f"not polled: CloudWatch {cloudwatch_state.get('message', '')}".strip()
        sources = self.config.sources
        grouped, state = app_metrics_once(
            # Read in the first region polled (with several regions, the others are not read).
            AwsTarget(
                sources.regions[0] if sources.regions else None,
                sources.profile,
                sources.endpoint_url,
            ),
            self.since,
            now,
            enabled=enabled,
            disabled_message=reason,
            deadline_s=self.aws_time_left() if enabled else 0.0,
        )
        book = self.price_book

        def cost(model_id: str, totals: AppTotals) -> float | None:
            return book.cost_usd(model_id, app_tally(totals))

        return apps_report(grouped, now - self.since, cost), state

    def quotas_once(
        self,
        args: argparse.Namespace,
        now: float,
        model_ids: list[str],
        cloudwatch_state: str | None = None,
    ) -> tuple[dict[str, ModelQuotas], dict[str, Any]]:
        """For the report: the account's quotas (Service Quotas, once), each model's use
        against them, and the source's state. ``cloudwatch_state``: when CloudWatch found no
        credentials, Service Quotas (the same account) is not asked again."""
        enabled, reason = quotas_wanted(args, self.config)
        if enabled and cloudwatch_state == "no-credentials":
            enabled, reason = False, "not asked: no AWS credentials (see sources.cloudwatch)"
        from monitor.sources.service_quotas_regions import service_quotas_regions_once

        sources = self.config.sources
        group = service_quotas_regions_once(
            self.polled_regions(),
            sources.profile,
            sources.endpoint_url,
            enabled=enabled,
            disabled_message=reason,
            deadline_s=self.aws_time_left() if enabled else 0.0,
        )
        statuses = self.regional_quota_statuses(now, group.quotas_by_region(), model_ids)
        return statuses, group.as_report()

    def polled_regions(self) -> list[str | None]:
        """The regions the regional sources (quotas, the fleet) read: those CloudWatch polled
        (found ones included), else those asked for, else botocore's own region."""
        found = [region for region in self.region_stores() if region]
        if len(found) > 1 or (found and self.config.sources.all_regions):
            return list(found)
        return list(self.config.sources.regions) or [None]

    # -- the bill ---------------------------------------------------------------------------

    def billing_model_ids(self) -> list[str]:
        """The model ids the bill's usage types may name: the log's, CloudWatch's, the
        configuration's."""
        cloud = self.cloudwatch_store
        ids = [*self.feed.store.model_ids(), *self.config.models, *self._also_seen]
        if cloud is not None:
            ids += cloud.model_ids()
        return list(dict.fromkeys(ids))

    def apply_billing(self, data: BillingData | None) -> None:
        """Read the bill as models and learn its prices (used where no other price exists)."""
        from monitor.reconcile import learned_for_book, read_bill

        if data is None:
            return
        summary, learned = read_bill(
            data, self.billing_model_ids(), self.config.billing_usage_types
        )
        self.billing_summary = summary
        self.learned_prices = learned
        self.price_book = self.price_book.with_learned(learned_for_book(learned))

    def billed_spend(self, now: float) -> Any:
        if self.billing_summary is None:
            return None
        from monitor.reconcile import billed_spend

        return billed_spend(self.billing_summary, now)

    def open_billing(self, *, clock: Callable[[], float] | None = None) -> BillingSource | None:
        """The billing source, when it is on (it is off by default: each request is billed)."""
        if not self.config.sources.billing:
            return None
        from monitor.sources.aws import AwsTarget
        from monitor.sources.billing import BillingSource

        sources = self.config.sources
        self.billing = BillingSource(
            target=AwsTarget(None, sources.profile, sources.endpoint_url),
            refresh_h=sources.billing_refresh_h,
            clock=clock or self.clock,
        )
        return self.billing

    def billing_once(self, also_seen: Iterable[str] = ()) -> dict[str, Any] | None:
        """For ``--once``: the bill (cached, or fetched when the cache is stale), applied;
        returns the source's state for ``sources.billing``. ``also_seen``: model ids seen
        elsewhere (CloudWatch's), which usage types may name too."""
        source = self.open_billing()
        if source is None:
            return None
        from monitor.sources.billing import billing_once

        self._also_seen = list(also_seen)
        self.apply_billing(billing_once(source, self.aws_time_left()))
        return self.billing_source_state()

    def cloudwatch_same_days(
        self, args: argparse.Namespace, now: float
    ) -> dict[str, dict[str, Any]] | None:
        """CloudWatch over the bill's days, for its estimate beside the bill (``--once`` with
        CloudWatch on: one more GetMetricData call). None when either source is off."""
        span = self.billing_window()
        enabled, _ = cloudwatch_wanted(args, self.config)
        if span is None or not enabled:
            return None
        from monitor.sources.cloudwatch import cloudwatch_report

        sources = self.config.sources
        start, end = span
        if len(sources.regions) > 1 or sources.all_regions:
            # The bill is the account's, every region's: so is the estimate beside it.
            from monitor.sources.cloudwatch_regions import regions_report

            objects, _mantle, state, _group = regions_report(
                list(sources.regions) or [None],
                sources.profile,
                sources.endpoint_url,
                start,
                min(end, now),
                all_regions=sources.all_regions,
                mantle=False,
                models_from_config=self.config.models,
                deadline_s=self.aws_time_left(),
            )
            return objects if state.get("state") == "ok" else None
        objects, state = cloudwatch_report(
            sources.region,
            sources.profile,
            sources.endpoint_url,
            start,
            min(end, now),
            models_from_config=self.config.models,
        )
        return objects if state.get("state") == "ok" else None

    def billing_source_state(self) -> dict[str, Any] | None:
        source = self.billing
        if source is None:
            return None
        return {
            **source.health().as_report(),
            "requests": source.requests,
            "cache": str(source.cache_path),
            "cache_age_s": _rounded(source.cache_age_s()),
            "refresh_h": source.refresh_h,
            "refresh_cost_per_day_usd": round(source.cost_per_day_usd(), 4),
            "notices": list(source.notices),
        }

    def billing_window(self) -> tuple[float, float] | None:
        """``[start, end)`` of the days the bill covers (for the estimates beside it)."""
        if self.billing_summary is None:
            return None
        from monitor.reconcile import window

        return window(self.billing_summary)

    def billing_report(self, cloudwatch_same_days: dict[str, dict[str, Any]] | None) -> Any:
        """The report's ``billing`` object (None when the bill could not be read)."""
        summary = self.billing_summary
        if summary is None or self.billing is None:
            return None
        from monitor.reconcile import billing_report, cloudwatch_tally, estimate

        span = self.billing_window()
        local = None
        if span is not None:
            store = self.feed.store
            local = estimate(
                ((m, store.tally_between(m, *span)) for m in store.model_ids()), self.price_book
            )
        cloud = None
        if cloudwatch_same_days is not None:
            cloud = estimate(
                ((m, cloudwatch_tally(obj)) for m, obj in cloudwatch_same_days.items()),
                self.price_book,
            )
        return billing_report(
            summary,
            self.learned_prices,
            local=local,
            cloudwatch=cloud,
            cache_age_s=self.billing.cache_age_s(),
            cost_per_day_usd=self.billing.cost_per_day_usd(),
        )

    def fleet_once(self, args: argparse.Namespace, now: float) -> FleetRegions:
        """The fleet source over ``--since`` for the report (its state says when it is off): in
        every region CloudWatch polled (each region's own invocation-logging group)."""
        from monitor.sources.fleet_regions import fleet_regions_report

        enabled, reason = fleet_wanted(args, self.config)
        sources = self.config.sources
        return fleet_regions_report(
            self.polled_regions(),
            sources.profile,
            sources.endpoint_url,
            self.since,
            now,
            log_groups=sources.log_groups,
            enabled=enabled,
            disabled_message=reason,
            deadline_s=self.aws_time_left() if enabled else 0.0,
        )

    def reload_config(self) -> None:
        """Read the configuration file again (after the screen saved a change to it): the file
        that was read, with the same flags on top. Raises SessionError."""
        if self.args is None:
            return
        args = argparse.Namespace(**vars(self.args))
        if self.config.path is not None:
            args.config = self.config.path
        self.config = load_effective_config(args)
        self.price_book = PriceBook(self.config.pricing, self.config.profile_multipliers)
        if self.billing is not None:
            self.apply_billing(self.billing.data)

    def close(self) -> None:
        if self.demo is not None:
            self.demo.stop()
        self.feed.stop()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def cloudwatch_usage(
    store: CloudWatchStore | Sequence[CloudWatchStore],
    period_starts: Mapping[str, float],
    now: float,
) -> Callable[[str, float, float], Tally]:
    """Budget usage from CloudWatch: a period's coarse period-to-date total when the window
    starts at a budget period's start, else the per-minute sums (burn-rate windows). Several
    stores (one per region or account) add up: they count different calls."""
    starts = {start: period for period, start in period_starts.items()}
    stores = [store] if isinstance(store, CloudWatchStore) else list(store)

    def usage(model_id: str, start: float, end: float) -> Tally:
        period = starts.get(start)

        def total(metric: str) -> int:
            return sum(one_store(each, metric) for each in stores)

        def one_store(store: CloudWatchStore, metric: str) -> int:
            if period is not None:
                value = store.period_to_date(model_id, metric, period, now)
                if value is not None:
                    return int(value)
            return int(store.sum(model_id, metric, start, end))

        return Tally(
            requests=total(INVOCATIONS),
            input_tokens=total(INPUT_TOKENS),
            output_tokens=total(OUTPUT_TOKENS),
            cache_read_input_tokens=total(CACHE_READ),
            cache_write_input_tokens=total(CACHE_WRITE),
        )

    return usage


def app_tally(totals: AppTotals) -> Tally:
    """An app's CloudWatch totals as a tally, for pricing."""
    return Tally(
        requests=totals.requests,
        input_tokens=totals.input_tokens,
        output_tokens=totals.output_tokens,
        cache_read_input_tokens=totals.cache_read_input_tokens,
        cache_write_input_tokens=totals.cache_write_input_tokens,
    )


def cloudwatch_wanted(args: argparse.Namespace, config: Config) -> tuple[bool, str]:
    """CloudWatch is on by default, off with --no-cloudwatch (or in the configuration), off for
    ``--format line`` unless asked for, and off with --demo unless a profile, region or
    endpoint is given (the demo needs no account). Returns (on, why not)."""
    asked = bool(
        getattr(args, "profile", None)
        or getattr(args, "region", None)
        or getattr(args, "endpoint_url", None)
        or getattr(args, "all_regions", None)
        or getattr(args, "linked_accounts", None)
    )
    if not config.sources.cloudwatch:
        return False, "disabled (--no-cloudwatch or sources.cloudwatch = false)"
    # A status bar runs --format line every few seconds: each run would pay for CloudWatch
    # requests, so it asks only when told to (--cloudwatch, or sources.cloudwatch in a file).
    origin = config.provenance.get("sources.cloudwatch")
    if getattr(args, "format", None) == "line" and (origin is None or origin.kind == "default"):
        return False, "off for --format line (pass --cloudwatch or set sources.cloudwatch = true)"
    if args.demo and not asked:
        return False, "off with --demo (pass --profile, --region or --endpoint-url to use it)"
    return True, ""


def quotas_wanted(args: argparse.Namespace, config: Config) -> tuple[bool, str]:
    """Service Quotas uses CloudWatch's account and credentials: on with it, off with
    --no-quotas (or sources.quotas = false). Returns (on, why not)."""
    if not config.sources.quotas:
        return False, "disabled (--no-quotas or sources.quotas = false)"
    enabled, reason = cloudwatch_wanted(args, config)
    if not enabled:
        return False, f"off with CloudWatch: {reason}"
    return True, ""


def fleet_wanted(args: argparse.Namespace, config: Config) -> tuple[bool, str]:
    """The fleet source (CloudWatch Logs) is on where CloudWatch is, or wherever a log group is
    named; off with --no-fleet (or ``sources.fleet = false``). Returns (on, why not)."""
    if not config.sources.fleet:
        return False, "off (--no-fleet or sources.fleet = false)"
    if config.sources.log_groups and not (args.demo and not _aws_asked(args)):
        return True, ""
    enabled, reason = cloudwatch_wanted(args, config)
    return enabled, reason and f"off with CloudWatch: {reason}"


def _aws_asked(args: argparse.Namespace) -> bool:
    return bool(
        getattr(args, "profile", None)
        or getattr(args, "region", None)
        or getattr(args, "endpoint_url", None)
        or getattr(args, "log_group", None)
    )


def earliest_needed(
    config: Config, since: float, now: float, live: bool = True, quotas: bool = False
) -> float:
    """The oldest moment any view needs: the report window, the start of every budget period
    and the hour of its burn rate, the day of the tokens-per-day quota (``quotas``), and for
    the live screen (``live``) its 24-hour charts; the headless report reads only what it
    prints (the report window and its 5-minute rates)."""
    start = min(since, now - (DAY_S if live else RATE_WINDOW_LONG_S))
    if quotas:
        start = min(start, period_bounds(QUOTA_DAY_PERIOD, now, config.timezone)[0])
    for spec in config.budgets:
        start = min(start, period_bounds(spec.period, now, config.timezone)[0])
        start = min(start, now - BURN_WINDOW_LONG_S)
    if config.sources.billing:
        # The estimates beside the bill cover the bill's days: the UTC month so far.
        start = min(start, period_bounds("month", now, "UTC")[0])
    return start


def open_session(
    args: argparse.Namespace, *, now: float | None = None, live: bool = False
) -> Session:
    """Build the session. With ``--demo`` a seeded workload writes 15 minutes of history to a
    temporary log first (and, when ``live``, keeps writing)."""
    config = load_effective_config(args)
    clock_now = time.time() if now is None else now
    scratch = None
    demo = None
    patterns = list(config.sources.logs)
    if args.demo:
        scratch = tempfile.TemporaryDirectory(prefix="bedrock-top-demo-")
        log = Path(scratch.name) / "usage.jsonl"
        workload = DemoWorkload(
            models=args.demo_models,
            rate_per_s=args.demo_rate,
            seed=args.demo_seed,
            steady=getattr(args, "demo_steady", False),
        )
        demo = DemoWriter(log, workload)
        # The live screen starts with a few thousand records of history at most, so that a fast
        # demo still draws its first frame at once; the report gets the full 15 minutes.
        history = min(HISTORY_S, LIVE_DEMO_HISTORY_RECORDS / args.demo_rate) if live else HISTORY_S
        demo.write_history(clock_now, seconds=history)
        # The demo's log comes first; logs named with --log are followed too.
        patterns = [str(log), *(args.log or [])]
    feed = LocalFeed(
        patterns,
        since=args.since_epoch,
        start_epoch=earliest_needed(
            config,
            args.since_epoch,
            clock_now,
            live=live,
            quotas=quotas_wanted(args, config)[0],
        ),
        clock=(lambda: clock_now) if not live else time.time,
        # The screen charts each minute's latency; the headless report prints none of them.
        minute_sketches=live,
    )
    session = Session(
        config=config,
        feed=feed,
        price_book=PriceBook(config.pricing, config.profile_multipliers),
        since=args.since_epoch,
        demo=demo,
        _scratch=scratch,
        args=args,
        clock=time.time if live else (lambda: clock_now),
    )
    if live and demo is not None:
        demo.start()
    return session
