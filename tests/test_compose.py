"""The compose files (issue 13) run for real with podman-compose (a test extra): compose.yaml
with its `broker` profile, and examples/two-nodes/, whose north and south share a room through
its mosquitto as docs/docker.md says to set them up.

What this machine cannot give, a small override file (written by the test, beside nothing of
the repository) replaces, and only that: no registry can be reached, so the image is the one
`scripts/image` builds and the broker is Debian's mosquitto in an image built here on the same
Debian base, laid out as eclipse-mosquitto's (/mosquitto/config, /mosquitto/data); a tor in
a compose network could not reach the private test network (its authorities listen on the
host's 127.0.0.1), so the nodes run without tor (tests/test_image.py publishes the image's
onion), listening on their container's network, published on the host's 127.0.0.1 only. The
services talk over the project's own bridge network, on this host alone."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import FAST_AUTH, NodeProcess, connect, register, word_between
from containers import ROOT, need
from model_servers import DEFAULT_TOKENS

pytestmark = pytest.mark.timeout(600)

BROKER_IMAGE = "localhost/onionchat-test-mosquitto:latest"
BROKER_DOCKERFILE = """\
FROM debian:bookworm-slim
RUN apt-get update \\
    && apt-get install -y --no-install-recommends mosquitto \\
    && rm -rf /var/lib/apt/lists/* \\
    && install -d -o mosquitto -g mosquitto /mosquitto/config /mosquitto/data
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Published(NodeProcess):
    """A node in a compose service, reached on the host port its container is published on."""

    def __init__(self, data_dir: Path, port: int) -> None:
        super().__init__(data_dir, {})
        self.port = port

    async def health(self) -> dict[str, Any]:
        async with self.http(timeout=5) as http:
            return dict((await http.get("/api/health")).json())

    async def wait(self, ready: Any, timeout: float = 90) -> dict[str, Any]:
        """The health once `ready(health)` holds (the container may still be starting)."""
        deadline = time.monotonic() + timeout
        while True:
            health: dict[str, Any] = {}
            try:
                health = await self.health()
                if ready(health):
                    return health
            except (httpx.HTTPError, ValueError):
                pass
            assert time.monotonic() < deadline, f"not ready: {health}"
            await asyncio.sleep(0.5)


class Compose:
    """podman-compose on the given files, as one project of a name of its own; `down -v`
    removes what it made (containers, network, volumes) and nothing else."""

    def __init__(
        self, files: list[Path], project: str, podman: dict[str, str], env_file: Path
    ) -> None:
        self.tool = need("podman-compose", "pip install -e '.[test]'")
        self.files = files
        self.project = project
        self.env = podman
        self.env_file = env_file

    def __call__(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        command = [self.tool, "--project-name", self.project, "--env-file", str(self.env_file)]
        for file in self.files:
            command += ["-f", str(file)]
        return subprocess.run(
            [*command, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def ok(self, *args: str, timeout: float = 180) -> str:
        done = self(*args, timeout=timeout)
        assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def logs(self, service: str) -> str:
        done = self("logs", service)
        return done.stdout + done.stderr


@pytest.fixture(scope="module")
def broker_image(
    image: str, podman: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> str:
    """Debian's mosquitto on the base `scripts/image` made (the `image` fixture): in the place
    of eclipse-mosquitto:2, which cannot be pulled here."""
    context = tmp_path_factory.mktemp("broker-image")
    (context / "Dockerfile").write_text(BROKER_DOCKERFILE)
    built = subprocess.run(
        ["podman", "build", "--pull=never", "--layers", "-t", BROKER_IMAGE, str(context)],
        env=podman,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return BROKER_IMAGE


def node_settings(port: int) -> str:
    """What a service here runs with besides its compose file's own settings."""
    env = FAST_AUTH | {
        "ONIONCHAT_SERVER_HOST": "0.0.0.0",  # its container's network: published on 127.0.0.1
        "ONIONCHAT_SERVER_PORT": "8080",
        "ONIONCHAT_LOG_FORMAT": "json",
    }
    lines = "".join(f'      {k}: "{v}"\n' for k, v in env.items())
    return (
        f"    image: localhost/onionchat:latest\n    environment:\n{lines}"
        f'    ports: ["127.0.0.1:{port}:8080"]\n'
    )


# The `bot` profile's Ollama: tests/model_servers.py's, which speaks Ollama's documented wire
# format (no model can run here), in a container of the node's image on the service's port.
MODEL_SERVER = f"""\
  ollama:
    image: localhost/onionchat:latest
    entrypoint: ["python", "/srv/tests/model_servers.py", "ollama", "--host", "0.0.0.0",
                 "--port", "11434", "--seconds", "600"]
    volumes: ["{ROOT / "tests"}:/srv/tests:ro"]
    tmpfs: [/data]  # the image's VOLUME, which would be left behind as an anonymous one
"""


def override(path: Path, nodes: dict[str, int], bot: bool = False) -> Path:
    text = "services:\n"
    for service, port in nodes.items():
        text += f"  {service}:\n" + node_settings(port)
    text += f"  mosquitto:\n    image: {BROKER_IMAGE}\n"
    path.write_text(text + (MODEL_SERVER if bot else ""))
    return path


def podman_volumes(env: dict[str, str]) -> str:
    listed = ["podman", "volume", "ls", "--format", "{{.Name}}"]
    return subprocess.run(listed, env=env, capture_output=True, text=True, timeout=30).stdout


def lines_after(output: str, starts: str) -> str:
    """The line after the one that starts so (federation-key prints a label, then a value)."""
    lines = output.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith(starts):
            return lines[i + 1].strip()
    raise AssertionError(f"no {starts!r} in {output}")


@pytest.fixture
def project() -> Iterator[list[Compose]]:
    """The projects a test starts, each taken down (with its volumes) at the end."""
    made: list[Compose] = []
    yield made
    for compose in made:  # every profile's services and volumes too
        profiles = ("--profile", "broker", "--profile", "bot")
        compose(*profiles, "down", "--volumes", "--timeout", "5", timeout=120)
        assert compose.project not in podman_volumes(compose.env)


async def olga_says(client: Any, room: str) -> str:
    """Olga's answer to a joke asked for, once it is whole."""
    await client.say(room, "Olga, tell a joke", ref="olga")
    said = await client.expect("message", room=room, sender="Olga", timeout=60)
    return str(said["text"])


async def test_the_compose_file_gives_an_onion_chat_and_its_profiles_a_bot_and_a_broker(
    broker_image: str, podman: dict[str, str], tmp_path: Path, project: list[Compose]
) -> None:
    """`docker compose up -d` is a working chat, whose Olga says her model server is away;
    `--profile broker --profile bot up -d` adds the mosquitto, which the node reaches by its
    service name with the settings of docker/mosquitto.conf, and the model server, from which
    Olga then answers."""
    port = free_port()
    env_file = tmp_path / "env"
    env_file.write_text("")
    files = [ROOT / "compose.yaml", override(tmp_path / "override.yaml", {"node": port}, bot=True)]
    compose = Compose(files, f"oc-test-{secrets.token_hex(4)}", podman, env_file)
    project.append(compose)

    compose.ok("up", "-d", "--no-build")
    node = Published(tmp_path / "node", port)
    health = await node.wait(lambda h: h.get("status") == "ok")
    assert "federation" not in health  # no brokers in .env: a node of its own
    alice, bob = await register(node, "alice"), await register(node, "bob")
    async with connect(node, alice) as a, connect(node, bob) as b:
        await word_between(a, b, "lobby", "hello from compose")
        assert (await olga_says(a, "lobby")).startswith("⚠")  # no model server yet
    running = compose.ok("ps")
    assert "mosquitto" not in running and "ollama" not in running  # profiles are opt-in

    profiles = ("--profile", "broker", "--profile", "bot")
    compose.ok(*profiles, "up", "-d", "--no-build")
    probes = {
        "mosquitto": "import socket; socket.create_connection(('mosquitto', 1883), 5).close()",
        "ollama": "import urllib.request as u; u.urlopen('http://ollama:11434/api/tags', None, 5)",
    }
    for service, probe in probes.items():
        deadline = time.monotonic() + 60
        while (reached := compose("exec", "node", "python", "-c", probe)).returncode != 0:
            assert time.monotonic() < deadline, reached.stderr + compose.logs(service)
            await asyncio.sleep(1)
    async with connect(node, alice) as a:
        await a.join("lobby")
        assert await olga_says(a, "lobby") == "".join(DEFAULT_TOKENS)  # the model server's
    compose.ok(*profiles, "stop", "-t", "20")
    assert '"event": "stop"' in compose.logs("node")  # a clean stop, as `docker stop` gives


async def test_two_nodes_of_the_example_share_a_room_through_its_broker(
    broker_image: str, podman: dict[str, str], tmp_path: Path, project: list[Compose]
) -> None:
    """examples/two-nodes/ as docs/docker.md sets it up: each node's key made with
    `run --rm --no-deps NODE federation-key`, the secret and keys in .env, `up -d`; then alice
    on north and bob on south talk in one room, each seeing the other as name@node, and the
    history stays across `down` and `up` (the volumes)."""
    example = ROOT / "examples" / "two-nodes"
    ports = {"north": free_port(), "south": free_port()}
    env_file = tmp_path / "env"
    env_file.write_text("")
    files = [example / "compose.yaml", override(tmp_path / "override.yaml", ports)]
    compose = Compose(files, f"oc-test-{secrets.token_hex(4)}", podman, env_file)
    project.append(compose)

    made = compose.ok("run", "--rm", "--no-deps", "north", "federation-key", "--new-network-secret")
    north_key = lines_after(made, "this node's public key")
    secret = lines_after(made, "a new network secret")
    south_key = lines_after(
        compose.ok("run", "--rm", "--no-deps", "south", "federation-key"), "this node's public key"
    )
    env_file.write_text(f"NETWORK_SECRET={secret}\nNORTH_KEY={north_key}\nSOUTH_KEY={south_key}\n")
    os.chmod(env_file, 0o600)
    compose.ok("up", "-d", "--no-build")

    def linked(peer: str) -> Any:
        def ready(health: dict[str, Any]) -> bool:
            fed = health.get("federation") or {}
            up = [b for b in fed.get("brokers", []) if b["state"] == "up"]
            heard = [p for p in fed.get("peers", []) if p["peer"] == peer and p["last_heard"]]
            return bool(up) and bool(heard)

        return ready

    north = Published(tmp_path / "north", ports["north"])
    south = Published(tmp_path / "south", ports["south"])
    await north.wait(linked("south"))
    await south.wait(linked("north"))
    alice, bob = await register(north, "alice"), await register(south, "bob")
    async with connect(north, alice) as a, connect(south, bob) as b:
        await a.join("garden")
        await b.join("garden")
        await a.say("garden", "hello from the north")
        said = await b.expect("message", room="garden", timeout=30)
        assert said["text"] == "hello from the north" and said["sender"] == "alice@north"
        await b.say("garden", "привет с юга")
        said = await a.expect("message", room="garden", sender="bob@south", timeout=30)
        assert said["text"] == "привет с юга"

    compose.ok("down", "--timeout", "20")  # the volumes stay
    compose.ok("up", "-d", "--no-build")
    await south.wait(linked("north"))
    async with connect(south, bob) as b:
        joined = await b.join("garden")
    assert [(m["sender"], m["text"]) for m in joined["history"]] == [
        ("alice@north", "hello from the north"),
        ("bob", "привет с юга"),
    ]
