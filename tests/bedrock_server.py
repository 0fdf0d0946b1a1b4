"""A local bedrock-runtime endpoint speaking Bedrock's wire format, for tests and benchmarks.

It answers InvokeModel, InvokeModelWithResponseStream, Converse and ConverseStream on
``127.0.0.1`` (port chosen by the system) the way the real service does: JSON bodies, the
``x-amzn-bedrock-*`` token headers, ``x-amzn-RequestId``, Converse ``usage``/``metrics``, and
``application/vnd.amazon.eventstream`` frames for the streaming operations, including exception
events mid-stream; errors come as REST-JSON error responses with ``x-amzn-ErrorType``.

Tests script the reply of each request with :meth:`BedrockServer.script`; without a script each
operation has a default reply. Frames are encoded here (botocore only ships a decoder).
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

ACTIONS = {
    "invoke": "InvokeModel",
    "invoke-with-response-stream": "InvokeModelWithResponseStream",
    "converse": "Converse",
    "converse-stream": "ConverseStream",
}

EVENTSTREAM = "application/vnd.amazon.eventstream"
# Bedrock pads stream events with a "p" field of variable length so that sizes leak nothing.
PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"


# -- event-stream frames -----------------------------------------------------------------------


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One ``application/vnd.amazon.eventstream`` message: prelude (total length, headers
    length, CRC32), string-typed headers, payload, CRC32 of everything before it."""
    encoded_headers = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded_headers += struct.pack(">B", len(raw_name)) + raw_name
        encoded_headers += struct.pack(">BH", 7, len(raw_value)) + raw_value
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded_headers))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + encoded_headers + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    body = dict(payload, p=PADDING[: 1 + len(event_type) % 20])
    return encode_frame(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        json.dumps(body).encode(),
    )


def exception_frame(exception_type: str, message: str, **extra: Any) -> bytes:
    return encode_frame(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps({"message": message, **extra}).encode(),
    )


def chunk_frame(model_chunk: dict[str, Any]) -> bytes:
    """An InvokeModelWithResponseStream ``chunk`` event: the model's JSON, base64 in ``bytes``."""
    data = base64.b64encode(json.dumps(model_chunk).encode()).decode()
    return event_frame("chunk", {"bytes": data})


# -- replies -----------------------------------------------------------------------------------


