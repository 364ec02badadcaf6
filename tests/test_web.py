"""The browser client in web/, in Debian's Chromium, against a real node and the real CLI."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import nacl.signing
from playwright.async_api import Browser, Page, expect

from onionchat import crypto, sealed

from conftest import (
    PASSWORD,
    SCREENSHOTS,
    Client,
    NodeProcess,
    chromium,
    connect,
    pipe_client,
    register,
    user,
)

TIMEOUT = 10_000  # ms: every wait on the page is bounded


@dataclass
class Watched:
    """A page and everything it did that a careful page must not do."""

    page: Page
    origin: str
    foreign: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    http_errors: list[str] = field(default_factory=list)

    async def assert_clean(self, http_errors: bool = False) -> None:
        """No CSP violation, foreign request, dialog or script error (nor, unless a test
        provokes them on purpose, HTTP errors)."""
        if not http_errors:
            assert self.http_errors == [], self.http_errors
        violations = await self.page.evaluate("window.__cspViolations")
        assert violations == [], violations
        assert self.foreign == [], self.foreign
        assert self.dialogs == [], self.dialogs
        # a dropped WebSocket during a node restart is the only error a console may show
        errors = [
            e for e in self.console_errors if "WebSocket" not in e and "Failed to load" not in e
        ]
        assert errors == [], errors


# Runs before the page's own scripts, outside its CSP (Playwright injects it).
CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI));
"""


@contextlib.asynccontextmanager
async def open_page(
    browser: Browser,
    node: NodeProcess,
    width: int = 1200,
    height: int = 800,
    locale: str | None = None,
) -> AsyncIterator[Watched]:
    """`locale`: the browser's language (Playwright's default, en-US, when None)."""
    context = await browser.new_context(viewport={"width": width, "height": height}, locale=locale)
    context.set_default_timeout(TIMEOUT)
    page = await context.new_page()
    watched = Watched(page, node.url)
    await page.add_init_script(CSP_WATCH)

    def on_request(url: str) -> None:
        parts = urlsplit(url.removeprefix("blob:"))  # a file's bytes, made in the page
        if f"{parts.scheme}://{parts.netloc}" not in (node.url, node.ws_url.rsplit("/", 1)[0]):
            watched.foreign.append(url)

    page.on("request", lambda request: on_request(request.url))
    page.on("websocket", lambda ws: on_request(ws.url))
    page.on(
        "console",
        lambda msg: watched.console_errors.append(msg.text) if msg.type == "error" else None,
    )
    page.on("pageerror", lambda error: watched.console_errors.append(str(error)))
    page.on(
        "response",
        lambda r: watched.http_errors.append(f"{r.status} {r.url}") if r.status >= 400 else None,
    )

    async def on_dialog(dialog: object) -> None:
        watched.dialogs.append(str(getattr(dialog, "message", "")))
        await dialog.dismiss()  # type: ignore[attr-defined]

    page.on("dialog", on_dialog)
    await page.goto(node.url + "/")
    try:
        yield watched
    finally:
        await context.close()


async def sign_up(page: Page, name: str, password: str = PASSWORD) -> None:
    await page.get_by_label("User name").fill(name)
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_label("Password again").fill(password)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.locator("#status")).to_have_text("connected")
    await expect(page.locator("#me")).to_have_text(name)


async def log_in(page: Page, name: str, password: str = PASSWORD) -> None:
    await page.get_by_label("User name").fill(name)
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_role("button", name="Log in").click()


async def open_room(page: Page, name: str, protected: bool = False) -> None:
    toggle = page.locator("#new-room-toggle")
    if await toggle.is_visible():  # a phone: the form is folded away
        await toggle.click()
    await page.get_by_label("Join or create a room").fill(name)
    if protected:
        await page.get_by_label("key-protected").check()
    await page.get_by_role("button", name="Join", exact=True).click()
    await expect(page.locator("#room-title")).to_contain_text(f"#{name}")


