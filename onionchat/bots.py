"""Named models in the rooms: who called, what the model is shown, and the answer growing in
the room for everyone until it is stored like any other message.

One answer at a time per bot per room (a lane with a bounded queue), a per-user rate, a longest
answer, `/stop`; every failure becomes a plain message from the bot, and nothing waits forever.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from onionchat import crypto, i18n, models, names, sealed
from onionchat.addressing import Addressing
from onionchat.config import Bot
from onionchat.i18n import say
from onionchat.onion_keys import write_secret
from onionchat.protocol import Delta, Message, Readers, encode
from onionchat.ratelimit import TokenBucket
from onionchat.store import Room

if TYPE_CHECKING:
    from onionchat.auth import Accounts
    from onionchat.hub import Connection
    from onionchat.node import Arrival, Node

log = logging.getLogger("onionchat.bots")

FLUSH = 0.25  # seconds between two delta frames: a few updates a second, however fast the model
HISTORY = 200  # messages looked at for context, newest first, before the character budget
IDLE_LANE = 600.0  # seconds a bot's lane in a room waits for a call before it goes away
STATUS_FOR = 10.0  # seconds one check of the model servers answers /bots for
BOT_KEY_FILE = "bot_key"  # in the data directory, 0600: wraps the bots' identity keys
NO_TOR = "reaches its model server only through Tor, and this node's Tor is not running"


@dataclasses.dataclass
class Request:
    asker: str
    prompt: str
    message_id: str
    key: bytes | None = None  # the room key the call was sealed with: the answer's, too
    signed: sealed.Body | None = None  # the call's sealed body, its signature checked later
    lang: str | None = None  # the asker's: what goes wrong is said in it


@dataclasses.dataclass
class Lane:
    """One bot in one room: the answer being written, and who waits for the next one."""

    bot_id: str
    room: Room
    queue: asyncio.Queue[Request]
    worker: asyncio.Task[None] | None = None
    answering: asyncio.Task[None] | None = None
    stopped_by: str | None = None


class Bots:
    def __init__(self, node: Node, proxy: Callable[[], str | None]) -> None:
        self.node = node
        self.bots: dict[str, Bot] = dict(node.settings.bots)
        self.addressing = Addressing(
            (bot_id, label) for bot_id, bot in self.bots.items() for label in _labels(bot)
        )
        self._proxy = proxy
        self._lanes: dict[tuple[str, str], Lane] = {}
        self._rates: dict[tuple[str, str], TokenBucket] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._users: dict[str, int] = {}  # bot ID -> its account
        self._secrets: dict[str, bytes] = {}  # bot ID -> its identity secret key
        # (bot ID, room) -> the room keys of the invitations it holds that were signed by
        # their inviter, newest first. An insider's invitation with a key of their own adds a
        # key; it replaces none: the bot answers each call with the key the call came under.
        self._keys: dict[tuple[str, str], list[bytes]] = {}
        self._status: tuple[float, asyncio.Future[list[tuple[Bot, str | None]]]] | None = None
        self._answers = asyncio.Semaphore(node.settings.limits.bot_answers)  # node-wide

    async def start(self, accounts: Accounts, node_secret: bytes, data_dir: Path) -> None:
        """Each bot has an account nobody can log in to, whose identity key the node holds
        (wrapped under a key of its own file in the data directory, never under anything the
        database alone holds), so members can /invite it into key-protected rooms like anyone
        else; invitations it holds are opened again here."""
        store = self.node.store
        wrapping = _wrapping(load_bot_key(data_dir))
        before = _wrapping(node_secret)  # how nodes before the key file wrapped them
        for bot_id, bot in self.bots.items():
            user = await store.user_by_key(names.key(bot.name))
            if user is None:
                user = await accounts.create_locked(bot.name)
            found = await store.identity(names.key(bot.name))
            secret: bytes | None = None
            if found is not None and found.wrapped is not None:
                for key in (wrapping, before):
                    with contextlib.suppress(crypto.CryptoError):
                        secret = crypto.unwrap_identity(key, found.wrapped)
                        break
            if secret is None:
                secret, _ = crypto.new_identity()
            wrapped = crypto.wrap_identity(wrapping, secret)
            public = base64.b64encode(crypto.public_of(secret)).decode()
            signing = base64.b64encode(sealed.signing_public(secret)).decode()
            await store.set_identity(user.id, public, wrapped, signing)
            self._users[bot_id], self._secrets[bot_id] = user.id, secret
            for room, inviter, invitation in await store.invitations(user.id):
                with contextlib.suppress(crypto.CryptoError, sealed.Rejected):
                    key = await self._open_invitation(bot_id, room, inviter, invitation)
                    self._keep(bot_id, room, key)

    async def _open_invitation(self, bot_id: str, room: str, inviter: str, box: str) -> bytes:
        """The room key of an invitation signed by its inviter for this bot, or CryptoError or
        Rejected saying why not."""
        invitation = sealed.open_invitation(box, self._secrets[bot_id])
        invitation.check(room, inviter, self.bots[bot_id].name)
        if not invitation.verify(await self._signing(inviter) or b""):
            raise sealed.Rejected(f"it is not signed by {inviter}'s key")
        return invitation.key

    def _keep(self, bot_id: str, room: str, key: bytes) -> None:
        keys = self._keys.setdefault((bot_id, room), [])
        if key not in keys:
            keys.insert(0, key)

    async def _signing(self, user: str) -> bytes | None:
        found = await self.node.store.identity(names.key(user))
        if found is None or found.signing is None:
            return None
        return base64.b64decode(found.signing)

    def names(self) -> dict[str, list[str]]:
        return {bot.name: list(bot.aliases) for bot in self.bots.values()}

    def readers(self, room: str) -> list[str]:
        return [self.bots[bot_id].name for bot_id, name in self._keys if name == room]

    async def invited(
        self, room: Room, name: str, conn: Connection, invitation: str, ref: str | None
    ) -> bool:
        """A member sealed a room's key to a bot: from now on it reads the room, and every
        member is told so. False when `name` is no bot."""
        bot_id = self.addressing.bot_of(name)
        if bot_id is None:
            return False
        self.node.authority.require(conn.user_key, "bots", room.name)
        try:
            key = await self._open_invitation(bot_id, room.name, conn.user, invitation)
        except crypto.CryptoError:
            text = say(
                "{bot} cannot open that key: it was sealed to another key",
                bot=self.bots[bot_id].name,
            )
            self.node.notice(conn, text, room.name, ref)
            return True
        except sealed.Rejected as exc:
            text = say(
                "{bot} refused that invitation: {why}", bot=self.bots[bot_id].name, why=str(exc)
            )
            self.node.notice(conn, text, room.name, ref)
            return True
        self._keep(bot_id, room.name, key)
        bot = self.bots[bot_id]
        self._tell(
            room.name,
            say(
                "{bot} can read #{room} now ({user} invited it): its answers are sealed with "
                "the room key; /uninvite {bot} takes that back",
                bot=bot.name,
                room=room.name,
                user=conn.user,
            ),
            conn,
            ref,
        )
        log.info("bot invited", extra={"event": "bot_invited", "bot": bot_id, "room": room.name})
        return True

    async def uninvite(self, room: Room, name: str, by: str) -> bool:
        bot_id = self.addressing.bot_of(name)
        if bot_id is None or (bot_id, room.name) not in self._keys:
            return False
        del self._keys[(bot_id, room.name)]
        await self.node.store.delete_invitation(room.id, self._users[bot_id])
        self._tell(
            room.name,
            say(
                "{bot} can no longer read #{room} ({user} took the key back)",
                bot=self.bots[bot_id].name,
                room=room.name,
                user=by,
            ),
        )
        log.info(
            "bot uninvited", extra={"event": "bot_uninvited", "bot": bot_id, "room": room.name}
        )
        return True

    def greet(self, conn: Connection, room: Room) -> None:
        """Whoever joins a key-protected room learns which bots can read it."""
        for bot in self.readers(room.name):
            self.node.notice(
                conn,
                say("{bot} can read #{room}: a member invited it", bot=bot, room=room.name),
                room.name,
            )

    def _tell(
        self, room: str, text: str, conn: Connection | None = None, ref: str | None = None
    ) -> None:
        """Every member learns who can read the room; the one who changed it, with its ref."""
        self.node.hub.broadcast(room, encode(Readers(room=room, bots=self.readers(room))))
        self.node.announce(room, text, conn, ref)

    async def close(self) -> None:
        if self._status is not None:
            self._status[1].cancel()
        for lane in self._lanes.values():
            if lane.worker is not None:
                lane.worker.cancel()
        for lane in self._lanes.values():
            if lane.worker is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await lane.worker
        for client in self._clients.values():
            await client.aclose()

    # -- being called ---------------------------------------------------------------------

    def hear(self, arrival: Arrival) -> None:
        """A message was stored and fanned out: does it call a bot that can read the room?
        Only a call written on this node by a user is answered (and so answered once, on the
        caller's node): not one from another node, nor a bot's own answer."""
        conn, room, message = arrival.conn, arrival.room, arrival.message
        if conn is None or message.me or message.to is not None or message.edit or message.react:
            return
        text, key, body = message.text, None, None
        if message.box is not None:
            keys = [k for (_, r), ks in self._keys.items() if r == room.name for k in ks]
            found = _open(keys, message)
            if found is None:
                return
            key, body = found
            text = body.text
        if text is None:
            return
        call = self.addressing.call(text)
        if call is None:
            return
        if room.protected and key not in self._keys.get((call.bot, room.name), []):
            return  # the caller's client explains why; the node cannot even read the call
        bot = self.bots[call.bot]
        if "*" not in bot.rooms and room.name not in bot.rooms:
            self.node.notice(
                conn,
                say("{bot} does not answer in #{room}", bot=bot.name, room=room.name),
                room.name,
            )
            return
        rate = self._rates.setdefault(
            (call.bot, conn.user_key),
            TokenBucket(bot.user_per_minute / 60, max(1, int(bot.user_per_minute))),
        )
        if not rate.allow():
            self.node.notice(
                conn,
                say(
                    "you are asking {bot} too often (at most {user_per_minute} a minute): "
                    "wait a little",
                    bot=bot.name,
                    user_per_minute=f"{bot.user_per_minute:g}",
                ),
                room.name,
            )
            return
        lane = self._lane(call.bot, room)
        busy = lane.answering is not None
        if busy and lane.queue.qsize() >= bot.queue:
            self.node.notice(
                conn,
                say(
                    "{bot} is busy in #{room} and {waiting} request(s) wait: ask again in a moment",
                    bot=bot.name,
                    room=room.name,
                    waiting=lane.queue.qsize(),
                ),
                room.name,
            )
            return
        lane.queue.put_nowait(Request(conn.user, call.prompt, message.id, key, body, conn.lang))
        if busy:
            ahead = lane.queue.qsize()
            self.node.notice(
                conn,
                say(
                    "{bot} will answer you after {ahead} earlier request(s)",
                    bot=bot.name,
                    ahead=ahead,
                ),
                room.name,
            )

    def stop(self, room: str, by: str, bot_name: str | None = None) -> list[str]:
        """Cancel the answers being written in a room (of one bot, or all); returns whose."""
        wanted = self.addressing.bot_of(bot_name) if bot_name else None
        stopped = []
        for (bot_id, lane_room), lane in self._lanes.items():
            if lane_room != room or (wanted and bot_id != wanted) or lane.answering is None:
                continue
            lane.stopped_by = by
            lane.answering.cancel()
            stopped.append(self.bots[bot_id].name)
        return stopped

    async def status(self) -> list[tuple[Bot, str | None]]:
        """Each bot with None when its model server answers now, else why not. Asked of the
        model servers at most once per STATUS_FOR seconds, however many ask here: one
        check is shared by all who wait for it, and its answer is kept that long."""
        now = time.monotonic()
        if self._status is None or now - self._status[0] > STATUS_FOR:
            self._status = (now, asyncio.ensure_future(self._check()))
        return await asyncio.shield(self._status[1])

    async def _check(self) -> list[tuple[Bot, str | None]]:
        async def check(bot: Bot) -> str | None:
            if bot.via_tor and self._proxy() is None:
                return NO_TOR  # never around Tor, not even to ask
            return await models.check(self._model(bot), self._client(bot), timeout=3.0)

        results = await asyncio.gather(
            *(check(bot) for bot in self.bots.values()), return_exceptions=True
        )
        return [
            (bot, r if not isinstance(r, BaseException) else f"check failed: {r}")
            for bot, r in zip(self.bots.values(), results, strict=True)
        ]

    # -- answering ------------------------------------------------------------------------

    def _lane(self, bot_id: str, room: Room) -> Lane:
        lane = self._lanes.get((bot_id, room.name))
        if lane is None:
            lane = Lane(bot_id, room, asyncio.Queue())
            lane.worker = asyncio.create_task(self._work(lane), name=f"bot {bot_id} #{room.name}")
            self._lanes[(bot_id, room.name)] = lane
        return lane

    async def _work(self, lane: Lane) -> None:
        while True:
            try:
                request = await asyncio.wait_for(lane.queue.get(), IDLE_LANE)
            except TimeoutError:
                if lane.queue.empty():  # nobody called meanwhile: the next call makes a new lane
                    del self._lanes[(lane.bot_id, lane.room.name)]
                    return
                continue
            lane.stopped_by = None
            lane.answering = asyncio.create_task(self._answer_in_turn(lane, request))
            try:
                await lane.answering
            except asyncio.CancelledError:
                if lane.stopped_by is None:
                    raise  # the node is stopping, not a /stop
            except Exception:
                log.exception("bot answer failed", extra={"event": "error", "bot": lane.bot_id})
            finally:
                lane.answering = None

    async def _answer_in_turn(self, lane: Lane, request: Request) -> None:
        """At most `limits.bot_answers` answers are written at once on the node."""
        async with self._answers:
            await self._answer(lane, request)

    async def _answer(self, lane: Lane, request: Request) -> None:
        bot = self.bots[lane.bot_id]
        room = lane.room
        id_, ts = self.node.new_id()
        started = time.monotonic()
        hub = self.node.hub
        key = request.key
        if request.signed is not None:
            signing = await self._signing(request.asker)
            if signing is None or not request.signed.verify(signing):
                log.info("bot call refused", extra={"event": "bot_refused", "bot": lane.bot_id})
                return  # a box in someone else's name: no answer, and nothing to show for it
        signer = sealed.signing_key(self._secrets[lane.bot_id]) if key is not None else None
        body_id = sealed.new_id()

        def seal(text: str, at: int) -> tuple[str | None, str | None]:
            """In the clear, or a signed body under the key the call came with."""
            if key is None or signer is None:
                return text, None
            box = sealed.seal_body(
                key,
                signer,
                room=room.name,
                sender=bot.name,
                kind="message",
                text=text,
                id=body_id,
                ts=at,
            )
            return None, box

        def delta(text: str) -> str:
            said, box = seal(text, int(time.time() * 1000))
            return encode(Delta(room=room.name, id=id_, sender=bot.name, text=said, box=box))

        hub.broadcast(room.name, delta(""))
        growth = Coalescer(lambda grown: hub.broadcast(room.name, delta(grown)))
        text, outcome = "", "complete"
        ending: str = ""
        try:
            if bot.via_tor and self._proxy() is None:
                raise models.ModelError(
                    say(
                        "{bot} reaches its model server only through Tor, and this node's Tor "
                        "is not running",
                        bot=bot.name,
                    )
                )
            turns = await self._context(bot, room, request, key)
            stream = models.stream(self._model(bot), bot.system_prompt, turns, self._client(bot))
            # Closed the moment we stop reading (/stop, too long): the model server stops too.
            async with contextlib.aclosing(stream) as chunks:
                async for chunk in chunks:
                    text += chunk
                    if len(text) >= bot.max_answer_chars:
                        text = text[: bot.max_answer_chars]
                        ending = say("cut at {n} characters", n=bot.max_answer_chars)
                        outcome = "too_long"
                        break
                    growth.add(text)
        except models.ModelCut as exc:
            ending, outcome = say("cut: {why}", why=exc.said), "cut"
            self._failed(lane, exc)
        except models.ModelError as exc:
            if text:
                ending, outcome = say("cut: {why}", why=exc.said), "cut"
            else:
                text, outcome = "⚠ " + i18n.said(request.lang, exc.said), "error"
            self._failed(lane, exc)
        except asyncio.CancelledError:
            if lane.stopped_by is None:
                raise
            ending, outcome = say("stopped by {user}", user=lane.stopped_by), "stopped"
        finally:
            growth.close()  # no delta may follow the message
        if ending:
            ending = i18n.said(request.lang, ending)
            text = f"{text.rstrip()}\n[{ending}]" if text.strip() else f"[{ending}]"
        if not text.strip():
            text, outcome = (
                "⚠ " + i18n.said(request.lang, say("the model answered nothing")),
                "empty",
            )
        if room.protected and key not in self._keys.get((lane.bot_id, room.name), []):
            return  # uninvited while answering: it may no longer write there
        said, box = seal(text, ts)
        message = Message(id=id_, room=room.name, ts=ts, sender=bot.name, text=said, box=box)
        await self.node.accept(room, message)
        log.info(
            "bot answered",
            extra={
                "event": "bot_answer",
                "bot": lane.bot_id,
                "room": room.name,
                "id": id_,
                "size": len(text),
                "outcome": outcome,
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    def _failed(self, lane: Lane, exc: models.ModelError) -> None:
        """The details for the operator, which the room is not told (the model server's
        address, its proxy); never the question or the answer."""
        log.warning(
            "bot failed", extra={"event": "bot_error", "bot": lane.bot_id, "error": str(exc)}
        )

    async def _context(
        self, bot: Bot, room: Room, request: Request, key: bytes | None
    ) -> list[models.Turn]:
        """The newest messages that fit the budget, oldest first, each with its author; the
        bot's own as its turns; the call itself last, without the bot's name. `key` opens a
        key-protected room the bot was invited into: only what that key opens, each box checked
        and its signature verified, is context (an insider's key shows only the insider's)."""
        messages, _ = await self.node.store.history(room, None, HISTORY)
        lines: list[models.Turn] = []
        budget = bot.context_chars
        signing: dict[str, bytes | None] = {}
        edited: dict[str, tuple[str, str]] = {}  # message id -> its latest edit, and by whom
        for message in reversed(messages):
            if message.react:
                continue
            text = message.text
            if message.box is not None:
                found = _open([key], message) if key else None
                if found is None:
                    continue
                if message.sender not in signing:
                    signing[message.sender] = await self._signing(message.sender)
                if not found[1].verify(signing[message.sender] or b""):
                    continue
                text = found[1].text
            if text is None:
                continue
            if message.edit:
                edited.setdefault(message.edit, (message.sender, text))  # newest first
                continue
            if edited.get(message.id, ("", ""))[0] == message.sender:
                text = edited[message.id][1]
            if message.id == request.message_id:
                content = f"{request.asker}: {request.prompt or text}"
            elif message.sender == bot.name:
                content = text
            else:
                content = f"{message.sender}: {text}"
            if message.id != request.message_id:
                if len(content) > budget:
                    break
                budget -= len(content)
            role = "assistant" if message.sender == bot.name else "user"
            lines.append(models.Turn(role, content))
            if message.id == request.message_id:
                lines = [lines[-1]]  # nothing said after the call is part of it
        lines.reverse()
        if not any(m.id == request.message_id for m in messages):
            lines.append(models.Turn("user", f"{request.asker}: {request.prompt}"))
        return _alternate(lines)

    def _model(self, bot: Bot) -> models.ModelConfig:
        key = os.environ.get(bot.api_key_env, "") if bot.api_key_env else ""
        return models.ModelConfig(
            provider=bot.provider,
            base_url=bot.base_url,
            model=bot.model,
            api_key=key,
            proxy=self._proxy() if bot.via_tor else None,
            first_token_timeout=bot.first_token_timeout,
            idle_timeout=bot.idle_timeout,
            max_tokens=bot.max_tokens,
        )

    def _client(self, bot: Bot) -> httpx.AsyncClient:
        proxy = self._proxy() if bot.via_tor else None
        key = proxy or ""
        client = self._clients.get(key)
        if client is None:
            # models.stream bounds every wait itself (first token, between tokens).
            client = httpx.AsyncClient(proxy=proxy, trust_env=False, timeout=None)  # noqa: S113
            self._clients[key] = client
        return client


class Coalescer:
    """At most one delta every FLUSH seconds: the first text at once, and later text as soon
    as FLUSH has passed since the last delta — by a timer, so what came never waits for the
    model's next token."""

    def __init__(self, send: Callable[[str], None]) -> None:
        self._send = send
        self._text = ""
        self._shown = 0
        self._last = -math.inf
        self._timer: asyncio.TimerHandle | None = None

    def add(self, text: str) -> None:
        self._text = text
        wait = self._last + FLUSH - time.monotonic()
        if wait <= 0:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._flush)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush(self) -> None:
        self.close()
        if len(self._text) > self._shown:
            self._send(self._text)
            self._shown, self._last = len(self._text), time.monotonic()


