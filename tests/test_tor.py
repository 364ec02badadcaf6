"""The node as an onion service, on a private Tor network of real tors on 127.0.0.1.

One network per test session (`scripts/testnet up`: 5 directory authorities), and one client
tor beside it whose SOCKS port the clients use, as Tor Browser's tor would be. Nodes launch
their own tor, which joins the network through `--torrc` with the testnet's client lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import stem.descriptor.hidden_service
from playwright.async_api import expect

from onionchat import config
from onionchat.onion_keys import Clients, OnionKey
from onionchat.tor import OnionService

from conftest import (
    FAST_AUTH,
    PASSWORD,
    NodeProcess,
    Tor,
    chromium,
    onionchat,
    pipe_client,
    register,
)
from test_web import open_room, say, sign_up, texts

ROOT = Path(__file__).resolve().parent.parent
ONION = re.compile(r"^http://([a-z2-7]{56})\.onion/$")

pytestmark = pytest.mark.timeout(300)


def onion_node(
    tmp_path: Path, testnet: Path, env: dict[str, str] | None = None, name: str = "node"
) -> NodeProcess:
    """A node launching its own tor on the test network. Settings go in the environment, not
    in flags, so that a restart keeps them: a tor started without the testnet's lines would
    reach for the public Tor network."""
    node = NodeProcess(
        tmp_path / name,
        {**FAST_AUTH, "ONIONCHAT_TOR_MODE": "launch", "ONIONCHAT_TOR_TORRC": str(testnet)}
        | (env or {}),
    )
    node.start()
    return node


def published(node: NodeProcess, timeout: float = 120, after: int = 0) -> str:
    """The onion URL from the node's log, once its descriptor is uploaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = node.events()[after:]
        for event in events:
            if event.get("event") == "onion_published":
                return str(event["url"])
            assert event.get("event") != "tor_error", event
        time.sleep(0.2)
    raise AssertionError(f"not published: {node.log_path.read_text()[-3000:]}")


def tor_pid(node: NodeProcess) -> int:
    return int(next(e["pid"] for e in reversed(node.events()) if e.get("event") == "tor_start"))


async def fetch(url: str, tor: Tor, path: str = "/", timeout: float = 60) -> httpx.Response:
    """GET through the client tor, by name, once the onion answers at all (the notes: a first
    fetch right after publication may fail fast). The wait is a raw SOCKS probe: httpx's SOCKS
    layer leaves its socket open when tor answers with an extended code, which socksio cannot
    read (a ResourceWarning in whatever test runs next)."""
    host = urlsplit(url).hostname or ""
    code = await socks_reply(host, tor, timeout)
    assert code == 0, f"{host}: tor's SOCKS reply {code:#x}"
    async with httpx.AsyncClient(
        proxy=f"socks5h://{tor.socks}", trust_env=False, timeout=30
    ) as http:
        return await http.get(url.rstrip("/") + path)


async def socks_reply(host: str, tor: Tor, timeout: float = 60) -> int:
    """tor's SOCKS5 reply code to a stream to host:80 (0: it opened), past 0xF0, which only
    means "not found yet", and past a try that got no reply in time (on a loaded host tor may
    sit on an introduction that failed until its own SocksTimeout). Raw RFC 1928: client
    libraries drop tor's extended codes."""
    deadline = time.monotonic() + timeout
    while True:
        reader, writer = await asyncio.open_connection("127.0.0.1", tor.socks_port)
        code: int | None = None
        try:
            writer.write(b"\x05\x01\x00")
            assert await reader.readexactly(2) == b"\x05\x00"
            name = host.encode()
            writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + b"\x00\x50")
            left = max(1.0, deadline - time.monotonic())
            _, code = await asyncio.wait_for(reader.readexactly(2), min(30.0, left))
        except TimeoutError:
            pass
        finally:
            writer.close()
        if code is not None and code != 0xF0:
            return code
        assert time.monotonic() < deadline, f"{host}: no stream in {timeout:.0f} s (last {code})"
        await asyncio.sleep(1)


def stop(node: NodeProcess) -> None:
    node.stop()
    if (node.data_dir / "tor").exists():
        assert_loopback_only(node.data_dir / "tor")


def assert_loopback_only(tor_dir: Path) -> None:
    """Every address tor's log names is on 127.0.0.0/8: it never reached for another network."""
    log = (tor_dir / "tor.log").read_text(errors="replace")
    addresses = set(re.findall(r"\b(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}):\d+", log))
    assert all(a.startswith("127.") for a in addresses), addresses