async def say(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    await box.fill(text)
    await box.press("Enter")
    await expect(box).to_have_value("")


async def refused(page: Page, text: str, reason: str | re.Pattern[str]) -> None:
    """Send a line that is refused (here or by the node): it stays in the box, the reason
    next to it."""
    box = page.get_by_label("Message", exact=True)
    await box.fill(text)
    await box.press("Enter")
    await expect(page.locator("#composer-error")).to_have_text(reason)
    await expect(box).to_have_value(text)


async def publish_identity(
    client: Client, ref: str = "id"
) -> tuple[bytes, nacl.signing.SigningKey]:
    """A raw client makes and publishes an identity with its signing key, as clients do, so
    that the pages can check what it signs: its secret key and signing key."""
    secret, public = crypto.new_identity()
    await client.send(
        type="identity",
        public=base64.b64encode(public).decode(),
        wrapped=crypto.wrap_identity(crypto.new_room_key(), secret),
        signing=base64.b64encode(sealed.signing_public(secret)).decode(),
        ref=ref,
    )
    await client.expect("identity", ref=ref)
    return secret, sealed.signing_key(secret)


def signed_box(
    key: bytes, signer: nacl.signing.SigningKey, room: str, sender: str, text: str
) -> str:
    return sealed.seal_body(key, signer, room=room, sender=sender, kind="message", text=text)


def texts(page: Page) -> Any:
    return page.locator("#messages li.message .text")


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"web-{name}.png"))


async def basic_flow(browser: Browser, node: NodeProcess, password_file: Path, tag: str) -> None:
    """Register in the page, make a room, talk both ways with the CLI client."""
    async with open_page(browser, node) as watched:
        page = watched.page
        await shot(page, f"{tag}-login")
        await sign_up(page, "alice")
        await open_room(page, "dev")
        await say(page, "hello from the browser")
        await expect(texts(page)).to_have_text(["hello from the browser"])
        await register(node, "bob")
        async with pipe_client(node.url, "bob", password_file, "--room", "dev") as bob:
            line = await bob.next(type="message")
            assert line["text"] == "hello from the browser" and line["sender"] == "alice"
            await expect(page.locator("#member-list")).to_contain_text("bob")
            await bob.send("hello from the CLI, @alice")
            await bob.send("/me waves")
            mention = page.locator("#messages li.mention")
            await expect(mention).to_contain_text("hello from the CLI, @alice")
            await expect(page.locator("#messages li.action")).to_contain_text("* bob waves")
            assert (await bob.finish())[0] == 0
        await expect(page.locator("#member-list")).not_to_contain_text("bob")
        await expect(texts(page)).to_have_count(3)
        await shot(page, f"{tag}-room")
        await watched.assert_clean()


async def test_register_room_and_talk_with_the_cli(
    node: NodeProcess, browser: Browser, password_file: Path
) -> None:
    await basic_flow(browser, node, password_file, "basic")


async def test_the_whole_flow_without_webassembly(node: NodeProcess, password_file: Path) -> None:
    # This Chromium (156) ignores --noexpose_wasm alone; --jitless (as Tor Browser's "Safer"
    # level does) removes WebAssembly, and the check below proves it is gone.
    async with chromium("--js-flags=--jitless --noexpose_wasm") as browser:
        context = await browser.new_context()
        page = await context.new_page()
        await page.goto(node.url + "/")
        assert await page.evaluate("typeof WebAssembly") == "undefined"
        await context.close()
        await basic_flow(browser, node, password_file, "nowasm")


async def test_log_out_log_in_and_errors(node: NodeProcess, browser: Browser) -> None:
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "carol")
        await open_room(page, "garden")
        await page.get_by_role("button", name="Log out").click()
        await expect(page.locator("#login-error")).to_have_text("You are logged out.")
        await log_in(page, "carol", "not the password")
        await expect(page.locator("#login-error")).to_have_text("wrong username or password")
        await page.get_by_label("Password", exact=True).fill(PASSWORD)
        await page.get_by_role("button", name="Create account").click()
        await expect(page.locator("#login-error")).to_have_text(
            "type the password again, below it, to create the account"
        )
        await page.get_by_label("Password again").fill(PASSWORD + "!")
        await page.get_by_role("button", name="Create account").click()
        await expect(page.locator("#login-error")).to_have_text("the two passwords differ")
        await page.get_by_label("Password again").fill(PASSWORD)
        await page.get_by_role("button", name="Create account").click()
        await expect(page.locator("#login-error")).to_contain_text("taken")
        await page.get_by_label("Password again").fill("")
        # keyboard alone: Tab from the name to the password, Enter logs in
        await page.get_by_label("User name").fill("")
        await page.get_by_label("User name").focus()
        await page.keyboard.type("CAROL")
        await page.keyboard.press("Tab")
        await page.keyboard.type(PASSWORD)
        await page.keyboard.press("Enter")
        await expect(page.locator("#status")).to_have_text("connected")
        await expect(page.locator("#me")).to_have_text("carol")
        # the account's rooms come back
        await expect(page.locator("#rooms")).to_contain_text("#garden")
        # a reload keeps the session (HttpOnly cookie)
        await page.reload()
        await expect(page.locator("#status")).to_have_text("connected")
        await expect(page.locator("#rooms")).to_contain_text("#garden")
        await watched.assert_clean(http_errors=True)


