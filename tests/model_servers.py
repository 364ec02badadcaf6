"""Small local model servers that speak each provider's documented wire format exactly.

No model server can run here (no weights, no GPU, no network), so these servers imitate the wire
formats, not the models: the same paths, headers, status codes, error bodies, NDJSON lines and
SSE events as Ollama's native API (docs/api.md, docs/api/errors), OpenAI's chat completions
streaming and Anthropic's Messages streaming document, while the "answer" is whatever `tokens`
says. They can also be slow, hold mid-stream, fail mid-stream with the provider's documented error,
send something unreadable, cut the connection, refuse an API key or lack the model.

Each server is a real HTTP/1.1 server on 127.0.0.1 (a free port), written on asyncio streams
rather than uvicorn so that it controls every byte: a cut is a socket closed in the middle of a
chunked body, with no final line. It runs in a thread with its own event loop, so one works from
any test, sync or async, and from a node running in another process.
"""

from __future__ import annotations

import asyncio
import datetime
import http
import json
import secrets
import socket
import threading
import time
from typing import Any

DEFAULT_TOKENS = ("Why ", "did ", "the ", "onion ", "cry?")
_JSON = "application/json"


def closed_port() -> int:
    """A free loopback port that nothing listens on: a model server that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _now() -> str:
    """Ollama's created_at: RFC 3339 with nanoseconds."""
    stamp = datetime.datetime.now(datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def _dumps(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


class _Request:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """One HTTP/1.1 request: request line, headers, a Content-Length body."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return _Request(method, target.split("?", 1)[0], headers, body)


class _Stop(Exception):
    """The stream ends here (an error was sent, the connection was cut, the client left)."""


class _Response:
    """Writes one response on a connection; streamed bodies go out as HTTP/1.1 chunks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        # drain() then waits until everything written has reached the kernel: a cut after
        # a chunk never loses that chunk.
        writer.transport.set_write_buffer_limits(high=0)

    async def full(self, status: int, body: bytes, content_type: str = _JSON) -> None:
        self._head(status, content_type, f"Content-Length: {len(body)}")
        self.writer.write(body)
        await self.writer.drain()

    async def start(self, content_type: str) -> None:
        self._head(200, content_type, "Transfer-Encoding: chunked")
        await self.writer.drain()

    async def chunk(self, data: bytes) -> None:
        if self.reader.at_eof():
            raise _Stop("the client left")
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def end(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    def _head(self, status: int, content_type: str, length: str) -> None:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "Overloaded"  # Anthropic's 529
        head = (
            f"HTTP/1.1 {status} {phrase}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"{length}\r\n"
            "Connection: close\r\n\r\n"
        )
        self.writer.write(head.encode())


class ModelServer:
    """One model server of the given provider, serving `model`, wanting `api_key` if set.

    Behaviour is plain attributes, read at each request, so a test may change them between
    requests: `tokens`, `delay` (before each chunk), `first_delay` (before the first one; for
    Ollama before the response headers, as a model loading), `fail_after`, `cut_after`,
    `garble_after`, `hold_after` (chunks sent before the documented mid-stream error, an abrupt
    close, an unreadable line, or a pause until `release()`), `error_status` (answer every chat
    request with the provider's documented error for that status; `error_message` replaces its
    text), `installed`.
    """

    def __init__(self, provider: str, model: str = "llama3.2", api_key: str = "") -> None:
        if provider not in ("ollama", "openai", "anthropic"):
            raise ValueError(f"unknown provider {provider!r}")
        self.provider = provider
        self.model = model
        self.api_key = api_key
        self.tokens: list[str] = list(DEFAULT_TOKENS)
        self.delay = 0.0
        self.first_delay = 0.0
        self.fail_after: int | None = None
        self.cut_after: int | None = None
        self.garble_after: int | None = None
        self.hold_after: int | None = None
        self.error_status: int | None = None
        self.error_message = ""  # instead of the documented example text, when set
        self.installed = True
        self.url = ""
        self.host = "127.0.0.1"  # a container's own network for tests/test_compose.py
        self.port = 0
        self.requests: list[dict[str, Any]] = []  # every chat request body, in order
        self.headers: list[dict[str, str]] = []  # their headers (lower-case names)
        self.paths: list[str] = []  # every request's "METHOD /path", chat or not, in order
        self.holding = threading.Event()  # set while a stream waits for release()
        self.abandoned = 0  # streams the client left before their end
        self._chunks = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- the test's side ----------------------------------------------------------------------

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"{self.provider} server", daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the model server did not start")
        self.url = f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        if self._loop is None or self._thread is None or self._stopped is None:
            return
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)

    def release(self) -> None:
        """Lets a stream held by `hold_after` go on."""
        self.hold_after = None

    def served_chunks(self) -> int:
        """Text chunks written so far, over all requests."""
        with self._lock:
            return self._chunks

    # -- the server's thread ------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._connection, self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        await self._stopped.wait()
        server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()
        await asyncio.sleep(0.01)  # let the closed transports finish closing

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            request = await _read_request(reader)
            if request is not None:
                await self._route(request, _Response(reader, writer))
        except (_Stop, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _route(self, request: _Request, out: _Response) -> None:
        chat = {
            "ollama": "/api/chat",
            "openai": "/v1/chat/completions",
            "anthropic": "/v1/messages",
        }[self.provider]
        self.paths.append(f"{request.method} {request.path}")
        if request.method == "POST" and request.path == chat:
            await self._chat(request, out)
        elif request.method == "GET" and self.provider == "ollama" and request.path == "/":
            await out.full(200, b"Ollama is running", "text/plain; charset=utf-8")
        elif request.method == "GET" and request.path in ("/api/tags", "/v1/models"):
            await self._models(request, out)
        elif request.method == "GET" and request.path.startswith("/v1/models/"):
            await self._model(request, out, request.path.removeprefix("/v1/models/"))
        else:
            await self._not_found_url(request, out)

    # -- what each provider answers -----------------------------------------------------------

    def _refused(self, request: _Request) -> tuple[int, dict[str, Any]] | None:
        """The provider's documented answer to a missing or wrong API key, if it is one."""
        if self.provider == "anthropic" and "anthropic-version" not in request.headers:
            return 400, self._anthropic_error(
                "invalid_request_error", "anthropic-version: header is required"
            )
        if not self.api_key:
            return None
        if self.provider == "anthropic":
            given = request.headers.get("x-api-key")
            if given == self.api_key:
                return None
            why = "x-api-key header is required" if given is None else "invalid x-api-key"
            return 401, self._anthropic_error("authentication_error", why)
        auth = request.headers.get("authorization", "")
        if auth == f"Bearer {self.api_key}":
            return None
        if self.provider == "ollama":
            return 401, {"error": "unauthorized"}
        if not auth:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return 401, self._openai_error(message, "invalid_request_error", None)
        given = auth.removeprefix("Bearer ")
        # OpenAI repeats the key it was given, masked when long, whole when short.
        shown = given if len(given) <= 8 else given[:3] + "*" * (len(given) - 7) + given[-4:]
        message = (
            f"Incorrect API key provided: {shown}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
        return 401, self._openai_error(message, "invalid_request_error", "invalid_api_key")

    async def _models(self, request: _Request, out: _Response) -> None:
        refused = self._refused(request)
        if refused is not None:
            await out.full(refused[0], _dumps(refused[1]))
            return
        installed = [self.model] if self.installed else []
        if self.provider == "ollama":
            names = [n if ":" in n else f"{n}:latest" for n in [*installed, "nomic-embed-text"]]
            body: dict[str, Any] = {
                "models": [
                    {
                        "name": name,
                        "model": name,
                        "modified_at": "2025-09-12T10:02:51.383146-07:00",
                        "size": 2019393189,
                        "digest": secrets.token_hex(32),
                        "details": {
                            "parent_model": "",
                            "format": "gguf",
                            "family": "llama",
                            "families": ["llama"],
                            "parameter_size": "3.2B",
                            "quantization_level": "Q4_K_M",
                        },
                    }
                    for name in names
                ]
            }
        elif self.provider == "openai":
            body = {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 1686935002, "owned_by": "system"}
                    for name in [*installed, "text-embedding-3-small"]
                ],
            }
        else:
            listed = [self._anthropic_model(name) for name in installed]
            body = {
                "data": listed,
                "has_more": False,
                "first_id": listed[0]["id"] if listed else None,
                "last_id": listed[-1]["id"] if listed else None,
            }
        await out.full(200, _dumps(body))

    async def _model(self, request: _Request, out: _Response, name: str) -> None:
        """Anthropic's and OpenAI's one-model endpoint."""
        refused = self._refused(request)
        if refused is not None:
            await out.full(refused[0], _dumps(refused[1]))
        elif self.provider == "ollama":
            await self._not_found_url(request, out)
        elif not (self.installed and name == self.model):
            await self._no_model(out, name)
        elif self.provider == "anthropic":
            await out.full(200, _dumps(self._anthropic_model(name)))
        else:
            body = {"id": name, "object": "model", "created": 1686935002, "owned_by": "system"}
            await out.full(200, _dumps(body))

    async def _not_found_url(self, request: _Request, out: _Response) -> None:
        if self.provider == "ollama":  # gin's router
            await out.full(404, b"404 page not found", "text/plain")
        elif self.provider == "openai":
            message = f"Unknown request URL: {request.method} {request.path}."
            await out.full(404, _dumps(self._openai_error(message, "invalid_request_error", None)))
        else:
            await out.full(404, _dumps(self._anthropic_error("not_found_error", "Not Found")))

    async def _no_model(self, out: _Response, name: str) -> None:
        if self.provider == "ollama":
            body: dict[str, Any] = {"error": f'model "{name}" not found, try pulling it first'}
        elif self.provider == "openai":
            message = f"The model `{name}` does not exist or you do not have access to it."
            body = self._openai_error(message, "invalid_request_error", "model_not_found")
        else:
            body = self._anthropic_error("not_found_error", f"model: {name}")
        await out.full(404, _dumps(body))

    def _invalid(self, body: object) -> str | None:
        """What the provider says about a request body it cannot take, if anything."""
        if not isinstance(body, dict):
            return "invalid request body"
        if not isinstance(body.get("model"), str):
            return "model is required"
        if not isinstance(body.get("messages"), list):
            return "messages: Field required"
        if self.provider == "anthropic":
            if not isinstance(body.get("max_tokens"), int):
                return "max_tokens: Field required"
            if not body["messages"]:
                return "messages: at least one message is required"
            roles = {m.get("role") for m in body["messages"] if isinstance(m, dict)}
            if not roles <= {"user", "assistant"}:
                return "messages: Unexpected role. Allowed roles are 'user' or 'assistant'"
        return None

    async def _chat(self, request: _Request, out: _Response) -> None:
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        self.requests.append(body if isinstance(body, dict) else {})
        self.headers.append(dict(request.headers))
        refused = self._refused(request)
        if refused is not None:
            await out.full(refused[0], _dumps(refused[1]))
            return
        invalid = self._invalid(body)
        if invalid is not None:
            await out.full(400, _dumps(self.error_body(400, invalid)))
            return
        if self.error_status is not None:
            body = self.error_body(self.error_status, self.error_message)
            await out.full(self.error_status, _dumps(body))
            return
        if not (self.installed and _same(body["model"], self.model)):
            await self._no_model(out, body["model"])
            return
        await self._stream(body, out)

    # -- streams ------------------------------------------------------------------------------

    async def _stream(self, body: dict[str, Any], out: _Response) -> None:
        tokens = list(self.tokens)
        frames = {"ollama": _Ollama, "openai": _OpenAI, "anthropic": _Anthropic}[self.provider]
        frame = frames(body["model"], body)
        started = time.monotonic_ns()
        try:
            # Ollama sends nothing at all, not even headers, while the model loads; the others
            # answer at once and then take their time before the first token.
            early = self.first_delay if self.provider == "ollama" else 0.0
            await self._wait(early, out)
            await out.start(frame.content_type)
            for data in frame.opening():
                await out.chunk(data)
            for sent in range(len(tokens) + 1):
                await self._checkpoint(sent, frame, out)
                if sent == len(tokens):
                    break
                pause = self.delay + (self.first_delay - early if sent == 0 else 0.0)
                await self._wait(pause, out)
                await out.chunk(frame.token(tokens[sent]))
                with self._lock:
                    self._chunks += 1
            await out.chunk(frame.closing(len(tokens), time.monotonic_ns() - started))
            await out.end()
        except (_Stop, ConnectionError) as stop:
            if not isinstance(stop, _Stop) or str(stop) == "the client left":
                self.abandoned += 1
            raise

    async def _wait(self, seconds: float, out: _Response) -> None:
        """Sleeps, noticing a client that goes away meanwhile."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.02))
            if out.reader.at_eof():
                raise _Stop("the client left")

    async def _checkpoint(self, sent: int, frame: _Frames, out: _Response) -> None:
        """What happens after `sent` chunks: a hold, an error, garbage or a cut."""
        if self.hold_after == sent:
            self.holding.set()
            try:
                while self.hold_after == sent:
                    await self._wait(0.01, out)
            finally:
                self.holding.clear()
        if self.fail_after == sent:
            await out.chunk(frame.error())
            await out.end()
            raise _Stop("failed")
        if self.garble_after == sent:
            await out.chunk(frame.garbage())
            await out.end()
            raise _Stop("garbled")
        if self.cut_after == sent:
            raise _Stop("cut")  # the connection closes without the last chunk or final line

    # -- documented error bodies --------------------------------------------------------------

    def error_body(self, status: int, message: str = "") -> dict[str, Any]:
        """The provider's documented error body for an HTTP status."""
        if self.provider == "ollama":
            words = {
                429: "too many requests",
                500: "model requires more system memory (5.6 GiB) than is available (3.2 GiB)",
                503: "server busy, please try again.  maximum pending requests exceeded",
            }
            return {"error": message or words.get(status, http.HTTPStatus(status).phrase.lower())}
        if self.provider == "openai":
            openai: dict[int, tuple[str, str, str | None]] = {
                429: (
                    f"Rate limit reached for {self.model} in organization org-Onion4ChatTest on "
                    "requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again "
                    "in 20s.",
                    "requests",
                    "rate_limit_exceeded",
                ),
                500: (
                    "The server had an error while processing your request. Sorry about that!",
                    "server_error",
                    None,
                ),
                503: (
                    "The engine is currently overloaded, please try again later.",
                    "server_error",
                    None,
                ),
            }
            text, kind, code = openai.get(status, (message, "invalid_request_error", None))
            return self._openai_error(message or text, kind, code)
        anthropic = {
            400: ("invalid_request_error", message),
            403: ("permission_error", "Your API key does not have permission to use this."),
            413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
            429: (
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50 requests "
                "per minute.",
            ),
            500: ("api_error", "Internal server error"),
            529: ("overloaded_error", "Overloaded"),
        }
        kind, text = anthropic.get(status, ("api_error", message or "Internal server error"))
        return self._anthropic_error(kind, message or text)

    @staticmethod
    def _openai_error(message: str, kind: str, code: str | None) -> dict[str, Any]:
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    @staticmethod
    def _anthropic_error(kind: str, message: str) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": "req_" + secrets.token_hex(12),
        }

    @staticmethod
    def _anthropic_model(name: str) -> dict[str, Any]:
        return {
            "type": "model",
            "id": name,
            "display_name": name.replace("-", " ").title(),
            "created_at": "2025-09-29T00:00:00Z",
        }


def _same(asked: str, served: str) -> bool:
    return asked.removesuffix(":latest") == served.removesuffix(":latest")


# -- each provider's frames ------------------------------------------------------------------


class _Frames:
    content_type = ""

    def __init__(self, model: str, body: dict[str, Any]) -> None:
        self.model = model
        self.prompt_tokens = sum(
            len(str(m.get("content", "")).split())
            for m in body.get("messages", [])
            if isinstance(m, dict)
        )

    def opening(self) -> list[bytes]:
        return []

    def token(self, text: str) -> bytes:
        raise NotImplementedError

    def error(self) -> bytes:
        raise NotImplementedError

    def garbage(self) -> bytes:
        raise NotImplementedError

    def closing(self, count: int, nanoseconds: int) -> bytes:
        raise NotImplementedError


class _Ollama(_Frames):
    """NDJSON (application/x-ndjson): a line per chunk, a last line with done and statistics."""

    content_type = "application/x-ndjson"

    def _line(self, data: dict[str, Any]) -> bytes:
        return _dumps({"model": self.model, "created_at": _now(), **data}) + b"\n"

    def token(self, text: str) -> bytes:
        return self._line({"message": {"role": "assistant", "content": text}, "done": False})

    def error(self) -> bytes:
        return _dumps({"error": "an error was encountered while running the model"}) + b"\n"

    def garbage(self) -> bytes:
        return b'{"model":"' + self.model.encode() + b'","message":{"role":\n'

    def closing(self, count: int, nanoseconds: int) -> bytes:
        load = 1_334_875
        prompt = 342_546 * max(self.prompt_tokens, 1)
        return self._line(
            {
                "message": {"role": "assistant", "content": ""},
                "done_reason": "stop",
                "done": True,
                "total_duration": max(nanoseconds, load + prompt + 1),
                "load_duration": load,
                "prompt_eval_count": self.prompt_tokens,
                "prompt_eval_duration": prompt,
                "eval_count": count,
                "eval_duration": max(nanoseconds - load - prompt, 1),
            }
        )


class _OpenAI(_Frames):
    """SSE data lines of chat.completion.chunk objects; finish_reason in a chunk of its own."""

    content_type = "text/event-stream; charset=utf-8"

    def __init__(self, model: str, body: dict[str, Any]) -> None:
        super().__init__(model, body)
        self.id = "chatcmpl-" + secrets.token_urlsafe(21)
        self.created = int(time.time())

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_44709d6fcb",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + _dumps(chunk) + b"\n\n"

    def opening(self) -> list[bytes]:
        return [self._chunk({"role": "assistant", "content": "", "refusal": None})]

    def token(self, text: str) -> bytes:
        return self._chunk({"content": text})

    def error(self) -> bytes:
        error = ModelServer._openai_error(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        )
        return b"data: " + _dumps(error) + b"\n\n"

    def garbage(self) -> bytes:
        return b'data: {"id":"' + self.id.encode() + b'","object":"chat.completion.chu\n\n'

    def closing(self, count: int, nanoseconds: int) -> bytes:
        return self._chunk({}, "stop") + b"data: [DONE]\n\n"


class _Anthropic(_Frames):
    """SSE events: message_start, content_block_start, ping, content_block_delta...,
    content_block_stop, message_delta, message_stop."""

    content_type = "text/event-stream; charset=utf-8"

    @staticmethod
    def _event(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n"

    def opening(self) -> list[bytes]:
        message: dict[str, Any] = {
            "id": "msg_" + secrets.token_hex(12),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 1},
        }
        return [
            self._event("message_start", {"type": "message_start", "message": message}),
            self._event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            self._event("ping", {"type": "ping"}),
        ]

    def token(self, text: str) -> bytes:
        delta = {"type": "text_delta", "text": text}
        return self._event(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )

    def error(self) -> bytes:
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        return self._event("error", error)

    def garbage(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type":"content_block_delta","ind\n\n'

    def closing(self, count: int, nanoseconds: int) -> bytes:
        return (
            self._event("content_block_stop", {"type": "content_block_stop", "index": 0})
            + self._event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": count},
                },
            )
            + self._event("message_stop", {"type": "message_stop"})
        )


def main() -> None:
    """`python model_servers.py PROVIDER --host H --port P --seconds S`: one server in a
    process of its own (a compose service in tests/test_compose.py), for at most S seconds."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("provider", choices=["ollama", "openai", "anthropic"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=600)
    args = parser.parse_args()
    server = ModelServer(args.provider)
    server.host, server.port = args.host, args.port
    with server:
        print(f"serving {args.provider} at {server.url}", flush=True)
        time.sleep(args.seconds)


if __name__ == "__main__":
    main()
