"""bedrock-top serve: the real server, the real screen it spawns per tab, headless Chromium with no
network, a key typed into the page."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.serve import LOCAL_FONT, check_host, make_server
from tests.browser import CHROMIUM, chromium, open_page

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
SERVING = re.compile(r"serving the screen on (http://\S+/)")


class Served:
    def __init__(self, process: subprocess.Popen[bytes], stderr: Path) -> None:
        self.process = process
        self.stderr = stderr

    def wait_for_url(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = SERVING.search(self.stderr.read_text())
            if found:
                return found.group(1)
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"serve did not start: {self.stderr.read_text()}")


def start_serve(tmp_path: Path, *args: str) -> Served:
    stderr = tmp_path / "serve.stderr"
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor", "serve", *args],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
        )
    return Served(process, stderr)


@pytest.fixture
def served_demo(tmp_path: Path) -> Iterator[Served]:
    served = start_serve(tmp_path, "--port", "0", "--demo", "--demo-seed", "3")
    try:
        yield served
    finally:
        served.process.terminate()
        try:
            served.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()


@needs_chromium
async def test_page_shows_the_demo_and_takes_keys_with_no_network(
    served_demo: Served, tmp_path: Path
) -> None:
    url = served_demo.wait_for_url()
    origin = url.rstrip("/")
    async with chromium(tmp_path / "profile") as browser:
        page = await open_page(browser, url)
        text = await page.wait_for_text(lambda t: "nova-lite" in t and "claude" in t)
        assert "bedrock-top" in text
        # "/" opens the filter; typing narrows the overview to the models that match.
        await page.type_text("/")
        await page.wait_for_text(lambda t: "filter models (enter" in t)
        for letter in "nova":
            await page.type_text(letter)
        text = await page.wait_for_text(
            lambda t: "nova-lite" in t and "nova-pro" in t and "claude" not in t
        )
        assert "llama" not in text
        shot = await page.screenshot(tmp_path / "served.png")
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
        # Everything the page loaded came from the local server, and the screen's websocket
        # worked with name resolution off for every other host.
        assert page.requests, "the page made no requests"
        outside = [u for u in page.requests if not u.startswith((origin, "data:", "about:"))]
        assert outside == []
        assert any(u.endswith("/static/js/textual.js") for u in page.requests)
        assert page.websockets and all(
            u.startswith(origin.replace("http", "ws", 1)) for u in page.websockets
        )


def test_every_interface_needs_public(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "serve", "--host", "0.0.0.0", "--demo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--public" in result.stderr and "no authentication" in result.stderr


def test_host_warnings() -> None:
    assert check_host("127.0.0.1", public=False) is None
    assert check_host("::1", public=False) is None
    assert check_host("localhost", public=False) is None
    warning = check_host("192.168.1.20", public=False)
    assert warning is not None and "no authentication" in warning
    public = check_host("0.0.0.0", public=True)
    assert public is not None and "no authentication" in public


def test_bad_screen_flags_are_said_at_once(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "serve", "--interval", "500"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--interval" in result.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "monitor", "serve", "--port", str(port), "--demo"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"--port {port}" in result.stderr and "already in use" in result.stderr


async def test_index_page_links_nothing_outside(aiohttp_free_port: int) -> None:
    """The page as served: every URL in it is the address the browser used."""
    import asyncio

    import aiohttp

    from monitor.serve import run_server

    server = make_server("true", "127.0.0.1", aiohttp_free_port)
    stop = asyncio.Event()
    ports: list[int] = []
    task = asyncio.create_task(
        run_server(server, "127.0.0.1", aiohttp_free_port, stop, ready=ports.append)
    )
    try:
        for _ in range(200):
            if ports:
                break
            await asyncio.sleep(0.05)
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://127.0.0.1:{ports[0]}/") as response,
        ):
            page = await response.text()
    finally:
        stop.set()
        await task
    urls = re.findall(r"""(?:href|src|url)\s*[=(]\s*["']?([a-z]+://[^"')\s]+)""", page)
    assert urls, page
    assert all(
        u.startswith((f"http://127.0.0.1:{ports[0]}/", f"ws://127.0.0.1:{ports[0]}/")) for u in urls
    )
    assert "googleapis" not in page
    assert LOCAL_FONT.split("{static}")[0] in page


@pytest.fixture
def aiohttp_free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_with_prometheus_runs_one_exporter_in_the_server(tmp_path: Path) -> None:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    served = start_serve(tmp_path, "--port", "0", "--prometheus", "0", "--demo")
    try:
        served.wait_for_url()
        deadline = time.monotonic() + 60
        while not (
            found := re.search(r"metrics on (http://\S+/metrics)", served.stderr.read_text())
        ):
            assert time.monotonic() < deadline and served.process.poll() is None, (
                served.stderr.read_text()
            )
            time.sleep(0.1)
        with urllib.request.urlopen(found.group(1), timeout=30) as response:
            families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
        requests = families["bedrock_top_requests"].samples
        assert {s.labels["source"] for s in requests} == {"local"}
        assert sum(s.value for s in requests if s.name.endswith("_total")) > 0
    finally:
        served.process.terminate()
        assert served.process.wait(timeout=20) == 0


def test_without_the_web_extra_serve_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from monitor.serve import ServeError

    monkeypatch.setitem(sys.modules, "textual_serve.server", None)
    with pytest.raises(ServeError, match=r"pip install 'bedrock-top\[web\]'"):
        make_server("true", "127.0.0.1", 8000)


def test_without_the_export_extra_prometheus_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from monitor.exporter import ExportError, ListenAddress, MetricsEndpoint

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    endpoint = MetricsEndpoint(ListenAddress("127.0.0.1", 0), lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ExportError, match=r"pip install 'bedrock-top\[export\]'"):
        endpoint.start()


def test_a_broken_configuration_is_said_before_serving(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[ui]\nrefresh_s = 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "serve", "--port", "0", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert str(config) in result.stderr and "ui.refresh_s" in result.stderr
