"""Firefox ESR (the engine Tor Browser is built on) for the tests, through a node.js driver.

Debian has no geckodriver and Playwright's Firefox is a patched build of its own, so
tests/firefox/driver.mjs drives Debian's stock `firefox-esr` with Puppeteer over WebDriver
BiDi, and this module speaks to it: one JSON line per command, one per answer. The API reads
like Playwright's (pages, locators, `expect`), so tests/test_firefox.py reads like
tests/test_web.py. Every wait is bounded; the driver is ended by the PID recorded when it
started, never by a name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

FIREFOX = "/usr/bin/firefox-esr"  # Debian's, installed by scripts/system-packages
DRIVER_DIR = Path(__file__).resolve().parent / "firefox"
TIMEOUT = 10.0  # seconds: every wait on a page
MARGIN = 20.0  # seconds more that an answer may take (a navigation after an action, say)
# Whatever a profile would fetch on its own goes nowhere: the tests allow no foreign request.
QUIET = {
    "app.update.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
}


def missing() -> str | None:
    """What is not installed, and which script installs it; None when all is there."""
    if not Path(FIREFOX).exists():
        return "firefox-esr is missing: scripts/system-packages installs it"
    if shutil.which("node") is None:
        return "node is missing: scripts/system-packages installs nodejs"
    if not (DRIVER_DIR / "node_modules" / "puppeteer-core").is_dir():
        return "puppeteer-core is missing from tests/firefox: scripts/test installs it"
    return None


class DriverError(AssertionError):
    """A command the driver refused or could not finish (a wait that ran out, say)."""


class Firefox:
    """One driver process, with one headless Firefox; pages are its browser contexts."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.pid = proc.pid  # the only process this module ever ends
        self.log = log
        self.version = ""
        self.firefox_pid: int | None = None
        self._ids = 0
        self._answers: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, log: Path, prefs: dict[str, Any] | None = None) -> Firefox:
        """Start the driver; it answers once Firefox is up (`javascript.enabled` false in
        `prefs` makes a profile like Tor Browser's "Safest" level)."""
        problem = missing()
        assert problem is None, problem
        prefs = {**QUIET, **(prefs or {})}
        config = {
            "executable": FIREFOX,
            "prefs": prefs,
            "timeout": int(TIMEOUT * 1000),
            "javascript": prefs.get("javascript.enabled", True),
        }
        with log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                "node",
                str(DRIVER_DIR / "driver.mjs"),
                json.dumps(config),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=DRIVER_DIR,
                limit=16 * 1024 * 1024,  # an answer is one line, a page's text included
            )
        firefox = cls(proc, log)
        try:
            ready = await firefox._line(60)
            assert "ready" in ready, ready
        except BaseException:
            await firefox.close()
            raise
        firefox.version = ready["ready"]["version"]
        firefox.firefox_pid = ready["ready"]["pid"]
        firefox._reader = asyncio.create_task(firefox._read())
        return firefox

    async def _line(self, timeout: float | None = None) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            raise DriverError(f"the Firefox driver ended: {self.log.read_text()[-3000:]}")
        answer: dict[str, Any] = json.loads(raw)
        return answer

    async def _read(self) -> None:
        """Hand each answer to the command waiting for it; at the end, fail those left."""
        try:
            while True:
                answer = await self._line()
                future = self._answers.pop(answer.get("id", 0), None)
                if future is None or future.done():
                    continue
                if "error" in answer:
                    future.set_exception(DriverError(answer["error"]))
                else:
                    future.set_result(answer["value"])
        except (DriverError, ValueError) as error:
            for future in self._answers.values():
                if not future.done():
                    future.set_exception(DriverError(str(error)))
            self._answers.clear()

    async def call(self, cmd: str, timeout: float = TIMEOUT, **args: Any) -> Any:
        """Send one command and wait for its answer: the driver waits up to `timeout` for
        what the command waits for, this a little longer for the answer."""
        assert self.proc.stdin is not None
        if self._reader is not None and self._reader.done():
            raise DriverError(f"the Firefox driver ended: {self.log.read_text()[-3000:]}")
        self._ids += 1
        ref = self._ids
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._answers[ref] = future
        request = {"id": ref, "cmd": cmd, "timeout": int(timeout * 1000), **args}
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self.proc.stdin.drain()
        try:
            return await asyncio.wait_for(future, timeout + MARGIN)
        except DriverError as error:
            raise DriverError(f"{cmd}: {error}") from None  # here, not in asyncio's frames
        finally:
            self._answers.pop(ref, None)

    async def new_page(self, origin: str, width: int = 1200, height: int = 800) -> Page:
        """A page in a fresh browser context (its own cookies and storage); requests to any
        origin but `origin` (and its WebSocket) are foreign."""
        page_id = await self.call("newPage", width=width, height=height)
        return Page(self, page_id, origin)

    async def close(self) -> None:
        """Close the driver's stdin (it closes Firefox and exits); if it does not, end it,
        by the PID recorded at its start."""
        if self._reader is not None:
            self._reader.cancel()
        if self.proc.returncode is None and self.proc.stdin is not None:
            self.proc.stdin.close()
        if await self._ended(15):
            return
        os.kill(self.pid, signal.SIGTERM)  # Puppeteer closes Firefox before it exits
        if await self._ended(10):
            return
        os.kill(self.pid, signal.SIGKILL)
        await self._ended(5)
        if self.firefox_pid is not None:  # left behind by the driver, which told us its PID
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.firefox_pid, signal.SIGKILL)

    async def _ended(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return False
        return True


@contextlib.asynccontextmanager
async def firefox(log: Path, prefs: dict[str, Any] | None = None) -> AsyncIterator[Firefox]:
    started = await Firefox.start(log, prefs)
    try:
        yield started
    finally:
        await started.close()


@dataclass
class Page:
    """A tab, and everything it did that a careful page must not do."""

    browser: Firefox
    id: int
    origin: str
    keyboard: Keyboard = field(init=False)

    def __post_init__(self) -> None:
        self.keyboard = Keyboard(self)

    async def call(self, cmd: str, timeout: float = TIMEOUT, **args: Any) -> Any:
        return await self.browser.call(cmd, timeout, page=self.id, **args)

    async def goto(self, url: str) -> int | None:
        status: int | None = await self.call("goto", url=url)
        return status

    async def reload(self) -> None:
        await self.call("reload")

    async def url(self) -> str:
        url: str = await self.call("url")
        return url

    def locator(self, selector: str) -> Locator:
        return Locator(self, selector)

    def get_by_label(self, text: str) -> Locator:
        """The control a label (or aria-label) names: exactly `text` if one is, else the
        ones that start with it (so "Password again" finds "Password again (a new…)")."""
        return Locator(self, f"label={text}")

    def get_by_role(self, role: str, name: str) -> Locator:
        assert role == "button", "only buttons are found by role"
        return Locator(self, f"button={name}")

    async def evaluate(self, source: str, arg: Any = None) -> Any:
        """`source` is a JavaScript function of one argument, called in the page."""
        return await self.call("evaluate", source=source, arg=arg)

    async def screenshot(self, path: Path, full_page: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.call("screenshot", path=str(path), fullPage=full_page)

    async def events(self) -> dict[str, Any]:
        """What the page did so far: its requests, console errors, dialogs, HTTP errors and
        CSP violations (None with JavaScript off: no listener runs then)."""
        events: dict[str, Any] = await self.call("events")
        return events

    async def assert_clean(self, http_errors: bool = False) -> None:
        """No CSP violation, foreign request, dialog or script error (nor, unless a test
        provokes them, HTTP errors)."""
        events = await self.events()
        if not http_errors:
            assert events["http_errors"] == [], events["http_errors"]
        assert events["csp_violations"] in ([], None), events["csp_violations"]
        ws_origin = "ws" + self.origin.removeprefix("http")
        # data: never leaves the machine (Firefox itself loads a data: font into pages), nor
        # does a blob: of this origin (a file's bytes, made in the page)
        seen = [urlsplit(url.removeprefix("blob:")) for url in events["requests"]]
        foreign = [
            url
            for url, parts in zip(events["requests"], seen, strict=True)
            if parts.scheme != "data"
            and f"{parts.scheme}://{parts.netloc}" not in (self.origin, ws_origin)
        ]
        assert foreign == [], foreign
        assert events["dialogs"] == [], events["dialogs"]
        # a dropped WebSocket during a node restart is the only error a console may show
        errors = [e for e in events["console_errors"] if "WebSocket" not in e]
        assert errors == [], errors

    async def close(self) -> None:
        await self.call("closePage")


@dataclass
class Keyboard:
    """Real key events, to whatever has the focus."""

    page: Page

    async def press(self, key: str, navigate: bool = False) -> None:
        await self.page.call("press", key=key, navigate=navigate)

    async def type(self, text: str) -> None:
        await self.page.call("type", text=text, timeout=TIMEOUT + len(text) / 10)


@dataclass
class Locator:
    """Elements named by a selector, looked up at each use (CSS, `label=`, `button=`; parts
    joined by ` >> ` look inside the previous)."""

    page: Page
    selector: str

    def locator(self, selector: str) -> Locator:
        return Locator(self.page, f"{self.selector} >> {selector}")

    def get_by_label(self, text: str) -> Locator:
        return self.locator(f"label={text}")

    def get_by_role(self, role: str, name: str) -> Locator:
        assert role == "button", "only buttons are found by role"
        return self.locator(f"button={name}")

    async def fill(self, text: str) -> None:
        """The whole text at once, with one input event (as Playwright's fill)."""
        await self.page.call("fill", selector=self.selector, text=text)

    async def type(self, text: str) -> None:
        """Key by key, as a person types."""
        await self.page.call(
            "type", selector=self.selector, text=text, timeout=TIMEOUT + len(text) / 10
        )

    async def press(self, key: str, navigate: bool = False) -> None:
        """Focus it and press `key`; with `navigate`, until the page it leads to is loaded
        (how forms are sent with JavaScript off: a click there never returns)."""
        await self.page.call("press", selector=self.selector, key=key, navigate=navigate)

    async def click(self, navigate: bool = False) -> None:
        await self.page.call("click", selector=self.selector, navigate=navigate)

    async def check(self) -> None:
        if not (await self._find())["checked"]:
            await self.click()

    async def _find(self) -> dict[str, Any]:
        found: dict[str, Any] = await self.page.call("find", selector=self.selector)
        return found

    async def count(self) -> int:
        return int((await self._find())["count"])

    async def all_text_contents(self) -> list[str]:
        texts: list[str] = (await self._find())["texts"]
        return texts

    async def input_value(self) -> str:
        values: list[str | None] = (await self._find())["values"]
        assert values and values[0] is not None, f"{self.selector} has no value"
        return values[0]

    async def is_visible(self) -> bool:
        return bool((await self._find())["visible"])

    async def bounding_box(self) -> dict[str, float] | None:
        box: dict[str, float] | None = (await self._find())["box"]
        return box


def expect(locator: Locator) -> Expectation:
    """Playwright-like assertions that wait (up to TIMEOUT) for the page to agree."""
    return Expectation(locator)


@dataclass
class Expectation:
    locator: Locator
    negate: bool = False

    async def _wait(self, prop: str, op: str, expected: Any, timeout: float) -> None:
        await self.locator.page.call(
            "waitFor",
            timeout=timeout,
            selector=self.locator.selector,
            property=prop,
            op=op,
            expected=expected,
            negate=self.negate,
        )

    async def to_have_text(self, text: str | list[str], timeout: float = TIMEOUT) -> None:
        """The (whitespace-squashed) text of the first element, or of all of them."""
        if isinstance(text, list):
            await self._wait("texts", "equals", text, timeout)
        else:
            await self._wait("text", "equals", text, timeout)

    async def to_contain_text(self, text: str, timeout: float = TIMEOUT) -> None:
        """Some element's text contains `text`."""
        await self._wait("texts", "contains", text, timeout)

    async def not_to_contain_text(self, text: str, timeout: float = TIMEOUT) -> None:
        await Expectation(self.locator, negate=True).to_contain_text(text, timeout)

    async def to_have_value(self, value: str, timeout: float = TIMEOUT) -> None:
        await self._wait("value", "equals", value, timeout)

    async def to_have_count(self, count: int, timeout: float = TIMEOUT) -> None:
        await self._wait("count", "equals", count, timeout)

    async def to_be_visible(self, timeout: float = TIMEOUT) -> None:
        await self._wait("visible", "equals", True, timeout)

    async def to_be_hidden(self, timeout: float = TIMEOUT) -> None:
        await self._wait("visible", "equals", False, timeout)
