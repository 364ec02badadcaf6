"""Keys that hold against insiders, in the command-line client (issue 11): invitations that never
replace a key it holds, boxes that are signed and bound to what they are shown as (a replayed,
moved, re-attributed or re-kinded one is shown rejected), plain text marked as such, a keyring
kept on the node that restores every room on a fresh CLI home, fingerprints and key changes,
and /invite, /uninvite. A real node, the real CLI as a subprocess (and at a tmux terminal), raw
WebSocket clients as the honest and the hostile members, onionchat.sealed on their side."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from test_client_identity import public_key, publish, wrapping_of

from onionchat import crypto, sealed
from onionchat.client.keys import KeyringSync, choose

from conftest import (
    Client,
    NodeProcess,
    client_env,
    connect,
    login,
    pipe_client,
    register,
    user,
)
from model_servers import ModelServer
from test_client import wait_for_screen


@dataclasses.dataclass
class Member:
    """A raw client with a published identity: an honest member, or a hostile one."""

    client: Client
    secret: bytes

    @property
    def name(self) -> str:
        return self.client.user

    @property
    def signer(self) -> nacl.signing.SigningKey:
        return sealed.signing_key(self.secret)

    @property
    def pin(self) -> tuple[bytes, bytes]:
        return crypto.public_of(self.secret), sealed.signing_public(self.secret)

    def box(self, key: bytes, room: str, text: str, kind: str = "message") -> str:
        return sealed.seal_body(key, self.signer, room=room, sender=self.name, kind=kind, text=text)

    async def say(self, room: str, key: bytes, text: str, ref: str) -> str:
        box = self.box(key, room, text)
        await self.client.send(type="send", room=room, box=box, ref=ref)
        await self.client.expect("ack", ref=ref)
        return box


@contextlib.asynccontextmanager
async def member(node: NodeProcess, name: str) -> AsyncIterator[Member]:
    async with user(node, name) as client:
        secret, _ = await publish(client, crypto.new_room_key())
        yield Member(client, secret)


async def enter(client: Client, room: str) -> dict[str, Any]:
    """Join an existing room whatever its mode, as a member without its key would."""
    await client.send(type="join", room=room)
    joined: dict[str, Any] = await client.expect("joined")
    return joined


async def signing_of(client: Client, name: str) -> bytes:
    await client.send(type="key", user=name, ref=f"s-{name}")
    return base64.b64decode((await client.expect("key", ref=f"s-{name}"))["signing"])


async def keyring_of(node: NodeProcess, name: str) -> sealed.Keyring:
    """The account's keyring as the node keeps it, opened as a client with the password."""
    token = (await login(node, name)).json()["token"]
    async with connect(node, token) as raw:
        stored = raw.seen[-1]["keyring"]
    return sealed.Keyring.open(await wrapping_of(node, name), stored["sealed"])


def with_key(key: bytes, room: str) -> tuple[str, ...]:
    # `--key=KEY`: one key in 64 starts with "-", which a separate argument would pass as a flag
    return ("--room", room, f"--key={crypto.encode_key(key)}")


def home(tmp_path: Path, name: str) -> dict[str, str]:
    """A CLI home of its own: nothing of another run's can be found there."""
    path = tmp_path / name
    path.mkdir()
    return {"HOME": str(path), "XDG_DATA_HOME": str(path / "data"), "XDG_CONFIG_HOME": str(path)}


# -- invitations ------------------------------------------------------------------------------


