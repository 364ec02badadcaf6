"""Key-protected rooms that hold against insiders, in the browser client (Debian's Chromium
against a real node): forged invitations, invite links and form ticks never replace a room
key, replayed and forged boxes are shown as rejected, plain text is said to be plain, keys
follow their account (and only it), and fingerprints are the CLI's."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from playwright.async_api import Browser, Page, WebSocketRoute, expect
from test_nojs import register_in
from test_nojs import say as nojs_say
from test_web_identity import identity_key
from test_web_input import until

from onionchat import crypto, sealed

from conftest import PASSWORD, Client, NodeProcess, connect, login, pipe_client, register, user
from test_web import (
    log_in,
    open_page,
    open_room,
    publish_identity,
    say,
    shot,
    sign_up,
    texts,
)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def key_of(client: Client, name: str) -> dict[str, Any]:
    await client.send(type="key", user=name, ref=f"key-{name}")
    answer: dict[str, Any] = await client.expect("key", ref=f"key-{name}")
    return answer


async def enter(client: Client, room: str) -> dict[str, Any]:
    """Join an existing room, whatever its mode (a member without its key does)."""
    await client.send(type="join", room=room, ref=f"join-{room}")
    joined: dict[str, Any] = await client.expect("joined", ref=f"join-{room}")
    return joined


async def link_key(page: Page) -> bytes:
    link = await page.get_by_label("Invite link").input_value()
    return crypto.decode_key(link.rsplit("key=", 1)[1])


def alerts(page: Page) -> Any:
    return page.locator("#alerts li")


async def test_a_forged_invitation_never_replaces_the_room_key(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as a, open_page(browser, node) as b:
        alice, bob = a.page, b.page
        await sign_up(alice, "alice")
        await sign_up(bob, "bob")
        await identity_key(bob)
        await open_room(alice, "vault", protected=True)
        await say(alice, "the real key opens this")
        await say(alice, "/invite bob")
        await bob.locator("#rooms button", has_text="#vault").click()
        await expect(texts(bob)).to_have_text(["the real key opens this"])
        async with user(node, "mallory") as mallory:
            _, signer = await publish_identity(mallory)
            await enter(mallory, "vault")
            bob_public = base64.b64decode((await key_of(mallory, "bob"))["public"])
            hers = crypto.new_room_key()
            own = sealed.seal_invitation(
                hers, bob_public, signer, room="vault", sender="mallory", to="bob"
            )
            await mallory.send(type="invite", room="vault", to="bob", sealed=own, ref="i1")
            await mallory.expect("notice", ref="i1")
            # said, kept, and offered only as an explicit choice
            offer = alerts(bob).filter(has_text="mallory invited you")
            await expect(offer).to_have_text(
                re.compile(r"mallory invited you to #vault with a different key: you keep yours\.")
            )
            await expect(offer.get_by_role("button", name="Use mallory's key")).to_be_visible()
            await shot(bob, "keys-forged-invitation")
            # the same, claiming to come from alice: refused, with who and why
            as_alice = sealed.seal_invitation(
                hers, bob_public, signer, room="vault", sender="alice", to="bob"
            )
            await mallory.send(type="invite", room="vault", to="bob", sealed=as_alice, ref="i2")
            await mallory.expect("notice", ref="i2")
            await expect(bob.locator("#notice")).to_have_text(
                "mallory's invitation to #vault is refused: it was signed as from alice, "
                "not mallory. Its key is not used."
            )
            # the honest members keep reading each other, and mallory's key opens nothing
            await say(bob, "bob still writes under the real key")
            written = await mallory.expect("message", sender="bob")
            with pytest.raises(crypto.CryptoError):
                sealed.open_body([hers], written["box"])
            await say(alice, "and alice reads it")
            both = [
                "the real key opens this",
                "bob still writes under the real key",
                "and alice reads it",
            ]
            await expect(texts(alice)).to_have_text(both)
            await expect(texts(bob)).to_have_text(both)
            await expect(bob.locator("#messages .failed, #messages .rejected")).to_have_count(0)
        # a new connection gets the invitations again: the key stays the real one
        await bob.reload()
        await expect(bob.locator("#status")).to_have_text("connected")
        await bob.locator("#rooms button", has_text="#vault").click()
        await expect(texts(bob)).to_have_text(both)
        await a.assert_clean()
        await b.assert_clean()


async def test_an_invite_link_with_another_key_asks_first(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as watched, user(node, "reader") as reader:
        page = watched.page
        await sign_up(page, "alice")
        await open_room(page, "vault", protected=True)
        mine = await link_key(page)
        await say(page, "under my key")
        await enter(reader, "vault")
        other = crypto.new_room_key()
        await page.goto(f"{node.url}/#room=vault&key={crypto.encode_key(other)}")
        question = alerts(page).filter(has_text="invite link")
        await expect(question).to_contain_text(
            "The invite link's key for #vault is not the one you have: you keep yours"
        )
        await expect(texts(page)).to_have_text(["under my key"])
        await say(page, "still under my key")
        written = await reader.expect("message", sender="alice")
        assert sealed.open_body([mine], written["box"]).text == "still under my key"
        await question.get_by_role("button", name="Keep mine").click()
        await expect(question).to_have_count(0)
        # asked again, the user now takes the link's key: the newest, the old one kept
        await page.goto(f"{node.url}/#room=vault&key={crypto.encode_key(other)}")
        await question.get_by_role("button", name="Use the link's key").click()
        await expect(page.locator("#notice")).to_contain_text("the link's key is used from now on")
        await say(page, "under the link's key")
        written = await reader.expect("message", sender="alice")
        assert sealed.open_body([other], written["box"]).text == "under the link's key"
        await expect(texts(page)).to_have_text(
            ["under my key", "still under my key", "under the link's key"]
        )
        await watched.assert_clean()


async def test_ticking_key_protected_on_an_existing_name_is_refused(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "alice")
        await open_room(page, "vault", protected=True)
        await say(page, "history under the first key")
        for name, kind in (("vault", "key-protected"), ("lobby", "open")):
            await page.get_by_label("Join or create a room").fill(name)
            await page.get_by_label("key-protected").check()
            await page.get_by_role("button", name="Join", exact=True).click()
            await expect(page.locator("#notice")).to_have_text(
                f"#{name} already exists ({kind}): join it, or choose another name. No new key "
                'was made: to enter it, join it without "key-protected".'
            )
            await expect(page.locator("#notice")).to_have_class(re.compile("error"))
            await expect(page.locator("#room-title")).to_have_text("#vault")
        await expect(texts(page)).to_have_text(["history under the first key"])
        # the name unticked joins the room as it is, with the key it had
        await page.get_by_label("key-protected").uncheck()
        await open_room(page, "lobby")
        await page.locator("#rooms button", has_text="#vault").click()
        await say(page, "same key as before")
        await expect(texts(page)).to_have_text(
            ["history under the first key", "same key as before"]
        )
        await watched.assert_clean()


async def test_replayed_and_forged_boxes_are_rejected_visibly(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as a, open_page(browser, node) as b:
        alice, bob = a.page, b.page
        await sign_up(alice, "alice")
        await sign_up(bob, "bob")
        await identity_key(bob)
        await open_room(alice, "vault", protected=True)
        key = await link_key(alice)
        await say(alice, "/invite bob")
        await bob.locator("#rooms button", has_text="#vault").click()
        await expect(bob.locator("#room-title")).to_have_text("#vault")
        async with user(node, "mallory") as mallory, user(node, "eve") as eve:
            await enter(mallory, "vault")
            await say(alice, "/op mallory")  # only staff set the topic: a moderator gone bad
            await mallory.expect("notice")
            await say(alice, "words of alice")
            original = await mallory.expect("message", sender="alice")
            stolen = original["box"]
            # mallory, without the key: alice's box under her own name, as /me, as the topic
            await mallory.send(type="send", room="vault", box=stolen, ref="r1")
            await mallory.expect("ack", ref="r1")
            await mallory.send(type="send", room="vault", box=stolen, me=True, ref="r2")
            await mallory.expect("ack", ref="r2")
            await mallory.send(type="topic", room="vault", box=stolen, ref="r3")
            await mallory.expect("topic", ref="r3")
            not_hers = "[rejected: it was written by alice, not by mallory]"
            for page in (alice, bob):
                await expect(texts(page)).to_have_text(["words of alice", not_hers, not_hers])
                await expect(page.locator("#messages .rejected")).to_have_count(2)
                await expect(page.locator("#messages li.action")).to_have_count(0)
                await expect(page.locator("#topic")).to_have_text(f"Topic: {not_hers}")
                await expect(page.locator("#topic")).to_have_class(re.compile("rejected"))
            # eve holds the key: a box claiming alice, one signed with a key not hers, and a
            # replay of her own box are rejected; her own box is hers
            _, signer = await publish_identity(eve)
            await enter(eve, "vault")

            def box(text: str, sender: str = "eve", by: Any = signer) -> str:
                return sealed.seal_body(
                    key, by, room="vault", sender=sender, kind="message", text=text
                )

            other_signer = sealed.signing_key(crypto.new_identity()[0])
            mine = box("eve's own words")
            for i, sent in enumerate(
                (box("alice says so", sender="alice"), box("signed by another", by=other_signer))
            ):
                await eve.send(type="send", room="vault", box=sent, ref=f"e{i}")
                await eve.expect("ack", ref=f"e{i}")
            for ref in ("own", "again"):
                await eve.send(type="send", room="vault", box=mine, ref=ref)
                await eve.expect("ack", ref=ref)
            expected = [
                "words of alice",
                not_hers,
                not_hers,
                "[rejected: it was written by alice, not by eve]",
                "[rejected: the signature is not eve's]",
                "eve's own words",
                "[rejected: sent before: a replay]",
            ]
            for page in (alice, bob):
                await expect(texts(page)).to_have_text(expected)
            await shot(bob, "keys-rejected")
            # the honest members keep reading each other
            await say(bob, "bob answers")
            await expect(texts(alice).last).to_have_text("bob answers")
            await say(alice, "/topic the real topic")
            await expect(bob.locator("#topic")).to_have_text("Topic: the real topic")
        await a.assert_clean()
        await b.assert_clean()


async def test_a_plain_direct_message_is_marked_not_sealed(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "bob")
        await identity_key(page)
        async with user(node, "mallory") as mallory:
            await mallory.send(type="send", to="bob", text="in the clear", ref="p")
            await mallory.expect("ack", ref="p")
        conversation = page.locator("#rooms button", has_text="@mallory")
        await expect(conversation.locator(".tag")).to_have_text("not sealed")  # no key badge
        await conversation.click()
        await expect(texts(page)).to_have_text(["in the clear"])
        await shot(page, "keys-not-sealed")
        item = page.locator("#messages li.message")
        await expect(item.locator(".plain")).to_have_text("not sealed")
        await expect(page.locator("#room-mode")).to_have_text(
            "end-to-end encrypted, but for the messages marked not sealed"
        )
        # the no-JS pages' /msg sends plain text too
        nojs = await browser.new_context(java_script_enabled=False)
        try:
            plain = await nojs.new_page()
            await register_in(plain, node, "carol")
            await plain.get_by_label("Room").fill("lobby")
            await plain.get_by_role("button", name="Join").click()
            await nojs_say(plain, "/msg bob from a page without JavaScript")
            await expect(plain.locator(".answer")).to_contain_text("not sealed")
        finally:
            await nojs.close()
        await page.locator("#rooms button", has_text="@carol").click()
        await expect(texts(page)).to_have_text(["from a page without JavaScript"])
        await expect(page.locator("#messages li.message .plain")).to_have_text(["not sealed"])
        # carol has no identity key: the reply goes in the clear too, said and marked so
        await say(page, "plain back")
        await expect(page.locator("#notice")).to_contain_text(
            "carol has no identity key (the chat without JavaScript makes none): this message "
            'goes in the clear, marked "not sealed"'
        )
        await expect(page.locator("#messages li.message .plain")).to_have_text(
            ["not sealed", "not sealed"]
        )
        await watched.assert_clean()


async def test_the_keyring_follows_the_account_and_only_it(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as first:
        await sign_up(first.page, "alice")
        await open_room(first.page, "vault", protected=True)
        key = await link_key(first.page)
        await say(first.page, "kept in the keyring")
        await first.assert_clean()
    # a fresh profile: nothing stored here, yet the room opens
    async with open_page(browser, node) as second:
        page = second.page
        # what an older page left under the room's name is dropped, never used
        await page.evaluate(
            "(k) => localStorage.setItem('onionchat.key.vault', k)",
            crypto.encode_key(crypto.new_room_key()),
        )
        await page.reload()
        await log_in(page, "alice")
        await expect(page.locator("#status")).to_have_text("connected")
        await page.locator("#rooms button", has_text="#vault").click()
        await expect(texts(page)).to_have_text(["kept in the keyring"])
        await say(page, "written from the second profile")
        await page.get_by_role("button", name="Log out").click()
        await expect(page.locator("#login-error")).to_have_text("You are logged out.")
        stored = await page.evaluate(
            "() => [...Object.keys(localStorage), ...Object.keys(sessionStorage)]"
        )
        assert stored == []
        # the next account on the same browser reads nothing of alice's rooms
        await sign_up(page, "carol")
        await expect(page.locator("#rooms")).not_to_contain_text("#vault")
        await open_room(page, "vault")
        await expect(page.locator("#messages .failed")).to_have_text(
            ["[cannot decrypt: this device has no key for this room]"] * 2
        )
        values = await page.evaluate(
            "() => [...Object.values(localStorage), ...Object.values(sessionStorage)]"
        )
        assert crypto.encode_key(key) not in values
        assert not any(
            k.startswith("onionchat.key.")
            for k in await page.evaluate("() => Object.keys(localStorage)")
        )
        await second.assert_clean()


async def test_whois_shows_the_fingerprint_and_a_changed_key_is_warned(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as watched, user(node, "dan") as dan:
        page = watched.page
        await sign_up(page, "alice")
        await identity_key(page)
        _, first = await publish_identity(dan)
        answer = await key_of(dan, "alice")
        alice_fp = sealed.fingerprint(
            base64.b64decode(answer["public"]), base64.b64decode(answer["signing"])
        )
        await say(page, "/whois")
        await expect(page.locator("#notice")).to_have_text(f"your fingerprint: {alice_fp}")
        await expect(page.locator("#identity-fingerprint")).to_have_text(f"fingerprint {alice_fp}")
        mine = await key_of(dan, "dan")
        dan_fp = sealed.fingerprint(
            base64.b64decode(mine["public"]), base64.b64decode(mine["signing"])
        )
        await say(page, "/whois DAN")
        await expect(page.locator("#notice")).to_have_text(
            f"dan's fingerprint: {dan_fp} (the key first seen for dan)"
        )
        # dan's key changes: warned in the room shared with dan, his new boxes rejected
        await open_room(page, "vault", protected=True)
        key = await link_key(page)
        await enter(dan, "vault")

        async def dan_says(text: str, signer: nacl.signing.SigningKey, ref: str) -> None:
            body = sealed.seal_body(
                key, signer, room="vault", sender="dan", kind="message", text=text
            )
            await dan.send(type="send", room="vault", box=body, ref=ref)
            await dan.expect("ack", ref=ref)

        await dan_says("with the first key", first, "d1")
        await expect(texts(page)).to_have_text(["with the first key"])
        secret, second = await publish_identity(dan, ref="id2")
        await dan_says("with a new key", second, "d2")
        new_fp = sealed.fingerprint(crypto.public_of(secret), sealed.signing_public(secret))
        warning = alerts(page).filter(has_text="key changed")
        await expect(warning).to_contain_text(f"dan's key changed: {dan_fp} → {new_fp}; /whois dan")
        await expect(texts(page)).to_have_text(
            [
                "with the first key",
                "[rejected: the signature is not dan's (dan's key changed: /whois dan)]",
            ]
        )
        await shot(page, "keys-changed")
        await say(page, "/whois dan")
        await expect(page.locator("#notice")).to_contain_text(
            f"dan's fingerprint: {new_fp}: NOT the key first seen for dan ({dan_fp})"
        )
        await say(page, "/trust dan")
        await expect(page.locator("#notice")).to_have_text(f"dan's new key is trusted: {new_fp}")
        await expect(warning).to_have_count(0)
        await expect(texts(page)).to_have_text(["with the first key", "with a new key"])
        await watched.assert_clean()


async def test_a_locked_tab_unlocks_with_the_password_in_place(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "alice")
        public = await identity_key(page)
        await open_room(page, "vault", protected=True)
        await say(page, "behind the lock")
        # a second tab of the same session: it has the cookie, not the wrapping key
        await page.evaluate("sessionStorage.clear()")
        await page.reload()
        await expect(page.locator("#status")).to_have_text("connected")
        await page.locator("#rooms button", has_text="#vault").click()
        await expect(page.locator("#messages .failed")).to_have_text(
            ["[cannot decrypt: your keys are locked in this tab: unlock them with your password]"]
        )
        await shot(page, "keys-locked-tab")
        unlock = page.get_by_label("Unlock this tab")
        await unlock.fill("not the password")
        await page.get_by_role("button", name="Unlock").click()
        await expect(page.locator("#unlock-error")).to_have_text(
            "this password does not open your identity key"
        )
        await unlock.fill(PASSWORD)
        await page.get_by_role("button", name="Unlock").click()
        await expect(page.locator("#identity-key")).to_have_text(public)
        await expect(page.locator("#unlock")).to_be_hidden()
        await expect(texts(page)).to_have_text(["behind the lock"])
        await say(page, "and unlocked")
        await expect(texts(page)).to_have_text(["behind the lock", "and unlocked"])
        await watched.assert_clean()


def wrapping_key(node: NodeProcess, name: str) -> bytes:
    """The wrapping key the account's password derives (what every client of it derives)."""
    with sqlite3.connect(node.data_dir / "onionchat.sqlite3") as db:
        salt, iterations = db.execute(
            "SELECT salt, iterations FROM users WHERE name = ?", (name,)
        ).fetchone()
    return crypto.wrapping_key(PASSWORD, salt, iterations)


