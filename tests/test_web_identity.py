"""Identity keys, sealed invitations and direct messages in the browser client, in Debian's
Chromium against a real node: two browser users, and a second browser profile."""

from __future__ import annotations

import base64
import re
import sqlite3
from pathlib import Path

import nacl.public
from playwright.async_api import Browser, Page, expect

from onionchat import crypto
from onionchat.sealed import open_invitation

from conftest import PASSWORD, NodeProcess, pipe_client, register
from test_web import Watched, log_in, open_page, open_room, refused, say, shot, sign_up, texts

PUBLIC_KEY = re.compile(r"^[A-Za-z0-9+/]{43}=$")


def database(node: NodeProcess) -> sqlite3.Connection:
    return sqlite3.connect(node.data_dir / "onionchat.sqlite3")


async def identity_key(page: Page) -> str:
    key = page.locator("#identity-key")
    await expect(key).to_have_text(PUBLIC_KEY)
    return await key.inner_text()


async def wrapping_key_kept_in_this_tab_only(
    watched: Watched, node: NodeProcess, name: str
) -> None:
    """The tab holds the wrapping key the protocol derives, in sessionStorage alone."""
    stored = await watched.page.evaluate(
        """() => ({
          session: sessionStorage.getItem("onionchat.wrap"),
          local: Object.keys(localStorage).map((k) => localStorage.getItem(k)),
        })"""
    )
    with database(node) as db:
        salt, iterations = db.execute(
            "SELECT salt, iterations FROM users WHERE name = ?", (name,)
        ).fetchone()
    expected = crypto.encode_key(crypto.wrapping_key(PASSWORD, salt, iterations))
    assert stored["session"] == expected
    assert expected not in stored["local"]


async def test_a_sealed_invitation_and_a_second_profile(
    node: NodeProcess, browser: Browser
) -> None:
    await register(node, "dave")  # an account that never made an identity key
    async with open_page(browser, node) as a, open_page(browser, node) as b:
        alice, bob = a.page, b.page
        await sign_up(alice, "alice")
        await sign_up(bob, "bob")
        bob_key = await identity_key(bob)
        await wrapping_key_kept_in_this_tab_only(b, node, "bob")
        await open_room(alice, "vault", protected=True)
        await say(alice, "the combination is 1234")
        notice = alice.locator("#notice")
        # refused lines stay in the box, the reason next to them
        await refused(
            alice,
            "/invite dave",
            "dave has not logged in with a browser/CLI that made an identity key yet",
        )
        await refused(alice, "/invite nobody", "there is no user 'nobody'")
        await say(alice, "/invite bob")
        await expect(notice).to_have_text("invited bob to #vault")
        await expect(alice.locator("#composer-error")).to_be_hidden()
        await expect(bob.locator("#notice")).to_contain_text("alice invited you to #vault")
        vault = bob.locator("#rooms button", has_text="#vault")
        await expect(vault.locator(".tag")).to_have_text(["key", "invited"])
        await shot(bob, "invited")
        await vault.click()
        await expect(bob.locator("#room-title")).to_have_text("#vault")
        await expect(texts(bob)).to_have_text(["the combination is 1234"])
        await say(bob, "got it, thanks")
        await expect(texts(alice)).to_have_text(["the combination is 1234", "got it, thanks"])
        await shot(alice, "invited-room")
        await a.assert_clean()
        await b.assert_clean()
    # A fresh profile (no localStorage, no sessionStorage) logging in as bob restores the
    # same identity key from the node, and with it opens the invitation on its own.
    async with open_page(browser, node) as c:
        page = c.page
        await log_in(page, "bob")
        await expect(page.locator("#status")).to_have_text("connected")
        assert await identity_key(page) == bob_key
        await page.locator("#rooms button", has_text="#vault").click()
        await expect(texts(page)).to_have_text(["the combination is 1234", "got it, thanks"])
        await expect(page.locator("#messages .failed")).to_have_count(0)
        await shot(page, "second-profile")
        # a wrapping key that does not open it (a changed password, say) is said plainly,
        # and the key on the node is kept, never replaced behind the user's back
        wrong = crypto.encode_key(crypto.new_room_key())
        await page.evaluate("(k) => sessionStorage.setItem('onionchat.wrap', k)", wrong)
        await page.reload()
        await expect(page.locator("#status")).to_have_text("connected")
        await expect(page.locator("#identity-state")).to_have_text(
            "Your identity key cannot be unwrapped with this password: invitations and "
            "direct messages cannot be opened."
        )
        await expect(page.locator("#identity-key")).to_have_text("")
        await c.assert_clean()
    with database(node) as db:
        public, wrapped = db.execute(
            "SELECT public_key, wrapped_key FROM users WHERE name = 'bob'"
        ).fetchone()
        (sealed,) = db.execute("SELECT sealed FROM invitations").fetchone()
        salt, iterations = db.execute(
            "SELECT salt, iterations FROM users WHERE name = 'bob'"
        ).fetchone()
    assert public == bob_key
    # what the node holds opens only with the password-derived wrapping key
    secret = crypto.unwrap_identity(crypto.wrapping_key(PASSWORD, salt, iterations), wrapped)
    assert bytes(nacl.public.PrivateKey(secret).public_key) == base64.b64decode(public)
    assert len(open_invitation(sealed, secret).key) == 32


