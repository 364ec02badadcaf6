"""uvicorn's HTTP and WebSocket protocols, with the limits a hostile client needs (issue 10).

uvicorn parses whatever head it is sent (httptools joins a header's pieces with `+=`: a 128 MB
header costs minutes of CPU), keeps a socket open for as long as the client says nothing, and
answers every ping. The subclasses here override as little as they can to add:

- a cap on open TCP connections (`limits.sockets`, and never more than the file descriptor limit
  less 64): past it a new connection is answered 503 and closed at once;
- a size limit on each request head (`limits.header_bytes`): past it, 431 (held back a
  second, like every refusal of a request) and closed; the parser is never fed a byte of a
  head past the limit;
- a deadline for each request head (`limits.request_timeout`, from the connection, or from the
  first byte of the next request on a kept-alive one; each socket's drawn between three
  quarters of it and all of it, so that sockets opened together expire apart): 408 and
  closed; a socket that never sent a byte is just closed. uvicorn's `timeout_keep_alive`
  closes idle kept-alive ones between requests; the app's `auth.auth_timeout` closes
  WebSockets that do not authenticate;
- a token bucket on each WebSocket's pings (`limits.ping_rate` a second, a burst of ten times
  that and at least 10): past it the WebSocket is closed 4008.

Logs say how many, never who: no client address, header or cookie is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import random
import socket
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar, cast

import h11
import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from onionchat.protocol import Close

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from onionchat.config import Settings
else:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is a dependency, but uvicorn can do without: h11 then

        class HttpToolsProtocol(asyncio.Protocol):
            """A stand-in base: HttpTools is then never used."""

            missing = True


log = logging.getLogger("onionchat.http")

FD_RESERVE = 64  # descriptors kept for the database, tor's control port, bots, logs
WARN_EVERY = 10.0  # seconds between two warnings of a kind
HEAD_END = b"\r\n\r\n"
# A refused request (431, 408) is read no more and answered this long after: a flooder that
# reconnects on its answer makes one connection a second, not hundreds (a header flood
# reconnecting at once cost the node 300 µs a connection, 350 a second, most of it in the
# kernel, and the honest clients' p99 half as much again).
HOLD_SECONDS = 1.0
# The client may still be sending: closing with its data unread resets the connection, and
# the client might lose the answer. So the node sends EOF after it, and closes this long after.
LINGER_SECONDS = 1.0
ABORT_AFTER = 10.0  # seconds after its app is done that a WebSocket's socket is let go at last
LINGER_BYTES = 64 * 1024  # what a flooding WebSocket may still send once closed
SLICE = 1024  # bytes of WebSocket data parsed at a time: a flood is seen within one slice
# Each socket's deadline is drawn between this share of `request_timeout` and all of it: a
# thousand sockets opened at once then do not all time out in one tick (that held the loop
# 17 ms, measured with the bench's slowloris), and each is still cut within the bound.
SPREAD = 0.75
# A WebSocket's scope holds, under this key, a Flood: what the application does the moment
# its socket is closed for flooding (before any other frame of anyone is read): its penalty.
FLOODED = "onionchat.flooded"
# And under this one, what the application does when the server stops: close the connection
# itself, once what its client sent is committed and acknowledged (uvicorn would close it
# 1012 at once, and acks of messages still committing would never reach the client).
STOPPING = "onionchat.stopping"
# Seconds it has for that before uvicorn's close goes ahead: at most half the stop's grace,
# so that the close still comes before the connections are cut.
STOP_WAIT = 5.0


class Flood:
    """A socket's flood, told to the application: at once if it has said what to do, else
    when it does (a flood may come while the socket is still authenticating)."""

    def __init__(self) -> None:
        self.happened = False
        self._then: Callable[[], None] | None = None

    def then(self, action: Callable[[], None]) -> None:
        self._then = action
        if self.happened:
            action()

    def __call__(self) -> None:
        self.happened = True
        if self._then is not None:
            self._then()


BODY_RATE = 16 * 1024  # bytes a second a request body comes at, at least (an onion's is faster)


def socket_cap(sockets: int) -> tuple[int, str]:
    """The most TCP connections the node keeps open, and what sets it. The soft limit of file
    descriptors is first raised as far as the hard one allows, so that the setting applies."""
    try:
        import resource
    except ImportError:  # not on Unix
        return sockets, "limits.sockets"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = sockets + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY or soft - FD_RESERVE >= sockets:
        return sockets, "limits.sockets"
    return max(1, soft - FD_RESERVE), f"the file descriptor limit ({soft}) less {FD_RESERVE}"


def response(status: int, text: str, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole plain-text response that closes the connection."""
    body = text.encode()
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    lines.append(
        b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % len(body)
    )
    return b"".join(lines) + body


