"""Keeping order (issue 14): roles, one authorization point, kick, ban, mute, delete, purge,
the audit log. In process (tests/inproc.py: the real node, store and features, without
HTTP); the transports' own tests are in test_moderation_transports.py."""

from __future__ import annotations

import asyncio
import base64
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from inproc import Member, connection, member, running

from onionchat import crypto
from onionchat.auth import AuthError
from onionchat.node import Refused
from onionchat.protocol import Message
from onionchat.server import Server

from conftest import FAST_AUTH, PASSWORD


async def command(
    who: Member, line: str, room: str | None = "lobby", ref: str = "c"
) -> dict[str, Any]:
    """The answer to a command: its notice, or its error."""
    await who.send(type="command", room=room, line=line, ref=ref)
    while True:
        frame = await who.recv()
        if frame.get("ref") == ref and frame["type"] in ("notice", "error"):
            return frame


async def refused(who: Member, line: str, room: str | None = "lobby") -> str:
    answer = await command(who, line, room)
    assert answer["type"] == "error", answer
    assert answer["code"] == "forbidden", answer
    return str(answer["message"])


async def lobby(parts: Server, *users: str) -> list[Member]:
    """Users in #lobby, the first its creator (and, first on the node, its admin)."""
    joined = []
    for name in users:
        m = await member(parts, name)
        await m.join("lobby")
        joined.append(m)
    for m in joined:
        await m.barrier()
    return joined


async def test_the_first_account_is_admin_and_a_room_is_owned_by_its_maker(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "node") as parts:
        root, alice, bob = [await member(parts, n) for n in ("root", "alice", "bob")]
        assert parts.node.authority.node_role("root") == "admin"
        assert parts.node.authority.node_role("alice") == "member"
        await alice.join("den")
        await bob.join("den")
        staff = await command(bob, "/staff", "den")
        assert staff["text"] == "staff of #den: alice (owner)"
        # a room's maker owns it, and may name moderators; a member may not
        assert "only room owners" in await refused(bob, "/op bob", "den")
        assert "only node moderators" in await refused(bob, "/deop alice", "den")
        made = await command(alice, "/op bob", "den")
        assert made["text"] == "alice made bob a moderator of #den"
        assert (await bob.expect("notice"))["text"] == made["text"]
        # an admin outranks a room's owner: root may make anyone owner, alice may not
        assert "node moderators" in await refused(alice, "/op bob owner", "den")
        await root.join("den")
        await command(root, "/op bob owner", "den")
        staff = await command(bob, "/staff", "den")
        assert staff["text"] == "staff of #den: alice (owner), bob (owner)"


async def test_only_staff_change_the_topic_and_which_bots_read_a_room(tmp_path: Path) -> None:
    async with running(tmp_path / "node") as parts:
        alice, bob = await lobby(parts, "alice", "bob")
        await bob.send(type="topic", room="lobby", text="bob's own topic", ref="t")
        error = await bob.expect("error", ref="t")
        assert error["code"] == "forbidden"
        assert error["message"] == "only room moderators and up may set the topic"
        assert "room moderators" in await refused(bob, "/topic a coup")
        assert "room moderators" in await refused(bob, "/uninvite Olga")
        await alice.nothing()  # no topic came to anyone
        await alice.send(type="topic", room="lobby", text="welcome", ref="t")
        assert (await bob.expect("topic"))["text"] == "welcome"
        await command(alice, "/op bob")
        await bob.send(type="command", room="lobby", line="/topic bob was trusted", ref="t2")
        assert (await alice.expect("topic"))["text"] == "bob was trusted"