async def test_an_invitation_never_replaces_the_key_the_cli_was_given(
    node: NodeProcess, password_file: Path
) -> None:
    """Mallory, a member without the key, seals a key of her own to bob: claiming to be alice,
    then as herself. The CLI, started with --key, keeps its key and says so, now and at every
    later start; alice and bob go on reading each other, and mallory's key opens nothing."""
    key, forged = crypto.new_room_key(), crypto.new_room_key()
    await register(node, "bob")
    async with member(node, "alice") as alice, member(node, "mallory") as mallory:
        await alice.client.join("vault", protected=True)
        await enter(mallory.client, "vault")
        async with pipe_client(node.url, "bob", password_file, *with_key(key, "vault")) as bob:
            await bob.next(type="joined")
            bob_public = await public_key(mallory.client, "bob")
            as_alice = sealed.seal_invitation(
                forged, bob_public, mallory.signer, room="vault", sender="alice", to="bob"
            )
            await mallory.client.send(type="invite", room="vault", to="bob", sealed=as_alice)
            refused = await bob.next(type="invitation", outcome="rejected")
            assert refused["from"] == "mallory" and "signed as from alice" in refused["reason"]
            assert "nothing of it is used" in refused["text"]
            own = sealed.seal_invitation(
                forged, bob_public, mallory.signer, room="vault", sender="mallory", to="bob"
            )
            await mallory.client.send(type="invite", room="vault", to="bob", sealed=own)
            kept = await bob.next(type="invitation", outcome="kept")
            assert kept["from"] == "mallory"
            assert (
                "mallory invited you to #vault with a different key: you keep yours"
                in (kept["text"])
            )
            assert "/usekey vault mallory" in kept["text"]

            await alice.say("vault", key, "still ours", "a1")
            got = await bob.next(type="message", sender="alice")
            assert got["text"] == "still ours" and got["decrypted"] is True
            await bob.send("only alice reads this")
            mine = await alice.client.expect("message", sender="bob")
            assert sealed.open_body([key], mine["box"]).text == "only alice reads this"
            with pytest.raises(crypto.CryptoError):
                sealed.open_body([forged], mine["box"])
            code, out, err = await bob.finish()
            assert code == 0, err
            assert crypto.encode_key(key) not in out + err
        assert (await keyring_of(node, "bob")).rooms == {"vault": [key]}

        # The node keeps mallory's invitation for every later start: still not used.
        async with pipe_client(node.url, "bob", password_file, "--room", "vault") as bob:
            kept = await bob.next(type="invitation", outcome="kept")
            assert kept["from"] == "mallory"
            await bob.next(type="joined")
            await bob.send("with the key of the keyring")
            mine = await alice.client.expect("message", sender="bob")
            assert sealed.open_body([key], mine["box"]).text == "with the key of the keyring"
            code, _, err = await bob.finish()
            assert code == 0, err


async def test_without_a_key_only_the_invitation_that_opens_the_room_is_taken(
    node: NodeProcess, password_file: Path
) -> None:
    key, forged = crypto.new_room_key(), crypto.new_room_key()
    await register(node, "bob")
    async with pipe_client(node.url, "bob", password_file) as bob:  # bob's identity
        await bob.next(type="joined")
        assert (await bob.finish())[0] == 0
    async with member(node, "alice") as alice, member(node, "mallory") as mallory:
        await alice.client.join("vault", protected=True)
        await alice.say("vault", key, "the plan, from the start", "a1")
        await enter(mallory.client, "vault")
        bob_public = await public_key(alice.client, "bob")
        for inviter, room_key in ((mallory, forged), (alice, key)):
            invitation = sealed.seal_invitation(
                room_key, bob_public, inviter.signer, room="vault", sender=inviter.name, to="bob"
            )
            await inviter.client.send(type="invite", room="vault", to="bob", sealed=invitation)
            await inviter.client.expect("notice")
        async with pipe_client(node.url, "bob", password_file) as bob:
            await bob.next(type="joined")
            await bob.send("/join vault")
            taken = await bob.next(type="invitation", outcome="accepted")
            assert taken["from"] == "alice" and "opens the room's messages" in taken["text"]
            refused = await bob.next(type="invitation", outcome="not_used")
            assert refused["from"] == "mallory"
            assert (
                "mallory's key for #vault does not open its messages: not used" in (refused["text"])
            )
            history = await bob.next(type="message", sender="alice")
            assert history["text"] == "the plan, from the start"
            await bob.send("I am in")
            mine = await alice.client.expect("message", sender="bob")
            assert sealed.open_body([key], mine["box"]).text == "I am in"
            code, _, err = await bob.finish()
            assert code == 0, err
    assert (await keyring_of(node, "bob")).rooms == {"vault": [key]}


async def test_usekey_takes_an_invitations_key_only_when_asked(
    node: NodeProcess, password_file: Path
) -> None:
    old, new = crypto.new_room_key(), crypto.new_room_key()
    async with user(node, "root") as root:  # the room's maker: alice is no staff of it
        await root.join("vault", protected=True)
    await register(node, "bob")
    async with member(node, "alice") as alice:
        await alice.client.join("vault", protected=True)
        await alice.say("vault", old, "under the old key", "a1")
        async with pipe_client(node.url, "bob", password_file, *with_key(old, "vault")) as bob:
            await bob.next(type="message", text="under the old key")
            bob_public = await public_key(alice.client, "bob")
            invitation = sealed.seal_invitation(
                new, bob_public, alice.signer, room="vault", sender="alice", to="bob"
            )
            await alice.client.send(type="invite", room="vault", to="bob", sealed=invitation)
            await bob.next(type="invitation", outcome="kept")
            await bob.send("/usekey vault nobody")
            assert "no invitation of nobody" in (await bob.next(type="error"))["message"]
            await bob.send("/usekey vault ALICE")
            used = await bob.next(type="key", outcome="used")
            assert "older key(s) stay" in used["text"]
            await bob.send("under the new key")
            mine = await alice.client.expect("message", sender="bob")
            assert sealed.open_body([new], mine["box"]).text == "under the new key"
            await alice.say("vault", old, "the old one still opens", "a2")
            assert (await bob.next(type="message", sender="alice"))["decrypted"] is True
            code, _, err = await bob.finish()
            assert code == 1 and "1 line(s) were refused" in err  # /usekey vault nobody
    assert (await keyring_of(node, "bob")).rooms == {"vault": [new, old]}


