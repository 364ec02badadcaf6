"""What the node keeps: history across restarts and crashes, and nothing it must not keep."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import stat
import time
from typing import Any

import pytest
import websockets

from onionchat import crypto

from conftest import NodeProcess, connect, register, user

FAST = {"ONIONCHAT_LIMITS_RATE": "100000", "ONIONCHAT_LIMITS_BURST": "100000"}


async def test_history_survives_a_restart(node: NodeProcess) -> None:
    token = await register(node, "alice")
    async with connect(node, token) as alice:
        await alice.join("lobby")
        await alice.send(type="topic", room="lobby", text="kept")
        for i in range(5):
            await alice.say("lobby", f"before restart {i}", ref=str(i))
    node.restart()
    async with connect(node, token) as alice:  # the session survives too
        joined = await alice.join("lobby")
        assert [m["text"] for m in joined["history"]] == [f"before restart {i}" for i in range(5)]
        assert joined["room"]["topic"] == "kept"


async def test_kill_9_loses_no_acknowledged_message(node_factory: Any) -> None:
    """Many senders write as fast as they can; the node is killed with SIGKILL mid-stream.
    Every message that was acknowledged before the kill is in the history afterwards."""
    node: NodeProcess = node_factory(env=FAST)
    tokens = [await register(node, f"writer{i}") for i in range(4)]
    acked: dict[str, str] = {}

    async def writer(token: str, index: int) -> None:
        with contextlib.suppress(websockets.ConnectionClosed, TimeoutError, OSError):
            async with connect(node, token) as client:
                await client.join("lobby")
                for n in range(100_000):
                    await client.send(type="send", room="lobby", text=f"w{index}-{n}", ref=str(n))
                    while True:
                        frame = await client.recv(10)
                        if frame["type"] == "ack":
                            acked[frame["id"]] = f"w{index}-{n}"
                            break

    tasks = [asyncio.create_task(writer(t, i)) for i, t in enumerate(tokens)]
    while len(acked) < 400:
        await asyncio.sleep(0.02)
    node.stop(signal.SIGKILL)
    await asyncio.gather(*tasks)
    assert len(acked) >= 400

    node.start(port=node.port)
    async with user(node, "reader") as reader:
        joined = await reader.join("lobby")
        messages, more = joined["history"], joined["more"]
        while more:
            await reader.send(
                type="history", room="lobby", before=messages[0]["id"], limit=200, ref="p"
            )
            page = await reader.expect("history", ref="p")
            messages, more = page["messages"] + messages, page["more"]
    stored = {m["id"]: m["text"] for m in messages}
    missing = {i: t for i, t in acked.items() if stored.get(i) != t}
    assert not missing, f"{len(missing)} acknowledged messages lost"


async def test_a_key_protected_room_leaves_no_plaintext_on_disk_or_in_logs(
    node: NodeProcess,
) -> None:
    key = crypto.new_room_key()
    secrets = ["meet at the old mill at midnight", "пароль: сова летит на юг"]
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await alice.join("vault", protected=True)
        await bob.send(type="join", room="vault")
        await bob.expect("joined")
        await alice.send(type="topic", room="vault", box=crypto.seal(key, "topic: the mill"))
        for i, text in enumerate(secrets):
            await alice.send(type="send", room="vault", box=crypto.seal(key, text), ref=str(i))
            await alice.expect("ack", ref=str(i))
            got = await bob.expect("message")
            assert crypto.open_box(key, got["box"]) == text
    node.stop()
    files = [p for p in node.data_dir.iterdir() if p.is_file()]
    blob = b"".join(p.read_bytes() for p in files) + node.log_path.read_bytes()
    for text in [*secrets, "the mill"]:
        for word in text.split():
            if len(word) > 4:
                assert word.encode() not in blob, word
    assert crypto.encode_key(key).encode() not in blob


async def test_the_data_directory_is_private(node: NodeProcess) -> None:
    async with user(node, "alice") as alice:
        await alice.join("lobby")
        await alice.say("lobby", "hello")
    assert stat.S_IMODE(node.data_dir.stat().st_mode) == 0o700
    for path in node.data_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


async def test_a_slow_commit_is_told_to_the_operator(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Every message waits for its commit: a commit that stalls (a disk, a checkpoint's flush)
    holds the whole node, so one over `store.SLOW_COMMIT` is logged, with no contents. Here a
    write holds its transaction open past it, as a stalled flush would."""
    from onionchat import store as store_module
    from onionchat.protocol import Message

    db = await store_module.Store.open(tmp_path / "db.sqlite3")
    try:
        room = await db.create_room("lobby", False)

        def stall(connection: Any) -> None:  # in the writer's thread, inside the transaction
            time.sleep(store_module.SLOW_COMMIT + 0.05)

        with caplog.at_level(logging.WARNING, logger="onionchat.store"):
            message = Message(id="0" * 26, room="lobby", ts=0, sender="alice", text="secret words")
            await asyncio.gather(db._write(stall), db.add_message(room.id, message))
        slow = [r for r in caplog.records if getattr(r, "event", "") == "slow_commit"]
        assert len(slow) == 1 and slow[0].writes == 2 and slow[0].seconds >= 0.25  # type: ignore[attr-defined]
        assert "secret" not in caplog.text and "alice" not in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="onionchat.store"):
            await db.add_message(
                room.id, Message(id="1" * 26, room="lobby", ts=1, sender="a", text="x")
            )
        assert not caplog.records  # a quick one says nothing
    finally:
        await db.close()
