"""The chat without JavaScript, rendered on the node, for Tor Browser's "Safest" level.

Plain HTML forms and pages: log in, list and join open rooms, read a room in a frame that
reloads itself every few seconds (the way no-JS onion chats do), post messages and commands.
Everything goes through the same core as the WebSocket (`Node`, `commands`, `Accounts`):
each page a user has open is a `Connection` of its own that stays in its room while the
page keeps refreshing, so presence, `/who` and fan-out work as for any other client.

Key-protected rooms cannot be offered here: their key never reaches the node, so the node
cannot decrypt them to render a page. Every user-provided string is escaped on output.
Every word of the pages is the reader's language's (onionchat/i18n); what the node itself
answers (a refusal's reason) stays as the node says it.
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

from onionchat import commands, cookies, crypto, i18n, names, protocol, relations
from onionchat.auth import COOKIE, DEVICE_COOKIE, SALT_BYTES, AuthError, Session, busy
from onionchat.authority import STAFF
from onionchat.background import Workers
from onionchat.config import Auth as AuthSettings
from onionchat.hub import Connection
from onionchat.i18n import say
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
_t = i18n.markup  # a text of the page's language, as HTML


class FormError(Exception):
    """A request this module refuses before it reaches the core: the key of its text."""

    def __init__(self, key: str, status: int, **values: object) -> None:
        super().__init__(key)
        self.key = key
        self.status = status
        self.values = values

    def message(self, lang: str) -> str:
        return i18n.text(lang, self.key, **self.values)


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

    async def get(self, session: Session, room: str, lang: str, create: bool = False) -> _Reader:
        """The page's connection, in the room, speaking the page's language; everything queued
        for it before is dropped (the page renders from the store)."""
        key = (session.token_hash, room)
        reader = self._readers.get(key)
        if reader is None or reader.conn.close_code is not None:
            if reader is not None:
                self._expire(key)
            try:
                conn = await self.node.connect(session, accepted=lang)
            except Refused as exc:
                reason = i18n.said(lang, exc.reason)
                raise FormError("error.node", 403 if exc.banned else 503, reason=reason) from None
            current = self._readers.get(key)
            if current is not None and current.conn.close_code is None:
                self.node.disconnect(conn)  # a request beside this one made it first
                reader = current
            else:
                reader = _Reader(conn)
                self._readers[key] = reader
        reader.conn.lang = lang
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


def _lang(request: Request, session: Session | None = None) -> str:
    """The page's language: the account's choice, else the browser's (Accept-Language)."""
    chosen = session.user.lang if session is not None else None
    return i18n.choose(chosen, request.headers.get("accept-language"))


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
        raise FormError("form.otherSite", 403)


