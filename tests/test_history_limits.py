"""History pages are the costliest thing a client can ask for (up to `limits.history_bytes`
read and encoded each): a user gets `limits.history_rate` of them a second over all their
connections, with a burst for scrolling back; past it a clear refusal, the connection lives on,
and another user's pages are not touched. In process (tests/inproc.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from inproc import Member, connection, member, running

from onionchat.node import Refused


async def test_history_pages_past_the_rate_are_refused_and_nobody_else_is_slowed(
    tmp_path: Path,
) -> None:
    env = {"ONIONCHAT_LIMITS_HISTORY_RATE": "1", "ONIONCHAT_LIMITS_RATE": "1000"}
    async with running(tmp_path / "node", env) as parts:
        mallory = await member(parts, "mallory")
        second = await connection(parts, mallory.token)
        alice = await member(parts, "alice")
        for person in (mallory, second, alice):
            await person.join("lobby")
        await alice.say("lobby", "something to page through")
        # a burst of 10 pages, over both of mallory's connections: her two joins had 2 of them
        for n in range(12):
            await (mallory if n % 2 else second).send(type="history", room="lobby", ref=f"h{n}")
        for n in range(12):
            person = mallory if n % 2 else second
            frame = await person.expect("history" if n < 8 else "error", ref=f"h{n}")
            assert n < 8 or frame["code"] == "rate_limited"
        refusal = frame
        assert "at most 1 history pages a second" in refusal["message"]
        await mallory.send(type="ping", ref="alive")
        await mallory.expect("pong", ref="alive")
        await alice.send(type="history", room="lobby", ref="mine")
        page = await alice.expect("history", ref="mine")
        assert [m["text"] for m in page["messages"]] == ["something to page through"]


async def test_joins_past_the_rate_come_without_their_page(tmp_path: Path) -> None:
    """A join's first page costs what any page does: past the burst a join still succeeds,
    without its page and with `more` set, for the client to page in later."""
    env = {"ONIONCHAT_LIMITS_HISTORY_RATE": "1", "ONIONCHAT_LIMITS_JOIN_RATE": "1000"}
    async with running(tmp_path / "node", env) as parts:
        alice = await member(parts, "alice")
        rooms = [f"room{n}" for n in range(12)]
        for room in rooms:
            await alice.join(room)
            await alice.say(room, f"hello {room}", ref=room)
        bob = await member(parts, "bob")
        joined = [await bob.join(room) for room in rooms]
        assert all(j["history"] and not j["more"] for j in joined[:10])
        for j in joined[10:]:
            assert j["history"] == [] and j["more"] is True
            assert j["members"] == ["alice", "bob"]


async def test_asking_on_past_the_refusals_closes_the_connection_as_flooding(
    tmp_path: Path,
) -> None:
    """A refusal is cheap, but a client that never stops asking makes the node refuse for
    ever: past `limits.flood_strikes` refusals in ten seconds it is closed (4008) and its
    user kept out for `limits.flood_penalty`, while others page on."""
    env = {
        "ONIONCHAT_LIMITS_HISTORY_RATE": "0.5",
        "ONIONCHAT_LIMITS_RATE": "1000",
        "ONIONCHAT_LIMITS_FLOOD_STRIKES": "20",
    }
    async with running(tmp_path / "node", env) as parts:
        mallory = await member(parts, "mallory")
        alice = await member(parts, "alice")
        for person in (mallory, alice):
            await person.join("lobby")
        await alice.say("lobby", "still here")
        for n in range(40):
            await mallory.send(type="history", room="lobby", ref=f"h{n}")
        refused = [f for f in mallory.seen + await _all(mallory) if f.get("code") == "rate_limited"]
        assert 19 <= len(refused) <= 21
        assert mallory.conn.close_code == 4008
        assert "flooding" in mallory.conn.close_reason
        parts.node.disconnect(mallory.conn)
        with pytest.raises(Refused, match="mallory may connect again in 30 s"):
            await connection(parts, mallory.token)
        await alice.send(type="history", room="lobby", ref="mine")
        page = await alice.expect("history", ref="mine")
        assert [m["text"] for m in page["messages"]] == ["still here"]


async def _all(person: Member) -> list[dict[str, Any]]:
    """What is still queued for a connection the node has closed."""
    return [json.loads(frame) for frame in person.conn.take()]
