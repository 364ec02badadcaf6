"""The model clients against local servers that speak each provider's documented wire format.

Every failure a bot can meet must come back as a ModelError in plain words, at once, without the
API key: these tests make each one happen for real (a closed port, a silent socket, a stream
that stops, errors in the middle of a 200 stream, a cut connection) rather than mocking httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from onionchat import models

from model_servers import ModelServer, closed_port
from socks5 import Request, Socks5Proxy

MODELS = {"ollama": "llama3.2", "openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5"}
KEY = "sk-onion-test-4f8a1c9e2b7d"  # a made-up key the tests look for in every message
SYSTEM = "You are Olga, a helpful bot in a group chat."
TURNS = [
    models.Turn("user", "alice: Olga, tell a joke"),
    models.Turn("assistant", "Why did the onion cry?"),
    models.Turn("user", "bob: Ольга, ещё одну"),
]
MID_STREAM_ERRORS = {
    "ollama": "an error was encountered while running the model",
    "openai": "The server had an error while processing your request. Sorry about that!",
    "anthropic": "Overloaded (overloaded_error)",
}


@pytest.fixture(params=list(MODELS))
def server(request: pytest.FixtureRequest) -> Iterator[ModelServer]:
    """Each provider as it is usually met: Ollama without a key, the cloud APIs with one."""
    provider = request.param
    with ModelServer(provider, MODELS[provider], KEY if provider != "ollama" else "") as running:
        yield running


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers a byte."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def config_for(server: ModelServer, **changes: Any) -> models.ModelConfig:
    fields: dict[str, Any] = {
        "provider": server.provider,
        "base_url": server.url,
        "model": server.model,
        "api_key": server.api_key,
        **changes,
    }
    return models.ModelConfig(**fields)


async def collect(config: models.ModelConfig, client: httpx.AsyncClient | None = None) -> list[str]:
    return [chunk async for chunk in models.stream(config, SYSTEM, TURNS, client)]


async def failure(
    config: models.ModelConfig, client: httpx.AsyncClient | None = None
) -> tuple[models.ModelError, list[str]]:
    """The error a stream ends with, and the text that came before it."""
    seen: list[str] = []
    with pytest.raises(models.ModelError) as caught:
        async for chunk in models.stream(config, SYSTEM, TURNS, client):
            seen.append(chunk)
    return caught.value, seen


async def collect_the_proxy_socket() -> None:
    """httpcore 1.0.9 does not close its socket to a SOCKS proxy when the handshake fails or is
    interrupted, and leaves it to the garbage collector: collected here, its ResourceWarning
    stays in the test that caused it instead of failing whichever test runs next."""
    await asyncio.sleep(0.01)  # the interrupted handshake's last callbacks drop it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


async def relays_done() -> None:
    """The SOCKS proxy relays on in tasks of its own after an answer; a test that ends first
    leaves their sockets to the garbage collector."""
    await eventually(lambda: len(asyncio.all_tasks()) == 1)
    await asyncio.sleep(0)  # the closed transports' last callbacks


async def eventually(condition: Callable[[], bool]) -> None:
    """Polls for something the server thread does on its own time (bounded, not timed)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("it never happened")


# -- streaming -------------------------------------------------------------------------------


async def test_the_chunks_come_in_order(server: ModelServer) -> None:
    server.tokens = ["Ольга ", "says: ", "🧅 ", "why ", "not?"]
    server.delay = 0.01
    assert await collect(config_for(server)) == server.tokens
    assert server.served_chunks() == 5