def stored_keyring(node: NodeProcess, name: str) -> tuple[str, int]:
    with sqlite3.connect(node.data_dir / "onionchat.sqlite3") as db:
        ring, version = db.execute(
            "SELECT keyring, keyring_version FROM users WHERE name = ?", (name,)
        ).fetchone()
    return ring, version


async def test_a_keyring_changed_elsewhere_is_merged_not_overwritten(
    node: NodeProcess, browser: Browser
) -> None:
    """Another device stores the keyring while this page did not hear of it: the page's next
    store is refused (`conflict`), and it merges the node's and stores both."""
    async with open_page(browser, node) as watched:
        page = watched.page
        dropped: list[str] = []

        def route(ws: WebSocketRoute) -> None:
            server = ws.connect_to_server()
            ws.on_message(server.send)

            def from_node(message: str | bytes) -> None:
                kept = []
                for line in str(message).split("\n"):
                    frame = json.loads(line)
                    if frame["type"] == "keyring" and "ref" not in frame and not dropped:
                        dropped.append(line)  # the other device's push, lost on the way
                    else:
                        kept.append(line)
                if kept:
                    ws.send("\n".join(kept))

            server.on_message(from_node)

        await page.route_web_socket(re.compile(r"/ws$"), route)
        await sign_up(page, "alice")
        await open_room(page, "first", protected=True)
        first = await link_key(page)
        await say(page, "in the first room")
        wrap = wrapping_key(node, "alice")
        sealed_ring, version = stored_keyring(node, "alice")
        assert sealed.Keyring.open(wrap, sealed_ring).rooms == {"first": [first]}
        # another device of alice's adds a room
        elsewhere = crypto.new_room_key()
        token = (await login(node, "alice")).json()["token"]
        async with connect(node, token) as phone:
            ring = sealed.Keyring.open(wrap, sealed_ring)
            ring.add("elsewhere", elsewhere)
            await phone.send(type="keyring", sealed=ring.seal(wrap), version=version + 1, ref="p")
            await phone.expect("keyring", ref="p")
        await until(lambda: len(dropped) == 1)
        # this page, not knowing, makes a room: refused, merged, stored again
        await open_room(page, "second", protected=True)
        second = await link_key(page)
        await until(lambda: stored_keyring(node, "alice")[1] == version + 2)
        merged = sealed.Keyring.open(wrap, stored_keyring(node, "alice")[0])
        assert merged.rooms == {"first": [first], "elsewhere": [elsewhere], "second": [second]}
        await watched.assert_clean()