async def test_direct_messages_between_two_browsers(node: NodeProcess, browser: Browser) -> None:
    async with open_page(browser, node) as a, open_page(browser, node) as b:
        alice, bob = a.page, b.page
        await sign_up(alice, "alice")
        await sign_up(bob, "bob")
        await identity_key(bob)
        # a member's button opens the conversation; the composer then talks in it
        await alice.get_by_role("button", name="Direct message to bob").click()
        await expect(alice.locator("#room-title")).to_have_text("@bob")
        await expect(alice.locator("#members-title")).to_have_text("Conversation")
        # both people, not who is online (nothing says bob is): no green dot
        people = alice.locator("#member-list li.person")
        await expect(people).to_have_text(["alice", "bob"])
        dot = await people.last.evaluate("(li) => getComputedStyle(li, '::before').content")
        assert dot == '"·"'
        await say(alice, "psst, the eagle has landed")
        await expect(texts(alice)).to_have_text(["psst, the eagle has landed"])
        conversation = bob.locator("#rooms button", has_text="@alice")
        await expect(conversation.locator(".badge")).to_have_text("1")
        await conversation.click()
        await expect(bob.locator("#room-title")).to_have_text("@alice")
        await expect(texts(bob)).to_have_text(["psst, the eagle has landed"])
        await say(bob, "loud and clear")  # the composer in a conversation answers in it
        await say(bob, "/me nods")
        await expect(alice.locator("#messages li.action")).to_contain_text("* bob nods")
        await say(alice, "/msg bob one more thing")
        both = ["psst, the eagle has landed", "loud and clear", "nods", "one more thing"]
        await expect(texts(alice)).to_have_text(both)
        await expect(texts(bob)).to_have_text(both)
        await shot(bob, "direct")
        await refused(bob, "/msg carol hello", "there is no user 'carol'")  # said plainly
        await bob.get_by_label("Message", exact=True).fill("")
        # a reload keeps the wrapping key in this tab: the history still opens
        await alice.reload()
        await expect(alice.locator("#status")).to_have_text("connected")
        await alice.locator("#rooms button", has_text="@bob").click()
        await expect(texts(alice)).to_have_text(both)
        # without it (a new tab of a restored session), the page says what to do
        await alice.evaluate("sessionStorage.clear()")
        await alice.reload()
        await expect(alice.locator("#identity-state")).to_contain_text("log in again")
        await alice.locator("#rooms button", has_text="@bob").click()
        await expect(alice.locator("#messages .failed")).to_have_count(4)
        await expect(alice.locator("#messages .failed").first).to_contain_text(
            "[cannot decrypt: your identity key is locked in this tab"
        )
        await shot(alice, "identity-locked")
        await a.assert_clean()
        await b.assert_clean()
    node.stop()
    with database(node) as db:
        rows = db.execute(
            "SELECT m.text, m.box FROM messages m JOIN rooms r ON r.id = m.room_id"
            " WHERE r.name = '@alice+bob' ORDER BY m.id"
        ).fetchall()
    assert len(rows) == 4 and all(text is None and box for text, box in rows)
    raw = b"".join(p.read_bytes() for p in node.data_dir.glob("onionchat.sqlite3*"))
    for word in (b"eagle", b"loud and clear", b"nods", b"one more thing"):
        assert word not in raw