# -- boxes --------------------------------------------------------------------------------------


async def made_moderator(owner: Any, name: str, room: str = "vault") -> None:
    """Only staff set topics: the insider of these tests is a room moderator gone bad."""
    await owner.client.send(type="command", room=room, line=f"/op {name}", ref="op")
    await owner.client.expect("notice", ref="op")


async def test_replayed_moved_and_forged_boxes_are_shown_rejected(
    node: NodeProcess, password_file: Path
) -> None:
    key = crypto.new_room_key()
    await register(node, "bob")
    async with (
        member(node, "alice") as alice,
        member(node, "mallory") as mallory,
        member(node, "carol") as carol,
    ):
        await alice.client.join("vault", protected=True)
        await enter(mallory.client, "vault")  # no key
        await enter(carol.client, "vault")  # holds the key
        await made_moderator(alice, "mallory")  # a moderator may set the topic, and tries
        async with pipe_client(node.url, "bob", password_file, *with_key(key, "vault")) as bob:
            await bob.next(type="joined")
            old = await alice.say("vault", key, "meet at noon", "a1")
            assert (await bob.next(type="message", sender="alice"))["text"] == "meet at noon"

            # mallory, without the key: alice's box as her own, as /me, as the topic
            await mallory.client.send(type="send", room="vault", box=old, ref="m1")
            shown = await bob.next(type="message", sender="mallory")
            assert shown["text"] is None and shown["decrypted"] is False
            assert shown["rejected"] == "it was written by alice, not by mallory"
            assert shown["error"] == "rejected: it was written by alice, not by mallory"
            await mallory.client.send(type="send", room="vault", box=old, me=True, ref="m2")
            shown = await bob.next(type="message", sender="mallory")
            assert shown["me"] is True and shown["text"] is None and "by alice" in shown["rejected"]
            await mallory.client.send(type="topic", room="vault", box=old, ref="m3")
            topic = await bob.next(type="topic", by="mallory")
            assert topic["text"] is None and "by alice" in topic["rejected"]

            # alice's box again, as a new message (as a node could send it): a replay
            await alice.client.send(type="send", room="vault", box=old, ref="a2")
            shown = await bob.next(type="message", sender="alice")
            assert shown["rejected"] == "sent before: a replay"
            # alice's message box as her topic: re-kinded
            await alice.client.send(type="topic", room="vault", box=old, ref="a3")
            topic = await bob.next(type="topic", by="alice")
            assert topic["rejected"] == "it was written as a message, not as a topic"
            # a box for another room
            moved = alice.box(key, "attic", "for the attic")
            await alice.client.send(type="send", room="vault", box=moved, ref="a4")
            shown = await bob.next(type="message", sender="alice")
            assert shown["rejected"] == "it was written for #attic, not here"

            # carol holds the key: a box in alice's name, and one not signed by her own key
            as_alice = sealed.seal_body(
                key, carol.signer, room="vault", sender="alice", kind="message", text="I resign"
            )
            await carol.client.send(type="send", room="vault", box=as_alice, ref="c1")
            shown = await bob.next(type="message", sender="carol")
            assert shown["rejected"] == "it was written by alice, not by carol"
            unsigned = sealed.seal_body(
                key,
                nacl.signing.SigningKey.generate(),
                room="vault",
                sender="carol",
                kind="message",
                text="signed by someone else",
            )
            await carol.client.send(type="send", room="vault", box=unsigned, ref="c2")
            shown = await bob.next(type="message", sender="carol")
            assert shown["rejected"] == "the signature is not carol's"
            # a box of the old format (room key only, no signature)
            await carol.client.send(type="send", room="vault", box=crypto.seal(key, "x"), ref="c3")
            shown = await bob.next(type="message", sender="carol")
            assert "not a signed box" in shown["rejected"]

            # the honest members keep reading each other
            await alice.say("vault", key, "still here", "a5")
            assert (await bob.next(type="message", sender="alice"))["text"] == "still here"
            await carol.say("vault", key, "me too", "c4")
            assert (await bob.next(type="message", sender="carol"))["text"] == "me too"
            await bob.send("heard you both")
            mine = await alice.client.expect("message", sender="bob")
            body = sealed.open_body([key], mine["box"])
            assert body.text == "heard you both"
            assert body.verify(await signing_of(alice.client, "bob"))
            code, _, err = await bob.finish()
            assert code == 0, err

        # a newcomer sees the re-kinded topic rejected too, never as the topic
        async with pipe_client(
            node.url, "dave", password_file, "--register", *with_key(key, "vault")
        ) as dave:
            joined = await dave.next(type="joined")
            assert joined["room"]["topic"] is None
            assert joined["room"]["topic_rejected"] == "it was written as a message, not as a topic"
            assert (await dave.finish())[0] == 0


