"""Identity keys and sealed invitations, as two users' clients would use them (PyNaCl here,
byte-compatible with the browser's tweetnacl)."""

from __future__ import annotations

import base64
import sqlite3

from onionchat import crypto

from conftest import PASSWORD, NodeProcess, connect, register, user


async def test_the_identity_key_follows_the_account_and_the_node_cannot_read_it(
    node: NodeProcess,
) -> None:
    token = await register(node, "alice")
    salt = base64.urlsafe_b64decode(b"A" * 22 + b"==")  # any salt: the wrap is client-side
    wrapping = crypto.wrapping_key(PASSWORD, salt, 1000)
    secret, public = crypto.new_identity()
    published = {
        "public": base64.b64encode(public).decode(),
        "wrapped": crypto.wrap_identity(wrapping, secret),
    }
    async with connect(node, token) as laptop:
        assert "identity" not in laptop.seen[-1]
        await laptop.send(type="identity", ref="id", **published)
        assert (await laptop.expect("identity", ref="id"))["public"] == published["public"]
    async with connect(node, token) as phone:  # a second device restores it
        keys = phone.seen[-1]["identity"]
        assert keys == published
        assert crypto.unwrap_identity(wrapping, keys["wrapped"]) == secret
    node.stop()
    with sqlite3.connect(node.data_dir / "onionchat.sqlite3") as db:
        stored = b"".join(bytes(str(row), "utf-8") for row in db.execute("SELECT * FROM users"))
    assert secret.hex().encode() not in stored and base64.b64encode(secret) not in stored


async def test_a_sealed_invitation_brings_the_room_key(node: NodeProcess) -> None:
    room_key = crypto.new_room_key()
    bob_secret, bob_public = crypto.new_identity()
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await bob.send(
            type="identity",
            public=base64.b64encode(bob_public).decode(),
            wrapped=crypto.wrap_identity(crypto.new_room_key(), bob_secret),
        )
        await bob.expect("identity")
        await alice.join("vault", protected=True)
        await alice.send(type="key", user="BOB", ref="k")
        key = await alice.expect("key", ref="k")
        assert key["user"] == "bob"
        sealed = crypto.seal_room_key(room_key, base64.b64decode(key["public"]))
        await alice.send(type="invite", room="vault", to="bob", sealed=sealed, ref="i")
        assert "invited bob" in (await alice.expect("notice", ref="i"))["text"]
        invited = await bob.expect("invited")
        assert invited["room"] == "vault" and invited["sender"] == "alice"
        assert crypto.open_room_key(invited["sealed"], bob_secret) == room_key

        # bob can now read what alice seals with the room key
        await bob.send(type="join", room="vault")
        await bob.expect("joined")
        await alice.send(type="send", room="vault", box=crypto.seal(room_key, "welcome, bob"))
        got = await bob.expect("message")
        assert crypto.open_box(crypto.open_room_key(invited["sealed"], bob_secret), got["box"])

        # refused: an open room, a stranger, a malformed seal, a user without a key
        await alice.join("lobby")
        await alice.send(type="invite", room="lobby", to="bob", sealed=sealed, ref="o")
        assert (await alice.expect("error", ref="o"))["code"] == "room_mode"
        await alice.send(type="invite", room="vault", to="nobody", sealed=sealed, ref="n")
        assert (await alice.expect("error", ref="n"))["code"] == "unknown_user"
        await alice.send(type="invite", room="vault", to="bob", sealed="AAAA", ref="s")
        error = await alice.expect("error", ref="s")
        assert error["code"] == "bad_ciphertext" and "104 bytes" in error["message"]
        await bob.send(type="key", user="alice", ref="nk")
        error = await bob.expect("error", ref="nk")
        assert error["code"] == "no_key" and "alice has no identity key" in error["message"]


async def test_invitations_wait_for_the_invitee(node: NodeProcess) -> None:
    bob_token = await register(node, "bob")
    bob_secret, bob_public = crypto.new_identity()
    room_key = crypto.new_room_key()
    async with user(node, "alice") as alice:
        await alice.join("vault", protected=True)
        sealed = crypto.seal_room_key(room_key, bob_public)
        await alice.send(type="invite", room="vault", to="bob", sealed=sealed, ref="i")
        await alice.expect("notice", ref="i")
    async with connect(node, bob_token) as bob:  # offline then: the invitation waited
        (waiting,) = bob.seen[-1]["invitations"]
        assert waiting["room"] == "vault" and waiting["sender"] == "alice"
        assert crypto.open_room_key(waiting["sealed"], bob_secret) == room_key
