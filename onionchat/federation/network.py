"""The node among its peers: what it shares, publishes to every broker, and takes in.

Installed by the composition root as one more feature of the node: it tells the node which
brokers a new message waits for (the outbox rows are written in the message's transaction),
hands each broker's link the messages written here, and hands what comes from peers (messages,
direct messages, topics, invitations) to the node once it is opened, verified and checked as a
client's would be: messages through the node's one door, `Node.accept`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import nacl.signing

from onionchat import config, ids, moderation, names
from onionchat.authority import Order
from onionchat.config import Settings
from onionchat.federation import envelope
from onionchat.federation.envelope import (
    Broken,
    BundleBody,
    ChunkBody,
    InviteBody,
    MessageBody,
    OrderBody,
    PresenceBody,
    SyncBody,
    TopicBody,
    WantBody,
)
from onionchat.federation.files import Fetcher
from onionchat.federation.link import Link
from onionchat.federation.presence import Rosters
from onionchat.federation.repair import Repair
from onionchat.i18n import say
from onionchat.identity import deliver_invitation
from onionchat.node import MAX_TOPIC_CHARS, Arrival, Node
from onionchat.onion_keys import write_secret
from onionchat.protocol import Code, Message, ProtocolError, TopicChanged, relation
from onionchat.store import Room

log = logging.getLogger("onionchat.federation")

KEY_FILE = "node_key"
ITEMS_KEPT = 4096  # signed items kept for the next broker (one signature a message)
RECENT = 65_536  # message ids remembered as taken in (their copies are not checked again)
NAMES = 10_000  # names remembered as checked (and users' keys, each way)
KEYS_KEPT = 60.0  # seconds a local user's keys are used before the store is asked again
DROPS_LOGGED_EVERY = 10.0
UNKNOWN_ORDER = "an order of no known kind, or by a name not in its canonical form"


def node_key(data_dir: Path) -> nacl.signing.SigningKey:
    """The node's Ed25519 key, made at first start (`DATA_DIR/node_key`, 0600)."""
    path = data_dir / KEY_FILE
    if not path.exists():
        write_secret(path, bytes(nacl.signing.SigningKey.generate()))
    seed = path.read_bytes()
    if len(seed) != 32:
        raise config.ConfigError(f"{path}: not a node key (32 bytes)")
    return nacl.signing.SigningKey(seed)