async def test_a_plain_direct_message_is_marked_not_sealed(
    node: NodeProcess, password_file: Path
) -> None:
    await register(node, "bob")
    async with member(node, "alice") as alice, pipe_client(node.url, "bob", password_file) as bob:
        await bob.next(type="joined")
        # as the no-JS pages' /msg sends it: in the clear
        await alice.client.send(type="send", to="bob", text="psst, in the clear", ref="p")
        await alice.client.expect("ack", ref="p")
        plain = await bob.next(type="message", sender="alice")
        assert plain["text"] == "psst, in the clear" and plain["sealed"] is False
        assert "decrypted" not in plain
        shared = crypto.shared_key(alice.secret, await public_key(alice.client, "bob"))
        box = alice.box(shared, "@alice+bob", "and this one sealed")
        await alice.client.send(type="send", to="bob", box=box, ref="s")
        got = await bob.next(type="message", sender="alice")
        assert got["text"] == "and this one sealed" and got["sealed"] is True
        assert got["decrypted"] is True
        code, _, err = await bob.finish()
        assert code == 0, err


@contextlib.contextmanager
def terminal(node: NodeProcess, name: str, password_file: Path, *args: str) -> Iterator[str]:
    """`onionchat connect` at a real terminal (tmux, 160×40): yields the session."""
    assert shutil.which("tmux"), "tmux is missing: scripts/system-packages installs it"
    session = f"onionchat-keys-{name}-{os.getpid()}"
    command = " ".join(
        [
            sys.executable,
            "-m",
            "onionchat",
            "connect",
            node.url,
            "--user",
            name,
            "--password-file",
            str(password_file),
            *args,
        ]
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40", command],
        check=True,
        env=client_env(),
    )
    try:
        yield session
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def typed(session: str, line: str) -> None:
    subprocess.run(["tmux", "send-keys", "-t", session, line, "Enter"], check=True)


async def test_at_a_terminal_rejected_boxes_and_plain_text_are_plain_to_see(
    node: NodeProcess, password_file: Path
) -> None:
    key = crypto.new_room_key()
    await register(node, "bob")
    async with member(node, "alice") as alice, member(node, "mallory") as mallory:
        await alice.client.join("vault", protected=True)
        await enter(mallory.client, "vault")
        with terminal(node, "bob", password_file, *with_key(key, "vault")) as session:
            await alice.client.expect("presence", user="bob", state="join")
            old = await alice.say("vault", key, "meet at noon", "a1")
            await wait_for_screen(session, "<alice> meet at noon")
            await mallory.client.send(type="send", room="vault", box=old, ref="m1")
            screen = await wait_for_screen(
                session, "<mallory> [rejected: it was written by alice, not by mallory]"
            )
            assert "<mallory> meet at noon" not in screen
            line = await wait_for_screen(session, "[rejected:", escapes=True)
            [shown] = [x for x in line.splitlines() if "[rejected:" in x]
            assert "\x1b[" in shown.partition("<mallory>")[2]  # a style of its own
            await alice.client.send(type="send", to="bob", text="plain words", ref="p")
            await wait_for_screen(session, "[dm, not sealed] alice → bob: plain words")
            typed(session, "/whois alice")
            mark = sealed.fingerprint(*alice.pin)
            await wait_for_screen(session, f"alice: {mark}")
            typed(session, "/help")
            await wait_for_screen(session, "/usekey ROOM USER")
            typed(session, "/quit")
            await alice.client.expect("presence", user="bob", state="leave")


# -- the keyring ----------------------------------------------------------------------------------


