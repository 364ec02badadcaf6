"""Nothing typed is lost (issue 10): in the browser, a line stays in the message box until the
node has taken it; refused, by the page or by the node, it stays there, editable, with the
reason next to it. Debian's Chromium against a real node; where a test needs the node's
answers held back or its limits misreported, Playwright's WebSocket route stands between."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

from playwright.async_api import Browser, Locator, Page, WebSocketRoute, expect

from conftest import NodeProcess, user
from test_web import open_page, open_room, say, sign_up, texts

LIMIT = 4000  # the node's limits.max_text_chars by default
TOO_LONG = f"the message is too long (4100 characters, at most {LIMIT})"
# the last line sent has its answer: taken (the box is empty) or refused (the reason shows)
ANSWERED = """() => !document.getElementById("composer").classList.contains("sending")
  && (document.getElementById("composer-text").value === ""
      || !document.getElementById("composer-error").hidden)"""


class Switchboard:
    """Between the page and the node: records what the page sends, holds back the node's
    answers to frames carrying a given text (until released), and can rewrite `ready`."""

    def __init__(self, limits: dict[str, Any] | None = None) -> None:
        self.limits = limits or {}
        self.hold: set[str] = set()  # texts (or command lines) whose answers wait
        self.refs: dict[str, str] = {}  # ref of a held frame → its text
        self.held: list[tuple[str, str]] = []  # (text, the node's frame)
        self.sent: list[dict[str, Any]] = []
        self.page_side: WebSocketRoute | None = None

    async def install(self, page: Page) -> None:
        await page.route_web_socket(re.compile(r"/ws$"), self._route)

    def _route(self, ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        self.page_side = ws

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            self.sent.append(frame)
            said = frame.get("text", frame.get("line"))
            if said in self.hold and "ref" in frame:
                self.refs[frame["ref"]] = said
            server.send(message)

        def from_node(message: str | bytes) -> None:
            passed = []
            for line in str(message).split("\n"):
                frame = json.loads(line)
                if frame["type"] == "ready" and self.limits:
                    frame["limits"] = {**frame["limits"], **self.limits}
                    line = json.dumps(frame)
                if frame.get("ref") in self.refs:
                    self.held.append((self.refs[frame["ref"]], line))
                else:
                    passed.append(line)
            if passed:
                ws.send("\n".join(passed))

        ws.on_message(from_page)
        server.on_message(from_node)

    def sends(self, text: str) -> int:
        """How many frames the page sent with this text (or command line)."""
        return sum(1 for f in self.sent if text in (f.get("text"), f.get("line")))

    async def answer(self, text: str) -> None:
        """Let the node's held answer to `text` through."""
        await until(lambda: any(said == text for said, _ in self.held))
        assert self.page_side is not None
        for said, line in self.held:
            if said == text:
                self.page_side.send(line)
        self.held = [(said, line) for said, line in self.held if said != text]


async def until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def message_box(page: Page) -> Locator:
    return page.get_by_label("Message", exact=True)


async def caret(page: Page) -> list[int]:
    return list(
        await message_box(page).evaluate("(area) => [area.selectionStart, area.selectionEnd]")
    )


async def put_caret(page: Page, at: int) -> None:
    await message_box(page).evaluate("(area, at) => area.setSelectionRange(at, at)", at)