async def chat_over(
    url: str, tor: Tor, password_file: Path, env: dict[str, str] | None = None
) -> None:
    """Two CLI clients register and talk through the onion."""
    socks = ("--socks", tor.socks)
    async with pipe_client(url, "alice", password_file, "--register", *socks, env=env) as alice:
        await alice.next(type="joined", timeout=60)
        async with pipe_client(url, "bob", password_file, "--register", *socks, env=env) as bob:
            await bob.next(type="joined", timeout=60)
            await alice.send("hello over the onion")
            line = await bob.next(type="message", timeout=60)
            assert line["text"] == "hello over the onion" and line["sender"] == "alice"
            await bob.send("привет из лука")
            line = await alice.next(type="message", sender="bob", timeout=60)
            assert line["text"] == "привет из лука"
            assert (await bob.finish(60))[0] == 0
        assert (await alice.finish(60))[0] == 0


# -- tests ----------------------------------------------------------------------------------


async def test_a_node_publishes_its_onion_and_two_clients_chat_over_it(
    tmp_path: Path, testnet: Path, client_tor: Tor, password_file: Path
) -> None:
    node = onion_node(tmp_path, testnet)
    try:
        url = published(node)
        address = ONION.match(url)
        assert address, url
        page = await fetch(url, client_tor)
        assert page.status_code == 200 and "OnionChat" in page.text
        health = (await fetch(url, client_tor, "/api/health")).json()
        assert health["tor"] == "published"

        # The clients never resolve a name themselves: every lookup is recorded.
        audit = tmp_path / "audit"
        audit.mkdir()
        (audit / "sitecustomize.py").write_text(
            "import os, sys\n"
            "def _hook(event, args):\n"
            "    if event in ('socket.getaddrinfo', 'socket.gethostbyname'):\n"
            "        with open(os.environ['DNS_AUDIT_LOG'], 'a') as f:\n"
            "            f.write(str(args[0]) + '\\n')\n"
            "sys.addaudithook(_hook)\n"
        )
        lookups = tmp_path / "lookups"
        env = {"PYTHONPATH": str(audit), "DNS_AUDIT_LOG": str(lookups)}
        control = "import socket; socket.getaddrinfo('localhost', 80)"
        subprocess.run([sys.executable, "-c", control], env={**os.environ, **env}, check=True)
        assert lookups.read_text().split() == ["localhost"], "the audit hook does not work"
        lookups.unlink()
        await chat_over(url, client_tor, password_file, env)
        names = set(lookups.read_text().split()) if lookups.exists() else set()
        assert names <= {"127.0.0.1"}, names  # at most the proxy's own address

        # Secrets on disk: tor's directory 0700, the onion key 0600, and the key is the address.
        assert (node.data_dir / "tor").stat().st_mode & 0o777 == 0o700
        assert (node.data_dir / "onion_key").stat().st_mode & 0o777 == 0o600
        assert OnionKey.load_or_create(node.data_dir).address == address.group(1)
        log = node.log_path.read_text()
        assert PASSWORD not in log and "hello over the onion" not in log

        pid = tor_pid(node)
    finally:
        stop(node)
    assert not Path(f"/proc/{pid}").exists(), "tor outlived the node"


async def test_the_address_survives_a_crash_and_ephemeral_ones_do_not(
    tmp_path: Path, testnet: Path, client_tor: Tor
) -> None:
    node = onion_node(tmp_path, testnet)
    try:
        first = published(node)
        pid = tor_pid(node)
        node.stop(signal.SIGKILL)
        deadline = time.monotonic() + 30  # tor owns nothing once its controller is gone
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists(), "a killed node left its tor running"
        seen = len(node.events())
        node.start()
        assert published(node, after=seen) == first
        assert (await fetch(first, client_tor)).status_code == 200
    finally:
        stop(node)

    throwaway = onion_node(tmp_path, testnet, {"ONIONCHAT_TOR_EPHEMERAL": "true"}, name="ephemeral")
    try:
        one = published(throwaway)
        assert one != first
        assert (await fetch(one, client_tor)).status_code == 200
        seen = len(throwaway.events())
        throwaway.restart()
        assert published(throwaway, after=seen) not in (one, first)
        assert not (throwaway.data_dir / "onion_key").exists()
    finally:
        stop(throwaway)


