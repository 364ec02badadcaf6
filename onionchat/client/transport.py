"""How the client reaches a node: HTTP and one WebSocket, both through --socks if given, never
through proxy settings picked up from the environment; and which hop failed, told plainly."""

from __future__ import annotations

import os

import httpx
import socksio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.exceptions import ProxyError as WebSocketProxyError

from onionchat.client.errors import ChatError
from onionchat.client.options import Options

USER_AGENT = "OnionChat"  # the same for every client: no versions to fingerprint
MAX_FRAME = 16 * 1024 * 1024  # a `joined` frame carries a page of history, sealed or not


def http_client(options: Options, timeout: float | None = None) -> httpx.AsyncClient:
    """trust_env=False: proxy variables in the environment must never reroute us."""
    return httpx.AsyncClient(
        base_url=options.url,
        proxy=options.proxy,
        trust_env=False,
        timeout=timeout or options.timeout,
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
    )


async def open_websocket(options: Options) -> ClientConnection:
    """No compression (secrets next to chosen text would leak), no proxy from the environment."""
    try:
        return await connect(
            options.ws_url,
            proxy=options.proxy,
            compression=None,
            max_size=MAX_FRAME,
            open_timeout=options.timeout,
            ping_timeout=max(20.0, options.timeout),
            user_agent_header=USER_AGENT,
        )
    except InvalidStatus as exc:
        raise ChatError(
            f"the node refused the WebSocket at {options.ws_url}: HTTP {exc.response.status_code}"
        ) from None
    except InvalidURI as exc:
        raise ChatError(f"bad WebSocket address {options.ws_url}: {exc}") from None
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise ChatError(unreachable(options, exc)) from None


def unreachable(options: Options, exc: BaseException) -> str:
    """Say which hop failed: the SOCKS proxy, the proxy's way to the node, or the node."""
    node = options.where
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        via = f" through the SOCKS proxy at {options.socks}" if options.socks else ""
        return f"timed out after {options.timeout:g} s connecting to {node}{via}"
    if options.socks:
        if isinstance(exc, httpx.ProxyError | WebSocketProxyError | socksio.SOCKSError):
            return f"the SOCKS proxy at {options.socks} cannot reach {node}: {_reason(exc)}"
        if isinstance(exc, httpx.ConnectError | OSError):
            return f"cannot reach the SOCKS proxy at {options.socks}: {_reason(exc)}"
    if isinstance(exc, httpx.ConnectError | OSError):
        return f"cannot reach the node at {node}: {_reason(exc)}"
    return f"the connection to {node} failed: {_reason(exc)}"


def _reason(exc: BaseException) -> str:
    """The most telling cause in an exception chain: an OS error ("connection refused") first."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    last = exc
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        last = current
        if isinstance(current, OSError) and current.errno is not None:
            # asyncio's strerror is "Connect call failed (...)": the errno says it better.
            text = os.strerror(current.errno) if current.errno > 0 else current.strerror
            return _lower_first(text or os.strerror(current.errno))
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return _lower_first((str(last) or type(last).__name__).rsplit(": ", 1)[-1].rstrip("."))


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
