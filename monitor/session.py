"""One run of bedrock-top: configuration, sources, store, prices and budgets, assembled once for
the live screen and the headless report alike. Never imports Textual."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.app_metrics_store import AppTotals
from monitor.budgets import BudgetStatus, budget_report, evaluate_all, period_bounds
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
from monitor.pricing import PriceBook
from monitor.quotas import (
    QUOTA_DAY_PERIOD,
    ModelQuotas,
    ServiceQuota,
    UsageInputs,
    assign_quotas,
)
from monitor.quotas import evaluate_all as evaluate_quotas
from monitor.report import ReportInput, build_report
from monitor.sources.demo import HISTORY_S, DemoWorkload, DemoWriter
from monitor.store import Tally

LIVE_DEMO_HISTORY_RECORDS = 6000


class SessionError(Exception):
    """A problem with the configuration or arguments: exit status 2, one line."""


def load_effective_config(args: argparse.Namespace) -> Config:
    """The configuration with the command line's flags applied on top."""
    overrides: dict[str, object] = {
        "sources.logs": args.log,
        "sources.cloudwatch": False if getattr(args, "no_cloudwatch", False) else None,
        "sources.quotas": False if getattr(args, "no_quotas", False) else None,
        "sources.region": getattr(args, "region", None),
        "sources.all_regions": getattr(args, "all_regions", None),
        "sources.linked_accounts": getattr(args, "linked_accounts", None),
        "sources.profile": getattr(args, "profile", None),
        "sources.endpoint_url": getattr(args, "endpoint_url", None),
        "sources.interval_s": getattr(args, "poll_interval", None),
        "ui.refresh_s": getattr(args, "interval", None),
        "ui.theme": getattr(args, "theme", None),
    }
    try:
        config = load_config(getattr(args, "config", None), cli_overrides=overrides)
    except ConfigError as err:
        raise SessionError(str(err)) from None
    for warning in config.warnings:
        print(f"bedrock-top: warning: {warning}", file=sys.stderr)
    return config


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
    # bedrock-mantle's rows of the last ``cloudwatch_once``: model id -> its cloudwatch object.
    cloudwatch_mantle: dict[str, dict[str, Any]] = field(default_factory=dict)
    args: argparse.Namespace | None = None
    _scratch: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)
    # The last quota match and what it was made from: matching hundreds of quota names is
    # redone only when the quotas, the models or the configuration change.
    _quota_match: tuple[object, dict[str, Any]] | None = field(default=None, repr=False)

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
        self, now: float, quotas: list[ServiceQuota], model_ids: list[str] | None = None
    ) -> dict[str, ModelQuotas]:
        """Each model's quotas against its usage: the models of the usage log, of CloudWatch
        and of the configuration."""
        store = self.feed.store
        cloud = self.cloudwatch_store
        if model_ids is None:
            cloud_ids = cloud.model_ids() if cloud is not None else []
            model_ids = [*store.model_ids(), *cloud_ids, *self.config.models]
        key = (tuple(quotas), tuple(model_ids), id(self.config))
        if self._quota_match is None or self._quota_match[0] != key:
            self._quota_match = (key, assign_quotas(quotas, model_ids, self.config.quotas))
        assigned = self._quota_match[1]
        inputs = UsageInputs(
            now=now,
            day_start=self.quota_day_start(now),
            store=store,
            cloudwatch=cloud,
            burndown=self.config.burndown,
        )
        return evaluate_quotas(assigned, model_ids, inputs)

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
        )

    def report(
        self,
        now: float,
        sources_extra: dict[str, dict[str, Any]] | None = None,
        cloudwatch: dict[str, dict[str, Any]] | None = None,
        quotas: Mapping[str, ModelQuotas] | None = None,
    ) -> dict[str, Any]:
        """``cloudwatch``: model id -> its account-wide object (see cloudwatch_report); shown
        beside ``local``, never added to it."""
        store = self.feed.store
        summary = self.price_book.summarize(
            (model_id, store.since_tally(model_id)) for model_id in store.model_ids()
        )
        mantle = self.cloudwatch_mantle
        report = build_report(
            ReportInput(
                now=now,
                since=self.since,
                store=store,
                sources={"log": self.feed.tailer.snapshot(), **(sources_extra or {})},
                local_cost=self.local_costs(),
                budgets=budget_report(self.budget_statuses(now)),
                cloudwatch=cloudwatch or {},
                cloudwatch_totals=combine_report_objects(cloudwatch.values())
                if cloudwatch
                else None,
                quotas={m: q.as_report() for m, q in (quotas or {}).items()},
                mantle=mantle,
                mantle_totals=combine_report_objects(mantle.values()) if mantle else None,
            )
        )
        report["totals"]["local"]["unpriced_tokens"] = summary.unpriced_tokens
        report["totals"]["local"]["unpriced_models"] = list(summary.unpriced_models)
        return report

    def cloudwatch_once(
        self, args: argparse.Namespace, now: float
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """CloudWatch over ``--since`` for the report: per model objects and the source state.
        Budgets that read CloudWatch also get its period-to-date totals and recent minutes."""
        from monitor.sources.cloudwatch_regions import regions_report

        enabled, reason = cloudwatch_wanted(args, self.config)
        sources = self.config.sources
        wants_budgets = enabled and any(s.source != "local" for s in self.config.budgets)
        # Quotas need recent minutes and the day's total too.
        wants_budgets = wants_budgets or (enabled and sources.quotas)
        runtime, mantle, state, stores = regions_report(
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
        )
        self.cloudwatch_mantle = mantle
        if wants_budgets:
            self.cloudwatch_stores = stores
            # Quotas are per region: they are read in the first region polled.
            self.cloudwatch_store = stores[0] if stores else None
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
        from monitor.sources.service_quotas import service_quotas_once

        enabled, reason = quotas_wanted(args, self.config)
        if enabled and cloudwatch_state == "no-credentials":
            enabled, reason = False, "not asked: no AWS credentials (see sources.cloudwatch)"
        sources = self.config.sources
        quotas, health = service_quotas_once(
            # Quotas are per region: the first region polled (the others are not read).
            sources.regions[0] if sources.regions else None,
            sources.profile,
            sources.endpoint_url,
            enabled=enabled,
            disabled_message=reason,
        )
        return self.quota_statuses(now, quotas, model_ids), health.as_report()

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

    def close(self) -> None:
        if self.demo is not None:
            self.demo.stop()
        self.feed.stop()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


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
    """CloudWatch is on by default, off with --no-cloudwatch (or in the configuration), and off
    with --demo unless a profile, region or endpoint is given (the demo needs no account).
    Returns (on, why not)."""
    asked = bool(
        getattr(args, "profile", None)
        or getattr(args, "region", None)
        or getattr(args, "endpoint_url", None)
        or getattr(args, "all_regions", None)
        or getattr(args, "linked_accounts", None)
    )
    if not config.sources.cloudwatch:
        return False, "disabled (--no-cloudwatch or sources.cloudwatch = false)"
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


def earliest_needed(config: Config, since: float, now: float) -> float:
    """The oldest moment any view needs: the report window, the 24-hour charts, and the start of
    every budget period."""
    start = min(since, now - DAY_S)
    for spec in config.budgets:
        start = min(start, period_bounds(spec.period, now, config.timezone)[0])
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
        start_epoch=earliest_needed(config, args.since_epoch, clock_now),
        clock=(lambda: clock_now) if not live else time.time,
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
