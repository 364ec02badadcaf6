"""Replies, reactions, edits and deletions in the browser client (issue 15), in Debian's
Chromium against a real node, the other side a raw client: open rooms, key-protected rooms
(every box checked by the page: what it says it is about, and who may edit), a phone."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from playwright.async_api import Browser, Locator, Page, expect

from onionchat import crypto, sealed

from conftest import NodeProcess, user
from test_web import open_page, open_room, publish_identity, say, shot, sign_up, texts


def line(page: Page, text: str) -> Locator:
    """The line whose own text is `text` (not one quoting it)."""
    return page.locator("#messages li.message").filter(
        has=page.locator(".text", has_text=re.compile(f"^{re.escape(text)}$"))
    )


async def act(page: Page, text: str, name: str) -> None:
    """Press one of a message's buttons (they show on hover)."""
    item = line(page, text)
    await item.hover()
    await item.get_by_role("button", name=name, exact=True).click()


async def test_reply_react_edit_and_delete_in_an_open_room(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "alice")
        await open_room(page, "talk")
        async with user(node, "bob") as bob:
            await bob.join("talk")
            asked = await bob.say("talk", "meet at five?", ref="q")
            await expect(texts(page)).to_have_text(["meet at five?"])

            # a reply: the bar says to whom, the line quotes what it answers
            await act(page, "meet at five?", "Reply")
            await expect(page.locator("#composing-text")).to_have_text(
                "Replying to bob: meet at five?"
            )
            await say(page, "five is fine")
            got = await bob.expect("message", text="five is fine")
            assert got["reply"] == asked["id"]
            await expect(page.locator("#composing")).to_be_hidden()
            mine = line(page, "five is fine")
            await expect(mine.locator(".quote")).to_have_text("↪ bob: meet at five?")

            # reactions: counts and who, one's own taken back by pressing it again
            await act(page, "meet at five?", "React")
            await page.get_by_role("button", name="React with 👍").click()
            thumb = await bob.expect("message", react=asked["id"])
            assert (thumb["sender"], thumb["text"]) == ("alice", "👍")
            await bob.send(type="send", room="talk", text="👍", react=asked["id"], ref="t")
            await bob.expect("ack", ref="t")
            chip = line(page, "meet at five?").locator(".reaction")
            await expect(chip).to_have_text("👍 2")
            await expect(chip).to_have_attribute("title", "alice, bob")
            await expect(chip).to_have_attribute("aria-pressed", "true")
            await chip.click()
            assert (await bob.expect("deleted"))["ids"] == [thumb["id"]]
            await expect(chip).to_have_text("👍 1")
            await expect(chip).to_have_attribute("aria-pressed", "false")

            # an edit starts from the message's text; the line says it was edited
            await say(page, "see you at fvie")
            typo = await bob.expect("message", text="see you at fvie")
            await act(page, "see you at fvie", "Edit")
            box = page.get_by_label("Message", exact=True)
            await expect(box).to_have_value("see you at fvie")
            await expect(page.locator("#composing-text")).to_contain_text("Editing your message")
            await box.fill("see you at five")
            await box.press("Enter")
            edit = await bob.expect("message", edit=typo["id"])
            assert edit["text"] == "see you at five"
            edited = line(page, "see you at five")
            await expect(edited.locator(".edited")).to_have_text("(edited)")
            await expect(texts(page)).to_have_count(3)  # an edit is no line of its own
            # bob's own edit of his question; his edit of alice's words is refused by the node
            await bob.send(type="send", room="talk", text="meet at six?", edit=asked["id"], ref="e")
            await bob.expect("ack", ref="e")
            await expect(page.locator("#messages li.message .quote")).to_have_text(
                "↪ bob: meet at six?"
            )
            await bob.send(type="send", room="talk", text="x", edit=typo["id"], ref="no")
            assert (await bob.expect("error", ref="no"))["code"] == "forbidden"

            # Escape gives up an edit and empties the box
            await act(page, "see you at five", "Edit")
            await expect(box).to_have_value("see you at five")
            await box.press("Escape")
            await expect(page.locator("#composing")).to_be_hidden()
            await expect(box).to_have_value("")

            await shot(page, "relations")
            # a deletion, asked twice, leaves "message deleted"; the quote says so too
            await act(page, "see you at five", "Delete")
            await expect(page.get_by_role("button", name=re.compile("press again"))).to_be_visible()
            await page.get_by_role("button", name=re.compile("press again")).click()
            gone = await bob.expect("deleted")
            assert set(gone["ids"]) == {typo["id"], edit["id"]}
            await expect(texts(page)).to_have_text(
                ["meet at six?", "five is fine", "message deleted"]
            )
            await bob.send(type="send", room="talk", text="ok", reply=got["id"], ref="r")
            await bob.expect("ack", ref="r")
            await expect(line(page, "ok").locator(".quote")).to_have_text("↪ alice: five is fine")
        await watched.assert_clean()