async def test_a_private_onion_needs_the_client_key(
    tmp_path: Path, testnet: Path, client_tor: Tor, password_file: Path
) -> None:
    node = onion_node(tmp_path, testnet, {"ONIONCHAT_TOR_PRIVATE": "true"})
    try:
        url = published(node)
        address = ONION.match(url)
        assert address
        host = f"{address.group(1)}.onion"
        assert any(e.get("event") == "onion_private" for e in node.events())
        clients = Clients(node.data_dir)
        assert clients.path.stat().st_mode & 0o777 == 0o600
        default = clients.get("default")
        assert default is not None and default.private
        assert default.private not in node.log_path.read_text()  # a secret: never logged

        assert await socks_reply(host, client_tor) == 0xF4  # "missing client authorization"
        async with pipe_client(
            url, "mallory", password_file, "--register", "--socks", client_tor.socks
        ) as mallory:
            code, _, err = await mallory.finish(60)
        assert code != 0 and "authoriz" in err.lower(), err

        client_tor.controller.msg(
            f"ONION_CLIENT_AUTH_ADD {address.group(1)} {default.control_blob}"
        )
        try:
            page = await fetch(url, client_tor)
            assert page.status_code == 200
            await chat_over(url, client_tor, password_file)
        finally:
            client_tor.controller.msg(f"ONION_CLIENT_AUTH_REMOVE {address.group(1)}")
    finally:
        stop(node)


async def test_attach_to_a_running_tor(
    tmp_path: Path, testnet: Path, client_tor: Tor, password_file: Path
) -> None:
    host_tor = Tor(tmp_path / "host-tor", testnet.read_text())
    try:
        host_tor.wait_ready()
        node = NodeProcess(tmp_path / "node", {**FAST_AUTH})
        node.start("--tor-attach", f"127.0.0.1:{host_tor.control_port}")
        try:
            url = published(node)
            assert any(e.get("event") == "tor_attach" for e in node.events())
            # A tor of its own user could not open a socket in the node's 0700 directory.
            assert httpx.get(f"{node.url}/api/health").json()["onion"]["target"] == "tcp"
            assert (await fetch(url, client_tor)).status_code == 200
            address = ONION.match(url)
            assert address
            # The service belongs to the node's control connection, not to tor's config.
            assert address.group(1) not in host_tor.controller.get_info("onions/detached", "")
        finally:
            stop(node)
        assert host_tor.proc.poll() is None, "the node stopped a tor it did not start"
        assert not any(e.get("event") == "tor_start" for e in node.events())
    finally:
        host_tor.stop()
    assert_loopback_only(host_tor.data_dir)


async def test_chromium_through_the_socks_proxy_talks_with_a_cli_client(
    tmp_path: Path, testnet: Path, client_tor: Tor, password_file: Path
) -> None:
    node = onion_node(tmp_path, testnet)
    try:
        url = published(node)
        await fetch(url, client_tor)  # reachable before the browser tries
        await register(node, "bob")
        async with chromium(
            f"--proxy-server=socks5://{client_tor.socks}",
            # Any name Chromium resolved itself would fail: all go to the proxy.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            # Tor Browser treats .onion pages as secure contexts (WebCrypto works there);
            # plain Chromium must be told so for this origin.
            f"--unsafely-treat-insecure-origin-as-secure={url.rstrip('/')}",
        ) as browser:
            context = await browser.new_context()
            context.set_default_timeout(60_000)
            page = await context.new_page()
            foreign: list[str] = []
            origin = url.rstrip("/")
            page.on(
                "request", lambda r: None if r.url.startswith(origin) else foreign.append(r.url)
            )
            await page.goto(url)
            await sign_up(page, "alice")
            await open_room(page, "onion")
            await say(page, "hello from Chromium over tor")
            async with pipe_client(
                url, "bob", password_file, "--room", "onion", "--socks", client_tor.socks
            ) as bob:
                line = await bob.next(type="message", timeout=60)
                assert line["text"] == "hello from Chromium over tor"
                await bob.send("and back over tor")
                await expect(texts(page)).to_have_text(
                    ["hello from Chromium over tor", "and back over tor"]
                )
                assert (await bob.finish(60))[0] == 0
            assert foreign == []
            await context.close()
    finally:
        stop(node)


