"""Keeping order across federated nodes (issue 14): what a room's staff do on one node holds on
the others by the rules of docs/federation.md. Nodes in process (tests/inproc.py), brokers real
mosquitto processes on loopback (tests/brokers.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from brokers import brokers
from federation import Network, linked, until
from inproc import Member, member

from onionchat import ids
from onionchat.protocol import Message
from onionchat.server import Server


async def command(who: Member, line: str, room: str = "lobby", ref: str = "c") -> dict[str, Any]:
    await who.send(type="command", room=room, line=line, ref=ref)
    while True:
        frame = await who.recv()
        if frame.get("ref") == ref and frame["type"] in ("notice", "error"):
            return frame


async def _in_lobby(parts: Server, *users: str) -> list[Member]:
    joined = [await member(parts, name) for name in users]
    for m in joined:
        await m.join("lobby")
    return joined


async def _stored(parts: Server, room: str = "lobby") -> list[str]:
    history, _ = await parts.store.history(await parts.node.room(room), None, 200)
    return [f"{m.sender}: {m.text}" for m in history]


async def test_a_nodes_staff_ban_and_purge_its_own_user_on_every_node(tmp_path: Path) -> None:
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south"], [broker.url])
        async with net.all() as (north, south):
            ann, mallory = await _in_lobby(north, "ann", "mallory")  # ann: north's admin
            sam, carl = await _in_lobby(south, "sam", "carl")
            await linked([north, south])
            for i in range(3):
                await mallory.say("lobby", f"SPAM-{i}", ref=f"s{i}")

            async def spammed() -> bool:
                return len([line for line in await _stored(south) if "SPAM" in line]) == 3

            await until(spammed, what="the spam reached south")
            said = await command(ann, "/ban mallory 1h spam")
            assert said["text"] == "ann banned mallory for 1 h: spam"
            told = await carl.expect("notice")
            assert told["text"] == "ann@north banned mallory@north for 1 h: spam"
            assert south.node.authority.barred("mallory@north", (await south.node.room("lobby")).id)
            await command(ann, "/purge mallory")
            gone = await carl.expect("deleted")
            assert len(gone["ids"]) == 3 and gone["by"] == "ann@north"
            assert not [line for line in await _stored(south) if "SPAM" in line]
            for parts in (north, south):  # the words are in neither node's files
                for f in parts.settings.server.data_dir.glob("onionchat.sqlite3*"):
                    assert b"SPAM-" not in f.read_bytes(), f
            # the ids stay known (tombstones): a repair with a node that kept them brings
            # nothing back
            room = await south.node.room("lobby")
            ids = await south.store.message_ids(room.id, "", "~", 100)
            assert set(gone["ids"]) <= set(ids)

            async def audited() -> bool:
                return len(await south.store.audit("lobby", 10)) == 2

            await until(audited, what="south's audit log")
            audit = (await command(sam, "/audit"))["text"]
            assert "ann@north: ban mallory@north" in audit
            assert "ann@north: delete mallory@north (3 messages)" in audit


async def test_another_nodes_staff_act_on_this_nodes_users_only_once_named_staff_here(
    tmp_path: Path,
) -> None:
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south"], [broker.url])
        async with net.all() as (north, south):
            (ann,) = await _in_lobby(north, "ann")
            sam, carl = await _in_lobby(south, "sam", "carl")  # sam made #lobby on south
            await linked([north, south])
            hello = await carl.say("lobby", "hello from carl")
            await ann.expect("message", id=hello["id"])
            # ann may keep carl@south out of #lobby on her node...
            said = await command(ann, "/ban carl@south")
            assert said["text"] == "ann banned carl@south"
            assert south.federation is not None
            await until(
                lambda: south.federation.drops["an order by someone who is not staff here"],  # type: ignore[union-attr]
                what="south refusing north's order",
            )
            assert south.federation.drops["an order by someone who is not staff here"] == 1
            # ...but on south carl speaks on, and north no longer takes his words
            later = await carl.say("lobby", "still here", ref="l")
            await sam.expect("message", id=later["id"])
            await until(
                lambda: (
                    north.federation is not None
                    and north.federation.drops["from a user banned or muted in the room here"] >= 1
                ),
                what="north dropping carl's message",
            )
            assert "carl@south: still here" not in await _stored(north)
            # once south's owner names ann a moderator of #lobby there, her kick holds there
            await command(sam, "/op ann@north")
            assert (await command(ann, "/kick carl@south 5 noise"))["type"] == "notice"
            left = await carl.expect("left")
            assert left["reason"] == "ann@north kicked you from #lobby for 5 min: noise"
            await carl.send(type="join", room="lobby", ref="j")
            assert (await carl.expect("error", ref="j"))["code"] == "forbidden"


async def test_a_deleted_message_is_gone_on_every_node(tmp_path: Path) -> None:
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south"], [broker.url])
        async with net.all() as (north, south):
            (ann,) = await _in_lobby(north, "ann")
            (sam,) = await _in_lobby(south, "sam")
            await linked([north, south])
            oops = await sam.say("lobby", "OOPS-WRONG-ROOM")
            await ann.expect("message", id=oops["id"])
            await command(sam, f"/delete {oops['id']}")
            assert (await ann.expect("deleted"))["ids"] == [oops["id"]]
            assert not [line for line in await _stored(north) if "OOPS" in line]
            # north's admin cannot delete a message of south's on south's behalf
            kept = await sam.say("lobby", "KEPT-WORDS")
            await ann.expect("message", id=kept["id"])
            await command(ann, f"/delete {kept['id']}")
            assert south.federation is not None
            await until(
                lambda: south.federation.drops["an order by someone who is not staff here"],  # type: ignore[union-attr]
                what="south refusing the deletion",
            )
            assert "sam: KEPT-WORDS" in await _stored(south)


async def test_an_expiry_set_by_staff_of_both_nodes_deletes_old_words_on_both(
    tmp_path: Path,
) -> None:
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south"], [broker.url])
        async with net.all() as (north, south):
            (ann,) = await _in_lobby(north, "ann")
            (sam,) = await _in_lobby(south, "sam")
            await linked([north, south])
            room = await north.node.room("lobby")
            ago = int(time.time() * 1000) - 3 * 3_600_000
            old_id = ids.first_at(ago)  # an id of its time, as peers check
            old = Message(id=old_id, room="lobby", ts=ago, sender="ann", text="OLD-WORDS")
            await north.node.accept(room, old)
            await sam.expect("message", id=old_id)
            # sam owns #lobby on south, not on north: north keeps its words
            assert (await command(sam, "/mode expiry 1"))["type"] == "notice"
            assert not [line for line in await _stored(south) if "OLD-WORDS" in line]
            assert south.federation is not None and north.federation is not None
            await until(
                lambda: north.federation.drops["an order by someone who is not staff here"],  # type: ignore[union-attr]
                what="north refusing south's mode",
            )
            assert "ann: OLD-WORDS" in await _stored(north)
            # once north's owner names sam a moderator there, his expiry holds there too
            await command(ann, "/op sam@south")
            await command(sam, "/mode expiry 2", ref="e2")
            told = await ann.expect(
                "notice", text="sam@south set #lobby expiry 2; modes: messages kept 2 h"
            )
            assert told["room"] == "lobby"
            assert (await ann.expect("deleted"))["ids"] == [old_id]
            assert not [line for line in await _stored(north) if "OLD-WORDS" in line]
            for parts in (north, south):
                data_dir = parts.settings.server.data_dir
                for f in data_dir.glob("onionchat.sqlite3*"):
                    assert b"OLD-WORDS" not in f.read_bytes(), f


async def test_a_new_room_key_is_for_the_members_of_other_nodes_present_too(
    tmp_path: Path,
) -> None:
    """`who` with `all`, which a client that rotates a key asks, lists this node's members and
    the other nodes' present in the room."""
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south"], [broker.url])
        async with net.all() as (north, south):
            ann, bea = await member(north, "ann"), await member(north, "bea")
            bob = await member(south, "bob")
            await linked([north, south])
            for m in (ann, bea, bob):
                await m.join("vault", protected=True)
            await ann.expect("presence", user="bob@south")
            await bea.send(type="leave", room="vault")  # a member who left gets no new key
            await ann.send(type="who", room="vault", all=True, ref="w")
            assert (await ann.expect("who", ref="w"))["members"] == ["ann", "bob@south"]