async def test_a_quote_of_an_old_message_pages_back_to_it(
    node_factory: Any, browser: Browser
) -> None:
    node = node_factory(env={"ONIONCHAT_LIMITS_RATE": "100000", "ONIONCHAT_LIMITS_BURST": "1000"})
    async with user(node, "bob") as bob:
        await bob.join("long")
        first = await bob.say("long", "the first word", ref="f")
        for i in range(60):
            await bob.send(type="send", room="long", text=f"filler {i}", ref=f"n{i}")
        await bob.expect("ack", ref="n59", timeout=10)
        await bob.send(type="send", room="long", text="about that", reply=first["id"], ref="r")
        await bob.expect("ack", ref="r")
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "alice")
        await open_room(page, "long")
        quote = page.locator("#messages .quote")
        await expect(quote).to_have_text("↪ an earlier message")
        await quote.click()
        found = line(page, "the first word")
        await expect(found).to_be_in_viewport()
        await expect(found).to_have_class(re.compile("sought"))
        await expect(quote).to_have_text("↪ bob: the first word")
        await watched.assert_clean()


async def test_in_a_key_protected_room_the_page_checks_what_each_box_is_about(
    node: NodeProcess, browser: Browser
) -> None:
    key = crypto.new_room_key()
    async with open_page(browser, node) as watched:
        page = watched.page
        async with user(node, "bob") as bob:
            _, signer = await publish_identity(bob)
            await bob.join("vault", protected=True)

            async def sealed_send(text: str, kind: str, ref: str, **about: str) -> dict[str, Any]:
                re_ = next(iter(about.values()), None)
                box = sealed.seal_body(
                    key, signer, room="vault", sender="bob", kind=kind, text=text, re=re_
                )
                await bob.send(type="send", room="vault", box=box, ref=ref, **about)
                return await bob.expect("ack", ref=ref)

            plan = await sealed_send("the plan is on", "message", "p")
            other = await sealed_send("tea at four", "message", "o")
            await page.goto(f"{node.url}/#room=vault&key={crypto.encode_key(key)}")
            await sign_up(page, "alice")
            await expect(texts(page)).to_have_text(["the plan is on", "tea at four"])

            await sealed_send("the plan is off", "edit", "e", edit=plan["id"])
            await sealed_send("🎉", "reaction", "t", react=other["id"])
            await expect(texts(page).first).to_have_text("the plan is off")
            await expect(line(page, "tea at four").locator(".reaction")).to_have_text("🎉 1")
            # a box sealed as an edit of one message, sent as an edit of another: not shown
            moved = sealed.seal_body(
                key, signer, room="vault", sender="bob", kind="edit", text="MOVED", re=plan["id"]
            )
            await bob.send(type="send", room="vault", box=moved, edit=other["id"], ref="m")
            await bob.expect("ack", ref="m")
            # a reaction that is not one of the seven: not counted
            await sealed_send("💩", "reaction", "x", react=plan["id"])
            await bob.barrier()
            await page.wait_for_function(
                "() => document.querySelectorAll('#messages li.message').length === 2"
            )
            await expect(texts(page)).to_have_text(["the plan is off", "tea at four"])
            await expect(line(page, "the plan is off").locator(".reaction")).to_have_count(0)

            # alice's reply and reaction are sealed, and say what they are about
            await act(page, "the plan is off", "Reply")
            await say(page, "good")
            got = await bob.expect("message", reply=plan["id"])
            body = sealed.open_body([key], got["box"])
            body.check("vault", "alice", "message", got["ts"], plan["id"])
            assert body.text == "good"
            await act(page, "tea at four", "React")
            await page.get_by_role("button", name="React with ❤️").click()
            got = await bob.expect("message", react=other["id"])
            body = sealed.open_body([key], got["box"])
            body.check("vault", "alice", "reaction", got["ts"], other["id"])
            assert body.text == "❤️"
            await expect(line(page, "tea at four").locator(".reaction")).to_have_text(
                ["❤️ 1", "🎉 1"]  # in the order of the seven
            )
            await shot(page, "relations-sealed")
        await watched.assert_clean()


