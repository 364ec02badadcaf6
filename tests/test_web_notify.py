"""A chat people use every day (issue 15), in the browser: the tab's title counts what is
unread, a "new messages" line shows where it starts, a sound and desktop notifications come
only when asked for (and keep sealed text to themselves unless allowed), mentions stand out,
and links are links, those to the open internet only after a warning. Debian's Chromium
against a real node; Playwright's init scripts stand in for the desktop's notifications and
speaker, and for a hidden tab."""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Literal

from playwright.async_api import Browser, Page, Route, expect

from onionchat import crypto

from conftest import NodeProcess, connect, login, user
from test_web import (
    TIMEOUT,
    Watched,
    open_page,
    open_room,
    publish_identity,
    say,
    shot,
    sign_up,
    signed_box,
    texts,
)

# Runs before the page's scripts: notifications shown and tones started are recorded, not
# played (the permission itself stays the browser's).
FAKES = """
window.__shown = [];
window.__tones = [];
const RealNotification = window.Notification;
window.Notification = class {
  constructor(title, options = {}) {
    this.title = title;
    this.body = options.body || "";
    window.__shown.push(this);
  }
  close() {}
  static get permission() { return RealNotification.permission; }
  static requestPermission() { return RealNotification.requestPermission(); }
};
const start = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function (...args) {
  window.__tones.push(this.frequency.value);
  return start.apply(this, args);
};
"""
BEEP, HIGH = 880, 1175  # a message; a mention is the two
ONION = "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzab"
BARE = "vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd"  # 56 characters, as v3 names are