async def test_an_identity_without_a_signing_key_gets_one(
    node: NodeProcess, browser: Browser
) -> None:
    """An account whose identity an older client published has no signing key: the page
    derives it from the unwrapped secret and publishes it, the same identity otherwise."""
    token = await register(node, "oleg")
    secret, public = crypto.new_identity()
    wrapped = crypto.wrap_identity(wrapping_key(node, "oleg"), secret)
    async with connect(node, token) as old:
        await old.send(type="identity", public=b64(public), wrapped=wrapped, ref="old")
        assert "signing" not in await old.expect("identity", ref="old")
    async with open_page(browser, node) as watched, user(node, "asker") as asker:
        await log_in(watched.page, "oleg")
        assert await identity_key(watched.page) == b64(public)
        expected = b64(sealed.signing_public(secret))
        for _ in range(50):
            answer = await key_of(asker, "oleg")
            if answer.get("signing"):
                break
            await asyncio.sleep(0.1)
        assert answer["signing"] == expected and answer["public"] == b64(public)
        await watched.assert_clean()


async def test_an_invitation_key_is_taken_only_if_it_opens_the_room(
    node: NodeProcess, browser: Browser
) -> None:
    """Without a key for the room, a page takes an invitation's key only if it opens what
    others wrote there: a member's own boxes under a key of their own prove nothing."""
    async with open_page(browser, node) as a, open_page(browser, node) as b:
        alice, bob = a.page, b.page
        await sign_up(alice, "alice")
        await sign_up(bob, "bob")
        await identity_key(bob)
        await open_room(alice, "vault", protected=True)
        await say(alice, "alice's first words")
        async with user(node, "mallory") as mallory:
            _, signer = await publish_identity(mallory)
            await enter(mallory, "vault")
            hers = crypto.new_room_key()
            body = sealed.seal_body(
                hers, signer, room="vault", sender="mallory", kind="message", text="mine"
            )
            await mallory.send(type="send", room="vault", box=body, ref="m")
            await mallory.expect("ack", ref="m")
            bob_public = base64.b64decode((await key_of(mallory, "bob"))["public"])
            forged = sealed.seal_invitation(
                hers, bob_public, signer, room="vault", sender="mallory", to="bob"
            )
            await mallory.send(type="invite", room="vault", to="bob", sealed=forged, ref="i")
            await mallory.expect("notice", ref="i")
            await expect(bob.locator("#notice")).to_have_text(
                "mallory invited you to #vault: it is in your room list, open it to join"
            )
            await bob.locator("#rooms button", has_text="#vault").click()
            await expect(bob.locator("#notice")).to_have_text(
                "mallory's key for #vault does not open its messages: not used"
            )
            await expect(texts(bob)).to_have_text(
                ["[cannot decrypt: this device has no key for this room]"] * 2
            )
            # alice's invitation brings the key that opens what she wrote: taken
            await say(alice, "/invite bob")
            await expect(texts(bob)).to_have_text(
                ["alice's first words", "[cannot decrypt: wrong room key or damaged message]"]
            )
            await say(bob, "bob is in")
            await expect(texts(alice).last).to_have_text("bob is in")
        await a.assert_clean()
        await b.assert_clean()


