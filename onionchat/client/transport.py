"""How the client reaches a node: HTTP and one WebSocket, both through the SOCKS proxy if there
is one (--socks, or tor's for an onion), never through proxy settings picked up from the
environment; TLS checked against the system's CAs or --ca; and which hop failed, told plainly.

Through a proxy the client first opens one stream of its own to the node and closes it: the
proxy's refusal then arrives whole (tor's ExtendedErrors codes included, which the HTTP and
WebSocket libraries hide), and the user learns whether the proxy, the Tor network, the onion
service or the node failed. Tor reuses the circuit for what follows, so it costs little.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
import ssl
import struct
from pathlib import Path
from typing import Any, TypeVar

import httpx
import socksio
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI
from websockets.exceptions import ProxyError as WebSocketProxyError

from onionchat.client.errors import ChatError
from onionchat.client.options import TOR_SOCKS, Options

USER_AGENT = "OnionChat"  # the same for every client: no versions to fingerprint
MAX_FRAME = 16 * 1024 * 1024  # a `joined` frame carries a page of history, sealed or not
_E = TypeVar("_E", bound=BaseException)
# OpenSSL's verify codes that mean "signed by a CA you do not trust": --ca is the way out.
UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})


# What a SOCKS5 proxy's reply code means (RFC 1928, then tor's ExtendedErrors, proposal 304).
REPLIES = {
    0x01: "general failure",
    0x02: "the proxy's rules do not allow this connection",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused: is the node running on that port?",
    0x06: "timed out",
    0x07: "the proxy does not support CONNECT",
    0x08: "the proxy does not support this kind of address",
    0xF0: "the onion service's descriptor cannot be found on the Tor network: the node is "
    "offline, or not published yet (allow a minute after it starts), or the address is wrong",
    0xF1: "the onion service's descriptor is invalid: is your tor up to date?",
    0xF2: "the introduction to the onion service failed: the node may be offline, try again",
    0xF3: "the rendezvous with the onion service failed: try again",
    0xF4: "the onion service is private and needs client authorization: ask its operator for "
    "a key, add it to your tor's ClientOnionAuthDir and reload tor",
    0xF5: "the client authorization was refused: the key for this onion in your tor's "
    "ClientOnionAuthDir is wrong or revoked, ask its operator for a new one",
    0xF6: "tor says this is not a valid onion address",
    0xF7: "the introduction to the onion service timed out: the node may be offline, try again",
}


def http_client(options: Options, timeout: float | None = None) -> httpx.AsyncClient:
    """trust_env=False: proxy variables in the environment must never reroute us."""
    return httpx.AsyncClient(
        base_url=options.url,
        proxy=options.proxy,
        transport=httpx.AsyncHTTPTransport(uds=str(options.unix)) if options.unix else None,
        verify=tls_context(options.ca) if options.url.startswith("https:") else True,
        trust_env=False,
        timeout=timeout or options.timeout,
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
    )


async def open_websocket(options: Options) -> ClientConnection:
    """No compression (secrets next to chosen text would leak), no proxy from the environment."""
    common: dict[str, Any] = {
        "compression": None,
        "max_size": MAX_FRAME,
        "open_timeout": options.timeout,
        "ping_timeout": max(20.0, options.timeout),
        "user_agent_header": USER_AGENT,
    }
    try:
        if options.unix is not None:
            return await unix_connect(str(options.unix), options.ws_url, **common)
        return await connect(
            options.ws_url,
            proxy=options.proxy,
            ssl=tls_context(options.ca) if options.ws_url.startswith("wss:") else None,
            **common,
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
    """Say which hop failed: the SOCKS proxy, the proxy's way to the node, TLS, or the node."""
    node = options.where
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return timed_out(options)
    code = _reply_code(exc)
    if options.socks and code is not None:
        return refused(options, code)
    certificate = _find(exc, ssl.SSLCertVerificationError)
    if certificate is not None:
        return untrusted(options, certificate)
    if options.socks:
        if isinstance(exc, httpx.ProxyError | WebSocketProxyError | socksio.SOCKSError):
            return f"the SOCKS proxy at {options.socks} cannot reach {node}: {_reason(exc)}"
        if isinstance(exc, httpx.ConnectError | OSError) and _find(exc, ssl.SSLError) is None:
            return no_proxy(options, exc)
    tls = _find(exc, ssl.SSLError)
    if tls is not None:
        why = (tls.reason or "failed").replace("_", " ").lower()
        return f"the TLS handshake with {node} failed ({why}): does it serve https://?"
    if isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError) and options.url.startswith(
        "http:"
    ):
        return (
            f"{node} closed the connection without an HTTP answer ({_reason(exc)}): "
            f"if it serves HTTPS, connect to https://{node}"
        )
    if isinstance(exc, httpx.ConnectError | OSError):
        return f"cannot reach the node at {node}: {_reason(exc)}"
    return f"the connection to {node} failed: {_reason(exc)}"


