"""Files (issue 15): uploaded over HTTP to a room one is in, carried by a message, read by the
room's members only, bounded per file, per user, per room and per minute, deleted with their
message, at their expiry, or unsent. A real node and real HTTP here; expiry in process."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
from brokers import brokers
from federation import Network, linked, until
from inproc import member, running

from onionchat import crypto, sealed
from onionchat.federation import envelope
from onionchat.protocol import FileRef

from conftest import NodeProcess, connect, register, upload


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_a_file_goes_to_the_room_and_its_members_only(node_factory: Any) -> None:
    node: NodeProcess = node_factory(env={"ONIONCHAT_FILES_MAX_BYTES": "100000"})
    alice, bob, eve = [await register(node, n) for n in ("alice", "bob", "eve")]
    picture = secrets.token_bytes(50_000)
    async with connect(node, alice) as a, connect(node, bob) as b, node.http() as http:
        await a.join("lobby")
        await b.join("lobby")
        sent = await upload(http, alice, "lobby", picture)
        assert sent.status_code == 201
        file = {**sent.json(), "name": "cat.png", "type": "image/png"}
        assert file["size"] == 50_000
        # not readable before a message carries it
        early = await http.get(f"/api/files/{file['id']}", params={"room": "lobby"},
                               headers=bearer(bob))  # fmt: skip
        assert early.status_code == 404
        await a.send(type="send", room="lobby", text="my cat", file=file, ref="m")
        await a.expect("ack", ref="m")
        shown = await b.expect("message", text="my cat")
        assert shown["file"] == file
        got = await http.get(f"/api/files/{file['id']}", params={"room": "lobby"},
                             headers=bearer(bob))  # fmt: skip
        assert got.status_code == 200 and got.content == picture
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"] == "attachment"
        assert "sandbox" in got.headers["content-security-policy"]
        assert got.headers["x-content-type-options"] == "nosniff"
        stored = node.data_dir / "files" / file["id"]
        assert stored.stat().st_mode & 0o777 == 0o600
        assert (node.data_dir / "files").stat().st_mode & 0o777 == 0o700

        # eve is not in the room; nobody's session: nothing
        outside = await http.get(f"/api/files/{file['id']}", params={"room": "lobby"},
                                 headers=bearer(eve))  # fmt: skip
        assert outside.status_code == 400 and outside.json()["error"] == "not_joined"
        anon = await http.get(f"/api/files/{file['id']}", params={"room": "lobby"})
        assert anon.status_code == 401
        refused = await upload(http, eve, "lobby", b"x")
        assert refused.json()["error"] == "not_joined"

        # the same upload twice, another's upload, a lie about its size: refused
        await a.send(type="send", room="lobby", text="again", file=file, ref="x1")
        assert (await a.expect("error", ref="x1"))["message"] == "that file was sent already"
        other = (await upload(http, bob, "lobby", b"bob's")).json()
        mine = {**other, "name": "b.txt", "type": "text/plain"}
        await a.send(type="send", room="lobby", text="not mine", file=mine, ref="x2")
        error = await a.expect("error", ref="x2")
        assert error["message"] == "no such upload of yours here: upload it first"
        await b.send(type="send", room="lobby", text="?", file={**mine, "size": 3}, ref="x3")
        assert (await b.expect("error", ref="x3"))["message"] == "the file has 5 bytes, not 3"
        await b.send(type="send", room="lobby", text="?", file=other, ref="x4")
        assert (await b.expect("error", ref="x4"))["message"] == (
            "a file in the clear needs its name and type"
        )

        # too big; a Content-Length that lies; no Content-Length
        big = await upload(http, alice, "lobby", b"x" * 100_001)
        assert big.status_code == 413 and big.json()["message"] == (
            "the file is too large (100,001 bytes, at most 100,000)"
        )
        assert not [p for p in (node.data_dir / "files").iterdir() if p.name != file["id"]
                    and p.name != other["id"]]  # fmt: skip

        # deleting the message deletes its file, on disk too
        await a.send(type="delete", room="lobby", id=shown["id"], ref="d")
        await b.expect("deleted")
        gone = await http.get(f"/api/files/{file['id']}", params={"room": "lobby"},
                              headers=bearer(bob))  # fmt: skip
        assert gone.status_code == 404
        assert not stored.exists()


async def test_quotas_and_the_upload_rate(node_factory: Any) -> None:
    node: NodeProcess = node_factory(
        env={
            "ONIONCHAT_FILES_MAX_BYTES": "1000",
            "ONIONCHAT_FILES_USER_BYTES": "2500",
            "ONIONCHAT_FILES_ROOM_BYTES": "4000",
            "ONIONCHAT_FILES_PER_MINUTE": "5",
        }
    )
    alice, bob = await register(node, "alice"), await register(node, "bob")
    async with connect(node, alice) as a, connect(node, bob) as b, node.http() as http:
        await a.join("lobby")
        await b.join("lobby")
        statuses = [(await upload(http, alice, "lobby", b"x" * 1000)).status_code for _ in range(3)]
        assert statuses == [201, 201, 413]  # 2,000 kept: a third would be 3,000 > 2,500
        last = await upload(http, alice, "lobby", b"x" * 1000)
        assert last.json()["message"].startswith("you keep 2.0 KiB of files here, at most 2.4 KiB")
        bobs = [(await upload(http, bob, "lobby", b"y" * 1000)).status_code for _ in range(3)]
        assert bobs == [201, 201, 413]  # the room's 4,000 are full
        assert "this room keeps" in (await upload(http, bob, "lobby", b"y")).json()["message"]
        rate = [(await upload(http, bob, "lobby", b"z")).status_code for _ in range(6)]
        assert 429 in rate  # past five a minute (the refusals above counted too)


async def test_a_sealed_file_is_ciphertext_to_the_node_and_named_only_in_the_box(
    node: NodeProcess,
) -> None:
    room_key, file_key = crypto.new_room_key(), crypto.new_room_key()
    secret, _ = crypto.new_identity()
    signer = sealed.signing_key(secret)
    plain = b"the floor plan, in bytes"
    ciphertext = crypto.seal_file(file_key, plain)
    alice = await register(node, "alice")
    async with connect(node, alice) as a, node.http() as http:
        await a.join("vault", protected=True)
        sent = (await upload(http, alice, "vault", ciphertext)).json()
        descriptor = {"id": sent["id"], "name": "plan.pdf", "type": "application/pdf",
                      "size": sent["size"], "key": crypto.encode_key(file_key)}  # fmt: skip
        box = sealed.seal_body(room_key, signer, room="vault", sender="alice", kind="message",
                               text="plan.pdf", file=descriptor)  # fmt: skip
        named = {**sent, "name": "plan.pdf", "type": "application/pdf"}
        await a.send(type="send", room="vault", box=box, file=named, ref="n")
        assert (await a.expect("error", ref="n"))["message"] == (
            "a sealed file's name and type go in the box"
        )
        await a.send(type="send", room="vault", box=box, file=sent, ref="m")
        await a.expect("ack", ref="m")
        shown = await a.expect("message", file=sent)
        body = sealed.open_body([room_key], shown["box"])
        body.check_file(msgspec.convert(shown["file"], FileRef))
        got = await http.get(f"/api/files/{sent['id']}", params={"room": "vault"},
                             headers=bearer(alice))  # fmt: skip
        assert body.file is not None
        assert crypto.open_file(crypto.decode_key(body.file["key"]), got.content) == plain
    raw = b"".join(p.read_bytes() for p in node.data_dir.rglob("*") if p.is_file())
    assert b"floor plan" not in raw and b"plan.pdf" not in raw


async def test_unsent_uploads_and_old_files_expire(tmp_path: Path) -> None:
    async with running(tmp_path / "node", {"ONIONCHAT_FILES_DAYS": "1"}) as parts:
        ann = await member(parts, "ann")
        await ann.join("lobby")
        room = await parts.node.room("lobby")

        async def body(data: bytes) -> Any:
            yield data

        files = parts.node.files
        unsent = await files.put(room, "ann", 3, body(b"abc"))
        sent = await files.put(room, "ann", 3, body(b"def"))
        fresh = await files.put(room, "ann", 3, body(b"ghi"))
        ref = {"id": sent, "size": 3, "name": "d.txt", "type": "text/plain"}
        await ann.send(type="send", room="lobby", text="d", file=ref, ref="m")
        await ann.expect("ack", ref="m")
        hour, day = 3601, 86401
        with sqlite3.connect(tmp_path / "node" / "onionchat.sqlite3") as db:
            db.execute("UPDATE files SET created = created - ? WHERE id = ?", (hour, unsent))
            db.execute("UPDATE files SET created = created - ? WHERE id = ?", (day, sent))
        assert await files.expire() == 2
        assert not files.path(unsent).exists() and not files.path(sent).exists()
        assert files.path(fresh).exists()
        assert await files.readable(room, sent) is None


async def test_a_file_is_brought_from_its_writers_node_when_someone_opens_it(
    tmp_path: Path,
) -> None:
    """Nothing is pushed: south asks north for ann's file the first time bob opens it, and
    keeps it; north answers only for a file written there, of a room it shares; the file goes
    with its message on both nodes."""
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south"], [broker.url])
        async with net.all() as (north, south):
            ann, bob = await member(north, "ann"), await member(south, "bob")
            await ann.join("lobby")
            await bob.join("lobby")
            await linked([north, south])
            data = secrets.token_bytes(300_000)  # four chunks

            async def body() -> Any:
                yield data

            there = await north.node.room("lobby")
            file_id = await north.node.files.put(there, "ann", len(data), body())
            ref = {"id": file_id, "size": len(data), "name": "big.bin", "type": "application/zip"}
            await ann.send(type="send", room="lobby", text="big.bin", file=ref, ref="m")
            sent = await ann.expect("ack", ref="m")
            got = await bob.expect("message", id=sent["id"], timeout=20)
            assert got["file"] == ref and got["sender"] == "ann@north"
            here = await south.node.room("lobby")
            assert not south.node.files.path(file_id).exists()  # not pushed
            path = await south.node.file_path(here, file_id)
            assert path is not None and path.read_bytes() == data
            assert path.stat().st_mode & 0o777 == 0o600
            assert not list(south.node.files.directory.glob("*.part"))
            assert await south.node.file_path(here, file_id) == path  # kept: not asked again

            # bob's own file is south's: north will not send it for south
            assert south.federation is not None and north.federation is not None
            mine = await south.node.files.put(here, "bob", 3, _bytes(b"abc"))
            want = envelope.WantBody(origin="south", to="north", room="lobby", file=mine, ts=0)
            await south.federation.fetcher._send("north", south.federation._sealed(want))
            drops = north.federation.drops
            await until(lambda: drops["a file wanted that is not one written here"] == 1)

            await ann.send(type="delete", room="lobby", id=sent["id"], ref="d")
            await bob.expect("deleted", timeout=20)
            await until(lambda: not path.exists(), what="south deleting the file too")


async def _bytes(data: bytes) -> Any:
    yield data


async def test_a_file_in_a_conversation_across_nodes_is_brought_too(tmp_path: Path) -> None:
    """ann on north sends bob on south a file in their conversation: south asks north for it
    under north's name of the conversation; north sends it to south alone, for south has a part
    in it, and to no third node."""
    with brokers(tmp_path, 1) as (broker,):
        net = Network(tmp_path, ["north", "south", "east"], [broker.url])
        async with net.all() as (north, south, east):
            ann, bob = await member(north, "ann"), await member(south, "bob")
            await linked([north, south, east])
            await ann.send(type="send", to="bob@south", text="hi", ref="h")
            first = await ann.expect("ack", ref="h")
            await bob.expect("message", id=first["id"], timeout=20)
            here = await north.store.room(first["room"])
            assert here is not None
            data = secrets.token_bytes(150_000)
            file_id = await north.node.files.put(here, "ann", len(data), _bytes(data))
            ref = {"id": file_id, "size": len(data), "name": "map.png", "type": "image/png"}
            await ann.send(type="send", to="bob@south", text="map.png", file=ref, ref="f")
            sent = await ann.expect("ack", ref="f")
            got = await bob.expect("message", id=sent["id"], timeout=20)
            there = await south.store.room(got["room"])
            assert there is not None and got["file"] == ref
            path = await south.node.file_path(there, file_id)
            assert path is not None and path.read_bytes() == data

            # east has no part in it: north will not send it there
            assert east.federation is not None and north.federation is not None
            want = envelope.WantBody(origin="east", to="north", room=first["room"],
                                     file=file_id, ts=0)  # fmt: skip
            await east.federation._to_node("north", east.federation._sealed(want))
            drops = north.federation.drops
            reason = "a file wanted of a conversation the asker has no part in"
            await until(lambda: drops[reason] == 1, what=reason)