async def _form(request: Request) -> dict[str, str]:
    _check_origin(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise FormError("form.kind", 415)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise FormError("form.tooBig", 413, size=MAX_FORM // 1024)
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("ascii"), keep_blank_values=True, max_num_fields=10, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise FormError("form.notUtf8", 400) from None
    return {k: v.replace("\r\n", "\n") for k, v in pairs}


def _check_token(form: dict[str, str], session: Session) -> None:
    if not hmac.compare_digest(form.get("token", ""), form_token(session)):
        raise FormError("form.expired", 403)


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
    lang: str,
    session: Session | None = None,
    head: str = "",
    csp: str | None = None,
    frame: bool = False,
) -> HTMLResponse:
    """A whole page; `body` is HTML already escaped by the caller."""
    nav = ""
    if session is not None and not frame:
        me = {"name": f"<b>{esc(session.user.name)}</b>"}
        nav = (
            f'<nav><a href="/nojs/rooms">{_t(lang, "nav.rooms")}</a> '
            f"<span>{_t(lang, 'nav.loggedIn', me)}</span> "
            '<form method="post" action="/nojs/logout" class="inline">'
            f'<input type="hidden" name="token" value="{form_token(session)}">'
            f'<button type="submit">{_t(lang, "nav.logout")}</button></form></nav>'
        )
    document = (
        f'<!doctype html>\n<html lang="{esc(lang)}"><head><meta charset="utf-8">'
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
    lang = _lang(request)
    auth = _node(request).settings.auth
    full = {"link": f'<a href="/">{_t(lang, "login.fullClient")}</a>'}
    body = (
        f"<main><h1>{_t(lang, 'login.heading')}</h1>"
        f'<p class="note" id="password-note">{_t(lang, "login.note")}</p>'
        f"<section><h2>{_t(lang, 'login.title')}</h2>"
        f"{_error(error) if error else ''}"
        '<form method="post" action="/nojs/login" accept-charset="utf-8">'
        f"{hidden}"
        f'<label>{_t(lang, "login.name")} <input name="username" autocomplete="username" '
        f'required value="{esc(username)}"></label>'
        f'<label>{_t(lang, "login.password")} <input type="password" name="password" '
        'autocomplete="current-password" required></label>'
        f'<button type="submit">{_t(lang, "login.logIn")}</button></form></section>'
        f"<section><h2>{_t(lang, 'login.create')}</h2>"
        f"{_error(register_error) if register_error else ''}"
        f"{_registration_form(hidden, auth, lang)}</section>"
        f"{_guest_form(hidden, lang) if auth.guests else ''}"
        f"<p>{_t(lang, 'login.withJs', full)}</p></main>"
    )
    page = _page(i18n.text(lang, "login.title"), body, status, lang=lang)
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
        raise FormError("form.presession", 403)


# -- handlers -------------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]


def _handles_errors(handler: Handler) -> Handler:
    """A refusal becomes a plain page with its status, never a traceback."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except (FormError, ProtocolError) as exc:
            lang = _lang(request, await _session(request))
            if isinstance(exc, FormError):
                message, status = exc.message(lang), exc.status
            else:
                message, status = i18n.said(lang, exc.message), _status(exc)
            body = f"<main>{_error(message)}{_back(lang)}</main>"
            return _page(i18n.text(lang, "error.title"), body, status, lang=lang)

    return endpoint


def _registration_form(hidden: str, auth: AuthSettings, lang: str) -> str:
    mode = auth.registration
    if mode == "closed":
        return f"<p>{_t(lang, 'register.closed')}</p>"
    invite = (
        f'<label>{_t(lang, "register.invite")} <input name="invite" autocomplete="off" '
        "required></label>"
        if mode == "invite"
        else ""
    )
    waiting = f"<p>{_t(lang, 'register.waiting')}</p>" if mode == "waiting" else ""
    if auth.question.strip():
        invite += (
            f'<label>{esc(auth.question.strip())} <input name="answer" autocomplete="off" '
            "required></label>"
        )
    return (
        f'{waiting}<form method="post" action="/nojs/register" accept-charset="utf-8">'
        f"{hidden}"
        f'<label>{_t(lang, "login.name")} <input name="username" autocomplete="username" '
        "required></label>"
        f'<label>{_t(lang, "login.password")} <input type="password" name="password" '
        'autocomplete="new-password" required></label>'
        f'<label>{_t(lang, "register.again")} <input type="password" name="repeat" '
        'autocomplete="new-password" required></label>'
        f'{invite}<button type="submit">{_t(lang, "register.button")}</button></form>'
    )


def _guest_form(hidden: str, lang: str) -> str:
    return (
        f"<section><h2>{_t(lang, 'guest.title')}</h2><p>{_t(lang, 'guest.about')}</p>"
        f'<form method="post" action="/nojs/guest" accept-charset="utf-8">{hidden}'
        f'<button type="submit">{_t(lang, "guest.button")}</button></form></section>'
    )


def _back(lang: str) -> str:
    return f'<p><a href="/nojs/rooms">{_t(lang, "back")}</a></p>'


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
        raise FormError("form.credentials", 400)
    if len(username) > 128 or len(password) > MAX_PASSWORD:
        raise FormError("form.tooLong", 400, max=MAX_PASSWORD)
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
        return _login_page(request, exc.status, exc.message(_lang(request)))
    node = _node(request)
    accounts = node.accounts
    device = request.cookies.get(DEVICE_COOKIE)
    try:
        accounts.check_login(username, device)
        salt, iterations = await accounts.prelogin(username)
        if iterations > node.settings.auth.max_iterations:
            raise FormError(
                "form.iterations", 400, count=iterations, max=node.settings.auth.max_iterations
            )
        secret = await _derivations(request).derive(request, password, salt, iterations)
        user, token, expires = await accounts.login(username, secret, device)
    except ClientGone:
        log.info("login dropped: the client left", extra={"event": "dropped"})
        return Response(status_code=499)
    except FormError as exc:
        return _login_page(request, exc.status, exc.message(_lang(request)), username)
    except ProtocolError as exc:
        return _refused(_login_page(request, _status(exc), exc.message, username), exc)
    return _logged_in(request, user.name, token, expires)


async def register(request: Request) -> Response:
    try:
        form = await _form(request)
        _check_presession(request, form)
        username, password = _credentials(form)
        if form.get("repeat") != password:
            raise FormError("form.differ", 400)
    except FormError as exc:
        return _login_page(request, exc.status, register_error=exc.message(_lang(request)))
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
        return _login_page(request, exc.status, register_error=exc.message(_lang(request)))
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
    lang = _lang(request, session)
    items = []
    for room in await node.store.rooms():
        detail = []
        if room.protected:
            detail.append(f'<span class="tag">{_t(lang, "rooms.needsJs")}</span>')
        elif room.topic:
            detail.append(f'<span class="topic">{esc(room.topic)}</span>')
        online = len(node.members(room.name))
        detail.append(f'<span class="online">{_t(lang, "rooms.online", count=online)}</span>')
        items.append(
            f'<li><a href="{esc(room_path(room.name))}">#{esc(room.name)}</a> '
            f"{' '.join(detail)}</li>"
        )
    none = f"<p>{_t(lang, 'rooms.none')}</p>"
    listing = f'<ul class="rooms">{"".join(items)}</ul>' if items else none
    body = (
        f"<main><h1>{_t(lang, 'rooms.title')}</h1>"
        f"{listing}"
        f"<h2>{_t(lang, 'rooms.join')}</h2>"
        f"{_error(error) if error else ''}"
        '<form method="post" action="/nojs/join" accept-charset="utf-8">'
        f"{_hidden(session)}"
        f'<label>{_t(lang, "rooms.room")} <input name="room" required value="{esc(typed)}">'
        f'</label><button type="submit">{_t(lang, "rooms.button")}</button></form>'
        f"<p>{_t(lang, 'rooms.about')}</p></main>"
    )
    return _page(i18n.text(lang, "rooms.title"), body, status, lang=lang, session=session)


async def rooms(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _redirect("/nojs/login")
    return await _rooms_page(request, session)


@_handles_errors
async def join(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        raise FormError("form.loggedOut", 401)
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
            await _readers(request).get(session, name, _lang(request, session), create=True)
    except ProtocolError as exc:
        said = i18n.said(_lang(request, session), exc.message)
        return await _rooms_page(request, session, _status(exc), said, typed)
    return _redirect(room_path(name))


def _protected(name: str, lang: str) -> str:
    full = {"link": f'<a href="/">{_t(lang, "login.fullClient")}</a>'}
    return (
        f'<main><h1>#{esc(name)}</h1><p class="needs-js">'
        f"{_t(lang, 'room.protected', full, room=name)}</p>{_back(lang)}</main>"
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
    lang = _lang(request, session)
    room = await node.room(name)
    if room.protected:
        return _page(f"#{room.name}", _protected(room.name, lang), lang=lang, session=session)
    reader = await _readers(request).get(session, room.name, lang)
    if reader.answer and not answer:
        answer, reader.answer = f'<div class="answer">{reader.answer}</div>', ""
    topic = f'<p class="topic">{esc(room.topic)}</p>' if room.topic else ""
    staff = node.authority.level(names.key(session.user.name), room.name) >= STAFF
    about = await _about(node, room, request.query_params, session, lang)
    staff_hint = f'<p class="hint staff">{_t(lang, "room.staff")}</p>' if staff else ""
    body = (
        f'<main class="room"><h1>#{esc(room.name)}</h1>{topic}'
        f'<iframe src="{esc(room_path(room.name, "/messages#end"))}" '
        f'title="{_t(lang, "room.frame", room=room.name)}" name="messages"></iframe>'
        f"{_error(error) if error else ''}{answer}{about.reactions}"
        f'<form method="post" action="{esc(room_path(room.name, "/post"))}" '
        'accept-charset="utf-8" class="post">'
        f"{_hidden(session)}{about.reply}"
        f'<input name="text" autocomplete="off" autofocus aria-label="{_t(lang, "room.message")}" '
        f'placeholder="{_t(lang, "room.placeholder", room=room.name)}" value="{esc(typed)}">'
        f'<button type="submit">{_t(lang, "room.send")}</button></form>'
        f'<p class="hint">{_t(lang, "room.hint", seconds=REFRESH)}</p>'
        f"{staff_hint}</main>"
    )
    return _page(f"#{room.name}", body, status, lang=lang, session=session, csp=PAGE_CSP)


@dataclasses.dataclass(frozen=True, slots=True)
class _About:
    reply: str = ""  # the post form's hidden field, and what it answers
    reactions: str = ""  # the seven buttons, for the message reacted to


async def _about(node: Node, room: Room, query: Any, session: Session, lang: str) -> _About:
    """A link's `?reply=ID` or `?react=ID`: the message answered, or reacted to, as forms."""
    for kind in ("reply", "react"):
        id_ = query.get(kind)
        if id_ is None:
            continue
        found = await node.store.signed_messages(room, [id_]) if is_valid(id_) else []
        if not found:
            return _About(reactions=_error(i18n.text(lang, "room.gone")))
        message = found[0][0]
        said = f"{message.sender}: {_start(message.text or '')}"
        if kind == "reply":
            field = f'<input type="hidden" name="reply" value="{esc(id_)}">'
            return _About(reply=f'{field}<span class="replying">↪ {esc(said)}</span>')
        buttons = "".join(
            f'<button type="submit" name="text" value="{emoji}" '
            f'aria-label="{_t(lang, "react.with", emoji=emoji)}">{emoji}</button>'
            for emoji in protocol.REACTIONS
        )
        form = (
            f'<form method="post" action="{esc(room_path(room.name, "/post"))}" '
            f'accept-charset="utf-8" class="react">{_hidden(session)}'
            f'<input type="hidden" name="react" value="{esc(id_)}">'
            f"<span>{_t(lang, 'react.to', said=said)}</span> {buttons}</form>"
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


def _message(line: Line, room: str, me: str, may_delete: bool, delete: str, lang: str) -> str:
    """One line of the list, with a link to answer it and one to react, and for those who may,
    the form that deletes it."""
    message = line.message
    when = time.strftime("%H:%M", time.gmtime(message.ts / 1000))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(message.ts / 1000))
    mention = line.text is not None and f"@{names.key(me)}" in names.key(line.text)
    classes = "message mention" if mention else "message"
    sealed = f'<span class="sealed">{_t(lang, "message.sealed")}</span>'
    text = sealed if line.text is None else esc(line.text)
    if message.file is not None and line.text == message.file.name:
        text = ""  # the file's link says its name
    quote = ""
    if line.quote is not None:
        said = f"{line.quote.sender}: {_start(line.quote.text)}" if line.quote.text else ""
        quote = f'<span class="quote">↪ {esc(said) or _t(lang, "message.gone")}</span> '
    if message.me:
        body = f'<span class="action">* {esc(message.sender)} {text}</span>'
    else:
        body = f'<b class="sender">{esc(message.sender)}</b> <span class="text">{text}</span>'
    if message.file is not None and message.file.name is not None:
        link = f"/api/files/{urllib.parse.quote(message.file.id)}?room={urllib.parse.quote(room)}"
        size = _t(lang, "file.kib", n=f"{max(1, message.file.size // 1024):,}")
        body += (
            f' <a class="file" href="{esc(link)}" download="{esc(message.file.name)}">'
            f"⬇ {esc(message.file.name)} ({size})</a>"
        )
    if line.edited:
        body += f' <span class="edited">{_t(lang, "message.edited")}</span>'
    for emoji, who in line.reactions:
        body += f' <span class="reaction" title="{esc(", ".join(who))}">{emoji} {len(who)}</span>'
    page = room_path(room)
    ids = esc(message.id)
    body += (
        f' <a class="act" href="{esc(page)}?reply={ids}" target="_top">'
        f"{_t(lang, 'message.reply')}</a>"
        f' <a class="act" href="{esc(page)}?react={ids}" target="_top">'
        f"{_t(lang, 'message.react')}</a>"
    )
    if may_delete:
        body += delete.replace("MESSAGE-ID", ids)
    return f'<li class="{classes}">{quote}<time title="{stamp}">{when}</time> {body}</li>'


QUOTE_CHARS = 60  # of a quoted message, shown at most


def _start(text: str) -> str:
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "…"


def _delete_form(room: str, session: Session, lang: str) -> str:
    """A button that posts `/delete ID` as the message form would (the page answers)."""
    return (
        f'<form method="post" action="{esc(room_path(room, "/post"))}" target="_top" '
        f'class="delete">{_hidden(session)}'
        '<input type="hidden" name="text" value="/delete MESSAGE-ID">'
        f'<button type="submit" title="{_t(lang, "message.deleteTitle")}">'
        f"{_t(lang, 'message.delete')}</button></form>"
    )


@_handles_errors
async def messages(request: Request) -> Response:
    """The framed list. Live, it reloads itself (and lands on its end) every REFRESH seconds;
    read back (`?before=ID`, a page older than that message), it stays still, so that what
    one reads does not jump away, with links to the page before and back to the live end."""
    session = await _session(request)
    lang = _lang(request, session)

    def framed(title: str, body: str, status: int = 200, head: str = "") -> Response:
        return _page(title, body, status, lang=lang, head=head, csp=FRAME_CSP, frame=True)

    if session is None:
        link = {"link": f'<a href="/nojs/login" target="_top">{_t(lang, "frame.logIn")}</a>'}
        body = f"<p>{_t(lang, 'frame.ended', link)}</p>"
        return framed(i18n.text(lang, "frame.loggedOut"), body, 401)
    node = _node(request)
    room = await node.room(request.path_params["room"])
    if room.protected:
        return framed(f"#{room.name}", _protected(room.name, lang))
    before = request.query_params.get("before")
    if before is not None and not is_valid(before):
        body = f"<p>{_t(lang, 'frame.badId')}</p>"
        return framed(i18n.text(lang, "frame.badIdTitle"), body, 400)
    reader = await _readers(request).get(session, room.name, lang)
    if before is not None and not node.may_page(reader.conn):
        rate = f"{node.settings.limits.history_rate:g}"
        body = f"<p>{_t(lang, 'frame.tooMany', rate=rate)}</p>"
        return framed(i18n.text(lang, "frame.tooManyTitle"), body, 429)
    found, more = await node.store.history(room, before, node.settings.limits.history_page)
    me = names.key(session.user.name)
    staff = node.authority.level(me, room.name) >= STAFF
    form = _delete_form(room.name, session, lang)
    lines = "".join(
        _message(
            line,
            room.name,
            session.user.name,
            staff or names.key(line.message.sender) == me,
            form,
            lang,
        )
        for line in await _folded(node, room, found)
    )
    older = esc(room_path(room.name, f"/messages?before={found[0].id}")) if found else ""
    earlier = (
        f'<p class="more"><a href="{older}">{_t(lang, "frame.earlier")}</a> '
        f"{_t(lang, 'frame.still')}</p>"
        if more and found
        else ""
    )
    live = esc(room_path(room.name, f"/messages?at={time.time_ns() // 1_000_000}#end"))
    members = ", ".join(node.members(room.name))
    zone = f'<p class="hint">{_t(lang, "frame.zone")}</p>'
    body = f'{earlier}{zone}<ol class="messages">{lines}</ol>' + (
        "" if found else f'<p class="empty">{_t(lang, "frame.empty")}</p>'
    )
    if before is not None:
        newest = f'<a href="{live}">{_t(lang, "frame.newest")}</a>'
        body += f'<p class="more" id="end">{newest}</p>'
        return framed(f"#{room.name}", body)
    body += f'<p class="members" id="end">{_t(lang, "frame.here", members=members)}</p>'
    # A new query each time: a refresh to the same URL and fragment would only scroll.
    refresh = f'<meta http-equiv="refresh" content="{REFRESH}; url={live}">'
    return framed(f"#{room.name}", body, head=refresh)


def _answer(
    frames: list[dict[str, Any]], room: str, lang: str, line: str
) -> tuple[str, str | None]:
    """What the node answered a command with, as HTML; or where to go instead."""
    parts: list[str] = []
    for frame in frames:
        kind = frame.get("type")
        if kind == "notice" and line == "/help":
            parts.append(_help_table(frame["text"]))
        elif kind == "notice":
            parts.append(f"<pre>{esc(frame['text'])}</pre>")
        elif kind == "who":
            members = ", ".join(frame["members"]) or i18n.text(lang, "answer.nobody")
            parts.append(f"<p>{_t(lang, 'answer.who', room=frame['room'], members=members)}</p>")
        elif kind == "rooms":
            listed = "".join(
                f'<li><a href="{esc(room_path(r["name"]))}">#{esc(r["name"])}</a>'
                f"{_t(lang, 'answer.protected') if r.get('protected') else ''}</li>"
                for r in frame["rooms"]
            )
            parts.append(f"<ul>{listed}</ul>")
        elif kind == "topic":
            topic = frame.get("text")
            parts.append(
                f"<p>{_t(lang, 'answer.topic', room=frame['room'], topic=topic)}</p>"
                if topic
                else f"<p>{_t(lang, 'answer.topicCleared', room=frame['room'])}</p>"
            )
        elif kind == "joined":
            return "", room_path(frame["room"]["name"])
        elif kind == "left":
            if frame["room"] == room:
                return "", "/nojs/rooms"
            parts.append(f"<p>{_t(lang, 'answer.left', room=frame['room'])}</p>")
        elif kind == "clear":
            parts.append(f"<p>{_t(lang, 'answer.clear')}</p>")
        elif kind == "ack":
            if frame["room"].startswith("@"):
                plain = {"plain": f"<strong>{_t(lang, 'answer.notSealed')}</strong>"}
                parts.append(f"<p>{_t(lang, 'answer.direct', plain)}</p>")
            else:
                return "", room_path(room)
    return "".join(parts), None


@_handles_errors
async def post(request: Request) -> Response:
    """A message, or a command whose answer is shown above the form. Whatever goes wrong,
    the text comes back in the field."""
    session = await _session(request)
    if session is None:
        raise FormError("form.loggedOut", 401)
    form = await _form(request)
    _check_token(form, session)
    node = _node(request)
    lang = _lang(request, session)
    room = await node.room(request.path_params["room"])
    if room.protected:
        return _page(f"#{room.name}", _protected(room.name, lang), 409, lang=lang, session=session)
    text = form.get("text", "")
    reader = await _readers(request).get(session, room.name, lang)
    try:
        node.admit(reader.conn)
        if text.startswith("/") and not text.startswith("//"):
            await commands.run(node, reader.conn, text.strip(), room.name, REF)
        else:
            body = text[1:] if text.startswith("//") else text
            reply, react = form.get("reply") or None, form.get("react") or None
            if not all(is_valid(v) for v in (reply, react) if v is not None):
                raise ProtocolError(Code.BAD_FRAME, say("that is not a message id"))
            frame = Send(v=1, room=room.name, text=body, ref=REF, reply=reply, react=react)
            await node.send(reader.conn, frame)
    except ProtocolError as exc:
        said = i18n.said(_lang(request, session), exc.message)
        return await _room_page(request, session, room.name, _status(exc), said, text)
    # The answer was queued after the command's last await, so no other request on this
    # page's connection (a frame reload) can have taken it in between.
    frames = [_decode(frame) for frame in reader.conn.take()]
    answered = [f for f in frames if f.get("ref") == REF]
    answer, target = _answer(answered, room.name, lang, text.strip())
    if target is not None:
        return _redirect(target)
    # shown by the room's page, which the post redirects to: a reload does not post again
    reader.answer = answer
    return _redirect(room_path(room.name))


def _help_table(text: str) -> str:
    """/help's answer, a title and a "usage  help" line per command, as a table: as text it
    wrapped out of its columns on a phone."""
    title, *lines = text.split("\n")
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{esc(cell)}</td>" for cell in re.split(r"\s{2,}", row, maxsplit=1))
        + "</tr>"
        for row in lines
    )
    return f'<table class="help"><caption>{esc(title)}</caption>{rows}</table>'


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