async def test_a_kicked_user_is_out_and_stays_out_from_every_session(tmp_path: Path) -> None:
    async with running(tmp_path / "node") as parts:
        alice, bob, carol = await lobby(parts, "alice", "bob", "carol")
        phone = await connection(parts, bob.token)  # bob's second device, in the room too
        await phone.join("lobby")
        await alice.barrier()
        answer = await command(alice, "/kick bob 10 spamming links")
        assert answer["text"] == "alice kicked bob for 10 min: spamming links"
        assert (await carol.expect("presence"))["state"] == "leave"
        told = await carol.expect("notice")
        assert told["text"] == "alice kicked bob for 10 min: spamming links"
        for device in (bob, phone):
            left = await device.expect("left", room="lobby")
            assert left["reason"] == "alice kicked you from #lobby for 10 min: spamming links"
        # he cannot come back for the penalty: not on either device, nor from a new session
        await bob.send(type="join", room="lobby", ref="j")
        error = await bob.expect("error", ref="j")
        assert error["code"] == "forbidden"
        assert error["message"].startswith("you were kicked from #lobby by alice (10 min more")
        await bob.send(type="send", room="lobby", text="still here?", ref="s")
        assert (await bob.expect("error", ref="s"))["code"] == "not_joined"
        fresh = await parts.accounts.login("bob", *await _secret(parts, "bob"))
        again = await connection(parts, fresh[1])
        assert "lobby" not in (await _ready_rooms(again))
        await again.send(type="join", room="lobby", ref="j")
        assert (await again.expect("error", ref="j"))["code"] == "forbidden"
        await carol.nothing()
        # lifted early
        await command(alice, "/unban bob")
        assert (await bob.join("lobby"))["room"]["name"] == "lobby"


async def test_staff_act_only_on_lower_ranks(tmp_path: Path) -> None:
    async with running(tmp_path / "node") as parts:
        root, alice, bob, carol = await lobby(parts, "root", "alice", "bob", "carol")
        # root made the room and is the node's admin; alice becomes a room moderator
        await command(root, "/op alice")
        assert "lower rank" in await refused(alice, "/kick root")
        assert "only room moderators" in await refused(bob, "/kick carol")
        assert "yourself" in await refused(alice, "/mute alice")
        await command(root, "/op bob")
        assert "lower rank" in await refused(alice, "/kick bob")  # moderators are equals
        answer = await command(alice, "/kick carol")
        assert answer["text"] == "alice kicked carol for 5 min"
        assert (await carol.expect("left"))["reason"] == "alice kicked you from #lobby for 5 min"
        assert "only node moderators" in await refused(alice, "/nodeban carol")
        assert "only node admins" in await refused(alice, "/grant bob moderator")


async def test_a_muted_member_reads_but_cannot_write(tmp_path: Path) -> None:
    async with running(tmp_path / "node") as parts:
        alice, bob = await lobby(parts, "alice", "bob")
        answer = await command(alice, "/mute bob 2h flooding")
        assert answer["text"] == "alice muted bob for 2 h: flooding"
        await bob.send(type="send", room="lobby", text="let me speak", ref="s")
        error = await bob.expect("error", ref="s")
        assert error["code"] == "forbidden"
        assert error["message"].startswith("you are muted here by alice (")
        assert error["message"].endswith("): flooding")
        assert "muted" in await refused(bob, "/me protests")  # /me is writing too
        await alice.say("lobby", "you can still read this")
        assert (await bob.expect("message"))["text"] == "you can still read this"
        history, _ = await parts.store.history(await parts.node.room("lobby"), None, 50)
        assert [m.text for m in history] == ["you can still read this"]
        await command(alice, "/unmute bob")
        assert (await bob.say("lobby", "thanks"))["type"] == "ack"


async def test_a_node_ban_closes_every_connection_and_refuses_new_ones(tmp_path: Path) -> None:
    async with running(tmp_path / "node") as parts:
        root, bob, carol = await lobby(parts, "root", "bob", "carol")
        await command(root, "/nodeban bob 1d ban evasion")
        assert (await carol.expect("notice"))["text"] == (
            "root banned bob from this node for 1 day: ban evasion"
        )
        assert bob.conn.close_code == 4003
        with pytest.raises(Refused, match="bob is banned from this node by root"):
            await connection(parts, bob.token)
        await command(root, "/unban bob")
        again = await connection(parts, bob.token)
        assert (await again.join("lobby"))["room"]["name"] == "lobby"


