"""History pages are the costliest thing a client can ask for (up to `limits.history_bytes`
read and encoded each): a user gets `limits.history_rate` of them a second over all their
connections, with a burst for scrolling back; past it a clear refusal, the connection lives on,
and another user's pages are not touched. In process (tests/inproc.py)."""

from __future__ import annotations

from pathlib import Path

from inproc import connection, member, running


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
