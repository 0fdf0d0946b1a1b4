"""Command line: the live screen, the headless report, and the sub-commands.

Textual is imported only when the live screen starts, so ``--once`` stays fast and works where
Textual cannot run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor import __version__
from monitor.formatting import parse_since, printable
from monitor.paths import default_log_path

if TYPE_CHECKING:
    from monitor.feed import LocalFeed

SUBCOMMANDS = ("run", "init-config", "config", "prices", "serve", "export")
DEFAULT_SINCE = "1h"


class UsageError(Exception):
    """Bad arguments: exit status 2 with a one-line message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bedrock-top",
        description="Live token usage, latency, errors and spend of Amazon Bedrock models.",
        epilog="Sub-commands: 'bedrock-top run -- CMD ...' runs CMD with its bedrock-runtime "
        "clients instrumented; 'bedrock-top init-config [--force]'; 'bedrock-top config show'; "
        "'bedrock-top prices [--json] [--billing]' lists the price in force for every model seen; "
        "'bedrock-top serve [--host H] [--port P] [flags]' shows the screen in a browser; "
        "'bedrock-top export --prometheus PORT [flags]' serves metrics with no terminal.",
    )
    parser.add_argument("--version", action="version", version=f"bedrock-top {__version__}")
    output = parser.add_argument_group("headless report")
    output.add_argument("--once", action="store_true", help="print one report and exit")
    output.add_argument("--json", action="store_true", help="with --once: the report as JSON")
    output.add_argument(
        "--format",
        choices=("table", "json", "line"),
        help="with --once: table (default), json, or one line for a status bar",
    )
    output.add_argument(
        "--since",
        default=DEFAULT_SINCE,
        help="report window: a duration (90s, 15m, 2h, 7d) or an ISO timestamp (default 1h)",
    )
    sources = parser.add_argument_group("sources")
    sources.add_argument(
        "--log",
        action="append",
        metavar="PATH",
        help="usage log to follow (repeatable, globs allowed; default $BEDROCK_TOP_LOG or "
        f"{default_log_path()})",
    )
    sources.add_argument(
        "--demo", action="store_true", help="run a simulated workload (no AWS account needed)"
    )
    sources.add_argument("--demo-models", type=int, default=7, help=argparse.SUPPRESS)
    sources.add_argument("--demo-rate", type=float, default=6.0, help=argparse.SUPPRESS)
    sources.add_argument("--demo-seed", type=int, default=7, help=argparse.SUPPRESS)
    sources.add_argument("--demo-steady", action="store_true", help=argparse.SUPPRESS)
    sources.add_argument("--profile", help="AWS profile for CloudWatch")
    sources.add_argument(
        "--region",
        help="AWS region for CloudWatch, or several separated by commas (us-east-1,eu-west-1)",
    )
    sources.add_argument(
        "--all-regions",
        action="store_true",
        default=None,
        help="poll every Bedrock region that has CloudWatch metrics (checked hourly)",
    )
    sources.add_argument(
        "--linked-accounts",
        action="store_true",
        default=None,
        help="from a CloudWatch monitoring account, also read its linked source accounts",
    )
    sources.add_argument(
        "--endpoint-url",
        help="endpoint for every AWS service bedrock-top calls (tests, proxies); per service: "
        "AWS_ENDPOINT_URL_<SERVICE> or endpoint_url in the AWS config file",
    )
    sources.add_argument("--no-cloudwatch", action="store_true", help="do not poll CloudWatch")
    sources.add_argument(
        "--no-quotas", action="store_true", help="do not read Service Quotas (free; hourly)"
    )
    sources.add_argument(
        "--cloudwatch",
        action="store_true",
        help="poll CloudWatch even where it is off by default (--format line)",
    )
    sources.add_argument(
        "--billing",
        action="store_true",
        help="read the month-to-date Bedrock bill from Cost Explorer (ce:GetCostAndUsage; "
        "$0.01 per request, cached for sources.billing_refresh_h hours)",
    )
    sources.add_argument(
        "--poll-interval",
        type=float,
        metavar="SECONDS",
        help="CloudWatch poll interval (default 60, at least 10); each poll costs money",
    )
    sources.add_argument(
        "--log-group",
        action="append",
        metavar="NAME",
        help="CloudWatch Logs group with Bedrock invocation logs or shipped usage records, for "
        "the fleet view (repeatable; default: the group Bedrock's invocation logging writes to)",
    )
    sources.add_argument(
        "--live-tail",
        action="store_true",
        help="follow the log groups with CloudWatch Logs Live Tail (1-second freshness, billed "
        "per minute)",
    )
    sources.add_argument(
        "--no-fleet", action="store_true", help="do not read CloudWatch Logs (the fleet view)"
    )
    screen = parser.add_argument_group("screen")
    screen.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        help="screen refresh interval (default 1)",
    )
    screen.add_argument("--theme", help="theme name (see --list-themes)")
    screen.add_argument("--list-themes", action="store_true", help="list themes and exit")
    export = parser.add_argument_group("metrics")
    export.add_argument(
        "--prometheus",
        type=_listen_address,
        metavar="[HOST:]PORT",
        help="serve Prometheus/OpenMetrics metrics on PORT (host default 127.0.0.1; "
        "export.prometheus_port in the configuration)",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="configuration file")
    return parser


