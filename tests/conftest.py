"""The test bed: real nodes (uvicorn in their own process) on free loopback ports, real
SQLite files, real WebSocket and HTTP clients."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stem.control
import websockets
from playwright.async_api import Browser, async_playwright
from websockets.asyncio.client import ClientConnection

from onionchat import crypto
from onionchat.tor import find_tor

pytest_plugins = ["containers"]  # the image's fixtures (tests/containers.py)
CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by scripts/system-packages
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"
TESTNET = Path(__file__).resolve().parent.parent / "scripts" / "testnet.py"

FAST_AUTH = {
    "ONIONCHAT_AUTH_ARGON2": "min",
    "ONIONCHAT_AUTH_PBKDF2_ITERATIONS": "1000",
    "ONIONCHAT_AUTH_HASH_RATE": "1000",  # cheap hashes: no need of the budget's pace
    "ONIONCHAT_AUTH_NEWCOMER_MINUTES": "0",  # tests write at once from new accounts
    # No tor unless a test asks for it (tests/test_tor.py): tor here joins only the private
    # test network, never the public one.
    "ONIONCHAT_TOR_MODE": "off",
}
PASSWORD = "correct horse battery staple"


class NodeProcess:
    """`onionchat serve` in a subprocess; its JSON log lines are kept for inspection."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = env
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.port = 0
        self.socket: Path | None = None  # the unix socket it listens on, when not TCP
        self.scheme = "http"  # "https" when started with --tls-cert
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *args: str, port: int | None = None) -> None:
        self.scheme = "https" if "--tls-cert" in args else "http"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONIONCHAT_")}
        env.update(self.env)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "onionchat",
                "serve",
                "--port",
                str(port or self.port or 0),
                "--data-dir",
                str(self.data_dir),
                "--log-format",
                "json",
                *args,
            ],
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            # The start line, in JSON or text (`... port=8080` or `... socket=PATH`).
            started = re.findall(
                r'(?<!\w)"?(port|socket)"?[:=] ?"?([^"\s,}]+)', self.log_path.read_text()
            )
            if started:
                key, value = started[-1]
                self.port = int(value) if key == "port" else 0
                self.socket = Path(value) if key == "socket" else None
            if (self.port or self.socket) and self._healthy():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited: {self.log_path.read_text()}")
            time.sleep(0.05)
        raise RuntimeError(f"node did not start: {self.log_path.read_text()}")

    def _healthy(self) -> bool:
        if self.socket is not None:
            # httpcore leaves a unix socket open when its connect fails: probe first.
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(self.socket))
                except OSError:
                    return False
        try:
            # Only whether it is up: the TLS tests check its certificate themselves.
            transport = httpx.HTTPTransport(uds=str(self.socket)) if self.socket else None
            with httpx.Client(transport=transport, verify=False) as http:
                return http.get(f"{self.url}/api/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def url(self) -> str:
        return "http://localhost" if self.socket else f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        ws = "wss" if self.scheme == "https" else "ws"
        return f"{ws}://{self.url.partition('://')[2]}/ws"

    def http(self, **options: Any) -> httpx.AsyncClient:
        """A client of the node's HTTP API, over its unix socket when it listens on one."""
        if self.socket is not None:
            options["transport"] = httpx.AsyncHTTPTransport(uds=str(self.socket))
        return httpx.AsyncClient(base_url=self.url, **options)

    def websocket(self, **options: Any) -> Any:
        """`websockets.connect` to /ws, over the unix socket when the node listens on one."""
        if self.socket is not None:
            return websockets.unix_connect(str(self.socket), self.ws_url, **options)
        return websockets.connect(self.ws_url, proxy=None, **options)

    def events(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start(port=self.port)


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Any]:
    nodes: list[NodeProcess] = []

    def make(*args: str, env: dict[str, str] | None = None, name: str = "node") -> NodeProcess:
        node = NodeProcess(tmp_path / name, {**FAST_AUTH, **(env or {})})
        node.start(*args)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def node(node_factory: Any) -> NodeProcess:
    started: NodeProcess = node_factory()
    return started


@contextlib.asynccontextmanager
async def chromium(*args: str) -> AsyncIterator[Browser]:
    """Debian's Chromium driven by Playwright (never `playwright install`)."""
    assert Path(CHROMIUM).exists(), "chromium is missing: scripts/system-packages installs it"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *args]
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def register(node: NodeProcess, name: str, password: str = PASSWORD) -> str:
    """Create an account the way every client does; returns a session token."""
    async with node.http() as http:
        params = (await http.post("/api/prelogin", json={"username": name})).json()
        salt = secrets.token_bytes(16)
        secret = crypto.login_secret(password, salt, params["iterations"])
        response = await http.post(
            "/api/register",
            json={
                "username": name,
                "salt": b64url(salt),
                "iterations": params["iterations"],
                "secret": b64url(secret),
            },
        )
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token