async def test_a_long_sealed_history_is_checked_in_turns(
    node: NodeProcess, browser: Browser
) -> None:
    """A joined page of signed boxes is more than one turn of checks (tweetnacl's Ed25519 is
    slow): every one is checked all the same, and reads as written."""
    key = crypto.new_room_key()
    token = await register(node, "writer")
    sent = [f"sealed line {i:02}" for i in range(50)]
    async with connect(node, token) as writer:
        _, signer = await publish_identity(writer)
        await writer.join("vault", protected=True)
        for i, text in enumerate(sent):
            box = sealed.seal_body(
                key, signer, room="vault", sender="writer", kind="message", text=text
            )
            await writer.send(type="send", room="vault", box=box, ref=str(i))
            await writer.expect("ack", ref=str(i))
    async with open_page(browser, node) as watched:
        page = watched.page
        await page.goto(f"{node.url}/#room=vault&key={crypto.encode_key(key)}")
        await sign_up(page, "reader")
        await expect(page.locator("#room-title")).to_have_text("#vault")
        await expect(texts(page)).to_have_text(sent)
        await expect(page.locator("#messages .pending, #messages .rejected")).to_have_count(0)
        await watched.assert_clean()


async def test_after_a_kick_the_owner_rotates_the_key_and_the_kicked_reads_nothing_after(
    node: NodeProcess, browser: Browser, password_file: Path, tmp_path: Path
) -> None:
    """Issue 14, in the browser: alice (the room's maker) kicks mallory, who holds the key, and
    types /rotate: her page makes a new key and seals it to every member the node lists; bob's
    page and carol's command-line client take it (the node says alice is staff there); what is
    written after opens with the new key only, and the old words with the old one still."""
    async with open_page(browser, node) as a, open_page(browser, node) as b:
        alice, bob = a.page, b.page
        await sign_up(alice, "alice")
        await sign_up(bob, "bob")
        await identity_key(bob)
        await open_room(alice, "vault", protected=True)
        key = await link_key(alice)
        await say(alice, "/invite bob")
        await bob.locator("#rooms button", has_text="#vault").click()
        await expect(bob.locator("#room-title")).to_have_text("#vault")
        await register(node, "carol")
        carol_home = {"HOME": str(tmp_path / "carol"), "XDG_DATA_HOME": str(tmp_path / "carol")}
        (tmp_path / "carol").mkdir()
        link = f"{node.url}/#room=vault&key={crypto.encode_key(key)}"
        async with (
            pipe_client(link, "carol", password_file, env=carol_home) as carol,
            user(node, "mallory") as mallory,
        ):
            await carol.next(type="joined")
            await enter(mallory, "vault")
            await say(alice, "before the kick")
            before = await mallory.expect("message", sender="alice")
            assert sealed.open_body([key], before["box"]).text == "before the kick"
            await say(alice, "/kick mallory 60 leaking")
            await mallory.expect("left")
            await say(alice, "/rotate")
            taken = await carol.next(type="key", outcome="rotated")
            assert taken["from"] == "alice"
            await expect(bob.locator("#notice")).to_contain_text(
                "alice made a new key for #vault: yours from now on"
            )
            await say(alice, "after the kick")
            shown = await carol.next(type="message", sender="alice", text="after the kick")
            assert shown["decrypted"] is True
            await expect(texts(bob)).to_have_text(["before the kick", "after the kick"])
            await say(bob, "bob seals with the new key")
            await carol.next(type="message", sender="bob", text="bob seals with the new key")
    with sqlite3.connect(node.data_dir / "onionchat.sqlite3") as db:
        boxes = [
            r[0] for r in db.execute("SELECT box FROM messages WHERE box IS NOT NULL ORDER BY id")
        ]
    assert sealed.open_body([key], boxes[0]).text == "before the kick"
    assert len(boxes) == 3
    for box in boxes[1:]:
        with pytest.raises(crypto.CryptoError):
            sealed.open_body([key], box)
