"""The chat without JavaScript, rendered on the node, for Tor Browser's "Safest" level.

Plain HTML forms and pages: log in, list and join open rooms, read a room in a frame that
reloads itself every few seconds (the way no-JS onion chats do), post messages and commands.
Everything goes through the same core as the WebSocket (`Node`, `commands`, `Accounts`):
each page a user has open is a `Connection` of its own that stays in its room while the
page keeps refreshing, so presence, `/who` and fan-out work as for any other client.

Key-protected rooms cannot be offered here: their key never reaches the node, so the node
cannot decrypt them to render a page. Every user-provided string is escaped on output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import html
import logging
import re
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from onionchat import commands, cookies, crypto, names, protocol, relations
from onionchat.auth import COOKIE, DEVICE_COOKIE, SALT_BYTES, AuthError, Session, busy
from onionchat.authority import STAFF
from onionchat.background import Workers
from onionchat.config import Auth as AuthSettings
from onionchat.hub import Connection
from onionchat.ids import is_valid
from onionchat.node import Node, Refused
from onionchat.protocol import Code, ProtocolError, Send
from onionchat.relations import Line
from onionchat.store import Room

log = logging.getLogger("onionchat.nojs")

REFRESH = 5  # seconds between reloads of a room's message frame
LINGER = 3 * REFRESH + 15  # a page not refreshed for this long has left its room
MAX_FORM = 64 * 1024  # a full message of 4000 characters, percent-encoded, fits
MAX_PASSWORD = 1024
DERIVATIONS = 2  # PBKDF2 runs at once: each holds a worker process for a fraction of a second
PRESESSION = "onionchat_form"  # before login: ties the login and registration forms to this browser
PRESESSION_SECONDS = 24 * 3600
_SEED = re.compile(r"[A-Za-z0-9_-]+")
REF = "nojs"
_FORM_LABEL = b"onionchat nojs form\0"

_BASE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'"
)
# The room page may frame its own message list, and only that list may be framed (by us).
PAGE_CSP = f"{_BASE_CSP}; frame-src 'self'; frame-ancestors 'none'"
FRAME_CSP = f"{_BASE_CSP}; frame-ancestors 'self'"

STATUS = {
    Code.AUTH_FAILED: 401,
    Code.SESSION_EXPIRED: 401,
    Code.NOT_AUTHENTICATED: 401,
    Code.FORBIDDEN: 403,
    Code.NOT_JOINED: 403,
    Code.UNKNOWN_ROOM: 404,
    Code.UNKNOWN_USER: 404,
    Code.NAME_TAKEN: 409,
    Code.ROOM_MODE: 409,
    Code.TOO_LARGE: 413,
    Code.RATE_LIMITED: 429,
}

esc = html.escape


class FormError(Exception):
    """A request this module refuses before it reaches the core."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# -- per-page connections -------------------------------------------------------------------


class _Reader:
    __slots__ = ("answer", "conn", "timer")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.timer: asyncio.TimerHandle | None = None
        self.answer = ""  # a command's answer, shown once by the page the post redirects to