async def test_a_message_over_the_limit_stays_in_the_box_with_the_reason(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as watched:
        page = watched.page
        board = Switchboard()
        await board.install(page)
        await sign_up(page, "alice")
        await open_room(page, "dev")
        box, reason = message_box(page), page.locator("#composer-error")
        await expect(reason).to_be_hidden()
        long = "x" * 2000 + "y" * 2100
        await box.focus()
        await page.keyboard.insert_text(long)
        await put_caret(page, 2000)
        await page.keyboard.press("Enter")
        await expect(reason).to_have_text(TOO_LONG)
        await expect(box).to_have_value(long)
        await expect(box).to_have_attribute("aria-invalid", "true")
        assert await caret(page) == [2000, 2000]
        assert board.sends(long) == 0  # refused in the page: it never left
        # still editable where the caret was: cut it down to the limit and it goes
        await page.keyboard.press("Backspace")
        await page.keyboard.press("Control+Shift+End")
        await page.keyboard.press("Delete")
        await page.keyboard.insert_text("y" * (LIMIT - 1999))
        assert len(await box.input_value()) == LIMIT
        await page.keyboard.press("Enter")
        await expect(box).to_have_value("")
        await expect(reason).to_be_hidden()
        await expect(texts(page)).to_have_text(["x" * 1999 + "y" * (LIMIT - 1999)])
        # characters as the node counts them: an emoji is one, not two UTF-16 units
        await say(page, "☃" * 10 + "🧅" * (LIMIT - 10))
        await expect(texts(page)).to_have_count(2)
        # a normal message: the box empties once the node has taken it, and it is in the room
        await say(page, "hello, dev")
        await expect(texts(page).last).to_have_text("hello, dev")
        # the same in a key-protected room, where the node sees only a box and cannot count
        await open_room(page, "vault", protected=True)
        await box.fill(long)
        await box.press("Enter")
        await expect(reason).to_have_text(TOO_LONG)
        await expect(box).to_have_value(long)
        await box.fill("/me " + long)
        await box.press("Enter")
        await expect(reason).to_have_text(TOO_LONG)
        await expect(box).to_have_value("/me " + long)
        assert not [f for f in board.sent if f.get("type") == "send" and f.get("room") == "vault"]
        await watched.assert_clean()


async def test_lines_the_node_refuses_stay_in_the_box(node: NodeProcess, browser: Browser) -> None:
    async with open_page(browser, node) as watched:
        page = watched.page
        # the page is told a higher limit than the node's, so the node is the one to refuse
        board = Switchboard(limits={"max_text_chars": 10_000})
        await board.install(page)
        await sign_up(page, "alice")
        box, reason = message_box(page), page.locator("#composer-error")
        long = "z" * 4100
        await box.fill(long)
        await put_caret(page, 10)
        await box.press("Enter")
        await expect(reason).to_have_text(TOO_LONG)  # the node's words (bad_body)
        await expect(box).to_have_value(long)
        assert board.sends(long) == 1 and await caret(page) == [10, 10]
        # a command answered by an error keeps its line too
        await box.fill("/frobnicate the node")
        await box.press("Enter")
        await expect(reason).to_have_text("unknown command /frobnicate: /help lists the commands")
        await expect(box).to_have_value("/frobnicate the node")
        await box.fill("/topic " + "t" * 301)
        await box.press("Enter")
        await expect(reason).to_contain_text("the topic is too long (301 characters, at most 300)")
        await expect(box).to_have_value("/topic " + "t" * 301)
        # the same box, corrected, goes
        await box.fill("/topic short and sweet")
        await box.press("Enter")
        await expect(page.locator("#topic")).to_have_text("Topic: short and sweet")
        await expect(box).to_have_value("")
        await expect(reason).to_be_hidden()
        await watched.assert_clean()


async def test_a_message_refused_for_rate_stays_in_the_box(
    node_factory: Any, browser: Browser
) -> None:
    # A node that allows a few frames only, and a page told otherwise so that it does not
    # pace itself: some message is dropped for rate (rate_limited), and is kept.
    node: NodeProcess = node_factory(
        env={"ONIONCHAT_LIMITS_RATE": "0.1", "ONIONCHAT_LIMITS_BURST": "6"}
    )
    async with open_page(browser, node) as watched:
        page = watched.page
        board = Switchboard(limits={"rate": 1000, "burst": 1000})
        await board.install(page)
        await sign_up(page, "alice")
        await expect(page.locator("#room-title")).to_have_text("#lobby")
        box, reason = message_box(page), page.locator("#composer-error")
        for i in range(10):
            await box.fill(f"try {i}")
            await box.press("Enter")
            await page.wait_for_function(ANSWERED)
            if await reason.is_visible():
                break
        else:
            raise AssertionError("the node never refused a message for rate")
        await expect(reason).to_contain_text("slow down")
        await expect(box).to_have_value(f"try {i}")
        assert await texts(page).all_text_contents() == [f"try {n}" for n in range(i)]
        await watched.assert_clean()


async def test_sending_while_a_send_is_pending_loses_neither_text(
    node: NodeProcess, browser: Browser
) -> None:
    async with open_page(browser, node) as watched:
        page = watched.page
        board = Switchboard()
        await board.install(page)
        await sign_up(page, "alice")
        await expect(page.locator("#room-title")).to_have_text("#lobby")
        box, reason = message_box(page), page.locator("#composer-error")
        composer = page.locator("#composer")
        async with user(node, "bob") as bob:
            await bob.join("lobby")
            # sent, not yet acknowledged: the text stays, and Enter again does not send twice
            board.hold.add("first")
            await box.fill("first")
            await box.press("Enter")
            await bob.expect("message", text="first")
            await expect(composer).to_have_class(re.compile("sending"))
            await expect(page.locator("#sending")).to_be_visible()
            await expect(box).to_have_value("first")
            await box.press("Enter")
            await page.wait_for_timeout(200)
            assert board.sends("first") == 1
            # a new draft typed meanwhile is not cleared by the first message's ack
            await box.fill("a draft")
            await board.answer("first")
            await expect(composer).not_to_have_class(re.compile("sending"))
            await expect(box).to_have_value("a draft")
            await expect(texts(page)).to_have_text(["first"])
            # typed on after a pending line: the ack takes out that line only
            board.hold.add("second")
            await box.fill("second")
            await box.press("Enter")
            await bob.expect("message", text="second")
            await box.press("End")
            await page.keyboard.press("Shift+Enter")
            await page.keyboard.type("third, being typed")
            await board.answer("second")
            await expect(box).to_have_value("third, being typed")
            assert await caret(page) == [18, 18]
            # two pending at once, the first refused: it comes back, the second is kept
            board.hold.update({"/frobnicate", "fourth"})
            await box.fill("/frobnicate")
            await box.press("Enter")
            await until(lambda: board.sends("/frobnicate") == 1)
            await box.fill("fourth")
            await box.press("Enter")
            await bob.expect("message", text="fourth")
            await expect(box).to_have_value("fourth")
            await put_caret(page, 3)
            await board.answer("/frobnicate")
            await expect(reason).to_have_text(
                "unknown command /frobnicate: /help lists the commands"
            )
            await expect(box).to_have_value("/frobnicate\nfourth")
            assert await caret(page) == [15, 15]  # still after "fou"
            await board.answer("fourth")
            await expect(box).to_have_value("/frobnicate")
            await expect(composer).not_to_have_class(re.compile("sending"))
            await expect(reason).to_be_visible()
            assert board.sends("fourth") == 1
            await expect(texts(page)).to_have_text(["first", "second", "fourth"])
        await watched.assert_clean()
