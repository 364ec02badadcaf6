"""Streaming clients for the model servers a bot talks to: Ollama, OpenAI-compatible, Anthropic.

Each provider is spoken in its documented wire format with `httpx` streaming:

- ollama: `POST /api/chat`, an NDJSON stream whose every line may be an `{"error": ...}`
  (errors arrive mid-stream with status 200) and whose last line has `"done": true`;
  `GET /api/tags` lists the installed models.
- openai: `POST /v1/chat/completions` with `"stream": true`, SSE `data:` lines of
  `chat.completion.chunk` objects, `finish_reason` possibly in a chunk of its own, `data: [DONE]`
  at the end, and `{"error": {...}}` possibly mid-stream. This also covers Ollama's `/v1`,
  llama.cpp's server, vLLM and LM Studio.
- anthropic: `POST /v1/messages` with `"stream": true`, SSE events from `message_start` to
  `message_stop`, text in `content_block_delta` / `text_delta`, and `event: error` mid-stream.

Every failure becomes a `ModelError` whose text the bot says in the room as it is, so messages
are plain words: no tracebacks, no API keys, no proxy credentials, and no server text where a
server is known to echo secrets (OpenAI's 401 repeats part of the key; its 429 names the
organisation). Nothing waits unbounded: `asyncio` deadlines cover the wait for the first token
and every wait between two tokens, whatever timeouts the caller's `httpx` client has.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import socket
import ssl
import urllib.parse
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Any

import httpx

from onionchat.i18n import say

__all__ = ["ModelConfig", "ModelCut", "ModelError", "Turn", "check", "stream"]

PROVIDERS = ("ollama", "openai", "anthropic")
ANTHROPIC_VERSION = "2023-06-01"

CUT = say("the connection to the model server was cut")
UNREADABLE = say("the model server sent something unreadable")

# A line longer than this is not a token stream any more: refuse it rather than buffer it all.
_MAX_LINE = 1 << 20
# Error bodies are read this far, and their text is said this far.
_MAX_ERROR_BODY = 64 << 10
_MAX_SAID = 300


@dataclasses.dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    provider: str  # "ollama" | "openai" | "anthropic"
    base_url: str
    model: str
    api_key: str = dataclasses.field(default="", repr=False)  # kept out of reprs and logs
    proxy: str | None = None  # e.g. "socks5h://127.0.0.1:9050" when the bot goes through Tor
    first_token_timeout: float = 60.0  # seconds from request to first token
    idle_timeout: float = 60.0  # max seconds between two chunks once streaming
    max_tokens: int = 1024


class ModelError(Exception):
    """What went wrong, in plain words, no secrets, no tracebacks: for the operator (the log,
    and `/bots` for staff). `said` is what the room is told, which never names the model
    server's address, its proxy or the node's keys: users cannot act on those."""

    def __init__(self, detail: str, said: str | None = None) -> None:
        super().__init__(detail)
        self.said = said or detail


#: what the room is told of a model server that cannot be reached or is not set up right
UNREACHABLE = say("the model server is not reachable now (the node's log says why)")
MISCONFIGURED = say("the model server is not set up right for this bot (the node's log says why)")


class ModelCut(ModelError):
    """The stream broke after some text arrived: the caller keeps what it has and marks it cut."""


class _ServerSaid(Exception):
    """An error the model server reported inside a 200 stream."""


class _Unreadable(Exception):
    """A line or event that is not what the provider's format says it is."""


# -- addresses and words ---------------------------------------------------------------------


def not_installed(model: str) -> str:
    """The hint for an Ollama model that was never pulled: the fix is one command."""
    return say(
        "model '{model}' is not installed on the model server: run `ollama pull {model}`",
        model=model,
    )


