"""The command-line client behind `onionchat connect`.

It logs in over HTTP (the password never leaves this process, only a PBKDF2 login secret
does), then chats over one WebSocket. Room keys stay here too: in a key-protected room every
message is sealed before it leaves and opened after it arrives, so the node relays ciphertext
only. One core serves two faces: an interactive prompt for people, and `--pipe` (stdin lines
in, JSON lines out) for scripts and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import getpass
import itertools
import json
import math
import os
import re
import secrets
import signal
import sys
import threading
import time
import unicodedata
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TextIO
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec
import socksio
from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.application import get_app_or_none
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.shortcuts import clear as clear_screen
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.exceptions import ProxyError as WebSocketProxyError

from onionchat import PROTOCOL_VERSION, crypto
from onionchat.protocol import (
    Ack,
    Clear,
    Code,
    Error,
    HistoryPage,
    Joined,
    Left,
    Mention,
    MessageFrame,
    Notice,
    Pong,
    Presence,
    Ready,
    RoomList,
    TopicChanged,
    WhoList,
)

Frame = (
    Ready
    | Ack
    | MessageFrame
    | Joined
    | Left
    | Presence
    | HistoryPage
    | TopicChanged
    | RoomList
    | WhoList
    | Notice
    | Mention
    | Clear
    | Pong
    | Error
)

SALT_BYTES = 16
MAX_ITERATIONS = 100_000_000
MAX_FRAME = 16 * 1024 * 1024  # a `joined` frame carries a page of history, sealed or not
USER_AGENT = "OnionChat"  # the same for every client: no versions to fingerprint
NO_KEY = "cannot decrypt: the room is key-protected and no --key was given"
SEEN_IDS = 10_000
MAX_ROUNDS = 6  # of resending messages the node dropped for rate
_MENTION = re.compile(r"(?<![\w@])@([\w.-]+)")
# Terminal control and bidi override characters: incoming text must not drive the terminal.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CLOSE_REASONS = {
    1001: "(the node is going away)",
    1011: "(the node failed)",
    1012: "(the node is restarting)",
}
_COLOURS = ("ansigreen", "ansiblue", "ansimagenta", "ansicyan", "ansibrightgreen", "ansibrightblue")


class ClientError(Exception):
    """Bad options: `onionchat connect` exits 2 with this message."""


class ChatError(Exception):
    """The session failed (unreachable, refused, disconnected): exit 1 with this message."""


# ---------------------------------------------------------------------------------------------
# Options


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything `onionchat connect` was told, checked before any prompt or connection."""

    url: str  # the node's base URL, scheme://host[:port], without path or fragment
    user: str
    room: str = "lobby"
    password_file: Path | None = None
    register: bool = False
    key: bytes | None = dataclasses.field(default=None, repr=False)
    pipe: bool = False
    socks: str | None = None  # HOST:PORT of a SOCKS5 proxy, e.g. Tor's 127.0.0.1:9050
    timeout: float = 30.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        """Build from `onionchat connect`'s namespace; raises ClientError on a bad value."""
        url, host, fragment = _parse_url(str(args.url))
        room = (getattr(args, "room", None) or fragment.get("room") or "lobby").strip()
        room = room.removeprefix("#").strip()
        if not room:
            raise ClientError("the room name is empty")
        user = str(args.user).strip()
        if not user:
            raise ClientError("the username is empty")
        key_text = getattr(args, "key", None)
        if key_text is None:
            key_text = fragment.get("key")
        key = None
        if key_text is not None:
            try:
                key = crypto.decode_key(key_text.strip())
            except crypto.CryptoError as exc:
                raise ClientError(f"bad room key: {exc}") from None
        socks_arg = getattr(args, "socks", None)
        socks = _parse_socks(socks_arg) if socks_arg else None
        if socks is None and host.endswith(".onion"):
            # Resolving it without Tor would only leak the address to the local DNS.
            raise ClientError(
                f"{host} is an onion address: connect through Tor with --socks 127.0.0.1:9050"
            )
        timeout = float(getattr(args, "timeout", 30.0))
        if not (math.isfinite(timeout) and timeout > 0):
            raise ClientError(f"--timeout must be a positive number of seconds, not {timeout:g}")
        password_file = getattr(args, "password_file", None)
        return cls(
            url=url,
            user=user,
            room=room,
            password_file=Path(password_file) if password_file is not None else None,
            register=bool(getattr(args, "register", False)),
            key=key,
            pipe=bool(getattr(args, "pipe", False)),
            socks=socks,
            timeout=timeout,
        )

    @property
    def where(self) -> str:
        """host[:port], for messages."""
        return self.url.partition("://")[2]

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.url.startswith("https:") else "ws"
        return f"{scheme}://{self.where}/ws"

    @property
    def proxy(self) -> str | None:
        """socks5h: the proxy resolves names, so no DNS query ever leaves this machine."""
        return f"socks5h://{self.socks}" if self.socks else None