async def test_the_keyring_restores_every_room_on_a_fresh_cli_home(
    node: NodeProcess, password_file: Path, tmp_path: Path
) -> None:
    vault, attic, plans = crypto.new_room_key(), crypto.new_room_key(), crypto.new_room_key()
    first = home(tmp_path, "first")
    async with member(node, "alice") as alice:
        for room, key in (("vault", vault), ("attic", attic), ("plans", plans)):
            await alice.client.join(room, protected=True)
            await alice.say(room, key, f"welcome to {room}", f"w-{room}")
        async with pipe_client(
            node.url, "bob", password_file, "--register", *with_key(vault, "vault"), env=first
        ) as bob:
            assert (await bob.next(type="message"))["text"] == "welcome to vault"
            # another device of bob's stores attic's key meanwhile: merged here at once
            async with pipe_client(
                node.url, "bob", password_file, *with_key(attic, "attic"), env=first
            ) as phone:
                assert (await phone.next(type="message"))["text"] == "welcome to attic"
                assert (await phone.finish())[0] == 0
            await bob.send("/join attic")
            joined = await bob.next(type="joined")
            assert joined["room"]["name"] == "attic" and joined["room"]["protected"] is True
            got = await bob.next(type="message", room="attic")
            assert got["text"] == "welcome to attic" and got["decrypted"] is True
            # a new room: never over an existing name, and its key goes to the keyring
            await bob.send("/create vault")
            refused = await bob.next(type="error")
            assert refused["code"] == "room_exists"
            assert "the new key was thrown away" in refused["message"]
            await bob.send("/create cellar")
            made = await bob.next(type="key", outcome="given")
            assert "you made #cellar" in made["text"]
            await bob.send("first words in the cellar")
            await bob.next(type="message", room="cellar", text="first words in the cellar")
            code, out, err = await bob.finish()
            assert code == 1, err  # the /create refused
        ring = await keyring_of(node, "bob")
        assert ring.rooms["vault"] == [vault] and ring.rooms["attic"] == [attic]
        assert set(ring.rooms) == {"vault", "attic", "cellar"}
        assert ring.peers["alice"] == alice.pin  # the keys first seen of alice
        assert all(crypto.encode_key(k) not in out + err for k in (vault, attic, plans))

        # a fresh home, no --key: every room of the keyring reads
        fresh = home(tmp_path, "fresh")
        async with pipe_client(node.url, "bob", password_file, "--room", "vault", env=fresh) as bob:
            assert (await bob.next(type="message"))["text"] == "welcome to vault"
            await bob.send("/join attic")
            got = await bob.next(type="message", room="attic")
            assert got["text"] == "welcome to attic" and got["decrypted"] is True
            await bob.send("/join cellar")
            got = await bob.next(type="message", room="cellar")
            assert got["text"] == "first words in the cellar" and got["decrypted"] is True
            await bob.send("/join plans")  # never had its key: said, not garbage
            got = await bob.next(type="message", room="plans")
            assert got["text"] is None and "cannot decrypt" in got["error"]
            code, _, err = await bob.finish()
            assert code == 0, err


# -- who is who ---------------------------------------------------------------------------------


async def test_whois_the_fingerprint_and_a_changed_key(
    node: NodeProcess, password_file: Path
) -> None:
    key = crypto.new_room_key()
    await register(node, "bob")
    async with member(node, "alice") as alice:
        await alice.client.join("vault", protected=True)
        async with pipe_client(node.url, "bob", password_file, *with_key(key, "vault")) as bob:
            await bob.next(type="joined")
            await bob.send("/whois alice")
            who = await bob.next(type="whois")
            assert who["user"] == "alice" and who["pinned"] is True and who["first_seen"] is True
            assert who["fingerprint"] == sealed.fingerprint(*alice.pin)
            await bob.send("/whois")
            me = await bob.next(type="whois")
            bob_pin = (await public_key(alice.client, "bob"), await signing_of(alice.client, "bob"))
            assert me["self"] is True and me["fingerprint"] == sealed.fingerprint(*bob_pin)
            await alice.say("vault", key, "with my first key", "a1")
            assert (await bob.next(type="message", sender="alice"))["decrypted"] is True

            # alice's key changes (a new device? the node lying?): said, and not taken
            old_pin = alice.pin
            alice.secret, _ = await publish(alice.client, crypto.new_room_key())
            await alice.say("vault", key, "with my new key", "a2")
            changed = await bob.next(type="key_changed")
            assert changed["user"] == "alice" and changed["rooms"] == ["vault"]
            assert changed["old"] == sealed.fingerprint(*old_pin)
            assert changed["new"] == sealed.fingerprint(*alice.pin)
            assert changed["text"].startswith("#vault: alice's key changed: ")
            shown = await bob.next(type="message", sender="alice")
            assert shown["text"] is None and "alice's new key" in shown["rejected"]
            await bob.send("/whois alice")
            who = await bob.next(type="whois")
            assert who["pinned"] is False and who["known"] == sealed.fingerprint(*old_pin)
            assert who["fingerprint"] == sealed.fingerprint(*alice.pin)
            await alice.say("vault", key, "still the new key", "a3")
            assert "new key" in (await bob.next(type="message", sender="alice"))["rejected"]
            await bob.send("/msg alice hello?")  # nothing sealed to a key not trusted
            assert "/trust alice" in (await bob.next(type="error"))["message"]

            await bob.send("/trust alice")
            trusted = await bob.next(type="trust")
            assert trusted["fingerprint"] == sealed.fingerprint(*alice.pin)
            await alice.say("vault", key, "trusted now", "a4")
            got = await bob.next(type="message", sender="alice")
            assert got["text"] == "trusted now" and got["decrypted"] is True
            code, _, err = await bob.finish()
            assert code == 1 and "1 line(s) were refused" in err  # the /msg
    assert (await keyring_of(node, "bob")).peers["alice"] == alice.pin