def timed_out(options: Options) -> str:
    via = f" through the SOCKS proxy at {options.socks}" if options.socks else ""
    slow = " (onion circuits can be slow: try a longer --timeout)" if options.onion else ""
    return f"timed out after {options.timeout:g} s connecting to {options.where}{via}{slow}"


def no_proxy(options: Options, exc: BaseException) -> str:
    """The first hop: nothing (or something else) listens where the proxy should be."""
    hint = "is tor running? Start it, or give its SocksPort with --socks HOST:PORT"
    if options.onion and options.socks == TOR_SOCKS:
        hint += " (Tor Browser's is 127.0.0.1:9150)"
    return f"no SOCKS proxy at {options.socks} ({_reason(exc)}): {hint}"


def refused(options: Options, code: int) -> str:
    """The proxy answered, but could not reach the node: its reply code says which hop."""
    reason = REPLIES.get(code, f"reply code 0x{code:02X}")
    if options.onion and code in (0x01, 0x04):
        reason += " (tor tells more with the ExtendedErrors flag on its SocksPort)"
    return f"the SOCKS proxy at {options.socks} cannot reach {options.where}: {reason}"


def untrusted(options: Options, exc: ssl.SSLCertVerificationError) -> str:
    why = _lower_first(str(exc.verify_message or exc.reason or exc).rstrip("."))
    hint = " (use --ca FILE for a private CA)" if exc.verify_code in UNKNOWN_ISSUER else ""
    return f"the certificate of {options.where} is not trusted: {why}{hint}"


@functools.cache
def tls_context(ca: Path | None) -> ssl.SSLContext:
    """The system's CAs, or only --ca's: certificates and names are always checked."""
    return ssl.create_default_context(cafile=ca)


async def probe(options: Options) -> None:
    """Through a proxy, open one stream to the node and close it again; raise ChatError naming
    the hop that failed. Names go to the proxy as names: nothing is resolved here."""
    if options.socks is None:
        return
    socks = options.socks
    greeted = False  # a timeout before the proxy's greeting is the proxy's, after it the route's
    host, _, port = socks.rpartition(":")
    try:
        async with asyncio.timeout(options.timeout):
            try:
                reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            except OSError as exc:
                raise ChatError(no_proxy(options, exc)) from None
            try:
                await _socks_connect(options, socks, reader, writer)
                greeted = True
                _, code = await reader.readexactly(2)
                if code != 0:
                    raise ChatError(refused(options, code))
            except (asyncio.IncompleteReadError, ConnectionError):
                raise ChatError(
                    f"{socks} closed the connection in the SOCKS5 handshake: is it a SOCKS5 proxy?"
                ) from None
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        if greeted:
            raise ChatError(timed_out(options)) from None
        raise ChatError(
            f"the SOCKS proxy at {socks} did not answer within {options.timeout:g} s: "
            "is it a SOCKS5 proxy?"
        ) from None


async def _socks_connect(
    options: Options, socks: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """RFC 1928 up to the CONNECT request: no authentication, the node's name as a name."""
    writer.write(b"\x05\x01\x00")
    version, method = await reader.readexactly(2)
    if version != 5:
        raise ChatError(f"{socks} is not a SOCKS5 proxy")
    if method != 0:
        raise ChatError(f"the SOCKS proxy at {socks} wants a password")
    writer.write(b"\x05\x01\x00" + _address(options.host) + struct.pack("!H", options.port))


def _address(host: str) -> bytes:
    """A SOCKS5 address: IP addresses as such, any name as a name for the proxy to resolve."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            name = host.encode("idna")
        except UnicodeError:
            name = b""
        if not 0 < len(name) < 256:
            raise ChatError(f"{host} is not a host name a SOCKS proxy can take") from None
        return b"\x03" + bytes([len(name)]) + name
    return (b"\x01" if ip.version == 4 else b"\x04") + ip.packed


def _reply_code(exc: BaseException) -> int | None:
    """python-socks keeps the proxy's reply code (websockets wraps it in its own error)."""
    for current in _chain(exc):
        code = getattr(current, "error_code", None)
        if isinstance(code, int):
            return code
    return None


def _find(exc: BaseException, kind: type[_E]) -> _E | None:
    return next((e for e in _chain(exc) if isinstance(e, kind)), None)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and contexts, and the members of exception groups."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    out: list[BaseException] = []
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        out.append(current)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return out


def _reason(exc: BaseException) -> str:
    """The most telling cause in an exception chain: an OS error ("connection refused") first."""
    chain = _chain(exc)
    for current in chain:
        if isinstance(current, OSError) and not isinstance(current, ssl.SSLError) and current.errno:
            # asyncio's strerror is "Connect call failed (...)": the errno says it better.
            text = os.strerror(current.errno) if current.errno > 0 else current.strerror
            return _lower_first(text or os.strerror(current.errno))
    last = chain[-1]
    return _lower_first((str(last) or type(last).__name__).rsplit(": ", 1)[-1].rstrip("."))


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