class Readers:
    """One Connection per (session, room) page, kept while the page refreshes.

    A no-JS page has no socket to hold, so without this a reader would enter and leave the
    room at every reload; with it they are present while they read and leave `LINGER`
    seconds after their last reload, as a WebSocket client leaves when it closes."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._readers: dict[tuple[bytes, str], _Reader] = {}

    async def get(self, session: Session, room: str, create: bool = False) -> _Reader:
        """The page's connection, in the room; everything queued for it before is dropped
        (the page renders from the store)."""
        key = (session.token_hash, room)
        reader = self._readers.get(key)
        if reader is None or reader.conn.close_code is not None:
            if reader is not None:
                self._expire(key)
            try:
                conn = await self.node.connect(session)
            except Refused as exc:
                raise FormError(exc.reason, 403 if exc.banned else 503) from None
            current = self._readers.get(key)
            if current is not None and current.conn.close_code is None:
                self.node.disconnect(conn)  # a request beside this one made it first
                reader = current
            else:
                reader = _Reader(conn)
                self._readers[key] = reader
        if reader.timer is not None:
            reader.timer.cancel()
        reader.timer = asyncio.get_running_loop().call_later(LINGER, self._expire, key)
        if room not in reader.conn.rooms:
            try:
                await self.node.join(reader.conn, room, create=create)
            except BaseException:
                self._expire(key)
                raise
        reader.conn.take()
        return reader

    def _expire(self, key: tuple[bytes, str]) -> None:
        reader = self._readers.pop(key, None)
        if reader is not None:
            if reader.timer is not None:
                reader.timer.cancel()
            self.node.disconnect(reader.conn)

    def drop(self, session: Session) -> None:
        """Logged out: every page of the session leaves."""
        for key in [k for k in self._readers if k[0] == session.token_hash]:
            self._expire(key)


def _readers(request: Request) -> Readers:
    readers: Readers | None = getattr(request.app.state, "nojs_readers", None)
    if readers is None:
        readers = request.app.state.nojs_readers = Readers(_node(request))
    return readers


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


# -- sessions, forms, CSRF ------------------------------------------------------------------


async def _session(request: Request) -> Session | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        return await _node(request).accounts.session(token)
    except AuthError:
        return None


def form_token(session: Session) -> str:
    """Ties a form to its session: another site cannot read it, so it cannot forge a post
    (the SameSite=Strict cookie is the first line, this the second)."""
    return hmac.new(session.token_hash, _FORM_LABEL, hashlib.sha256).hexdigest()[:32]


def _check_origin(request: Request) -> None:
    """Refuse a post from another site. Our own forms send `Origin: null` (the pages set
    `Referrer-Policy: no-referrer`) or our own origin."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return
    host = request.headers.get("host", "")
    allowed = {f"http://{host}", f"https://{host}", *request.app.state.origins}
    if origin not in allowed:
        raise FormError("this form was posted from another site; it was not accepted", 403)


async def _form(request: Request) -> dict[str, str]:
    _check_origin(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise FormError("send the form as application/x-www-form-urlencoded", 415)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise FormError(f"the form is over {MAX_FORM // 1024} KiB", 413)
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("ascii"), keep_blank_values=True, max_num_fields=10, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise FormError("the form is not valid UTF-8 form data", 400) from None
    return {k: v.replace("\r\n", "\n") for k, v in pairs}


def _check_token(form: dict[str, str], session: Session) -> None:
    if not hmac.compare_digest(form.get("token", ""), form_token(session)):
        raise FormError("this form has expired or came from elsewhere: reload the page", 403)


def _redirect(path: str) -> Response:
    return RedirectResponse(path, 303)


def room_path(room: str, suffix: str = "") -> str:
    return f"/nojs/room/{urllib.parse.quote(room, safe='')}{suffix}"


def _status(exc: ProtocolError) -> int:
    if isinstance(exc, AuthError):
        return exc.status
    return STATUS.get(exc.code, 400)


# -- HTML -----------------------------------------------------------------------------------


def _page(
    title: str,
    body: str,
    status: int = 200,
    *,
    session: Session | None = None,
    head: str = "",
    csp: str | None = None,
    frame: bool = False,
) -> HTMLResponse:
    """A whole page; `body` is HTML already escaped by the caller."""
    nav = ""
    if session is not None and not frame:
        nav = (
            '<nav><a href="/nojs/rooms">Rooms</a> '
            f"<span>logged in as <b>{esc(session.user.name)}</b></span> "
            '<form method="post" action="/nojs/logout" class="inline">'
            f'<input type="hidden" name="token" value="{form_token(session)}">'
            '<button type="submit">Log out</button></form></nav>'
        )
    document = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"{head}<title>{esc(title)} · OnionChat</title>"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/nojs.css"></head>'
        f'<body class="{"frame" if frame else "nojs"}">{nav}{body}</body></html>\n'
    )
    headers = {}
    if csp is not None:
        headers["content-security-policy"] = csp
    if frame:
        headers["x-frame-options"] = "SAMEORIGIN"
    return HTMLResponse(document, status, headers=headers)


def _error(message: str) -> str:
    return f'<p class="error" role="alert">{esc(message)}</p>'


def _hidden(session: Session) -> str:
    return f'<input type="hidden" name="token" value="{form_token(session)}">'


LOGIN_NOTE = (
    "Without JavaScript your browser cannot derive the login secret from your password, "
    "so this form sends the password itself to the node, which derives the secret for this "
    "login only and never stores or logs the password."
)