def _parse_url(raw: str) -> tuple[str, str, dict[str, str]]:
    """(base URL, host, fragment parameters) of the node's address."""
    text = raw.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ClientError(f"bad URL {raw!r}: {exc}") from None
    scheme = parts.scheme.lower()
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    if scheme not in ("http", "https"):
        raise ClientError(f"the URL must start with http:// or https://, not {parts.scheme}://")
    host = parts.hostname
    if not host:
        raise ClientError(f"the URL {raw!r} has no host")
    if parts.username is not None:
        raise ClientError("the URL must not carry a username or password: use --user")
    shown = f"[{host}]" if ":" in host else host
    netloc = shown if port is None else f"{shown}:{port}"
    fragment = {k: v[-1] for k, v in parse_qs(parts.fragment).items() if v and v[-1]}
    return f"{scheme}://{netloc}", host, fragment


def _parse_socks(raw: str) -> str:
    text = raw.strip()
    for prefix in ("socks5h://", "socks5://"):
        text = text.removeprefix(prefix)
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClientError(f"--socks must be HOST:PORT, e.g. 127.0.0.1:9050 (not {raw!r})")
    shown = f"[{host}]" if ":" in host else host
    return f"{shown}:{int(port)}"


def canonical_room(name: str) -> str:
    """A room name as the node spells it (NFKC, case-folded, no `#`): keys are kept by it."""
    return unicodedata.normalize("NFKC", name.removeprefix("#")).strip().casefold()


# ---------------------------------------------------------------------------------------------
# Password and login


