"""Catching up: each shared room reconciled with the peers, so that what a broker lost, or a
node missed while it was away longer than a broker keeps its session, comes back without
anyone speaking.

A range-based set reconciliation over message ids (time-ordered: ranges of ids are ranges of
time). A node offers each room's whole range as a fingerprint and a count, to every peer,
after each connection to a broker and every `federation.repair_interval`, with a hello that
asks each peer to offer its own rooms back (so a room this node never had comes too). A
peer whose range differs answers with its ids when it has few, or with the range cut in 16
parts, each with its own fingerprint; the two go on until the differing parts are lists of
ids. Whoever sees the
other's list sends what the other lacks, in bundles well under a broker's packet limit, each
message as its node signed it; whoever lacks something answers with its own list once. "Since
my last id" would not do: ids of different nodes interleave, and late or skewed ones fall
behind any cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import TYPE_CHECKING

from onionchat.federation import envelope
from onionchat.federation.envelope import Broken, BundleBody, MessageBody, Range, SyncBody
from onionchat.ids import first_at
from onionchat.protocol import Message, ProtocolError

if TYPE_CHECKING:
    from onionchat.federation.context import Context
    from onionchat.store import Room

log = logging.getLogger("onionchat.federation")

FEW = 48  # a range of at most this many ids is told id by id
SPLIT = 16  # parts a differing range is cut into
MAX_IDS = 200_000  # ids read for one range at most (a bigger room is reconciled in parts)
RANGES_PER_SYNC = 64
BUNDLE_BYTES = 128 * 1024  # under mosquitto's and most brokers' packet limits, with room
QUEUE = 256  # sync steps waiting; more are dropped (the next round asks again)
HORIZON = 2.0  # seconds: newer messages are left to the brokers, not reconciled
HELLO = ""  # the room of a sync step that asks its receiver to offer every room it has


class Repair:
    def __init__(self, federation: Context) -> None:
        self.fed = federation
        self._queue: asyncio.Queue[SyncBody | BundleBody] = asyncio.Queue(QUEUE)
        self._soon = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.rounds = 0
        self.pushed = 0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._rounds(), name="federation repair rounds"),
            asyncio.create_task(self._work(), name="federation repair"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def soon(self) -> None:
        """A broker (re)connected: a round now, and one more once what was then still on its
        way is older than the horizon."""
        self._soon.set()
        asyncio.get_running_loop().call_later(HORIZON + 0.5, self._soon.set)

    # -- offering -------------------------------------------------------------------------

    async def _rounds(self) -> None:
        interval = self.fed.settings.repair_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._soon.wait(), interval * random.uniform(0.8, 1.2))
            await asyncio.sleep(0.2)  # a burst of connects makes one round
            self._soon.clear()
            try:
                await self.offer_all()
            except Exception:
                log.exception("repair round failed", extra={"event": "error"})

    async def offer_all(self) -> None:
        """Every shared room offered to every peer, and a hello asking each peer to offer its
        own: a room this node has never had (it was away when it began) comes too."""
        self.rounds += 1
        await self._send_sync("*", HELLO, [])
        await self.offer("*")

    async def offer(self, to: str) -> None:
        """Every shared room up to a few seconds ago: what is newer is still on its way
        through the brokers, and would differ at every step of a reconciliation."""
        horizon = first_at(int((time.time() - HORIZON) * 1000))
        store = self.fed.node.store
        for room in await store.rooms():
            if self.fed.shares(room.name):
                # the newest MAX_IDS: in a bigger room, what is older is left out of the round
                ids = await store.message_ids(room.id, "", horizon, MAX_IDS, newest=True)
                lo = ids[0] if len(ids) == MAX_IDS else ""
                whole = Range(
                    lo=lo, hi=horizon, count=len(ids), fingerprint=envelope.fingerprint(ids)
                )
                await self._send_sync(to, room.name, [whole])

    # -- answering ------------------------------------------------------------------------

    async def sync(self, body: SyncBody) -> None:
        if body.to in (self.fed.name, "*") and (body.room == HELLO or self.fed.shares(body.room)):
            self._enqueue(body)

    async def bundle(self, body: BundleBody) -> None:
        if body.to == self.fed.name:
            self._enqueue(body)

    def _enqueue(self, body: SyncBody | BundleBody) -> None:
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            self.fed.drop("repair queue full (the next round asks again)")

    async def _work(self) -> None:
        while True:
            body = await self._queue.get()
            try:
                if isinstance(body, SyncBody):
                    await self._answer(body)
                else:
                    await self._take(body)
            except Broken as exc:
                self.fed.drop(str(exc))
            except Exception:
                log.exception("repair step failed", extra={"event": "error"})

    async def _answer(self, body: SyncBody) -> None:
        if body.room == HELLO:
            await self.offer(body.origin)
            return
        room = await self._room(body.room)
        replies: list[Range] = []
        push: list[str] = []
        for r in body.ranges[:RANGES_PER_SYNC]:
            mine = await self._ids(room, r.lo, r.hi) if room is not None else []
            if r.ids is None:
                if len(mine) == r.count and envelope.fingerprint(mine) == r.fingerprint:
                    continue
                if len(mine) <= FEW:
                    replies.append(Range(lo=r.lo, hi=r.hi, ids=tuple(mine)))
                else:
                    replies.extend(_split(mine, r.lo, r.hi))
                continue
            theirs, have = set(r.ids), set(mine)
            push += [i for i in mine if i not in theirs]
            if not r.last and not theirs <= have:
                replies.append(Range(lo=r.lo, hi=r.hi, ids=tuple(mine), last=True))
        if push and room is not None:
            await self._push(body.origin, room, push)
        for start in range(0, len(replies), RANGES_PER_SYNC // 4):
            await self._send_sync(
                body.origin, body.room, replies[start : start + RANGES_PER_SYNC // 4]
            )

    async def _take(self, body: BundleBody) -> None:
        for item in body.items:
            try:
                message = envelope.verify(item, self.fed.peers)
                if not isinstance(message, MessageBody):
                    raise Broken("a bundle item that is not a message")
                await self.fed.take(message, item)
            except Broken as exc:
                self.fed.drop(f"in a bundle: {exc}")

    async def _push(self, to: str, room: Room, ids: list[str]) -> None:
        """What `to` lacks, in bundles, each message as its node signed it."""
        items: list[bytes] = []
        size = 0
        for start in range(0, len(ids), 500):
            for message, origin, signature in await self.fed.node.store.signed_messages(
                room, ids[start : start + 500]
            ):
                item = await self._item(room, message, origin, signature)
                if items and size + len(item) * 4 // 3 > BUNDLE_BYTES:
                    await self._send_bundle(to, items)
                    items, size = [], 0
                items.append(item)
                size += len(item) * 4 // 3 + 4
        if items:
            await self._send_bundle(to, items)

    async def _item(
        self, room: Room, message: Message, origin: str | None, signature: bytes | None
    ) -> bytes:
        """A stored message as its node signed it (its name is not part of `sender` there,
        and in a key-protected room it carried the keys its node knew for the sender)."""
        node = origin or self.fed.name
        sender = message.sender
        if node != self.fed.name:
            sender = sender.removesuffix(f"@{node}")
            keys = await self._vouched_keys(message.sender) if room.protected else (None, None)
        else:
            keys = await self.fed.keys_of(sender) if room.protected else (None, None)
        body = envelope.message_body(node, room.protected, message, sender, keys)
        if signature is not None and node != self.fed.name:
            return signature + envelope.encode(body)
        return envelope.signed(body, self.fed.key)

    async def _vouched_keys(self, user: str) -> tuple[str | None, str | None]:
        found = await self.fed.node.store.peer_keys(user)
        return (found.public, found.signing) if found else (None, None)

    # -- sending --------------------------------------------------------------------------

    async def _send_sync(self, to: str, room: str, ranges: list[Range]) -> None:
        body = SyncBody(
            origin=self.fed.name, to=to, room=room, ts=int(time.time() * 1000), ranges=tuple(ranges)
        )
        await self._publish(envelope.signed(body, self.fed.key))

    async def _send_bundle(self, to: str, items: list[bytes]) -> None:
        body = BundleBody(
            origin=self.fed.name, to=to, ts=int(time.time() * 1000), items=tuple(items)
        )
        await self._publish(envelope.signed(body, self.fed.key))
        self.pushed += len(items)

    async def _publish(self, item: bytes) -> None:
        topic = envelope.topic(self.fed.settings.network, self.fed.name, "s")
        payload = envelope.seal([item], self.fed.network_key)
        await asyncio.gather(*(link.send(topic, payload) for link in self.fed.senders))

    # -- reading --------------------------------------------------------------------------

    async def _room(self, name: str) -> Room | None:
        try:
            return await self.fed.node.room(name)
        except ProtocolError:
            return None

    async def _ids(self, room: Room, lo: str, hi: str) -> list[str]:
        return await self.fed.node.store.message_ids(room.id, lo, hi, MAX_IDS)


def _split(ids: list[str], lo: str, hi: str) -> list[Range]:
    """`ids` (sorted, all in [lo, hi)) cut into SPLIT ranges of about as many ids each; each
    part's range starts at its first id, so the parts cover [lo, hi) exactly."""
    step = -(-len(ids) // SPLIT)
    parts = [ids[i : i + step] for i in range(0, len(ids), step)]
    bounds = [lo] + [part[0] for part in parts[1:]] + [hi]
    return [
        Range(lo=a, hi=b, count=len(part), fingerprint=envelope.fingerprint(part))
        for a, b, part in zip(bounds[:-1], bounds[1:], parts, strict=True)
    ]