async def test_delete_and_purge_take_messages_off_every_screen_and_out_of_the_files(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "node") as parts:
        alice, bob, carol = await lobby(parts, "alice", "bob", "carol")
        own = await carol.say("lobby", "a typo I regret")
        spam = [await bob.say("lobby", f"BUY-PILLS-{i}", ref=f"b{i}") for i in range(5)]
        kept = await carol.say("lobby", "a message that stays")
        await alice.barrier()
        # one's own message: anyone; another's: staff only
        assert "only room moderators" in await refused(bob, f"/delete {kept['id']}")
        await command(carol, f"/delete {own['id']}")
        gone = await bob.expect("deleted")
        assert gone == {
            "v": 1,
            "type": "deleted",
            "room": "lobby",
            "ids": [own["id"]],
            "by": "carol",
        }
        await command(alice, f"/delete {spam[0]['id']}")
        assert (await carol.expect("deleted"))["ids"] == [spam[0]["id"]]
        answer = await command(alice, "/purge bob")
        assert answer["text"] == "alice purged 4 messages of bob"
        assert sorted((await carol.expect("deleted"))["ids"]) == sorted(s["id"] for s in spam[1:])
        room = await parts.node.room("lobby")
        history, _ = await parts.store.history(room, None, 50)
        assert [m.text for m in history] == ["a message that stays"]
        # their words are in neither the database nor its write-ahead log
        files = sorted((tmp_path / "node").glob("onionchat.sqlite3*"))
        assert any(f.name.endswith("-wal") for f in files)
        for f in files:
            data = f.read_bytes()
            assert b"BUY-PILLS" not in data and b"I regret" not in data, f.name
        assert b"stays" in b"".join(f.read_bytes() for f in files)


async def test_the_audit_log_says_who_did_what_to_whom_but_no_words(tmp_path: Path) -> None:
    async with running(tmp_path / "node") as parts:
        root, alice, bob = await lobby(parts, "root", "alice", "bob")
        await command(root, "/op alice")
        secret = await bob.say("lobby", "THE-WORDS-OF-BOB")
        await command(alice, "/mute bob 30m rude")
        await command(alice, f"/delete {secret['id']}")
        await command(alice, "/kick bob 15")
        assert "only room moderators" in await refused(bob, "/audit", "lobby")
        log = (await command(alice, "/audit"))["text"]
        lines = log.splitlines()
        assert lines[0] == "Audit log of #lobby:"
        assert [line.split(" UTC ", 1)[1].split(" (")[0] for line in lines[1:]] == [
            "root: room role moderator alice",
            "alice: mute bob",
            "alice: delete bob",
            "alice: kick bob",
        ]
        assert "rude" in lines[2] and "THE-WORDS" not in log
        assert "only node moderators" in await refused(alice, "/audit all")
        whole = (await command(root, "/audit all 2"))["text"].splitlines()
        assert whole[0] == "Audit log of the node:" and len(whole) == 3
        assert whole[-1].split(" UTC ", 1)[1].startswith("alice: kick bob in #lobby")


async def _secret(parts: Server, name: str) -> tuple[bytes]:
    user = await parts.store.user_by_key(name)
    assert user is not None
    iterations = int(FAST_AUTH["ONIONCHAT_AUTH_PBKDF2_ITERATIONS"])
    return (crypto.login_secret(PASSWORD, user.salt, iterations),)


async def _ready_rooms(m: Member) -> list[str]:
    ready = next(f for f in m.seen if f["type"] == "ready")
    return list(ready["rooms"])


# -- room modes ----------------------------------------------------------------------------


async def test_an_invite_only_room_takes_members_and_those_let_in_and_hears_knocks(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "node") as parts:
        alice, bob = await lobby(parts, "alice", "bob")
        carol = await member(parts, "carol")
        assert "only room moderators" in await refused(bob, "/mode invite on")
        answer = await command(alice, "/mode invite on")
        assert answer["text"] == "alice set #lobby invite on; modes: invite-only"
        assert (await command(carol, "/mode", "lobby"))["text"] == "modes of #lobby: invite-only"
        await carol.send(type="join", room="lobby", ref="j")
        error = await carol.expect("error", ref="j")
        assert (
            error["message"] == "#lobby is invite-only: /knock lobby asks its staff to let you in"
        )
        # a member comes back (from another device too); one who left is no member
        phone = await connection(parts, bob.token)
        assert (await phone.join("lobby"))["room"]["name"] == "lobby"
        await bob.send(type="leave", room="lobby")
        await bob.expect("left")
        await bob.send(type="join", room="lobby", ref="j")
        assert (await bob.expect("error", ref="j"))["code"] == "forbidden"
        await command(carol, "/knock lobby", None)
        knock = await alice.expect(
            "notice", text="carol knocks on #lobby: /allow carol lets them in"
        )
        assert knock["room"] == "lobby"
        assert (await command(carol, "/knock lobby", None, ref="k2"))["code"] == "rate_limited"
        await command(alice, "/allow carol")
        told = await carol.expect("notice")
        assert told["text"] == "alice let carol into #lobby: /join lobby"
        assert (await carol.join("lobby"))["room"]["name"] == "lobby"


