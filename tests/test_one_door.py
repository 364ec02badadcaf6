"""One way in for every message (issue 12): written by a user, by a bot or on another node,
a message is stored once, fanned out once and told to the listeners once. In process
(tests/inproc.py): the real node, store and features, without HTTP."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import msgspec
import pytest
from inproc import Member, member, running

from onionchat.app import PIPELINE
from onionchat.ids import IdGenerator
from onionchat.node import Arrival
from onionchat.protocol import Message
from onionchat.server import DATABASE, Server


async def lobby_of_two(parts: Server) -> tuple[Member, Member, list[Arrival]]:
    """alice and bob in #lobby, and what a listener of the node's hears from then on."""
    alice, bob = await member(parts, "alice"), await member(parts, "bob")
    await alice.join("lobby")
    await bob.join("lobby")
    heard: list[Arrival] = []
    parts.node.listeners.append(heard.append)
    return alice, bob, heard


async def test_a_copy_of_a_stored_message_changes_nothing_and_is_shown_to_no_one(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "node") as parts:
        alice, bob, heard = await lobby_of_two(parts)
        room = await parts.node.room("lobby")
        id_, ts = IdGenerator().next()
        message = Message(id=id_, room="lobby", ts=ts, sender="carol@north", text="from afar")

        assert await parts.node.accept(room, message, peer="north")
        for _copy in range(3):  # a redelivery, a second broker, a repair
            assert not await parts.node.accept(room, message, peer="north")

        got = await bob.expect("message", id=id_)
        assert got["text"] == "from afar" and got["sender"] == "carol@north"
        await bob.nothing()
        await alice.expect("message", id=id_)
        await alice.nothing()
        assert [a.message.id for a in heard] == [id_]
        assert heard[0].peer == "north" and heard[0].conn is None
        history, _ = await parts.store.history(room, None, 50)
        assert [m.id for m in history] == [id_]


async def test_a_message_written_here_is_acked_then_told_to_every_listener(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "node") as parts:
        alice, bob, heard = await lobby_of_two(parts)
        ack = await alice.say("lobby", "hello @carol")
        before = await alice.barrier()
        assert [f["id"] for f in before if f["type"] == "message"] == [ack["id"]]
        assert (await bob.expect("message"))["id"] == ack["id"]
        assert [(a.message.id, a.conn is alice.conn, a.peer) for a in heard] == [
            (ack["id"], True, None)
        ]
        carol = await member(parts, "carol")  # mentions are a listener too
        await alice.say("lobby", "and again @carol", ref="r2")
        mention = await carol.expect("mention")
        assert mention["text"] == "and again @carol" and mention["room"] == "lobby"


async def test_a_batch_with_copies_stores_each_message_once(tmp_path: Path) -> None:
    """Copies that reach the store in one batch (two brokers at once) are told apart too."""

    async with running(tmp_path / "node") as parts:
        room = await parts.store.create_room("lobby", False)
        ids = IdGenerator()
        messages = []
        for n in range(20):
            id_, ts = ids.next()
            messages.append(Message(id=id_, room="lobby", ts=ts, sender="x", text=f"m{n}"))
        copies = messages + messages[::2]
        new = await asyncio.gather(*(parts.store.add_message(room.id, m) for m in copies))
        assert sum(new) == 20
        assert [i for i, n in enumerate(new) if n] == list(range(20))
        stored, _ = await parts.store.history(room, None, 50)
        assert [msgspec.to_builtins(m) for m in stored] == [
            msgspec.to_builtins(m) for m in messages
        ]


async def test_a_message_is_logged_only_at_debug_level(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Which room is busy, and when, is metadata: at the default level the log has no line
    per message (a line a message also cost 8 % of a node's CPU at 1,000 a second)."""
    async with running(tmp_path / "node") as parts:
        alice, bob, _ = await lobby_of_two(parts)
        with caplog.at_level(logging.INFO, logger="onionchat"):
            await alice.say("lobby", "not in the log")
            await bob.expect("message")
        assert not [r for r in caplog.records if getattr(r, "event", "") == "message"]
        with caplog.at_level(logging.DEBUG, logger="onionchat"):
            await alice.say("lobby", "its event in the log, not its words")
            await bob.expect("message")
        (line,) = [r for r in caplog.records if getattr(r, "event", "") == "message"]
        assert line.room == "lobby" and "words" not in line.getMessage()  # type: ignore[attr-defined]


async def test_a_fast_writer_is_read_on_while_its_messages_commit_up_to_its_pipeline(
    tmp_path: Path,
) -> None:
    """A WebSocket's messages do not wait for each other's commit: while another writer holds
    the database, the node still reads its next `PIPELINE` messages, then stops reading that
    connection (its bound). Once the database is free, every one is acknowledged and shown in
    the order sent, and the reader goes on."""
    async with running(tmp_path / "node") as parts:
        alice, bob, _ = await lobby_of_two(parts)
        fast = Member(parts, await parts.node.connect(alice.conn.session, PIPELINE), alice.token)
        await fast.expect("ready")
        await fast.join("lobby")
        holder = sqlite3.connect(tmp_path / "node" / DATABASE, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the node's writer now waits for this transaction
        try:
            for n in range(PIPELINE):
                await fast.send(type="send", room="lobby", text=f"fast {n}", ref=str(n))
            assert fast.conn.entering == PIPELINE
            over = asyncio.create_task(
                fast.send(type="send", room="lobby", text=f"fast {PIPELINE}", ref=str(PIPELINE))
            )
            for _ in range(20):
                await asyncio.sleep(0)
            assert not over.done()  # the reader waits: one more frame is not read
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await over
        acks = [await fast.expect("ack", ref=str(n)) for n in range(PIPELINE + 1)]
        assert [a["id"] for a in acks] == sorted(a["id"] for a in acks)
        shown = [(await bob.expect("message"))["text"] for _ in range(PIPELINE + 1)]
        assert shown == [f"fast {n}" for n in range(PIPELINE + 1)]
        assert fast.conn.entering == 0
        await fast.say("lobby", "and on")
        history, _ = await parts.store.history(await parts.node.room("lobby"), None, 50)
        assert [m.text for m in history] == [f"fast {n}" for n in range(PIPELINE + 1)] + ["and on"]
