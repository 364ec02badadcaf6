"""A stand-in Ollama for the `bot` mode: a tiny HTTP server on 127.0.0.1 that streams tokens at
a set pace and notes when it wrote each one.

No model server can run here (no GPU, no model weights, no network to fetch them), so this one
speaks Ollama's documented wire format instead, which is what the node's bot client reads:

- `POST /api/chat` with `"stream": true` (the default): `application/x-ndjson`, chunked, one
  JSON object a line, each `{"model", "created_at", "message": {"role": "assistant",
  "content": TOKEN}, "done": false}`, then a last line with empty content, `"done": true`,
  `"done_reason": "stop"` and the statistics (`total_duration`, `load_duration`,
  `prompt_eval_count`, `prompt_eval_duration`, `eval_count`, `eval_duration`, nanoseconds).
  With `"stream": false`, that last object alone with the whole answer. An unknown model is
  a 404 `{"error": "model \\"x\\" not found, try pulling it first"}` as Ollama says it.
- `GET /api/tags`: the one installed model. `GET /`: "Ollama is running".

Every token is unique and parseable (`t0 `, `t1 `, …) so a client can tell which tokens a text
holds. Each is written as soon as it is due (one send per token, TCP_NODELAY) and its
`time.monotonic_ns()` noted right after: CLOCK_MONOTONIC is one clock for every process on
Linux, so a client in another process can subtract it from its own arrival time.

The server runs its own asyncio loop in a daemon thread and stops by itself after `lifetime`
seconds if nobody stops it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import socket
import threading
import time
from typing import Any

HOST = "127.0.0.1"
MODEL = "llama3.2"


@dataclasses.dataclass
class Answer:
    """One `/api/chat` request as the server saw it, for the bench to match with arrivals."""

    received_ns: int  # request read in full
    emitted_ns: list[int] = dataclasses.field(default_factory=list)  # token i written at
    done_ns: int = 0  # the `done` line written at (0: the client left first)
    prompt_chars: int = 0


def token(i: int) -> str:
    """The i-th token of every answer."""
    return f"t{i} "


def _created_at() -> str:
    """RFC 3339 in UTC, as Ollama writes `created_at`."""
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


class ModelServer:
    """Streams `tokens` tokens at `rate` tokens a second per request (the first at once)."""

    def __init__(
        self, tokens: int = 60, rate: float = 30.0, model: str = MODEL, lifetime: float = 3600.0
    ) -> None:
        self.tokens = tokens
        self.rate = rate
        self.model = model
        self.lifetime = lifetime
        self.port = 0
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def answers(self) -> list[Answer]:
        with self._lock:
            return list(self._answers)

    # -- lifetime -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10.0):
            raise RuntimeError("the model server did not start")
        if self._error is not None:
            raise RuntimeError(f"the model server did not start: {self._error}")

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own meanwhile
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # for start() to raise; later ones end the thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, HOST, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.lifetime)
            server.close()
            # the node keeps connections open (keep-alive): close them, not wait for them
            for writer in list(self._writers):
                writer.close()
            await server.wait_closed()

    # -- HTTP/1.1, as much as the node's httpx client uses ---------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await _read_chunked(reader)
                await self._route(method, path.split("?", 1)[0], body, writer)
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _route(
        self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        if method == "GET" and path == "/api/tags":
            await _respond(writer, 200, self._tags())
        elif method in ("GET", "HEAD") and path == "/":
            await _respond(writer, 200, b"Ollama is running", "text/plain; charset=utf-8")
        elif path == "/api/chat" and method == "POST":
            await self._chat(body, writer)
        elif path in ("/api/tags", "/api/chat", "/"):
            await _respond(writer, 405, b"405 method not allowed", "text/plain")
        else:
            await _respond(writer, 404, b"404 page not found", "text/plain")

    def _known(self, name: str) -> bool:
        return name in (self.model, f"{self.model}:latest")

    def _tags(self) -> dict[str, Any]:
        name = f"{self.model}:latest"
        return {
            "models": [
                {
                    "name": name,
                    "model": name,
                    "modified_at": "2026-01-01T00:00:00Z",
                    "size": 2019393189,
                    "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "llama",
                        "families": ["llama"],
                        "parameter_size": "3.2B",
                        "quantization_level": "Q4_K_M",
                    },
                }
            ]
        }

    async def _chat(self, body: bytes, writer: asyncio.StreamWriter) -> None:
        received = time.monotonic_ns()
        try:
            request = json.loads(body)
            model = request["model"]
            messages = request.get("messages") or []
        except (ValueError, KeyError, TypeError):
            await _respond(writer, 400, {"error": "invalid request body"})
            return
        if not self._known(model):
            error = {"error": f'model "{model}" not found, try pulling it first'}
            await _respond(writer, 404, error)
            return
        answer = Answer(
            received_ns=received,
            prompt_chars=sum(len(str(m.get("content", ""))) for m in messages),
        )
        with self._lock:
            self._answers.append(answer)
        if request.get("stream", True) is False:
            await asyncio.sleep(self.tokens / self.rate)
            whole = "".join(token(i) for i in range(self.tokens))
            now = time.monotonic_ns()
            answer.emitted_ns = [now] * self.tokens
            answer.done_ns = now
            await _respond(writer, 200, self._final(answer, whole, received, now))
            return

        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
            + f"Date: {_http_date()}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        start = time.monotonic()
        for i in range(self.tokens):
            delay = start + i / self.rate - time.monotonic()  # on schedule, never drifting
            if delay > 0:
                await asyncio.sleep(delay)
            line = {
                "model": model,
                "created_at": _created_at(),
                "message": {"role": "assistant", "content": token(i)},
                "done": False,
            }
            writer.write(_chunk(line))  # sent now: the buffer is empty, TCP_NODELAY is on
            answer.emitted_ns.append(time.monotonic_ns())
            await writer.drain()
        now = time.monotonic_ns()
        writer.write(_chunk(self._final(answer, "", received, now)) + b"0\r\n\r\n")
        answer.done_ns = time.monotonic_ns()
        await writer.drain()

    def _final(self, answer: Answer, content: str, received: int, now: int) -> dict[str, Any]:
        first = answer.emitted_ns[0] if answer.emitted_ns else now
        return {
            "model": self.model,
            "created_at": _created_at(),
            "message": {"role": "assistant", "content": content},
            "done_reason": "stop",
            "done": True,
            "total_duration": now - received,
            "load_duration": 0,
            "prompt_eval_count": max(1, answer.prompt_chars // 4),
            "prompt_eval_duration": first - received,
            "eval_count": len(answer.emitted_ns),
            "eval_duration": now - first,
        }


def _chunk(obj: dict[str, Any]) -> bytes:
    """One NDJSON line as one HTTP chunk."""
    line = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
    return f"{len(line):x}\r\n".encode() + line + b"\r\n"


def _http_date() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: dict[str, Any] | bytes,
    content_type: str = "application/json; charset=utf-8",
) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
    writer.write(
        f"HTTP/1.1 {status} {reason.get(status, '')}\r\nContent-Type: {content_type}\r\n"
        f"Date: {_http_date()}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    await writer.drain()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)