# -- /invite and /uninvite ------------------------------------------------------------------------


async def test_invite_and_uninvite(node_factory: Any, password_file: Path) -> None:
    key = crypto.new_room_key()
    with ModelServer("ollama") as ollama:
        node: NodeProcess = node_factory(env={"ONIONCHAT_BOTS_OLGA_BASE_URL": ollama.url})
        async with (
            member(node, "carol") as carol,
            pipe_client(
                node.url, "bob", password_file, "--register", *with_key(key, "vault")
            ) as bob,
        ):
            await bob.next(type="joined")
            await enter(carol.client, "vault")
            await bob.send("/invite carol")
            told = await bob.next(type="notice", text="invited carol to #vault")
            assert told["room"] == "vault"
            invited = await carol.client.expect("invited")
            assert (invited["room"], invited["sender"]) == ("vault", "bob")
            invitation = sealed.open_invitation(invited["sealed"], carol.secret)
            assert invitation.verify(await signing_of(carol.client, "bob"))
            invitation.check("vault", "bob", "carol")
            assert invitation.key == key

            await bob.send("/invite Olga")
            can = await bob.next(type="notice")
            assert "Olga can read #vault now (bob invited it)" in can["text"]
            readers = await carol.client.expect("readers")
            assert readers["bots"] == ["Olga"]
            # Olga reads the call and answers, sealed and signed: the CLI checks it
            await bob.send("Olga, tell a joke")
            said = await bob.next(type="message", sender="Olga")
            assert said["text"] == "".join(ollama.tokens) and said["decrypted"] is True
            assert ollama.requests[-1]["messages"][-1]["content"].endswith("bob: tell a joke")
            await bob.send("/uninvite Olga")
            gone = await bob.next(type="notice")
            assert "Olga can no longer read #vault" in gone["text"]
            assert (await carol.client.expect("readers"))["bots"] == []

            await bob.send("/help")
            while not (await bob.next(type="notice"))["text"].startswith("Commands:"):
                pass  # the node's own list first, then the client's
            text = (await bob.next(type="notice"))["text"]
            assert text.startswith("Commands of this client:")
            for usage in ("/invite USER", "/uninvite BOT", "/whois [NAME]", "/trust NAME"):
                assert usage in text
            await bob.send("/join lobby")
            await bob.next(type="joined")
            await bob.send("/invite carol")
            assert "key-protected rooms" in (await bob.next(type="error"))["message"]
            code, _, err = await bob.finish()
            assert code == 1 and "1 line(s) were refused" in err


# -- interoperability -----------------------------------------------------------------------------


async def test_what_the_cli_seals_onionchat_sealed_opens_and_verifies(
    node: NodeProcess, password_file: Path
) -> None:
    key = crypto.new_room_key()
    await register(node, "bob")
    async with member(node, "alice") as alice:
        await alice.client.join("vault", protected=True)
        async with pipe_client(node.url, "bob", password_file, *with_key(key, "vault")) as bob:
            await bob.next(type="joined")
            bob_signing = await signing_of(alice.client, "bob")
            await bob.send("a message")
            await bob.send("/me waves")
            await bob.send("/topic the plans")
            await bob.send("/msg alice between us")
            got = await alice.client.expect("message", sender="bob")
            body = sealed.open_body([key], got["box"])
            body.check("vault", "bob", "message", got["ts"])
            assert body.text == "a message" and body.verify(bob_signing)
            got = await alice.client.expect("message", sender="bob")
            assert got["me"] is True
            body = sealed.open_body([key], got["box"])
            body.check("vault", "bob", "action", got["ts"])
            assert body.text == "waves" and body.verify(bob_signing)
            topic = await alice.client.expect("topic", by="bob")
            body = sealed.open_body([key], topic["box"])
            body.check("vault", "bob", "topic", topic["ts"])
            assert body.text == "the plans" and body.verify(bob_signing)
            got = await alice.client.expect("message", sender="bob")
            assert got["to"] == "alice" and "text" not in got
            shared = crypto.shared_key(alice.secret, await public_key(alice.client, "bob"))
            body = sealed.open_body([shared], got["box"])
            body.check("@alice+bob", "bob", "message", got["ts"])
            assert body.text == "between us" and body.verify(bob_signing)
            # and the CLI shows what sealed seals, the same way
            shown = await bob.next(type="topic", by="bob")
            assert shown["text"] == "the plans" and shown["decrypted"] is True
            await alice.client.send(
                type="topic", room="vault", box=alice.box(key, "vault", "", "topic"), ref="t"
            )
            cleared = await bob.next(type="topic", by="alice")
            assert cleared["cleared"] is True and cleared["text"] is None
            code, _, err = await bob.finish()
            assert code == 0, err