def load_bot_key(data_dir: Path) -> bytes:
    """The key that wraps the bots' identity keys: a file of its own (0600), made at the first
    start, so that a copy of the database alone opens no room a bot was invited to."""
    path = data_dir / BOT_KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        write_secret(path, key)
    if len(key) != 32:
        raise ValueError(f"{path}: not a bot key written by OnionChat (32 bytes)")
    return key


def _wrapping(secret: bytes) -> bytes:
    return hashlib.sha256(b"onionchat bot identity\0" + secret).digest()


def reserved_names(bots: Mapping[str, Bot]) -> frozenset[str]:
    """The names no account may take, nor look like: every bot's name and aliases, as the
    operator wrote them (a skeleton depends on the case)."""
    return frozenset(label for bot in bots.values() for label in _labels(bot))


def _open(keys: list[bytes], message: Message) -> tuple[bytes, sealed.Body] | None:
    """The key that opens a message's box and its body, if the body is what the envelope says
    (room, sender, kind, time, what it is about); its signature is for the caller to check."""
    assert message.box is not None
    kind, re = sealed.kind_of(message)
    for key in keys:
        try:
            body = sealed.open_body([key], message.box)
            body.check(message.room, message.sender, kind, message.ts, re)
        except (crypto.CryptoError, sealed.Rejected):
            continue
        return key, body
    return None


def _labels(bot: Bot) -> tuple[str, ...]:
    return (bot.name, *bot.aliases)


def _alternate(turns: list[models.Turn]) -> list[models.Turn]:
    """Providers want user and assistant turns in turn, starting with the user's."""
    merged: list[models.Turn] = []
    for turn in turns:
        if merged and merged[-1].role == turn.role:
            merged[-1] = models.Turn(turn.role, f"{merged[-1].content}\n{turn.content}")
        elif merged or turn.role == "user":
            merged.append(turn)
    return merged