async def test_on_a_phone_a_tap_shows_a_messages_buttons(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node, width=390, height=844) as watched:
        page = watched.page
        await sign_up(page, "alice")
        await open_room(page, "pocket")
        await say(page, "a line to answer")
        item = line(page, "a line to answer")
        await page.mouse.move(0, 0)  # a finger does not hover: nothing shows until a tap
        await expect(item.get_by_role("button", name="Reply")).to_be_hidden()
        await item.locator(".text").click()
        await expect(item.get_by_role("button", name="Reply")).to_be_visible()
        await item.get_by_role("button", name="React").click()
        await item.get_by_role("button", name="React with 😂").click()
        await expect(item.locator(".reaction")).to_have_text("😂 1")
        await item.get_by_role("button", name="Reply").click()
        await expect(page.locator("#composing-text")).to_have_text(
            "Replying to alice: a line to answer"
        )
        await shot(page, "relations-phone")
        await say(page, "answered")
        await expect(line(page, "answered").locator(".quote")).to_have_text(
            "↪ alice: a line to answer"
        )
        await watched.assert_clean()


async def test_in_a_conversation_between_two_browsers(node: NodeProcess, browser: Browser) -> None:
    """Sealed with the conversation's key: a reaction, a reply and an edit, each checked by
    the other page; the node holds only boxes."""
    async with open_page(browser, node) as a, open_page(browser, node) as b:
        alice, bob = a.page, b.page
        await sign_up(alice, "alice")
        await sign_up(bob, "bob")
        await expect(bob.locator("#identity-state")).to_have_text("Your identity key")
        await alice.get_by_role("button", name="Direct message to bob").click()
        await say(alice, "lunch tomorrow?")
        conversation = bob.locator("#rooms button", has_text="@alice")
        await conversation.click()
        await expect(texts(bob)).to_have_text(["lunch tomorrow?"])
        await act(bob, "lunch tomorrow?", "React")
        await bob.get_by_role("button", name="React with 🎉").click()
        await expect(line(alice, "lunch tomorrow?").locator(".reaction")).to_have_text("🎉 1")
        await act(bob, "lunch tomorrow?", "Reply")
        await say(bob, "yes, at one")
        await expect(line(alice, "yes, at one").locator(".quote")).to_have_text(
            "↪ alice: lunch tomorrow?"
        )
        await act(alice, "lunch tomorrow?", "Edit")
        box = alice.get_by_label("Message", exact=True)
        await box.fill("lunch on Friday?")
        await box.press("Enter")
        await expect(line(bob, "lunch on Friday?").locator(".edited")).to_have_text("(edited)")
        await expect(line(bob, "yes, at one").locator(".quote")).to_have_text(
            "↪ alice: lunch on Friday?"
        )
        await a.assert_clean()
        await b.assert_clean()
    with sqlite3.connect(node.data_dir / "onionchat.sqlite3") as db:
        rows = db.execute(
            "SELECT m.text, m.box FROM messages m JOIN rooms r ON r.id = m.room_id"
            " WHERE r.name = '@alice+bob'"
        ).fetchall()
    assert len(rows) == 4 and all(text is None and box for text, box in rows)
