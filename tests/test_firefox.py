"""The browser client in Firefox ESR (Tor Browser's engine), driven over WebDriver BiDi
(tests/firefox.py): the journeys of tests/test_web.py's basics, a phone-sized screen, and the
no-JS chat with JavaScript off in its own profile (as at Tor Browser's "Safest" level)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from onionchat import crypto, nojs, sealed

from conftest import PASSWORD, SCREENSHOTS, NodeProcess, user
from firefox import Firefox, Locator, Page, expect, firefox
from test_web import publish_identity, signed_box

# One Firefox for the module (a launch costs seconds), one browser context per page.
pytestmark = pytest.mark.asyncio(loop_scope="module")
PHONE = (390, 844)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Firefox]:
    """Firefox, in place of conftest's Chromium for this module's tests."""
    log = tmp_path_factory.mktemp("firefox") / "driver.log"
    async with firefox(log) as launched:
        yield launched


@contextlib.asynccontextmanager
async def open_page(
    browser: Firefox, node: NodeProcess, width: int = 1200, height: int = 800
) -> AsyncIterator[Page]:
    page = await browser.new_page(node.url, width, height)
    try:
        await page.goto(node.url + "/")
        yield page
    finally:
        await page.close()


async def shot(page: Page, name: str, full_page: bool = False) -> None:
    await page.screenshot(SCREENSHOTS / f"firefox-{name}.png", full_page)


async def sign_up(page: Page, name: str, password: str = PASSWORD) -> None:
    await page.get_by_label("User name").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_label("Password again").fill(password)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.locator("#status")).to_have_text("connected")
    await expect(page.locator("#me")).to_have_text(name)


async def open_room(page: Page, name: str, protected: bool = False) -> None:
    toggle = page.locator("#new-room-toggle")
    if await toggle.is_visible():  # a phone: the form is folded away
        await toggle.click()
    await page.get_by_label("Join or create a room").fill(name)
    if protected:
        await page.get_by_label("key-protected").check()
    await page.get_by_role("button", name="Join").click()
    await expect(page.locator("#room-title")).to_contain_text(f"#{name}")


async def say(page: Page, text: str) -> None:
    box = page.get_by_label("Message")
    await box.fill(text)
    await box.press("Enter")
    await expect(box).to_have_value("")


def texts(page: Page) -> Locator:
    return page.locator("#messages li.message .text")


async def test_sign_up_open_a_room_and_talk_both_ways(browser: Firefox, node: NodeProcess) -> None:
    async with open_page(browser, node) as page:
        await expect(page.locator("#login")).to_be_visible()
        await shot(page, "login")
        await sign_up(page, "alice")
        await open_room(page, "dev")
        async with user(node, "bob") as bob:
            await bob.join("dev")
            await expect(page.locator("#member-list")).to_contain_text("bob")
            await say(page, "hello from Firefox")
            heard = await bob.expect("message", room="dev")
            assert heard["text"] == "hello from Firefox" and heard["sender"] == "alice"
            await bob.say("dev", "hello from a raw client, @alice", ref="1")
            await bob.send(type="send", room="dev", text="waves", me=True, ref="2")
            await bob.expect("ack", ref="2")
            await expect(page.locator("#messages li.mention")).to_contain_text(
                "hello from a raw client, @alice"
            )
            await expect(page.locator("#messages li.action")).to_contain_text("* bob waves")
        await expect(page.locator("#member-list")).not_to_contain_text("bob")
        await expect(texts(page)).to_have_count(3)
        await shot(page, "room")
        # its WebSocket is watched too (Firefox reports it as the http:// request it starts as)
        assert f"{node.url}/ws" in (await page.events())["requests"]
        await page.assert_clean()


async def test_the_watch_sees_what_a_page_must_not_do(browser: Firefox, node: NodeProcess) -> None:
    """assert_clean is no empty check here: a blocked image, a console error, an uncaught
    error and a dialog are all seen, and so are the page's own requests."""
    async with open_page(browser, node) as page:
        await expect(page.locator("#login")).to_be_visible()
        await page.assert_clean()
        await page.evaluate(
            """() => {
              console.error("boom");
              const img = document.createElement("img");
              img.src = "http://127.0.0.2:9/x.png";
              document.body.append(img);
              setTimeout(() => alert("hi"), 0);
              setTimeout(() => { throw new Error("uncaught"); }, 0);
            }"""
        )
        await expect(page.locator("img")).to_have_count(1)
        events = await page.events()
        for _ in range(50):  # the timers' work arrives as events, soon
            if events["dialogs"] and len(events["console_errors"]) >= 3:
                break
            await asyncio.sleep(0.05)
            events = await page.events()
        assert events["csp_violations"] == ["img-src http://127.0.0.2:9/x.png"]
        assert events["dialogs"] == ["hi"]
        errors = events["console_errors"]
        assert "boom" in errors and any("uncaught" in e for e in errors), errors
        assert f"{node.url}/static/js/main.js" in events["requests"]
        with pytest.raises(AssertionError):
            await page.assert_clean()