async def test_a_message_to_nobody_makes_no_conversation(
    node: NodeProcess, browser: Browser
) -> None:
    """`/msg nobody hi` is refused with the reason, kept in the box, and leaves no `@nobody`
    conversation behind (nor one after a reload)."""
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "nadia")
        await open_room(page, "ops")
        await refused(page, "/msg nobody hi", "there is no user 'nobody'")
        await expect(page.locator("#rooms")).not_to_contain_text("@nobody")
        await page.reload()
        await expect(page.locator("#status")).to_have_text("connected")
        await expect(page.locator("#rooms")).to_contain_text("#ops")
        await expect(page.locator("#rooms")).not_to_contain_text("@nobody")


async def test_sign_up_asks_twice_and_refuses_the_weakest(
    node: NodeProcess, browser: Browser
) -> None:
    """The node never sees a password, so the page judges it: the weakest are refused, the
    rest shown with their strength; nothing reaches the node until both fields agree."""
    async with open_page(browser, node) as watched:
        page = watched.page
        await expect(page.locator("#login")).to_contain_text("cannot be recovered")
        await page.get_by_label("User name").fill("ivanovich")
        for weak, why in (
            ("1", "too short: at least 8 characters"),
            ("ИВАН", "too short: at least 8 characters"),
            ("password", "too easy to guess: choose another"),
            ("Ivanovich", "too easy to guess: choose another"),  # the name itself
            ("zzzzzzzzzz", "too easy to guess: choose another"),
        ):
            await page.get_by_label("Password", exact=True).fill(weak)
            await page.get_by_label("Password again").fill(weak)
            await expect(page.locator("#strength")).to_contain_text(why)
            await page.get_by_role("button", name="Create account").click()
            await expect(page.locator("#login-error")).to_contain_text(f"this password is {why}")
        await page.get_by_label("Password", exact=True).fill("пароль для ивана")
        await page.get_by_label("Password again").fill("пароль для ивана")
        await expect(page.locator("#strength")).to_have_text("strength: strong")
        await shot(page, "sign-up-strength")
        await page.get_by_role("button", name="Create account").click()
        # none of the weak ones reached the node: the name was still free
        await expect(page.locator("#me")).to_have_text("ivanovich")
        await watched.assert_clean()


async def test_a_browser_without_webcrypto_is_told_where_to_go(
    node: NodeProcess, browser: Browser
) -> None:
    """What plain Firefox or Chromium shows on http://….onion through a Tor proxy (no secure
    context, so no `crypto.subtle`): the page says so, and where to go instead."""
    async with open_page(browser, node) as watched:
        page = watched.page
        await page.add_init_script("Object.defineProperty(crypto, 'subtle', { value: undefined })")
        await page.reload()
        await page.get_by_label("User name").fill("olga2")
        await page.get_by_label("Password", exact=True).fill(PASSWORD)
        await page.get_by_label("Password again").fill(PASSWORD)
        await page.get_by_role("button", name="Create account").click()
        error = page.locator("#login-error")
        await expect(error).to_contain_text("does not treat this address as a secure one")
        await expect(error).to_contain_text("Tor Browser")
        await expect(error).to_contain_text("/nojs/")
        await shot(page, "no-webcrypto")