async def test_the_request_is_the_documented_one(server: ModelServer) -> None:
    await collect(config_for(server, max_tokens=200))
    body, headers = server.requests[0], server.headers[0]
    history = [{"role": t.role, "content": t.content} for t in TURNS]
    model = MODELS[server.provider]
    assert headers["content-type"] == "application/json"
    if server.provider == "ollama":
        assert body == {
            "model": model,
            "messages": [{"role": "system", "content": SYSTEM}, *history],
            "stream": True,
            "options": {"num_predict": 200},
        }
        assert "authorization" not in headers
    elif server.provider == "openai":
        assert body == {
            "model": model,
            "messages": [{"role": "system", "content": SYSTEM}, *history],
            "stream": True,
            "max_tokens": 200,
        }
        assert headers["authorization"] == f"Bearer {KEY}"
    else:
        assert body == {
            "model": model,
            "max_tokens": 200,
            "system": SYSTEM,
            "messages": history,
            "stream": True,
        }
        assert headers["x-api-key"] == KEY
        assert headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in headers


async def test_ollama_behind_a_key_gets_it_as_a_bearer_token() -> None:
    with ModelServer("ollama", api_key=KEY) as server:
        assert await collect(config_for(server)) == list(server.tokens)
        assert server.headers[0]["authorization"] == f"Bearer {KEY}"


async def test_anthropic_gets_turns_that_alternate_from_the_user() -> None:
    turns = [
        models.Turn("assistant", "an answer before any question"),
        models.Turn("user", "alice: Olga?"),
        models.Turn("user", "bob: Olga!"),
        models.Turn("assistant", ""),
        models.Turn("assistant", "Yes?"),
        models.Turn("user", "alice: a joke"),
    ]
    with ModelServer("anthropic", MODELS["anthropic"], KEY) as server:
        chunks = [c async for c in models.stream(config_for(server), SYSTEM, turns)]
        assert chunks == list(server.tokens)
        assert server.requests[0]["messages"] == [
            {"role": "user", "content": "alice: Olga?\nbob: Olga!"},
            {"role": "assistant", "content": "Yes?"},
            {"role": "user", "content": "alice: a joke"},
        ]


async def test_a_base_url_ending_in_v1_is_not_doubled(server: ModelServer) -> None:
    if server.provider == "ollama":
        server.tokens = ["no /v1 ", "on Ollama's own API"]
        assert await collect(config_for(server)) == server.tokens
        return
    assert await collect(config_for(server, base_url=server.url + "/v1/")) == server.tokens


async def test_a_shared_client_is_used_and_left_open(server: ModelServer) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=None) as client:
        assert await collect(config_for(server), client) == server.tokens
        assert await collect(config_for(server), client) == server.tokens
        assert not client.is_closed
    assert len(server.requests) == 2


# -- failures before any text ----------------------------------------------------------------


async def test_a_model_that_is_not_installed(server: ModelServer) -> None:
    server.installed = False
    error, seen = await failure(config_for(server))
    assert not isinstance(error, models.ModelCut) and seen == []
    model = MODELS[server.provider]
    if server.provider == "ollama":
        assert str(error) == (
            "model 'llama3.2' is not installed on the model server: run `ollama pull llama3.2`"
        )
    else:
        assert str(error).startswith(f"model '{model}' is not available on the model server")


async def test_the_pull_hint_names_the_model_asked_for() -> None:
    with ModelServer("ollama", "llama3.2") as server:
        error, _ = await failure(config_for(server, model="qwen3:4b"))
        assert str(error) == (
            "model 'qwen3:4b' is not installed on the model server: run `ollama pull qwen3:4b`"
        )
        assert server.requests[0]["model"] == "qwen3:4b"


@pytest.mark.parametrize("wrong", ["sk-wrong-0123456789abcdef", "hunter2"])
async def test_a_refused_key_is_said_without_any_key(server: ModelServer, wrong: str) -> None:
    if not server.api_key:
        server.api_key = KEY
    error, seen = await failure(config_for(server, api_key=wrong))
    assert str(error) == "the model server refused the API key (HTTP 401)"
    assert seen == []
    assert wrong not in str(error) and KEY not in str(error)
    assert wrong not in repr(error) and KEY not in repr(error)


async def test_a_missing_key_is_said_as_missing(server: ModelServer) -> None:
    server.api_key = KEY
    error, _ = await failure(config_for(server, api_key=""))
    assert str(error) == "the model server wants an API key (HTTP 401), and none is set"