async def test_a_key_protected_room_seals_for_a_client_with_the_key(
    browser: Firefox, node: NodeProcess
) -> None:
    """The page makes the room and its key; a raw client given the key from the invite link
    (as a person pasting it) opens what the page sealed, and the page opens what it seals."""
    async with open_page(browser, node) as page:
        await sign_up(page, "alice")
        await open_room(page, "plans", protected=True)
        await expect(page.locator("#room-mode")).to_be_visible()
        link = await page.get_by_label("Invite link").input_value()
        assert link.startswith(f"{node.url}/#room=plans&key=")
        key = crypto.decode_key(link.rsplit("key=", 1)[1])
        async with user(node, "bob") as bob:
            _, signer = await publish_identity(bob)
            await bob.join("plans", protected=True)
            await say(page, "the eagle lands at dawn")
            heard = await bob.expect("message", room="plans", sender="alice")
            assert "text" not in heard or heard["text"] is None
            body = sealed.open_body([key], heard["box"])
            assert (body.room, body.sender) == ("plans", "alice")
            assert body.text == "the eagle lands at dawn"
            box = signed_box(key, signer, "plans", "bob", "roger that")
            await bob.send(type="send", room="plans", box=box, ref="r")
            await bob.expect("ack", ref="r")
            await expect(texts(page)).to_have_text(["the eagle lands at dawn", "roger that"])
        await shot(page, "protected-room")
        await page.assert_clean()
    node.stop()
    raw = b"".join(p.read_bytes() for p in node.data_dir.glob("onionchat.sqlite3*"))
    assert b"eagle" not in raw and b"roger" not in raw
    with sqlite3.connect(node.data_dir / "onionchat.sqlite3") as db:
        rows = db.execute(
            "SELECT m.text, m.box FROM messages m JOIN rooms r ON r.id = m.room_id"
            " WHERE r.name = 'plans'"
        ).fetchall()
    assert len(rows) == 2 and all(text is None and box for text, box in rows)


async def test_a_phone_sized_screen(browser: Firefox, node: NodeProcess) -> None:
    width, height = PHONE
    async with open_page(browser, node, width, height) as page:
        await expect(page.locator("#login")).to_be_visible()
        await shot(page, "phone-login")
        await sign_up(page, "alice")
        # the room gets the screen: the join form and the members fold away
        await expect(page.get_by_label("Join or create a room")).to_be_hidden()
        await expect(page.locator("#member-list")).to_be_hidden()
        await open_room(page, "pocket")
        await expect(page.get_by_label("Join or create a room")).to_be_hidden()
        messages = await page.locator("#messages").bounding_box()
        assert messages is not None and messages["height"] >= 0.5 * height
        await say(page, "typed on a phone " + "long " * 40)
        await expect(texts(page)).to_have_count(1)
        scroll_width = await page.evaluate("() => document.documentElement.scrollWidth")
        assert scroll_width <= width  # nothing overflows sideways
        for part in ("#rooms", "#messages", "#composer-text"):
            rect = await page.locator(part).bounding_box()
            assert rect is not None and rect["x"] >= 0 and rect["x"] + rect["width"] <= width
            assert rect["y"] + rect["height"] <= height
        await shot(page, "phone-room")
        await page.assert_clean()


async def test_keyboard_alone_signs_up_and_sends(browser: Firefox, node: NodeProcess) -> None:
    """Real key events (not a filled value): Tab between the fields, Enter to send."""
    async with open_page(browser, node) as page:
        await page.get_by_label("User name").type("Carol")
        await page.keyboard.press("Tab")
        await page.keyboard.type(PASSWORD)
        await page.keyboard.press("Tab")
        await page.keyboard.type(PASSWORD)
        await page.get_by_role("button", name="Create account").press("Enter")
        await expect(page.locator("#me")).to_have_text("Carol")
        box = page.get_by_label("Message")
        await box.type("typed key by key")
        await page.keyboard.press("Enter")
        await expect(texts(page)).to_have_text(["typed key by key"])
        outline = "() => getComputedStyle(document.activeElement).outlineStyle"
        assert await page.evaluate(outline) == "solid"  # focus is visible
        await page.assert_clean()


