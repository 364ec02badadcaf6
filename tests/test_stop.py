"""Stopping a node (issue 13): SIGTERM and Ctrl-C (SIGINT) stop it cleanly. WebSockets are
told 1012 (the clients reconnect by themselves), every message acknowledged is committed, the
log has no traceback and the process exits 0. Real `onionchat serve` processes."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
import websockets

from onionchat.ids import IdGenerator
from onionchat.protocol import Message
from onionchat.server import DATABASE
from onionchat.store import Store

from conftest import connect, register

SENT = 3000  # sent at once: far more than a commit takes, so that many commit during the stop
UNLIMITED = {"ONIONCHAT_LIMITS_RATE": "100000", "ONIONCHAT_LIMITS_BURST": "100000"}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
async def test_a_stop_tells_clients_1012_keeps_every_acked_message_and_exits_0(
    node_factory: Any, sig: signal.Signals
) -> None:
    node = node_factory(env=UNLIMITED)
    token = await register(node, "alice")
    acked: list[str] = []
    async with connect(node, token) as alice:
        await alice.join("lobby")
        for n in range(SENT):  # none waited for: most still committing when the signal comes
            await alice.send(type="send", room="lobby", text=f"m{n}", ref=str(n))
        while not acked:  # the first commit's acks (the node reads on while messages commit)
            frame = await alice.recv()
            if frame["type"] == "ack":
                acked.append(frame["id"])
        assert node.proc is not None
        proc, node.proc = node.proc, None
        proc.send_signal(sig)
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                frame = await alice.recv()
                if frame["type"] == "ack":
                    acked.append(frame["id"])
        assert alice.ws.close_code == 1012
        assert alice.ws.close_reason == "the node is stopping"
    assert proc.wait(20) == 0
    log = node.log_path.read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log
    assert [e for e in node.events() if e.get("event") == "stop"]
    store = await Store.open(node.data_dir / DATABASE)
    try:
        room = await store.room("lobby")
        assert room is not None
        stored, _ = await store.history(room, None, SENT)
    finally:
        await store.close()
    # Every message stored was acknowledged before the 1012: none is left for the client to
    # send again (a double) or to show as failed; and they are stored in the order sent.
    assert set(acked) == {m.id for m in stored}
    assert [m.text for m in sorted(stored, key=lambda m: m.id)] == [
        f"m{n}" for n in range(len(stored))
    ]
    node.start(port=node.port)
    async with connect(node, token) as alice:
        joined = await alice.join("lobby")
    assert joined["history"][-1]["id"] == max(acked)


async def test_a_client_that_sends_on_through_a_stop_is_told_1012_all_the_same(
    node_factory: Any,
) -> None:
    """While its messages keep committing the node's own close waits for them to be
    acknowledged; past half the grace (5 s at most) the WebSocket layer closes instead."""
    node = node_factory(env=UNLIMITED)
    token = await register(node, "alice")
    async with connect(node, token) as alice:
        await alice.join("lobby")
        assert node.proc is not None
        proc, node.proc = node.proc, None
        with pytest.raises(websockets.ConnectionClosed):
            for n in range(1_000_000):  # bounded; the close comes long before
                await alice.send(type="send", room="lobby", text=f"m{n}")
                if n == 100:
                    proc.send_signal(signal.SIGTERM)
                if n % 100 == 0:
                    await asyncio.sleep(0)
        assert alice.ws.close_code == 1012
    assert proc.wait(20) == 0
    assert "Traceback" not in node.log_path.read_text()


async def test_with_no_grace_a_stop_tells_clients_1012_at_once(node_factory: Any) -> None:
    node = node_factory(env={"ONIONCHAT_SERVER_SHUTDOWN_GRACE": "0"})
    token = await register(node, "alice")
    async with connect(node, token) as alice:
        await alice.join("lobby")
        assert node.proc is not None
        proc, node.proc = node.proc, None
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed):
            for _ in range(100):  # bounded: the close comes first
                await alice.recv()
        assert alice.ws.close_code == 1012
    assert proc.wait(20) == 0


async def test_a_closing_store_commits_what_it_was_handed_first(tmp_path: Path) -> None:
    """Writes handed to the store and not yet committed when it is closed are committed, and
    their writers told so, before the database closes."""
    store = await Store.open(tmp_path / "db.sqlite3")
    room = await store.create_room("lobby", False)
    ids = IdGenerator()
    messages = []
    for n in range(500):
        id_, ts = ids.next()
        messages.append(Message(id=id_, room="lobby", ts=ts, sender="alice", text=f"m{n}"))
    writes = [asyncio.ensure_future(store.add_message(room.id, m)) for m in messages]
    await asyncio.sleep(0)  # handed over, none committed yet
    await store.close()
    assert all(w.done() and w.result() is True for w in writes)
    again = await Store.open(tmp_path / "db.sqlite3")
    try:
        found = await again.room("lobby")
        assert found is not None
        stored, _ = await again.history(found, None, 1000)
        assert [m.text for m in sorted(stored, key=lambda m: m.id)] == [f"m{n}" for n in range(500)]
    finally:
        await again.close()
