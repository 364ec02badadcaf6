"""Replies, edits, reactions and deletions of one's own messages (issue 15): stored, checked by
the node as far as it can read them, sealed in key-protected rooms, carried to other nodes.
One real node and raw clients here; federation at the end (nodes in process, real mosquitto)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from brokers import brokers
from federation import Network, history, linked, until
from inproc import Member, member
from test_federation import raw_client

from onionchat import crypto, sealed
from onionchat.federation import envelope
from onionchat.ids import IdGenerator
from onionchat.protocol import Message
from onionchat.server import Server

from conftest import Client, NodeProcess, user


async def refused(who: Client | Member, ref: str, **frame: Any) -> dict[str, Any]:
    await who.send(ref=ref, **frame)
    return await who.expect("error", ref=ref)


async def test_a_reply_an_edit_and_reactions_reach_everyone_and_stay(node: NodeProcess) -> None:
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await alice.join("lobby")
        await bob.join("lobby")
        first = await alice.say("lobby", "meet at five?", ref="q")
        await alice.send(type="send", room="lobby", text="at six, sorry", edit=first["id"], ref="e")
        edit = await alice.expect("ack", ref="e")
        shown = await bob.expect("message", id=edit["id"])
        assert shown["edit"] == first["id"] and shown["text"] == "at six, sorry"
        await bob.send(type="send", room="lobby", text="fine by me", reply=first["id"], ref="r")
        reply = await bob.expect("ack", ref="r")
        assert (await alice.expect("message", id=reply["id"]))["reply"] == first["id"]
        await bob.send(type="send", room="lobby", text="👍", react=first["id"], ref="t")
        thumb = await bob.expect("ack", ref="t")
        assert (await alice.expect("message", id=thumb["id"]))["react"] == first["id"]

        # what each may not do, said plainly, and the connection lives on
        said = await refused(
            bob, "x1", type="send", room="lobby", text="mine now", edit=first["id"]
        )
        assert said == {
            **said,
            "code": "forbidden",
            "message": "you can edit your own messages only",
        }
        said = await refused(bob, "x2", type="send", room="lobby", text="👍", react=first["id"])
        assert said["code"] == "conflict" and said["message"] == "you reacted with 👍 already"
        said = await refused(bob, "x3", type="send", room="lobby", text="lol", react=first["id"])
        assert said["code"] == "bad_body" and said["message"].startswith("a reaction is one of 👍")
        said = await refused(alice, "x4", type="send", room="lobby", text="?", reply=thumb["id"])
        assert said["message"] == "a reply is about a message, not an edit or a reaction"
        nowhere = "01M870CN8N8D8H7XC83M91XZ81"
        said = await refused(alice, "x5", type="send", room="lobby", text="?", reply=nowhere)
        assert said == {
            **said,
            "code": "unknown_message",
            "message": f"#lobby has no message {nowhere}",
        }
        said = await refused(
            alice, "x6", type="send", room="lobby", text="?", reply=first["id"], edit=first["id"]
        )
        assert said["message"] == "give at most one of reply, edit and react"
        said = await refused(alice, "x7", type="send", room="lobby", text="?", reply="../../etc")
        assert said["code"] == "bad_frame"
        await alice.send(type="join", room="other", create=True, ref="j")
        await alice.expect("joined")
        said = await refused(alice, "x8", type="send", room="other", text="?", reply=first["id"])
        assert said["message"] == f"#other has no message {first['id']}"  # nor across rooms
        assert (await alice.say("lobby", "still here", ref="ok"))["type"] == "ack"

    async with user(node, "carol") as carol:
        joined = await carol.join("lobby")
        kinds = {
            m["text"]: {k for k in ("reply", "edit", "react") if k in m} for m in joined["history"]
        }
        assert kinds == {
            "meet at five?": set(),
            "at six, sorry": {"edit"},
            "fine by me": {"reply"},
            "👍": {"react"},
            "still here": set(),
        }


async def test_deleting_a_message_takes_its_edits_and_reactions_not_its_replies(
    node: NodeProcess,
) -> None:
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await alice.join("lobby")
        await bob.join("lobby")
        first = await alice.say("lobby", "a regrettable thing")
        await alice.send(type="send", room="lobby", text="a worse thing", edit=first["id"], ref="e")
        edit = await alice.expect("ack", ref="e")
        await bob.send(type="send", room="lobby", text="😮", react=first["id"], ref="t")
        thumb = await bob.expect("ack", ref="t")
        await bob.send(type="send", room="lobby", text="really?", reply=first["id"], ref="r")
        reply = await bob.expect("ack", ref="r")

        said = await refused(bob, "d0", type="delete", room="lobby", id=first["id"])
        assert said["code"] == "forbidden"  # bob is no staff here
        await bob.send(type="delete", room="lobby", id=thumb["id"], ref="unreact")
        assert (await alice.expect("deleted"))["ids"] == [thumb["id"]]  # a reaction taken back
        await alice.send(type="delete", room="lobby", id=first["id"], ref="d")
        gone = await bob.expect("deleted", by="alice")
        assert gone == {**gone, "ids": sorted([first["id"], edit["id"]]), "by": "alice"}
        said = await refused(alice, "d2", type="send", room="lobby", text="!", reply=first["id"])
        assert said == {**said, "code": "unknown_message", "message": "that message was deleted"}
        said = await refused(alice, "d3", type="delete", room="lobby", id=first["id"])
        assert said["code"] == "unknown_message"
        await bob.send(type="history", room="lobby", ref="h")
        left = (await bob.expect("history", ref="h"))["messages"]
        assert [(m["id"], m.get("reply")) for m in left] == [(reply["id"], first["id"])]


async def test_in_a_conversation_both_edit_react_reply_and_delete_their_own(
    node: NodeProcess,
) -> None:
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await alice.send(type="send", to="bob", text="hi bob", ref="m")
        ack = await alice.expect("ack", ref="m")
        room = ack["room"]
        await bob.expect("message", id=ack["id"])
        await bob.send(type="send", to="alice", text="❤️", react=ack["id"], ref="t")
        thumb = await bob.expect("ack", ref="t")
        assert (await alice.expect("message", id=thumb["id"]))["react"] == ack["id"]
        await alice.send(type="send", to="bob", text="hi Bob", edit=ack["id"], ref="e")
        assert (await bob.expect("message", edit=ack["id"]))["text"] == "hi Bob"
        said = await refused(bob, "x", type="delete", room=room, id=ack["id"])
        assert said == {
            **said,
            "code": "forbidden",
            "message": "you can delete your own messages only",
        }
        await alice.send(type="delete", room=room, id=ack["id"], ref="d")
        gone = await bob.expect("deleted")
        assert gone["room"] == room and ack["id"] in gone["ids"] and thumb["id"] in gone["ids"]
    async with user(node, "eve") as eve:
        said = await refused(eve, "e", type="delete", room=room, id=ack["id"])
        assert said["message"] == "that conversation is not yours"


async def test_in_a_key_protected_room_the_box_says_what_it_is_about(node: NodeProcess) -> None:
    """The node cannot read a sealed edit or reaction: the box itself says it is one, and about
    which message, signed; a box moved onto another message is rejected by every reader."""
    key = crypto.new_room_key()
    secret, _ = crypto.new_identity()
    signer = sealed.signing_key(secret)
    async with user(node, "alice") as alice:
        await alice.join("vault", protected=True)
        box = sealed.seal_body(key, signer, room="vault", sender="alice", kind="message", text="v1")
        await alice.send(type="send", room="vault", box=box, ref="m")
        first = await alice.expect("ack", ref="m")
        again = sealed.seal_body(
            key, signer, room="vault", sender="alice", kind="message", text="w"
        )
        await alice.send(type="send", room="vault", box=again, ref="m2")
        other = await alice.expect("ack", ref="m2")
        edit = sealed.seal_body(
            key, signer, room="vault", sender="alice", kind="edit", text="v2", re=first["id"]
        )
        await alice.send(type="send", room="vault", box=edit, edit=first["id"], ref="e")
        shown = await alice.expect("message", edit=first["id"])
        body = sealed.open_body([key], shown["box"])
        kind, about = sealed.kind_of(
            Message(**{k: v for k, v in shown.items() if k not in ("type", "v")})
        )
        body.check("vault", "alice", kind, shown["ts"], about)
        assert (kind, about, body.text) == ("edit", first["id"], "v2")
        assert body.verify(bytes(signer.verify_key))
        # the same box shown as an edit of the other message: rejected
        with pytest.raises(sealed.Rejected, match="about another message"):
            body.check("vault", "alice", "edit", shown["ts"], other["id"])
        with pytest.raises(sealed.Rejected, match="as a edit, not as a message"):
            body.check("vault", "alice", "message", shown["ts"])
        # a reaction's box is small: a long one is refused
        long = sealed.seal_body(
            key,
            signer,
            room="vault",
            sender="alice",
            kind="reaction",
            text="x" * 2000,
            re=first["id"],
        )
        said = await refused(alice, "big", type="send", room="vault", box=long, react=first["id"])
        assert said["code"] == "bad_ciphertext"


@dataclasses.dataclass
class Linked:
    """Two nodes of one network, a user on each."""

    net: Network
    broker: str
    north: Server
    south: Server
    ann: Member
    bob: Member


@contextlib.asynccontextmanager
async def north_and_south(tmp_path: Path, *rooms: str) -> AsyncIterator[Linked]:
    """ann on north, bob on south, in `rooms`, the two nodes linked through one broker."""
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south"], [broker.url])
        async with net.all() as (north, south):
            ann, bob = await member(north, "ann"), await member(south, "bob")
            for room in rooms:
                await ann.join(room)
                await bob.join(room)
            await linked([north, south])
            yield Linked(net, broker.url, north, south, ann, bob)


async def test_edits_reactions_and_deletions_reach_every_node(tmp_path: Path) -> None:
    async with north_and_south(tmp_path, "lobby") as both:
        north, south, ann, bob = both.north, both.south, both.ann, both.bob
        first = await ann.say("lobby", "lunch at noon", ref="q")
        await bob.expect("message", id=first["id"])
        await ann.send(type="send", room="lobby", text="lunch at one", edit=first["id"], ref="e")
        edit = await ann.expect("ack", ref="e")
        got = await bob.expect("message", id=edit["id"])
        assert (got["sender"], got["edit"], got["text"]) == (
            "ann@north",
            first["id"],
            "lunch at one",
        )
        await bob.send(type="send", room="lobby", text="🎉", react=first["id"], ref="t")
        thumb = await bob.expect("ack", ref="t")
        got = await ann.expect("message", id=thumb["id"])
        assert (got["sender"], got["react"]) == ("bob@south", first["id"])
        await bob.send(type="send", room="lobby", text="see you", reply=first["id"], ref="r")
        reply = await bob.expect("ack", ref="r")
        assert (await ann.expect("message", id=reply["id"]))["reply"] == first["id"]

        await ann.send(type="delete", room="lobby", id=first["id"], ref="d")
        gone = await bob.expect("deleted", timeout=20)
        assert set(gone["ids"]) == {first["id"], edit["id"], thumb["id"]}

        async def only_the_reply_left() -> bool:
            return [t for _, _, t in await history(south, "lobby")] == ["see you"]

        await until(only_the_reply_left, what="south deleting the message and its kin")
        assert [t for _, _, t in await history(north, "lobby")] == ["see you"]


async def test_an_edit_in_another_writers_name_from_another_node_is_dropped(
    tmp_path: Path,
) -> None:
    """A node vouches for its own users' words only: an edit that south signs as bob's, of
    ann's message, is dropped by north, which holds ann's message; one of bob's own is taken."""
    async with north_and_south(tmp_path, "lobby") as both:
        net, north, south, ann, bob = both.net, both.north, both.south, both.ann, both.bob
        first = await ann.say("lobby", "my words", ref="q")
        await bob.expect("message", id=first["id"])
        said = await refused(bob, "x", type="send", room="lobby", text="mine", edit=first["id"])
        assert said["code"] == "forbidden"  # south's own clients are refused at once
        assert south.federation is not None and north.federation is not None
        network = base64.b64decode(net.secret)
        topic = envelope.topic("onionchat", "south", "m", envelope.room_tag(network, "lobby"))
        made = IdGenerator()

        def item(text: str, edit: str) -> bytes:
            id_, ts = made.next()
            body = envelope.MessageBody(
                origin="south", room="lobby", protected=False, id=id_, ts=ts,
                sender="bob", text=text, edit=edit,
            )  # fmt: skip
            return envelope.signed(body, south.federation.key)  # type: ignore[union-attr]

        bobs = await bob.say("lobby", "bob's words", ref="b")
        await ann.expect("message", id=bobs["id"])
        async with await raw_client(both.broker, identifier="south-gone-bad") as bad:
            await bad.publish(
                topic,
                envelope.seal(
                    [item("ann's words, changed", edit=first["id"]),
                     item("bob's words, mended", edit=bobs["id"])],
                    network,
                ),
                qos=1,
            )  # fmt: skip
        mended = await ann.expect("message", edit=bobs["id"])
        assert mended["text"] == "bob's words, mended"
        drops = north.federation.drops
        await until(lambda: drops.get("refused as a client's would be (forbidden)") == 1)
        stored = [t for _, _, t in await history(north, "lobby")]
        assert "ann's words, changed" not in stored and "bob's words, mended" in stored