@pytest.mark.parametrize("provider", list(MODELS))
async def test_a_server_that_is_down(provider: str) -> None:
    port = closed_port()
    config = models.ModelConfig(provider, f"http://127.0.0.1:{port}", MODELS[provider], KEY)
    error, _ = await failure(config)
    assert str(error) == (
        f"the model server at http://127.0.0.1:{port} is not reachable (connection refused)"
    )
    assert error.said == "the model server is not reachable now (the node's log says why)"


async def test_a_slow_first_token_is_a_timeout(server: ModelServer) -> None:
    server.first_delay = 3.0
    error, seen = await failure(config_for(server, first_token_timeout=0.5))
    assert not isinstance(error, models.ModelCut) and seen == []
    assert str(error) == "the model did not start answering within 0.5 s"


@pytest.mark.parametrize("provider", list(MODELS))
async def test_a_server_that_never_answers_is_a_timeout(provider: str, silent_port: int) -> None:
    config = models.ModelConfig(
        provider, f"http://127.0.0.1:{silent_port}", MODELS[provider], first_token_timeout=0.5
    )
    async with httpx.AsyncClient(trust_env=False, timeout=None) as unbounded:
        error, _ = await failure(config, unbounded)
    assert str(error) == "the model did not start answering within 0.5 s"


async def test_http_errors_say_what_happened(server: ModelServer) -> None:
    server.error_status = 429
    error, _ = await failure(config_for(server))
    assert str(error) == "the model server is rate limiting requests (HTTP 429): try again later"
    assert "org-" not in str(error)  # OpenAI's text names the organisation: not for a room

    server.error_status = 500
    error, _ = await failure(config_for(server))
    said = server.error_body(500)
    text = said["error"] if server.provider == "ollama" else said["error"]["message"]
    assert str(error) == f"the model server failed (HTTP 500): {text}"

    server.error_status = 529 if server.provider == "anthropic" else 503
    error, _ = await failure(config_for(server))
    assert str(error).startswith(f"the model server is overloaded (HTTP {server.error_status}): ")


async def test_the_wrong_provider_for_a_server_is_said_as_such() -> None:
    with ModelServer("openai", MODELS["openai"]) as server:
        error, _ = await failure(config_for(server, provider="ollama"))
        assert str(error) == (
            f"the model server at {server.url} has no chat endpoint for ollama (HTTP 404): "
            "check the provider and base URL"
        )


async def test_an_unknown_provider() -> None:
    config = models.ModelConfig("mistral", "http://127.0.0.1:1", "x")
    error, _ = await failure(config)
    assert str(error) == "unknown model provider 'mistral': use one of ollama, openai, anthropic"


# -- failures in the middle ------------------------------------------------------------------


async def test_an_error_mid_stream_keeps_the_text(server: ModelServer) -> None:
    server.fail_after = 2
    error, seen = await failure(config_for(server))
    assert isinstance(error, models.ModelCut)
    assert seen == server.tokens[:2]
    assert str(error) == (
        f"the model server reported an error: {MID_STREAM_ERRORS[server.provider]}"
    )


async def test_an_error_before_any_text_is_not_a_cut(server: ModelServer) -> None:
    server.fail_after = 0
    error, seen = await failure(config_for(server))
    assert not isinstance(error, models.ModelCut) and seen == []
    assert str(error) == (
        f"the model server reported an error: {MID_STREAM_ERRORS[server.provider]}"
    )


async def test_a_cut_connection_keeps_the_text(server: ModelServer) -> None:
    server.cut_after = 2
    error, seen = await failure(config_for(server))
    assert isinstance(error, models.ModelCut)
    assert str(error) == "the connection to the model server was cut"
    assert seen == server.tokens[:2]
    assert server.served_chunks() == 2


async def test_a_cut_before_any_text_is_not_a_cut(server: ModelServer) -> None:
    server.cut_after = 0
    error, seen = await failure(config_for(server))
    assert not isinstance(error, models.ModelCut) and seen == []
    assert str(error) == "the connection to the model server was cut"


