"""The no-JavaScript mode (/nojs) in real Chromium with JavaScript off, against a real node,
beside raw WebSocket clients: what a Tor Browser user at the "Safest" level would see."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from onionchat import nojs
from onionchat.auth import COOKIE

from conftest import PASSWORD, SCREENSHOTS, NodeProcess, connect, register, upload, user

REFRESHED = (nojs.REFRESH + 5) * 1000  # ms: long enough for the frame to reload once


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(java_script_enabled=False)
    yield ctx
    await ctx.close()


def watch(page: Page) -> list[str]:
    """Console lines the browser itself logs (CSP refusals among them)."""
    lines: list[str] = []

    def seen(message: ConsoleMessage) -> None:
        lines.append(message.text)

    page.on("console", seen)
    return lines


def no_csp_violation(lines: list[str]) -> None:
    refused = [line for line in lines if "Content Security Policy" in line or "Refused" in line]
    assert not refused, refused


def shot(name: str) -> str:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return str(SCREENSHOTS / f"nojs-{name}.png")


async def register_in(page: Page, node: NodeProcess, name: str) -> None:
    await page.goto(f"{node.url}/nojs/")
    form = page.locator("form[action='/nojs/register']")
    await form.get_by_label("Name").fill(name)
    await form.get_by_label("Password", exact=True).fill(PASSWORD)
    await form.get_by_label("Password again").fill(PASSWORD)
    await form.get_by_role("button", name="Create account").click()
    await expect(page.locator("nav")).to_contain_text(f"logged in as {name}")


async def say(page: Page, text: str) -> None:
    await page.get_by_label("Message").fill(text)
    async with page.expect_navigation():  # the post, and the page it redirects to
        await page.get_by_role("button", name="Send").click()


async def test_register_read_post_and_commands_without_javascript(
    node: NodeProcess, context: BrowserContext
) -> None:
    page = await context.new_page()
    console = watch(page)
    await page.goto(f"{node.url}/nojs/")
    assert page.url.endswith("/nojs/login")
    note = page.locator("#password-note")
    await expect(note).to_contain_text("sends the password itself to the node")
    await expect(note).to_contain_text("derives the secret for this login only")
    await page.screenshot(path=shot("login"), full_page=True)

    await register_in(page, node, "alice")
    cookie = next(c for c in await context.cookies() if c["name"] == COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    await page.get_by_label("Room").fill("Lobby")
    await page.get_by_role("button", name="Join").click()
    assert page.url.endswith("/nojs/room/lobby")
    await expect(page.locator("h1")).to_have_text("#lobby")
    frame = page.frame_locator("iframe")
    await expect(frame.locator("#end")).to_contain_text("Here now: alice")

    async with user(node, "bob") as bob:
        joined = await bob.join("lobby")
        assert joined["members"] == ["alice", "bob"]  # the reader is present while reading
        await page.get_by_label("Message").fill("half-typed, not lost")
        await bob.say("lobby", "hello from the websocket")
        await expect(frame.locator("ol.messages")).to_contain_text(
            "hello from the websocket", timeout=REFRESHED
        )
        await expect(page.get_by_label("Message")).to_have_value("half-typed, not lost")

        await say(page, "<b>bold?</b> <img src=x onerror=alert(1)> & more")
        message = await bob.expect("message", sender="alice")
        assert message["text"] == "<b>bold?</b> <img src=x onerror=alert(1)> & more"
        last = frame.locator("ol.messages li").last
        await expect(last).to_contain_text("<b>bold?</b> <img src=x onerror=alert(1)> & more")
        assert await frame.locator("ol.messages b:text('bold?'), ol.messages img").count() == 0
        await expect(page.get_by_label("Message")).to_have_value("")

        await say(page, "/who")
        await expect(page.locator(".answer")).to_contain_text("In #lobby now: alice, bob")
        assert page.url == f"{node.url}/nojs/room/lobby"  # the answer came through a redirect
        await page.reload()  # so a reload does not post the command again
        await expect(page.locator(".answer")).to_have_count(0)
        await say(page, "/topic release on <Friday>")
        topic = await bob.expect("topic")
        assert topic["text"] == "release on <Friday>" and topic["by"] == "alice"
        await expect(page.locator(".answer")).to_contain_text(
            "Topic of #lobby set to: release on <Friday>"
        )
        await say(page, "/me waves")
        assert (await bob.expect("message", sender="alice"))["me"] is True
        await expect(frame.locator("ol.messages li").last).to_contain_text("* alice waves")
        await say(page, "/msg bob only between us")
        direct = await bob.expect("message", sender="alice")
        assert direct["text"] == "only between us" and "box" not in direct  # plain, and said
        await expect(page.locator(".answer")).to_contain_text("not sealed")
        await expect(page.locator(".answer")).to_contain_text("the node can read it")
        await say(page, "/nonsense")
        await expect(page.locator(".error")).to_contain_text("unknown command /nonsense")
        await expect(page.get_by_label("Message")).to_have_value("/nonsense")
        await page.screenshot(path=shot("room"), full_page=True)

    await page.get_by_role("button", name="Log out").click()
    assert page.url.endswith("/nojs/login")
    assert not [c for c in await context.cookies() if c["name"] == COOKIE]
    no_csp_violation(console)


async def test_login_errors_and_a_key_protected_room(
    node: NodeProcess, context: BrowserContext
) -> None:
    await register(node, "carol")
    async with user(node, "dave") as dave:
        await dave.join("plans", protected=True)
        page = await context.new_page()
        console = watch(page)
        await page.goto(f"{node.url}/nojs/login")
        form = page.locator("form[action='/nojs/login']")
        await form.get_by_label("Name").fill("Carol")
        await form.get_by_label("Password").fill("not the password")
        async with page.expect_response(re.compile(r"/nojs/login$")) as refused:
            await form.get_by_role("button", name="Log in").click()
        assert (await refused.value).status == 401
        await expect(page.locator(".error")).to_have_text("wrong username or password")
        await expect(form.get_by_label("Name")).to_have_value("Carol")  # kept

        await form.get_by_label("Password").fill(PASSWORD)
        await form.get_by_role("button", name="Log in").click()
        await expect(page.locator("nav")).to_contain_text("logged in as carol")
        await expect(page.locator("ul.rooms")).to_contain_text("key-protected: needs JavaScript")
        await page.get_by_role("link", name="#plans").click()
        needs = page.locator(".needs-js")
        await expect(needs).to_contain_text("needs JavaScript")
        await expect(needs).to_contain_text("a key that never reaches this node")
        assert await page.locator("iframe").count() == 0
        await page.screenshot(path=shot("protected"), full_page=True)
        no_csp_violation(console)


async def test_refusals_are_plain_pages_with_their_status(
    node: NodeProcess, context: BrowserContext
) -> None:
    page = await context.new_page()
    await register_in(page, node, "erin")
    await page.get_by_label("Room").fill("bad room!")
    async with page.expect_response(re.compile(r"/nojs/join$")) as answer:
        await page.get_by_role("button", name="Join").click()
    assert (await answer.value).status == 400
    await expect(page.locator(".error")).to_contain_text("room name may hold only letters")
    await expect(page.get_by_label("Room")).to_have_value("bad room!")

    await page.get_by_label("Room").fill("ops")
    await page.get_by_role("button", name="Join").click()
    long = "x" * 4001
    await page.get_by_label("Message").fill(long)
    async with page.expect_response(re.compile(r"/post$")) as answer:
        await page.get_by_role("button", name="Send").click()
    assert (await answer.value).status == 400
    await expect(page.locator(".error")).to_contain_text("too long (4001 characters, at most 4000)")
    await expect(page.get_by_label("Message")).to_have_value(long)  # nothing lost
    await page.screenshot(path=shot("error"), full_page=True)

    # Another site cannot post for the user: no form token, or a foreign Origin.
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    token = await page.locator("form.post input[name=token]").get_attribute("value")
    async with httpx.AsyncClient(base_url=node.url, cookies=cookies) as http:
        forged = await http.post("/nojs/room/ops/post", data={"text": "forged"})
        assert forged.status_code == 403 and "reload the page" in forged.text
        foreign = await http.post(
            "/nojs/room/ops/post",
            data={"text": "forged", "token": token or ""},
            headers={"origin": "http://evil.example"},
        )
        assert foreign.status_code == 403 and "another site" in foreign.text
        ok = await http.post("/nojs/room/ops/post", data={"text": "mine", "token": token or ""})
        assert ok.status_code == 303


async def login_form(http: httpx.AsyncClient) -> str:
    """Open the login page as a browser does: its pre-session cookie, and the forms' token."""
    page = await http.get("/nojs/login")
    found = re.search(r'name="token" value="(\w+)"', page.text)
    assert found is not None
    return found[1]


