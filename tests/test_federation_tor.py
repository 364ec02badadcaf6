"""Federation through an onion broker, on the private Tor network of tests/test_tor.py: a
mosquitto on 127.0.0.1 published as an onion service by a tor of the test's own, and two nodes
that reach it only by its .onion name, each through the tor it launched (remote DNS)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokers import Mosquitto
from federation import Network, until
from test_tor import assert_loopback_only, onion_node

from conftest import NodeProcess, Tor, connect, register

pytestmark = pytest.mark.timeout(600)

MQTT_PORT = 1883  # the onion's virtual port
LINK_TIMEOUT = 240.0  # onion circuits here take seconds; a stuck rendezvous about 3 minutes
MESSAGE_TIMEOUT = 120.0


@pytest.fixture
def onion_broker(tmp_path: Path, testnet: Path) -> Iterator[str]:
    """A mosquitto on 127.0.0.1, published as `<onion>.onion:1883` by a tor of its own on the
    test network; the host name, once the descriptor is uploaded."""
    broker = Mosquitto(tmp_path / "broker")
    try:
        broker.start()
        tor = Tor(tmp_path / "broker-tor", testnet.read_text())
        try:
            tor.wait_ready()
            service = tor.controller.create_ephemeral_hidden_service(
                {MQTT_PORT: f"127.0.0.1:{broker.port}"},
                key_type="NEW",
                key_content="ED25519-V3",
                await_publication=True,
                timeout=120,
            )
            yield f"{service.service_id}.onion"
        finally:
            tor.stop()
        assert_loopback_only(tor.data_dir)
    finally:
        broker.stop()


async def health(node: NodeProcess) -> dict[str, Any]:
    async with node.http(trust_env=False) as http:
        answer: dict[str, Any] = (await http.get("/api/health", timeout=5)).json()
        return answer


async def linked(nodes: list[NodeProcess], broker: str) -> None:
    """Until every node's /api/health shows the onion broker up; else say what they report."""

    async def up() -> bool:
        for node in nodes:
            links = (await health(node))["federation"]["brokers"]
            assert [link["broker"] for link in links] == [broker], links
            if links[0]["state"] != "up":
                return False
        return True

    try:
        await until(up, timeout=LINK_TIMEOUT, what="both nodes connected to the onion broker")
    except AssertionError:
        said = []
        for node in nodes:
            events = [
                e for e in node.events() if str(e.get("event", "")).startswith(("broker", "tor"))
            ]
            said.append(f"{node.data_dir.name}: {(await health(node))['federation']} {events[-8:]}")
        raise AssertionError("\n".join(said)) from None


async def test_two_nodes_share_a_room_through_an_onion_broker(
    tmp_path: Path, testnet: Path, onion_broker: str
) -> None:
    url = f"mqtt://{onion_broker}:{MQTT_PORT}"
    net = Network(tmp_path, ["north", "south"], [url])
    nodes: list[NodeProcess] = []
    try:
        for name in net.names:
            nodes.append(onion_node(tmp_path, testnet, net.env(name), name=name))
        north, south = nodes
        started = time.monotonic()
        await linked(nodes, url)
        print(f"both nodes up on the onion broker in {time.monotonic() - started:.1f} s")

        ann = await register(north, "ann")
        bob = await register(south, "bob")
        async with connect(north, ann) as on_north, connect(south, bob) as on_south:
            await on_north.join("lobby")
            await on_south.join("lobby")
            sent = await on_north.say("lobby", "hello through the onion broker")
            got = await on_south.expect(
                "message", timeout=MESSAGE_TIMEOUT, text="hello through the onion broker"
            )
            assert got["sender"] == "ann@north" and got["room"] == "lobby"
            assert got["id"] == sent["id"]

            await on_south.say("lobby", "and back the same way", ref="back")
            back = await on_north.expect(
                "message", timeout=MESSAGE_TIMEOUT, text="and back the same way"
            )
            assert back["sender"] == "bob@south"

        async def acknowledged() -> bool:
            """The broker's PUBACKs came back through the onion: both outboxes empty."""
            for node in nodes:
                (link,) = (await health(node))["federation"]["brokers"]
                assert link["state"] == "up", link
                if link["outbox"] or not link["published"] or not link["received"]:
                    return False
            return True

        await until(acknowledged, timeout=60, what="every outbox row acknowledged")
    finally:
        for node in nodes:
            node.stop()
    for node in nodes:  # every address their tors named was on 127.0.0.0/8
        assert_loopback_only(node.data_dir / "tor")