# -- the signing key, --key over a keyring's key, and keyring conflicts ----------------------------


async def test_a_signing_key_is_published_for_an_identity_that_lacks_one(
    node: NodeProcess, password_file: Path
) -> None:
    """An account whose identity an older client published (no signing key): the CLI derives
    the signing key from the one identity secret and publishes it, same public key."""
    token = await register(node, "bob")
    async with connect(node, token) as raw:
        secret, public = crypto.new_identity()
        wrapped = crypto.wrap_identity(await wrapping_of(node, "bob"), secret)
        frame = {"public": base64.b64encode(public).decode(), "wrapped": wrapped}
        await raw.send(type="identity", ref="id", **frame)
        assert "signing" not in await raw.expect("identity", ref="id")
    async with pipe_client(node.url, "bob", password_file) as bob:
        await bob.next(type="joined")
        code, _, err = await bob.finish()
        assert code == 0, err
    async with user(node, "alice") as alice:
        await alice.send(type="key", user="bob", ref="k")
        keys = await alice.expect("key", ref="k")
    assert base64.b64decode(keys["public"]) == public
    assert base64.b64decode(keys["signing"]) == sealed.signing_public(secret)


async def test_a_key_given_with_key_is_added_as_the_newest_and_said(
    node: NodeProcess, password_file: Path
) -> None:
    old, new = crypto.new_room_key(), crypto.new_room_key()
    async with member(node, "alice") as alice:
        await alice.client.join("vault", protected=True)
        await alice.say("vault", old, "under the old key", "a1")
        async with pipe_client(
            node.url, "bob", password_file, "--register", *with_key(old, "vault")
        ) as bob:
            await bob.next(type="message", text="under the old key")
            assert (await bob.finish())[0] == 0
        async with pipe_client(node.url, "bob", password_file, *with_key(new, "vault")) as bob:
            given = await bob.next(type="key", outcome="given")
            assert "now uses the key given with --key" in given["text"]
            assert "1 other key(s)" in given["text"]
            history = await bob.next(type="message", sender="alice")  # the old key still opens
            assert history["text"] == "under the old key"
            await bob.send("under the new key")
            mine = await alice.client.expect("message", sender="bob")
            assert sealed.open_body([new], mine["box"]).text == "under the new key"
            assert (await bob.finish())[0] == 0
    assert (await keyring_of(node, "bob")).rooms == {"vault": [new, old]}


def test_a_keyring_conflict_is_merged_and_sent_again() -> None:
    """The node refused our version (another device stored it first) after sending the
    latest: every key of both goes again, one version on, our newest choice still first."""
    wrapping, mine, theirs, older = (crypto.new_room_key() for _ in range(4))
    sync = KeyringSync(wrapping)
    stored = sealed.Keyring(rooms={"vault": [older]})
    assert sync.restore(stored.seal(wrapping), 3)
    sync.keyring.add("vault", mine)
    sync.dirty = True
    first = sync.update("r1")
    assert first is not None and first["version"] == 4
    assert sync.update("r2") is None  # one at a time
    other = sealed.Keyring(rooms={"vault": [older], "plans": [theirs]})
    sync.pushed(other.seal(wrapping), 4)  # the latest, just before `conflict`
    sync.conflict()
    again = sync.update("r3")
    assert again is not None and again["version"] == 5
    merged = sealed.Keyring.open(wrapping, str(again["sealed"]))
    assert merged.rooms == {"vault": [mine, older], "plans": [theirs]}
    sync.stored(5)
    assert sync.update("r4") is None  # nothing new
    # a keyring that does not open here is never written over
    locked = KeyringSync(wrapping)
    assert not locked.restore(sealed.Keyring().seal(crypto.new_room_key()), 1)
    locked.keyring.add("vault", mine)
    locked.dirty = True
    assert locked.update("r5") is None