async def test_a_key_protected_room_with_the_cli(
    node: NodeProcess, browser: Browser, password_file: Path
) -> None:
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "alice")
        await open_room(page, "plans", protected=True)
        link = await page.get_by_label("Invite link").input_value()
        assert link.startswith(f"{node.url}/#room=plans&key=")
        key = crypto.decode_key(link.rsplit("key=", 1)[1])
        await shot(page, "protected-invite")
        async with pipe_client(link, "bob", password_file, "--register") as bob:
            await bob.next(type="joined")
            await say(page, "the eagle lands at dawn")
            line = await bob.next(type="message")
            assert line["room"] == "plans" and line["text"] == "the eagle lands at dawn"
            assert line["decrypted"] is True
            await bob.send("roger that")
            await bob.send("/me nods")
            await say(page, "/op bob")  # only staff set the topic
            await expect(page.locator("#notice")).to_contain_text("alice made bob a moderator")
            await bob.send("/topic nest at noon")
            await expect(page.locator("#messages")).to_contain_text("roger that")
            await expect(page.locator("#messages li.action")).to_contain_text("* bob nods")
            await expect(page.locator("#topic")).to_have_text("Topic: nest at noon")
            await say(page, "/me salutes")
            line = await bob.next(type="message", sender="alice")
            assert line["text"] == "salutes" and line["me"] is True
            assert (await bob.finish())[0] == 0
        # a box sealed with another key is reported, never shown as garbage
        async with user(node, "mallory") as mallory:
            await mallory.join("plans", protected=True)
            wrong = crypto.new_room_key()
            await mallory.send(type="send", room="plans", box=crypto.seal(wrong, "x"), ref="w")
            await mallory.expect("ack", ref="w")
        await expect(page.locator("#messages li.message .failed")).to_have_text(
            ["[cannot decrypt: wrong room key or damaged message]"]
        )
        await say(page, "/topic meet at the old mill")
        await expect(page.locator("#topic")).to_have_text("Topic: meet at the old mill")
        await shot(page, "protected-room")
        await watched.assert_clean()
    node.stop()
    with sqlite3.connect(node.data_dir / "onionchat.sqlite3") as db:
        rows = db.execute(
            "SELECT m.text, m.box FROM messages m JOIN rooms r ON r.id = m.room_id"
            " WHERE r.name = 'plans' ORDER BY m.id"
        ).fetchall()
    assert len(rows) == 5 and all(text is None and box for text, box in rows)
    assert sealed.open_body([key], rows[0][1]).text == "the eagle lands at dawn"
    raw = b"".join(p.read_bytes() for p in node.data_dir.glob("onionchat.sqlite3*"))
    for word in (b"eagle", b"roger", b"nods", b"salutes", b"nest at noon", b"old mill"):
        assert word not in raw


async def test_opening_an_invite_link_joins_with_the_key(
    node: NodeProcess, browser: Browser
) -> None:
    key = crypto.new_room_key()
    async with user(node, "alice") as alice:
        _, signer = await publish_identity(alice)
        await alice.join("vault", protected=True)
        box = signed_box(key, signer, "vault", "alice", "in the vault")
        await alice.send(type="send", room="vault", box=box, ref="v")
        await alice.expect("ack", ref="v")
    async with open_page(browser, node) as watched:
        page = watched.page
        await page.goto(f"{node.url}/#room=vault&key={crypto.encode_key(key)}")
        await sign_up(page, "bob")
        await expect(page.locator("#room-title")).to_contain_text("#vault")
        await expect(texts(page)).to_have_text(["in the vault"])
        assert "key=" not in page.url  # the key left the address bar, it stays on the device
        await page.reload()
        await expect(page.locator("#status")).to_have_text("connected")
        await page.locator("#rooms button", has_text="#vault").click()
        await expect(texts(page)).to_have_text(["in the vault"])
        await watched.assert_clean()