@dataclass
class Reply:
    """One scripted HTTP response. ``frames`` makes it a stream: each item is an encoded frame,
    or a number of seconds to pause before the next one."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    frames: list[bytes | float] | None = None
    delay: float = 0.0
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def _usage_headers(
    input_tokens: int | None,
    output_tokens: int | None,
    cache_read: int | None,
    cache_write: int | None,
    latency_ms: int,
) -> dict[str, str]:
    headers = {"X-Amzn-Bedrock-Invocation-Latency": str(latency_ms)}
    if input_tokens is not None:
        headers["X-Amzn-Bedrock-Input-Token-Count"] = str(input_tokens)
    if output_tokens is not None:
        headers["X-Amzn-Bedrock-Output-Token-Count"] = str(output_tokens)
    if cache_read is not None:
        headers["X-Amzn-Bedrock-Cache-Read-Input-Token-Count"] = str(cache_read)
    if cache_write is not None:
        headers["X-Amzn-Bedrock-Cache-Write-Input-Token-Count"] = str(cache_write)
    return headers


def anthropic_message(
    text: str, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
) -> dict[str, Any]:
    return {
        "id": "msg_bdrk_01" + uuid.uuid4().hex[:20],
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "output_tokens": output_tokens,
        },
    }


def invoke_reply(
    doc: dict[str, Any] | None = None,
    *,
    input_tokens: int | None = 11,
    output_tokens: int | None = 7,
    cache_read: int | None = None,
    cache_write: int | None = None,
    latency_ms: int = 120,
    token_headers: bool = True,
    request_id: str | None = None,
) -> Reply:
    """InvokeModel: the model's JSON body, with the token-count headers unless
    ``token_headers=False`` (then counts are only where the body has them)."""
    if doc is None:
        doc = anthropic_message(
            "Hello from the local model.",
            input_tokens or 0,
            output_tokens or 0,
            cache_read or 0,
            cache_write or 0,
        )
    headers = {"Content-Type": "application/json"}
    if token_headers:
        headers.update(
            _usage_headers(input_tokens, output_tokens, cache_read, cache_write, latency_ms)
        )
    reply = Reply(headers=headers, body=json.dumps(doc).encode())
    if request_id:
        reply.request_id = request_id
    return reply


def converse_reply(
    text: str = "Hello from the local model.",
    *,
    input_tokens: int = 13,
    output_tokens: int = 5,
    cache_read: int | None = None,
    cache_write: int | None = None,
    latency_ms: int = 95,
    usage: bool = True,
    request_id: str | None = None,
) -> Reply:
    doc: dict[str, Any] = {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": "end_turn",
        "metrics": {"latencyMs": latency_ms},
    }
    if usage:
        doc["usage"] = _converse_usage(input_tokens, output_tokens, cache_read, cache_write)
    reply = Reply(headers={"Content-Type": "application/json"}, body=json.dumps(doc).encode())
    if request_id:
        reply.request_id = request_id
    return reply


def _converse_usage(
    input_tokens: int, output_tokens: int, cache_read: int | None, cache_write: int | None
) -> dict[str, int]:
    usage = {
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "totalTokens": input_tokens + output_tokens + (cache_read or 0) + (cache_write or 0),
    }
    if cache_read is not None:
        usage["cacheReadInputTokens"] = cache_read
    if cache_write is not None:
        usage["cacheWriteInputTokens"] = cache_write
    return usage


def converse_stream_reply(
    texts: tuple[str, ...] = ("Hello", " from", " the", " local", " model."),
    *,
    input_tokens: int = 17,
    output_tokens: int = 6,
    cache_read: int | None = None,
    cache_write: int | None = None,
    latency_ms: int = 210,
    first_delay: float = 0.0,
    metadata: bool = True,
    fail_after: int | None = None,
    exception_type: str = "modelStreamErrorException",
) -> Reply:
    """ConverseStream: messageStart, one contentBlockDelta per text, contentBlockStop,
    messageStop, metadata. ``fail_after=n`` sends an exception event after n deltas instead."""
    frames: list[bytes | float] = [event_frame("messageStart", {"role": "assistant"})]
    if first_delay:
        frames.append(first_delay)
    for index, text in enumerate(texts):
        if fail_after is not None and index == fail_after:
            frames.append(exception_frame(exception_type, "The model stopped unexpectedly."))
            return Reply(headers={"Content-Type": EVENTSTREAM}, frames=frames)
        frames.append(
            event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}})
        )
    frames.append(event_frame("contentBlockStop", {"contentBlockIndex": 0}))
    frames.append(event_frame("messageStop", {"stopReason": "end_turn"}))
    if metadata:
        frames.append(
            event_frame(
                "metadata",
                {
                    "usage": _converse_usage(input_tokens, output_tokens, cache_read, cache_write),
                    "metrics": {"latencyMs": latency_ms},
                },
            )
        )
    return Reply(headers={"Content-Type": EVENTSTREAM}, frames=frames)


def anthropic_stream_chunks(
    texts: tuple[str, ...], input_tokens: int, output_tokens: int, cache_read: int, cache_write: int
) -> list[dict[str, Any]]:
    """The Anthropic Messages stream as Bedrock wraps it in chunks (usage in message_start, a
    cumulative output count in message_delta)."""
    chunks: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_bdrk_01" + uuid.uuid4().hex[:20],
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-sonnet-4-5-20250929",
                "stop_reason": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": cache_write,
                    "cache_read_input_tokens": cache_read,
                    "output_tokens": 1,
                },
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ]
    for text in texts:
        chunks.append(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            }
        )
    chunks.append({"type": "content_block_stop", "index": 0})
    chunks.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        }
    )
    chunks.append({"type": "message_stop"})
    return chunks


def invoke_stream_reply(
    texts: tuple[str, ...] = ("Hello", " from", " the", " model."),
    *,
    input_tokens: int = 19,
    output_tokens: int = 8,
    cache_read: int = 0,
    cache_write: int = 0,
    invocation_metrics: bool = True,
    chunks: list[dict[str, Any]] | None = None,
    first_delay: float = 0.0,
    fail_after: int | None = None,
    exception_type: str = "modelStreamErrorException",
) -> Reply:
    """InvokeModelWithResponseStream. By default an Anthropic stream whose last chunk carries
    ``amazon-bedrock-invocationMetrics``; ``chunks`` replaces the model chunks (other providers).
    ``fail_after=n`` sends an exception event after n chunks."""
    if chunks is None:
        chunks = anthropic_stream_chunks(
            texts, input_tokens, output_tokens, cache_read, cache_write
        )
    chunks = [dict(chunk) for chunk in chunks]
    if invocation_metrics:
        metrics: dict[str, int] = {
            "inputTokenCount": input_tokens,
            "outputTokenCount": output_tokens,
            "invocationLatency": 230,
            "firstByteLatency": 80,
        }
        if cache_read:
            metrics["cacheReadInputTokenCount"] = cache_read
        if cache_write:
            metrics["cacheWriteInputTokenCount"] = cache_write
        chunks[-1]["amazon-bedrock-invocationMetrics"] = metrics
    frames: list[bytes | float] = []
    for index, chunk in enumerate(chunks):
        if fail_after is not None and index == fail_after:
            frames.append(exception_frame(exception_type, "The model stopped unexpectedly."))
            break
        if index == 1 and first_delay:
            frames.append(first_delay)
        frames.append(chunk_frame(chunk))
    return Reply(
        headers={"Content-Type": EVENTSTREAM, "X-Amzn-Bedrock-Content-Type": "application/json"},
        frames=frames,
    )


def error_reply(status: int, code: str, message: str = "request failed") -> Reply:
    """A REST-JSON error, the way Bedrock sends them (botocore reads the code from the header)."""
    return Reply(
        status=status,
        headers={
            "Content-Type": "application/json",
            "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        },
        body=json.dumps({"message": message}).encode(),
    )


def throttle_reply() -> Reply:
    return error_reply(
        429, "ThrottlingException", "Too many requests, please wait before trying again."
    )


DEFAULT_REPLIES = {
    "InvokeModel": invoke_reply,
    "Converse": converse_reply,
    "ConverseStream": converse_stream_reply,
    "InvokeModelWithResponseStream": invoke_stream_reply,
}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops a stream midway resets the connection: expected in these tests.
        pass


# -- the server --------------------------------------------------------------------------------


@dataclass
class SeenRequest:
    operation: str
    model_id: str
    headers: dict[str, str]
    body: bytes


class BedrockServer:
    """``with BedrockServer() as server: boto3.client(..., endpoint_url=server.endpoint_url)``."""

    def __init__(self, keep_requests: int = 1000) -> None:
        self._replies: collections.deque[Reply] = collections.deque()
        self._lock = threading.Lock()
        self.requests: collections.deque[SeenRequest] = collections.deque(maxlen=keep_requests)
        self.replies_sent: list[Reply] = []
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> BedrockServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> BedrockServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, *replies: Reply) -> list[Reply]:
        """Queue the replies of the next requests, in order."""
        with self._lock:
            self._replies.extend(replies)
        return list(replies)

    def reset(self) -> None:
        with self._lock:
            self._replies.clear()
            self.requests.clear()
            self.replies_sent.clear()

    def next_reply(self, operation: str) -> Reply:
        with self._lock:
            if self._replies:
                return self._replies.popleft()
        return DEFAULT_REPLIES[operation]()


def _handler_for(server: BedrockServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as separate writes: without this, Nagle plus delayed ACKs
        # add 40 ms to every response.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = self.path.split("?")[0].split("/")
            # /model/{modelId}/{action}: the id is percent-encoded (ARNs contain "/" and ":").
            if len(parts) != 4 or parts[1] != "model" or parts[3] not in ACTIONS:
                self._send(error_reply(404, "UnknownOperationException", self.path))
                return
            operation = ACTIONS[parts[3]]
            server.requests.append(
                SeenRequest(operation, unquote(parts[2]), dict(self.headers), body)
            )
            reply = server.next_reply(operation)
            server.replies_sent.append(reply)
            if reply.delay:
                time.sleep(reply.delay)
            self._send(reply)

        def _send(self, reply: Reply) -> None:
            self.send_response(reply.status)
            self.send_header("x-amzn-RequestId", reply.request_id)
            self.send_header("Date", self.date_time_string())
            for name, value in reply.headers.items():
                self.send_header(name, value)
            try:
                if reply.frames is None:
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                for frame in reply.frames:
                    if isinstance(frame, float):
                        time.sleep(frame)
                        continue
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler


# -- helpers for tests -------------------------------------------------------------------------

# Dummy credentials and no shared config, so that botocore never looks anywhere else.
TEST_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDBEDROCKTOPTEST00",
    "AWS_SECRET_ACCESS_KEY": "bedrock-top-test-secret-key-never-logged",
    "AWS_SESSION_TOKEN": "bedrock-top-test-session-token",
    "AWS_DEFAULT_REGION": "us-west-2",
    "AWS_CONFIG_FILE": "/nonexistent/bedrock-top/config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/bedrock-top/credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def read_records(path: Any) -> list[Any]:
    """Every line of a usage log, each parsed by the one record parser (raises on a bad line)."""
    from monitor.records import parse_line

    with open(path, "rb") as handle:
        return [parse_line(line) for line in handle if line.strip()]