class Federation:
    def __init__(self, node: Node, settings: Settings, proxy: Callable[[], str | None]) -> None:
        fed = settings.federation
        self.node = node
        self.settings = fed
        self.name = fed.name
        self.key = node_key(settings.server.data_dir)
        self.network_key = config.network_secret(settings)
        # a repair may bring back this node's own messages (a restore from a backup)
        self.peers = config.peers(settings) | {self.name: bytes(self.key.verify_key)}
        self.rooms = frozenset(fed.rooms)
        # each peer's topics, not a wildcard: a node does not take its own messages back
        subscriptions = [
            topic
            for peer in sorted(self.peers)
            if peer != self.name
            for topic in (
                envelope.topic(fed.network, peer, "m", "+"),
                envelope.topic(fed.network, peer, "d", self.name),
                envelope.topic(fed.network, peer, "p", "+"),
                envelope.topic(fed.network, peer, "t", "+"),
                envelope.topic(fed.network, peer, "o", "#"),
                envelope.topic(fed.network, peer, "s"),
            )
        ]
        self.links = [
            Link(
                broker,
                fed,
                node.store,
                subscriptions,
                self.item,
                self.deliver,
                self.connected,
                proxy,
                self.network_key,
            )
            for broker in settings.brokers
        ]
        self.repair = Repair(self)
        self.fetcher = Fetcher(node, self.name, self._sealed, self._to_node)
        self.rosters = Rosters(self)
        self.drops: collections.Counter[str] = collections.Counter()
        self.seen: dict[str, float] = {}  # peer -> when something it signed last came
        self._dropped_said = 0.0
        self._items: collections.OrderedDict[tuple[str, str], tuple[str, bytes]] = (
            collections.OrderedDict()
        )
        # (room, id) of messages taken in lately or being taken in: their copies stop here
        self._recent: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._names: dict[str, bool] = {}
        self._keys: dict[str, tuple[float, tuple[str | None, str | None]]] = {}
        self._vouches: dict[str, tuple[str, str | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def senders(self) -> Sequence[Link]:
        return self.links

    def install(self) -> None:
        self.node.outbox = self.outbox
        self.node.elsewhere = self.elsewhere
        self.node.invite_elsewhere = self.invite
        self.node.fetch_file = self.fetcher.fetch
        self.node.remote_members = self.rosters.members
        self.node.presence_listeners.append(self.rosters.changed)
        self.node.topic_listeners.append(self.topic_set)
        self.node.order_listeners.append(self.ordered)
        self.node.listeners.append(self.heard)
        self.node.reports["federation"] = self.status

    def start(self) -> None:
        for link in self.links:
            link.start()
        self.repair.start()
        self.rosters.start()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.rosters.close()
        await self.repair.close()
        for link in self.links:
            await link.close()

    # -- what is shared -------------------------------------------------------------------

    def shares(self, room: str) -> bool:
        return not room.startswith("@") and ("*" in self.rooms or room in self.rooms)

    def elsewhere(self, name: str) -> str | None:
        """`user@node` for a user of a trusted peer (canonical), else None."""
        user, _, node = name.rpartition("@")
        if node not in self.peers or node == self.name or not user:
            return None
        try:
            return f"{names.username(user)}@{node}"
        except ProtocolError:
            return None

    def _published(self, room: Room, message: Message) -> bool:
        """Written here and for the network: a shared room's, or a direct message to a user
        of a peer."""
        if message.to is not None:
            return self.elsewhere(message.to) is not None
        return self.shares(room.name)

    def outbox(self, room: Room, message: Message) -> Sequence[str]:
        if not self._published(room, message):
            return ()
        return [link.broker.url for link in self.links]

    def heard(self, arrival: Arrival) -> None:
        if arrival.peer is None and self._published(arrival.room, arrival.message):
            for link in self.links:
                link.written(arrival.room, arrival.message)

    def connected(self) -> None:
        """A broker (re)connected: whatever was missed meanwhile is caught up at once, and the
        topics set here are told again (a broker that came back empty keeps them again)."""
        self.repair.soon()
        self._background(self._topics_again())

    def _background(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- topics ---------------------------------------------------------------------------

    def topic_set(self, room: Room, changed: TopicChanged) -> None:
        if self.shares(room.name):
            self._background(
                self._tell_topic(
                    room.name, changed.text, changed.box, changed.by, changed.ts, room.protected
                )
            )

    async def _topics_again(self) -> None:
        for room in await self.node.store.rooms():
            if self.shares(room.name) and room.topic_by and "@" not in room.topic_by:
                await self._tell_topic(
                    room.name,
                    room.topic,
                    room.topic_box,
                    room.topic_by,
                    room.topic_ts,
                    room.protected,
                )

    async def _tell_topic(
        self, room: str, text: str | None, box: str | None, by: str, ts: int, protected: bool
    ) -> None:
        body = TopicBody(
            origin=self.name, room=room, protected=protected, by=by, ts=ts, text=text, box=box
        )
        tag = envelope.room_tag(self.network_key, room)
        topic = envelope.topic(self.settings.network, self.name, "t", tag)
        payload = envelope.seal([envelope.signed(body, self.key)], self.network_key)
        await asyncio.gather(*(link.send(topic, payload, retain=True) for link in self.links))

    async def topic_heard(self, body: TopicBody) -> None:
        if body.origin == self.name or not self.shares(body.room):
            return
        if not self.canonical(body.by, names.username):
            raise Broken("a topic set by a name not in its canonical form")
        try:
            room = await self.node.shared_room(body.room, body.protected)
            text, box = body.text, body.box
            if text is not None or box is not None:
                text, box = self.node.check_body(room, text, box, MAX_TOPIC_CHARS, "topic")
        except ProtocolError as exc:
            raise Broken(f"refused as a client's would be ({exc.code.value})") from None
        await self.node.apply_topic(room, text, box, f"{body.by}@{body.origin}", body.ts)

    # -- what staff do -------------------------------------------------------------------

    def ordered(self, order: Order) -> None:
        if self.shares(order.room):
            self._background(self._tell_order(order))
        elif order.room.startswith("@") and order.act == "delete":
            self._background(self._tell_conversation(order))

    async def _tell_conversation(self, order: Order) -> None:
        """A writer's deletion in a conversation with a user of another node: to that node
        only, naming the conversation as it does (`@ann@north+bob` there, `@ann+bob@south`
        here)."""
        found = names.direct_room_there(order.room, self.name)
        if found is None or found[0] not in self.peers:
            return
        peer, there = found
        body = OrderBody(
            origin=self.name,
            room=there,
            act="delete",
            by=order.by,
            target=order.target,
            ts=int(time.time() * 1000),
            ids=order.ids,
        )
        await self._to_node(peer, self._sealed(body))

    async def _tell_order(self, order: Order) -> None:
        body = OrderBody(
            origin=self.name,
            room=order.room,
            act=order.act,
            by=order.by,
            target=order.target,
            ts=int(time.time() * 1000),
            until=order.until,
            reason=order.reason,
            ids=order.ids,
            mode=order.mode,
        )
        topic = envelope.topic(
            self.settings.network, self.name, "o", envelope.room_tag(self.network_key, order.room)
        )
        # Retained, so that a node that comes back after its session was dropped still hears
        # of it: a sanction or a mode under one topic per user or mode (the latest holds), a
        # deletion under one of its own.
        if order.act == "delete":
            what = "deleted\0" + ",".join(order.ids)
        elif order.mode:
            what = "mode\0" + order.mode.partition(" ")[0]
        else:
            what = "user\0" + names.key(order.target)
        topic += "/" + envelope.room_tag(self.network_key, what)
        payload = envelope.seal([envelope.signed(body, self.key)], self.network_key)
        await asyncio.gather(*(link.send(topic, payload, retain=True) for link in self.links))

    async def order_heard(self, body: OrderBody) -> None:
        """What a peer's staff did in a shared room. A peer answers for its own users: what
        its staff do to them, or to their messages, holds here. On anyone else it holds only
        if the actor is staff of the room here too (named with /op NAME@NODE), and outranks
        them: a peer cannot purge or ban this node's users on its own say."""
        if body.origin == self.name:
            return
        if body.room.startswith("@"):
            await self._conversation_deletion(body)
            return
        if not self.shares(body.room):
            return
        mode = body.act == "mode"  # a room mode is never a node's own business alone
        act = "modes" if mode else moderation.FEDERATED.get(body.act)
        if (
            act is None
            or not self.canonical(body.by, names.username)
            or (mode and (body.mode is None or len(body.mode) > 64))
        ):
            raise Broken(UNKNOWN_ORDER)
        if len(body.ids) > moderation.PURGE_COUNT or len(body.reason or "") > moderation.MAX_REASON:
            raise Broken("an oversized order")
        target = None if mode else self._named_here(body.target, body.origin)
        if not mode and target is None:
            raise Broken("an order on a name not in its canonical form")
        try:
            room = await self.node.room(body.room)
        except ProtocolError:
            return  # no such room here: nothing to act on
        actor = f"{body.by}@{body.origin}"
        theirs = target is not None and target.endswith(f"@{body.origin}")
        if not theirs:
            try:
                self.node.authority.require(names.key(actor), act, room.name)
                if target is not None:
                    self.node.authority.over(names.key(actor), names.key(target), room.name)
            except ProtocolError:
                raise Broken("an order by someone who is not staff here") from None
        if mode:
            assert body.mode is not None
            try:
                await moderation.mode_from_peer(self.node, room, actor, body.mode)
            except ProtocolError:
                raise Broken(UNKNOWN_ORDER) from None
            return
        assert target is not None
        await moderation.obey(
            self.node,
            room,
            body.act,
            actor,
            target,
            body.until,
            body.reason,
            list(body.ids),
            body.origin if theirs else None,
        )

    async def _conversation_deletion(self, body: OrderBody) -> None:
        """A user of `origin` deleted their own messages in a conversation with a user here:
        only theirs go, and only from that conversation."""
        if body.act != "delete" or len(body.ids) > moderation.PURGE_COUNT:
            raise Broken(UNKNOWN_ORDER)
        room = await self.node.store.room(body.room)
        if room is None or not self.canonical(body.by, names.username):
            return
        writer = names.key(f"{body.by}@{body.origin}")
        theirs = []
        for id_ in body.ids:
            target = await self.node.store.target(room.id, id_) if ids.is_valid(id_) else None
            if target is not None and not target.deleted and names.key(target.sender) == writer:
                theirs.append(id_)
        if theirs:
            await self.node.erase(room, theirs, f"{body.by}@{body.origin}")

    def _named_here(self, name: str, origin: str) -> str | None:
        """A user as this node names them: `bob` of `origin` is `bob@origin`, and one of
        this node's own (`carol@here`) is `carol`."""
        user, _, node = name.rpartition("@")
        if not user:
            user, node = name, origin
        if node != self.name and node not in self.peers:
            return None
        if not self.canonical(user, names.username):
            return None
        return user if node == self.name else f"{user}@{node}"

    async def keys_of(self, user: str) -> tuple[str | None, str | None]:
        """A user of this node's public keys, for the envelopes of key-protected rooms (asked
        of the store at most once a minute per user)."""
        now = time.monotonic()
        found = self._keys.get(user)
        if found is None or now - found[0] > KEYS_KEPT:
            published = await self.node.store.identity(names.key(user))
            keys = (published.public, published.signing) if published else (None, None)
            if len(self._keys) >= NAMES:
                self._keys.clear()
            found = self._keys[user] = (now, keys)
        return found[1]

    async def item(self, room: Room, message: Message) -> tuple[str, bytes]:
        """The topic and signed item of a message written here, made once for all brokers."""
        cache_key = (room.name, message.id)
        found = self._items.get(cache_key)
        if found is not None:
            self._items.move_to_end(cache_key)
            return found
        vouch = room.protected or message.to is not None
        keys = await self.keys_of(message.sender) if vouch else (None, None)
        body = envelope.message_body(self.name, room.protected, message, keys=keys)
        item = envelope.signed(body, self.key)
        if message.to is not None:  # for the recipient's node only
            topic = envelope.topic(self.settings.network, self.name, "d", _node_of(message.to))
        else:
            tag = envelope.room_tag(self.network_key, room.name)
            topic = envelope.topic(self.settings.network, self.name, "m", tag)
        made = (topic, item)
        self._items[cache_key] = made
        if len(self._items) > ITEMS_KEPT:
            self._items.popitem(last=False)
        return made

    # -- what comes in --------------------------------------------------------------------

    async def deliver(self, topic: str, payload: bytes) -> None:
        """One payload from a broker: its items in turn (several messages of a room at once
        are checked and taken together, in order). Whatever is wrong with one, it is dropped
        and counted (the log says why, never what it held): the node and its links go on."""
        parts = topic.split("/")
        if len(parts) < 3 or parts[0] != self.settings.network:
            return self.drop("on a topic outside the network")
        if parts[1] == self.name:
            return None  # our own, back from the broker
        try:
            items = envelope.unseal(payload, self.network_key)
        except Broken as exc:
            return self.drop(str(exc))
        if len(items) == 1:  # mostly: no task to make
            await self._item(items[0])
        else:
            await asyncio.gather(*(self._item(item) for item in items))
        return None

    async def _item(self, item: bytes) -> None:
        try:
            body = envelope.decode(item)
            if isinstance(body, MessageBody) and (body.room, body.id) in self._recent:
                return  # a copy (the other broker, a redelivery): nothing to check
            envelope.check(item, body, self.peers)
            self.seen[body.origin] = time.time()
            match body:
                case MessageBody():
                    await self.take(body, item)
                case SyncBody():
                    await self.repair.sync(body)
                case BundleBody():
                    await self.repair.bundle(body)
                case PresenceBody():
                    self.rosters.heard(body)
                case InviteBody():
                    await self.invited(body)
                case TopicBody():
                    await self.topic_heard(body)
                case OrderBody():
                    await self.order_heard(body)
                case WantBody():
                    await self.fetcher.wanted(body, self.shares)
                case ChunkBody():
                    await self.fetcher.chunk(body)
        except Broken as exc:
            self.drop(str(exc))
        except Exception:
            log.exception("a delivery failed", extra={"event": "error"})

    async def take(self, body: MessageBody, item: bytes) -> bool:
        """A message another node signed (or this one, brought back by a repair): checked as a
        client's would be, then in through the node's door. Whether it was new."""
        if not ids.is_valid(body.id) or ids.milliseconds(body.id) != body.ts:
            raise Broken("an id that is not its time")
        if body.ts > (time.time() + self.settings.max_skew) * 1000:
            raise Broken("from the future")
        key = (body.room, body.id)
        if key in self._recent:
            return False
        self._recent[key] = None
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        try:
            return await self._take(body, item)
        except BaseException:
            self._recent.pop(key, None)  # not stored: a later copy is checked again
            raise

    async def _take(self, body: MessageBody, item: bytes) -> bool:
        ours = body.origin == self.name
        sender = body.sender if ours else f"{body.sender}@{body.origin}"
        to = None
        try:
            related = relation(body)
            if related is not None and not ids.is_valid(related[1]):
                raise Broken("a reply, an edit or a reaction to an id that is not one")
            if not self.canonical(body.sender, names.username):
                raise Broken("a sender name not in its canonical form")
            if body.to is not None:
                recipient, _, node = body.to.rpartition("@")
                if node != self.name or ours:
                    return False  # another node's, or brought back by a repair: not ours
                user = await self.node.store.user_by_key(names.key(recipient))
                if user is None:
                    raise Broken("a direct message to nobody here")
                to = user.name
                room = await self.node.conversation(sender, user.name, [user.id])
                text, box = self.node.body_of(None, body.text, body.box, related)
            else:
                if not self.canonical(body.room, names.room):
                    raise Broken("a room name not in its canonical form")
                if not self.shares(body.room):
                    return False
                room = await self.node.shared_room(body.room, body.protected)
                text, box = self.node.body_of(room, body.text, body.box, related)
                if not ours and self._sanctioned(sender, room):
                    raise Broken("from a user banned or muted in the room here")
            if not ours:
                await self.node.check_relation(room, sender, related, None, body.me, strict=False)
        except ProtocolError as exc:
            raise Broken(f"refused as a client's would be ({exc.code.value})") from None
        message = Message(
            id=body.id,
            room=room.name,
            ts=body.ts,
            sender=sender,
            text=text,
            box=box,
            me=body.me,
            to=to,
            reply=body.reply,
            edit=body.edit,
            react=body.react,
            file=body.file,
        )
        if not ours and body.public is not None:
            await self._vouched(message.sender, body.public, body.signing)
        signature = item[: envelope.SIGNATURE_BYTES]
        return await self.node.accept(room, message, peer=body.origin, signature=signature)

    async def _vouched(self, user: str, public: str, signing: str | None) -> None:
        """Keys another node gave for one of its users: kept (the latest its node signed) so
        that this node's clients can check that user's boxes (`key` answers them)."""
        if self._vouches.get(user) == (public, signing):
            return
        for value, size in ((public, 32), (signing, 32)):
            if value is not None and not _is_key(value, size):
                raise Broken("a key that is not one")
        await self.node.store.set_peer_keys(user, public, signing)
        if len(self._vouches) >= NAMES:
            self._vouches.clear()
        self._vouches[user] = (public, signing)

    def _sanctioned(self, sender: str, room: Room) -> bool:
        authority, key = self.node.authority, names.key(sender)
        return bool(
            authority.barred(key, room.id)
            or authority.sanction(key, "mute", room.id)
            or authority.sanction(key, "mute")
        )

    def canonical(self, name: str, rule: Callable[[str], str]) -> bool:
        """Whether a name is valid and in its canonical form, remembered: the rules (NFKC,
        scripts, confusables) cost more than anything else a message does here."""
        known = self._names.get(name)
        if known is None:
            try:
                known = rule(name) == name
            except ProtocolError:
                known = False
            if len(self._names) >= NAMES:
                self._names.clear()
            self._names[name] = known
        return known

    async def invite(self, room: Room, sender: str, to: str, sealed: str) -> None:
        """An invitation for a user of another node, to that node only, through every broker
        up now (an invitation has no outbox: with none up, the inviter is told to try again)."""
        public, signing = await self.keys_of(sender)
        body = InviteBody(
            origin=self.name,
            room=room.name,
            sender=sender,
            to=to,
            sealed=sealed,
            ts=int(time.time() * 1000),
            public=public,
            signing=signing,
        )
        links = [link for link in self.links if link.status.state == "up"]
        if not links:
            raise ProtocolError(
                Code.UNAVAILABLE,
                say("no broker is reachable now: the invitation was not sent, try again"),
            )
        topic = envelope.topic(self.settings.network, self.name, "d", _node_of(to))
        payload = envelope.seal([envelope.signed(body, self.key)], self.network_key)
        await asyncio.gather(*(link.send(topic, payload) for link in links))

    async def invited(self, body: InviteBody) -> None:
        user_name, _, node = body.to.rpartition("@")
        if node != self.name or body.origin == self.name:
            return
        if not self.canonical(body.sender, names.username) or not self.shares(body.room):
            raise Broken("an invitation from a name or into a room not shared")
        user = await self.node.store.user_by_key(names.key(user_name))
        if user is None:
            raise Broken("an invitation for nobody here")
        try:
            room = await self.node.shared_room(body.room, True)
        except ProtocolError:
            raise Broken("an invitation into a room that is open here") from None
        sender = f"{body.sender}@{body.origin}"
        if body.public is not None:
            await self._vouched(sender, body.public, body.signing)
        await deliver_invitation(self.node, room, user, sender, body.sealed)

    def _sealed(self, body: envelope.Body) -> bytes:
        return envelope.seal([envelope.signed(body, self.key)], self.network_key)

    async def _to_node(self, node: str, payload: bytes) -> None:
        """To one peer only, on its own topic, through the first broker up now (a file's
        chunks: one copy is enough, a fetch that loses one asks again)."""
        topic = envelope.topic(self.settings.network, self.name, "d", node)
        for link in self.links:
            if link.status.state == "up":
                await link.send(topic, payload)
                return

    def drop(self, why: str) -> None:
        self.drops[why] += 1
        now = time.monotonic()
        if now - self._dropped_said > DROPS_LOGGED_EVERY:
            self._dropped_said = now
            log.warning(
                "dropped what a broker delivered",
                extra={"event": "federation_drop", "why": why, "drops": sum(self.drops.values())},
            )

    # -- what is told ---------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        sizes = await self.node.store.outbox_sizes()
        return {
            "name": self.name,
            "brokers": [
                {
                    "broker": link.status.broker,
                    "state": link.status.state,
                    "since": round(link.status.since, 3),
                    "error": link.status.error,
                    "connects": link.status.connects,
                    "published": link.status.published,
                    "publishes": link.status.publishes,
                    "received": link.status.received,
                    "outbox": sizes.get(link.broker.url, 0),
                }
                for link in self.links
            ],
            "peers": [
                {
                    "peer": peer,
                    "last_heard": round(self.seen[peer], 3) if peer in self.seen else None,
                }
                for peer in sorted(self.peers)
                if peer != self.name
            ],
            "repair": {"rounds": self.repair.rounds, "pushed": self.repair.pushed},
            "dropped": dict(self.drops),
        }


def _node_of(name: str) -> str:
    return name.rpartition("@")[2]


def _is_key(text: str, size: int) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) == size
    except (binascii.Error, ValueError):
        return False