async def upload(http: httpx.AsyncClient, token: str, room: str, data: bytes) -> httpx.Response:
    """A file for a message of `room` to carry, uploaded as the page and the CLI do."""
    return await http.post(
        "/api/files",
        params={"room": room},
        content=data,
        headers={"authorization": f"Bearer {token}", "content-type": "application/octet-stream"},
    )


async def login(
    node: NodeProcess, name: str, password: str = PASSWORD, device: str | None = None
) -> httpx.Response:
    """A login as the clients make it; `device` is the token an earlier login answered."""
    async with node.http() as http:
        params = (await http.post("/api/prelogin", json={"username": name})).json()
        salt = base64.urlsafe_b64decode(params["salt"] + "==")
        secret = crypto.login_secret(password, salt, params["iterations"])
        body = {"username": name, "secret": b64url(secret)}
        if device is not None:
            body["device"] = device
        return await http.post("/api/login", json=body)


class Frames:
    """What a test does with any chat connection, over its own `send` and `recv`: wait for a
    frame, a ping/pong barrier instead of a wait, join, say."""

    seen: list[dict[str, Any]]
    _pings: int

    async def send(self, **frame: Any) -> None:
        raise NotImplementedError

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        raise NotImplementedError

    async def expect(self, kind: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """The next frame of this type whose fields match; other frames are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if frame["type"] == kind and all(frame.get(k) == v for k, v in fields.items()):
                return frame

    async def barrier(self) -> list[dict[str, Any]]:
        """Every frame the node queued for this client before now: its pong comes after them
        (frames of one connection are handled in order), so no waiting is needed."""
        self._pings += 1
        ref = f"barrier-{self._pings}"
        await self.send(type="ping", ref=ref)
        before = []
        while (frame := await self.recv()) != {"v": 1, "type": "pong", "ref": ref}:
            before.append(frame)
        return before

    async def nothing(self) -> None:
        """Assert that nothing came for this client (up to a barrier, not a wait)."""
        before = await self.barrier()
        assert not before, f"unexpected frames: {before}"

    async def join(self, room: str, **options: Any) -> dict[str, Any]:
        await self.send(type="join", room=room, create=True, **options)
        return await self.expect("joined")

    async def say(self, room: str, text: str, ref: str = "r") -> dict[str, Any]:
        await self.send(type="send", room=room, text=text, ref=ref)
        return await self.expect("ack", ref=ref)


class Client(Frames):
    """A raw WebSocket chat client: frames in, frames out, nothing hidden."""

    def __init__(self, ws: ClientConnection, user: str) -> None:
        self.ws = ws
        self.user = user
        self.seen: list[dict[str, Any]] = []
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._pings = 0

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps({"v": 1, **frame}))

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame; a WebSocket message may carry several, one per line."""
        if not self._pending:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            assert isinstance(raw, str)
            self._pending.extend(json.loads(line) for line in raw.split("\n"))
        frame: dict[str, Any] = self._pending.popleft()
        assert frame.get("v") == 1, frame
        self.seen.append(frame)
        return frame

    async def close(self) -> None:
        await self.ws.close()


@contextlib.asynccontextmanager
async def connect(node: NodeProcess, token: str, user: str = "") -> AsyncIterator[Client]:
    async with node.websocket(compression=None, max_queue=None) as ws:
        client = Client(ws, user)
        await client.send(type="auth", token=token)
        ready = await client.expect("ready")
        client.user = ready["user"]
        yield client


async def word_between(a: Client, b: Client, room: str, text: str) -> None:
    """Both join `room`, a says `text`, and b sees it, from a."""
    await a.join(room)
    await b.join(room)
    await a.say(room, text)
    said = await b.expect("message", room=room)
    assert said["text"] == text and said["sender"] == a.user


@contextlib.asynccontextmanager
async def user(node: NodeProcess, name: str) -> AsyncIterator[Client]:
    """A new account, connected."""
    token = await register(node, name)
    async with connect(node, token) as client:
        yield client


# -- the CLI client, as a subprocess ------------------------------------------------------


def client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONIONCHAT_")}
    # a proxy in the environment must never be picked up by accident
    env.update(
        ALL_PROXY="socks5://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        http_proxy="http://127.0.0.1:9",
    )
    return env


def onionchat(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    """`python -m onionchat ARGS` to its end, with no ONIONCHAT_* setting of ours leaking in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ONIONCHAT_")}
    return subprocess.run(
        [sys.executable, "-m", "onionchat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        cwd=cwd,
    )


def run_client(url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`onionchat connect URL ARGS` with proxies in the environment it must ignore."""
    return onionchat("connect", url, *args, env=client_env(), stdin=stdin)


class PipeClient:
    """`onionchat connect --pipe`: lines in, JSON lines out."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def next(self, timeout: float = 10, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            raw = await asyncio.wait_for(
                self.proc.stdout.readline(), max(0.01, deadline - time.monotonic())
            )
            if not raw:  # say why: what the client wrote on stderr, and how it ended
                assert self.proc.stderr is not None
                err = await asyncio.wait_for(self.proc.stderr.read(), 5)
                code = await asyncio.wait_for(self.proc.wait(), 5)
                raise AssertionError(f"the client closed its output (exit {code}): {err.decode()}")
            line: dict[str, Any] = json.loads(raw)
            self.lines.append(line)
            if all(line.get(k) == v for k, v in fields.items()):
                return line

    async def finish(self, timeout: float = 20) -> tuple[int, str, str]:
        """Close stdin (end of input) and collect the rest."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        out, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        for raw in out.decode().splitlines():
            self.lines.append(json.loads(raw))
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def pipe_client(
    url: str, name: str, password_file: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[PipeClient]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "onionchat",
        "connect",
        url,
        "--user",
        name,
        "--password-file",
        str(password_file),
        "--pipe",
        *args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**client_env(), **(env or {})},
    )
    client = PipeClient(proc)
    try:
        yield client
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- a private Tor network, and a client tor on it (one per session, for every test) -------------


class Tor:
    """A tor we start for a test (a client, or one a node attaches to), stopped by its PID."""

    def __init__(self, data_dir: Path, lines: str) -> None:
        data_dir.mkdir(parents=True, mode=0o700)
        self.data_dir = data_dir
        port_file = data_dir / "control-port"
        torrc = data_dir / "torrc"
        torrc.write_text(
            f"DataDirectory {data_dir}\n"
            "SocksPort 127.0.0.1:auto ExtendedErrors\n"
            "ControlPort 127.0.0.1:auto\n"
            f"ControlPortWriteToFile {port_file}\n"
            "CookieAuthentication 1\n"
            f"Log notice file {data_dir}/tor.log\n"
            f"__OwningControllerProcess {os.getpid()}\n" + lines
        )
        tor = find_tor()
        assert tor, "tor is missing: scripts/system-packages installs it"
        self.proc = subprocess.Popen(
            [tor, "-f", str(torrc), "--defaults-torrc", os.devnull],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert self.proc.poll() is None, (data_dir / "tor.log").read_text()
            assert time.monotonic() < deadline, "tor did not open its control port"
            time.sleep(0.05)
        self.control_port = int(port_file.read_text().strip().rpartition(":")[2])
        self.controller = stem.control.Controller.from_port(port=self.control_port)
        self.controller.authenticate()
        self.socks_port = int(self.controller.get_listeners(stem.control.Listener.SOCKS)[0][1])

    def wait_ready(self, timeout: float = 90) -> None:
        """Bootstrapped, and its consensus lists the relays (the notes: else a rendezvous
        can hang for minutes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            phase = self.controller.get_info("status/bootstrap-phase")
            if (
                "PROGRESS=100" in phase
                and self.controller.get_info("status/enough-dir-info") == "1"
            ):
                return
            time.sleep(0.2)
        raise AssertionError(f"client tor not ready: {phase}")

    @property
    def socks(self) -> str:
        return f"127.0.0.1:{self.socks_port}"

    def stop(self) -> None:
        self.controller.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="session")
def testnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The testnet's client torrc lines; the network is stopped after the session."""
    state = tmp_path_factory.mktemp("testnet")
    env = {**os.environ, "ONIONCHAT_TESTNET_DIR": str(state)}
    up = subprocess.run(
        [sys.executable, str(TESTNET), "up"], env=env, capture_output=True, text=True, timeout=180
    )
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield state / "client.torrc"
    finally:
        subprocess.run([sys.executable, str(TESTNET), "down"], env=env, timeout=60, check=False)


@pytest.fixture(scope="session")
def client_tor(testnet: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tor]:
    tor = Tor(tmp_path_factory.mktemp("client-tor") / "tor", testnet.read_text())
    try:
        tor.wait_ready()
        yield tor
    finally:
        tor.stop()