def _login_page(
    request: Request,
    status: int = 200,
    error: str = "",
    username: str = "",
    register_error: str = "",
) -> HTMLResponse:
    """The login and registration forms, each with a token tied to a pre-session cookie
    (made here if the browser has none), so that no other site can post them (login CSRF)."""
    seed = request.cookies.get(PRESESSION) or ""
    fresh = not _valid_seed(seed)
    if fresh:
        seed = secrets.token_urlsafe(16)
    hidden = (
        f'<input type="hidden" name="token" value="{_node(request).accounts.form_token(seed)}">'
    )
    body = (
        "<main><h1>OnionChat without JavaScript</h1>"
        f'<p class="note" id="password-note">{esc(LOGIN_NOTE)}</p>'
        "<section><h2>Log in</h2>"
        f"{_error(error) if error else ''}"
        '<form method="post" action="/nojs/login" accept-charset="utf-8">'
        f"{hidden}"
        '<label>Name <input name="username" autocomplete="username" required '
        f'value="{esc(username)}"></label>'
        '<label>Password <input type="password" name="password" '
        'autocomplete="current-password" required></label>'
        '<button type="submit">Log in</button></form></section>'
        "<section><h2>Create an account</h2>"
        f"{_error(register_error) if register_error else ''}"
        f"{_registration_form(hidden, _node(request).settings.auth)}</section>"
        f"{_guest_form(hidden) if _node(request).settings.auth.guests else ''}"
        '<p>With JavaScript on, <a href="/">the full client</a> never sends your password '
        "and can open key-protected rooms.</p></main>"
    )
    page = _page("Log in", body, status)
    if fresh:
        page.set_cookie(
            PRESESSION,
            seed,
            max_age=PRESESSION_SECONDS,
            path="/nojs",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return page


def _valid_seed(seed: str) -> bool:
    return (
        16 <= len(seed) <= 64
        and seed.isascii()
        and seed.replace("-", "").replace("_", "").isalnum()
    )


def _check_presession(request: Request, form: dict[str, str]) -> None:
    """A login or registration must come from our own form, shown to this browser."""
    seed = request.cookies.get(PRESESSION) or ""
    token = _node(request).accounts.form_token(seed)
    if not _valid_seed(seed) or not hmac.compare_digest(form.get("token", ""), token):
        raise FormError(
            "this form has expired or came from another site; it was not accepted: try again",
            403,
        )


# -- handlers -------------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]


def _handles_errors(handler: Handler) -> Handler:
    """A refusal becomes a plain page with its status, never a traceback."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except FormError as exc:
            return _page("Not accepted", f"<main>{_error(exc.message)}{_back()}</main>", exc.status)
        except ProtocolError as exc:
            return _page(
                "Not accepted", f"<main>{_error(exc.message)}{_back()}</main>", _status(exc)
            )

    return endpoint


def _registration_form(hidden: str, auth: AuthSettings) -> str:
    mode = auth.registration
    if mode == "closed":
        return "<p>This node takes no new accounts.</p>"
    invite = (
        '<label>Invite code <input name="invite" autocomplete="off" required></label>'
        if mode == "invite"
        else ""
    )
    waiting = (
        "<p>Newcomers wait until the node's staff let them in.</p>" if mode == "waiting" else ""
    )
    if auth.question.strip():
        invite += (
            f'<label>{esc(auth.question.strip())} <input name="answer" autocomplete="off" '
            "required></label>"
        )
    return (
        f'{waiting}<form method="post" action="/nojs/register" accept-charset="utf-8">'
        f"{hidden}"
        '<label>Name <input name="username" autocomplete="username" required></label>'
        '<label>Password <input type="password" name="password" '
        'autocomplete="new-password" required></label>'
        '<label>Password again <input type="password" name="repeat" '
        'autocomplete="new-password" required></label>'
        f'{invite}<button type="submit">Create account</button></form>'
    )


def _guest_form(hidden: str) -> str:
    return (
        "<section><h2>Or enter as a guest</h2><p>A name of the node's making, for a few "
        "hours, in open rooms.</p>"
        f'<form method="post" action="/nojs/guest" accept-charset="utf-8">{hidden}'
        '<button type="submit">Enter as a guest</button></form></section>'
    )


def _back() -> str:
    return '<p><a href="/nojs/rooms">Back to the rooms</a></p>'


async def home(request: Request) -> Response:
    return _redirect("/nojs/rooms" if await _session(request) else "/nojs/login")


async def login_page(request: Request) -> Response:
    if await _session(request):
        return _redirect("/nojs/rooms")
    return _login_page(request)


class ClientGone(Exception):
    """The client hung up while its password waited to be derived: the work is dropped."""


class Derivations:
    """PBKDF2 on the node, off the event loop, two at a time behind a bounded queue: the one
    place the node does a client's work, so it must not let a flood of logins stall the chat,
    nor work for a client that is gone."""

    def __init__(self, waiting: int) -> None:
        self._workers = Workers(DERIVATIONS)
        self._running = asyncio.Semaphore(DERIVATIONS)
        self._bound = DERIVATIONS + waiting
        self._count = 0

    async def derive(self, request: Request, password: str, salt: bytes, iterations: int) -> bytes:
        if self._count >= self._bound:
            raise busy()
        self._count += 1
        watch = asyncio.ensure_future(_hung_up(request))
        try:
            acquire = asyncio.ensure_future(self._running.acquire())
            await asyncio.wait({acquire, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not acquire.done():
                acquire.cancel()
                raise ClientGone
            try:
                if watch.done():
                    raise ClientGone
                return await self._workers.run(crypto.login_secret, password, salt, iterations)
            finally:
                self._running.release()
        finally:
            watch.cancel()
            self._count -= 1

    def close(self) -> None:
        self._workers.close()


async def _hung_up(request: Request) -> None:
    """Returns when the client has closed the connection (its request body is already read)."""
    for _ in range(1000):  # uvicorn answers nothing else once the body is read; bounded anyway
        if (await request.receive())["type"] == "http.disconnect":
            return
    await asyncio.Future()


def close(app: Any) -> None:
    """The application stops: no derivation is started any more."""
    found: Derivations | None = getattr(app.state, "nojs_derivations", None)
    if found is not None:
        found.close()


def _derivations(request: Request) -> Derivations:
    found: Derivations | None = getattr(request.app.state, "nojs_derivations", None)
    if found is None:
        waiting = _node(request).settings.auth.derivations
        found = request.app.state.nojs_derivations = Derivations(waiting)
    return found


def _refused(page: Response, exc: ProtocolError) -> Response:
    if isinstance(exc, AuthError) and exc.retry_after:
        page.headers["retry-after"] = str(int(exc.retry_after))
    return page


def _credentials(form: dict[str, str]) -> tuple[str, str]:
    username = form.get("username", "").strip()
    password = form.get("password", "")
    if not username or not password:
        raise FormError("give a name and a password", 400)
    if len(username) > 128 or len(password) > MAX_PASSWORD:
        raise FormError(f"the name or the password is too long (at most {MAX_PASSWORD})", 400)
    return username, password


def _logged_in(request: Request, user: str, token: str, expires: int) -> Response:
    accounts = _node(request).accounts
    response = _redirect("/nojs/rooms")
    cookies.set_session(request, response, token, expires)
    cookies.set_device(request, response, accounts.device_token(names.key(user)))
    return response


async def login(request: Request) -> Response:
    """Limits first, then the derivation (bounded, dropped if the client hangs up), then
    the login: a refused attempt costs no hashing."""
    try:
        form = await _form(request)
        _check_presession(request, form)
        username, password = _credentials(form)
    except FormError as exc:
        return _login_page(request, exc.status, exc.message)
    node = _node(request)
    accounts = node.accounts
    device = request.cookies.get(DEVICE_COOKIE)
    try:
        accounts.check_login(username, device)
        salt, iterations = await accounts.prelogin(username)
        if iterations > node.settings.auth.max_iterations:
            raise FormError(
                f"this account's password takes {iterations} PBKDF2 iterations, more than this "
                f"node derives for a page without JavaScript ({node.settings.auth.max_iterations}):"
                " log in with the full client",
                400,
            )
        secret = await _derivations(request).derive(request, password, salt, iterations)
        user, token, expires = await accounts.login(username, secret, device)
    except ClientGone:
        log.info("login dropped: the client left", extra={"event": "dropped"})
        return Response(status_code=499)
    except FormError as exc:
        return _login_page(request, exc.status, exc.message, username)
    except ProtocolError as exc:
        return _refused(_login_page(request, _status(exc), exc.message, username), exc)
    return _logged_in(request, user.name, token, expires)


async def register(request: Request) -> Response:
    try:
        form = await _form(request)
        _check_presession(request, form)
        username, password = _credentials(form)
        if form.get("repeat") != password:
            raise FormError("the two passwords differ", 400)
    except FormError as exc:
        return _login_page(request, exc.status, register_error=exc.message)
    node = _node(request)
    salt = secrets.token_bytes(SALT_BYTES)
    iterations = node.settings.auth.pbkdf2_iterations
    try:
        names.username(username)  # a bad name is told before the work of deriving
        invite = form.get("invite", "").strip() or None
        answer = form.get("answer")
        await node.accounts.admission(invite, answer)  # a closed node, a bad code, too
        secret = await _derivations(request).derive(request, password, salt, iterations)
        user, token, expires = await node.accounts.register(
            username, salt, iterations, secret, invite, answer
        )
    except ClientGone:
        log.info("registration dropped: the client left", extra={"event": "dropped"})
        return Response(status_code=499)
    except ProtocolError as exc:
        return _refused(_login_page(request, _status(exc), register_error=exc.message), exc)
    return _logged_in(request, user.name, token, expires)


async def guest(request: Request) -> Response:
    try:
        _check_presession(request, await _form(request))
        user, token, expires = await _node(request).accounts.guest()
    except FormError as exc:
        return _login_page(request, exc.status, register_error=exc.message)
    except ProtocolError as exc:
        return _refused(_login_page(request, _status(exc), register_error=exc.message), exc)
    return _logged_in(request, user.name, token, expires)


@_handles_errors
async def logout(request: Request) -> Response:
    form = await _form(request)
    session = await _session(request)
    if session is not None:
        _check_token(form, session)
        node = _node(request)
        _readers(request).drop(session)
        await node.accounts.logout(session)
        node.revoke(session)
    response = _redirect("/nojs/login")
    cookies.clear_session(response)
    return response


async def _rooms_page(
    request: Request, session: Session, status: int = 200, error: str = "", typed: str = ""
) -> Response:
    node = _node(request)
    items = []
    for room in await node.store.rooms():
        detail = []
        if room.protected:
            detail.append('<span class="tag">key-protected: needs JavaScript</span>')
        elif room.topic:
            detail.append(f'<span class="topic">{esc(room.topic)}</span>')
        online = len(node.members(room.name))
        detail.append(f'<span class="online">{online} online</span>')
        items.append(
            f'<li><a href="{esc(room_path(room.name))}">#{esc(room.name)}</a> '
            f"{' '.join(detail)}</li>"
        )
    listing = f'<ul class="rooms">{"".join(items)}</ul>' if items else "<p>No rooms yet.</p>"
    body = (
        "<main><h1>Rooms</h1>"
        f"{listing}"
        "<h2>Join or create a room</h2>"
        f"{_error(error) if error else ''}"
        '<form method="post" action="/nojs/join" accept-charset="utf-8">'
        f"{_hidden(session)}"
        f'<label>Room <input name="room" required value="{esc(typed)}"></label>'
        '<button type="submit">Join</button></form>'
        "<p>A room that does not exist yet is created open (readable by the node). "
        "Key-protected rooms are made with the JavaScript client.</p></main>"
    )
    return _page("Rooms", body, status, session=session)


async def rooms(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _redirect("/nojs/login")
    return await _rooms_page(request, session)


@_handles_errors
async def join(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        raise FormError("you are not logged in (or the session has ended): log in again", 401)
    form = await _form(request)
    _check_token(form, session)
    typed = form.get("room", "")
    node = _node(request)
    try:
        name = names.room(typed)
        try:
            await node.room(name)
        except ProtocolError as exc:
            if exc.code != Code.UNKNOWN_ROOM:
                raise
            await _readers(request).get(session, name, create=True)
    except ProtocolError as exc:
        return await _rooms_page(request, session, _status(exc), exc.message, typed)
    return _redirect(room_path(name))


STAFF_HINT = (
    '<p class="hint staff">You are staff here: /kick NAME [MINUTES] [REASON], /ban NAME, '
    "/mute NAME, /unban NAME, /purge NAME, /mode (invite, moderated, limit, slow, expiry, "
    "lockdown), /voice NAME, /allow NAME, /op NAME, /audit; each message has a delete button. "
    "/help lists them all.</p>"
)


def _protected(name: str) -> str:
    return (
        f'<main><h1>#{esc(name)}</h1><p class="needs-js">#{esc(name)} is key-protected, so it '
        "needs JavaScript: its messages are encrypted in the members' browsers with a key "
        "that never reaches this node, so the node cannot decrypt them to show them on a page "
        'without JavaScript. Open it with JavaScript on (<a href="/">the full client</a>) '
        f"or with the command-line client.</p>{_back()}</main>"
    )


async def _room_page(
    request: Request,
    session: Session,
    name: str,
    status: int = 200,
    error: str = "",
    typed: str = "",
    answer: str = "",
) -> Response:
    node = _node(request)
    room = await node.room(name)
    if room.protected:
        return _page(f"#{room.name}", _protected(room.name), session=session)
    reader = await _readers(request).get(session, room.name)
    if reader.answer and not answer:
        answer, reader.answer = f'<div class="answer">{reader.answer}</div>', ""
    topic = f'<p class="topic">{esc(room.topic)}</p>' if room.topic else ""
    staff = node.authority.level(names.key(session.user.name), room.name) >= STAFF
    about = await _about(node, room, request.query_params, session)
    body = (
        f'<main class="room"><h1>#{esc(room.name)}</h1>{topic}'
        f'<iframe src="{esc(room_path(room.name, "/messages#end"))}" '
        f'title="Messages in #{esc(room.name)}" name="messages"></iframe>'
        f"{_error(error) if error else ''}{answer}{about.reactions}"
        f'<form method="post" action="{esc(room_path(room.name, "/post"))}" '
        'accept-charset="utf-8" class="post">'
        f"{_hidden(session)}{about.reply}"
        '<input name="text" autocomplete="off" autofocus aria-label="Message" '
        f'placeholder="Message #{esc(room.name)}, or /help" value="{esc(typed)}">'
        '<button type="submit">Send</button></form>'
        f'<p class="hint">New messages appear every {REFRESH} seconds. A line starting '
        "with / is a command: /who, /topic, /me, /join, /leave, /rooms, /msg, /help.</p>"
        f"{STAFF_HINT if staff else ''}"
        "</main>"
    )
    return _page(f"#{room.name}", body, status, session=session, csp=PAGE_CSP)


@dataclasses.dataclass(frozen=True, slots=True)
class _About:
    reply: str = ""  # the post form's hidden field, and what it answers
    reactions: str = ""  # the seven buttons, for the message reacted to


async def _about(node: Node, room: Room, query: Any, session: Session) -> _About:
    """A link's `?reply=ID` or `?react=ID`: the message answered, or reacted to, as forms."""
    for kind in ("reply", "react"):
        id_ = query.get(kind)
        if id_ is None:
            continue
        found = await node.store.signed_messages(room, [id_]) if is_valid(id_) else []
        if not found:
            return _About(reactions=_error("that message is not in this room any more"))
        message = found[0][0]
        said = f"{message.sender}: {_start(message.text or '')}"
        if kind == "reply":
            field = f'<input type="hidden" name="reply" value="{esc(id_)}">'
            return _About(reply=f'{field}<span class="replying">↪ {esc(said)}</span>')
        buttons = "".join(
            f'<button type="submit" name="text" value="{emoji}" aria-label="React with {emoji}">'
            f"{emoji}</button>"
            for emoji in protocol.REACTIONS
        )
        form = (
            f'<form method="post" action="{esc(room_path(room.name, "/post"))}" '
            f'accept-charset="utf-8" class="react">{_hidden(session)}'
            f'<input type="hidden" name="react" value="{esc(id_)}">'
            f"<span>React to {esc(said)}</span> {buttons}</form>"
        )
        return _About(reactions=form)
    return _About()


@_handles_errors
async def room_page(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _redirect("/nojs/login")
    return await _room_page(request, session, request.path_params["room"])


async def _folded(node: Node, room: Room, found: list[protocol.Message]) -> list[Line]:
    """The page's lines with their edits, reactions and the messages their replies quote."""
    lines = [m for m in found if relations.is_line(m)]
    here = {m.id for m in lines}
    wanted = sorted({m.reply for m in lines if m.reply and m.reply not in here})
    quoted = [m for m, _, _ in await node.store.signed_messages(room, wanted)] if wanted else []
    related = await node.store.related(room, [m.id for m in [*lines, *quoted]])
    return relations.fold(lines, related, quoted)


def _message(line: Line, room: str, me: str, may_delete: bool, delete: str) -> str:
    """One line of the list, with a link to answer it and one to react, and for those who may,
    the form that deletes it."""
    message = line.message
    when = time.strftime("%H:%M", time.gmtime(message.ts / 1000))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(message.ts / 1000))
    mention = line.text is not None and f"@{names.key(me)}" in names.key(line.text)
    classes = "message mention" if mention else "message"
    text = SEALED if line.text is None else esc(line.text)
    if message.file is not None and line.text == message.file.name:
        text = ""  # the file's link says its name
    quote = ""
    if line.quote is not None:
        said = f"{line.quote.sender}: {_start(line.quote.text)}" if line.quote.text else ""
        quote = f'<span class="quote">↪ {esc(said or "a message no longer here")}</span> '
    if message.me:
        body = f'<span class="action">* {esc(message.sender)} {text}</span>'
    else:
        body = f'<b class="sender">{esc(message.sender)}</b> <span class="text">{text}</span>'
    if message.file is not None and message.file.name is not None:
        link = f"/api/files/{urllib.parse.quote(message.file.id)}?room={urllib.parse.quote(room)}"
        size = f"{max(1, message.file.size // 1024):,} KiB"
        body += (
            f' <a class="file" href="{esc(link)}" download="{esc(message.file.name)}">'
            f"⬇ {esc(message.file.name)} ({size})</a>"
        )
    if line.edited:
        body += ' <span class="edited">(edited)</span>'
    for emoji, who in line.reactions:
        body += f' <span class="reaction" title="{esc(", ".join(who))}">{emoji} {len(who)}</span>'
    page = room_path(room)
    ids = esc(message.id)
    body += (
        f' <a class="act" href="{esc(page)}?reply={ids}" target="_top">reply</a>'
        f' <a class="act" href="{esc(page)}?react={ids}" target="_top">react</a>'
    )
    if may_delete:
        body += delete.replace("MESSAGE-ID", ids)
    return f'<li class="{classes}">{quote}<time title="{stamp}">{when}</time> {body}</li>'


QUOTE_CHARS = 60  # of a quoted message, shown at most
SEALED = '<span class="sealed">(sealed message)</span>'


def _start(text: str) -> str:
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "…"


def _delete_form(room: str, session: Session) -> str:
    """A button that posts `/delete ID` as the message form would (the page answers)."""
    return (
        f'<form method="post" action="{esc(room_path(room, "/post"))}" target="_top" '
        f'class="delete">{_hidden(session)}'
        '<input type="hidden" name="text" value="/delete MESSAGE-ID">'
        '<button type="submit" title="delete this message">delete</button></form>'
    )


@_handles_errors
async def messages(request: Request) -> Response:
    """The framed list. Live, it reloads itself (and lands on its end) every REFRESH seconds;
    read back (`?before=ID`, a page older than that message), it stays still, so that what
    one reads does not jump away, with links to the page before and back to the live end."""
    session = await _session(request)
    if session is None:
        body = '<p>Your session has ended: <a href="/nojs/login" target="_top">log in</a>.</p>'
        return _page("Logged out", body, 401, csp=FRAME_CSP, frame=True)
    node = _node(request)
    room = await node.room(request.path_params["room"])
    if room.protected:
        return _page(f"#{room.name}", _protected(room.name), csp=FRAME_CSP, frame=True)
    before = request.query_params.get("before")
    if before is not None and not is_valid(before):
        body = "<p>That is not a message id.</p>"
        return _page("Not a message", body, 400, csp=FRAME_CSP, frame=True)
    reader = await _readers(request).get(session, room.name)
    if before is not None and not node.may_page(reader.conn):
        rate = node.settings.limits.history_rate
        body = f"<p>At most {rate:g} pages a second: wait a moment, then reload.</p>"
        return _page("Too many pages", body, 429, csp=FRAME_CSP, frame=True)
    found, more = await node.store.history(room, before, node.settings.limits.history_page)
    me = names.key(session.user.name)
    staff = node.authority.level(me, room.name) >= STAFF
    form = _delete_form(room.name, session)
    lines = "".join(
        _message(
            line, room.name, session.user.name, staff or names.key(line.message.sender) == me, form
        )
        for line in await _folded(node, room, found)
    )
    earlier = (
        f'<p class="more"><a href="{esc(room_path(room.name, f"/messages?before={found[0].id}"))}">'
        "Earlier messages</a> (the list stays still while you read back)</p>"
        if more and found
        else ""
    )
    live = esc(room_path(room.name, f"/messages?at={time.time_ns() // 1_000_000}#end"))
    members = ", ".join(esc(m) for m in node.members(room.name))
    body = f'{earlier}<p class="hint">Times are UTC.</p><ol class="messages">{lines}</ol>' + (
        "" if found else '<p class="empty">No messages yet.</p>'
    )
    if before is not None:
        body += f'<p class="more" id="end"><a href="{live}">Back to the newest messages</a></p>'
        return _page(f"#{room.name}", body, csp=FRAME_CSP, frame=True)
    body += f'<p class="members" id="end">Here now: {members}</p>'
    # A new query each time: a refresh to the same URL and fragment would only scroll.
    refresh = f'<meta http-equiv="refresh" content="{REFRESH}; url={live}">'
    return _page(f"#{room.name}", body, head=refresh, csp=FRAME_CSP, frame=True)


def _answer(frames: list[dict[str, Any]], room: str) -> tuple[str, str | None]:
    """What the node answered a command with, as HTML; or where to go instead."""
    parts: list[str] = []
    for frame in frames:
        kind = frame.get("type")
        if kind == "notice":
            parts.append(f"<pre>{esc(frame['text'])}</pre>")
        elif kind == "who":
            members = ", ".join(frame["members"]) or "nobody"
            parts.append(f"<p>In #{esc(frame['room'])} now: {esc(members)}</p>")
        elif kind == "rooms":
            listed = "".join(
                f'<li><a href="{esc(room_path(r["name"]))}">#{esc(r["name"])}</a>'
                f"{' (key-protected)' if r.get('protected') else ''}</li>"
                for r in frame["rooms"]
            )
            parts.append(f"<ul>{listed}</ul>")
        elif kind == "topic":
            topic = frame.get("text")
            parts.append(
                f"<p>Topic of #{esc(frame['room'])} set to: {esc(topic)}</p>"
                if topic
                else f"<p>Topic of #{esc(frame['room'])} cleared.</p>"
            )
        elif kind == "joined":
            return "", room_path(frame["room"]["name"])
        elif kind == "left":
            if frame["room"] == room:
                return "", "/nojs/rooms"
            parts.append(f"<p>You left #{esc(frame['room'])}.</p>")
        elif kind == "clear":
            parts.append("<p>This page keeps nothing to clear.</p>")
        elif kind == "ack":
            if frame["room"].startswith("@"):
                parts.append(
                    "<p>Direct message sent, <strong>not sealed</strong>: these pages cannot "
                    "seal, so the node can read it, and the other side's client marks it "
                    "as not sealed. Direct conversations are shown by the full client and "
                    "the command-line client.</p>"
                )
            else:
                return "", room_path(room)
    return "".join(parts), None


@_handles_errors
async def post(request: Request) -> Response:
    """A message, or a command whose answer is shown above the form. Whatever goes wrong,
    the text comes back in the field."""
    session = await _session(request)
    if session is None:
        raise FormError("you are not logged in (or the session has ended): log in again", 401)
    form = await _form(request)
    _check_token(form, session)
    node = _node(request)
    room = await node.room(request.path_params["room"])
    if room.protected:
        return _page(f"#{room.name}", _protected(room.name), 409, session=session)
    text = form.get("text", "")
    reader = await _readers(request).get(session, room.name)
    try:
        node.admit(reader.conn)
        if text.startswith("/") and not text.startswith("//"):
            await commands.run(node, reader.conn, text.strip(), room.name, REF)
        else:
            body = text[1:] if text.startswith("//") else text
            reply, react = form.get("reply") or None, form.get("react") or None
            if not all(is_valid(v) for v in (reply, react) if v is not None):
                raise ProtocolError(Code.BAD_FRAME, "that is not a message id")
            frame = Send(v=1, room=room.name, text=body, ref=REF, reply=reply, react=react)
            await node.send(reader.conn, frame)
    except ProtocolError as exc:
        return await _room_page(request, session, room.name, _status(exc), exc.message, text)
    # The answer was queued after the command's last await, so no other request on this
    # page's connection (a frame reload) can have taken it in between.
    frames = [_decode(frame) for frame in reader.conn.take()]
    answer, target = _answer([f for f in frames if f.get("ref") == REF], room.name)
    if target is not None:
        return _redirect(target)
    # shown by the room's page, which the post redirects to: a reload does not post again
    reader.answer = answer
    return _redirect(room_path(room.name))


def _decode(frame: str) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(frame)
    return decoded


routes = [
    Route("/", home),
    Route("/login", login_page),
    Route("/login", login, methods=["POST"]),
    Route("/register", register, methods=["POST"]),
    Route("/guest", guest, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/rooms", rooms),
    Route("/join", join, methods=["POST"]),
    Route("/room/{room}", room_page),
    Route("/room/{room}/messages", messages),
    Route("/room/{room}/post", post, methods=["POST"]),
]
