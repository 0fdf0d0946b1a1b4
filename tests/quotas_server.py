"""A local Service Quotas endpoint speaking the real wire protocol, for tests.

moto implements Service Quotas for ``vpc`` only, with no ``ListServiceQuotas``: this server
answers ``ListServiceQuotas`` and ``ListAWSDefaultServiceQuotas`` on ``127.0.0.1`` as AWS does,
in AWS JSON 1.1 (``POST /``, ``X-Amz-Target: ServiceQuotasV20190624.<Operation>``,
``Content-Type: application/x-amz-json-1.1``), paginated with ``NextToken`` and ``MaxResults``,
and can refuse with ``AccessDeniedException`` the way the service does. Quotas are regional:
``serve(..., region=...)`` gives one region its own list, told apart by the region the request
was signed for (the ``Credential`` scope of its ``Authorization`` header), as AWS does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TARGET_PREFIX = "ServiceQuotasV20190624."
APPLIED = "ListServiceQuotas"
DEFAULTS = "ListAWSDefaultServiceQuotas"


@dataclass(frozen=True)
class Quota:
    code: str
    name: str
    value: float


@dataclass
class _State:
    applied: list[Quota] = field(default_factory=list)
    defaults: list[Quota] = field(default_factory=list)
    denied: set[str] = field(default_factory=set)  # operations answered with AccessDenied
    page_size: int = 2  # small, so that every test paginates
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class QuotasServer:
    """Serve a list of quotas; tests set ``applied``, ``defaults`` and ``deny``."""

    def __init__(self) -> None:
        self.state = _State()
        self.regions: dict[str, _State] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> QuotasServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def serve(
        self,
        applied: Iterable[Quota] = (),
        defaults: Iterable[Quota] = (),
        deny: Iterable[str] = (),
        page_size: int = 2,
        region: str | None = None,
    ) -> None:
        """The quotas of ``region`` (None: of every region not served on its own)."""
        with self._lock:
            state = _State(list(applied), list(defaults), set(deny), page_size)
            if region is None:
                self.state = state
            else:
                self.regions[region] = state

    @property
    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self.state.requests)

    def requests_in(self, region: str) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self.regions[region].requests)

    def answer(
        self, operation: str, body: dict[str, Any], region: str = "us-east-1"
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            state = self.regions.get(region, self.state)
            state.requests.append((operation, body))
        if operation not in (APPLIED, DEFAULTS):
            return 400, {"__type": "UnknownOperationException", "message": operation}
        if operation in state.denied:
            return 400, {
                "__type": "AccessDeniedException",
                "Message": "User is not authorized to perform: servicequotas:" + operation,
            }
        if body.get("ServiceCode") != "bedrock":
            return 400, {"__type": "NoSuchResourceException", "Message": "no such service"}
        quotas = state.applied if operation == APPLIED else state.defaults
        size = min(int(body.get("MaxResults") or 100), state.page_size)
        start = int(body.get("NextToken") or 0)
        page = quotas[start : start + size]
        reply: dict[str, Any] = {
            "Quotas": [
                {
                    "ServiceCode": "bedrock",
                    "ServiceName": "Amazon Bedrock",
                    "QuotaArn": f"arn:aws:servicequotas:{region}::bedrock/{quota.code}",
                    "QuotaCode": quota.code,
                    "QuotaName": quota.name,
                    "Value": quota.value,
                    "Unit": "None",
                    "Adjustable": True,
                    "GlobalQuota": False,
                }
                for quota in page
            ]
        }
        if start + size < len(quotas):
            reply["NextToken"] = str(start + size)
        return 200, reply


def _handler_for(server: QuotasServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            target = self.headers.get("X-Amz-Target", "")
            operation = (
                target.removeprefix(TARGET_PREFIX) if target.startswith(TARGET_PREFIX) else ""
            )
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            # "AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/servicequotas/aws4_request, ..."
            scope = self.headers.get("Authorization", "").split("Credential=")[-1].split("/")
            region = scope[2] if len(scope) > 2 else "us-east-1"
            status, reply = server.answer(operation, body, region)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", "quotas-test")
            self.end_headers()
            self.wfile.write(data)

    return Handler