async def test_a_moderated_room_hears_only_the_voiced_and_a_full_one_takes_nobody_more(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "node") as parts:
        alice, bob = await lobby(parts, "alice", "bob")
        await command(alice, "/mode moderated on")
        await bob.send(type="send", room="lobby", text="can I?", ref="s")
        error = await bob.expect("error", ref="s")
        assert error["message"] == "#lobby is moderated: only voiced members and staff speak"
        await alice.say("lobby", "staff speak")
        answer = await command(alice, "/voice bob")
        assert answer["text"] == "alice gave bob a voice in #lobby"
        await bob.say("lobby", "now I can")
        await command(alice, "/devoice bob")
        await bob.send(type="send", room="lobby", text="and now?", ref="s2")
        assert (await bob.expect("error", ref="s2"))["code"] == "forbidden"
        await command(alice, "/mode moderated off")
        await command(alice, "/mode limit 2")
        carol = await member(parts, "carol")
        await carol.send(type="join", room="lobby", ref="j")
        error = await carol.expect("error", ref="j")
        assert error["message"] == "#lobby is full (2 present): try later"
        await bob.send(type="leave", room="lobby")
        assert (await carol.join("lobby"))["room"]["name"] == "lobby"
        usage = await command(alice, "/mode limit lots")
        assert usage["message"] == "usage: /mode limit N|off (N from 1 to 100000)"


async def test_slow_mode_lets_a_member_write_once_every_so_many_seconds(tmp_path: Path) -> None:
    async with running(tmp_path / "node") as parts:
        alice, bob = await lobby(parts, "alice", "bob")
        await command(alice, "/mode slow 30")
        await bob.say("lobby", "one")
        await bob.send(type="send", room="lobby", text="two", ref="s")
        error = await bob.expect("error", ref="s")
        assert error["code"] == "rate_limited"
        assert error["message"] == "slow mode in #lobby: one message every 30 s; wait 30 s"
        for i in range(3):  # staff are not slowed
            await alice.say("lobby", f"staff {i}", ref=f"a{i}")
        await command(alice, "/mode slow off")
        await bob.say("lobby", "two, at last")


async def test_a_room_with_an_expiry_deletes_older_messages_from_the_files(tmp_path: Path) -> None:
    async with running(tmp_path / "node") as parts:
        alice, bob = await lobby(parts, "alice", "bob")
        room = await parts.node.room("lobby")
        old_id, _ = parts.node.new_id()
        two_hours_ago = int(time.time() * 1000) - 2 * 3_600_000
        old = Message(id=old_id, room="lobby", ts=two_hours_ago, sender="alice", text="OLD-WORDS")
        await parts.node.accept(room, old)
        await bob.expect("message", id=old_id)
        fresh = await alice.say("lobby", "fresh words")
        await command(alice, "/mode expiry 1")
        gone = await bob.expect("deleted")
        assert gone["ids"] == [old_id] and gone["by"] == "expiry"
        history, _ = await parts.store.history(room, None, 50)
        assert [m.id for m in history] == [fresh["id"]]
        for f in (tmp_path / "node").glob("onionchat.sqlite3*"):
            assert b"OLD-WORDS" not in f.read_bytes(), f.name