def _listen_address(text: str) -> object:
    from monitor.exporter import parse_listen

    try:
        return parse_listen(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            str(err).removeprefix(f"--prometheus {text!r}: ")
        ) from None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    args = build_parser().parse_args(list(argv))
    if args.json:
        if args.format not in (None, "json"):
            raise UsageError("--json and --format are mutually exclusive")
        args.format = "json"
    if args.cloudwatch and args.no_cloudwatch:
        raise UsageError("--cloudwatch and --no-cloudwatch are mutually exclusive")
    if args.format and not args.once:
        raise UsageError(f"--format {args.format} needs --once")
    if args.interval is not None and not 0.1 <= args.interval <= 60:
        raise UsageError("--interval must be between 0.1 and 60 seconds")
    if args.poll_interval is not None and args.poll_interval < 10:
        raise UsageError(
            "--poll-interval must be at least 10 seconds (CloudWatch has 1-minute "
            "data; faster polls only cost more)"
        )
    if args.region is not None:
        from monitor.sources.cloudwatch_regions import parse_regions

        try:
            args.region = ",".join(parse_regions(args.region)) or None
        except ValueError as err:
            raise UsageError(f"--region: {err}") from None
    if args.demo_models < 1:
        raise UsageError("--demo-models must be at least 1")
    if not args.demo_rate > 0:
        raise UsageError("--demo-rate must be greater than 0")
    try:
        args.since_epoch = parse_since(args.since, time.time())
    except ValueError as err:
        raise UsageError(str(err)) from None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        if arguments and arguments[0] in SUBCOMMANDS:
            return _subcommand(arguments[0], arguments[1:])
        args = parse_args(arguments)
    except UsageError as err:
        print(f"bedrock-top: {err}", file=sys.stderr)
        return 2
    if args.list_themes:
        from monitor.ui.themes import print_theme_list

        return print_theme_list()
    if args.once:
        return run_once(args)
    return run_live(args)


def _subcommand(name: str, rest: list[str]) -> int:
    if name == "run":
        from monitor.wrapper.run import main as run_main

        status: int = run_main(rest)
        return status
    if name == "prices":
        from monitor.price_list import run_prices

        # The report's flags (--log, --config, --billing, --json, --demo, ...) apply as they are.
        return run_prices(parse_args(["--once", *rest]))
    if name == "export":
        from monitor.exporter import export_main

        return export_main(rest)
    if name == "serve":
        from monitor.serve import serve_main

        return serve_main(rest)
    if name in ("init-config", "config"):
        from monitor.config import subcommand_main

        return subcommand_main(name, rest)
    raise UsageError(f"'{name}' is not available in this build")