async def test_something_unreadable_mid_stream(server: ModelServer) -> None:
    server.garble_after = 1
    error, seen = await failure(config_for(server))
    assert isinstance(error, models.ModelCut)
    assert str(error) == "the model server sent something unreadable"
    assert seen == server.tokens[:1]


async def test_something_unreadable_from_the_start(server: ModelServer) -> None:
    server.garble_after = 0
    error, seen = await failure(config_for(server))
    assert not isinstance(error, models.ModelCut) and seen == []
    assert str(error) == "the model server sent something unreadable"


async def test_a_stream_that_goes_silent_is_cut(server: ModelServer) -> None:
    server.hold_after = 2
    error, seen = await failure(config_for(server, idle_timeout=0.5))
    assert isinstance(error, models.ModelCut)
    assert str(error) == "the model stopped sending text for 0.5 s"
    assert seen == server.tokens[:2]
    await eventually(lambda: server.abandoned == 1)  # the server was told by the connection


# -- leaving early ---------------------------------------------------------------------------


async def test_leaving_early_drops_the_connection(server: ModelServer) -> None:
    """What /stop relies on: the model server learns at once that nobody listens."""
    server.hold_after = 2
    seen: list[str] = []
    async with contextlib.aclosing(models.stream(config_for(server), SYSTEM, TURNS)) as chunks:
        async for chunk in chunks:
            seen.append(chunk)
            if len(seen) == 2:
                break
    assert seen == server.tokens[:2]
    await eventually(lambda: server.abandoned == 1)
    assert server.served_chunks() == 2


async def test_cancelling_a_held_stream_drops_the_connection(server: ModelServer) -> None:
    server.hold_after = 1
    seen: list[str] = []

    async def answer() -> None:
        async for chunk in models.stream(config_for(server), SYSTEM, TURNS):
            seen.append(chunk)

    task = asyncio.create_task(answer())
    await eventually(lambda: seen == server.tokens[:1])
    assert server.holding.is_set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: server.abandoned == 1)
    assert seen == server.tokens[:1]


async def test_a_released_hold_finishes_the_answer(server: ModelServer) -> None:
    server.hold_after = 3
    task = asyncio.create_task(collect(config_for(server)))
    await asyncio.to_thread(server.holding.wait, 10)
    assert server.served_chunks() == 3
    server.release()
    assert await task == server.tokens


# -- proxies ---------------------------------------------------------------------------------


async def test_through_a_socks_proxy_the_proxy_resolves_the_name() -> None:
    with ModelServer("ollama") as server:
        async with Socks5Proxy({"ollama.test": "127.0.0.1"}) as proxy:
            config = config_for(
                server,
                base_url=f"http://ollama.test:{server.port}",
                proxy=f"socks5h://127.0.0.1:{proxy.port}",
            )
            assert await collect(config) == list(server.tokens)
            assert await models.check(config) is None
            assert proxy.requests == [Request("domain", "ollama.test", server.port)] * 2
            await relays_done()


async def test_a_proxy_that_cannot_reach_the_server() -> None:
    async with Socks5Proxy({}, replies={"model.test": 4}) as proxy:
        config = models.ModelConfig(
            "anthropic",
            "http://model.test:8080",
            MODELS["anthropic"],
            KEY,
            proxy=f"socks5h://127.0.0.1:{proxy.port}",
        )
        error, _ = await failure(config)
        said = str(error)
        checked = await models.check(config)
    del error
    await collect_the_proxy_socket()
    assert said == (
        "the model server at http://model.test:8080 is not reachable through the proxy "
        "(host unreachable)"
    )
    assert checked == "not reachable through the proxy: host unreachable"


async def test_a_proxy_that_is_down_is_named_without_its_password() -> None:
    port = closed_port()
    config = models.ModelConfig(
        "openai",
        "http://model.test:8000",
        MODELS["openai"],
        KEY,
        proxy=f"socks5h://olga:isolation-secret@127.0.0.1:{port}",
    )
    error, _ = await failure(config)
    assert str(error) == (
        f"the proxy at socks5h://127.0.0.1:{port} is not reachable (connection refused)"
    )
    assert await models.check(config) == "the proxy is not reachable: connection refused"


