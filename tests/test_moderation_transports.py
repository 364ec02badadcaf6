"""Keeping order (issue 14) through every way in: the WebSocket, the pages without
JavaScript (in real Chromium with JavaScript off) and `onionchat admin` beside a running
node. Each goes through the node's one authorization point, and each is refused there."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from playwright.async_api import Browser, BrowserContext, Page, expect

from conftest import Client, NodeProcess, connect, onionchat, register, user


async def command(who: Client, line: str, room: str = "lobby", ref: str = "c") -> dict[str, Any]:
    await who.send(type="command", room=room, line=line, ref=ref)
    while True:
        frame = await who.recv()
        if frame.get("ref") == ref and frame["type"] in ("notice", "error"):
            return frame


async def closed(client: Client, timeout: float = 10.0) -> tuple[int | None, str | None]:
    """Read until the node closes the WebSocket; its close code and reason."""
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await client.ws.recv()
    return client.ws.close_code, client.ws.close_reason


async def test_over_the_websocket_a_kick_keeps_out_and_a_node_ban_shuts_the_door(
    node: NodeProcess,
) -> None:
    async with user(node, "root") as root, user(node, "bob") as bob:
        await root.join("lobby")
        await bob.join("lobby")
        await bob.say("lobby", "hello")
        # a member is refused at the authorization point, whatever the frame
        assert (await command(bob, "/kick root"))["code"] == "forbidden"
        await bob.send(type="topic", room="lobby", text="mine now", ref="t")
        assert (await bob.expect("error", ref="t"))["code"] == "forbidden"
        said = await command(root, "/kick bob 1 noise")
        assert said["text"] == "root kicked bob for 1 min: noise"
        left = await bob.expect("left", room="lobby")
        assert left["reason"] == "root kicked you from #lobby for 1 min: noise"
        await bob.send(type="join", room="lobby", ref="j")
        assert (await bob.expect("error", ref="j"))["code"] == "forbidden"

        assert (await command(root, "/nodeban bob spam"))["type"] == "notice"
        assert await closed(bob) == (4003, "banned from this node by root")
    token = await register(node, "carol")
    async with connect(node, token) as carol:
        await carol.nothing()
    bob_token = await _token(node, "bob")
    async with node.websocket() as ws:
        await ws.send(f'{{"v": 1, "type": "auth", "token": "{bob_token}"}}')
        error = await ws.recv()
        assert '"code":"forbidden"' in error and "bob is banned from this node by root" in error
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4003


async def _token(node: NodeProcess, name: str) -> str:
    from conftest import login

    response = await login(node, name)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


async def test_the_operator_grants_and_bans_from_the_command_line_beside_a_running_node(
    node: NodeProcess,
) -> None:
    async with user(node, "root") as root, user(node, "alice") as alice, user(node, "bob") as bob:
        await root.join("lobby")
        for member in (alice, bob):
            await member.join("lobby")
        assert (await command(alice, "/nodemute bob"))["code"] == "forbidden"
        admin = ("admin", "--data-dir", str(node.data_dir))
        granted = onionchat(*admin, "grant", "alice", "moderator")
        assert granted.returncode == 0, granted.stderr
        assert granted.stdout.strip() == "alice is a moderator of this node now"
        # the running node takes it in within seconds: alice may now act node-wide
        deadline = time.monotonic() + 10
        while (await command(alice, "/nodemute bob 1h", ref="m"))["type"] == "error":
            assert time.monotonic() < deadline, "the node did not take the new role in"
            await asyncio.sleep(0.5)
        await bob.send(type="send", room="lobby", text="hi", ref="s")
        assert (await bob.expect("error", ref="s"))["message"].startswith(
            "you are muted on this node by alice"
        )
        banned = onionchat(*admin, "ban", "bob", "--for", "2h", "--reason", "evasion")
        assert banned.returncode == 0, banned.stderr
        assert await closed(bob) == (4003, "banned from this node by operator")
        users = onionchat(*admin, "users").stdout.splitlines()
        assert [line.split()[:2] for line in users] == [
            ["Olga", "bot"],  # the default node's bot, made at its first start
            ["root", "admin"],
            ["alice", "moderator"],
            ["bob", "member"],
        ]
        rooms = onionchat(*admin, "rooms").stdout.strip()
        assert rooms == "#lobby  open  root (owner)"
        audit = [line.split(" UTC ")[1] for line in onionchat(*admin, "audit").stdout.splitlines()]
        assert audit[0] == "operator: grant moderator alice"
        assert audit[1].startswith("alice: mute bob (until ")
        assert audit[2] == "operator: ban bob (evasion)"
        code = onionchat(*admin, "invite", "--uses", "3").stdout.strip()
        listed = onionchat(*admin, "invites").stdout
        assert listed.startswith(f"{code[:4]}…  by operator  used 0 of 3  until ")
        revoked = onionchat(*admin, "revoke-code", code[:4])
        assert revoked.stdout.strip() == f"invite code {code[:4]}… can no longer be used"
        assert "used 0 of 0" in onionchat(*admin, "invites").stdout  # none left to use
        wrong = onionchat(*admin, "grant", "nobody", "admin")
        assert (wrong.returncode, wrong.stdout.strip()) == (
            1,
            "onionchat admin: there is no user 'nobody'",
        )


# -- the pages without JavaScript ---------------------------------------------------------


@pytest.fixture
async def contexts(browser: Browser) -> AsyncIterator[list[BrowserContext]]:
    made = [await browser.new_context(java_script_enabled=False) for _ in range(2)]
    yield made
    for ctx in made:
        await ctx.close()


async def _nojs_user(ctx: BrowserContext, node: NodeProcess, name: str) -> Page:
    from test_nojs import register_in

    page = await ctx.new_page()
    await register_in(page, node, name)
    await page.get_by_label("Room").fill("lobby")
    await page.get_by_role("button", name="Join").click()
    await expect(page.locator("h1")).to_contain_text("#lobby")
    return page


async def _post(page: Page, text: str) -> None:
    await page.get_by_label("Message").fill(text)
    async with page.expect_navigation():  # the post, and the page it redirects to
        await page.get_by_role("button", name="Send").click()


async def test_without_javascript_a_moderator_kicks_and_purges_and_the_kicked_is_told(
    node: NodeProcess, contexts: list[BrowserContext]
) -> None:
    async with user(node, "root") as root:
        await root.join("lobby")
        mod = await _nojs_user(contexts[0], node, "mod")
        troll = await _nojs_user(contexts[1], node, "troll")
        await _post(troll, "TROLL-SPAM one")
        await _post(troll, "TROLL-SPAM two")
        await root.expect("message", text="TROLL-SPAM two")
        # a member's /kick is refused on the page, with the node's words
        await _post(mod, "/kick troll")
        await expect(mod.locator("main")).to_contain_text("only room moderators and up may kick")
        assert (await command(root, "/op mod"))["type"] == "notice"
        await _post(mod, "/purge troll")
        await expect(mod.locator(".answer")).to_contain_text("mod purged 2 messages of troll")
        assert sorted((await root.expect("deleted"))["ids"]) == sorted(
            f["id"] for f in root.seen if f.get("text", "").startswith("TROLL-SPAM")
        )
        frame = mod.frame_locator("iframe")
        await expect(frame.locator("ol.messages")).not_to_contain_text("TROLL-SPAM")
        await mod.reload()
        await expect(mod.locator(".hint.staff")).to_contain_text("You are staff here")
        # a delete button on each message, for staff: it posts /delete ID
        await _post(troll, "one message too many")
        said = await root.expect("message", text="one message too many")
        line = frame.locator("li", has_text="one message too many")
        await line.get_by_role("button", name="delete").click()
        await expect(mod.locator(".answer")).to_contain_text("mod deleted a message of troll")
        assert (await root.expect("deleted"))["ids"] == [said["id"]]
        await _post(mod, "/mute troll 1h")
        await expect(mod.locator(".answer")).to_contain_text("mod muted troll for 1 h")
        await _post(troll, "muted words")
        await expect(troll.locator("main")).to_contain_text("you are muted here by mod")
        await _post(mod, "/unmute troll")
        await expect(mod.locator(".answer")).to_contain_text("mod unmuted troll")
        await _post(mod, "/kick troll 10 flooding")
        await expect(mod.locator(".answer")).to_contain_text(
            "mod kicked troll for 10 min: flooding"
        )
        await root.expect("notice", text="mod kicked troll for 10 min: flooding")
        await _post(troll, "let me back")  # the form of a page loaded before the kick
        await expect(troll.locator("main")).to_contain_text(
            "you were kicked from #lobby by mod (10 min more): flooding"
        )
        await troll.goto(f"{node.url}/nojs/room/lobby")
        await expect(troll.locator("main")).to_contain_text("you were kicked from #lobby by mod")
        await root.nothing()


async def test_an_invite_only_node_asks_the_web_page_and_the_nojs_form_for_a_code(
    node_factory: Any, browser: Browser
) -> None:
    from test_web import open_page

    node = node_factory(env={"ONIONCHAT_AUTH_REGISTRATION": "invite"})
    async with connect(node, await register(node, "root")) as root:
        code = (await command(root, "/invitecode 2", ref="i"))["text"].split()[2]

    async with open_page(browser, node) as watched:
        page = watched.page
        assert not await page.get_by_label("Invite code").is_visible()
        await page.get_by_label("User name").fill("webby")
        await page.get_by_label("Password", exact=True).fill("a long and careful password")
        await page.get_by_label("Password again").fill("a long and careful password")
        await page.get_by_role("button", name="Create account").click()
        await expect(page.locator("#login-error")).to_have_text(
            "this node takes new accounts with an invite code only: ask a member for one"
        )
        await page.get_by_label("Invite code").fill(code)
        await page.get_by_role("button", name="Create account").click()
        await expect(page.locator("#me")).to_have_text("webby")

    ctx = await browser.new_context(java_script_enabled=False)
    try:
        page = await ctx.new_page()
        await page.goto(f"{node.url}/nojs/")
        form = page.locator("form[action='/nojs/register']")
        await form.get_by_label("Invite code").fill("not-a-code")
        await form.get_by_label("Name").fill("plain")
        await form.get_by_label("Password", exact=True).fill("a long and careful password")
        await form.get_by_label("Password again").fill("a long and careful password")
        await form.get_by_role("button", name="Create account").click()
        await expect(page.locator("main")).to_contain_text("that invite code is unknown")
        form = page.locator("form[action='/nojs/register']")
        await form.get_by_label("Invite code").fill(code)
        await form.get_by_label("Name").fill("plain")
        await form.get_by_label("Password", exact=True).fill("a long and careful password")
        await form.get_by_label("Password again").fill("a long and careful password")
        await form.get_by_role("button", name="Create account").click()
        await expect(page.locator("nav")).to_contain_text("logged in as plain")
    finally:
        await ctx.close()
    users = onionchat("admin", "--data-dir", str(node.data_dir), "users").stdout
    assert "webby  member" in users and "invited by root" in users


async def test_without_javascript_a_guest_enters_talks_and_is_shut_out_with_all_guests(
    node_factory: Any, browser: Browser
) -> None:
    node = node_factory(env={"ONIONCHAT_AUTH_GUESTS": "true"})
    async with connect(node, await register(node, "root")) as root:
        await root.join("lobby")
        ctx = await browser.new_context(java_script_enabled=False)
        try:
            page = await ctx.new_page()
            await page.goto(f"{node.url}/nojs/")
            await page.get_by_role("button", name="Enter as a guest").click()
            await expect(page.locator("nav")).to_contain_text("logged in as guest-")
            await page.get_by_label("Room").fill("lobby")
            await page.get_by_role("button", name="Join").click()
            await _post(page, "a guest says hello")
            said = await root.expect("message", text="a guest says hello")
            assert said["sender"].startswith("guest-")
            assert (await command(root, "/guests out"))["text"] == "guests are out on this node now"
            await page.reload()
            await expect(page.locator("main")).to_contain_text("guests are shut out")
        finally:
            await ctx.close()


async def test_over_the_websocket_modes_mutes_purges_and_the_audit_hold(node: NodeProcess) -> None:
    async with user(node, "root") as root, user(node, "bob") as bob, user(node, "eve") as eve:
        await root.join("lobby")
        await bob.join("lobby")
        for line, said in (
            ("/mode moderated on", "root set #lobby moderated on; modes: moderated"),
            ("/voice bob", "root gave bob a voice in #lobby"),
            (
                "/mode slow 60",
                "root set #lobby slow 60; modes: moderated, slow: a message every 60 s",
            ),
        ):
            assert (await command(root, line))["text"] == said
        await bob.say("lobby", "BOB-ONE")
        await bob.send(type="send", room="lobby", text="BOB-TWO", ref="s")
        assert (await bob.expect("error", ref="s"))["code"] == "rate_limited"
        await eve.join("lobby")
        await eve.send(type="send", room="lobby", text="eve here", ref="e")
        assert (await eve.expect("error", ref="e"))["message"].startswith("#lobby is moderated")
        await command(root, "/mode moderated off")
        await command(root, "/mode slow off")
        await command(root, "/mute eve 10m")
        await eve.send(type="send", room="lobby", text="eve again", ref="e2")
        assert (await eve.expect("error", ref="e2"))["message"].startswith("you are muted here")
        assert (await command(root, "/purge bob"))["text"] == "root purged 1 messages of bob"
        assert (await eve.expect("deleted"))["by"] == "root"
        log = (await command(root, "/audit"))["text"]
        for act in ("mode moderated on", "room role voice bob", "mute eve", "purge bob"):
            assert act in log, act
        assert "BOB-ONE" not in log


async def test_without_javascript_the_waiting_room_holds_until_staff_admit(
    node_factory: Any, browser: Browser
) -> None:
    from test_nojs import register_in

    node = node_factory(env={"ONIONCHAT_AUTH_REGISTRATION": "waiting"})
    async with connect(node, await register(node, "root")) as root:
        ctx = await browser.new_context(java_script_enabled=False)
        try:
            page = await ctx.new_page()
            await page.goto(f"{node.url}/nojs/")
            await expect(page.locator("main")).to_contain_text(
                "Newcomers wait until the node's staff let them in."
            )
            await register_in(page, node, "newbie")
            await page.get_by_label("Room").fill("lobby")
            await page.get_by_role("button", name="Join").click()
            await expect(page.locator("main")).to_contain_text("you are in the waiting room")
            told = await root.expect("notice")  # when newbie's page first came in
            assert told["text"] == "newbie waits to be admitted: /admit newbie"
            await command(root, "/admit newbie", room="")
            await page.goto(f"{node.url}/nojs/rooms")
            await page.get_by_label("Room").fill("lobby")
            await page.get_by_role("button", name="Join").click()
            await expect(page.locator("h1")).to_have_text("#lobby")
        finally:
            await ctx.close()


async def test_the_web_page_offers_guests_only_where_the_node_takes_them(
    node_factory: Any, browser: Browser
) -> None:
    from test_web import open_page, say

    plain = node_factory(name="plain")
    async with open_page(browser, plain) as watched:
        await expect(watched.page.locator("#do-guest")).to_be_hidden()
    node = node_factory(env={"ONIONCHAT_AUTH_GUESTS": "true"}, name="open")
    async with connect(node, await register(node, "root")) as root:
        await root.join("lobby")
        async with open_page(browser, node) as watched:
            page = watched.page
            await page.get_by_role("button", name="Enter as a guest").click()
            await expect(page.locator("#status")).to_have_text("connected")
            await expect(page.locator("#me")).to_have_text(re.compile(r"^guest-[0-9a-f]{6}$"))
            await expect(page.locator("#identity-state")).to_contain_text("You are a guest")
            await say(page, "hello from a guest")
            said = await root.expect("message", text="hello from a guest")
            assert said["sender"].startswith("guest-")
            await watched.assert_clean()


async def test_over_the_websocket_invite_only_full_and_expiring_rooms(node: NodeProcess) -> None:
    async with user(node, "root") as root, user(node, "bob") as bob, user(node, "eve") as eve:
        await root.join("den")
        await bob.join("den")
        old = await bob.say("den", "OLD-DEN-WORDS")
        await command(root, "/mode invite on", room="den")
        await eve.send(type="join", room="den", ref="j")
        error = await eve.expect("error", ref="j")
        assert error["message"] == "#den is invite-only: /knock den asks its staff to let you in"
        await command(eve, "/knock den", room="")
        await root.expect("notice", text="eve knocks on #den: /allow eve lets them in")
        await command(root, "/mode invite off", room="den")
        await command(root, "/mode limit 2", room="den")
        await eve.send(type="join", room="den", ref="j2")
        assert (await eve.expect("error", ref="j2"))[
            "message"
        ] == "#den is full (2 present): try later"
        await command(root, "/mode limit off", room="den")
        with sqlite3.connect(node.data_dir / "onionchat.sqlite3") as db:  # bob's words, aged
            db.execute("UPDATE messages SET ts = ts - 7200000 WHERE id = ?", (old["id"],))
        await command(root, "/mode expiry 1", room="den")
        assert (await bob.expect("deleted"))["ids"] == [old["id"]]
        for f in node.data_dir.glob("onionchat.sqlite3*"):
            assert b"OLD-DEN-WORDS" not in f.read_bytes(), f


async def test_without_javascript_a_moderated_room_refuses_a_members_words(
    node: NodeProcess, contexts: list[BrowserContext]
) -> None:
    async with user(node, "root") as root:
        await root.join("lobby")
        member = await _nojs_user(contexts[0], node, "quiet")
        assert (await command(root, "/mode moderated on"))["type"] == "notice"
        await _post(member, "may I speak?")
        await expect(member.locator("main")).to_contain_text(
            "#lobby is moderated: only voiced members and staff speak"
        )
        await expect(member.get_by_label("Message")).to_have_value("may I speak?")  # kept
        await command(root, "/voice quiet")
        await _post(member, "thank you")
        await root.expect("message", text="thank you")