def test_without_a_tor_network_the_node_serves_locally_and_says_why(tmp_path: Path) -> None:
    # An empty network: one authority that nobody runs.
    torrc = tmp_path / "empty.torrc"
    torrc.write_text(
        "TestingTorNetwork 1\n"
        f"DirAuthority nobody orport=9 no-v2 v3ident={'A' * 40} 127.0.0.1:9 {'B' * 40}\n"
    )
    node = NodeProcess(
        tmp_path / "node",
        {**FAST_AUTH, "ONIONCHAT_TOR_MODE": "launch", "ONIONCHAT_TOR_BOOTSTRAP_TIMEOUT": "2"},
    )
    node.start("--torrc", str(torrc))
    try:
        deadline = time.monotonic() + 60
        said: dict[str, Any] = {}
        while not said and time.monotonic() < deadline:
            said = next((e for e in node.events() if e.get("event") == "tor_no_network"), {})
            time.sleep(0.2)
        assert said, node.log_path.read_text()
        assert "tor says:" in said["msg"] and f"unix:{node.socket}" in said["msg"]
        transport = httpx.HTTPTransport(uds=str(node.socket))
        with httpx.Client(transport=transport, base_url=node.url) as http:
            health = http.get("/api/health", timeout=5).json()
        assert health["status"] == "ok" and health["tor"] == "bootstrapping"
        asyncio.run(register(node, "alice"))  # the chat goes on locally
    finally:
        stop(node)


def test_onion_auth_adds_lists_shows_and_removes_clients(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    added = onionchat("onion-auth", "--data-dir", data, "add", "alice")
    assert added.returncode == 0, added.stderr
    alice = Clients(Path(data)).get("alice")
    assert alice is not None and alice.private
    address = OnionKey.load_or_create(Path(data)).address
    assert alice.private in added.stdout
    assert alice.auth_private_line(address) in added.stdout
    assert (Path(data) / "onion_clients.json").stat().st_mode & 0o777 == 0o600
    assert (Path(data) / "onion_key").stat().st_mode & 0o777 == 0o600

    own = "A" * 52
    assert (
        onionchat("onion-auth", "--data-dir", data, "add", "bob", "--public-key", own).returncode
        == 0
    )
    listed = onionchat("onion-auth", "--data-dir", data, "list")
    assert "alice" in listed.stdout and own in listed.stdout
    assert alice.private not in listed.stdout  # list shows no secrets
    assert alice.private in onionchat("onion-auth", "--data-dir", data, "show", "alice").stdout

    again = onionchat("onion-auth", "--data-dir", data, "add", "alice")
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = onionchat("onion-auth", "--data-dir", data, "add", "bad name")
    assert bad.returncode == 1 and "client name" in bad.stderr
    short = onionchat("onion-auth", "--data-dir", data, "add", "carol", "--public-key", "AAAA")
    assert short.returncode == 1 and "52 base32" in short.stderr
    assert onionchat("onion-auth", "--data-dir", data, "remove", "alice").returncode == 0
    assert Clients(Path(data)).get("alice") is None
    gone = onionchat("onion-auth", "--data-dir", data, "remove", "alice")
    assert gone.returncode == 1 and "no client" in gone.stderr


def test_with_tor_on_the_node_listens_on_loopback_only(tmp_path: Path) -> None:
    public = onionchat("serve", "--data-dir", str(tmp_path / "d"), "--host", "0.0.0.0")
    assert public.returncode == 2
    assert "server.host" in public.stderr and "--no-tor" in public.stderr


def test_tor_off_is_said_loudly(node: NodeProcess) -> None:
    said = [e for e in node.events() if e.get("event") == "tor_mode"]
    assert said and said[0]["level"] == "warning" and "TOR IS OFF" in said[0]["msg"]
    assert httpx.get(f"{node.url}/api/health").json()["tor"] == "off"


# -- where the onion leads, and its defences -------------------------------------------------


def tcp_listeners(pid: int) -> list[str]:
    """The TCP sockets process `pid` listens on, as /proc/net/tcp{,6} lines."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append(line)
    return found


async def http_over(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> int:
    """One kept-alive GET /api/health on an open stream; its status, or 0 if the stream died."""
    writer.write(f"GET /api/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
        await asyncio.wait_for(reader.readexactly(length), 30)
    except (asyncio.IncompleteReadError, ConnectionError):
        return 0
    return int(head.split()[1])


async def socks_stream(
    host: str, tor: Tor
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to host:80 through the client tor, with no SOCKS username: every such stream
    to one onion rides the same circuit."""
    reader, writer = await asyncio.open_connection("127.0.0.1", tor.socks_port)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    name = host.encode()
    writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + b"\x00\x50")
    try:
        reply = await asyncio.wait_for(reader.readexactly(10), 60)
    except asyncio.IncompleteReadError:
        return -1, reader, writer
    return reply[1], reader, writer