async def test_login_rate_limit_and_bad_names_are_told_plainly(node: NodeProcess) -> None:
    await register(node, "gina")
    async with httpx.AsyncClient(base_url=node.url) as http:
        token = await login_form(http)
        bad = await http.post(
            "/nojs/register",
            data={"username": "gina the great", "password": "pw", "repeat": "pw", "token": token},
        )
        assert bad.status_code == 400 and "user name may hold only letters" in bad.text
        taken = await http.post(
            "/nojs/register",
            data={"username": "GINA", "password": "pw", "repeat": "pw", "token": token},
        )
        assert taken.status_code == 409 and "is taken" in taken.text
        for _ in range(5):
            wrong = await http.post(
                "/nojs/login", data={"username": "gina", "password": "no", "token": token}
            )
            assert wrong.status_code == 401 and "wrong username or password" in wrong.text
        limited = await http.post(
            "/nojs/login", data={"username": "gina", "password": PASSWORD, "token": token}
        )
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        assert "too many failed logins for this name; try again in" in limited.text
        assert PASSWORD not in node.log_path.read_text()  # never logged
        # without the page's token (another site's form), nothing is even tried
        forged = await http.post("/nojs/login", data={"username": "gina", "password": "x"})
        assert forged.status_code == 403 and "came from another site" in forged.text