def _read_password(options: Options) -> str:
    """The first line of --password-file, else asked on the terminal without echo."""
    path = options.password_file
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ClientError(f"cannot read the password file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ClientError(f"the password file {path} is not UTF-8 text") from None
        password = text.partition("\n")[0].removesuffix("\r")
        if not password:
            raise ClientError(f"the first line of the password file {path} is empty")
        return password
    try:
        os.close(os.open("/dev/tty", os.O_RDWR))
    except OSError:
        raise ClientError("no terminal to ask for the password on: use --password-file") from None
    password = _ask(f"Password for {options.user}: ")
    if not password:
        raise ChatError("the password is empty")
    if options.register and _ask("Repeat the password: ") != password:
        raise ChatError("the passwords do not match")
    return password


def _ask(prompt: str) -> str:
    """getpass, with Ctrl-C raising at once (the event loop's handler would only note it)."""
    if threading.current_thread() is not threading.main_thread():
        return getpass.getpass(prompt)
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return getpass.getpass(prompt)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


@dataclasses.dataclass(frozen=True)
class Login:
    """A session from /api/login or /api/register; its token opens the WebSocket."""

    user: str
    token: str = dataclasses.field(repr=False)
    expires: int


def _b64(raw: bytes) -> str:
    return crypto.encode_key(raw)  # the same unpadded base64url the node's API speaks


def _unb64(text: object, what: str) -> bytes:
    if isinstance(text, str):
        try:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            pass
    raise ChatError(f"the node sent a bad {what}")


def _http(options: Options, timeout: float | None = None) -> httpx.AsyncClient:
    """trust_env=False: proxy variables in the environment must never reroute us."""
    return httpx.AsyncClient(
        base_url=options.url,
        proxy=options.proxy,
        trust_env=False,
        timeout=timeout or options.timeout,
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
    )


async def _post(
    http: httpx.AsyncClient, options: Options, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    try:
        response = await http.post(path, json=body)
    except (httpx.HTTPError, OSError, socksio.SOCKSError) as exc:
        raise ChatError(unreachable(options, exc)) from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        if response.is_success:
            return data
        if isinstance(data.get("message"), str):
            raise ChatError(data["message"])
    raise ChatError(
        f"{options.url} answered HTTP {response.status_code} to {path}: is it an OnionChat node?"
    )


async def login(options: Options, password: str) -> Login:
    """Register or log in. Only the derived login secret is sent, never the password."""
    async with _http(options) as http:
        pre = await _post(http, options, "/api/prelogin", {"username": options.user})
        iterations = pre.get("iterations")
        if not isinstance(iterations, int) or not 0 < iterations <= MAX_ITERATIONS:
            raise ChatError("the node sent a bad PBKDF2 iteration count")
        if options.register:
            salt = secrets.token_bytes(SALT_BYTES)
            secret = await asyncio.to_thread(crypto.login_secret, password, salt, iterations)
            body = {
                "username": options.user,
                "salt": _b64(salt),
                "iterations": iterations,
                "secret": _b64(secret),
            }
            data = await _post(http, options, "/api/register", body)
        else:
            salt = _unb64(pre.get("salt"), "salt")
            secret = await asyncio.to_thread(crypto.login_secret, password, salt, iterations)
            body = {"username": options.user, "secret": _b64(secret)}
            data = await _post(http, options, "/api/login", body)
    user, token, expires = data.get("user"), data.get("token"), data.get("expires")
    if not isinstance(user, str) or not isinstance(token, str) or not isinstance(expires, int):
        raise ChatError("the node's login answer lacks user, token or expires")
    return Login(user=user, token=token, expires=expires)


async def logout(options: Options, session: Login) -> None:
    """Best effort: each run makes a session, so end it rather than leave it for 30 days."""
    with contextlib.suppress(Exception):
        async with _http(options, timeout=min(options.timeout, 5.0)) as http:
            await http.post("/api/logout", headers={"Authorization": f"Bearer {session.token}"})


# ---------------------------------------------------------------------------------------------
# Connection errors, told plainly


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
            text = text or os.strerror(current.errno)
            return text[:1].lower() + text[1:]
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    text = (str(last) or type(last).__name__).rsplit(": ", 1)[-1].rstrip(".")
    return text[:1].lower() + text[1:]


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


# ---------------------------------------------------------------------------------------------
# The session's state, and what the views show


@dataclasses.dataclass
class RoomState:
    protected: bool
    topic: str | None = None  # as shown: decrypted, or a note saying why it cannot be


@dataclasses.dataclass
class State:
    """Who we are and where we are, shared by the core and the views."""

    user: str
    current: str | None = None
    rooms: dict[str, RoomState] = dataclasses.field(default_factory=dict)

    def protected(self, room: str | None) -> bool:
        state = self.rooms.get(room) if room is not None else None
        return state is not None and state.protected


@dataclasses.dataclass(frozen=True)
class Shown:
    """A message as shown: opened if it was sealed, or the reason it could not be."""

    frame: MessageFrame
    text: str | None
    error: str | None = None
    sealed: bool = False

    def to_json(self) -> dict[str, Any]:
        m = self.frame
        data: dict[str, Any] = {
            "type": "message",
            "id": m.id,
            "room": m.room,
            "ts": m.ts,
            "sender": m.sender,
            "text": self.text,
            "me": m.me,
        }
        if m.to is not None:
            data["to"] = m.to
        if self.sealed:
            data["decrypted"] = self.error is None
        if self.error is not None:
            data["error"] = self.error
        return data


class View(Protocol):
    """How the session is shown: a terminal for people, JSON lines for scripts."""

    def message(self, shown: Shown) -> None: ...
    def frame(self, frame: Frame | None, data: dict[str, Any]) -> None: ...
    def note(self, text: str) -> None: ...
    def warn(self, text: str) -> None: ...
    def error(self, text: str) -> None: ...
    def clear(self) -> None: ...


class PipeView:
    """--pipe: one JSON object a line on stdout, flushed at once, ASCII only."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._err = err or sys.stderr

    def _emit(self, data: dict[str, Any]) -> None:
        self._out.write(json.dumps(data) + "\n")
        self._out.flush()

    def message(self, shown: Shown) -> None:
        self._emit(shown.to_json())

    def frame(self, frame: Frame | None, data: dict[str, Any]) -> None:
        self._emit(data)

    def note(self, text: str) -> None:
        self._emit({"type": "notice", "text": text})

    def warn(self, text: str) -> None:
        print(f"onionchat: {text}", file=self._err, flush=True)

    def error(self, text: str) -> None:
        self._emit({"type": "error", "code": "client", "message": text})

    def clear(self) -> None:
        pass


def _clock(ts: int) -> str:
    when = time.localtime(ts / 1000)
    now = time.localtime()
    if (when.tm_year, when.tm_yday) == (now.tm_year, now.tm_yday):
        return time.strftime("%H:%M", when)
    return time.strftime("%Y-%m-%d %H:%M", when)


def _safe(text: str) -> str:
    return _UNSAFE.sub("\ufffd", text)


def _key(name: str) -> str:
    return unicodedata.normalize("NFKC", name).strip().casefold()


def mentions(text: str, user: str) -> bool:
    """Whether `text` names `user` as the node does (`@name`, case-insensitive)."""
    me = _key(user)
    return any(_key(m.group(1).rstrip(".-")) == me for m in _MENTION.finditer(text))


Fragments = list[tuple[str, str]]


class TerminalView:
    """The interactive face: lines printed above the prompt, in colour."""

    def __init__(self, state: State) -> None:
        self._state = state

    def _print(self, fragments: Fragments) -> None:
        print_formatted_text(FormattedText(fragments))

    def _info(self, text: str, style: str = "ansibrightblack") -> None:
        self._print([(style, f"-- {_safe(text)}")])

    def _colour(self, name: str) -> str:
        if _key(name) == _key(self._state.user):
            return "bold"
        return _COLOURS[zlib.crc32(_key(name).encode()) % len(_COLOURS)]

    def message(self, shown: Shown) -> None:
        m = shown.frame
        head: Fragments = [("ansibrightblack", f"{_clock(m.ts)} ")]
        if m.to is None and m.room != self._state.current:
            head.append(("ansibrightblack", f"#{m.room} "))
        if shown.text is None:
            body_style, body = "ansired italic", f"[{shown.error or 'empty message'}]"
        else:
            body = _safe(shown.text)
            mine = _key(m.sender) == _key(self._state.user)
            body_style = "bold ansiyellow" if not mine and mentions(body, self._state.user) else ""
        sender = _safe(m.sender)
        if m.to is not None:
            head.append(("ansimagenta", f"[dm] {sender} → {_safe(m.to)}: "))
        elif m.me:
            head.append((self._colour(m.sender), f"* {sender} "))
        else:
            head.append((self._colour(m.sender), f"<{sender}> "))
        self._print([*head, (body_style, body)])

    def frame(self, frame: Frame | None, data: dict[str, Any]) -> None:
        match frame:
            case Joined():
                info = frame.room
                here = ", ".join(frame.members)
                self._info(f"you joined #{info.name} · {len(frame.members)} here: {here}")
                if info.protected:
                    self._info(f"#{info.name} is key-protected: messages are end-to-end sealed")
                joined = self._state.rooms.get(info.name)
                if joined is not None and joined.topic:
                    self._info(f"topic: {joined.topic}")
                _redraw()
            case Left():
                self._info(f"you left #{frame.room}")
                _redraw()
            case Presence():
                verb = {"join": "joined", "leave": "left"}.get(frame.state, frame.state)
                self._info(f"{frame.user} {verb} #{frame.room}")
            case TopicChanged():
                topic = data.get("text") or f"[{data.get('error', 'no topic')}]"
                self._info(f"{frame.by} set the topic of #{frame.room}: {topic}")
            case RoomList():
                self._info("rooms:")
                for listed in frame.rooms:
                    kind = " · key-protected" if listed.protected else ""
                    about = f" · {listed.topic}" if listed.topic else ""
                    line = f"   #{listed.name} · {listed.online} online{kind}{about}"
                    self._print([("ansibrightblack", _safe(line))])
            case WhoList():
                self._info(f"here in #{frame.room}: {', '.join(frame.members)}")
            case Notice():
                for line in frame.text.splitlines() or [""]:
                    self._print([("ansicyan", _safe(line))])
            case Mention():
                self._print(
                    [
                        ("ansibrightblack", f"{time.strftime('%H:%M')} "),
                        (
                            "bold ansiyellow",
                            _safe(f"{frame.sender} mentioned you in #{frame.room}: "),
                        ),
                        ("bold ansiyellow", _safe(frame.text)),
                    ]
                )
            case Error():
                self.error(frame.message)
            case _:
                pass

    def note(self, text: str) -> None:
        self._info(text, "ansicyan")

    def warn(self, text: str) -> None:
        self._print([("ansiyellow", f"! {_safe(text)}")])

    def error(self, text: str) -> None:
        self._print([("ansired", f"! {_safe(text)}")])

    def clear(self) -> None:
        app = get_app_or_none()
        if app is not None and app.is_running:
            app.renderer.clear()
        else:
            clear_screen()


def _redraw() -> None:
    """The prompt shows the current room: ask prompt_toolkit to draw it again."""
    app = get_app_or_none()
    if app is not None and app.is_running:
        app.invalidate()


# ---------------------------------------------------------------------------------------------
# The core: one authenticated WebSocket


class Pacer:
    """A token bucket under the node's frame rate, so a long --pipe input is not refused."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._slowed = 0.0

    async def wait(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self._tokens) / self.rate)

    def slow_down(self) -> None:
        """The node refused a frame for rate: it is stricter than we guessed. Refusals come in
        bursts, so halve at most once a second."""
        now = time.monotonic()
        self._tokens = 0.0
        if now - self._slowed >= 1.0:
            self._slowed = now
            self.rate = max(1.0, self.rate / 2)
            self._burst = max(1.0, self._burst / 2)


@dataclasses.dataclass(frozen=True)
class JoinRequest:
    room: str
    protected: bool
    create: bool
    done: asyncio.Future[Joined] | None = None  # the first join is waited for


class Chat:
    """One session on a node: frames out (paced, with refs), frames in (opened, shown)."""

    def __init__(self, ws: ClientConnection, view: View, state: State, options: Options) -> None:
        self.ws = ws
        self.view = view
        self.state = state
        self.options = options
        self.keys: dict[str, bytes] = {}
        if options.key is not None:
            self.keys[canonical_room(options.room)] = options.key
        self.failures = 0
        self.closed = asyncio.Event()
        self.close_message = "the connection to the node was lost"
        self.max_text = 0
        self._closing = False
        self._refs = itertools.count(1)
        self._ready: asyncio.Future[Ready] = asyncio.get_running_loop().create_future()
        self._pending: dict[str, dict[str, Any]] = {}  # sent messages by ref, until acked
        self._joins: dict[str, JoinRequest] = {}
        self._waiters: dict[str, asyncio.Future[Frame]] = {}
        self._limited = asyncio.Event()  # the node dropped a frame for rate...
        self._rate_hits = 0  # ...this many times in all
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._pacer = Pacer(18.0, 50)  # under the default node limits (20/s, 60 at once)

    # -- frames out ---------------------------------------------------------------------------

    def _ref(self) -> str:
        return f"c{next(self._refs)}"

    async def _transmit(self, frame: dict[str, Any]) -> None:
        await self._pacer.wait()
        with contextlib.suppress(ConnectionClosed):  # the reader reports the close
            await self.ws.send(json.dumps(frame, ensure_ascii=False, separators=(",", ":")))

    async def send(self, frame: dict[str, Any]) -> str:
        """Send a frame with a fresh ref; `send` frames are remembered until acknowledged."""
        ref = self._ref()
        full = {"v": PROTOCOL_VERSION, **frame, "ref": ref}
        if full["type"] == "send":
            self._pending[ref] = full
        await self._transmit(full)
        return ref

    async def start(self, token: str) -> None:
        """Authenticate (token in the first frame, never in the URL) and join the first room."""
        auth = {"v": PROTOCOL_VERSION, "type": "auth", "token": token}
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps(auth))
        ready = await self._wait(self._ready)
        self.state.user = ready.user
        self.max_text = ready.limits.get("max_text_chars", 0)
        if "rate" in ready.limits:
            self._pacer = Pacer(0.8 * ready.limits["rate"], max(1, ready.limits.get("burst", 1)))
        done: asyncio.Future[Joined] = asyncio.get_running_loop().create_future()
        await self.join(self.options.room, done)
        await self._wait(done)

    async def _wait(self, future: asyncio.Future[Any]) -> Any:
        try:
            async with asyncio.timeout(self.options.timeout):
                return await future
        except TimeoutError:
            raise ChatError(f"the node did not answer within {self.options.timeout:g} s") from None

    async def join(self, room: str, done: asyncio.Future[Joined] | None = None) -> None:
        """Join (creating it if missing); key-protected only for the room our key is for."""
        protected = canonical_room(room) in self.keys
        await self._join(JoinRequest(room, protected=protected, create=True, done=done))

    async def _join(self, request: JoinRequest) -> None:
        ref = self._ref()
        self._joins[ref] = request
        frame = {
            "v": PROTOCOL_VERSION,
            "type": "join",
            "ref": ref,
            "room": request.room,
            "create": request.create,
            "protected": request.protected,
        }
        await self._transmit(frame)

    async def say(self, text: str, *, me: bool = False) -> None:
        """A message to the current room: sealed with the room key when the room wants it."""
        room = self.state.current
        if room is None:
            self._refuse("you are in no room: /join ROOM first")
            return
        if self.max_text and len(text) > self.max_text:
            self._refuse(
                f"the message is too long ({len(text)} characters, at most {self.max_text})"
            )
            return
        frame: dict[str, Any] = {"type": "send", "room": room}
        if self.state.protected(room):
            key = self.keys.get(room)
            if key is None:
                self._refuse(f"#{room} is key-protected: you need its key (--key) to write here")
                return
            frame["box"] = crypto.seal(key, text)
        else:
            frame["text"] = text
        if me:
            frame["me"] = True
        await self.send(frame)

    def _refuse(self, text: str) -> None:
        self.failures += 1
        self.view.error(text)

    async def line(self, line: str) -> bool:
        """Act on one typed line; False when the user asked to quit."""
        text = line.rstrip("\r\n")
        if not text.strip():
            return True
        if text.startswith("//"):  # "//etc" says "/etc"
            await self.say(text[1:])
            return True
        if not text.startswith("/"):
            await self.say(text)
            return True
        name, _, rest = text[1:].partition(" ")
        command, args = name.casefold(), rest.strip()
        room = self.state.current
        if command in ("quit", "exit"):
            return False
        if command == "clear":
            self.view.clear()
            return True
        if command == "join" and args and " " not in args:
            await self.join(args)
            return True
        if room is not None and self.state.protected(room):
            # The node refuses to see these in a key-protected room: seal them here.
            if command == "me" and args:
                await self.say(args, me=True)
                return True
            if command == "topic":
                await self._topic(room, args)
                return True
        frame: dict[str, Any] = {"type": "command", "line": text}
        if room is not None:
            frame["room"] = room
        await self.send(frame)
        return True

    async def _topic(self, room: str, text: str) -> None:
        if not text:
            topic = self.state.rooms[room].topic
            self.view.note(f"topic of #{room}: {topic or '(none)'}")
            return
        key = self.keys.get(room)
        if key is None:
            self._refuse(f"#{room} is key-protected: you need its key (--key) to set its topic")
            return
        await self.send({"type": "topic", "room": room, "box": crypto.seal(key, text)})

    # -- frames in ----------------------------------------------------------------------------

    async def read(self) -> None:
        """Handle frames until the connection ends, then note why it ended."""
        try:
            async for raw in self.ws:
                if isinstance(raw, str):
                    await self._receive(raw)
        except ConnectionClosed:
            pass
        finally:
            received = self.ws.protocol.close_rcvd
            if received is not None and not self._closing:
                reason = received.reason or _CLOSE_REASONS.get(received.code, "")
                reason = f" {reason}" if reason else ""
                self.close_message = f"disconnected by the node: {received.code}{reason}"
            self.closed.set()
            failure = ChatError(self.close_message)
            futures: list[asyncio.Future[Any]] = [self._ready, *self._waiters.values()]
            futures += [r.done for r in self._joins.values() if r.done is not None]
            for future in futures:
                if not future.done():
                    future.set_exception(failure)

    def _open(self, room: str, box: str) -> tuple[str | None, str | None]:
        key = self.keys.get(room)
        if key is None:
            return None, NO_KEY
        try:
            return crypto.open_box(key, box), None
        except crypto.CryptoError as exc:
            return None, str(exc)

    def _show(self, message: MessageFrame) -> None:
        """Show a message once, however often it comes (history, live, a second join)."""
        if message.id in self._seen:
            return
        self._seen[message.id] = None
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        if message.box is not None:
            text, error = self._open(message.room, message.box)
            self.view.message(Shown(message, text, error, sealed=True))
        else:
            self.view.message(Shown(message, message.text))

    def _topic_data(self, room: str, text: str | None, box: str | None) -> dict[str, Any]:
        """The topic as shown, with `decrypted` (or `error`) when it was sealed."""
        if box is None:
            return {"text": text}
        opened, error = self._open(room, box)
        if error is not None:
            return {"text": None, "decrypted": False, "error": error}
        return {"text": opened, "decrypted": True}

    async def _receive(self, raw: str) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        frame: Frame | None
        try:
            frame = msgspec.convert(data, Frame)
        except msgspec.ValidationError:
            frame = None
        ref = getattr(frame, "ref", None)
        waiter = self._waiters.pop(ref, None) if ref is not None else None
        if waiter is not None and frame is not None:
            if not waiter.done():
                waiter.set_result(frame)
            return  # our own barrier pings: nothing to show
        match frame:
            case Ready():
                if not self._ready.done():
                    self._ready.set_result(frame)
                self.view.frame(frame, data)
            case Error():
                await self._error(frame, data)
            case Ack():
                if ref is not None:
                    self._pending.pop(ref, None)
                self.view.frame(frame, data)
            case MessageFrame():
                self._show(frame)
            case Joined():
                self._joined(frame, data)
            case HistoryPage():
                self.view.frame(frame, {k: v for k, v in data.items() if k != "messages"})
                for message in frame.messages:
                    self._show(message)
            case Left():
                self.state.rooms.pop(frame.room, None)
                if self.state.current == frame.room:
                    rooms = [r for r in self.state.rooms if not r.startswith("@")]
                    self.state.current = rooms[-1] if rooms else None
                self.view.frame(frame, data)
            case TopicChanged():
                shown = self._topic_data(frame.room, frame.text, frame.box)
                room = self.state.rooms.get(frame.room)
                if room is not None:
                    room.topic = shown["text"] or f"[{shown.get('error', '')}]"
                self.view.frame(frame, {**data, **shown})
            case Clear():
                self.view.clear()
                self.view.frame(frame, data)
            case _:
                self.view.frame(frame, data)

    def _joined(self, frame: Joined, data: dict[str, Any]) -> None:
        info = frame.room
        topic = self._topic_data(info.name, info.topic, info.topic_box)
        shown = topic["text"] or (f"[{topic['error']}]" if "error" in topic else None)
        self.state.rooms.pop(info.name, None)  # re-insert: the newest room is the last one
        self.state.rooms[info.name] = RoomState(info.protected, shown)
        self.state.current = info.name
        request = self._joins.pop(frame.ref, None) if frame.ref is not None else None
        if request is not None and request.done is not None and not request.done.done():
            request.done.set_result(frame)
        room_data = dict(data.get("room", {}))
        if info.topic_box is not None:
            room_data["topic"] = topic["text"]
            room_data["topic_decrypted"] = topic.get("decrypted", False)
            if "error" in topic:
                room_data["topic_error"] = topic["error"]
        rest = {k: v for k, v in data.items() if k != "history"}  # shown one by one below
        self.view.frame(frame, {**rest, "room": room_data})
        if info.protected and info.name not in self.keys:
            self.view.warn(
                f"#{info.name} is key-protected: its messages cannot be read without --key"
            )
        for message in frame.history:
            self._show(message)

    async def _error(self, frame: Error, data: dict[str, Any]) -> None:
        if not self._ready.done():  # refused before `ready`: the session is unusable
            self._ready.set_exception(ChatError(frame.message))
            return
        ref = frame.ref
        request = self._joins.pop(ref, None) if ref is not None else None
        if request is not None:
            if frame.code == Code.ROOM_MODE and request.create and not request.protected:
                # It exists and is key-protected: join it anyway (no key, so no reading).
                await self._join(dataclasses.replace(request, create=False))
                return
            if request.done is not None and not request.done.done():
                hint = ""
                if frame.code == Code.ROOM_MODE and request.protected:
                    hint = " (a --key is only for key-protected rooms)"
                request.done.set_exception(ChatError(frame.message + hint))
                return
        if frame.code == Code.RATE_LIMITED and (ref is None or ref in self._pending):
            # The node drops such frames before reading them, so the error carries no ref:
            # the message stays pending and settle() sends it again, more slowly.
            self._pacer.slow_down()
            self._rate_hits += 1
            self._limited.set()
            if not self.options.pipe:
                self.view.frame(frame, data)
            return
        if ref is not None:
            self._pending.pop(ref, None)
            self.failures += 1
        self.view.frame(frame, data)

    # -- the end ------------------------------------------------------------------------------

    async def _barrier(self) -> None:
        """The node handles a connection's frames in order: once it answers a ping, it has
        answered every frame sent before it. The ping itself may be dropped for rate (with
        an error that cannot say so), so each such error sends another; any answer will do."""
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        refs: list[str] = []
        try:
            while not future.done():
                if self.closed.is_set():
                    raise ChatError(self.close_message)
                refs.append(self._ref())
                self._waiters[refs[-1]] = future
                self._limited.clear()
                await self._transmit({"v": PROTOCOL_VERSION, "type": "ping", "ref": refs[-1]})
                limited = asyncio.create_task(self._limited.wait())
                either: set[asyncio.Future[Any]] = {future, limited}
                try:
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    limited.cancel()
            future.result()
        finally:
            for ref in refs:
                self._waiters.pop(ref, None)

    async def settle(self) -> None:
        """Wait (at most --timeout) until every message sent is acknowledged or refused,
        sending again those the node dropped for rate."""
        try:
            async with asyncio.timeout(self.options.timeout):
                for _ in range(MAX_ROUNDS):
                    await self._barrier()
                    if not self._pending or not self._rate_hits:
                        break
                    for frame in list(self._pending.values()):
                        await self._transmit(frame)  # the same ref: one ack settles either
        except TimeoutError:
            raise ChatError(
                f"the node did not acknowledge {len(self._pending)} message(s) "
                f"within {self.options.timeout:g} s"
            ) from None
        if self._pending:
            count = len(self._pending)
            self._pending.clear()
            raise ChatError(f"the node did not acknowledge {count} message(s)")

    async def close(self) -> None:
        """Close with 1000: we are leaving, nothing went wrong."""
        self._closing = True
        with contextlib.suppress(Exception):
            await self.ws.close(1000, "bye")