async def test_an_invite_link_keeps_the_key_under_the_nodes_room_name(
    node: NodeProcess, browser: Browser
) -> None:
    """`#room=Straße` is the room `strasse` to the node (NFKC + casefold; toLowerCase would
    give `straße`): the key goes with the name the node answers in `joined`."""
    key = crypto.new_room_key()
    async with user(node, "alice") as alice:
        _, signer = await publish_identity(alice)
        joined = await alice.join("Straße", protected=True)
        assert joined["room"]["name"] == "strasse"
        box = signed_box(key, signer, "strasse", "alice", "on the street")
        await alice.send(type="send", room="strasse", box=box)
        await alice.expect("ack")
    async with open_page(browser, node) as watched:
        page = watched.page
        await page.goto(f"{node.url}/#room=Stra%C3%9Fe&key={crypto.encode_key(key)}")
        await page.reload()  # before logging in: the link is still to be opened
        assert "key=" not in page.url
        await sign_up(page, "bob")
        await expect(page.locator("#room-title")).to_have_text("#strasse")
        await expect(texts(page)).to_have_text(["on the street"])
        # the key is kept in bob's keyring on the node, nowhere in this browser
        stored = await page.evaluate("Object.keys(localStorage)")
        assert not [k for k in stored if k.startswith("onionchat.key.")]
        assert await page.evaluate("sessionStorage.getItem('onionchat.invite')") is None
        await say(page, "sealed under the right name")
        wrap = crypto.decode_key(await page.evaluate("sessionStorage.getItem('onionchat.wrap')"))
        await watched.assert_clean()
    with sqlite3.connect(node.data_dir / "onionchat.sqlite3") as db:
        (ring,) = db.execute("SELECT keyring FROM users WHERE name = 'bob'").fetchone()
    assert sealed.Keyring.open(wrap, ring).rooms == {"strasse": [key]}


async def test_scroll_back_pages_older_messages(node: NodeProcess, browser: Browser) -> None:
    token = await register(node, "seeder")
    n = 0
    for _ in range(3):  # three connections, each within its rate-limit burst
        async with connect(node, token) as seeder:
            await seeder.join("history")
            for _ in range(45):
                await seeder.say("history", f"message {n:03}", ref=str(n))
                n += 1
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "reader")
        await open_room(page, "history")
        await expect(texts(page).last).to_have_text("message 134")
        assert await texts(page).count() == 50
        first = page.locator("#messages li.message", has_text="message 000")
        for _ in range(10):
            if await first.count():
                break
            count = await texts(page).count()
            await page.locator("#messages").evaluate("el => el.scrollTop = 0")
            await expect(texts(page)).not_to_have_count(count)
        await expect(first).to_have_count(1)
        shown = await texts(page).all_text_contents()
        assert shown == [f"message {i:03}" for i in range(135)]
        await expect(page.locator("#messages li.day")).to_have_count(1)  # all sent today
        await shot(page, "scrolled-back")
        await watched.assert_clean()


async def test_reconnect_after_a_restart_loses_and_doubles_nothing(
    node: NodeProcess, browser: Browser
) -> None:
    token = await register(node, "bob")
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "alice")
        await open_room(page, "dev")
        async with connect(node, token) as bob:
            await bob.join("dev")
            await bob.say("dev", "before the drop")
        await expect(texts(page)).to_have_text(["before the drop"])
        node.stop()
        await expect(page.locator("#status")).to_have_text("reconnecting…")
        await shot(page, "reconnecting")
        await asyncio.sleep(4)  # the page's backoff grows: its next try is seconds away
        node.start(port=node.port)
        missed = [f"while you were away {i}" for i in range(55)]  # more than a joined page
        async with connect(node, token) as bob:
            await bob.join("dev")
            for i, text in enumerate(missed):
                await bob.say("dev", text, ref=str(i))
            # these were sent while the page was still away
            assert await page.locator("#status").text_content() == "reconnecting…"
            await expect(page.locator("#status")).to_have_text("connected", timeout=20_000)
            await say(page, "I am back")
            await bob.expect("message", text="I am back")
            await bob.say("dev", "welcome back", ref="w")
        expected = ["before the drop", *missed, "I am back", "welcome back"]
        await expect(texts(page)).to_have_text(expected)
        await watched.assert_clean()


async def test_hostile_text_is_shown_as_text(node: NodeProcess, browser: Browser) -> None:
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "alice")
        hostile = [
            "<img src=x onerror=alert(1)>",
            "<script>alert(2)</script>",
            "see http://example.com/cat.png and https://evil.test/x",
        ]
        async with user(node, "mallory") as mallory:
            await mallory.join("lobby")
            await say(page, "/op mallory")  # a moderator, for the topic
            await mallory.expect("notice")
            for i, text in enumerate(hostile):
                await mallory.say("lobby", text, ref=str(i))
            await mallory.send(type="topic", room="lobby", text="<b>bold</b><img src=y>")
            await expect(texts(page)).to_have_text(hostile)
            await expect(page.locator("#topic")).to_have_text("Topic: <b>bold</b><img src=y>")
        assert await page.locator("#messages img, #messages script").count() == 0
        # the addresses are links the page made (tests/test_web_notify.py), never markup
        await expect(page.locator("#messages a")).to_have_text(
            ["http://example.com/cat.png", "https://evil.test/x"]
        )
        assert await page.locator("#topic *").count() == 0
        await page.wait_for_timeout(300)  # an onerror would have fired by now
        await watched.assert_clean()  # no dialog, no CSP violation, no foreign request


