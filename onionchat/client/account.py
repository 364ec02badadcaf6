"""Accounts over HTTP: register or log in, and log out at the end.

The password never leaves this process: the node gets a PBKDF2 login secret derived from it
with the account's salt, and keeps only an argon2id hash of that.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import secrets
from typing import Any

import httpx
import socksio

from onionchat import crypto
from onionchat.client.errors import ChatError
from onionchat.client.options import Options
from onionchat.client.passwords import weakness
from onionchat.client.transport import http_client, unreachable

SALT_BYTES = 16
MAX_ITERATIONS = 100_000_000  # a node asking for more would keep us hashing for hours


@dataclasses.dataclass(frozen=True)
class Login:
    """A session from /api/login or /api/register; its token opens the WebSocket."""

    user: str
    token: str = dataclasses.field(repr=False)
    expires: int
    # Derived from the password to unwrap the identity key: kept in memory, never sent.
    wrapping: bytes = dataclasses.field(repr=False)


async def login(options: Options, password: str) -> Login:
    """Register or log in, as --register says."""
    weak = weakness(password, options.user) if options.register else None
    if weak is not None:
        raise ChatError(f"the password is {weak}; a forgotten one cannot be recovered")
    async with http_client(options) as http:
        pre = await _post(http, options, "/api/prelogin", {"username": options.user})
        iterations = pre.get("iterations")
        if not isinstance(iterations, int) or not 0 < iterations <= MAX_ITERATIONS:
            raise ChatError("the node sent a bad PBKDF2 iteration count")
        if options.register:
            salt = secrets.token_bytes(SALT_BYTES)
        else:
            salt = _unb64(pre.get("salt"), "salt")
        secret = await asyncio.to_thread(crypto.login_secret, password, salt, iterations)
        wrapping = await asyncio.to_thread(crypto.wrapping_key, password, salt, iterations)
        body: dict[str, Any] = {"username": options.user, "secret": _b64(secret)}
        if options.register:
            body |= {"salt": _b64(salt), "iterations": iterations}
            if options.invite:
                body["invite"] = options.invite
            if options.answer:
                body["answer"] = options.answer
        path = "/api/register" if options.register else "/api/login"
        data = await _post(http, options, path, body)
    user, token, expires = data.get("user"), data.get("token"), data.get("expires")
    if not isinstance(user, str) or not isinstance(token, str) or not isinstance(expires, int):
        raise ChatError("the node's login answer lacks user, token or expires")
    return Login(user=user, token=token, expires=expires, wrapping=wrapping)


async def logout(options: Options, session: Login) -> None:
    """Best effort: each run makes a session, so end it rather than leave it for 30 days."""
    with contextlib.suppress(Exception):
        async with http_client(options, timeout=min(options.timeout, 5.0)) as http:
            await http.post("/api/logout", headers={"Authorization": f"Bearer {session.token}"})


async def _post(
    http: httpx.AsyncClient, options: Options, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    """The JSON answer; the node's own message when it refuses."""
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


def _b64(raw: bytes) -> str:
    return crypto.encode_key(raw)  # the same unpadded base64url the node's API speaks


def _unb64(text: object, what: str) -> bytes:
    if isinstance(text, str):
        try:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            pass
    raise ChatError(f"the node sent a bad {what}")
