"""One broker: a connection kept up by its own loop, a persistent session, the outbox published
to it, and what it delivers handed on.

aiomqtt's defaults would lose messages here, so each is set: a fixed client id per node and
broker, never a clean start (and a session expiry under MQTT 5, without which the session
ends with the connection), an incoming queue without a bound (paho acknowledges a message
before we see it: one dropped for a full queue is lost), and a connect timeout long enough
for onion circuits. A broker's PUBACK removes that broker's outbox row; until then the row
stays, and is published again after every reconnect (receivers drop the copies).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import random
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING

import aiomqtt
import paho.mqtt.client as paho
import socks  # type: ignore[import-untyped]  # PySocks, which paho uses
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from onionchat.config import Broker
from onionchat.config import Federation as Settings
from onionchat.federation import envelope

if TYPE_CHECKING:
    from onionchat.protocol import Message
    from onionchat.store import Room, Store

log = logging.getLogger("onionchat.federation")

BATCH = 256  # outbox rows read and published at once
IN_FLIGHT = 64  # publishes awaiting their PUBACK at once
PACKED = 64  # messages of one room in one publish at most, when they queue up
PACKED_BYTES = 64 * 1024  # and their items' bytes (one larger item goes alone)
LINGER = 0.005  # seconds between two publishes at least while messages keep coming
FLUSH_EVERY = 0.1  # seconds between two deletions of acknowledged outbox rows
FRESH = 10_000  # new messages queued in memory for a broker; past it, read from the database
DELIVERING = 256  # messages from the broker being checked and stored at once
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 60.0
ONION_TIMEOUT = 120.0  # an onion circuit can take a minute or more to build


@dataclasses.dataclass
class LinkState:
    """What `/api/health`, the logs and `/nodes` tell of one broker."""

    broker: str
    state: str = "connecting"  # connecting, up, down
    since: float = dataclasses.field(default_factory=time.time)
    error: str = ""
    connects: int = 0
    published: int = 0  # messages acknowledged by the broker
    publishes: int = 0  # and the publishes they went in
    received: int = 0


class Link:
    def __init__(
        self,
        broker: Broker,
        settings: Settings,
        store: Store,
        subscriptions: list[str],
        item: Callable[[Room, Message], Coroutine[None, None, tuple[str, bytes]]],
        deliver: Callable[[str, bytes], Coroutine[None, None, None]],
        connected: Callable[[], None],
        proxy: Callable[[], str | None],
        network_key: bytes,
    ) -> None:
        self.broker = broker
        self.settings = settings
        self.store = store
        self.subscriptions = subscriptions
        self.item = item
        self.deliver = deliver
        self.connected = connected
        self.proxy = proxy
        self.network_key = network_key
        self.status = LinkState(broker.url)
        self._fresh: asyncio.Queue[tuple[Room, Message]] = asyncio.Queue()
        self._overflow = False
        self._publishing: set[asyncio.Task[None]] = set()
        self._acked: list[tuple[int, str]] = []
        self._task: asyncio.Task[None] | None = None
        self._client_up: aiomqtt.Client | None = None
        self._delivering: set[asyncio.Task[None]] = set()

    @property
    def client_id(self) -> str:
        """Fixed per node and broker, so that the broker finds the session again."""
        digest = hashlib.sha256(self.broker.url.encode()).hexdigest()[:12]
        return f"{self.settings.network}-{self.settings.name}-{digest}"

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"broker {self.broker.url}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def written(self, room: Room, message: Message) -> None:
        """A message written here, with its outbox row for this broker committed: published
        now if the broker is up (else after the reconnect, from the database)."""
        if self._client_up is None or self._overflow:
            return
        if self._fresh.qsize() >= FRESH:
            self._overflow = True  # the rest is read from the database
            return
        self._fresh.put_nowait((room, message))

    async def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish what no outbox keeps (a repair step, asked again next round; a presence
        list, told again at the next heartbeat): at QoS 1 if the broker is up now, else not."""
        client = self._client_up
        if client is None:
            return
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(topic, payload, qos=1, retain=retain)

    # -- the connection -------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            if self.broker.tor and self.proxy() is None:
                self.status.state = "waiting for tor"  # it is starting: no failure yet
                await asyncio.sleep(1.0)
                continue
            try:
                client = self._client()
                async with client:
                    failures = 0
                    await client.subscribe([(topic, 1) for topic in self.subscriptions])
                    self._up()
                    self._client_up = client  # from now on new messages are queued here
                    self.connected()
                    try:
                        async with asyncio.TaskGroup() as tasks:
                            tasks.create_task(self._publish(client))
                            tasks.create_task(self._receive(client))
                    finally:
                        self._client_up = None
            except* (aiomqtt.MqttError, OSError) as group:
                failures += 1
                self._down(group.exceptions[0])
            except* Exception as group:  # a bug must not end the link: said, then retried
                failures += 1
                log.error(
                    "broker link failed",
                    exc_info=group.exceptions[0],
                    extra={"event": "error", "broker": self.broker.url},
                )
                self._down(group.exceptions[0])
            delay = random.uniform(0, min(BACKOFF_MAX, BACKOFF_FIRST * 2**failures))
            await asyncio.sleep(delay)  # full jitter: nodes that lost a broker come back spread

    def _up(self) -> None:
        self.status.state, self.status.since, self.status.error = "up", time.time(), ""
        self.status.connects += 1
        log.info(
            "broker connected",
            extra={
                "event": "broker_up",
                "broker": self.broker.url,
                "connects": self.status.connects,
            },
        )

    def _down(self, exc: BaseException) -> None:
        was = self.status.state
        self.status.state, self.status.error = "down", str(exc) or type(exc).__name__
        if was != "down":
            self.status.since = time.time()
            log.warning(
                "broker unreachable",
                extra={
                    "event": "broker_down",
                    "broker": self.broker.url,
                    "error": self.status.error,
                },
            )

    def _client(self) -> aiomqtt.Client:
        b, s = self.broker, self.settings
        v5 = b.version == "5"
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = s.session_expiry
        timeout = max(s.connect_timeout, ONION_TIMEOUT) if b.onion else s.connect_timeout
        client = aiomqtt.Client(
            b.host,
            b.port,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else False,
            # under 3.1.1 paho refuses any clean-start value but its default, which it ignores
            clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            username=b.username,
            password=b.password,
            tls_context=tls_context(b) if b.tls else None,
            proxy=self._proxy() if b.tor or b.proxy else None,
            timeout=timeout,
            keepalive=60 if b.tor else 20,
            max_queued_incoming_messages=0,
            max_inflight_messages=IN_FLIGHT,
            # small packets each way (PUBLISH, PUBACK): Nagle and delayed ACKs cost 40 ms each
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        client.pending_calls_threshold = IN_FLIGHT * 4  # aiomqtt would warn past 10
        client._client.connect_timeout = timeout
        return client

    def _proxy(self) -> aiomqtt.ProxySettings:
        """The broker's own SOCKS5 proxy, or else tor's SOCKS port."""
        url = self.broker.proxy or self.proxy()
        if url is None:
            raise aiomqtt.MqttError("tor is not running: its SOCKS port is needed for this broker")
        return socks_settings(url)

    # -- publishing -----------------------------------------------------------------------

    async def _publish(self, client: aiomqtt.Client) -> None:
        """The outbox rows left from before (read from the database, oldest first, until
        none is left); then each new message as it is written, from memory, until that
        queue overflows (a broker slower than the node): then the database again. Either
        way a row goes only once this broker's PUBACK has come. While messages keep coming,
        one publish a `LINGER` at most: what is written meanwhile goes in the next one
        together (`PACKED` of a room at most), for a publish costs both nodes more than a
        message in it."""
        window = asyncio.Semaphore(IN_FLIGHT)
        flusher = asyncio.create_task(self._flush())
        try:
            while True:
                self._fresh = asyncio.Queue()
                self._overflow = False
                backlog: set[str] = set()  # ids published from the database
                last = 0.0  # when the latest publish was made
                while rows := await self.store.outbox(self.broker.url, BATCH):
                    await self._packed(client, window, rows)
                    await self._flush_now()
                    backlog.update(m.id for _, m in rows)
                while not (self._overflow and self._fresh.empty()):
                    first = await self._fresh.get()
                    await window.acquire()
                    window.release()
                    wait = last + LINGER - time.monotonic()
                    if wait > 0:  # busy: at most one publish a LINGER, the rest share it
                        await asyncio.sleep(wait)
                    last = time.monotonic()
                    queued = [first]
                    while len(queued) < BATCH and not self._fresh.empty():
                        queued.append(self._fresh.get_nowait())
                    queued = [(r, m) for r, m in queued if m.id not in backlog]
                    task = asyncio.create_task(self._packed(client, window, queued))
                    self._publishing.add(task)
                    task.add_done_callback(self._publishing.discard)
        finally:
            flusher.cancel()
            for task in self._publishing:
                task.cancel()
            await self._flush_now()

    async def _packed(
        self,
        client: aiomqtt.Client,
        window: asyncio.Semaphore,
        queued: list[tuple[Room, Message]],
    ) -> None:
        """Publish messages, those of one topic packed together in order."""
        topics: dict[str, list[tuple[bytes, tuple[int, str]]]] = {}
        for room, message in queued:
            topic, item = await self.item(room, message)
            topics.setdefault(topic, []).append((item, (room.id, message.id)))
        publishes = []
        for topic, items in topics.items():
            pack: list[tuple[bytes, tuple[int, str]]] = []
            size = 0
            for item, row in items:
                if pack and (len(pack) == PACKED or size + len(item) > PACKED_BYTES):
                    publishes.append(self._one(client, window, topic, pack))
                    pack, size = [], 0
                pack.append((item, row))
                size += len(item)
            publishes.append(self._one(client, window, topic, pack))
        await asyncio.gather(*publishes)

    async def _one(
        self,
        client: aiomqtt.Client,
        window: asyncio.Semaphore,
        topic: str,
        pack: list[tuple[bytes, tuple[int, str]]],
    ) -> None:
        payload = envelope.seal([item for item, _ in pack], self.network_key)
        async with window:
            await client.publish(topic, payload, qos=1)
        self._acked.extend(row for _, row in pack)
        self.status.published += len(pack)
        self.status.publishes += 1

    async def _flush(self) -> None:
        """Acknowledged rows deleted in one transaction a tick, not one each."""
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            await self._flush_now()

    async def _flush_now(self) -> None:
        done, self._acked = self._acked, []
        if done:
            await self.store.published(self.broker.url, done)

    async def _receive(self, client: aiomqtt.Client) -> None:
        """Each message handed on in a task of its own, at most DELIVERING at once (the rest
        wait in aiomqtt's queue, never dropped). They start in the order they came, and the
        node's door is synchronous up to the store's queue, so they are stored in that order."""
        window = asyncio.Semaphore(DELIVERING)
        async for message in client.messages:
            self.status.received += 1
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                continue
            await window.acquire()
            task = asyncio.create_task(self.deliver(message.topic.value, bytes(payload)))
            self._delivering.add(task)
            task.add_done_callback(self._delivering.discard)
            task.add_done_callback(lambda _: window.release())


def socks_settings(url: str) -> aiomqtt.ProxySettings:
    """paho's SOCKS5 settings for a `socks5://HOST:PORT` proxy URL."""
    parsed = urllib.parse.urlsplit(url)
    return aiomqtt.ProxySettings(
        proxy_type=socks.SOCKS5,
        proxy_addr=parsed.hostname or "127.0.0.1",
        proxy_port=parsed.port,
        proxy_rdns=True,  # the proxy resolves the name: .onion, and no DNS leak
    )


def tls_context(b: Broker) -> ssl.SSLContext:
    """The broker's CA (or the system's) and our client certificate, as the broker's URL says."""
    context = ssl.create_default_context(cafile=os.path.expanduser(b.ca) if b.ca else None)
    if b.cert:
        context.load_cert_chain(os.path.expanduser(b.cert), os.path.expanduser(b.key))
    return context