async def test_a_wave_of_newcomers_makes_a_room_invite_only(tmp_path: Path) -> None:
    env = {"ONIONCHAT_LIMITS_JOIN_WAVE": "3", "ONIONCHAT_LIMITS_JOIN_WAVE_SECONDS": "60"}
    async with running(tmp_path / "node", env) as parts:
        (alice,) = await lobby(parts, "alice")
        raiders = [await member(parts, f"raider{i}") for i in range(4)]
        for raider in raiders[:2]:
            await raider.join("lobby")
        assert {f["type"] for f in await alice.barrier()} == {"presence"}
        await raiders[2].join("lobby")  # the third newcomer within a minute: a wave
        told = await alice.expect("notice")
        assert told["text"].startswith("#lobby is invite-only now: 3 newcomers joined within 60 s")
        await raiders[3].send(type="join", room="lobby", ref="j")
        assert (await raiders[3].expect("error", ref="j"))["code"] == "forbidden"
        assert (await command(alice, "/mode"))["text"] == "modes of #lobby: invite-only"


# -- registration modes ----------------------------------------------------------------------


async def _register(parts: Server, name: str, invite: str | None = None) -> str:
    salt = secrets.token_bytes(16)
    iterations = int(FAST_AUTH["ONIONCHAT_AUTH_PBKDF2_ITERATIONS"])
    secret = crypto.login_secret(PASSWORD, salt, iterations)
    _, token, _ = await parts.accounts.register(name, salt, iterations, secret, invite)
    return token


async def test_an_invite_only_node_takes_newcomers_with_a_code_and_records_who_invited_them(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "node", {"ONIONCHAT_AUTH_REGISTRATION": "invite"}) as parts:
        root = await member(parts, "root")  # the first account needs no code: the admin
        with pytest.raises(AuthError) as refused_:
            await _register(parts, "bob")
        assert (refused_.value.code, refused_.value.status) == ("invite_needed", 403)
        assert str(refused_.value) == (
            "this node takes new accounts with an invite code only: ask a member for one"
        )
        answer = await command(root, "/invitecode 2 24", None)
        code = answer["text"].split()[2]
        assert answer["text"] == (
            f"invite code {code} (2 uses, 24 h): whoever registers with it is recorded as "
            "your invitee"
        )
        bob = await connection(parts, await _register(parts, "bob", code))
        await _register(parts, "carol", f" {code} ")
        with pytest.raises(AuthError, match="unknown, used up or expired"):
            await _register(parts, "dave", code)
        with pytest.raises(AuthError, match="unknown, used up or expired"):
            await _register(parts, "dave", "made-up-code")
        users = {name: inviter for name, _, _, inviter in await parts.store.users()}
        assert users == {"Olga": None, "root": None, "bob": "root", "carol": "root"}
        listed = await command(root, "/invitecodes", None)
        assert listed["text"] == f"Your invite codes:\n{code[:4]}…  used 2 of 2, done"
        # members make codes too, a few at a time, and can take them back
        mine = (await command(bob, "/invitecode", None))["text"].split()[2]
        await command(bob, f"/revokecode {mine[:4]}", None)
        with pytest.raises(AuthError, match="unknown, used up or expired"):
            await _register(parts, "erin", mine)
        for i in range(5):
            await command(bob, "/invitecode", None, ref=f"i{i}")
        assert (await command(bob, "/invitecode", None))["code"] == "too_many"


async def test_a_closed_node_takes_nobody_new(tmp_path: Path) -> None:
    async with running(tmp_path / "node", {"ONIONCHAT_AUTH_REGISTRATION": "closed"}) as parts:
        await member(parts, "root")
        with pytest.raises(AuthError) as refused_:
            await _register(parts, "bob")
        assert refused_.value.code == "registration_closed"
        assert str(refused_.value) == "this node takes no new accounts: ask its operator"