async def test_identity_crypto_matches_the_python_side(node: NodeProcess, browser: Browser) -> None:
    """Wrapping, sealing and the conversation key cross between tweetnacl and PyNaCl."""
    wrapping = crypto.new_room_key()
    secret, public = crypto.new_identity()
    room_key = crypto.new_room_key()
    async with open_page(browser, node) as watched:
        result = await watched.page.evaluate(
            """async ([wrapping, wrapped, sealed, publicKey, roomKey]) => {
              const api = await import("/static/js/api.js");
              const box = await import("/static/js/crypto.js");
              const salt = Uint8Array.from({length: 16}, (_, i) => i);
              const wrapKey = box.decodeKey(wrapping);
              const pair = box.unwrapIdentity(wrapKey, wrapped);
              const mine = box.newIdentity();
              const theirs = box.fromBase64(publicKey);
              return {
                vector: api.b64url(
                  await api.wrappingKey("correct horse battery staple", salt, 1000)),
                unwrappedPublic: box.toBase64(pair.publicKey),
                wrongWrap: box.unwrapIdentity(box.newKey(), wrapped),
                roomKey: box.encodeKey(box.openRoomKey(sealed, pair.secretKey)),
                notMine: box.openRoomKey(sealed, mine.secretKey),
                sealedToPython: box.sealRoomKey(box.decodeKey(roomKey), theirs),
                wrappedByPage: box.wrapIdentity(wrapKey, mine.secretKey),
                pagePublic: box.toBase64(mine.publicKey),
                direct: box.seal(box.directKey(theirs, mine.secretKey), "between us ☃"),
              };
            }""",
            [
                crypto.encode_key(wrapping),
                crypto.wrap_identity(wrapping, secret),
                crypto.seal_room_key(room_key, public),
                base64.b64encode(public).decode(),
                crypto.encode_key(room_key),
            ],
        )
        await watched.assert_clean()
    assert result["vector"] == "6sbCjoGqW66rg3xulP-2NSR9oiOqzM4BorRp2Eaqryk"
    assert result["unwrappedPublic"] == base64.b64encode(public).decode()
    assert result["wrongWrap"] is None and result["notMine"] is None
    assert result["roomKey"] == crypto.encode_key(room_key)
    assert crypto.open_room_key(result["sealedToPython"], secret) == room_key
    page_secret = crypto.unwrap_identity(wrapping, result["wrappedByPage"])
    page_public = base64.b64decode(result["pagePublic"])
    assert bytes(nacl.public.PrivateKey(page_secret).public_key) == page_public
    shared = nacl.public.Box(
        nacl.public.PrivateKey(secret), nacl.public.PublicKey(page_public)
    ).shared_key()
    assert crypto.open_box(shared, result["direct"]) == "between us ☃"


async def conversations(page: Page) -> list[str]:
    """The conversations in the room list, as labelled."""
    labels = await page.locator("#rooms button > span:first-child").all_text_contents()
    return [label for label in labels if label.startswith("@")]


async def test_direct_messages_with_a_name_the_node_folds(
    node: NodeProcess, browser: Browser, password_file: Path
) -> None:
    """`Straße` is `strasse` to the node (NFKC + casefold) but `straße` to toLowerCase: the
    pages use the room the node names (`key.direct`, `ready.key`, the frames' `room`), so each
    side sees one conversation, whoever started it."""
    async with open_page(browser, node) as a, open_page(browser, node) as b:
        strasse, bob = a.page, b.page
        await sign_up(strasse, "Straße")
        await sign_up(bob, "bob")
        await identity_key(bob)
        # started from the Straße page
        await strasse.get_by_role("button", name="Direct message to bob").click()
        await expect(strasse.locator("#room-title")).to_have_text("@bob")
        await say(strasse, "hello bob")
        # answered from bob's page with /msg and the name in another case
        conversation = bob.locator("#rooms button", has_text="@Straße")
        await expect(conversation.locator(".badge")).to_have_text("1")
        await say(bob, "/msg STRASSE hello Straße")
        await expect(bob.locator("#room-title")).to_have_text("@Straße")
        both = ["hello bob", "hello Straße"]
        await expect(texts(bob)).to_have_text(both)
        await expect(texts(strasse)).to_have_text(both)
        assert await conversations(strasse) == ["@bob"]
        assert await conversations(bob) == ["@Straße"]
        # bob's page again: the conversation of ready.direct is found with ready.key
        await bob.reload()
        await expect(bob.locator("#status")).to_have_text("connected")
        await bob.locator("#rooms button", has_text="@").click()
        await expect(texts(bob)).to_have_text(both)
        await expect(bob.locator("#room-title")).to_have_text("@Straße")
        assert await conversations(bob) == ["@Straße"]
        await say(bob, "still one conversation")
        await expect(texts(strasse)).to_have_text([*both, "still one conversation"])
        assert await conversations(strasse) == ["@bob"]

        # started from the other side: the CLI writes first, the page answers in the
        # conversation and with /msg
        async with pipe_client(node.url, "carol", password_file, "--register") as carol:
            await carol.next(type="joined")
            await carol.send("/msg straße hi from the terminal")
            first = await carol.next(type="message", sender="carol")
            assert first["room"] == "@carol+strasse" and first["decrypted"] is True
            talk = strasse.locator("#rooms button", has_text="@carol")
            await expect(talk.locator(".badge")).to_have_text("1")
            await talk.click()
            await say(strasse, "hi from the page")
            await say(strasse, "/msg Carol and once more")
            for text in ("hi from the page", "and once more"):
                line = await carol.next(type="message", text=text)
                assert line["room"] == "@carol+strasse" and line["decrypted"] is True
            code, _, err = await carol.finish()
            assert code == 0, err
        await expect(texts(strasse)).to_have_text(
            ["hi from the terminal", "hi from the page", "and once more"]
        )
        assert sorted(await conversations(strasse)) == ["@bob", "@carol"]
        await a.assert_clean()
        await b.assert_clean()
    node.stop()
    with database(node) as db:
        rooms = [name for (name,) in db.execute("SELECT name FROM rooms WHERE name LIKE '@%'")]
    assert sorted(rooms) == ["@bob+strasse", "@carol+strasse"]
