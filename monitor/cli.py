"""Command line: the live screen, the headless report, and the sub-commands.

Textual is imported only when the live screen starts, so ``--once`` stays fast and works where
Textual cannot run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from monitor import __version__
from monitor.formatting import parse_since
from monitor.paths import default_log_path

if TYPE_CHECKING:
    pass

SUBCOMMANDS = ("run", "init-config", "config")
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
        "clients instrumented; 'bedrock-top init-config [--force]'; 'bedrock-top config show'.",
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
        "--poll-interval",
        type=float,
        metavar="SECONDS",
        help="CloudWatch poll interval (default 60, at least 10); each poll costs money",
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
    parser.add_argument("--config", type=Path, metavar="FILE", help="configuration file")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    args = build_parser().parse_args(list(argv))
    if args.json:
        if args.format not in (None, "json"):
            raise UsageError("--json and --format are mutually exclusive")
        args.format = "json"
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
    if name in ("init-config", "config"):
        from monitor.config import subcommand_main

        return subcommand_main(name, rest)
    raise UsageError(f"'{name}' is not available in this build")


def run_once(args: argparse.Namespace) -> int:
    from monitor.report import render_json, render_line, render_table
    from monitor.session import SessionError, open_session

    now = time.time()
    try:
        session = open_session(args, now=now)
    except SessionError as err:
        print(f"bedrock-top: {err}", file=sys.stderr)
        return 2
    try:
        session.feed.catch_up()
        cloudwatch, cloudwatch_state = session.cloudwatch_once(args, now)
        apps_cloudwatch, apps_state = session.apps_cloudwatch_once(args, now, cloudwatch_state)
        model_ids = [*session.feed.store.model_ids(), *cloudwatch, *session.config.models]
        quotas, quotas_state = session.quotas_once(
            args, now, model_ids, cloudwatch_state.get("state")
        )
        report = session.report(
            now,
            sources_extra={
                "cloudwatch": cloudwatch_state,
                "apps_cloudwatch": apps_state,
                "service_quotas": quotas_state,
            },
            cloudwatch=cloudwatch,
            quotas=quotas,
        )
        # Per app, account-wide (BedrockTop namespace): beside, never added to, the rest.
        report["apps_cloudwatch"] = apps_cloudwatch
    finally:
        session.close()
    fmt = args.format or "table"
    if fmt == "json":
        print(render_json(report))
    elif fmt == "line":
        print(render_line(report))
    else:
        sys.stdout.write(render_table(report))
    rejected = report["sources"]["log"]["rejected"]
    if rejected:
        print(
            f"bedrock-top: {rejected} log line(s) rejected; see sources.log in --json",
            file=sys.stderr,
        )
    return 0


def run_live(args: argparse.Namespace) -> int:
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
