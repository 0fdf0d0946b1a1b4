"""``bedrock-top serve``: the live screen in a browser, with textual-serve.

Each browser tab that opens the page gets a bedrock-top screen of its own, started by the server
with the flags ``serve`` was given (``bedrock-top serve --demo``). The page, its script, its
stylesheet and its fonts come from the installed textual-serve package; its link to a web font
service is taken out, so nothing is fetched from the internet. The server has no authentication:
binding to anything but loopback warns, and all interfaces need ``--public``.

With ``--prometheus`` the server process also runs the headless exporter (one set of sources for
the metrics, whatever the number of tabs open).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import re
import shlex
import signal
import sys
from typing import Any

from monitor.exporter import ExportError, is_loopback, parse_listen

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
INSTALL_HINT = "pip install 'bedrock-top[web]'"
# The template's one external request: a stylesheet from a web font service. Without it the page
# uses the Roboto Mono files textual-serve ships (declared in LOCAL_FONT below).
_WEB_FONT_LINK = re.compile(r"<link\b[^>]*https?://fonts\.googleapis\.com[^>]*>", re.IGNORECASE)
LOCAL_FONT = (
    "<style>@font-face { font-family: 'Roboto Mono'; "
    "src: url('{static}fonts/RobotoMono-VariableFont_wght.ttf') format('truetype'); "
    "font-style: normal; } @font-face { font-family: 'Roboto Mono'; "
    "src: url('{static}fonts/RobotoMono-Italic-VariableFont_wght.ttf') format('truetype'); "
    "font-style: italic; }</style>"
)


class ServeError(Exception):
    """The server cannot start: one line saying why and what to do."""


def build_parser() -> argparse.ArgumentParser:
    from monitor.cli import _Parser

    parser = _Parser(
        prog="bedrock-top serve",
        description="Show the live screen in a browser. Every other flag is passed to the "
        "screen each browser tab starts (for example --demo, --log, --config).",
        add_help=True,
        # Its flags must not swallow abbreviations of the screen's (--po..., --pro...).
        allow_abbrev=False,
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to bind (default 8000; 0 picks one)"
    )
    parser.add_argument(
        "--public",
        action="store_true",
        help="allow binding to every interface (0.0.0.0 or ::); the page has no authentication",
    )
    parser.add_argument(
        "--prometheus",
        metavar="[HOST:]PORT",
        help="also serve Prometheus metrics from this process (see bedrock-top --help)",
    )
    return parser


def check_host(host: str, public: bool) -> str | None:
    """A warning to print for ``host``, or None. Raises ServeError for every interface without
    ``--public``."""
    try:
        everywhere = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        everywhere = host in ("", "*")
    if everywhere and not public:
        raise ServeError(
            f"--host {host or '*'} listens on every interface and the page has no "
            "authentication: anyone who reaches it sees your usage and can type into the "
            "screen; add --public to do it anyway"
        )
    if is_loopback(host):
        return None
    return (
        f"warning: the screen on {host} has no authentication: anyone who can reach it sees "
        "your usage and can type into the screen (put it behind a proxy that authenticates, "
        "or an SSH tunnel)"
    )


def app_command(passed: list[str]) -> str:
    """The shell command each browser tab runs: this Python, this package, the flags given."""
    return shlex.join([sys.executable, "-m", "monitor", *passed])


def make_server(command: str, host: str, port: int) -> Any:
    """A textual-serve server whose page is built from the address the browser used, so the
    same server works on loopback, a LAN address or behind a proxy, and loads nothing from the
    internet."""
    try:
        import aiohttp_jinja2
        from textual_serve.server import Server
    except ImportError:
        raise ServeError(f"bedrock-top serve needs textual-serve: {INSTALL_HINT}") from None
    from aiohttp import web

    class ScreenServer(Server):
        async def on_startup(self, app: web.Application) -> None:
            """Said by serve_main instead (with the address actually bound)."""

        async def handle_index(self, request: web.Request) -> web.Response:
            origin = f"{request.scheme}://{request.host}"
            websocket_scheme = "wss" if request.scheme == "https" else "ws"
            static = f"{origin}/static/"
            context = {
                "font_size": _font_size(request.query.get("fontsize", "16")),
                "app_websocket_url": f"{websocket_scheme}://{request.host}/ws",
                "config": {"static": {"url": static}},
                "application": {"name": self.title},
                "ping_url": "",
            }
            response: web.Response = aiohttp_jinja2.render_template(
                "app_index.html", request, context
            )
            page = _WEB_FONT_LINK.sub(LOCAL_FONT.replace("{static}", static), response.text or "")
            return web.Response(text=page, content_type="text/html")

    return ScreenServer(command, host=host, port=port, title="bedrock-top")


def _font_size(text: str) -> int:
    return int(text) if text.isdigit() and 6 <= int(text) <= 64 else 16


async def run_server(
    server: Any, host: str, port: int, stop: asyncio.Event, ready: Any = None
) -> None:
    """Serve until ``stop`` is set. Raises ServeError when the address cannot be bound."""
    from aiohttp import web

    runner = web.AppRunner(await server._make_app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        where = f"{host}:{port}"
        if err.errno == errno.EADDRINUSE:
            raise ServeError(f"--port {port}: {where} is already in use; pick another") from None
        if err.errno == errno.EACCES:
            raise ServeError(
                f"--port {port}: not allowed to bind {where} (ports below 1024 need "
                "privileges); pick a port above 1023"
            ) from None
        raise ServeError(f"cannot listen on {where}: {err.strerror or err}") from None
    try:
        bound = runner.addresses
        shown = host if ":" not in host else f"[{host}]"
        actual = bound[0][1] if bound else port
        print(
            f"bedrock-top: serving the screen on http://{shown}:{actual}/ (ctrl+c to stop)",
            file=sys.stderr,
            flush=True,
        )
        if ready is not None:
            ready(actual)
        await stop.wait()
    finally:
        await runner.cleanup()


def serve_main(argv: list[str]) -> int:
    from monitor.cli import UsageError, parse_args
    from monitor.session import SessionError, load_effective_config

    try:
        own, passed = build_parser().parse_known_args(argv)
        if not 0 <= own.port <= 65535:
            raise UsageError(f"--port {own.port}: expected a port from 1 to 65535 (0 picks one)")
        # The flags for the screen are checked here, so that a mistake is said once, now, and
        # not in every browser tab.
        screen_args = parse_args(passed)
        if screen_args.once or screen_args.list_themes:
            raise UsageError("serve shows the live screen; --once and --list-themes do not apply")
        listen = parse_listen(own.prometheus) if own.prometheus is not None else None
        warning = check_host(own.host, own.public)
        # So is the configuration file: a tab would otherwise just end.
        load_effective_config(screen_args)
    except (UsageError, ValueError, ServeError, SessionError) as err:
        print(f"bedrock-top serve: {err}", file=sys.stderr)
        return 2
    if warning:
        print(f"bedrock-top serve: {warning}", file=sys.stderr)
    try:
        server = make_server(app_command(passed), own.host, own.port)
    except ServeError as err:
        print(f"bedrock-top serve: {err}", file=sys.stderr)
        return 2
    screen_args.prometheus = listen
    return asyncio.run(_serve(server, own.host, own.port, screen_args))


async def _serve(server: Any, host: str, port: int, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    tasks = [asyncio.create_task(run_server(server, host, port, stop))]
    session = None
    if args.prometheus is not None:
        from monitor.exporter import listen_address, run_headless
        from monitor.session import SessionError, open_session

        try:
            session = open_session(args, live=True)
        except SessionError as err:
            print(f"bedrock-top: {err}", file=sys.stderr)
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            return 2
        address = listen_address(session)
        assert address is not None
        tasks.append(asyncio.create_task(run_headless(session, args, address, stop)))
    status = 0
    try:
        for finished in asyncio.as_completed(tasks):
            try:
                await finished
            except (ServeError, ExportError) as err:
                print(f"bedrock-top serve: {err}", file=sys.stderr)
                status = 2
                stop.set()
    finally:
        if session is not None:
            session.close()
    return status
