"""What `onionchat connect` was told, checked before any prompt or connection; and the password.

The URL's fragment (`#room=NAME&key=KEY`) may carry the room and its key: a fragment is never
sent to the node, so a shared link can hold the key.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import getpass
import hashlib
import math
import os
import signal
import ssl
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from onionchat import crypto
from onionchat.client.errors import ChatError, ClientError

TOR_SOCKS = "127.0.0.1:9050"  # tor's default SocksPort: where .onion addresses go by default


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything `onionchat connect` was told, already checked."""

    url: str  # the node's base URL, scheme://host[:port], without path or fragment
    user: str
    room: str = "lobby"
    password_file: Path | None = None
    register: bool = False
    invite: str | None = None  # the invite code a node that takes newcomers by code asks for
    answer: str | None = None  # the answer to the node's registration question
    key: bytes | None = dataclasses.field(default=None, repr=False)
    pipe: bool = False
    bell: bool = False  # ring the terminal's bell for a mention or a direct message
    socks: str | None = None  # HOST:PORT of a SOCKS5 proxy, e.g. Tor's 127.0.0.1:9050
    timeout: float = 30.0
    ca: Path | None = None  # PEM CA bundle trusted for https:// instead of the system's CAs
    unix: Path | None = None  # the node's own unix socket (`unix:PATH`), on its machine

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        """Build from `onionchat connect`'s namespace; raises ClientError on a bad value."""
        raw, unix = str(args.url), None
        if raw.startswith("unix:"):
            # The socket a node listens on for its tor: its operator chats on the machine.
            path, _, rest = raw.removeprefix("unix:").partition("#")
            if not path:
                raise ClientError("unix: needs the socket's path, e.g. unix:data/web.sock")
            if args.socks:
                raise ClientError("--socks does not apply to a unix socket")
            unix, raw = Path(path), "http://localhost" + (f"#{rest}" if rest else "")
        url, host, fragment = _parse_url(raw)
        room = (args.room or fragment.get("room") or "lobby").strip().removeprefix("#").strip()
        if not room:
            raise ClientError("the room name is empty")
        user = str(args.user).strip()
        if not user:
            raise ClientError("the username is empty")
        key_text = args.key if args.key is not None else fragment.get("key")
        key = None
        if key_text is not None:
            try:
                key = crypto.decode_key(key_text.strip())
            except crypto.CryptoError as exc:
                raise ClientError(f"bad room key: {exc}") from None
        socks = _parse_socks(args.socks) if args.socks else None
        if host.endswith(".onion"):
            _check_onion(host)
            # Only tor can reach an onion; resolving it here would leak it to the local DNS.
            socks = socks or TOR_SOCKS
        ca = Path(args.ca) if args.ca is not None else None
        if ca is not None:
            if not url.startswith("https:"):
                raise ClientError("--ca applies to https:// URLs only")
            _check_ca(ca)
        timeout = float(args.timeout)
        if not (math.isfinite(timeout) and timeout > 0):
            raise ClientError(f"--timeout must be a positive number of seconds, not {timeout:g}")
        return cls(
            url=url,
            user=user,
            room=room,
            password_file=Path(args.password_file) if args.password_file is not None else None,
            register=bool(args.register),
            invite=args.invite,
            answer=args.answer,
            key=key,
            pipe=bool(args.pipe),
            bell=bool(args.bell),
            socks=socks,
            timeout=timeout,
            ca=ca,
            unix=unix,
        )

    @property
    def where(self) -> str:
        """host[:port] (or the socket), for messages."""
        return f"unix:{self.unix}" if self.unix else self.url.partition("://")[2]

    @property
    def host(self) -> str:
        """The node's host name or address, as the proxy (or the resolver) gets it."""
        host = urlsplit(self.url).hostname
        assert host is not None  # checked in from_args
        return host

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (443 if self.url.startswith("https:") else 80)

    @property
    def onion(self) -> bool:
        return self.host.endswith(".onion")

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.url.startswith("https:") else "ws"
        return f"{scheme}://{self.url.partition('://')[2]}/ws"

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
    netloc = _host_port(host, port)
    fragment = {k: v[-1] for k, v in parse_qs(parts.fragment).items() if v and v[-1]}
    return f"{scheme}://{netloc}", host, fragment


def _check_onion(host: str) -> None:
    """A v3 onion address carries a checksum: a typo is caught here, before tor is asked."""
    label = host.removesuffix(".onion").rpartition(".")[2]  # tor ignores subdomains
    try:
        raw = base64.b32decode(label.upper()) if len(label) == 56 else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 35:
        raise ClientError(
            f"{host} is not a valid onion address: it needs 56 letters a-z and digits 2-7 "
            "before .onion"
        )
    key, checksum, version = raw[:32], raw[32:34], raw[34:]
    digest = hashlib.sha3_256(b".onion checksum" + key + version).digest()
    if version != b"\x03":
        raise ClientError(f"{host} is not a version 3 onion address")
    if digest[:2] != checksum:
        raise ClientError(f"{host} is not a valid onion address: its checksum does not match")


def _check_ca(path: Path) -> None:
    """A CA file that cannot be used is a bad option, found before any connection."""
    try:
        ssl.create_default_context(cafile=path)
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            raise ClientError(f"--ca {path} holds no usable PEM certificate") from None
        raise ClientError(f"cannot read the CA file {path}: {exc.strerror}") from None


def _parse_socks(raw: str) -> str:
    text = raw.strip().removeprefix("socks5h://").removeprefix("socks5://")
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClientError(f"--socks must be HOST:PORT, e.g. 127.0.0.1:9050 (not {raw!r})")
    return _host_port(host, int(port))


def _host_port(host: str, port: int | None) -> str:
    """IPv6 addresses go in brackets, so the port stays unambiguous."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def read_password(options: Options) -> str:
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