async def test_a_proxy_that_never_answers_cannot_hang_a_bot(silent_port: int) -> None:
    """httpcore puts no timeout on the SOCKS handshake; the deadlines here still hold."""
    config = models.ModelConfig(
        "ollama",
        "http://ollama.test:11434",
        "llama3.2",
        proxy=f"socks5h://127.0.0.1:{silent_port}",
        first_token_timeout=0.5,
    )
    async with httpx.AsyncClient(proxy=config.proxy, trust_env=False, timeout=None) as unbounded:
        error, _ = await failure(config, unbounded)
        said = str(error)
        checked = await models.check(config, unbounded, timeout=0.5)
    del error
    await collect_the_proxy_socket()
    assert said == "the model did not start answering within 0.5 s"
    assert checked == "not reachable: no answer within 0.5 s"


async def test_proxy_settings_in_the_environment_are_ignored(
    server: ModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert await collect(config_for(server)) == server.tokens
    assert await models.check(config_for(server)) is None


# -- check -----------------------------------------------------------------------------------


async def test_check_a_server_that_is_up(server: ModelServer) -> None:
    assert await models.check(config_for(server)) is None


async def test_check_ollama_names_with_and_without_latest() -> None:
    with ModelServer("ollama", "llama3.2") as server:
        assert await models.check(config_for(server, model="llama3.2:latest")) is None
        assert await models.check(config_for(server, model="LLaMA3.2")) is None
        assert await models.check(config_for(server, model="llama3.2:1b")) == (
            "model 'llama3.2:1b' is not installed: run `ollama pull llama3.2:1b`"
        )


@pytest.mark.parametrize("provider", list(MODELS))
async def test_check_a_server_that_is_down(provider: str) -> None:
    config = models.ModelConfig(provider, f"http://127.0.0.1:{closed_port()}", MODELS[provider])
    assert await models.check(config) == "not reachable: connection refused"


@pytest.mark.parametrize("provider", list(MODELS))
async def test_check_a_server_that_never_answers(provider: str, silent_port: int) -> None:
    config = models.ModelConfig(provider, f"http://127.0.0.1:{silent_port}", MODELS[provider])
    assert await models.check(config, timeout=0.5) == "not reachable: no answer within 0.5 s"


async def test_check_a_model_that_is_not_installed(server: ModelServer) -> None:
    server.installed = False
    model = MODELS[server.provider]
    if server.provider == "ollama":
        expected = "model 'llama3.2' is not installed: run `ollama pull llama3.2`"
    else:
        expected = f"model '{model}' is not available on the model server"
    assert await models.check(config_for(server)) == expected


async def test_check_a_refused_key(server: ModelServer) -> None:
    server.api_key = KEY
    assert await models.check(config_for(server, api_key="hunter2")) == (
        "API key refused (HTTP 401)"
    )
    assert await models.check(config_for(server, api_key="")) == "API key needed (HTTP 401)"


async def test_check_with_a_shared_client(server: ModelServer) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=None) as client:
        assert await models.check(config_for(server), client) is None
        assert not client.is_closed


# -- secrets ---------------------------------------------------------------------------------


def test_the_key_stays_out_of_the_config_repr() -> None:
    config = models.ModelConfig("openai", "http://127.0.0.1:1", "gpt-4o-mini", api_key=KEY)
    assert KEY not in repr(config)


async def test_a_key_the_server_repeats_is_not_said(server: ModelServer) -> None:
    """A server's error text is said in the room, so any key in it is taken out first."""
    server.error_status = 400
    server.error_message = f"this key is no good here: {KEY}"
    error, _ = await failure(config_for(server, api_key=KEY))
    assert str(error) == (
        "the model server rejected the request (HTTP 400): this key is no good here: [API key]"
    )