async def test_boxes_a_member_seeds_with_a_key_of_their_own_do_not_win_the_room(
    node: NodeProcess, password_file: Path
) -> None:
    """Mallory, without the key, writes a box and sets the topic under a key of her own, then
    invites bob with it: her key opens something, but only what came after the room's first
    words, so alice's is taken; mallory's words stay locked."""
    key, forged = crypto.new_room_key(), crypto.new_room_key()
    await register(node, "bob")
    async with pipe_client(node.url, "bob", password_file) as bob:  # bob's identity
        await bob.next(type="joined")
        assert (await bob.finish())[0] == 0
    async with member(node, "alice") as alice, member(node, "mallory") as mallory:
        await alice.client.join("vault", protected=True)
        await alice.say("vault", key, "the first words", "a1")
        await enter(mallory.client, "vault")
        await made_moderator(alice, "mallory")  # who may set the topic, and does
        await mallory.say("vault", forged, "take my key", "m1")
        topic = mallory.box(forged, "vault", "mallory's topic", "topic")
        await mallory.client.send(type="topic", room="vault", box=topic, ref="t")
        await mallory.client.expect("topic", ref="t")
        bob_public = await public_key(alice.client, "bob")
        for inviter, room_key in ((mallory, forged), (alice, key)):
            invitation = sealed.seal_invitation(
                room_key, bob_public, inviter.signer, room="vault", sender=inviter.name, to="bob"
            )
            await inviter.client.send(type="invite", room="vault", to="bob", sealed=invitation)
            await inviter.client.expect("notice")
        async with pipe_client(node.url, "bob", password_file, "--room", "vault") as bob:
            taken = await bob.next(type="invitation", outcome="accepted")
            assert taken["from"] == "alice"
            refused = await bob.next(type="invitation", outcome="not_used")
            assert refused["from"] == "mallory"
            assert refused["reason"] == "it opens only newer messages than alice's key"
            joined = await bob.next(type="joined")
            assert (
                joined["room"]["topic"] is None
                and "cannot decrypt" in (joined["room"]["topic_error"])
            )
            assert (await bob.next(type="message", sender="alice"))["text"] == "the first words"
            seeded = await bob.next(type="message", sender="mallory")
            assert seeded["text"] is None and "cannot decrypt" in seeded["error"]
            assert (await bob.finish())[0] == 0
    assert (await keyring_of(node, "bob")).rooms == {"vault": [key]}


def test_when_the_room_is_not_seen_from_its_start_competing_keys_are_not_chosen() -> None:
    """Only the newest page of a long room: whose key opens the oldest box there proves
    nothing, so neither is taken (both are said, for /usekey)."""
    key, forged = crypto.new_room_key(), crypto.new_room_key()
    signer = nacl.signing.SigningKey.generate()

    def box(room_key: bytes) -> str:
        return sealed.seal_body(room_key, signer, room="r", sender="s", kind="message", text="x")

    boxes = [box(key), box(forged)]
    assert choose({"alice": key, "mallory": forged}, boxes, complete=True) == (
        "alice",
        {"mallory": "it opens only newer messages than alice's key"},
    )
    winner, reasons = choose({"alice": key, "mallory": forged}, boxes, complete=False)
    assert winner is None and set(reasons) == {"alice", "mallory"}
    assert choose({"alice": key}, boxes, complete=False) == ("alice", {})
    assert choose({"alice": key, "mallory": forged}, [], complete=True)[0] is None


# -- rotation -----------------------------------------------------------------------------------


async def test_a_kicked_member_reads_nothing_written_after_the_room_key_is_rotated(
    node: NodeProcess, password_file: Path, tmp_path: Path
) -> None:
    """Issue 14: mallory, kicked, still holds the room's key. alice (the room's owner) /rotate:
    her client makes a new key and seals it to the members the node lists; bob's client takes
    it over the one he holds, because the node says alice is staff there. What is written
    after opens with the new key only; the old words still open with the old one."""
    key = crypto.new_room_key()
    await register(node, "alice")  # the node's admin, and the room's maker below
    await register(node, "bob")
    alice_home, bob_home = home(tmp_path, "alice"), home(tmp_path, "bob")
    async with pipe_client(
        node.url, "alice", password_file, *with_key(key, "vault"), env=alice_home
    ) as alice:
        await alice.next(type="joined")
        async with (
            pipe_client(
                node.url, "bob", password_file, *with_key(key, "vault"), env=bob_home
            ) as bob,
            member(node, "mallory") as mallory,
        ):
            await bob.next(type="joined")
            await enter(mallory.client, "vault")
            await alice.send("before the kick")
            before = await mallory.client.expect("message", sender="alice")
            assert sealed.open_body([key], before["box"]).text == "before the kick"
            await alice.send("/kick mallory 60 leaking")
            await mallory.client.expect("left")
            await alice.send("/rotate")
            await alice.next(type="key", outcome="rotating")
            taken = await bob.next(type="key", outcome="rotated")
            assert taken["from"] == "alice"
            await alice.send("after the kick")
            shown = await bob.next(type="message", sender="alice", text="after the kick")
            assert shown["decrypted"] is True
            await bob.send("bob writes with the new key too")
            await alice.next(type="message", sender="bob", text="bob writes with the new key too")
            assert (await bob.finish())[0] == 0
        assert (await alice.finish())[0] == 0
    with sqlite3.connect(node.data_dir / "onionchat.sqlite3") as db:
        boxes = [r[0] for r in db.execute("SELECT box FROM messages ORDER BY id")]
    assert len(boxes) == 3
    assert sealed.open_body([key], boxes[0]).text == "before the kick"  # the old key: history
    for box in boxes[1:]:  # what mallory's key opens of the words after: nothing
        with pytest.raises(crypto.CryptoError):
            sealed.open_body([key], box)