async def test_a_deletion_in_a_conversation_across_nodes_reaches_the_other_node(
    tmp_path: Path,
) -> None:
    """ann on north deletes her own direct message to bob on south: gone on both nodes; an
    order from south to delete ann's words is nothing on north (a node answers for its own
    users only)."""
    async with north_and_south(tmp_path) as both:
        north, south, ann, bob = both.north, both.south, both.ann, both.bob
        sent = {}
        for text in ("oops, wrong person", "this stays"):
            await ann.send(type="send", to="bob@south", text=text, ref=text)
            sent[text] = await ann.expect("ack", ref=text)
            got = await bob.expect("message", id=sent[text]["id"], timeout=20)
        oops, stays = sent["oops, wrong person"], sent["this stays"]

        await bob.send(type="delete", room=got["room"], id=stays["id"], ref="x")
        said = await bob.expect("error", ref="x")
        assert said["message"] == "you can delete your own messages only"
        assert south.federation is not None
        forged = envelope.OrderBody(
            origin="south", room=stays["room"], act="delete", by="bob", target="ann",
            ts=0, ids=(stays["id"],),
        )  # fmt: skip
        await south.federation._to_node("north", south.federation._sealed(forged))
        # on the same topic after it: once this is there, so was the order
        await bob.send(type="send", to="ann@north", text="after the order", ref="k")
        await ann.expect("message", text="after the order", timeout=20)

        await ann.send(type="delete", room=oops["room"], id=oops["id"], ref="del")
        assert (await ann.expect("deleted"))["ids"] == [oops["id"]]
        gone = await bob.expect("deleted", timeout=20)
        assert gone == {**gone, "room": got["room"], "ids": [oops["id"]], "by": "ann@north"}

        async def left(parts: Any, room: str) -> list[str | None]:
            stored, _ = await parts.store.history(await parts.store.room(room), None, 10)
            return [m.text for m in stored]

        assert await left(south, got["room"]) == ["this stays", "after the order"]
        assert await left(north, oops["room"]) == ["this stays", "after the order"]