async def test_newcomers_wait_until_node_staff_admits_them(tmp_path: Path) -> None:
    async with running(tmp_path / "node", {"ONIONCHAT_AUTH_REGISTRATION": "waiting"}) as parts:
        root = await member(parts, "root")
        await root.join("lobby")
        bob = await connection(parts, await _register(parts, "bob"))
        told = await bob.expect("notice")
        assert told["text"] == (
            "you are in the waiting room: node staff will let you in, and you will be told here"
        )
        assert (await root.expect("notice"))["text"] == "bob waits to be admitted: /admit bob"
        await bob.send(type="join", room="lobby", create=True, ref="j")
        assert (await bob.expect("error", ref="j"))["message"] == told["text"]
        await bob.send(type="send", to="root", text="let me in", ref="m")
        assert (await bob.expect("error", ref="m"))["code"] == "forbidden"
        assert (await command(root, "/waiting"))["text"] == "waiting: bob"
        assert "only node moderators" in await refused(bob, "/admit bob")
        await command(root, "/admit bob")
        assert (await bob.expect("notice"))["text"] == "root let you in: join a room"
        assert (await bob.join("lobby"))["room"]["name"] == "lobby"
        assert (await command(root, "/waiting"))["text"] == "nobody is waiting"


async def test_a_waiting_room_that_nobody_watches_lets_newcomers_in(tmp_path: Path) -> None:
    env = {"ONIONCHAT_AUTH_REGISTRATION": "waiting", "ONIONCHAT_AUTH_WAITING_FALLBACK": "0.005"}
    async with running(tmp_path / "node", env) as parts:
        root = await member(parts, "root")
        await _register(parts, "early")  # the admin is connected: early waits
        root.conn.close(1000, "gone")
        parts.node.disconnect(root.conn)
        await asyncio.sleep(0.5)  # no node staff for longer than the fallback (0.3 s)
        late = await connection(parts, await _register(parts, "late"))
        assert (await late.join("lobby"))["room"]["name"] == "lobby"
        assert await parts.store.waiting() == ["early"]


async def test_a_question_of_the_nodes_own_keeps_out_who_cannot_answer_it(tmp_path: Path) -> None:
    env = {
        "ONIONCHAT_AUTH_QUESTION": "What does the onion wear?",
        "ONIONCHAT_AUTH_ANSWERS": "layers, Слои",
    }
    async with running(tmp_path / "node", env) as parts:
        with pytest.raises(AuthError) as refused_:
            await _register(parts, "bot1")
        assert refused_.value.code == "wrong_answer"
        assert str(refused_.value) == (
            "answer the node's question to register: What does the onion wear?"
        )
        salt = secrets.token_bytes(16)
        secret = crypto.login_secret(PASSWORD, salt, 1000)
        with pytest.raises(AuthError, match="that is not the answer to: What does"):
            await parts.accounts.register("bot2", salt, 1000, secret, None, "skin")
        await parts.accounts.register("ann", salt, 1000, secret, None, "  LAYERS ")
        await parts.accounts.register("пётр", salt, 1000, secret, None, "слои")
        assert [name for name, *_ in await parts.store.users()] == ["Olga", "ann", "пётр"]


async def test_a_new_account_writes_slowly_and_without_links_at_first(tmp_path: Path) -> None:
    env = {"ONIONCHAT_AUTH_NEWCOMER_MINUTES": "10", "ONIONCHAT_AUTH_NEWCOMER_RATE": "0.01"}
    async with running(tmp_path / "node", env) as parts:
        alice, bob = await lobby(parts, "alice", "bob")
        for link in ("see https://example.com/x", "www.example.org", "go to example.ru/buy"):
            await bob.send(type="send", room="lobby", text=link, ref="l")
            error = await bob.expect("error", ref="l")
            assert error["message"] == "your account is new: for 10 min more you cannot write links"
        onion = "duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion"
        await bob.send(type="send", to="alice", text=f"try {onion}", ref="d")
        assert (await bob.expect("error", ref="d"))["code"] == "forbidden"
        for i in range(5):  # the burst
            await bob.say("lobby", f"hello {i}", ref=f"h{i}")
        await bob.send(type="send", room="lobby", text="one more", ref="m")
        error = await bob.expect("error", ref="m")
        assert error["message"] == (
            "your account is new: for 10 min more you write at most 0.01 messages a second"
        )
        await alice.say("lobby", "https://staff.example/ is fine: alice owns the room")


# -- guests ----------------------------------------------------------------------------------


