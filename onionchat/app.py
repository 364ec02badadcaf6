"""The Starlette application: HTTP endpoints, the WebSocket endpoint, security headers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from onionchat import PROTOCOL_VERSION, __version__, cookies, i18n, names, nojs, protocol, server
from onionchat.auth import (
    COOKIE,
    DEVICE_COOKIE,
    SALT_BYTES,
    SECRET_BYTES,
    AuthError,
    Session,
    b64decode,
)
from onionchat.auth import b64encode as b64
from onionchat.config import Settings
from onionchat.http import FLOODED, STOPPING, Flood
from onionchat.hub import Connection
from onionchat.i18n import say
from onionchat.node import Node, Refused
from onionchat.protocol import Auth, Close, Code, ProtocolError
from onionchat.store import Room
from onionchat.tor import OnionService, Reporter

log = logging.getLogger("onionchat.app")

MAX_BODY = 16 * 1024
CLOSE_TIMEOUT = 5.0
MAX_FRAMES_BEFORE_AUTH = 10
MAX_AUTH_FRAME = 1024
HOLD = 5.0  # seconds a penalized flooder's refusal is held back at most
HELD = 256  # such refusals held back at once, at most
BATCH_CHARS = 65536
PIPELINE = 32  # a WebSocket's messages committing while its next frames are read, at most
# Every feature a page could ask for, denied but one: the chat needs none of the others.
ALLOWED_FEATURES = ("clipboard-write=(self)",)  # the invite link's Copy button, on a click
DENIED_FEATURES = (
    "accelerometer",
    "ambient-light-sensor",
    "attribution-reporting",
    "autoplay",
    "bluetooth",
    "browsing-topics",
    "camera",
    "clipboard-read",
    "compute-pressure",
    "display-capture",
    "document-domain",
    "encrypted-media",
    "fullscreen",
    "gamepad",
    "geolocation",
    "gyroscope",
    "hid",
    "identity-credentials-get",
    "idle-detection",
    "interest-cohort",
    "local-fonts",
    "magnetometer",
    "microphone",
    "midi",
    "otp-credentials",
    "payment",
    "picture-in-picture",
    "publickey-credentials-create",
    "publickey-credentials-get",
    "screen-wake-lock",
    "serial",
    "speaker-selection",
    "storage-access",
    "usb",
    "web-share",
    "window-management",
    "xr-spatial-tracking",
)
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        b"connect-src 'self'; font-src 'self'; manifest-src 'self'; frame-ancestors 'none'; "
        b"base-uri 'none'; form-action 'self'",
    ),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (
        b"permissions-policy",
        ", ".join((*(f"{f}=()" for f in DENIED_FEATURES), *ALLOWED_FEATURES)).encode(),
    ),
    (b"cache-control", b"no-store"),
]

Username = Annotated[str, msgspec.Meta(max_length=128)]
B64 = Annotated[str, msgspec.Meta(max_length=128)]
T = TypeVar("T")


class PreloginBody(msgspec.Struct, forbid_unknown_fields=True):
    username: Username


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    salt: B64
    iterations: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)]
    secret: B64
    invite: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    answer: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    secret: B64
    device: B64 | None = None  # the `device` an earlier login of this name answered


# A response may set these itself (the no-JS pages frame their own message list).
OWN_HEADERS = frozenset({b"content-security-policy", b"x-frame-options"})


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                own = {name for name, _ in headers if name in OWN_HEADERS}
                message["headers"] = headers + [h for h in SECURITY_HEADERS if h[0] not in own]
            await send(message)

        await self.app(scope, receive, with_headers)


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class HostCheck:
    """Answer only to the node's own names (its onion, `server.host`, loopback, `server.hosts`):
    a page on another name that resolves to 127.0.0.1 (DNS rebinding) gets 421."""

    def __init__(self, app: ASGIApp, settings: Settings, onion: Callable[[], str]) -> None:
        self.app = app
        extra = {h.strip().lower() for h in settings.server.hosts.split(",") if h.strip()}
        self.hosts = LOOPBACK_HOSTS | {settings.server.host.lower()} | extra
        self.onion = onion

    def allowed(self, host: str) -> bool:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower().rstrip(".")
        if name in self.hosts:
            return True
        address = self.onion()
        return bool(address) and name == f"{address}.onion"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
            if len(hosts) != 1 or not self.allowed(hosts[0]):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                response = Response(
                    "this node does not answer to that host name\n", 421, media_type="text/plain"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def problem(code: Code, message: str, status: int, **headers: str) -> JSONResponse:
    return JSONResponse({"error": code.value, "message": message}, status, headers=headers)


async def _body(request: Request, kind: type[T]) -> T:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise AuthError(Code.BAD_FRAME, say("send the body as application/json"), 415)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise AuthError(Code.TOO_LARGE, say("the body is over {max} bytes", max=MAX_BODY), 413)
        chunks.append(chunk)
    try:
        return msgspec.json.decode(b"".join(chunks), type=kind)
    except msgspec.ValidationError as exc:
        raise AuthError(Code.BAD_FRAME, say("invalid body: {exc}", exc=exc), 400) from None
    except msgspec.DecodeError as exc:
        raise AuthError(Code.BAD_JSON, say("malformed JSON: {exc}", exc=exc), 400) from None


def _said(request: Request, text: str) -> str:
    """An answer's words in the language the request accepts (the page sends its own)."""
    return i18n.said(i18n.choose(None, request.headers.get("accept-language")), text)