class Tally:
    """Counts what happens and has it said at most once per WARN_EVERY seconds: at once the
    first time, then the count since, when the period is over."""

    def __init__(self, say: Callable[[int], None]) -> None:
        self._say = say
        self._count = 0
        self._next = 0.0
        self._flush: asyncio.TimerHandle | None = None

    def add(self) -> None:
        self._count += 1
        now = time.monotonic()
        if now >= self._next:
            self._report()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self._next - now, self._report)

    def _report(self) -> None:
        self._flush = None
        if self._count:
            self._say(self._count)
            self._count = 0
            self._next = time.monotonic() + WARN_EVERY


class Gate:
    """The node's open TCP connections: one more than `cap` is refused."""

    def __init__(self, cap: int, why: str) -> None:
        self.cap = cap
        self.why = why
        self.open = 0
        self._high = cap * 8 // 10
        self._high_next = 0.0
        self.refused = Tally(self._say_refused)

    def admit(self) -> bool:
        """Count a new connection (refused ones too, until they are closed): may it stay?"""
        self.open += 1
        if self.open > self.cap:
            self.refused.add()
            return False
        if self.open == self._high + 1 and time.monotonic() >= self._high_next:
            self._high_next = time.monotonic() + WARN_EVERY
            log.warning(
                "%d TCP connections open, over 80%% of the %d allowed (%s)",
                self.open,
                self.cap,
                self.why,
                extra={"event": "sockets_high", "open": self.open, "cap": self.cap},
            )
        return True

    def release(self) -> None:
        self.open -= 1

    def _say_refused(self, count: int) -> None:
        served = min(self.open, self.cap)  # `open` counts the refused until they are closed
        log.warning(
            "refused %d new TCP connection(s) with 503: %d open, at most %d (%s)",
            count,
            served,
            self.cap,
            self.why,
            extra={"event": "sockets_refused", "refused": count, "open": served, "cap": self.cap},
        )


def _say_floods(count: int) -> None:
    log.warning(
        "closed %d WebSocket(s) flooding pings (4008)",
        count,
        extra={"event": "ping_flood", "closed": count},
    )


@dataclasses.dataclass(frozen=True)
class Policy:
    """The limits, and the node-wide counts, the protocols of one server share."""

    header_bytes: int
    request_timeout: float
    write_timeout: float
    ping_rate: float
    ping_burst: float
    gate: Gate
    floods: Tally
    stop_wait: float

    def deadline(self) -> float:
        return self.request_timeout * random.uniform(SPREAD, 1.0)

    def body_deadline(self, length: int | None) -> float:
        """A body's time: the head's, and a second more for each `BODY_RATE` bytes it says
        it has (a file sent through Tor), so that only a body slower than that is cut off."""
        return self.deadline() + (length or 0) / BODY_RATE


