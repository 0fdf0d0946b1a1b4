"""moto's server in a process of its own, for each test module that needs one.

moto keeps its backends in module globals, so two ``ThreadedMotoServer`` instances in one
process share every account's data: under pytest-xdist a test would see what another module
seeded. A server process per module keeps each module's AWS its own. Same interface as
``ThreadedMotoServer``: ``start()``, ``get_host_and_port()``, ``stop()``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator


class MotoServer:
    def __init__(self, ip_address: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> None:
        self.host = ip_address
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        for _attempt in range(5):
            port = self.port or _free_port(self.host)
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    with urllib.request.urlopen(
                        f"http://{self.host}:{port}/moto-api/data.json", timeout=2
                    ):
                        self.port, self._process = port, process
                        return
                except OSError:
                    time.sleep(0.1)
            process.kill()
            process.wait()
            if self.port:  # a port asked for by name is not chosen again
                break
        raise RuntimeError(f"moto's server did not start on {self.host}")

    def get_host_and_port(self) -> tuple[str, int]:
        return self.host, self.port

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def moto_url_of_module() -> Iterator[str]:
    """The body of a module's ``moto_url`` fixture: a server process of the module's own, its
    URL, and the process stopped after the module's last test."""
    server = MotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def reset_moto(url: str) -> None:
    """Forget everything seeded so far (moto's own reset endpoint), so a test starts clean."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
