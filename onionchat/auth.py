"""Accounts and sessions.

Clients never send the password: they send a login secret derived from it with PBKDF2-SHA256
and the account's salt (see `crypto.login_secret`). The node stores an argon2id hash of that
secret, computed off the event loop with a cap on hashes at once (each takes tens of MiB).
Session tokens are 32 random bytes; only their SHA-256 is stored. Answers about unknown names
look like answers about known ones: same salt lookup, same error, the same hashing work.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import hmac
import logging
import math
import secrets
import time

import nacl.exceptions
import nacl.pwhash

from onionchat import names
from onionchat.config import Auth as AuthSettings
from onionchat.protocol import Code, ProtocolError
from onionchat.ratelimit import Windows
from onionchat.store import Conflict, Store, User

log = logging.getLogger("onionchat.auth")

COOKIE = "onionchat_session"  # the session token, for browsers (HttpOnly, SameSite=Strict)
SECRET_BYTES = 32
SALT_BYTES = 16
_COSTS = {
    "min": (nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN),
    "interactive": (
        nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    ),
    "moderate": (nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE),
    "sensitive": (
        nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE,
        nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE,
    ),
}


class AuthError(ProtocolError):
    """Refused credentials or an unusable session; `status` is the HTTP status to answer."""

    def __init__(self, code: Code, message: str, status: int, retry_after: float = 0) -> None:
        super().__init__(code, message)
        self.status = status
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    user: User
    token_hash: bytes
    expires: int

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires


def b64decode(text: str, size: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(Code.BAD_FRAME, f"{what} is not base64url") from None
    if len(raw) != size:
        raise ProtocolError(Code.BAD_FRAME, f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Accounts:
    def __init__(
        self,
        store: Store,
        settings: AuthSettings,
        node_secret: bytes,
        reserved: frozenset[str] = frozenset(),
    ) -> None:
        self._reserved = reserved  # name keys no account may take: the bots'
        self._store = store
        self._settings = settings
        self._node_secret = node_secret
        self._opslimit, self._memlimit = _COSTS[settings.argon2]
        self._hashing = asyncio.Semaphore(settings.hash_workers)
        self._per_user = Windows(settings.user_attempts, settings.attempt_window)
        self._per_node = Windows(settings.node_attempts, settings.attempt_window, keys=1)
        self._dummy_hash: bytes | None = None

    async def _hash(self, secret: bytes) -> bytes:
        async with self._hashing:
            return await asyncio.to_thread(
                nacl.pwhash.argon2id.str, secret, self._opslimit, self._memlimit
            )

    async def _verify(self, stored: bytes, secret: bytes) -> bool:
        async with self._hashing:
            try:
                return await asyncio.to_thread(nacl.pwhash.verify, stored, secret)
            except nacl.exceptions.InvalidkeyError:
                return False

    def _limit(self, key: str | None) -> None:
        wait = self._per_node.retry_after("node")
        if key is not None:
            wait = max(wait, self._per_user.retry_after(key))
        if wait > 0:
            seconds = math.ceil(wait)
            raise AuthError(
                Code.RATE_LIMITED,
                f"too many login attempts; try again in {seconds} s",
                429,
                retry_after=seconds,
            )
        self._per_node.hit("node")

    async def prelogin(self, username: str) -> tuple[bytes, int]:
        """The salt and PBKDF2 iterations to derive this account's login secret with.

        Unknown names get a salt made from the node secret, stable per name, so the answer
        does not tell whether the name exists."""
        key = names.key(username)
        user = await self._store.user_by_key(key)
        if user is not None:
            return user.salt, user.iterations
        fake = hmac.new(self._node_secret, b"salt\0" + key.encode(), hashlib.sha256).digest()
        return fake[:SALT_BYTES], self._settings.pbkdf2_iterations

    async def register(
        self, username: str, salt: bytes, iterations: int, secret: bytes
    ) -> tuple[User, str, int]:
        name = names.username(username)
        if names.key(name) in self._reserved:
            raise AuthError(Code.NAME_TAKEN, f"the name {name!r} belongs to a bot here", 409)
        if iterations < self._settings.pbkdf2_iterations:
            raise AuthError(
                Code.BAD_FRAME,
                f"iterations must be at least {self._settings.pbkdf2_iterations}",
                400,
            )
        self._limit(None)
        stored = await self._hash(secret)
        try:
            user = await self._store.create_user(
                name, names.key(name), salt, iterations, stored.decode()
            )
        except Conflict:
            raise AuthError(Code.NAME_TAKEN, f"the name {name!r} is taken", 409) from None
        log.info("account created", extra={"event": "register", "user": user.name})
        token, expires = await self._new_session(user)
        return user, token, expires

    async def create_locked(self, name: str) -> User:
        """An account nobody can log in to (a bot's): its hash is of a secret nobody keeps."""
        stored = await self._hash(secrets.token_bytes(SECRET_BYTES))
        salt = secrets.token_bytes(SALT_BYTES)
        iterations = self._settings.pbkdf2_iterations
        name = names.username(name)
        return await self._store.create_user(
            name, names.key(name), salt, iterations, stored.decode()
        )

    async def login(self, username: str, secret: bytes) -> tuple[User, str, int]:
        key = names.key(username)
        self._limit(key)
        user = await self._store.user_by_key(key)
        if user is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash(secrets.token_bytes(SECRET_BYTES))
            await self._verify(self._dummy_hash, secret)
            ok = False
        else:
            ok = await self._verify(user.hash.encode(), secret)
        if not ok or user is None:
            self._per_user.hit(key)
            log.info("login refused", extra={"event": "auth_failure", "user": username[:64]})
            raise AuthError(Code.AUTH_FAILED, "wrong username or password", 401)
        self._per_user.clear(key)
        log.info("login", extra={"event": "auth_success", "user": user.name})
        token, expires = await self._new_session(user)
        return user, token, expires

    async def _new_session(self, user: User) -> tuple[str, int]:
        token = b64encode(secrets.token_bytes(32))
        expires = int(time.time() + self._settings.session_hours * 3600)
        await self._store.create_session(token_hash(token), user.id, expires)
        return token, expires

    async def session(self, token: str) -> Session:
        """The live session for `token`, or AuthError (expired and revoked are told apart)."""
        digest = token_hash(token)
        found = await self._store.session(digest)
        if found is None:
            raise AuthError(Code.AUTH_FAILED, "unknown or revoked session token", 401)
        user, expires = found
        session = Session(user, digest, expires)
        if session.expired:
            raise AuthError(Code.SESSION_EXPIRED, "the session has expired; log in again", 401)
        return session

    async def logout(self, session: Session) -> None:
        await self._store.delete_session(session.token_hash)
        log.info("logout", extra={"event": "logout", "user": session.user.name})