async def test_only_the_message_frame_may_be_framed(node: NodeProcess) -> None:
    token = await register(node, "frank")
    async with httpx.AsyncClient(base_url=node.url) as http:
        login = await http.get("/nojs/login")
        http.cookies.set(COOKIE, token)
        assert login.status_code == 200
        assert "frame-ancestors 'none'" in login.headers["content-security-policy"]
        assert login.headers["x-frame-options"] == "DENY"
        rooms = await http.get("/nojs/rooms")
        found = re.search(r'name="token" value="(\w+)"', rooms.text)
        assert found is not None
        joined = await http.post("/nojs/join", data={"room": "框架", "token": found[1]})
        assert joined.status_code == 303
        room = await http.get(joined.headers["location"])
        csp = room.headers["content-security-policy"]
        assert "frame-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert room.headers.get_list("x-frame-options") == ["DENY"]
        framed = await http.get(joined.headers["location"] + "/messages")
        csp = framed.headers["content-security-policy"]
        assert csp.count("frame-ancestors") == 1 and "frame-ancestors 'self'" in csp
        assert "script-src" not in csp and "form-action 'self'" in csp
        assert framed.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
        assert framed.headers["cache-control"] == "no-store"
        assert '<meta http-equiv="refresh"' in framed.text
        assert "<script" not in room.text + framed.text + login.text
        assert " style=" not in room.text + framed.text + login.text


async def test_the_pages_have_their_icon_and_a_dark_look(
    node: NodeProcess, browser: Browser
) -> None:
    """The icon a browser asks for by itself is there, and a dark system gets dark pages."""
    async with httpx.AsyncClient(base_url=node.url) as http:
        icon = await http.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.content.lstrip().startswith(b"<svg")
    schemes: tuple[tuple[Literal["light", "dark"], str], ...] = (
        ("light", "rgb(250, 250, 250)"),
        ("dark", "rgb(23, 20, 27)"),
    )
    for scheme, background in schemes:
        ctx = await browser.new_context(java_script_enabled=False, color_scheme=scheme)
        page = await ctx.new_page()
        console = watch(page)
        await register_in(page, node, f"erin{scheme}")
        assert await page.locator("link[rel=icon]").get_attribute("href") == "/static/favicon.svg"
        assert await page.evaluate("getComputedStyle(document.body).backgroundColor") == background
        await page.get_by_label("Room").fill("lobby")
        await page.get_by_role("button", name="Join").click()
        await say(page, "hello in the " + scheme)
        await page.screenshot(path=shot(f"room-{scheme}"), full_page=True)
        no_csp_violation(console)
        await ctx.close()


async def test_reading_back_without_javascript_stays_still(
    node: NodeProcess, context: BrowserContext
) -> None:
    """The live list reloads to its end every few seconds; a page read back does not (it has
    no refresh), pages further back, and links back to the live end. Pages are rate-limited
    like any history, and a bad id is a plain 400."""
    ids = []
    for name, lines in (("ann", range(30)), ("bea", range(30, 60))):  # each within her rate
        async with user(node, name) as writer:
            await writer.join("history")
            ids += [(await writer.say("history", f"line {n}", ref=f"l{n}"))["id"] for n in lines]
    page = await context.new_page()
    await register_in(page, node, "ben")
    await page.get_by_label("Room").fill("history")
    await page.get_by_role("button", name="Join").click()
    frame = page.frame_locator("iframe[name=messages]")
    items = frame.locator("ol.messages li")
    await expect(items).to_have_count(50)
    await expect(items.first).to_contain_text("line 10")
    await expect(frame.locator("body")).to_contain_text("Times are UTC.")
    await frame.get_by_role("link", name="Earlier messages").click()
    await expect(items).to_have_count(10)
    await expect(items.first).to_contain_text("line 0")
    await expect(items.last).to_contain_text("line 9")
    assert await frame.locator("meta[http-equiv=refresh]").count() == 0  # it stays still
    assert await frame.get_by_role("link", name="Earlier messages").count() == 0
    await page.screenshot(path=shot("read-back"), full_page=True)
    await frame.get_by_role("link", name="Back to the newest messages").click()
    await expect(items).to_have_count(50)
    await expect(items.last).to_contain_text("line 59")
    assert await frame.locator("meta[http-equiv=refresh]").count() == 1

    url = f"{node.url}/nojs/room/history/messages"
    bad = await context.request.get(f"{url}?before=nonsense")
    assert bad.status == 400 and "not a message id" in await bad.text()
    statuses = [(await context.request.get(f"{url}?before={ids[30]}")).status for _ in range(40)]
    assert statuses[0] == 200 and 429 in statuses  # past the burst of history pages