async def test_the_onion_leads_to_a_unix_socket_and_is_defended(
    tmp_path: Path, testnet: Path, client_tor: Tor
) -> None:
    node = onion_node(tmp_path, testnet, {"ONIONCHAT_TOR_MAX_STREAMS": "3"})
    try:
        url = published(node)
        host = urlsplit(url).hostname or ""
        # No TCP port of the node's: only the socket in its data directory, which only its
        # user (and the tor it launched) can open.
        assert node.proc is not None and tcp_listeners(node.proc.pid) == []
        socket_path = node.data_dir / "web.sock"
        assert node.socket == socket_path.resolve()
        assert stat.S_ISSOCK(socket_path.stat().st_mode)
        assert socket_path.stat().st_mode & 0o777 == 0o600
        assert node.data_dir.stat().st_mode & 0o777 == 0o700
        said = next(e for e in node.events() if e.get("event") == "onion_defences")
        assert "proof of work on" in said["msg"] and "at most 3 streams" in said["msg"]

        # Through the onion: the descriptor clients fetch carries proof-of-work parameters,
        # and health says which defences are on.
        health = (await fetch(url, client_tor, "/api/health")).json()
        assert health["onion"] == {
            "pow": True,
            "pow_queue_rate": 250,
            "pow_queue_burst": 2500,
            "max_streams": 3,
            "max_streams_close_circuit": True,
            "target": "unix",
        }
        descriptor = stem.descriptor.hidden_service.HiddenServiceDescriptorV3.from_str(
            client_tor.controller.get_info(f"hs/client/desc/id/{host.removesuffix('.onion')}")
        )
        inner = str(descriptor.decrypt(host.removesuffix(".onion")))
        assert re.search(r"^pow-params v1 \S+ \d+ \S+$", inner, re.M), inner[:500]

        # Three streams on one visitor's circuit are served; a fourth closes the circuit.
        streams = [await socks_stream(host, client_tor) for _ in range(3)]
        assert [code for code, _, _ in streams] == [0, 0, 0]
        assert [await http_over(r, w, host) for _, r, w in streams] == [200, 200, 200]
        assert await http_over(*streams[0][1:], host) == 200  # kept alive, so far
        fourth, _, writer = await socks_stream(host, client_tor)
        writer.close()
        assert fourth != 0
        assert await http_over(*streams[0][1:], host) == 0  # its circuit is gone
        for _, _, w in streams:
            w.close()
    finally:
        stop(node)
    assert not (node.data_dir / "web.sock").exists()


async def test_where_tor_refuses_the_proof_of_work_defence_the_onion_goes_up_without_it(
    tmp_path: Path, testnet: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {
        "ONIONCHAT_SERVER_DATA_DIR": str(tmp_path / "node"),
        "ONIONCHAT_TOR_MODE": "launch",
        "ONIONCHAT_TOR_TORRC": str(testnet),
    }
    caplog.set_level(logging.INFO, logger="onionchat.tor")
    settings = config.load(None, env=env)
    # tor 0.4.9 takes queue rates below 2**32 and the config loader nothing more, so a rate
    # past it makes this real tor refuse the defence as an older tor would (that one says
    # 'Unrecognized keyword argument "PoWDefensesEnabled"').
    tor = dataclasses.replace(settings.tor, pow_queue_rate=2**32, pow_queue_burst=2**32)
    onion = OnionService(dataclasses.replace(settings, tor=tor))
    onion.start()
    try:
        deadline = time.monotonic() + 120
        while onion.state not in ("published", "failed") and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert onion.state == "published", caplog.text
        assert onion.defences()["pow"] is False
        refused = [r for r in caplog.records if getattr(r, "event", "") == "onion_no_pow"]
        assert refused and "Invalid PoWQueueRate" in refused[0].getMessage()
        said = next(r for r in caplog.records if getattr(r, "event", "") == "onion_defences")
        assert "proof of work OFF" in said.getMessage()
    finally:
        await onion.close()
    assert_loopback_only(tmp_path / "node" / "tor")


def test_a_socket_path_tor_cannot_take_is_refused_at_start(tmp_path: Path) -> None:
    long = tmp_path / ("d" * 120)
    refused = onionchat("serve", "--data-dir", str(long), "--listen", "unix")
    assert refused.returncode == 2
    assert "longer than the 107 bytes" in refused.stderr and "server.listen = tcp" in refused.stderr
    spaced = onionchat("serve", "--data-dir", str(tmp_path / "a b"), "--listen", "unix")
    assert spaced.returncode == 2 and "a space or a quote" in spaced.stderr
