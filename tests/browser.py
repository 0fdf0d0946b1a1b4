"""Headless Chromium (Debian's package) driven over the Chrome DevTools protocol with aiohttp's
websocket client: no browser download, no driver binary.

The browser runs with name resolution off for every host but 127.0.0.1, so a page that needed the
internet would show it: its requests fail, and :attr:`Page.requests` lists every URL asked for.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
    # No network: every name but 127.0.0.1 fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)

# textual.js keeps its xterm.js terminal in a closure; a setter on Object.prototype catches the
# constructor's `this.terminal = new Terminal(...)` so that the test can read the buffer the page
# draws (the WebGL/canvas renderers leave no text in the DOM).
CAPTURE_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true});
    if (value && value.buffer) { (window.__terminals = window.__terminals || []).push(value); }
  },
});
"""
SCREEN_TEXT = """
(() => {
  const term = (window.__terminals || [])[0];
  if (!term) return "";
  const buffer = term.buffer.active, lines = [];
  for (let y = 0; y < term.rows; y++) {
    const line = buffer.getLine(buffer.viewportY + y);
    lines.push(line ? line.translateToString(true) : "");
  }
  return lines.join("\\n");
})()
"""


class Page:
    """One tab, attached through the browser's websocket (flat sessions)."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse, session_id: str) -> None:
        self.socket = socket
        self.session_id = session_id
        self.requests: list[str] = []
        self.websockets: list[str] = []
        self.failed: list[str] = []
        self._ids = itertools.count(1000)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.socket:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif method == "Network.webSocketCreated":
                self.websockets.append(params["url"])
            elif method == "Network.loadingFailed":
                self.failed.append(params.get("errorText", ""))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self.socket.send_str(
            json.dumps(
                {"id": ident, "method": method, "params": params, "sessionId": self.session_id}
            )
        )
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def screen_text(self) -> str:
        return str(await self.evaluate(SCREEN_TEXT) or "")

    async def wait_for_text(self, check: Any, timeout: float = 60.0) -> str:
        """Poll the terminal buffer until ``check(text)`` holds (a loaded machine is slow)."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = await self.screen_text()
            if check(text):
                return text
            await asyncio.sleep(0.25)
        raise AssertionError(f"the page never showed what was expected; it showed:\n{text}")

    async def type_text(self, text: str) -> None:
        """Type into the terminal (focused first, as a click would)."""
        await self.evaluate("(window.__terminals || [])[0]?.focus()")
        await self.send("Input.insertText", text=text)

    async def press(self, key: str, code: str, key_code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.send(
                "Input.dispatchKeyEvent",
                type=kind,
                key=key,
                code=code,
                windowsVirtualKeyCode=key_code,
            )

    async def screenshot(self, path: Path) -> bytes:
        result = await self.send("Page.captureScreenshot", format="png")
        data = base64.b64decode(result["data"])
        path.write_bytes(data)
        return data


@asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """Start headless Chromium with a new empty profile; yields the browser's CDP websocket."""
    assert CHROMIUM is not None
    profile.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("Chromium did not start its DevTools endpoint")
            await asyncio.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        async with (
            aiohttp.ClientSession() as client,
            client.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0) as socket,
        ):
            yield socket
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def open_page(socket: aiohttp.ClientWebSocketResponse, url: str) -> Page:
    """A new tab with the terminal capture installed and the network watched, at ``url``."""
    ids = itertools.count(1)

    async def browser_call(method: str, **params: Any) -> dict[str, Any]:
        ident = next(ids)
        await socket.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = await asyncio.wait_for(socket.receive(), 30)
            data = json.loads(message.data)
            if data.get("id") == ident:
                return data["result"]

    target = await browser_call("Target.createTarget", url="about:blank")
    attached = await browser_call(
        "Target.attachToTarget", targetId=target["targetId"], flatten=True
    )
    page = Page(socket, attached["sessionId"])
    await page.send("Network.enable")
    await page.send("Page.enable")
    await page.send("Page.addScriptToEvaluateOnNewDocument", source=CAPTURE_TERMINAL)
    await page.send("Page.navigate", url=url)
    return page