class _Stalls(asyncio.Protocol):
    """A client that reads nothing while the node has data for it (the transport's buffer
    stays over its high-water mark) holds a socket and its buffers for ever, and makes a
    graceful close wait for ever too: past `write_timeout` it is cut off."""

    policy: ClassVar[Policy]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    _stall: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall is None:
            self._stall = self.loop.call_later(self.policy.write_timeout, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unstall()

    def _unstall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None


class _Guarded(_Stalls):
    """What both HTTP protocols add: the socket cap, the head's deadline, the answer to a
    refused request. Comes first in their bases, so `super()` here is uvicorn's protocol."""

    policy: ClassVar[Policy]
    # uvicorn's, set in its __init__ and connection_made:
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    server_state: ServerState
    flow: FlowControl
    cycle: Any  # each protocol has its own RequestResponseCycle; both have what is used here

    _timer: asyncio.TimerHandle | None = None
    _heard = False  # the client sent a byte
    _stopped = False  # refused: nothing more is read or parsed
    _upgraded = False  # a WebSocket protocol has the transport now
    _head_bytes = 0  # of the request head under way, received so far
    _tail = b""  # its last 3 bytes, for a blank line split across reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.policy.gate.admit():
            self.transport = cast(asyncio.Transport, transport)  # (uvloop's is no subclass)
            self._stopped = True
            gate = self.policy.gate
            text = f"this node has {gate.cap} connections open, its most: try again later\n"
            self.transport.write(response(503, text, self.server_state.default_headers))
            self.transport.close()
            return
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._unstall()
        self.policy.gate.release()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._timer = self.loop.call_later(self.policy.deadline(), self._head_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_end(self, data: bytes, room: int) -> int:
        """How many bytes of `data` end the open head (its blank line included), if it ends
        within `room` bytes; else -1."""
        if self._tail:
            found = (self._tail + data[:3]).find(HEAD_END)
            if found >= 0:
                end = found + len(HEAD_END) - len(self._tail)
                return end if end <= room else -1
        found = data.find(HEAD_END, 0, room)
        return found + len(HEAD_END) if found >= 0 else -1

    def _head_timeout(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if not self._heard:  # a silent socket: nothing to answer
            self._stopped = True
            self.transport.close()
            return
        seconds = self.policy.request_timeout
        self._refuse(408, f"the request head did not arrive within {seconds:g} seconds\n")

    def _head_too_large(self) -> None:
        self._refuse(431, f"the request head is over {self.policy.header_bytes} bytes\n")

    def _refuse(self, status: int, text: str) -> None:
        """Answer `status`, held back, and close. With a response under way (a pipelined
        request), the connection is closed once it is sent instead, unanswered."""
        self._stopped = True
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self.transport.pause_reading()
        answer = response(status, text, self.server_state.default_headers)
        self._timer = self.loop.call_later(HOLD_SECONDS, self._answer, answer)

    def _answer(self, answer: bytes) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        self.transport.write(answer)
        if not self.transport.can_write_eof():  # TLS
            self.transport.close()
            return
        self.transport.write_eof()
        self._timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)


class HttpTools(_Guarded, HttpToolsProtocol):
    """uvicorn's httptools protocol, fed at most `header_bytes` of each request head.

    Data is fed in pieces that end where a head ends (its blank line, found by `find`) or a
    body of known length does, so that the bytes counted are those of the current head, for
    each request of a kept-alive connection too. After a chunked body the parser finds the end:
    a head begun in that piece is counted from the bytes after the body data (an upper bound).
    """

    _head_open = True  # between a message's end (or the connection's start) and a head's end
    _body_left: int | None = None  # bytes of the body not yet fed, if its length is known
    _body_fed = 0  # body bytes in the piece being fed
    _began = False  # a message began in the piece being fed

    def data_received(self, data: bytes) -> None:
        if self._stopped:  # refused: read no more, what came with the refusal ignored
            return
        self._heard = True
        limit = self.policy.header_bytes
        while data and not (self._stopped or self._upgraded or self.transport.is_closing()):
            if self._head_open:
                if self._timer is None:
                    self._arm()
                room = limit - self._head_bytes
                end = self._head_end(data, room)
                if end < 0:
                    if len(data) > room:
                        self._head_too_large()
                        return
                    end = len(data)
                piece, data = (data, b"") if end == len(data) else (data[:end], data[end:])
                self._head_bytes += len(piece)
                self._tail = (self._tail + piece[-3:])[-3:]
                super().data_received(piece)  # ends the head if `end` was found
            elif self._body_left:
                end = self._body_left
                piece, data = (data, b"") if end >= len(data) else (data[:end], data[end:])
                super().data_received(piece)
            else:  # a chunked body: the parser alone knows where it ends
                self._body_fed, self._began = 0, False
                super().data_received(data)
                if self._head_open and self._began:
                    self._head_bytes = len(data) - self._body_fed
                    self._tail = data[-3:]
                    if self._head_bytes > limit:
                        self._head_too_large()
                    elif self._timer is None:
                        self._arm()
                return

    def on_message_begin(self) -> None:
        self._began = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._disarm()
        self._body_left = _body_length(self.headers)
        if self._body_left != 0:  # the body too must come within the deadline
            deadline = self.policy.body_deadline(self._body_left)
            self._timer = self.loop.call_later(deadline, self._body_timeout)
        super().on_headers_complete()

    def _body_timeout(self) -> None:
        """A body trickled in slower than the deadline: the application, waiting for it, is
        told the client is gone."""
        self._timer = None
        self._stopped = True
        self.transport.close()

    def on_body(self, body: bytes) -> None:
        self._body_fed += len(body)
        if self._body_left is not None:
            self._body_left -= len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        self._head_open, self._head_bytes, self._tail, self._body_left = True, 0, b"", None
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._upgraded = True
        self._disarm()
        super().handle_websocket_upgrade()


def _body_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """A request's body length from its (checked) headers; None if chunked."""
    length = 0
    for name, value in headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None
    return length


class H11(_Guarded, H11Protocol):
    """uvicorn's h11 protocol, for when httptools is missing. h11 parses in linear time what
    it buffers; the head is counted here as it arrives. A pipelined head, parsed from h11's
    buffer once the response before it is sent, is refused by h11 itself if incomplete over
    `h11_max_incomplete_event_size` (the config sets it to `header_bytes`): 431 here too."""

    def data_received(self, data: bytes) -> None:
        if self._stopped:  # refused: read no more, what came with the refusal ignored
            return
        self._heard = True
        if self.conn.their_state is h11.IDLE:  # a head under way: count it
            if self._timer is None:
                self._arm()
            room = self.policy.header_bytes - self._head_bytes
            end = self._head_end(data, room)
            if end < 0 and len(data) > room:
                self._head_too_large()
                return
            self._head_bytes += len(data) if end < 0 else end
            self._tail = (self._tail + data[-3:])[-3:]
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._head_bytes, self._tail = 0, b""
            self._disarm()

    def send_400_response(self, msg: str) -> None:
        if len(self.conn.trailing_data[0]) > self.policy.header_bytes:
            self._head_too_large()
            return
        super().send_400_response(msg)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._upgraded = True
        self._disarm()
        super().handle_websocket_upgrade(event)


class WebSockets(_Stalls, WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, with a token bucket on the client's pings."""

    policy: ClassVar[Policy]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._pings = self.policy.ping_burst
        self._pinged = self.loop.time()
        self._flooded = False
        self._lost = False
        self._linger = LINGER_BYTES
        self._abort_timer: asyncio.TimerHandle | None = None
        self._stop_timer: asyncio.TimerHandle | None = None

    async def run_asgi(self) -> None:
        """uvicorn then closes the transport, which waits for its buffer to be written: a
        client that stopped reading (closed 4009 as too slow) would keep its socket, and its
        descriptor, for ever. Past ABORT_AFTER it is aborted instead. The timer goes with the
        connection: held for ABORT_AFTER, it would keep each closed one's protocol (17 KB)
        alive, and a client that reconnects as fast as it is refused would pile them up."""
        await super().run_asgi()
        if not self._lost:
            self._abort_timer = self.loop.call_later(ABORT_AFTER, self._abort)

    def _abort(self) -> None:
        if not self._lost:
            self.transport.abort()

    def shutdown(self) -> None:
        """The application closes (STOPPING), with uvicorn's close as the fallback."""
        hook = (getattr(self, "scope", None) or {}).get(STOPPING)
        wait = self.policy.stop_wait
        if not wait or hook is None or self.close_sent or self._flooded or self._stop_timer:
            super().shutdown()
            return
        hook()
        self._stop_timer = self.loop.call_later(wait, super().shutdown)

    def data_received(self, data: bytes) -> None:
        """Parsed a slice at a time: a read of 256 KiB holds 40,000 pings, which the parser
        would decode (and answer) all before the first of them reached the bucket."""
        if self._flooded:
            self._linger -= len(data)
            if self._linger < 0:
                self.transport.abort()
            return
        for start in range(0, len(data), SLICE):
            super().data_received(data[start : start + SLICE] if len(data) > SLICE else data)
            if self._flooded or self.transport.is_closing():
                return

    def handle_ping(self) -> None:
        if self._flooded:
            return
        now = self.loop.time()
        rate, burst = self.policy.ping_rate, self.policy.ping_burst
        self._pings = min(burst, self._pings + (now - self._pinged) * rate)
        self._pinged = now
        if self._pings < 1:
            self._close_flooding()
            return
        self._pings -= 1
        super().handle_ping()

    def _close_flooding(self) -> None:
        self._flooded = True
        hook = (getattr(self, "scope", None) or {}).get(FLOODED)
        if hook is not None:
            hook()
        self.disconnected = True  # the app's sends now raise ClientDisconnected
        self.conn.data_to_send()  # the flood's pongs go unsent
        reason = "flooding: too many pings"
        self.conn.fail(Close.FLOODING, reason)  # and what still comes is dropped unparsed
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": int(Close.FLOODING), "reason": reason}
        )
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.policy.floods.add()
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # The client closes on our close frame and EOF; until it does (LINGER_SECONDS at most),
        # its pings are read and dropped: closing with them unread could lose the close frame.
        self.transport.write_eof()
        self.close_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        for timer in (self._abort_timer, self._stop_timer):
            if timer is not None:
                timer.cancel()
        self._abort_timer = self._stop_timer = None
        self._unstall()
        super().connection_lost(exc)
        self.policy.gate.release()  # counted by the HTTP protocol it took over from


def protocols(settings: Settings) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """The HTTP and WebSocket protocol classes for uvicorn.Config(http=..., ws=...), sharing
    one server's limits and counts."""
    limits = settings.limits
    cap, why = socket_cap(limits.sockets)
    if cap < limits.sockets:
        log.info(
            "at most %d TCP connections: %s is under limits.sockets (%d)",
            cap,
            why,
            limits.sockets,
            extra={"event": "sockets_cap", "cap": cap},
        )
    policy = Policy(
        header_bytes=limits.header_bytes,
        request_timeout=limits.request_timeout,
        write_timeout=limits.write_timeout,
        ping_rate=limits.ping_rate,
        ping_burst=max(10.0, 10 * limits.ping_rate),
        gate=Gate(cap, why),
        floods=Tally(_say_floods),
        stop_wait=min(STOP_WAIT, int(settings.server.shutdown_grace) / 2),
    )

    class Ws(WebSockets):
        pass

    Ws.policy = policy
    if not getattr(HttpToolsProtocol, "missing", False):

        class Http(HttpTools):
            pass

        Http.policy = policy
        return Http, Ws

    class Fallback(H11):
        pass

    Fallback.policy = policy
    return Fallback, Ws


class QuietServer(uvicorn.Server):
    """uvicorn raises the signal it stopped for again once stopped: Ctrl-C then ends in a
    KeyboardInterrupt traceback (exit 130) and SIGTERM kills the process. The node has stopped
    cleanly by then (WebSockets told 1012, requests finished or cut after the grace period,
    the store committed, tor stopped), so it just exits."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Once the node is built, what it built (the modules, the store, the parts: some
        47,000 objects) is frozen out of the garbage collector's way: a full collection
        walked them all (25 ms here) whenever clients made garbage enough (a flood of
        connections does), and held every message for that long."""
        await super().startup(sockets)
        gc.freeze()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()