async def test_a_node_that_comes_back_later_still_hears_of_a_deletion(tmp_path: Path) -> None:
    """Deletions are retained by the brokers: east, which kept a copy (from before, or from a
    backup) and had no session when it was deleted, deletes it when it connects."""
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south", "east"], [broker.url])
        async with net.node("north") as north, net.node("south") as south:
            await linked([north, south])
            (ann,) = await _in_lobby(north, "ann")
            (sam,) = await _in_lobby(south, "sam")
            oops = await sam.say("lobby", "OOPS-KEPT-ELSEWHERE")
            await ann.expect("message", id=oops["id"])
            copy = next(
                m
                for m, _, _ in await north.store.signed_messages(
                    await north.node.room("lobby"), [oops["id"]]
                )
            )
            await command(sam, f"/delete {oops['id']}")
            await ann.expect("deleted")
            # east, with no broker for now, holds a copy (as a node restored from a backup)
            async with net.node("east", ONIONCHAT_FEDERATION_BROKERS="") as east:
                room = await east.node.shared_room("lobby", False)
                assert await east.node.accept(room, copy, peer="south")
            async with net.node("east") as east:  # now with its broker, a session of none
                await linked([east])

                async def gone() -> bool:
                    return not [line for line in await _stored(east) if "OOPS" in line]

                await until(gone, what="east deleting what south deleted")