async def test_the_chat_without_javascript(node: NodeProcess, tmp_path: Path) -> None:
    """JavaScript off for the whole profile: the main page points to /nojs/, where a person
    signs up, joins, reads and posts by keyboard (forms sent with Enter)."""
    async with firefox(tmp_path / "driver.log", {"javascript.enabled": False}) as safest:
        page = await safest.new_page(node.url, *PHONE)
        await page.goto(node.url + "/")
        pointer = page.locator("noscript a")  # shown only when scripts are really off
        await expect(pointer).to_have_text("the chat without JavaScript")
        await pointer.press("Enter", navigate=True)
        assert await page.url() == f"{node.url}/nojs/login"
        form = page.locator("form[action='/nojs/register']")
        await form.get_by_label("Name").type("dora")
        await form.get_by_label("Password").type(PASSWORD)
        await form.get_by_label("Password again").type(PASSWORD)
        await shot(page, "nojs-phone-login", full_page=True)
        await form.get_by_role("button", name="Create account").press("Enter", navigate=True)
        await expect(page.locator("nav")).to_contain_text("logged in as dora")
        await page.get_by_label("Room").type("Lobby")
        await page.keyboard.press("Enter", navigate=True)
        assert await page.url() == f"{node.url}/nojs/room/lobby"
        frame = page.locator("iframe")
        await expect(frame.locator("#end")).to_contain_text("Here now: dora")
        async with user(node, "bob") as bob:
            await bob.join("lobby")
            await bob.say("lobby", "hello, reader without scripts")
            await expect(frame.locator("ol.messages")).to_contain_text(
                "hello, reader without scripts", timeout=nojs.REFRESH + 5
            )
            await page.get_by_label("Message").type("posted with JavaScript off")
            await page.keyboard.press("Enter", navigate=True)
            heard = await bob.expect("message", sender="dora")
            assert heard["text"] == "posted with JavaScript off"
            await expect(frame.locator("ol.messages li")).to_contain_text(
                "posted with JavaScript off"
            )
        await shot(page, "nojs-phone-room", full_page=True)
        await page.assert_clean()


def line(page: Page, id_: str) -> Locator:
    return page.locator(f"#messages li.message[data-id='{id_}']")


async def tap(page: Page, id_: str, button: str) -> None:
    """A tap on the message shows its buttons (as on a phone, the same on a desktop), then
    one of them, by its label."""
    if not await line(page, id_).locator(".actions").is_visible():
        await line(page, id_).locator(".text, .sender").click()
    await line(page, id_).get_by_label(button).click()


PNG_1PX = (
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DwnwEJMDEwMDAwAAAa"
    "/AMC4M6jPwAAAABJRU5ErkJggg=="
)


