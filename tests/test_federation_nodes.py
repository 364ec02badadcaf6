"""Federation with real node processes (`onionchat serve`) and the clients people use: a browser
(Chromium) on one node, the CLI on another, the pages without JavaScript on a third, all in one
shared room through two real mosquitto brokers; and a node killed with SIGKILL."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from brokers import brokers
from federation import Network, until
from playwright.async_api import Browser, expect
from test_nojs import register_in
from test_nojs import say as say_nojs

from conftest import FAST_AUTH, NodeProcess, connect, pipe_client, register
from test_web import open_page, open_room, say, sign_up, texts


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[tuple[Network, list[NodeProcess]]]:
    with brokers(tmp_path / "brokers", 2) as pair:
        net = Network(tmp_path, ["north", "south", "east"], [b.url for b in pair])
        nodes = [NodeProcess(net.data_dir(n), {**FAST_AUTH, **net.env(n)}) for n in net.names]
        try:
            for node in nodes:
                node.start()
            yield net, nodes
        finally:
            for node in nodes:
                node.stop()


async def linked_processes(nodes: list[NodeProcess]) -> None:
    async def up() -> bool:
        for node in nodes:
            async with httpx.AsyncClient(base_url=node.url) as http:
                health = (await http.get("/api/health")).json()
            if any(b["state"] != "up" for b in health["federation"]["brokers"]):
                return False
        return True

    await until(up, what="every node connected to both brokers")


async def test_a_browser_a_cli_and_a_page_without_script_on_three_nodes_share_a_room(
    processes: tuple[Network, list[NodeProcess]], browser: Browser, password_file: Path
) -> None:
    _, (north, south, east) = processes
    await linked_processes([north, south, east])
    async with open_page(browser, north) as watched:
        page = watched.page
        await sign_up(page, "ann")
        await open_room(page, "lobby")
        await register(south, "bob")
        async with pipe_client(south.url, "bob", password_file, "--room", "lobby") as bob:
            await bob.next(type="joined")
            context = await browser.new_context(java_script_enabled=False)
            try:
                plain = await context.new_page()
                await register_in(plain, east, "cat")
                await plain.get_by_label("Room").fill("lobby")
                await plain.get_by_role("button", name="Join").click()
                await say(page, "from the browser on north")
                got = await bob.next(type="message")
                assert got["text"] == "from the browser on north" and got["sender"] == "ann@north"
                await bob.send("from the CLI on south")
                await say_nojs(plain, "from a page without script on east")
                await expect(texts(page)).to_have_text(
                    [
                        "from the browser on north",
                        "from the CLI on south",
                        "from a page without script on east",
                    ]
                )
                line = await bob.next(type="message", text="from a page without script on east")
                assert line["sender"] == "cat@east"
                await plain.goto(f"{east.url}/nojs/room/lobby/messages")
                shown = await plain.locator("body").inner_text()
                assert "ann@north" in shown and "bob@south" in shown
                assert "from the CLI on south" in shown
            finally:
                await context.close()
            assert (await bob.finish())[0] == 0
        await watched.assert_clean()


async def test_a_node_killed_with_sigkill_catches_up_when_it_is_back(
    processes: tuple[Network, list[NodeProcess]],
) -> None:
    _, (north, south, east) = processes
    await linked_processes([north, south, east])
    token = await register(north, "ann")
    async with connect(north, token) as ann:
        await ann.join("lobby")
        for n in range(40):
            if n == 15:
                assert south.proc is not None
                south.stop(signal.SIGKILL)
            await ann.say("lobby", f"stream {n}", ref=f"s{n}")
        south.start(port=south.port)
        bob = await register(south, "bob")
        async with connect(south, bob) as client:
            shown: list[dict[str, str]] = []

            async def caught_up() -> bool:
                await client.send(type="join", room="lobby", create=True)
                shown[:] = (await client.expect("joined"))["history"]
                return len(shown) == 40

            await until(caught_up, what="south has every message again")
            assert [m["text"] for m in shown] == [f"stream {n}" for n in range(40)]
            assert {m["sender"] for m in shown} == {"ann@north"}


async def test_a_key_protected_room_across_nodes_in_the_browser_and_the_cli(
    processes: tuple[Network, list[NodeProcess]], browser: Browser, password_file: Path
) -> None:
    """alice's browser on north makes #plans; bob's CLI on south joins it by the invite link
    with north's address changed for south's: each reads the other's boxes as decrypted and
    checked (the signature by the key south or north vouched for), none is rejected."""
    _, (north, south, _east) = processes
    await linked_processes([north, south])
    async with open_page(browser, north) as watched:
        page = watched.page
        await sign_up(page, "alice")
        await open_room(page, "plans", protected=True)
        link = await page.get_by_label("Invite link").input_value()
        link = link.replace(north.url, south.url)
        async with pipe_client(link, "bob", password_file, "--register") as bob:
            await bob.next(type="joined")
            await say(page, "the eagle lands at dawn")
            line = await bob.next(type="message", timeout=20)
            assert line["sender"] == "alice@north" and line["text"] == "the eagle lands at dawn"
            assert line["decrypted"] is True
            await bob.send("roger that")
            await expect(page.locator("#messages")).to_contain_text("roger that")
            # checked, not only opened: no box still waiting for its writer's key, none refused
            await expect(page.locator("#messages .text.pending")).to_have_count(0)
            await expect(page.locator("#messages .text.rejected")).to_have_count(0)
            await expect(page.locator("#messages .text.failed")).to_have_count(0)
            await expect(page.locator("#messages li.message .sender")).to_have_text(
                ["alice", "bob@south"]
            )
            assert (await bob.finish())[0] == 0
        await watched.assert_clean()