async def test_composer_completion_and_keyboard(node: NodeProcess, browser: Browser) -> None:
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "alice")
        async with user(node, "bob") as bob:
            await bob.join("lobby")
            await expect(page.locator("#member-list")).to_contain_text("bob")
            box = page.get_by_label("Message", exact=True)
            await box.focus()
            await page.keyboard.type("/")
            completions = page.locator("#completions")
            await expect(completions).to_contain_text("/help")
            await expect(completions).to_contain_text("show or set the room's topic")
            await page.keyboard.type("to")
            await expect(completions.locator("li")).to_have_count(1)
            await shot(page, "completion")
            outline = "getComputedStyle(document.activeElement).outlineStyle"
            assert await page.evaluate(outline) == "solid"  # focus is visible
            await page.keyboard.press("Tab")
            await expect(box).to_have_value("/topic ")
            await page.keyboard.type("a quiet place")
            await page.keyboard.press("Enter")
            await expect(page.locator("#topic")).to_have_text("Topic: a quiet place")
            # @ completes member names
            await page.keyboard.type("hi @b")
            await expect(completions).to_have_text("@bob")
            await page.keyboard.press("Enter")
            await expect(box).to_have_value("hi @bob ")
            # Shift+Enter is a new line, Enter sends
            await page.keyboard.press("Shift+Enter")
            await page.keyboard.type("second line")
            await page.keyboard.press("Enter")
            got = await bob.expect("message", sender="alice")
            assert got["text"] == "hi @bob \nsecond line"
            await expect(texts(page).last).to_contain_text("second line")  # the echo is in
            await page.keyboard.type("/clear")
            await page.keyboard.press("Escape")
            await page.keyboard.press("Enter")
            await expect(texts(page)).to_have_count(0)
        await watched.assert_clean()


async def test_a_phone_sized_screen(node: NodeProcess, browser: Browser) -> None:
    async with open_page(browser, node, width=390, height=844) as watched:
        page = watched.page
        await shot(page, "phone-login")
        await sign_up(page, "alice")
        # the room gets the screen: the join form and the members fold away
        await expect(page.get_by_label("Join or create a room")).to_be_hidden()
        await expect(page.locator("#member-list")).to_be_hidden()
        await open_room(page, "pocket")
        await expect(page.get_by_label("Join or create a room")).to_be_hidden()
        messages = await page.locator("#messages").bounding_box()
        assert messages is not None and messages["height"] >= 0.5 * 844
        await say(page, "typed on a phone " + "long " * 40)
        await expect(texts(page)).to_have_count(1)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # nothing overflows sideways
        for part in ("#rooms", "#messages", "#composer-text"):
            rect = await page.locator(part).bounding_box()
            assert rect is not None and rect["x"] >= 0 and rect["x"] + rect["width"] <= 390
            assert rect["y"] + rect["height"] <= 844
        await shot(page, "phone-room")
        await watched.assert_clean()


async def test_help_notices_and_the_invite_link(node: NodeProcess, browser: Browser) -> None:
    """`/help` opens every command, the node's and the page's, one to a row; a notice stays
    with its room; an invite link is copied by a button."""
    async with open_page(browser, node, width=390, height=844) as watched:
        page = watched.page
        await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        await sign_up(page, "hana")
        await open_room(page, "ops")
        await say(page, "/help")
        panel = page.locator("#help")
        await expect(panel).to_be_visible()
        usages = await panel.locator("td:first-child").all_inner_texts()
        assert len(usages) > 20 and all(u.startswith("/") for u in usages)
        for command in ("/invite USER", "/rotate", "/msg USER MESSAGE", "/kick", "/help"):
            assert any(u.startswith(command) for u in usages), command
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # the table scrolls in its panel, not the page
        await shot(page, "help-phone")
        await page.locator("#help-close").click()
        await expect(panel).to_be_hidden()

        await say(page, "/who")
        await expect(page.locator("#notice")).to_contain_text("in #ops: hana")
        await open_room(page, "vault", protected=True)
        await expect(page.locator("#notice")).to_have_text("")  # the notice was #ops's
        await expect(page.locator("#invite")).to_be_visible()  # the room's invite link
        link = await page.locator("#invite-link").input_value()
        assert link.startswith(f"{node.url}/#room=vault&key=")
        await page.locator("#invite-copy").click()
        await expect(page.locator("#invite-copy")).to_have_text("Copied")
        composer = page.get_by_label("Message", exact=True)
        await composer.focus()
        await page.keyboard.press("Control+V")  # the page itself may not read the clipboard
        await expect(composer).to_have_value(link)
        await watched.assert_clean()