@pytest.mark.parametrize("size", [(1200, 800), PHONE], ids=["desktop", "phone"])
async def test_daily_use_in_firefox(
    browser: Firefox, node: NodeProcess, size: tuple[int, int]
) -> None:
    """Replies, reactions, edits, deletions, a picture sent, a clearnet link's warning and
    the unread count in the title, in Tor Browser's engine."""
    name = f"ann{size[0]}"
    async with open_page(browser, node, *size) as page:
        await sign_up(page, name)
        room = f"daily{size[0]}"
        await open_room(page, room)
        await open_room(page, f"quiet{size[0]}")
        await page.locator("#rooms button[data-room='" + room + "']").click()
        async with user(node, f"bob{size[0]}") as bob:
            await bob.join(room)
            asked = await bob.say(room, "meet at five?", ref="q")
            await expect(texts(page)).to_have_text(["meet at five?"])

            await tap(page, asked["id"], "Reply")
            await expect(page.locator("#composing-text")).to_contain_text("Replying to bob")
            await say(page, "five is fine")
            reply = await bob.expect("message", text="five is fine")
            assert reply["reply"] == asked["id"]
            await tap(page, asked["id"], "React")
            await line(page, asked["id"]).get_by_label("React with 👍").click()
            thumb = await bob.expect("message", react=asked["id"])
            assert thumb["text"] == "👍"
            await expect(line(page, asked["id"]).locator(".reaction")).to_have_text("👍 1")

            await tap(page, reply["id"], "Edit")
            await expect(page.get_by_label("Message")).to_have_value("five is fine")
            await page.get_by_label("Message").fill("six is fine")
            await page.get_by_label("Message").press("Enter")
            edit = await bob.expect("message", edit=reply["id"])
            assert edit["text"] == "six is fine"
            await expect(line(page, reply["id"]).locator(".edited")).to_have_text("(edited)")

            # a picture chosen with the 📎 button's file input, shown from its bytes (Firefox
            # gives a synthetic paste or drop no files: Chromium's tests send those)
            await page.evaluate(
                """(png) => {
                  const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
                  const data = new DataTransfer();
                  data.items.add(new File([bytes], "dot.png", { type: "image/png" }));
                  const input = document.getElementById("attach-input");
                  input.files = data.files;
                  input.dispatchEvent(new Event("change"));
                }""",
                PNG_1PX,
            )
            pasted = await bob.expect("message", text="dot.png")
            assert pasted["file"]["type"] == "image/png"
            await expect(line(page, pasted["id"]).locator("img")).to_have_count(1)
            width = 0
            for _ in range(100):
                width = await page.evaluate(
                    "() => document.querySelector('#messages img')?.naturalWidth || 0"
                )
                if width:
                    break
                await asyncio.sleep(0.05)
            assert width == 2

            # a link to the open internet asks first; nothing leaves
            await bob.say(room, "see https://example.com/x please", ref="l")
            link = page.locator("#messages a[href='https://example.com/x']")
            await expect(link).to_have_count(1)
            rel = await page.evaluate(
                "() => document.querySelector(\"#messages a[href='https://example.com/x']\").rel"
            )
            assert rel == "noopener noreferrer"
            await link.click()
            await expect(page.locator("#leave")).to_contain_text("example.com")
            await page.locator("#leave-cancel").click()
            await expect(page.locator("#leave")).to_be_hidden()

            await tap(page, reply["id"], "Delete")
            await line(page, reply["id"]).get_by_label("Delete: press again").click()
            await bob.expect("deleted")
            await expect(line(page, reply["id"]).locator(".text")).to_have_text("message deleted")

            # unread elsewhere: the title counts it
            await bob.join(f"quiet{size[0]}")
            await bob.say(f"quiet{size[0]}", "over here", ref="o")
            for _ in range(100):
                title = await page.evaluate("() => document.title")
                if title.startswith("(1)"):
                    break
                await asyncio.sleep(0.05)
            assert title == "(1) OnionChat"
            await shot(page, f"daily-{'phone' if size == PHONE else 'desktop'}")
        await page.assert_clean()


async def test_in_russian_in_firefox(node: NodeProcess, tmp_path: Path) -> None:
    """A Firefox whose language is Russian (as a Russian Tor Browser asks pages for): the
    page in Russian, dates too, at desktop and phone size; a reply and a reaction."""
    prefs = {"intl.accept_languages": "ru-RU, ru", "intl.locale.requested": "ru"}
    async with firefox(tmp_path / "driver.log", prefs) as russian:
        for width, height in ((1200, 800), PHONE):
            page = await russian.new_page(node.url, width, height)
            await page.goto(node.url + "/")
            await expect(page.locator("#login-title")).to_have_text("Вход или новая учётная запись")
            name = f"masha{width}"
            await page.get_by_label("Имя пользователя").fill(name)
            await page.get_by_label("Пароль").fill(PASSWORD)
            await page.get_by_label("Пароль ещё раз").fill(PASSWORD)
            await page.get_by_role("button", name="Создать учётную запись").click()
            await expect(page.locator("#status")).to_have_text("подключено")
            async with user(node, f"misha{width}") as misha:
                await misha.join("lobby")
                asked = await misha.say("lobby", "привет, как дела?", ref="q")
                await expect(page.locator("#messages .day")).to_contain_text("декабря")
                await tap(page, asked["id"], "Ответить")
                await page.get_by_label("Сообщение").fill("хорошо!")
                await page.get_by_label("Сообщение").press("Enter")
                reply = await misha.expect("message", text="хорошо!")
                assert reply["reply"] == asked["id"]
                await tap(page, asked["id"], "Реакция")
                await line(page, asked["id"]).get_by_label("Реакция 👍").click()
                await expect(line(page, asked["id"]).locator(".reaction")).to_have_text("👍 1")
                await shot(page, f"ru-{'phone' if width < 700 else 'desktop'}")
            # no language chosen: the node speaks the one the browser asked for, /help too
            await page.get_by_label("Сообщение").fill("/help")
            await page.get_by_label("Сообщение").press("Enter")
            await expect(page.locator("#help-list")).to_contain_text("войти в комнату")
            await page.assert_clean()
            await page.close()