async def test_guests_come_in_without_an_account_and_staff_silence_or_shut_them_out_at_once(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "closed") as parts:
        with pytest.raises(AuthError) as refused_:
            await parts.accounts.guest()
        assert refused_.value.code == "no_guests"
    async with running(tmp_path / "node", {"ONIONCHAT_AUTH_GUESTS": "true"}) as parts:
        (root,) = await lobby(parts, "root")
        user, token, expires = await parts.accounts.guest()
        assert user.name.startswith("guest-") and user.role == "guest"
        assert 3.9 * 3600 < expires - time.time() <= 4 * 3600
        guest = await connection(parts, token)
        assert (await guest.join("lobby"))["room"]["name"] == "lobby"
        await guest.say("lobby", "hi, just looking")
        await guest.send(type="join", room="my-own", create=True, ref="j")
        error = await guest.expect("error", ref="j")
        assert error["message"] == "guests cannot make rooms: join one, or make an account"
        assert (await command(guest, "/invitecode", None))["code"] == "forbidden"
        with pytest.raises(AuthError, match="wrong username or password"):
            await parts.accounts.login(user.name, b"\0" * 32)  # a guest has no password
        assert (await command(root, "/guests mute"))["text"] == "guests are muted on this node now"
        await guest.send(type="send", room="lobby", text="hello?", ref="s")
        assert (await guest.expect("error", ref="s"))["message"] == (
            "guests are muted on this node now"
        )
        await command(root, "/guests out")
        assert guest.conn.close_code == 4003
        with pytest.raises(Refused, match="guests are shut out"):
            await connection(parts, token)
        with pytest.raises(AuthError, match="takes no guests now"):
            await parts.accounts.guest()
        await command(root, "/guests in")
        again = await connection(parts, token)
        await again.join("lobby")
        await again.say("lobby", "back")
        # a guest whose session ended leaves no account behind (their words stay)
        assert await parts.store.delete_idle_guests() == 0  # its session still runs
        with sqlite3.connect(tmp_path / "node" / "onionchat.sqlite3") as db:
            db.execute("UPDATE sessions SET expires = 0 WHERE user_id = ?", (user.id,))
        assert await parts.store.delete_idle_guests() == 1
        assert await parts.store.user_by_key(user.name) is None
        assert "back" in [
            m.text for m in (await parts.store.history(await parts.node.room("lobby"), None, 50))[0]
        ]


async def test_a_member_cannot_invite_a_bot_into_a_key_protected_room(tmp_path: Path) -> None:
    """The bots' door asks the authorization point too: only staff let a bot read a room."""
    async with running(tmp_path / "node") as parts:
        alice, bob = await member(parts, "alice"), await member(parts, "bob")
        await alice.join("vault", protected=True)
        await bob.send(type="join", room="vault", protected=True, ref="j")
        await bob.expect("joined", ref="j")
        sealed_ = base64.b64encode(secrets.token_bytes(200)).decode()
        await bob.send(type="invite", room="vault", to="Olga", sealed=sealed_, ref="i")
        error = await bob.expect("error", ref="i")
        assert error["code"] == "forbidden"
        assert error["message"] == "only room moderators and up may invite or uninvite bots"
        await alice.send(type="invite", room="vault", to="Olga", sealed=sealed_, ref="i")
        answer = await alice.expect("notice", ref="i")  # past the door: Olga looks at the key
        assert answer["text"].startswith("Olga cannot open that key")


async def test_a_locked_down_room_takes_nobody_new_and_hears_only_the_voiced(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "node") as parts:
        alice, bob, vic = await lobby(parts, "alice", "bob", "vic")
        carol = await member(parts, "carol")
        await command(alice, "/voice vic")
        said = await command(alice, "/mode lockdown on")
        assert said["text"] == "alice set #lobby lockdown on; modes: locked down"
        await bob.send(type="send", room="lobby", text="hey", ref="s")
        error = await bob.expect("error", ref="s")
        assert error["message"] == "#lobby is locked down: only voiced members and staff speak"
        await vic.say("lobby", "voiced, so heard")
        await carol.send(type="join", room="lobby", ref="j")
        error = await carol.expect("error", ref="j")
        assert (
            error["message"] == "#lobby is locked down: /knock lobby asks its staff to let you in"
        )
        await command(alice, "/mode lockdown off")
        await bob.say("lobby", "heard again")
        assert (await carol.join("lobby"))["room"]["name"] == "lobby"
