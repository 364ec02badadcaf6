"""The command-line client's identity key, as the browser's: restored from `ready` with the
password-derived wrapping key (or made and published), used to open sealed invitations and to
read and write sealed direct messages. Real node, the CLI as a subprocess, PyNaCl on the
other side."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx

from onionchat import crypto, sealed

from conftest import PASSWORD, Client, NodeProcess, connect, pipe_client, register, user


async def wrapping_of(node: NodeProcess, name: str) -> bytes:
    """The wrapping key, as a client holding the password derives it (salt from prelogin)."""
    async with httpx.AsyncClient(base_url=node.url) as http:
        params = (await http.post("/api/prelogin", json={"username": name})).json()
    salt = base64.urlsafe_b64decode(params["salt"] + "==")
    return crypto.wrapping_key(PASSWORD, salt, params["iterations"])


async def publish(client: Client, wrapping: bytes) -> tuple[bytes, bytes]:
    """A fresh identity, published with its signing key, as every client now does."""
    secret, public = crypto.new_identity()
    await client.send(
        type="identity",
        public=base64.b64encode(public).decode(),
        wrapped=crypto.wrap_identity(wrapping, secret),
        signing=base64.b64encode(sealed.signing_public(secret)).decode(),
        ref="id",
    )
    await client.expect("identity", ref="id")
    return secret, public


async def public_key(client: Client, name: str) -> bytes:
    await client.send(type="key", user=name, ref=f"k-{name}")
    return base64.b64decode((await client.expect("key", ref=f"k-{name}"))["public"])


def box(key: bytes, secret: bytes, room: str, sender: str, text: str) -> str:
    """A message box as a client writes it: signed by `sender`, bound to `room`."""
    signer = sealed.signing_key(secret)
    return sealed.seal_body(key, signer, room=room, sender=sender, kind="message", text=text)


def invitation(key: bytes, to_public: bytes, secret: bytes, room: str, sender: str, to: str) -> str:
    signer = sealed.signing_key(secret)
    return sealed.seal_invitation(key, to_public, signer, room=room, sender=sender, to=to)


async def test_an_invitation_lets_the_cli_read_a_key_protected_room(
    node: NodeProcess, password_file: Path
) -> None:
    bob_token = await register(node, "bob")
    async with connect(node, bob_token) as bob_raw:  # bob's identity, published elsewhere
        await publish(bob_raw, await wrapping_of(node, "bob"))
    room_key = crypto.new_room_key()
    async with user(node, "alice") as alice:
        alice_secret, _ = await publish(alice, crypto.new_room_key())
        await alice.join("vault", protected=True)
        bob_public = await public_key(alice, "bob")
        sealed_key = invitation(room_key, bob_public, alice_secret, "vault", "alice", "bob")
        await alice.send(type="invite", room="vault", to="bob", sealed=sealed_key, ref="i")
        await alice.expect("notice", ref="i")
        async with pipe_client(node.url, "bob", password_file) as bob:
            waiting = await bob.next(type="invitation", room="vault")
            assert waiting["from"] == "alice" and waiting["outcome"] == "waiting"
            await bob.next(type="joined")
            await bob.send("/join vault")
            taken = await bob.next(type="invitation", room="vault")  # decided as it joins
            assert taken["outcome"] == "accepted" and "no messages yet" in taken["text"]
            joined = await bob.next(type="joined")
            assert joined["room"]["name"] == "vault" and joined["room"]["protected"] is True
            await alice.send(
                type="send", room="vault", box=box(room_key, alice_secret, "vault", "alice", "hi")
            )
            got = await bob.next(type="message", room="vault")
            assert got["text"] == "hi" and got["decrypted"] is True
            await bob.send("sealed by the CLI")
            mine = await alice.expect("message", sender="bob")
            assert "text" not in mine
            assert sealed.open_body([room_key], mine["box"]).text == "sealed by the CLI"
            code, _, err = await bob.finish()
            assert code == 0, err

        # a live invitation, while the CLI is connected
        other_key = crypto.new_room_key()
        await alice.join("attic", protected=True)
        async with pipe_client(node.url, "bob", password_file) as bob:
            await bob.next(type="joined")
            sealed_key = invitation(other_key, bob_public, alice_secret, "attic", "alice", "bob")
            await alice.send(type="invite", room="attic", to="bob", sealed=sealed_key, ref="j")
            invited = await bob.next(type="invited")
            assert invited["room"] == "attic" and invited["opened"] is True
            assert "sealed" not in invited
            waiting = await bob.next(type="invitation", room="attic")
            assert waiting["outcome"] == "waiting"
            await bob.send("/join attic")
            await bob.next(type="invitation", room="attic", outcome="accepted")
            await bob.next(type="joined")
            up = box(other_key, alice_secret, "attic", "alice", "up here")
            await alice.send(type="send", room="attic", box=up)
            got = await bob.next(type="message", room="attic")
            assert got["text"] == "up here" and got["decrypted"] is True
            code, _, err = await bob.finish()
            assert code == 0, err


async def test_a_fresh_cli_account_publishes_its_identity_key(
    node: NodeProcess, password_file: Path
) -> None:
    async with pipe_client(node.url, "carol", password_file, "--register") as carol:
        await carol.next(type="joined")
        code, out, err = await carol.finish()
        assert code == 0, err
    wrapping = await wrapping_of(node, "carol")
    assert crypto.encode_key(wrapping) not in out + err
    async with user(node, "dave") as dave:
        public = await public_key(dave, "carol")
    async with httpx.AsyncClient(base_url=node.url) as http:
        params = (await http.post("/api/prelogin", json={"username": "carol"})).json()
        salt = base64.urlsafe_b64decode(params["salt"] + "==")
        secret = crypto.login_secret(PASSWORD, salt, params["iterations"])
        token = (
            await http.post(
                "/api/login", json={"username": "carol", "secret": crypto.encode_key(secret)}
            )
        ).json()["token"]
    async with connect(node, token) as raw:
        keys = raw.seen[-1]["identity"]
    assert base64.b64decode(keys["public"]) == public
    assert crypto.public_of(crypto.unwrap_identity(wrapping, keys["wrapped"])) == public

    # a second CLI login restores it rather than publishing another
    async with pipe_client(node.url, "carol", password_file) as carol:
        await carol.next(type="joined")
        code, _, err = await carol.finish()
        assert code == 0, err
        assert "cannot unwrap" not in err
    async with user(node, "erin") as erin:
        assert await public_key(erin, "carol") == public


async def test_sealed_direct_messages_both_ways(node: NodeProcess, password_file: Path) -> None:
    await register(node, "bob")
    async with user(node, "alice") as alice:
        alice_secret, _ = await publish(alice, crypto.new_room_key())
        async with pipe_client(node.url, "bob", password_file) as bob:
            await bob.next(type="joined")
            bob_public = await public_key(alice, "bob")
            shared = crypto.shared_key(alice_secret, bob_public)
            sealed_dm = box(shared, alice_secret, "@alice+bob", "alice", "between us ☃")
            await alice.send(type="send", to="bob", box=sealed_dm, ref="d")
            await alice.expect("ack", ref="d")
            got = await bob.next(type="message", sender="alice")
            assert got["text"] == "between us ☃" and got["decrypted"] is True
            assert got["to"] == "bob" and got["room"] == "@alice+bob" and got["sealed"] is True

            await bob.send("/msg alice sealed reply")
            reply = await alice.expect("message", sender="bob")
            assert "text" not in reply and reply["to"] == "alice"
            body = sealed.open_body([shared], reply["box"])
            assert (body.text, body.room, body.sender) == ("sealed reply", "@alice+bob", "bob")
            echo = await bob.next(type="message", sender="bob")
            assert echo["text"] == "sealed reply" and echo["decrypted"] is True

            # a box that does not open: said so, never garbage
            wrong = crypto.seal(crypto.new_room_key(), "garbled")
            await alice.send(type="send", to="bob", box=wrong, ref="w")
            bad = await bob.next(type="message", sender="alice")
            assert bad["text"] is None and bad["decrypted"] is False and bad["error"]

            code, _, err = await bob.finish()
            assert code == 0, err

        # to a user without an identity key: plain text, said once
        async with user(node, "zed") as zed, pipe_client(node.url, "bob", password_file) as bob:
            await bob.next(type="joined")
            await bob.send("/msg zed one")
            await bob.send("/msg zed two")
            first = await zed.expect("message", sender="bob")
            second = await zed.expect("message", sender="bob")
            assert (first["text"], second["text"]) == ("one", "two")
            code, _, err = await bob.finish()
            assert code == 0, err
            assert err.count("zed has no identity key") == 1


async def test_an_identity_key_that_does_not_unwrap_is_kept(
    node: NodeProcess, password_file: Path
) -> None:
    """Wrapped under another key (another password): the CLI says so plainly and never
    publishes a new key over it, or invitations sealed to it would be lost."""
    token = await register(node, "bob")
    async with connect(node, token) as raw:
        _, public = await publish(raw, crypto.new_room_key())
    async with pipe_client(node.url, "bob", password_file) as bob:
        await bob.next(type="joined")
        code, _, err = await bob.finish()
        assert code == 0, err
    assert "cannot unwrap your identity key" in err
    async with user(node, "alice") as alice:
        assert await public_key(alice, "bob") == public