def shown(address: str) -> str:
    """An address fit to show: no user name, password, query or fragment."""
    try:
        url = httpx.URL(address)
        return str(url.copy_with(username=None, password=None, query=None, fragment=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "(an invalid address)"


def _server(config: ModelConfig) -> str:
    return shown(config.base_url.rstrip("/"))


def _url(config: ModelConfig, path: str) -> str:
    """`path` under the base URL; a base that already ends in /v1 does not get a second one."""
    base = config.base_url.rstrip("/")
    if path.startswith("/v1/") and base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base + path


def _clean(text: object, config: ModelConfig) -> str:
    """A server's words, fit to say in a room: one line, short, without the API key."""
    said = " ".join(str(text).split())
    said = "".join(c for c in said if c.isprintable())
    if config.api_key:
        said = said.replace(config.api_key, "[API key]")
    if len(said) > _MAX_SAID:
        said = said[:_MAX_SAID] + "…"
    return said


def _with(text: str, detail: str) -> str:
    return say("{text}: {detail}", text=text, detail=detail) if detail else text


def _late(config: ModelConfig) -> str:
    return say(
        "the model did not start answering within {seconds} s",
        seconds=f"{config.first_token_timeout:g}",
    )


def _silent(config: ModelConfig) -> str:
    return say("the model stopped sending text for {seconds} s", seconds=f"{config.idle_timeout:g}")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what caused it, and the members of any exception group on the way."""
    todo, seen = [exc], set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words."""
    if isinstance(exc, httpx.TimeoutException):
        return "no answer"
    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "its name does not resolve"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "its TLS certificate is not trusted"
        if isinstance(cause, OSError) and cause.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "no route to it"
    text = str(exc).lower()
    if "connection refused" in text:
        return "connection refused"
    if "name or service not known" in text or "name resolution" in text:
        return "its name does not resolve"
    return "the connection failed"


def _proxy_reason(exc: httpx.ProxyError) -> str:
    """The SOCKS reply, e.g. "host unreachable", from httpcore's "Proxy Server could not
    connect: Host unreachable."."""
    text = str(exc).removeprefix("Proxy Server could not connect:").strip().rstrip(".")
    return text[:1].lower() + text[1:] if text else "the proxy refused"


def _unreachable(config: ModelConfig, exc: Exception) -> ModelError:
    """A request that got no answer at all."""
    server = _server(config)
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return ModelError(f"the model server address {server} is not an http(s) URL", MISCONFIGURED)
    if isinstance(exc, httpx.ProxyError):
        return ModelError(
            f"the model server at {server} is not reachable through the proxy "
            f"({_proxy_reason(exc)})",
            UNREACHABLE,
        )
    if config.proxy and isinstance(exc, httpx.ConnectError):
        return ModelError(
            f"the proxy at {shown(config.proxy)} is not reachable ({_reason(exc)})", UNREACHABLE
        )
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ModelError(
            f"the model server at {server} is not reachable ({_reason(exc)})", UNREACHABLE
        )
    if isinstance(exc, httpx.TimeoutException):
        return ModelError(_late(config))
    return ModelError(CUT)


# -- what the servers say when they refuse ---------------------------------------------------


def _error_fields(body: bytes) -> tuple[str, str, str]:
    """(message, type, code) from any provider's error body, or the body's text when it is not
    JSON (Ollama's router answers "404 page not found" as plain text)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:_MAX_SAID], "", ""
    if not isinstance(data, dict):
        return "", "", ""
    error = data.get("error")
    if isinstance(error, str):  # ollama
        return error, "", ""
    if isinstance(error, dict):  # openai, anthropic
        return (
            str(error.get("message") or ""),
            str(error.get("type") or ""),
            str(error.get("code") or ""),
        )
    if data.get("object") == "error":  # vLLM
        return str(data.get("message") or ""), str(data.get("type") or ""), ""
    return "", "", ""


def _refusal(config: ModelConfig, status: int, body: bytes) -> ModelError:
    """The error for a chat request the server answered with something other than 200."""
    message, kind, code = _error_fields(body)
    said = _clean(message, config)
    if "try pulling it first" in message:  # Ollama, natively or behind its /v1
        return ModelError(not_installed(config.model))
    if status == 401:
        if not config.api_key:
            return ModelError(
                "the model server wants an API key (HTTP 401), and none is set", MISCONFIGURED
            )
        return ModelError("the model server refused the API key (HTTP 401)", MISCONFIGURED)
    if status == 403:
        return ModelError(
            "the model server refused access with this API key (HTTP 403)", MISCONFIGURED
        )
    if status == 404:
        if config.provider == "ollama" and "not found" in message:
            return ModelError(not_installed(config.model))
        if code == "model_not_found" or "model" in message.lower():
            return ModelError(
                _with(
                    say("model '{model}' is not available on the model server", model=config.model),
                    said,
                )
            )
        return ModelError(
            f"the model server at {_server(config)} has no chat endpoint for "
            f"{config.provider} (HTTP 404): check the provider and base URL",
            MISCONFIGURED,
        )
    if status == 429:
        return ModelError(
            say("the model server is rate limiting requests (HTTP 429): try again later")
        )
    if status in (503, 529) or kind == "overloaded_error":
        return ModelError(
            _with(say("the model server is overloaded (HTTP {status})", status=status), said)
        )
    if status >= 500:
        return ModelError(
            _with(say("the model server failed (HTTP {status})", status=status), said)
        )
    if status >= 400:
        return ModelError(
            _with(say("the model server rejected the request (HTTP {status})", status=status), said)
        )
    return ModelError(_with(say("the model server answered HTTP {status}", status=status), said))


# -- decoders: one line of the response in, text out -----------------------------------------


def _json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        raise _Unreadable from None
    if not isinstance(data, dict):
        raise _Unreadable
    return data


class _Decoder:
    """Turns the lines of one response into text. `feed` returns (text, finished) and raises
    `_ServerSaid` or `_Unreadable`; `seen` says whether anything of the format came at all."""

    seen = False
    complete = False  # the answer is whole even if the end marker never comes

    def feed(self, line: str) -> tuple[str, bool]:
        raise NotImplementedError

    def end(self) -> tuple[str, bool]:
        return "", self.complete


class _OllamaDecoder(_Decoder):
    """NDJSON: one JSON object a line, any of which may be `{"error": "..."}`."""

    def feed(self, line: str) -> tuple[str, bool]:
        if not line.strip():
            return "", False
        data = _json(line)
        self.seen = True
        if "error" in data:
            raise _ServerSaid(data["error"])
        message = data.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        if text is not None and not isinstance(text, str):
            raise _Unreadable
        return text or "", data.get("done") is True


class _SSE:
    """Server-sent events, as the HTML standard parses them: `event:` and `data:` fields,
    `:` comments, an event dispatched at a blank line."""

    def __init__(self) -> None:
        self.event = ""
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if line == "":
            return self.dispatch()
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self.event = value
        elif field == "data":
            self.data.append(value)
        return None

    def dispatch(self) -> tuple[str, str] | None:
        event, data = self.event or "message", self.data
        self.event, self.data = "", []
        return (event, "\n".join(data)) if data else None


class _OpenAIDecoder(_Decoder):
    """SSE `data:` lines of chat.completion.chunk objects, then `data: [DONE]`."""

    def __init__(self) -> None:
        self.sse = _SSE()

    def feed(self, line: str) -> tuple[str, bool]:
        return self._event(self.sse.feed(line))

    def end(self) -> tuple[str, bool]:
        text, finished = self._event(self.sse.dispatch())
        return text, finished or self.complete

    def _event(self, event: tuple[str, str] | None) -> tuple[str, bool]:
        if event is None:
            return "", False
        _, data = event
        if data.strip() == "[DONE]":
            self.seen = True
            return "", True
        chunk = _json(data)
        self.seen = True
        if "error" in chunk:
            error = chunk["error"]
            raise _ServerSaid(error.get("message", error) if isinstance(error, dict) else error)
        if chunk.get("object") == "error":  # vLLM
            raise _ServerSaid(chunk.get("message", ""))
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise _Unreadable
        text = ""
        for choice in choices:  # empty in a usage-only chunk
            if not isinstance(choice, dict):
                raise _Unreadable
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if content is not None and not isinstance(content, str):
                raise _Unreadable
            text += content or ""
            if choice.get("finish_reason"):
                self.complete = True
        return text, False


class _AnthropicDecoder(_Decoder):
    """SSE events from message_start to message_stop; text comes in text_delta deltas."""

    def __init__(self) -> None:
        self.sse = _SSE()

    def feed(self, line: str) -> tuple[str, bool]:
        event = self.sse.feed(line)
        if event is None:
            return "", False
        name, data = event
        payload = _json(data)
        self.seen = True
        kind = payload.get("type", name)
        if kind == "error" or name == "error":
            error = payload.get("error")
            if isinstance(error, dict):
                message, kind = str(error.get("message", "")), str(error.get("type", ""))
                raise _ServerSaid(f"{message} ({kind})" if kind else message)
            raise _ServerSaid(error or "")
        if kind == "content_block_delta":
            delta = payload.get("delta")
            if not isinstance(delta, dict):
                raise _Unreadable
            if delta.get("type") == "text_delta":
                text = delta.get("text")
                if not isinstance(text, str):
                    raise _Unreadable
                return text, False
        return "", kind == "message_stop"


# -- requests --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Chat:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    decoder: Callable[[], _Decoder]


def _bearer(config: ModelConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}


def _anthropic_headers(config: ModelConfig) -> dict[str, str]:
    headers = {"anthropic-version": ANTHROPIC_VERSION}
    if config.api_key:
        headers["x-api-key"] = config.api_key
    return headers


def _alternating(turns: list[Turn]) -> list[dict[str, str]]:
    """Anthropic wants non-empty turns that start with the user's: merge runs of one role,
    drop empty turns and any answer before the first question."""
    messages: list[dict[str, str]] = []
    for turn in turns:
        if not turn.content.strip() or (not messages and turn.role != "user"):
            continue
        if messages and messages[-1]["role"] == turn.role:
            messages[-1]["content"] += "\n" + turn.content
        else:
            messages.append({"role": turn.role, "content": turn.content})
    return messages


def _chat(config: ModelConfig, system: str, turns: list[Turn]) -> _Chat:
    history = [{"role": t.role, "content": t.content} for t in turns]
    with_system = ([{"role": "system", "content": system}] if system else []) + history
    if config.provider == "ollama":
        return _Chat(
            _url(config, "/api/chat"),
            {"Accept": "application/x-ndjson", **_bearer(config)},
            {
                "model": config.model,
                "messages": with_system,
                "stream": True,
                "options": {"num_predict": config.max_tokens},
            },
            _OllamaDecoder,
        )
    if config.provider == "openai":
        return _Chat(
            _url(config, "/v1/chat/completions"),
            {"Accept": "text/event-stream", **_bearer(config)},
            {
                "model": config.model,
                "messages": with_system,
                "stream": True,
                "max_tokens": config.max_tokens,
            },
            _OpenAIDecoder,
        )
    if config.provider == "anthropic":
        body: dict[str, Any] = {"model": config.model, "max_tokens": config.max_tokens}
        if system:
            body["system"] = system
        body["messages"] = _alternating(turns)
        body["stream"] = True
        return _Chat(
            _url(config, "/v1/messages"),
            {"Accept": "text/event-stream", **_anthropic_headers(config)},
            body,
            _AnthropicDecoder,
        )
    raise ModelError(
        say(
            "unknown model provider '{provider}': use one of {providers}",
            provider=config.provider,
            providers=", ".join(PROVIDERS),
        )
    )


def _client(config: ModelConfig) -> httpx.AsyncClient:
    """A client of our own: never proxy settings from the environment, only config.proxy.
    Reads are unbounded here because stream() bounds every wait with its own deadlines."""
    timeout = httpx.Timeout(config.first_token_timeout, read=None)
    return httpx.AsyncClient(trust_env=False, proxy=config.proxy, timeout=timeout)


async def _read_some(response: httpx.Response, limit: int) -> bytes:
    body = b""
    async for piece in response.aiter_bytes():
        body += piece
        if len(body) >= limit:
            break
    return body[:limit]


# -- streaming -------------------------------------------------------------------------------


async def stream(
    config: ModelConfig,
    system: str,
    turns: list[Turn],
    client: httpx.AsyncClient | None = None,
) -> AsyncGenerator[str, None]:
    """Yields text chunks as they arrive. Raises ModelError (before any text) or ModelCut (after
    some). Close it when leaving early (`contextlib.aclosing`) so the connection goes at once,
    which is what tells the model server to stop generating."""
    chat = _chat(config, system, turns)
    own = client is None
    http = _client(config) if client is None else client
    try:
        async with contextlib.aclosing(_answer(config, http, chat)) as answer:
            async for text in answer:
                yield text
    finally:
        if own:
            await http.aclose()


async def _answer(
    config: ModelConfig, client: httpx.AsyncClient, chat: _Chat
) -> AsyncGenerator[str, None]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.first_token_timeout
    started = False  # some text came: failures from here on are cuts

    def failed(message: str) -> ModelError:
        return ModelCut(message) if started else ModelError(message)

    def timed_out() -> ModelError:
        return ModelCut(_silent(config)) if started else ModelError(_late(config))

    try:
        request = client.build_request("POST", chat.url, headers=chat.headers, json=chat.body)
        async with asyncio.timeout_at(deadline):
            response = await client.send(request, stream=True)
    except (TimeoutError, httpx.ReadTimeout):
        raise ModelError(_late(config)) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise _unreachable(config, exc) from None

    try:
        if response.status_code != 200:
            try:
                async with asyncio.timeout_at(deadline):
                    body = await _read_some(response, _MAX_ERROR_BODY)
            except (TimeoutError, httpx.HTTPError):
                body = b""
            raise _refusal(config, response.status_code, body)

        decoder = chat.decoder()
        pieces = response.aiter_text()
        pending = ""
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    piece = await anext(pieces, None)
            except (TimeoutError, httpx.TimeoutException):
                raise timed_out() from None
            except httpx.HTTPError:
                raise failed(CUT) from None
            if piece is None:
                lines: list[str] = []
                ended = True
            else:
                pending += piece
                *lines, pending = pending.split("\n")
                ended = False
                if len(pending) > _MAX_LINE:
                    raise failed(UNREADABLE)
            for line in lines:
                try:
                    text, finished = decoder.feed(line.removesuffix("\r"))
                except _ServerSaid as said:
                    raise failed(
                        _with(say("the model server reported an error"), _clean(said, config))
                    ) from None
                except _Unreadable:
                    raise failed(UNREADABLE) from None
                if text:
                    started = True
                    yield text
                    deadline = loop.time() + config.idle_timeout
                if finished:
                    return
            if ended:
                # An unterminated last line is a fragment of a line the cut interrupted.
                try:
                    text, finished = decoder.end()
                except (_ServerSaid, _Unreadable):
                    finished, text = False, ""
                if text:
                    started = True
                    yield text
                if finished:
                    return
                raise failed(CUT if decoder.seen else UNREADABLE)
    finally:
        await response.aclose()


# -- checking --------------------------------------------------------------------------------


def _same_model(wanted: str, listed: object) -> bool:
    """Ollama names default their tag to latest: "llama3.2" is "llama3.2:latest"."""
    if not isinstance(listed, str):
        return False

    def plain(name: str) -> str:
        return name.strip().lower().removesuffix(":latest")

    return plain(wanted) == plain(listed)


async def check(
    config: ModelConfig,
    client: httpx.AsyncClient | None = None,
    timeout: float = 3.0,  # noqa: ASYNC109 (the interface bots.py codes against)
) -> str | None:
    """None when the server answers and the model is there; else a short reason ("not reachable:
    connection refused", "model 'x' is not installed: run `ollama pull x`", "API key refused
    (HTTP 401)")."""
    if config.provider == "ollama":
        path, headers = "/api/tags", _bearer(config)
    elif config.provider == "openai":
        path, headers = "/v1/models", _bearer(config)
    elif config.provider == "anthropic":
        # The one-model endpoint also resolves aliases ("claude-sonnet-4-5"), the list does not.
        path = "/v1/models/" + urllib.parse.quote(config.model, safe="")
        headers = _anthropic_headers(config)
    else:
        return f"unknown provider '{config.provider}'"
    own = client is None
    http = _client(config) if client is None else client
    try:
        async with asyncio.timeout(timeout):
            async with http.stream("GET", _url(config, path), headers=headers) as response:
                status = response.status_code
                body = await _read_some(response, 4 << 20)
    except TimeoutError:
        return f"not reachable: no answer within {timeout:g} s"
    except httpx.ProxyError as exc:
        return f"not reachable through the proxy: {_proxy_reason(exc)}"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
            return "the base URL is not an http(s) URL"
        if config.proxy and isinstance(exc, httpx.ConnectError):
            return f"the proxy is not reachable: {_reason(exc)}"
        return f"not reachable: {_reason(exc)}"
    finally:
        if own:
            await http.aclose()
    return _checked(config, status, body)


def _checked(config: ModelConfig, status: int, body: bytes) -> str | None:
    if status == 401:
        return "API key refused (HTTP 401)" if config.api_key else "API key needed (HTTP 401)"
    if status == 403:
        return "API key refused (HTTP 403)"
    if config.provider == "anthropic" and status == 404:
        return f"model '{config.model}' is not available on the model server"
    if status != 200:
        return f"the model server answered HTTP {status}"
    try:
        listed = json.loads(body)
        if config.provider == "anthropic":  # the model itself, {"type": "model", "id": ...}
            names = [config.model] if listed["type"] == "model" else []
        elif config.provider == "ollama":
            names = [n for m in listed["models"] for n in (m.get("name"), m.get("model"))]
        else:
            names = [m.get("id") for m in listed["data"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "the model server sent something unreadable"
    if any(_same_model(config.model, name) for name in names):
        return None
    if config.provider == "ollama":
        return f"model '{config.model}' is not installed: run `ollama pull {config.model}`"
    return f"model '{config.model}' is not available on the model server"
