"""Accounts and sessions.

Clients never send the password: they send a login secret derived from it with PBKDF2-SHA256
and the account's salt (see `crypto.login_secret`). The node stores an argon2id hash of that
secret, computed off the event loop with a cap on hashes at once (each takes tens of MiB).
Session tokens are 32 random bytes; only their SHA-256 is stored. Answers about unknown names
look like answers about known ones: same salt lookup, same error, the same wait in the same queue
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
import unicodedata
from collections import deque
from collections.abc import Callable
from typing import Any

import nacl.exceptions
import nacl.pwhash

from onionchat import crypto, names
from onionchat.background import Workers
from onionchat.config import Auth as AuthSettings
from onionchat.i18n import say
from onionchat.protocol import Code, ProtocolError
from onionchat.ratelimit import Guesses, TokenBucket
from onionchat.store import Conflict, Lookalike, NotAdmitted, Store, User

log = logging.getLogger("onionchat.auth")

COOKIE = "onionchat_session"  # the session token, for browsers (HttpOnly, SameSite=Strict)
DEVICE_COOKIE = "onionchat_device"  # proof that this browser logged in to a name before
DEVICE_BYTES = 16
BUSY_RETRY = 2  # seconds a client is told to wait when the hash queue is full
SECRET_BYTES = 32
TIMES_KEPT = 32  # recent verification times an unknown name's login is held for, one at random
SALT_BYTES = 16
_COSTS = {
    "min": (nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN),
    # OWASP's argon2id row of least memory (m=7 MiB, t=5, p=1), as strong as its m=19 MiB t=2:
    # it fits in the cache, so it takes half the time and leaves memory bandwidth to the chat
    "owasp": (5, 7 * 1024 * 1024),
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


def busy() -> AuthError:
    """The refusal when password work is queued as far as it may be: at once, with no work."""
    return AuthError(
        Code.RATE_LIMITED,
        say("the node is busy with other logins; try again in {seconds} s", seconds=BUSY_RETRY),
        429,
        retry_after=BUSY_RETRY,
    )


def b64decode(text: str, size: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(Code.BAD_FRAME, say("{what} is not base64url", what=what)) from None
    if len(raw) != size:
        raise ProtocolError(
            Code.BAD_FRAME,
            say("{what} must be {size} bytes, got {n}", what=what, size=size, n=len(raw)),
        )
    return raw


def b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _folded(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()


def _always() -> bool:
    return True


def invite_hash(code: str) -> bytes:
    return hashlib.sha256(b"onionchat invite code\0" + code.strip().encode()).digest()


def _not_admitted(mode: str, reason: str) -> AuthError:
    if mode == "closed":
        return AuthError(
            Code.REGISTRATION_CLOSED, say("{reason}: ask its operator", reason=reason), 403
        )
    return AuthError(Code.INVITE_NEEDED, say("{reason}: ask a member for one", reason=reason), 403)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Accounts:
    """Registration, login and sessions, with limits that slow an attacker without locking
    anyone out: a name's failures delay only that name's next attempt (and not from a browser
    that logged in to it before, which holds a device token); the node-wide bound is the queue
    of hashing work, refused at once when full, never a time window that shuts everyone out;
    registrations have their own rate. Every refusal comes before any hashing."""

    def __init__(
        self,
        store: Store,
        settings: AuthSettings,
        node_secret: bytes,
        reserved: frozenset[str] = frozenset(),
    ) -> None:
        self._reserved = reserved  # names no account may take nor look like: the bots'
        self._reserved_keys = frozenset(names.key(label) for label in reserved)
        self._store = store
        # Whether node staff is around to admit newcomers, and whether guests are welcome now
        # (the node's, set by the server).
        self.staff_around: Callable[[], bool] = _always
        self.guests_welcome: Callable[[], bool] = _always
        self._settings = settings
        self._node_secret = node_secret
        self._opslimit, self._memlimit = _COSTS[settings.argon2]
        self._hashing = Workers(settings.hash_workers)
        self._known = Workers(1)  # known devices do not queue behind a spray
        self._hashes = 0  # running and waiting
        rate, burst = settings.hash_rate, max(1, settings.hash_workers)
        self._budget = TokenBucket(rate, burst)
        self._known_budget = TokenBucket(rate, burst)
        self._names = Guesses(settings.free_failures, settings.max_delay)
        self._devices = Guesses(settings.free_failures, settings.max_delay)
        self._registrations = TokenBucket(settings.registrations / 60, settings.registrations)
        self._took: deque[float] = deque(maxlen=TIMES_KEPT)  # seconds of recent verifications

    async def _run(self, work: Any, *args: Any, device: bool = False) -> Any:
        """Hashing work through the bounded queue; a full queue is refused before any work.
        Logins from a known device may queue a little further, past a flood of guesses."""
        if self._hashes >= self._bound(device):
            raise busy()
        self._hashes += 1
        try:
            await self._pace(self._known_budget if device else self._budget)
            return await (self._known if device else self._hashing).run(work, *args)
        finally:
            self._hashes -= 1

    def _bound(self, device: bool) -> int:
        """Hashes running and waiting at most; known devices may queue twice as far."""
        return self._settings.hash_workers + self._settings.hash_queue * (2 if device else 1)

    @staticmethod
    async def _pace(budget: TokenBucket) -> None:
        """Wait for the budget to allow one more hash, first come first served."""
        await asyncio.sleep(budget.reserve())

    async def _hash(self, secret: bytes) -> bytes:
        stored: bytes = await self._run(
            nacl.pwhash.argon2id.str, secret, self._opslimit, self._memlimit
        )
        return stored

    async def _verify(self, stored: bytes, secret: bytes, device: bool) -> bool:
        ok, took = await self._run(crypto.verify_hash, stored, secret, device=device)
        self._took.append(took)
        return bool(ok)

    async def _imitate(self, device: bool) -> None:
        """A name that does not exist gets the same queue, budget and worker as a real login,
        held for as long as one recent real verification took, but no hashing: a spray of
        made-up names costs the node no CPU and still cannot tell them from real ones."""
        if not self._took:
            stored = await self._hash(secrets.token_bytes(SECRET_BYTES))
            await self._verify(stored, secrets.token_bytes(SECRET_BYTES), device)
            return
        await self._run(time.sleep, secrets.choice(self._took), device=device)

    def device_token(self, key: str) -> str:
        """Proof, for the next login of this name from the same client, that it got in before."""
        nonce = secrets.token_bytes(DEVICE_BYTES)
        return b64encode(nonce + self._device_mac(key, nonce))

    def _device_mac(self, key: str, nonce: bytes) -> bytes:
        message = b"device\0" + key.encode() + b"\0" + nonce
        return hmac.new(self._node_secret, message, hashlib.sha256).digest()[:DEVICE_BYTES]

    def _device(self, key: str, token: str | None) -> str | None:
        """The device's own key for the limits, when `token` is a valid one for this name."""
        if not token or len(token) > 64:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        nonce, mac = raw[:DEVICE_BYTES], raw[DEVICE_BYTES:]
        if len(mac) != DEVICE_BYTES or not hmac.compare_digest(mac, self._device_mac(key, nonce)):
            return None
        return f"{key}\0{nonce.hex()}"

    def form_token(self, seed: str) -> str:
        """The token a login or registration form must carry, tied to the pre-session cookie
        `seed`: another site can make a browser post a form, but cannot read this."""
        digest = hmac.new(self._node_secret, b"form\0" + seed.encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def check_login(self, username: str, device: str | None = None) -> None:
        """Refuse now (429) what `login` would refuse before hashing: for callers with work of
        their own to do first (the no-JS login derives the secret)."""
        key = names.key(username)
        known = self._device(key, device)
        wait = self._devices.wait(known) if known else self._names.wait(key)
        if wait > 0:
            seconds = math.ceil(wait)
            raise AuthError(
                Code.RATE_LIMITED,
                say(
                    "too many failed logins for this name; try again in {seconds} s",
                    seconds=seconds,
                ),
                429,
                retry_after=seconds,
            )
        if self._hashes >= self._bound(known is not None):
            raise busy()

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
        self,
        username: str,
        salt: bytes,
        iterations: int,
        secret: bytes,
        invite: str | None = None,
        answer: str | None = None,
    ) -> tuple[User, str, int]:
        """A new account and its session, as the registration mode allows (checked before
        any hashing, and again in the account's transaction)."""
        name = names.username(username)
        if names.key(name) in self._reserved_keys:
            raise AuthError(
                Code.NAME_TAKEN, say("the name {name} belongs to a bot here", name=f"{name!r}"), 409
            )
        if (bot := names.lookalike(name, self._reserved)) is not None:
            raise AuthError(
                Code.NAME_TAKEN,
                say(
                    "the name {name} looks like {bot}, a bot here", name=f"{name!r}", bot=f"{bot!r}"
                ),
                409,
            )
        if iterations < self._settings.pbkdf2_iterations:
            raise AuthError(
                Code.BAD_FRAME,
                say(
                    "iterations must be at least {pbkdf2_iterations}",
                    pbkdf2_iterations=self._settings.pbkdf2_iterations,
                ),
                400,
            )
        if iterations > self._settings.max_iterations:
            raise AuthError(
                Code.BAD_FRAME,
                say(
                    "iterations must be at most {max_iterations}",
                    max_iterations=self._settings.max_iterations,
                ),
                400,
            )
        self._count_newcomer(say("new accounts"))
        admission, code = await self.admission(invite, answer)
        stored = await self._hash(secret)
        try:
            user = await self._store.create_user(
                name,
                names.key(name),
                salt,
                iterations,
                stored.decode(),
                admission=admission,
                invite=code,
            )
        except NotAdmitted as exc:
            raise _not_admitted(admission, str(exc)) from None
        except Lookalike as exc:
            raise AuthError(
                Code.NAME_TAKEN,
                say(
                    "the name {name} looks too much like {existing}, who is already here",
                    name=f"{name!r}",
                    existing=f"{exc.existing!r}",
                ),
                409,
            ) from None
        except Conflict:
            raise AuthError(
                Code.NAME_TAKEN, say("the name {name} is taken", name=f"{name!r}"), 409
            ) from None
        log.info("account created", extra={"event": "register", "user": user.name})
        token, expires = await self._new_session(user)
        return user, token, expires

    async def admission(
        self, invite: str | None, answer: str | None = None
    ) -> tuple[str, bytes | None]:
        """The registration mode that holds now, and the invite code's hash, or the refusal
        (AuthError): asked before any hashing, so that refusals cost none."""
        question = self._settings.question.strip()
        if question and _folded(answer or "") not in {_folded(a) for a in self._settings.answers}:
            raise AuthError(
                Code.WRONG_ANSWER,
                say("answer the node's question to register: {question}", question=question)
                if not answer
                else say("that is not the answer to: {question}", question=question),
                403,
            )
        mode = self._settings.registration
        code = None if invite is None else invite_hash(invite)
        if mode == "open" or not await self._store.has_humans():
            return mode, code
        if mode == "closed":
            raise _not_admitted(mode, "this node takes no new accounts")
        if mode == "invite":
            if code is None:
                raise _not_admitted(mode, "this node takes new accounts with an invite code only")
            if not await self._store.invite_valid(code):
                raise _not_admitted(mode, "that invite code is unknown, used up or expired")
        if mode == "waiting" and not self.staff_around():
            mode = "open"  # nobody would admit them: the fallback
        return mode, code

    def _count_newcomer(self, what: str) -> None:
        """A new account or guest spends a token of the node's registrations, or is refused."""
        if not self._registrations.allow():
            seconds = math.ceil(self._registrations.delay())
            raise AuthError(
                Code.RATE_LIMITED,
                say(
                    "too many {what} on this node just now; try again in {seconds} s",
                    what=what,
                    seconds=seconds,
                ),
                429,
                retry_after=seconds,
            )

    async def guest(self) -> tuple[User, str, int]:
        """A session without an account: a name of the node's making, for `guest_hours`, and
        no password (a guest's name cannot be logged in to). No hashing at all."""
        if not self._settings.guests or not self.guests_welcome():
            raise AuthError(
                Code.NO_GUESTS, say("this node takes no guests now: make an account"), 403
            )
        self._count_newcomer(say("newcomers"))
        for _ in range(5):
            name = f"guest-{secrets.token_hex(3)}"
            try:
                user = await self._store.create_user(
                    name, names.key(name), secrets.token_bytes(SALT_BYTES), 1, "!", guest=True
                )
            except Conflict:
                continue
            break
        else:
            raise AuthError(Code.UNAVAILABLE, say("no guest name is free just now: try again"), 503)
        token = b64encode(secrets.token_bytes(32))
        expires = int(time.time() + self._settings.guest_hours * 3600)
        await self._store.create_session(token_hash(token), user.id, expires)
        log.info("guest session", extra={"event": "guest"})
        return user, token, expires

    async def create_locked(self, name: str) -> User:
        """An account nobody can log in to (a bot's): its hash is of a secret nobody keeps."""
        stored = await self._hash(secrets.token_bytes(SECRET_BYTES))
        salt = secrets.token_bytes(SALT_BYTES)
        iterations = self._settings.pbkdf2_iterations
        name = names.username(name)
        return await self._store.create_user(
            name, names.key(name), salt, iterations, stored.decode(), bot=True
        )

    async def login(
        self, username: str, secret: bytes, device: str | None = None
    ) -> tuple[User, str, int]:
        """A session for the right secret. `device` is the token an earlier login of this name
        from the same client returned (see `device_token`)."""
        key = names.key(username)
        self.check_login(username, device)
        known = self._device(key, device)
        user = await self._store.user_by_key(key)
        if user is None or user.role == "guest":  # a guest has no password to log in with
            await self._imitate(known is not None)
            user = None
            ok = False
        else:
            ok = await self._verify(user.hash.encode(), secret, known is not None)
        if not ok or user is None:
            if known:
                self._devices.failed(known)
            else:
                self._names.failed(key)
            log.info("login refused", extra={"event": "auth_failure"})
            raise AuthError(Code.AUTH_FAILED, say("wrong username or password"), 401)
        if known:  # the name's own count stays: the attacker gets no fresh free guesses
            self._devices.succeeded(known)
        else:
            self._names.succeeded(key)
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
            raise AuthError(Code.AUTH_FAILED, say("unknown or revoked session token"), 401)
        user, expires = found
        session = Session(user, digest, expires)
        if session.expired:
            raise AuthError(Code.SESSION_EXPIRED, say("the session has expired; log in again"), 401)
        return session

    def close(self) -> None:
        self._hashing.close()
        self._known.close()

    async def logout(self, session: Session) -> None:
        await self._store.delete_session(session.token_hash)
        log.info("logout", extra={"event": "logout", "user": session.user.name})
