"""Federation (issue 12): nodes share rooms through real mosquitto brokers, and no broker's loss
loses a message or shows one twice. Nodes run in process (tests/inproc.py: the real node,
store and features, with their own SQLite files); brokers are real mosquitto processes on
loopback ports of their own (tests/brokers.py)."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import secrets
import sqlite3
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import nacl.secret
import nacl.signing
import pytest
import trustme
from brokers import Socks5, brokers, password_file
from federation import Network, history, linked, messages, until
from inproc import Member, connection, member

from onionchat import crypto, sealed
from onionchat.federation import envelope, repair
from onionchat.ids import IdGenerator
from onionchat.protocol import ProtocolError
from onionchat.server import Server


async def test_three_nodes_and_two_brokers_show_every_message_once_in_order(
    tmp_path: Path,
) -> None:
    with brokers(tmp_path, 2) as pair:
        net = Network(tmp_path, ["north", "south", "east"], [b.url for b in pair])
        async with net.all() as nodes:
            people = [
                await member(parts, name)
                for parts, name in zip(nodes, ["ann", "bob", "cat"], strict=True)
            ]
            for person in people:
                await person.join("lobby")
            for n in range(20):
                for person in people:
                    await person.say("lobby", f"{person.user} {n}", ref=f"{person.user}{n}")
            for person, parts in zip(people, nodes, strict=True):
                got = await messages(person, 60)
                counts = collections.Counter(m["id"] for m in got)
                assert len(counts) == 60 and max(counts.values()) == 1, "a message shown twice"
                by_sender: dict[str, list[str]] = collections.defaultdict(list)
                for m in got:
                    by_sender[m["sender"]].append(m["text"])
                here = parts.federation.name if parts.federation else ""
                for other, node in (("ann", "north"), ("bob", "south"), ("cat", "east")):
                    shown = other if node == here else f"{other}@{node}"
                    assert by_sender[shown] == [f"{other} {n}" for n in range(20)], shown
            stored = [await history(parts, "lobby") for parts in nodes]
            ids = [[i for i, _, _ in h] for h in stored]
            assert ids[0] == ids[1] == ids[2] and len(ids[0]) == 60
            assert ids[0] == sorted(ids[0])  # by (time, id): the same order everywhere
            north = {text: sender for _, sender, text in stored[0]}
            assert north["bob 3"] == "bob@south" and north["ann 3"] == "ann"


async def count_ids(parts: Server, room: str) -> collections.Counter[str]:
    stored = await history(parts, room)
    return collections.Counter(i for i, _, _ in stored)


async def test_a_broker_killed_in_a_steady_stream_loses_nothing_and_shows_nothing_twice(
    tmp_path: Path,
) -> None:
    with brokers(tmp_path, 2) as pair:
        net = Network(tmp_path, ["north", "south"], [b.url for b in pair])
        async with net.all() as (north, south):
            ann, bob = await member(north, "ann"), await member(south, "bob")
            await ann.join("lobby")
            await bob.join("lobby")
            for n in range(200):
                if n == 60:
                    pair[0].kill()  # SIGKILL: what it held in memory, acknowledged or not, is gone
                await ann.say("lobby", f"steady {n}", ref=f"s{n}")
                await asyncio.sleep(0.005)
            got = await messages(bob, 200)
            assert collections.Counter(m["id"] for m in got).most_common(1)[0][1] == 1
            assert [m["text"] for m in got] == [f"steady {n}" for n in range(200)]
            for parts in (north, south):
                counts = await count_ids(parts, "lobby")
                assert len(counts) == 200 and set(counts.values()) == {1}
            assert north.federation is not None
            federation = north.federation

            async def drained() -> bool:  # acknowledged rows go a tick later
                status = await federation.status()
                return bool(status["brokers"][1]["outbox"] == 0)

            await until(drained, what="the live broker's outbox empty")
            dead, _ = (await federation.status())["brokers"]
            assert dead["state"] != "up" and dead["outbox"] > 0  # kept for when it is back


async def test_with_every_broker_down_messages_wait_and_arrive_when_one_is_back(
    tmp_path: Path,
) -> None:
    with brokers(tmp_path, 2) as pair:
        net = Network(tmp_path, ["north", "south"], [b.url for b in pair])
        async with net.all() as (north, south):
            ann, bob = await member(north, "ann"), await member(south, "bob")
            await ann.join("lobby")
            await bob.join("lobby")
            await ann.say("lobby", "before")
            await messages(bob, 1)
            for broker in pair:
                broker.kill()
            for n in range(30):  # accepted and shown on their node meanwhile
                ack = await ann.say("lobby", f"while down {n}", ref=f"d{n}")
                assert ack["id"]
            await bob.nothing()
            pair[1].start()  # on its port again, with nothing of before
            got = await messages(bob, 31)
            assert [m["text"] for m in got] == ["before"] + [f"while down {n}" for n in range(30)]
            assert len({m["id"] for m in got}) == len(got)


async def test_a_broker_behind_a_socks5_proxy_is_reached_only_through_it(tmp_path: Path) -> None:
    """`proxy=socks5://…` (a real proxy: Debian's microsocks). North's every connection to
    the broker is one the proxy made; with the proxy gone north's link is down, and what was
    said meanwhile arrives once it is back."""
    with brokers(tmp_path, 1) as (broker,):
        proxy = Socks5(tmp_path / "proxy")
        proxy.start()
        try:
            net = Network(tmp_path, ["north", "south"], [broker.url])
            through = f"{broker.url}?proxy={proxy.url}"
            async with (
                net.node("north", ONIONCHAT_FEDERATION_BROKERS=through) as north,
                net.node("south") as south,
            ):
                await linked([north, south])
                assert north.federation is not None
                (link,) = north.federation.links
                assert link.status.connects == 1
                (made,) = proxy.connections()
                assert made.endswith(f"127.0.0.1: connected to 127.0.0.1:{broker.port}")
                ann, bob = await member(north, "ann"), await member(south, "bob")
                await ann.join("lobby")
                await bob.join("lobby")
                await bob.say("lobby", "through the proxy")
                assert [m["text"] for m in await messages(ann, 1)] == ["through the proxy"]
                proxy.stop()  # its connections end with it
                await until(lambda: link.status.state != "up", what="north's link down")
                await bob.say("lobby", "while the proxy was away")
                await ann.nothing()
                proxy.start()
                got = await messages(ann, 2, timeout=30)
                assert [m["text"] for m in got][-1] == "while the proxy was away"
                assert len(proxy.connections()) == link.status.connects >= 2
        finally:
            proxy.stop()


async def test_a_node_away_longer_than_a_broker_queues_catches_up_without_anyone_speaking(
    tmp_path: Path,
) -> None:
    """mosquitto keeps 10 messages for an absent session here (1,000 by default): south,
    stopped while north writes 150, gets them all back by repair as soon as it is up."""
    with brokers(tmp_path, 2, ["allow_anonymous true", "max_queued_messages 10"]) as pair:
        net = Network(tmp_path, ["north", "south"], [b.url for b in pair])
        async with net.node("north") as north:
            async with net.node("south") as south:
                await linked([north, south])
                bob = await member(south, "bob")
                await bob.join("lobby")
                ann = await member(north, "ann")
                await ann.join("lobby")
                await ann.say("lobby", "first")
                await messages(bob, 1)
            for n in range(150):
                await ann.say("lobby", f"while away {n}", ref=f"a{n}")
            async with net.node("south") as south:

                async def caught_up() -> bool:
                    return len(await count_ids(south, "lobby")) == 151

                await until(caught_up, what="south caught up")
                counts = await count_ids(south, "lobby")
                assert set(counts.values()) == {1}
                expected = [(i, f"{s}@north", t) for i, s, t in await history(north, "lobby")]
                assert await history(south, "lobby") == expected


async def raw_client(url: str, **options: Any) -> aiomqtt.Client:
    """A client of the test's own, straight on a broker, as an attacker or a curious operator."""
    parsed = urllib.parse.urlsplit(url)
    return aiomqtt.Client(parsed.hostname or "", parsed.port or 1883, **options)


@contextlib.asynccontextmanager
async def spying(url: str) -> AsyncIterator[list[tuple[str, bytes]]]:
    """(topic, payload) of everything the broker carries, as a subscriber of `#` sees it."""
    captured: list[tuple[str, bytes]] = []
    async with await raw_client(url, identifier="curious") as spy:
        await spy.subscribe("#", qos=1)

        async def listen() -> None:
            async for message in spy.messages:
                assert isinstance(message.payload, bytes)
                captured.append((message.topic.value, message.payload))

        listening = asyncio.create_task(listen())
        try:
            yield captured
        finally:
            listening.cancel()


async def written_while_away(net: Network, north: Server, texts: list[str]) -> None:
    """South meets the brokers once (its sessions are made there), then is away while ann,
    on north, writes `texts` in #lobby."""
    async with net.node("south") as south:
        await linked([north, south])
    ann = await member(north, "ann")
    await ann.join("lobby")
    for n, text in enumerate(texts):
        await ann.say("lobby", text, ref=f"m{n}")


def sealed_as(key: bytes, secret: bytes, sender: str, text: str) -> str:
    """A message box of #vault, signed with `secret`'s signing key as from `sender`."""
    signer = sealed.signing_key(secret)
    return sealed.seal_body(key, signer, room="vault", sender=sender, kind="message", text=text)


async def test_what_is_forged_unsigned_replayed_oversized_or_malformed_is_dropped(
    tmp_path: Path,
) -> None:
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south"], [broker.url])
        async with net.all() as (north, south):
            bob = await member(south, "bob")
            await bob.join("lobby")
            assert north.federation is not None and south.federation is not None
            key = north.federation.key  # north's own key, as if stolen from its data dir
            network = net_key(net)
            room_tag = envelope.room_tag(network, "lobby")
            topic = envelope.topic("onionchat", "north", "m", room_tag)
            ids = IdGenerator()

            def body(text: str, **changes: Any) -> envelope.MessageBody:
                id_, ts = ids.next()
                fields: dict[str, Any] = {
                    "origin": "north",
                    "room": "lobby",
                    "protected": False,
                    "id": id_,
                    "ts": ts,
                    "sender": "ann",
                    "text": text,
                }
                return envelope.MessageBody(**(fields | changes))

            good = envelope.signed(body("a real one"), key)
            stranger = nacl.signing.SigningKey.generate()
            future = body("from the future", ts=int((time.time() + 3600) * 1000))
            future = envelope.MessageBody(
                **{
                    **{f: getattr(future, f) for f in future.__struct_fields__},
                    "id": _id_at(future.ts),
                }
            )
            replayed = good[:64] + envelope.encode(body("a real one", id=ids.next()[0]))
            framing = nacl.secret.SecretBox(network).encrypt((100).to_bytes(4, "big") + good)
            attacks = {
                "not sealed": b"plain text, no secretbox",
                "unsigned": envelope.seal([envelope.encode(body("no signature"))], network),
                "a stranger's key": envelope.seal([envelope.signed(body("x"), stranger)], network),
                "another network": envelope.seal([good], secrets.token_bytes(32)),
                "replayed under another id": envelope.seal([replayed], network),
                "oversized": envelope.seal([b"x" * (300 * 1024)], network),
                "malformed": envelope.seal([b"\0" * 64 + b"{not json"], network),
                "a length past the end": bytes(framing),
                "from the future": envelope.seal([envelope.signed(future, key)], network),
                "a text in a bad form": envelope.seal([envelope.signed(body(" "), key)], network),
            }
            async with await raw_client(broker.url, identifier="mallory") as mallory:
                for payload in attacks.values():
                    await mallory.publish(topic, payload, qos=1)
                # a good one packed among bad ones is taken, once, however often it comes
                packed = [envelope.signed(body(" "), key), good, good]
                await mallory.publish(topic, envelope.seal(packed, network), qos=1)
                await mallory.publish(topic, envelope.seal([good], network), qos=1)  # replayed
                await mallory.publish("elsewhere/north/m/x", envelope.seal([good], network), qos=1)
            got = await messages(bob, 1)
            assert [m["text"] for m in got] == ["a real one"]
            reasons = {
                "not sealed with the network key": 2,  # not sealed, another network
                "malformed": 3,  # unsigned (no signature before the body), malformed, framing
                "bad signature": 2,  # a stranger's key, replayed under another id
                "oversized": 1,
                "from the future": 1,
                "refused as a client's would be (bad_body)": 2,
            }
            drops = south.federation.drops
            await until(lambda: drops == reasons, what=str(reasons))
            await bob.say("lobby", "the node still serves")
            assert [text for _, _, text in await history(south, "lobby")] == [
                "a real one",
                "the node still serves",
            ]


def _id_at(ms: int) -> str:
    """An id whose time is `ms` (as a node with a clock that far ahead would make)."""
    value = (ms << 80) | secrets.randbits(79)
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "".join(alphabet[(value >> (5 * (25 - n))) & 31] for n in range(26))


def net_key(net: Network) -> bytes:
    return base64.b64decode(net.secret)


async def test_brokers_see_no_room_name_and_no_text(tmp_path: Path) -> None:
    """A subscriber of the test's own on the broker takes in everything it carries: ciphertext
    only, on topics that name no room."""
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south"], [broker.url])
        async with net.all() as (north, south):
            async with spying(broker.url) as captured:
                ann, bob = await member(north, "ann"), await member(south, "bob")
                await ann.join("secretplans")
                await bob.join("secretplans")
                await ann.say("secretplans", "the password is swordfish")
                await messages(bob, 1)
                await until(lambda: len(captured) >= 1)
            assert captured
            for topic, payload in captured:
                for word in (b"secretplans", b"swordfish", b"ann"):
                    assert word not in payload and word.decode() not in topic


@pytest.mark.parametrize("version", ["5", "3.1.1"])
async def test_a_short_absence_is_replayed_by_the_brokers_session(
    tmp_path: Path, version: str
) -> None:
    """The session outlives the connection (MQTT 5: a session expiry and no clean start; 3.1.1:
    clean_session off): what came meanwhile is the broker's to give, not a repair's."""
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south"], [f"{broker.url}?version={version}"])
        async with net.node("north") as north:
            await written_while_away(net, north, [f"meanwhile {n}" for n in range(20)])
            async with net.node("south") as south:

                async def replayed() -> bool:
                    return len(await history(south, "lobby")) == 20

                await until(replayed, what="the broker's replay")
                bob = await member(south, "bob")
                joined = await bob.join("lobby")
                texts = [m["text"] for m in joined["history"]]
                assert texts == [f"meanwhile {n}" for n in range(20)]
                assert north.federation is not None
                assert north.federation.repair.pushed == 0  # all of it came from the session


async def test_a_tls_broker_with_passwords_and_acls(tmp_path: Path) -> None:
    """mqtts:// with a CA of the test's own, a password per node from an environment variable,
    and the ACL of docs/federation.md: each node publishes only under its own name."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    files = tmp_path / "tls"
    files.mkdir()
    ca.cert_pem.write_to_path(str(files / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(files / "server.pem"))
    passwords = {"north": secrets.token_hex(8), "south": secrets.token_hex(8), "spy": "s"}
    password_file(files / "passwd", passwords | {"mallory": "m"})
    (files / "acl").write_text("pattern write onionchat/%u/#\npattern read onionchat/#\n")
    lines = [
        f"cafile {files / 'ca.pem'}",
        f"certfile {files / 'server.pem'}",
        f"keyfile {files / 'server.pem'}",
        "allow_anonymous false",
        f"password_file {files / 'passwd'}",
        f"acl_file {files / 'acl'}",
    ]
    with brokers(tmp_path, 1, lines) as (broker,):
        net = Network(tmp_path, ["north", "south"], [])
        nodes = {}
        async with contextlib.AsyncExitStack() as stack:
            for name in net.names:
                net.brokers = [
                    f"mqtts://{name}@127.0.0.1:{broker.port}"
                    f"?password_env=MQTT_PASSWORD_{name.upper()}&ca={files / 'ca.pem'}"
                ]
                password = {f"MQTT_PASSWORD_{name.upper()}": passwords[name]}
                nodes[name] = await stack.enter_async_context(net.node(name, **password))
            await linked(list(nodes.values()))
            ann, bob = await member(nodes["north"], "ann"), await member(nodes["south"], "bob")
            await ann.join("lobby")
            await bob.join("lobby")
            await ann.say("lobby", "over TLS")
            assert [m["text"] for m in await messages(bob, 1)] == ["over TLS"]
            context = ssl.create_default_context(cafile=str(files / "ca.pem"))
            spied: list[str] = []
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, username="spy", password="s", tls_context=context
            ) as spy:
                await spy.subscribe("onionchat/#", qos=1)
                async with aiomqtt.Client(
                    "127.0.0.1",
                    broker.port,
                    username="mallory",
                    password="m",
                    tls_context=context,
                ) as mallory:
                    await mallory.publish("onionchat/north/m/forged", b"as north", qos=1)
                    await mallory.publish("onionchat/mallory/m/own", b"as herself", qos=1)
                async with asyncio.timeout(5):
                    async for message in spy.messages:
                        spied.append(message.topic.value)
                        if message.topic.value == "onionchat/mallory/m/own":
                            break
            assert "onionchat/north/m/forged" not in spied  # the broker refused it


async def publish_identity(person: Member) -> bytes:
    """As a client does at sign-up: the identity key pair, wrapped, and its signing key."""
    secret, _ = crypto.new_identity()
    await person.send(
        type="identity",
        public=base64.b64encode(crypto.public_of(secret)).decode(),
        wrapped=crypto.wrap_identity(crypto.new_room_key(), secret),
        signing=base64.b64encode(sealed.signing_public(secret)).decode(),
        ref="id",
    )
    await person.expect("identity", ref="id")
    return secret


async def test_a_key_protected_room_across_nodes_checks_every_box_and_shows_brokers_nothing(
    tmp_path: Path,
) -> None:
    """ann on north and bob on south share #vault by its key: each reads the other's boxes,
    checked as clients check them (the signature by the key the reader's node gives for
    `name@node`, vouched for by the writer's node); a box in ann's name that bob's key signed is
    rejected; the broker carries neither the text nor the room's name."""
    key = crypto.new_room_key()
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south"], [broker.url])
        async with net.all() as (north, south):
            async with spying(broker.url) as captured:
                ann, bob = await member(north, "ann"), await member(south, "bob")
                secrets_ = {"ann": await publish_identity(ann), "bob": await publish_identity(bob)}
                await ann.send(type="join", room="vault", create=True, protected=True)
                await ann.expect("joined")
                box = sealed_as(key, secrets_["ann"], "ann", "the plans are in the drawer")
                await ann.send(type="send", room="vault", box=box, ref="b")
                await ann.expect("ack", ref="b")

                async def arrived() -> bool:
                    return len(await history(south, "vault")) == 1

                await until(arrived, what="ann's box on south")
                joined = await bob.join("vault", protected=True)
                (got,) = joined["history"]
                assert got["sender"] == "ann@north" and got["box"] == box
                await bob.send(type="key", user="ann@north", ref="k")
                vouched = await bob.expect("key", ref="k")
                body = sealed.open_body([key], got["box"])
                assert body.verify(base64.b64decode(vouched["signing"]))
                body.check("vault", got["sender"], "message", got["ts"])
                assert body.text == "the plans are in the drawer"

                forged = sealed_as(key, secrets_["bob"], "ann", "forged in ann's name")
                await bob.send(type="send", room="vault", box=forged, ref="f")
                await bob.expect("ack", ref="f")
                shown = [m for m in await messages(ann, 2) if m["sender"] != "ann"]
                assert shown[0]["sender"] == "bob@south"
                await ann.send(type="key", user="bob@south", ref="k2")
                bobs = await ann.expect("key", ref="k2")
                opened = sealed.open_body([key], shown[0]["box"])
                with pytest.raises(sealed.Rejected):  # written as from ann, shown as from bob
                    opened.check("vault", shown[0]["sender"], "message", shown[0]["ts"])
                assert opened.verify(base64.b64decode(bobs["signing"]))  # bob's own key
                assert not opened.verify(base64.b64decode(vouched["signing"]))
                await until(lambda: len(captured) >= 2)
            for words in (b"plans", b"drawer", b"forged", b"vault"):
                assert not any(words in p or words.decode() in t for t, p in captured)


async def test_direct_messages_across_nodes_reach_only_the_two(tmp_path: Path) -> None:
    """/msg bob@south from north reaches bob, and his answer reaches ann; a third node never
    gets them (they travel on the recipient node's topic); one to nobody is dropped there."""
    with brokers(tmp_path, 2) as pair:
        net = Network(tmp_path, ["north", "south", "east"], [b.url for b in pair])
        async with net.all() as (north, south, east):
            ann, bob = await member(north, "ann"), await member(south, "bob")
            eve = await member(east, "eve")
            await ann.send(type="command", room=None, line="/msg bob@south hello bob", ref="d")
            sent = await ann.expect("ack", ref="d")
            got = await bob.expect("message", id=sent["id"])
            assert got["sender"] == "ann@north" and got["to"] == "bob"
            assert got["text"] == "hello bob"
            await bob.send(type="send", to="ann@north", text="hi ann", ref="r")
            await bob.expect("ack", ref="r")
            answer = await ann.expect("message", text="hi ann")
            assert answer["sender"] == "bob@south" and answer["to"] == "ann"
            assert answer["room"] == sent["room"]  # one conversation on each side
            await ann.send(type="history", room=sent["room"], ref="h")
            page = await ann.expect("history", ref="h")
            assert [m["text"] for m in page["messages"]] == ["hello bob", "hi ann"]
            await ann.send(type="send", to="nobody@south", text="anyone?", ref="n")
            await ann.expect("ack", ref="n")
            assert south.federation is not None
            drops = south.federation.drops
            await until(lambda: drops.get("a direct message to nobody here") == 1)
            await eve.nothing()
            with sqlite3.connect(net.data_dir("east") / "onionchat.sqlite3") as db:
                assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)


async def test_who_is_present_on_other_nodes_is_shown_and_follows_joins_and_leaves(
    tmp_path: Path,
) -> None:
    with brokers(tmp_path, 2) as pair:
        net = Network(tmp_path, ["north", "south"], [b.url for b in pair])
        async with net.node("north") as north:
            async with net.node("south") as south:
                await linked([north, south])
                ann = await member(north, "ann")
                await ann.join("lobby")
                bob = await member(south, "bob")
                await bob.join("lobby")
                came = await ann.expect("presence", user="bob@south", state="join")
                assert came["room"] == "lobby"

                async def listed() -> bool:
                    return south.node.members("lobby") == ["bob", "ann@north"]

                await until(listed, what="ann@north among south's members")
                await ann.send(type="who", room="lobby", ref="w")
                assert (await ann.expect("who", ref="w"))["members"] == ["ann", "bob@south"]
                cat = await member(north, "cat")
                joined = await cat.join("lobby")
                assert joined["members"] == ["ann", "cat", "bob@south"]
                await bob.expect("presence", user="cat@north", state="join")
                await cat.send(type="leave", room="lobby", ref="l")
                await cat.expect("left", ref="l")
                await bob.expect("presence", user="cat@north", state="leave")
            # south stopped, and said so with an empty list: its members go at once
            await ann.expect("presence", user="bob@south", state="leave")
            assert north.node.members("lobby") == ["ann"]


async def test_an_invitation_across_nodes_brings_the_room_key_sealed_to_its_invitee(
    tmp_path: Path,
) -> None:
    """ann on north invites bob@south into #vault: the invitation, sealed by her client to
    the identity key south vouched for bob, is kept for bob on south and opens there with the
    key, signed by ann as her node vouched for her; the broker sees none of it."""
    key = crypto.new_room_key()
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south"], [broker.url])
        async with net.all() as (north, south):
            ann, bob = await member(north, "ann"), await member(south, "bob")
            ann_secret = await publish_identity(ann)
            bob_secret = await publish_identity(bob)
            await ann.send(type="join", room="vault", create=True, protected=True)
            await ann.expect("joined")
            # bob wrote to ann once: north knows his keys, as his node vouched for them
            await bob.send(type="send", to="ann@north", text="invite me?", ref="d")
            await ann.expect("message", text="invite me?")
            await ann.send(type="key", user="bob@south", ref="k")
            bob_public = base64.b64decode((await ann.expect("key", ref="k"))["public"])
            assert bob_public == crypto.public_of(bob_secret)
            sealed_ = sealed.seal_invitation(
                key,
                bob_public,
                sealed.signing_key(ann_secret),
                room="vault",
                sender="ann",
                to="bob@south",
            )
            await ann.send(type="invite", room="vault", to="bob@south", sealed=sealed_, ref="i")
            notice = await ann.expect("notice", ref="i")
            assert "bob@south" in notice["text"]
            got = await bob.expect("invited")
            assert got["sender"] == "ann@north" and got["room"] == "vault"
            invitation = sealed.open_invitation(got["sealed"], bob_secret)
            invitation.check("vault", got["sender"], "bob")
            await bob.send(type="key", user="ann@north", ref="k")
            signing = base64.b64decode((await bob.expect("key", ref="k"))["signing"])
            assert invitation.verify(signing) and invitation.key == key
            ready = await connection(south, bob.token)  # kept: a later start gets it too
            assert ready.seen[0]["invitations"][0]["sender"] == "ann@north"
            broker.kill()  # no broker up: the inviter hears it, nothing is lost quietly

            async def down() -> bool:
                assert north.federation is not None
                return north.federation.links[0].status.state != "up"

            await until(down, what="north's link down")
            await ann.send(type="invite", room="vault", to="bob@south", sealed=sealed_, ref="j")
            refused = await ann.expect("error", ref="j")
            assert refused["code"] == "unavailable"


async def test_a_topic_set_on_one_node_is_the_topic_everywhere_and_the_latest_wins(
    tmp_path: Path,
) -> None:
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south", "east"], [broker.url])
        async with net.node("north") as north, net.node("south") as south:
            await linked([north, south])
            ann, bob = await member(north, "ann"), await member(south, "bob")
            await ann.join("lobby")
            await bob.join("lobby")
            await ann.send(type="topic", room="lobby", text="plans for friday", ref="t")
            await ann.expect("topic", ref="t")
            shown = await bob.expect("topic")
            assert shown["by"] == "ann@north" and shown["text"] == "plans for friday"
            await bob.send(type="topic", room="lobby", text="plans for saturday", ref="t2")
            await bob.expect("topic", ref="t2")
            assert (await ann.expect("topic"))["text"] == "plans for saturday"
            assert south.federation is not None
            stale = envelope.TopicBody(
                origin="north", room="lobby", protected=False, by="ann", ts=1, text="stale"
            )
            await south.federation.topic_heard(stale)  # older than what is set: changes nothing
            room = await south.node.room("lobby")
            assert (room.topic, room.topic_by) == ("plans for saturday", "bob")
            async with net.node("east") as east:  # came later: the brokers kept the topics
                cat = await member(east, "cat")

                async def told() -> bool:
                    try:
                        return (await east.node.room("lobby")).topic == "plans for saturday"
                    except ProtocolError:
                        return False

                await until(told, what="east has the latest topic")
                joined = await cat.join("lobby")
                assert joined["room"]["topic_by"] == "bob@south"


async def test_in_a_room_past_the_repair_bound_the_newest_messages_are_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round compares at most the newest `repair.MAX_IDS` ids of a room (50 here): a node
    that missed more gets the newest ones back, the ones people read first."""
    monkeypatch.setattr(repair, "MAX_IDS", 50)
    with brokers(tmp_path, 1, ["allow_anonymous true", "max_queued_messages 5"]) as (broker,):
        net = Network(tmp_path, ["north", "south"], [broker.url])
        async with net.node("north") as north:
            await written_while_away(net, north, [f"m{n}" for n in range(120)])
            written = [i for i, _, _ in await history(north, "lobby")]
            async with net.node("south") as south:

                async def newest_back() -> bool:
                    have = {i for i, _, _ in await history(south, "lobby")}
                    return set(written[-50:]) <= have

                await until(newest_back, what="the newest 50 on south")