def _node(conn: HTTPConnection) -> Node:
    node: Node = conn.app.state.node
    return node


def _session_response(
    request: Request, user: str, token: str, expires: int, status: int
) -> JSONResponse:
    device = _node(request).accounts.device_token(names.key(user))
    body = {"user": user, "token": token, "expires": expires, "device": device}
    response = JSONResponse(body, status)
    cookies.set_session(request, response, token, expires)
    cookies.set_device(request, response, device)
    return response


def _errors(handler: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        try:
            response: Response = await handler(request)
        except AuthError as exc:
            headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else {}
            return problem(exc.code, _said(request, exc.message), exc.status, **headers)
        except ProtocolError as exc:
            return problem(exc.code, _said(request, exc.message), 400)
        return response

    return endpoint


@_errors
async def prelogin(request: Request) -> Response:
    body = await _body(request, PreloginBody)
    salt, iterations = await _node(request).accounts.prelogin(body.username)
    return JSONResponse({"salt": b64(salt), "iterations": iterations})


@_errors
async def register(request: Request) -> Response:
    body = await _body(request, RegisterBody)
    salt = b64decode(body.salt, SALT_BYTES, "salt")
    secret = b64decode(body.secret, SECRET_BYTES, "secret")
    user, token, expires = await _node(request).accounts.register(
        body.username, salt, body.iterations, secret, body.invite, body.answer
    )
    return _session_response(request, user.name, token, expires, 201)


async def guests(request: Request) -> Response:
    """Whether the node takes guests now: the page offers the button only then."""
    node = _node(request)
    welcome = node.settings.auth.guests and node.guests_welcome()
    return JSONResponse({"guests": welcome})


@_errors
async def guest(request: Request) -> Response:
    """A guest's session, without an account (when the node takes guests)."""
    user, token, expires = await _node(request).accounts.guest()
    return _session_response(request, user.name, token, expires, 201)


@_errors
async def login(request: Request) -> Response:
    body = await _body(request, LoginBody)
    secret = b64decode(body.secret, SECRET_BYTES, "secret")
    device = body.device or request.cookies.get(DEVICE_COOKIE)
    user, token, expires = await _node(request).accounts.login(body.username, secret, device)
    return _session_response(request, user.name, token, expires, 200)


def _token(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return conn.cookies.get(COOKIE)


@_errors
async def logout(request: Request) -> Response:
    token = _token(request)
    if not token:
        raise AuthError(
            Code.NOT_AUTHENTICATED, say("no session: send the cookie or a bearer token"), 401
        )
    node = _node(request)
    session = await node.accounts.session(token)
    await node.accounts.logout(session)
    node.revoke(session)
    response = Response(status_code=204)
    cookies.clear_session(response)
    return response


@_errors
async def whoami(request: Request) -> Response:
    """Whether the session cookie (which pages cannot read) still holds, and for whom."""
    session = await _session_of(request)
    return JSONResponse({"user": session.user.name, "expires": session.expires})


async def _session_of(request: Request) -> Session:
    token = _token(request)
    if not token:
        raise AuthError(Code.NOT_AUTHENTICATED, say("no session: log in"), 401)
    return await _node(request).accounts.session(token)


async def _files_room(request: Request, session: Session) -> Room:
    """The room (or conversation, `@a+b`) a file is sent to or read from: one of the user's."""
    node = _node(request)
    raw = request.query_params.get("room", "")
    if raw.startswith("@"):
        parts = raw[1:].split("+")
        if len(parts) != 2 or names.key(session.user.name) not in map(names.key, parts):
            raise ProtocolError(Code.FORBIDDEN, say("that conversation is not yours"))
        room = await node.store.room(names.direct_room(*parts))
        if room is None:
            raise ProtocolError(Code.UNKNOWN_ROOM, say("there are no messages with that user yet"))
        return room
    room = await node.room(raw)
    if not await node.store.is_member(session.user.id, room.id):
        raise ProtocolError(Code.NOT_JOINED, say("join #{room} first", room=room.name))
    return room


@_errors
async def upload(request: Request) -> Response:
    """A file for a message to carry: its bytes as the body (sealed already, for a sealed
    room or conversation), its room in `?room=`; answered with its id."""
    session = await _session_of(request)
    room = await _files_room(request, session)
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise AuthError(Code.BAD_FRAME, say("send the file with its Content-Length"), 411)
    files = _node(request).files
    try:
        id_ = await files.put(room, names.key(session.user.name), int(length), request.stream())
    except ProtocolError as exc:
        status = {Code.TOO_LARGE: 413, Code.RATE_LIMITED: 429, Code.FORBIDDEN: 403}
        lang = i18n.choose(session.user.lang, request.headers.get("accept-language"))
        said = i18n.said(lang, exc.message)
        raise AuthError(exc.code, said, status.get(exc.code, 400)) from None
    return JSONResponse({"id": id_, "size": int(length)}, 201)


@_errors
async def download(request: Request) -> Response:
    """A file of a room one is in, as it was uploaded: never for the browser to show or run
    (the page opens it, or saves it), so always an attachment of no type."""
    session = await _session_of(request)
    room = await _files_room(request, session)
    path = await _node(request).file_path(room, request.path_params["id"])
    if path is None:
        raise AuthError(Code.UNKNOWN_MESSAGE, say("no such file here (deleted, or expired)"), 404)
    return FileResponse(
        path,
        media_type="application/octet-stream",
        headers={
            "content-disposition": "attachment",
            "content-security-policy": "default-src 'none'; sandbox",
        },
    )


async def health(request: Request) -> Response:
    node = _node(request)
    onion: OnionService = request.app.state.onion
    try:
        database = "ok" if await node.store.ping() else "error"
    except Exception:
        log.exception("database check failed", extra={"event": "error"})
        database = "error"
    ok = database == "ok"
    return JSONResponse(
        {
            "status": "ok" if ok else "degraded",
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "uptime": round(time.monotonic() - node.started, 3),
            "clients": node.hub.connections,
            "database": database,
            "tor": onion.state,
            **({"onion": onion.defences()} if onion.mode != "off" else {}),
            **{name: await report() for name, report in node.reports.items()},
        },
        200 if ok else 503,
    )


def web_dir() -> Path:
    """The browser client: inside the package when installed, beside it in a checkout."""
    installed = Path(__file__).parent / "web"
    return installed if installed.is_dir() else Path(__file__).parent.parent / "web"


async def index(request: Request) -> Response:
    return FileResponse(web_dir() / "index.html", media_type="text/html; charset=utf-8")


async def favicon(request: Request) -> Response:
    """The page's own icon, for the browsers that ask here without being told (no-JS too)."""
    return FileResponse(
        web_dir() / "favicon.svg",
        media_type="image/svg+xml",
        headers={"cache-control": "max-age=86400"},
    )


# -- WebSocket ----------------------------------------------------------------------------


def _origin_allowed(ws: WebSocket, extra: set[str]) -> bool:
    origin = ws.headers.get("origin")
    if origin is None:
        return True
    host = ws.headers.get("host", "")
    return origin in extra or origin in (f"http://{host}", f"https://{host}")


async def _authenticate(ws: WebSocket, node: Node) -> Session | None:
    """By cookie, or else by a first `auth` frame. Frames before it get an error, not a close."""
    accounts = node.accounts
    lang = i18n.choose(None, ws.headers.get("accept-language"))  # no account yet
    token = ws.cookies.get(COOKIE)
    deadline = time.monotonic() + node.settings.auth.auth_timeout
    for _ in range(MAX_FRAMES_BEFORE_AUTH + 1):
        if token is not None:
            break
        remaining = deadline - time.monotonic()
        try:
            message = await asyncio.wait_for(ws.receive(), max(remaining, 0.001))
        except TimeoutError:
            await ws.close(Close.AUTH_FAILED, "authenticate within the first seconds")
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        try:
            if text is None:
                raise ProtocolError(Code.BINARY_FRAME, say("send JSON in text frames, not binary"))
            if len(text) > MAX_AUTH_FRAME:
                raise ProtocolError(
                    Code.TOO_LARGE,
                    say("authenticate first, in a frame of at most {max}", max=MAX_AUTH_FRAME),
                )
            frame = protocol.decode(text)
            if not isinstance(frame, Auth):
                raise ProtocolError(
                    Code.NOT_AUTHENTICATED,
                    say(
                        "authenticate first: {kind} frames need a session (send an auth frame)",
                        kind=type(frame).__name__.lower(),
                    ),
                    frame.ref,
                )
            token = frame.token
        except ProtocolError as exc:
            await ws.send_text(protocol.error(exc.code, i18n.said(lang, exc.message), exc.ref))
    if token is None:
        await ws.close(Close.AUTH_FAILED, "too many frames without authenticating")
        return None
    try:
        return await accounts.session(token)
    except AuthError as exc:
        said = i18n.said(lang, exc.message)
        await ws.send_text(protocol.error(exc.code, said))
        code = Close.SESSION_EXPIRED if exc.code == Code.SESSION_EXPIRED else Close.AUTH_FAILED
        await ws.close(code, _reason(said))
        return None


async def _read(ws: WebSocket, node: Node, conn: Connection) -> None:
    while conn.close_code is None:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            if message.get("code") == Close.FLOODING:  # the WebSocket layer closed a ping flood
                conn.close(Close.FLOODING, message.get("reason") or "flooding")
            return
        await node.receive(conn, message.get("text"))


async def _write(ws: WebSocket, conn: Connection) -> None:
    """Send what waits, several frames to a message (one per line) when a backlog builds up:
    under load this saves most of the per-message cost, at no cost when idle."""
    while True:
        await _send(ws, conn, await conn.drain())


async def _send(ws: WebSocket, conn: Connection, frames: list[str]) -> None:
    """A function of its own, so that nothing sent stays referenced while the writer waits
    (an idle connection would keep its last `joined`, kilobytes of member list, alive)."""
    for batch in _batches(frames):
        await ws.send_text(batch)
    conn.written()


def _batches(frames: list[str]) -> Iterator[str]:
    batch: list[str] = []
    size = 0
    for frame in frames:
        if batch and size + len(frame) > BATCH_CHARS:
            yield "\n".join(batch)
            batch, size = [], 0
        batch.append(frame)
        size += len(frame) + 1
    if batch:
        yield "\n".join(batch)


def _ended(conn: Connection, task: asyncio.Task[None]) -> None:
    """The reader or the writer stopped: the connection is over."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, WebSocketDisconnect | OSError):
        log.error("connection failed", exc_info=exc, extra={"event": "error", "user": conn.user})
        conn.close(Close.INTERNAL, say("internal error"))
    conn.end()


async def chat(ws: WebSocket) -> None:
    node = _node(ws)
    if not _origin_allowed(ws, ws.app.state.origins):
        await ws.close()  # before the handshake: the client sees HTTP 403
        return
    flood = ws.scope[FLOODED] = Flood()  # before the first ping can come
    await ws.accept()
    waiting: Waiting = ws.app.state.waiting
    if waiting.count >= node.settings.limits.unauthenticated:
        waiting.refused()
        await ws.close(Close.TRY_AGAIN, "too many connections are authenticating: try again")
        return
    waiting.count += 1
    try:
        session = await _authenticate(ws, node)
    except WebSocketDisconnect:
        return
    finally:
        waiting.count -= 1
    if session is None:
        return
    # A flood while authenticating costs its user from the moment the user is known (before a
    # reconnection could be taken); one while connected closes the connection too.
    flood.then(functools.partial(node.penalize, names.key(session.user.name)))
    if flood.happened:
        return
    accepted = i18n.choose(None, ws.headers.get("accept-language"))
    try:
        conn = await node.connect(session, PIPELINE, accepted)
    except Refused as exc:
        await waiting.hold(exc.retry_after)
        code, close = (
            (Code.FORBIDDEN, Close.BANNED) if exc.banned else (Code.TOO_MANY, Close.TRY_AGAIN)
        )
        reason = i18n.said(session.user.lang or accepted, exc.reason)
        await ws.send_text(protocol.error(code, reason))
        await ws.close(close, _reason(reason))
        return
    flood.then(functools.partial(node.flooded, conn))
    ws.scope[STOPPING] = functools.partial(conn.close, Close.RESTART, say("the node is stopping"))
    tasks = [asyncio.create_task(_read(ws, node, conn)), asyncio.create_task(_write(ws, conn))]
    for task in tasks:
        task.add_done_callback(functools.partial(_ended, conn))
    try:  # two tasks and this wait are all a connection costs: thousands may idle
        async with asyncio.timeout(max(0.0, session.expires - time.time())):
            await conn.wait_ended()
    except TimeoutError:
        conn.close(Close.SESSION_EXPIRED, say("the session has expired; log in again"))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        node.disconnect(conn)
    if conn.close_code is not None and ws.application_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                for batch in _batches(conn.take()):
                    await ws.send_text(batch)
                await ws.close(conn.close_code, conn.close_reason)


class Waiting:
    """WebSockets that have not authenticated yet: counted, so that they cannot pile up; and
    those of a flooder still under its penalty, whose refusal is held back a while."""

    def __init__(self) -> None:
        self.count = 0
        self.held = 0
        self._said = 0.0

    async def hold(self, penalty: float) -> None:
        """A flooder reconnects as soon as it is refused, and each refusal costs the node a
        whole handshake (about 1.5 ms of CPU, in one piece, that others' messages wait
        behind). Held back for up to HOLD seconds of its penalty, an idle socket the while
        (at most HELD of them: past that, answered at once), it costs a fraction of that."""
        if penalty <= 0 or self.held >= HELD:
            return
        self.held += 1
        try:
            await asyncio.sleep(min(penalty, HOLD))
        finally:
            self.held -= 1

    def refused(self) -> None:
        if time.monotonic() - self._said > 10:
            self._said = time.monotonic()
            log.warning(
                "connections refused: too many waiting to authenticate",
                extra={"event": "refused", "waiting": self.count},
            )


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes of UTF-8 (RFC 6455); a user's name may not."""
    return text.encode()[:123].decode(errors="ignore")


# -- the application ----------------------------------------------------------------------


def create_app(settings: Settings, reporter: Reporter | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with server.running(settings, reporter) as parts:
            app.state.node = parts.node
            app.state.onion = parts.onion
            app.state.origins = {o.strip() for o in settings.server.origins.split(",") if o.strip()}
            app.state.waiting = Waiting()
            try:
                yield
            finally:
                nojs.close(app)

    routes = [
        Route("/", index),
        Route("/favicon.ico", favicon),  # asked for by browsers whatever a page says
        Route("/api/health", health),
        Route("/api/prelogin", prelogin, methods=["POST"]),
        Route("/api/register", register, methods=["POST"]),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/guest", guest, methods=["POST"]),
        Route("/api/guest", guests),
        Route("/api/logout", logout, methods=["POST"]),
        Route("/api/session", whoami),
        Route("/api/files", upload, methods=["POST"]),
        Route("/api/files/{id}", download),
        WebSocketRoute("/ws", chat),
        Mount("/nojs", routes=nojs.routes),
        Mount("/static", StaticFiles(directory=web_dir()), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HostCheck, settings=settings, onion=lambda: _onion_address(app))
    return app


def _onion_address(app: Starlette) -> str:
    onion: OnionService | None = getattr(app.state, "onion", None)
    return onion.address if onion is not None else ""