async def hide(page: Page, hidden: bool) -> None:
    """The tab goes to the background (or comes back), as the page sees it."""
    await page.evaluate(
        """(hidden) => {
          Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
          Object.defineProperty(document, "visibilityState",
            { configurable: true, get: () => (hidden ? "hidden" : "visible") });
          document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


async def shown(page: Page, count: int) -> list[list[str]]:
    """The desktop notifications shown so far, once there are `count` of them."""
    await page.wait_for_function("(n) => window.__shown.length >= n", arg=count, timeout=TIMEOUT)
    told: list[list[str]] = await page.evaluate("window.__shown.map((n) => [n.title, n.body])")
    return told


async def tones(page: Page, count: int = 0) -> list[float]:
    """The tones started so far (their pitch), once there are `count` of them."""
    await page.wait_for_function("(n) => window.__tones.length >= n", arg=count, timeout=TIMEOUT)
    started: list[float] = await page.evaluate("window.__tones")
    return started


def items(page: Page) -> Any:
    """What the message list shows, day lines left out."""
    return page.locator("#messages li:not(.day)")


async def faked(watched: Watched, node: NodeProcess, notifications: bool = True) -> Page:
    page = watched.page
    if notifications:
        await page.context.grant_permissions(["notifications"], origin=node.url)
    await page.add_init_script(FAKES)
    await page.reload()
    return page


async def test_the_title_counts_what_is_unread_and_a_line_shows_where_it_starts(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as watched:
        page = watched.page
        await sign_up(page, "alice")
        await expect(page.locator("#room-title")).to_have_text("#lobby")
        await expect(page).to_have_title("OnionChat")
        line = page.locator("#messages .new-line")
        async with user(node, "bob") as bob:
            await bob.join("lobby")
            await bob.say("lobby", "read at once", ref="0")
            await expect(texts(page)).to_have_text(["read at once"])
            await expect(page).to_have_title("OnionChat")
            await open_room(page, "dev")
            await bob.say("lobby", "first unread", ref="1")
            await expect(page).to_have_title("(1) OnionChat")
            await bob.say("lobby", "a question, @alice", ref="2")
            await expect(page).to_have_title("(2) @ OnionChat")
            await page.locator("#rooms button", has_text="#lobby").click()
            await expect(page).to_have_title("OnionChat")
            read, first, mention = (
                re.compile(t) for t in ("read at once", "first unread", "@alice")
            )
            await expect(items(page)).to_have_text([read, "new messages", first, mention])
            await expect(page.locator("#messages li.mention")).to_have_count(1)
            await shot(page, "notify-new-line")
            # what comes meanwhile goes below it; the line stays until alice writes
            await bob.say("lobby", "and more", ref="3")
            await expect(texts(page).last).to_have_text("and more")
            await expect(line).to_have_count(1)
            await say(page, "all read")
            await expect(line).to_have_count(0)
            await expect(texts(page)).to_have_count(5)
            # a hidden tab: the open room's messages count too, until it is seen again
            await hide(page, True)
            await bob.say("lobby", "while you were away", ref="4")
            await expect(page).to_have_title("(1) OnionChat")
            await bob.say("lobby", "@alice are you there?", ref="5")
            await expect(page).to_have_title("(2) @ OnionChat")
            await hide(page, False)
            await expect(page).to_have_title("OnionChat")
            away = re.compile("while you were away")
            await expect(items(page).nth(5)).to_have_text("new messages")
            await expect(items(page).nth(6)).to_have_text(away)
            # leaving the room takes the line away
            await page.locator("#rooms button", has_text="#dev").click()
            await page.locator("#rooms button", has_text="#lobby").click()
            await expect(texts(page)).to_have_count(7)
            await expect(line).to_have_count(0)
            await expect(page).to_have_title("OnionChat")
        await watched.assert_clean()


async def test_sound_and_desktop_notifications_come_only_when_asked_for(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as watched:
        page = await faked(watched, node)
        await sign_up(page, "alice")
        await open_room(page, "vault", protected=True)
        link = await page.get_by_label("Invite link").input_value()
        key = crypto.decode_key(link.rsplit("key=", 1)[1])
        await open_room(page, "dev")
        await expect(page.locator("#identity-state")).to_have_text("Your identity key")
        async with user(node, "bob") as bob:
            secret, signer = await publish_identity(bob)
            await bob.join("lobby")
            await bob.join("vault", protected=True)
            await bob.send(type="key", user="alice", ref="k")
            alice = await bob.expect("key", ref="k")
            shared = crypto.shared_key(secret, base64.b64decode(alice["public"]))

            async def sealed_say(text: str, ref: str) -> None:
                box = signed_box(key, signer, "vault", "bob", text)
                await bob.send(type="send", room="vault", box=box, ref=ref)
                await bob.expect("ack", ref=ref)

            async def direct_say(text: str, ref: str) -> None:
                box = signed_box(shared, signer, alice["direct"], "bob", text)
                await bob.send(type="send", to="alice", box=box, ref=ref)
                await bob.expect("ack", ref=ref)

            # nothing asked for: the title counts, nothing sounds, nothing is shown
            await bob.say("lobby", "a quiet one", ref="0")
            await expect(page).to_have_title("(1) OnionChat")
            assert await tones(page) == [] and await page.evaluate("window.__shown") == []
            await page.get_by_text("Notifications", exact=True).click()
            text_box = page.get_by_label("Show the text of end-to-end encrypted rooms")
            await expect(text_box).to_be_disabled()  # it is about desktop notifications
            await page.get_by_label("Play a sound").check()
            assert await tones(page, 1) == [BEEP]  # what it will sound like
            await page.get_by_label("Desktop notifications").check()
            await expect(text_box).to_be_enabled()
            await expect(text_box).not_to_be_checked()
            await expect(page.locator("#notify-error")).to_have_text("")
            await shot(page, "notify-settings")
            await bob.say("lobby", "hello alice", ref="1")
            assert await shown(page, 1) == [["bob, #lobby", "hello alice"]]
            assert await tones(page, 2) == [BEEP, BEEP]
            await bob.say("lobby", "@alice over here", ref="2")
            told = await shown(page, 2)
            assert told[1] == ["bob, #lobby", "mentioned you: @alice over here"]
            assert await tones(page, 4) == [BEEP, BEEP, BEEP, HIGH]
            # a key-protected room: who wrote where, not what, unless alice allows it
            await sealed_say("the plan is in the blue folder", "3")
            assert (await shown(page, 3))[2] == ["bob, #vault", "new message"]
            await sealed_say("@alice, the key is under the mat", "4")
            assert (await shown(page, 4))[3] == ["bob, #vault", "mentioned you"]
            await direct_say("just between us", "d1")
            assert (await shown(page, 5))[4] == ["bob, direct message", "new message"]
            await text_box.check()
            await sealed_say("the red folder now", "5")
            assert (await shown(page, 6))[5] == ["bob, #vault", "the red folder now"]
            await direct_say("still between us", "d2")
            assert (await shown(page, 7))[6] == ["bob, direct message", "still between us"]
            # the open room, in view: nothing to tell; alice's own words, never
            await bob.join("dev")
            await bob.say("dev", "seen as it comes", ref="6")
            await expect(texts(page).last).to_have_text("seen as it comes")
            token = (await login(node, "alice")).json()["token"]
            async with connect(node, token) as other_device:
                await hide(page, True)
                await other_device.join("lobby")
                await other_device.say("lobby", "from my phone", ref="7")
                await bob.say("dev", "now you are away", ref="8")
                told = await shown(page, 8)
                assert told[7:] == [["bob, #dev", "now you are away"]]
                # lobby 3, vault 3, the conversation 2, and the open room 1
                await expect(page).to_have_title("(9) @ OnionChat")
            await hide(page, False)
            # a click on a notification opens its room
            await page.evaluate("window.__shown[1].onclick()")
            await expect(page.locator("#room-title")).to_have_text("#lobby")
            assert len(await shown(page, 8)) == 8
            assert len(await tones(page, 11)) == 1 + 1 + 2 + 1 + 2 + 1 + 1 + 1 + 1
        # kept for alice on this device: what she chose, never a word of what was said
        stored = await page.evaluate("localStorage.getItem('onionchat.notify.alice')")
        assert json.loads(stored) == {"sound": True, "desktop": True, "text": True}
        await page.reload()
        await expect(page.locator("#status")).to_have_text("connected")
        await expect(page.get_by_label("Play a sound")).to_be_checked()
        await expect(page.get_by_label("Desktop notifications")).to_be_checked()
        await watched.assert_clean()


async def test_a_refused_permission_unticks_the_box_and_says_why(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as watched:
        page = await faked(watched, node, notifications=False)
        await sign_up(page, "alice")
        await page.get_by_text("Notifications", exact=True).click()
        desktop = page.get_by_label("Desktop notifications")
        await desktop.click()
        await expect(page.locator("#notify-error")).to_contain_text(
            "The browser refuses this page desktop notifications"
        )
        await expect(desktop).not_to_be_checked()
        await expect(
            page.get_by_label("Show the text of end-to-end encrypted rooms")
        ).to_be_disabled()
        assert await page.evaluate("localStorage.getItem('onionchat.notify.alice')") is None
        async with user(node, "bob") as bob:
            await bob.join("lobby")
            await open_room(page, "dev")
            await bob.say("lobby", "anyone?", ref="0")
            await expect(page).to_have_title("(1) OnionChat")
        assert await page.evaluate("window.__shown") == []
        await watched.assert_clean()


async def test_links_are_links_and_the_open_internet_is_warned_of(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as watched:
        page = watched.page
        elsewhere: list[dict[str, str]] = []

        async def answer(route: Route) -> None:
            elsewhere.append({"url": route.request.url, **route.request.headers})
            await route.fulfill(body="<p>elsewhere</p>", content_type="text/html")

        # nothing leaves this machine: other sites answer here, and say who asked
        await page.context.route(lambda url: not url.startswith(node.url), answer)
        await sign_up(page, "alice")
        text = (
            f"see https://example.com/x and http://{ONION}.onion/y. Or {BARE}.onion/path, "
            "(https://en.wikipedia.org/wiki/Tor_(network)) but never javascript:alert(1) "
            "nor <a href=x>this</a>!"
        )
        async with user(node, "bob") as bob:
            await bob.join("lobby")
            await bob.say("lobby", text)
            await expect(texts(page)).to_have_text([text])  # every character, as written
        links = await page.evaluate(
            """[...document.querySelectorAll("#messages a")]
              .map((a) => [a.textContent, a.href, a.rel, a.target])"""
        )
        safe = ["noopener noreferrer", "_blank"]
        assert links == [
            ["https://example.com/x", "https://example.com/x", *safe],
            [f"http://{ONION}.onion/y", f"http://{ONION}.onion/y", *safe],
            [f"{BARE}.onion/path", f"http://{BARE}.onion/path", *safe],
            [
                "https://en.wikipedia.org/wiki/Tor_(network)",
                "https://en.wikipedia.org/wiki/Tor_(network)",
                *safe,
            ],
        ]
        # the open internet: a warning first, in the page
        warning = page.locator("#leave")
        await page.get_by_role("link", name="https://example.com/x").click()
        await expect(warning).to_be_visible()
        await expect(warning).to_contain_text(
            "This link leaves Tor-only space: example.com is on the open internet"
        )
        await expect(page.get_by_role("button", name="Cancel")).to_be_focused()
        await shot(page, "link-warning")
        await page.get_by_role("button", name="Cancel").click()
        await expect(warning).to_be_hidden()
        await page.get_by_role("link", name="https://en.wikipedia.org/wiki/Tor_(network)").click()
        await expect(warning).to_contain_text("en.wikipedia.org is on the open internet")
        await page.keyboard.press("Escape")
        await expect(warning).to_be_hidden()
        assert elsewhere == [] and len(page.context.pages) == 1  # nothing went anywhere
        await watched.assert_clean()
        # opened once the user says so: in a tab of its own, without this page's address
        await page.get_by_role("link", name="https://example.com/x").click()
        async with page.expect_popup() as opened:
            await page.get_by_role("button", name="Open it").click()
        popup = await opened.value
        await popup.wait_for_load_state()
        assert popup.url == "https://example.com/x"
        assert await popup.evaluate("window.opener") is None
        await popup.close()
        # an onion link opens at once
        async with page.expect_popup() as opened:
            await page.get_by_role("link", name=f"{BARE}.onion/path").click()
        popup = await opened.value
        await popup.wait_for_load_state()
        assert popup.url == f"http://{BARE}.onion/path"
        await popup.close()
        await expect(warning).to_be_hidden()
        assert [e["url"] for e in elsewhere] == [
            "https://example.com/x",
            f"http://{BARE}.onion/path",
        ]
        assert not [e for e in elsewhere if "referer" in e]
        await watched.assert_clean()


async def test_on_a_phone_and_in_the_dark(node: NodeProcess, browser: Browser) -> None:
    """Screenshots to look at: the panel, the line and the warning, phone-sized and dark."""
    cases: list[tuple[int, int, Literal["light", "dark"]]] = [
        (390, 844, "light"),
        (390, 844, "dark"),
        (1200, 800, "dark"),
    ]
    for width, height, scheme in cases:
        async with open_page(browser, node, width=width, height=height) as watched:
            page = watched.page
            await page.emulate_media(color_scheme=scheme)
            name = f"{scheme}-{width}"
            await sign_up(page, f"alice{width}{scheme}")
            room = f"talk{width}{scheme}"
            await open_room(page, room)
            async with user(node, f"bob{width}{scheme}") as bob:
                await bob.join(room)
                await bob.say(room, "before", ref="0")
                await expect(texts(page)).to_have_text(["before"])
                await open_room(page, f"dev{width}{scheme}")
                await bob.say(room, "see https://example.com/a-long-path/to/read", ref="1")
                await bob.say(room, f"@alice{width}{scheme} and {BARE}.onion", ref="2")
                await page.locator("#rooms button", has_text=f"#{room}").click()
                await expect(page.locator("#messages .new-line")).to_have_count(1)
                await expect(page.locator("#messages li.mention")).to_have_count(1)
                await shot(page, f"notify-new-line-{name}")
                await page.get_by_text("Notifications", exact=True).click()
                await expect(page.get_by_label("Play a sound")).to_be_visible()
                await shot(page, f"notify-settings-{name}")
                await page.get_by_text("Notifications", exact=True).click()
                await page.get_by_role("link", name=re.compile("example.com")).click()
                await expect(page.locator("#leave")).to_be_visible()
                await shot(page, f"link-warning-{name}")
                await page.get_by_role("button", name="Cancel").click()
            await watched.assert_clean()