async def test_the_page_derives_and_seals_like_the_python_side(
    node: NodeProcess, browser: Browser
) -> None:
    """The protocol's test vectors, and boxes that cross between tweetnacl and PyNaCl."""
    key = crypto.new_room_key()
    from_python = crypto.seal(key, "from PyNaCl: привет")
    async with open_page(browser, node) as watched:
        result = await watched.page.evaluate(
            """async ([key, fromPython]) => {
              const api = await import("/static/js/api.js");
              const box = await import("/static/js/crypto.js");
              const salt = Uint8Array.from({length: 16}, (_, i) => i);
              const secret = await api.loginSecret("correct horse battery staple", salt, 1000);
              const vectorKey = Uint8Array.from({length: 32}, (_, i) => i);
              const k = box.decodeKey(key);
              return {
                secret: api.b64url(secret),
                vector: box.open(vectorKey,
                  "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7eqZdB0bZHpe+UNqt9JtOcGrc9aVV"),
                opened: box.open(k, fromPython),
                sealed: box.seal(k, "from tweetnacl: ☃"),
                wrong: box.open(box.newKey(), fromPython),
                badKey: box.decodeKey("short"),
              };
            }""",
            [crypto.encode_key(key), from_python],
        )
        await watched.assert_clean()
    assert result["secret"] == "9R7s5NKo23TSv6EXhzuW6xCAbzLIGDGMyvZOHxxsmbI"
    assert result["vector"] == "hello"
    assert result["opened"] == "from PyNaCl: привет"
    assert crypto.open_box(key, result["sealed"]) == "from tweetnacl: ☃"
    assert result["wrong"] is None and result["badKey"] is None


async def test_unread_counts_and_mentions(node: NodeProcess, browser: Browser) -> None:
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "alice")
        await expect(page.locator("#room-title")).to_have_text("#lobby")
        await open_room(page, "dev")
        lobby = page.locator("#rooms button", has_text="#lobby")
        async with user(node, "bob") as bob:
            await bob.join("lobby")
            await bob.say("lobby", "hi all", ref="1")
            await bob.say("lobby", "@alice look at this", ref="2")
            await expect(lobby.locator(".badge")).to_have_text(["@", "2"])
            # a mention in a room this page is not in
            await bob.join("elsewhere")
            await bob.say("elsewhere", "over here, @Alice.", ref="3")
            elsewhere = page.locator("#rooms button", has_text="#elsewhere")
            await expect(elsewhere.locator(".badge.mention")).to_have_text("@")
            await shot(page, "badges")
            await lobby.focus()  # the keyboard alone picks a room
            await page.keyboard.press("Enter")
            await expect(lobby.locator(".badge")).to_have_count(0)
            await expect(page.locator("#messages li.mention")).to_have_text(
                [re.compile("@alice look at this")]
            )
            await elsewhere.click()
            await expect(page.locator("#room-title")).to_have_text("#elsewhere")
            await expect(page.locator("#messages li.mention")).to_contain_text("over here")
            await expect(elsewhere.locator(".badge")).to_have_count(0)
        await watched.assert_clean()


def test_without_javascript_the_page_points_to_the_no_js_chat(node: NodeProcess) -> None:
    # (Playwright's java_script_enabled=False leaves <noscript> unparsed, so read the HTML.)
    page = httpx.get(node.url + "/").text
    assert '<noscript><p class="plain">This page needs JavaScript' in page
    assert '<a href="/nojs/">the chat without JavaScript</a>' in page
    assert httpx.get(node.url + "/nojs/", follow_redirects=True).status_code == 200