async def test_replies_reactions_and_edits_without_javascript(
    node: NodeProcess, context: BrowserContext
) -> None:
    """The list folds in what the browser client shows: the latest text of an edited message,
    reactions counted with who, the start of the message a reply answers. A link answers or
    reacts to a message, and a reload after it posts nothing again."""
    async with user(node, "ann") as ann:
        await ann.join("porch")
        asked = await ann.say("porch", "tea or coffee?", ref="q")
        await ann.send(type="send", room="porch", text="tea or cocoa?", edit=asked["id"], ref="e")
        await ann.expect("ack", ref="e")
        await ann.send(type="send", room="porch", text="❤️", react=asked["id"], ref="t")
        await ann.expect("ack", ref="t")
        page = await context.new_page()
        console = watch(page)
        await register_in(page, node, "ben")
        await page.get_by_label("Room").fill("porch")
        await page.get_by_role("button", name="Join").click()
        frame = page.frame_locator("iframe[name=messages]")
        item = frame.locator("ol.messages li", has_text="tea or cocoa?")
        await expect(item).to_contain_text("(edited)")
        await expect(item.locator(".reaction")).to_have_text("❤️ 1")
        await expect(item.locator(".reaction")).to_have_attribute("title", "ann")
        await expect(frame.locator("ol.messages li")).to_have_count(1)  # no line per edit

        async with page.expect_navigation():
            await item.get_by_role("link", name="react").click()
        async with page.expect_navigation():
            await page.get_by_role("button", name="React with 😂").click()
        laugh = await ann.expect("message", react=asked["id"], sender="ben")
        assert (laugh["sender"], laugh["text"]) == ("ben", "😂")

        async with page.expect_navigation():
            await item.get_by_role("link", name="reply").click()
        await expect(page.locator(".replying")).to_have_text("↪ ann: tea or coffee?")
        await say(page, "cocoa, please")
        answer = await ann.expect("message", text="cocoa, please")
        assert answer["reply"] == asked["id"]
        await page.reload()  # the page the post redirected to: nothing is posted again
        reply = frame.locator("ol.messages li", has_text="cocoa, please")
        await expect(reply.locator(".quote")).to_have_text("↪ ann: tea or cocoa?")
        await expect(item.locator(".reaction")).to_have_text(["❤️ 1", "😂 1"])
        await page.screenshot(path=shot("relations"), full_page=True)
        await ann.barrier()
        assert [f for f in ann.seen if f.get("text") == "cocoa, please"] == [answer]
        no_csp_violation(console)


async def test_open_room_files_are_links_without_javascript(
    node: NodeProcess, context: BrowserContext
) -> None:
    token = await register(node, "cat")
    page = await context.new_page()
    await register_in(page, node, "ben")
    await page.get_by_label("Room").fill("shed")
    await page.get_by_role("button", name="Join").click()
    async with connect(node, token) as cat, node.http() as http:
        await cat.join("shed")
        sent = await upload(http, token, "shed", b"hammer, saw\n")
        file = {**sent.json(), "name": "tools.txt", "type": "text/plain"}
        await cat.send(type="send", room="shed", text="tools.txt", file=file, ref="f")
        await cat.expect("ack", ref="f")
    frame = page.frame_locator("iframe[name=messages]")
    link = frame.get_by_role("link", name="⬇ tools.txt (1 KiB)")
    await expect(link).to_be_visible(timeout=REFRESHED)
    async with page.expect_download() as waiting:
        await link.click()
    download = await waiting.value
    assert download.suggested_filename == "tools.txt"
    assert Path(await download.path()).read_bytes() == b"hammer, saw\n"
