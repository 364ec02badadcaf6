"""What the node does for keys that hold against insiders: signing keys published and answered,
an invitation never replaced by another member's, keyrings kept per account with versions, no
new room made over an existing one, topics that only a sealed box changes, and a bot key that
the database alone does not hold."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import stat
from typing import Any

import pytest

from onionchat import crypto, sealed

from conftest import NodeProcess, connect, register, user


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def enter(client: Any, room: str) -> dict[str, Any]:
    """Join an existing room whatever its mode, as a member without its key would."""
    await client.send(type="join", room=room)
    joined: dict[str, Any] = await client.expect("joined")
    return joined


def identity_frame(secret: bytes, wrapping: bytes | None = None) -> dict[str, str]:
    return {
        "public": b64(crypto.public_of(secret)),
        "wrapped": crypto.wrap_identity(wrapping or crypto.new_room_key(), secret),
        "signing": b64(sealed.signing_public(secret)),
    }


async def test_the_signing_key_is_published_with_the_identity_and_answered(
    node: NodeProcess,
) -> None:
    secret, _ = crypto.new_identity()
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await alice.send(type="identity", ref="id", **identity_frame(secret))
        echoed = await alice.expect("identity", ref="id")
        assert echoed["signing"] == b64(sealed.signing_public(secret))
        await bob.send(type="key", user="ALICE", ref="k")
        answer = await bob.expect("key", ref="k")
        assert answer["signing"] == echoed["signing"]
        await alice.send(type="identity", ref="bad", **identity_frame(secret) | {"signing": "AA=="})
        error = await alice.expect("error", ref="bad")
        assert error["code"] == "bad_ciphertext" and "signing key" in error["message"]


async def test_another_members_invitation_does_not_replace_the_real_one(
    node: NodeProcess,
) -> None:
    room_key, forged = crypto.new_room_key(), crypto.new_room_key()
    bob_secret, _ = crypto.new_identity()
    alice_secret, _ = crypto.new_identity()
    mallory_secret, _ = crypto.new_identity()
    bob_public = crypto.public_of(bob_secret)
    bob_token = await register(node, "bob")
    async with (
        user(node, "alice") as alice,
        connect(node, bob_token) as bob,
        user(node, "mallory") as mallory,
    ):
        await bob.send(type="identity", **identity_frame(bob_secret))
        await bob.expect("identity")
        await alice.join("vault", protected=True)
        await enter(mallory, "vault")
        real = sealed.seal_invitation(
            room_key,
            bob_public,
            sealed.signing_key(alice_secret),
            room="vault",
            sender="alice",
            to="bob",
        )
        fake = sealed.seal_invitation(
            forged,
            bob_public,
            sealed.signing_key(mallory_secret),
            room="vault",
            sender="alice",
            to="bob",  # claims to be alice's: the signature says otherwise
        )
        await alice.send(type="invite", room="vault", to="bob", sealed=real, ref="a")
        await alice.expect("notice", ref="a")
        await mallory.send(type="invite", room="vault", to="bob", sealed=fake, ref="m")
        await mallory.expect("notice", ref="m")
        assert (await bob.expect("invited"))["sender"] == "alice"
        assert (await bob.expect("invited"))["sender"] == "mallory"
    async with connect(node, bob_token) as bob:  # every ready lists both, under their inviters
        listed = {i["sender"]: i["sealed"] for i in bob.seen[-1]["invitations"]}
    assert listed == {"alice": real, "mallory": fake}
    opened = sealed.open_invitation(listed["alice"], bob_secret)
    assert opened.key == room_key and opened.verify(sealed.signing_public(alice_secret))
    lie = sealed.open_invitation(listed["mallory"], bob_secret)
    assert not lie.verify(sealed.signing_public(alice_secret))  # mallory's, not alice's


async def test_a_keyring_follows_the_account_and_two_devices_cannot_overwrite_each_other(
    node: NodeProcess,
) -> None:
    wrapping = crypto.new_room_key()
    first, second = sealed.Keyring(), sealed.Keyring()
    first.add("vault", crypto.new_room_key())
    second.add("plans", crypto.new_room_key())
    token = await register(node, "alice")
    async with connect(node, token) as laptop:
        assert "keyring" not in laptop.seen[-1]
        async with connect(node, token) as phone:
            await laptop.send(type="keyring", sealed=first.seal(wrapping), version=1, ref="l")
            assert (await laptop.expect("keyring", ref="l"))["version"] == 1
            pushed = await phone.expect("keyring")  # the other device hears of it at once
            assert sealed.Keyring.open(wrapping, pushed["sealed"]).rooms == first.rooms
            # The phone had not seen version 1 yet: its version 1 is refused, not stored.
            await phone.send(type="keyring", sealed=second.seal(wrapping), version=1, ref="p")
            latest = sealed.Keyring.open(wrapping, (await phone.expect("keyring"))["sealed"])
            error = await phone.expect("error", ref="p")  # after the latest, to merge with
            assert error["code"] == "conflict" and "version 2" in error["message"]
            latest.merge(second)
            await phone.send(type="keyring", sealed=latest.seal(wrapping), version=2, ref="p2")
            assert (await phone.expect("keyring", ref="p2"))["version"] == 2
    async with connect(node, token) as fresh:
        kept = fresh.seen[-1]["keyring"]
    assert kept["version"] == 2
    assert set(sealed.Keyring.open(wrapping, kept["sealed"]).rooms) == {"vault", "plans"}
    async with user(node, "bob") as bob:
        assert "keyring" not in bob.seen[-1]  # keyrings are per account


async def test_a_new_room_is_never_made_over_an_existing_one(node: NodeProcess) -> None:
    async with user(node, "alice") as alice, user(node, "bob") as bob:
        await alice.join("vault", protected=True)
        await alice.join("lobby")
        for room in ("vault", "LOBBY"):
            await bob.send(type="join", room=room, new=True, protected=True, ref="n")
            error = await bob.expect("error", ref="n")
            assert error["code"] == "room_exists", error
            assert "already exists" in error["message"]
        await bob.send(type="join", room="fresh", new=True, protected=True, ref="f")
        joined = await bob.expect("joined", ref="f")
        assert joined["room"]["protected"] is True


async def test_in_a_protected_room_only_a_sealed_topic_changes_it_and_says_who_and_when(
    node: NodeProcess,
) -> None:
    key = crypto.new_room_key()
    secret, _ = crypto.new_identity()
    async with user(node, "alice") as alice, user(node, "mallory") as mallory:
        await alice.join("vault", protected=True)
        await enter(mallory, "vault")
        box = sealed.seal_body(
            key,
            sealed.signing_key(secret),
            room="vault",
            sender="alice",
            kind="topic",
            text="plans",
        )
        await alice.send(type="topic", room="vault", box=box, ref="t")
        changed = await alice.expect("topic", ref="t")
        assert changed["by"] == "alice" and changed["ts"] > 0
        await alice.send(type="topic", room="vault", ref="clear")
        error = await alice.expect("error", ref="clear")
        assert error["code"] == "bad_body" and "seal the topic" in error["message"]
        await mallory.send(type="topic", room="vault", box=box, ref="m")  # not staff here
        assert (await mallory.expect("error", ref="m"))["code"] == "forbidden"
    async with user(node, "bob") as bob:
        info = (await enter(bob, "vault"))["room"]
    assert info["topic_box"] == box and info["topic_by"] == "alice"
    assert info["topic_ts"] == changed["ts"]


def _bot_row(node: NodeProcess) -> tuple[str, str, bytes]:
    with sqlite3.connect(node.data_dir / "onionchat.sqlite3") as db:
        public, wrapped = db.execute(
            "SELECT public_key, wrapped_key FROM users WHERE key = 'olga'"
        ).fetchone()
        secret = db.execute("SELECT value FROM meta WHERE key = 'node_secret'").fetchone()[0]
    return public, wrapped, bytes(secret)


def _wrapping(secret: bytes) -> bytes:
    return hashlib.sha256(b"onionchat bot identity\0" + secret).digest()


def test_the_database_alone_does_not_unlock_the_bots_keys(node_factory: Any) -> None:
    """A copy of the database once gave the bot's key (and so every room it was invited to):
    now the key that wraps it lives in a file of its own; a node from before is upgraded."""
    node: NodeProcess = node_factory(env={"ONIONCHAT_BOTS_OLGA_MODEL": "m"})
    key_file = node.data_dir / "bot_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_bytes()) == 32
    node.stop()
    public, wrapped, node_secret = _bot_row(node)
    with pytest.raises(crypto.CryptoError):
        crypto.unwrap_identity(_wrapping(node_secret), wrapped)  # the database alone: no
    secret = crypto.unwrap_identity(_wrapping(key_file.read_bytes()), wrapped)
    assert b64(crypto.public_of(secret)) == public

    # A node from before the key file wrapped it under the database's secret: still the same
    # key after the upgrade (invitations sealed to it still open), wrapped the new way.
    with sqlite3.connect(node.data_dir / "onionchat.sqlite3") as db:
        old = crypto.wrap_identity(_wrapping(node_secret), secret)
        db.execute("UPDATE users SET wrapped_key = ? WHERE key = 'olga'", (old,))
    node.start()
    node.stop()
    public_after, wrapped_after, _ = _bot_row(node)
    assert public_after == public
    assert crypto.unwrap_identity(_wrapping(key_file.read_bytes()), wrapped_after) == secret
    with pytest.raises(crypto.CryptoError):
        crypto.unwrap_identity(_wrapping(node_secret), wrapped_after)