def run_once(args: argparse.Namespace) -> int:
    from monitor.report import render_json, render_line, render_table
    from monitor.session import SessionError

    # --since counts back from the clock reading the report is made at, so a window of 1h is
    # 3,600 s however long start-up took.
    now = time.time()
    args.since_epoch = parse_since(args.since, now)
    try:
        report = once_report(args, now)
    except SessionError as err:
        print(f"bedrock-top: {err}", file=sys.stderr)
        return 2
    fmt = args.format or "table"
    if fmt == "json":
        text = render_json(report) + "\n"
    elif fmt == "line":
        text = render_line(report) + "\n"
    else:
        text = render_table(report)
    problem = write_stdout(text if fmt == "json" else plain_for_locale(text))
    # Nothing of the store is needed any more: the collection Python runs at exit would walk
    # every object of it (0.1 s after a catch-up of a million records) only to find no cycles.
    gc.freeze()
    if problem is not None:
        print(f"bedrock-top: {problem}", file=sys.stderr)
        return 1
    rejected = report["sources"]["log"]["rejected"]
    if rejected:
        print(
            f"bedrock-top: {rejected} log line(s) rejected; see sources.log in --json",
            file=sys.stderr,
        )
    # A log that could not be read makes the report incomplete: say which, and fail.
    unreadable = report["sources"]["log"].get("errors") or {}
    for path, problem in unreadable.items():
        print(printable(f"bedrock-top: cannot read {path}: {problem}"), file=sys.stderr)
    return 1 if unreadable else 0


def write_stdout(text: str) -> str | None:
    """Write the report to stdout. Returns what went wrong (stdout closed, the reader gone, the
    disk full), in a line, or None."""
    stream = sys.stdout
    if stream is None:
        return "stdout is closed: the report has nowhere to go"
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        problem = "the reader of stdout went away before the report was written"
    except OSError as err:
        problem = f"cannot write the report to stdout: {err.strerror or err}"
    except ValueError:  # closed by the caller
        return "stdout is closed: the report has nowhere to go"
    else:
        return None
    # Python flushes stdout again at exit: point it at /dev/null so that flush cannot fail too.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    return problem


def plain_for_locale(text: str) -> str:
    """The report in the terminal's character set: under a locale that is not UTF-8, the few
    typographic characters become ASCII and anything else a ``?``."""
    from monitor.terminal import locale_is_utf8

    if locale_is_utf8():
        return text
    return text.translate(ASCII_FALLBACK).encode("ascii", "replace").decode("ascii")


ASCII_FALLBACK = str.maketrans({"—": "-", "–": "-", "…": "...", "·": "-", "→": "->", "←": "<-"})


def once_report(
    args: argparse.Namespace, now: float, catch_up: Callable[[LocalFeed], object] | None = None
) -> dict[str, Any]:
    """The report of ``--once`` at the clock reading ``now``; ``catch_up`` reads the logs
    (default ``LocalFeed.catch_up``). Raises SessionError."""
    from monitor.session import open_session

    session = open_session(args, now=now)
    try:
        if catch_up is None:
            session.feed.catch_up()
        else:
            catch_up(session.feed)
        cloudwatch, cloudwatch_state = session.cloudwatch_once(args, now)
        # The bill first: prices learned from it also price the per-app totals below.
        billing_state = session.billing_once(also_seen=cloudwatch)
        apps_cloudwatch, apps_state = session.apps_cloudwatch_once(args, now, cloudwatch_state)
        model_ids = [*session.feed.store.model_ids(), *cloudwatch, *session.config.models]
        quotas, quotas_state = session.quotas_once(
            args, now, model_ids, cloudwatch_state.get("state")
        )
        extra = {
            "cloudwatch": cloudwatch_state,
            "apps_cloudwatch": apps_state,
            "service_quotas": quotas_state,
        }
        if billing_state is not None:
            extra["billing"] = billing_state
        report = session.report(
            now,
            sources_extra=extra,
            cloudwatch=cloudwatch,
            quotas=quotas,
            billing_cloudwatch=session.cloudwatch_same_days(args, now),
            fleet=session.fleet_once(args, now),
        )
        # Per app, account-wide (BedrockTop namespace): beside, never added to, the rest.
        report["apps_cloudwatch"] = apps_cloudwatch
        return report
    finally:
        session.close()


def run_live(args: argparse.Namespace) -> int:
    from monitor.terminal import live_screen_problem

    problem = live_screen_problem()
    if problem is not None:
        print(f"bedrock-top: {problem}; showing the report (--once)", file=sys.stderr)
        return run_once(args)
    try:
        from monitor.ui.app import run_app
    except ImportError:
        print(
            "bedrock-top: the live screen is not available in this build; showing the "
            "report (--once)",
            file=sys.stderr,
        )
        return run_once(args)
    status: int = run_app(args)
    return status