# ---------------------------------------------------------------------------------------------
# The two faces


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """stdin line by line (None at its end), read by a daemon thread: files, pipes and
    terminals all work, and a blocked read never stalls the event loop."""
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=256)

    def put(item: str | None) -> bool:
        try:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()
        except Exception:  # the loop is gone: nobody is listening any more
            return False
        return True

    def run() -> None:
        buffer = b""
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1
        while fd >= 0:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            *lines, buffer = (buffer + chunk).split(b"\n")
            for raw in lines:
                if not put(raw.decode("utf-8", "replace").removesuffix("\r")):
                    return
        if buffer and not put(buffer.decode("utf-8", "replace").removesuffix("\r")):
            return
        put(None)

    threading.Thread(target=run, name="onionchat-stdin", daemon=True).start()
    return queue


async def _first(chat: Chat, task: asyncio.Task[None]) -> None:
    """Run `task` to its end, unless the node hangs up first: then ChatError says how."""
    closed = asyncio.create_task(chat.closed.wait())
    try:
        await asyncio.wait({task, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ChatError(chat.close_message)
    task.result()


async def run_pipe(chat: Chat) -> int:
    """Send stdin's lines; at its end, wait for the acks, then leave."""
    lines = _stdin_lines(asyncio.get_running_loop())

    async def feed() -> None:
        while (line := await lines.get()) is not None:
            if not await chat.line(line):
                return

    await _first(chat, asyncio.create_task(feed()))
    await chat.settle()
    if chat.failures:
        raise ChatError(f"{chat.failures} line(s) were refused (see the error lines)")
    return 0


async def run_interactive(chat: Chat) -> int:
    """A prompt at the bottom, the room scrolling above it; Ctrl-D, Ctrl-C or /quit leave."""
    session: PromptSession[str] = PromptSession()

    def prompt() -> str:
        return f"#{chat.state.current}> " if chat.state.current else "> "

    async def typing() -> None:
        while True:
            try:
                line = await session.prompt_async(prompt, handle_sigint=False)
            except (EOFError, KeyboardInterrupt):
                return
            if not await chat.line(line):
                return

    await _first(chat, asyncio.create_task(typing()))
    return 0


# ---------------------------------------------------------------------------------------------
# Entry point


def _fail(message: str) -> None:
    print(f"onionchat: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _interrupts(task: asyncio.Task[int]) -> Iterator[None]:
    """Ctrl-C cancels the session, which then closes cleanly (not a traceback)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def main(options: Options) -> int:
    """Run the client to its end; the exit code is 0 (fine), 1 (failed) or 2 (bad options)."""
    task = asyncio.create_task(_run(options))
    with _interrupts(task):
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            return 1 if options.pipe else 0


async def _run(options: Options) -> int:
    if not options.pipe and not sys.stdin.isatty():
        _fail("standard input is not a terminal: use --pipe to chat from a script")
        return 2
    try:
        password = _read_password(options)
    except ClientError as exc:
        _fail(str(exc))
        return 2
    except ChatError as exc:
        _fail(str(exc))
        return 1
    except (KeyboardInterrupt, EOFError):
        print(file=sys.stderr)
        _fail("no password given")
        return 1
    try:
        session = await login(options, password)
    except ChatError as exc:
        _fail(str(exc))
        return 1
    del password
    try:
        return await _chat(options, session)
    finally:
        await logout(options, session)


async def _chat(options: Options, session: Login) -> int:
    try:
        ws = await open_websocket(options)
    except ChatError as exc:
        _fail(str(exc))
        return 1
    state = State(user=session.user)
    view: View = PipeView() if options.pipe else TerminalView(state)
    chat = Chat(ws, view, state, options)
    reader = asyncio.create_task(chat.read())
    output: contextlib.AbstractContextManager[Any] = (
        contextlib.nullcontext() if options.pipe else patch_stdout()
    )
    try:
        with output:
            await chat.start(session.token)
            if options.pipe:
                return await run_pipe(chat)
            view.note(f"connected to {options.where} as {chat.state.user}")
            view.note("/help lists the commands, /quit (or Ctrl-D) leaves")
            return await run_interactive(chat)
    except ChatError as exc:
        _fail(str(exc))
        return 1
    finally:
        await chat.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader, options.timeout)


__all__ = [
    "ChatError",
    "ClientError",
    "Login",
    "Options",
    "canonical_room",
    "login",
    "main",
    "mentions",
    "open_websocket",
    "unreachable",
]
