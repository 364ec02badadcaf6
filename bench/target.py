"""What every server under test offers the benchmark.

A target has two halves. `Server` lives in the bench's main process: it starts the server as
a subprocess on 127.0.0.1, knows its PID and port, prepares accounts, and stops it. `ChatClient`
lives in the load-generator workers: one WebSocket connection that speaks the server's wire
and hands every chat message it receives to a `Sink` (the worker's recorder).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from bench.wsclient import WSClient

HOST = "127.0.0.1"


class TargetError(Exception):
    """A server that would not start, or a client that could not log in or join."""


class Sink(Protocol):
    """Where a client's chat messages and acknowledgements go while a step is measured."""

    def message(self, client: ChatClient, text: str, now: int) -> None: ...

    def ack(self, client: ChatClient, ref: str | None, id: str | None, now: int) -> None: ...


class ChatClient(WSClient):
    """One chat connection in a load-generator worker."""

    kind = ""
    has_acks = False

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        self.sink: Sink | None = None
        self.sender = -1
        self.frames = 0
        self.presence = 0
        self.errors = 0
        self.last_error = ""
        self.last_ns = 0
        # per-receiver bookkeeping of the recorder: bitmap of seen sequence numbers and the
        # highest one, per sender
        self.seen: list[bytearray] = []
        self.top: list[int] = []

    async def login(
        self, host: str, port: int, creds: dict[str, Any], rcvbuf: int | None = None
    ) -> None:
        """Open the connection and authenticate (not yet in a room); a small `rcvbuf` makes a
        client whose kernel buffer fills fast once it stops reading."""
        raise NotImplementedError

    async def join(self, room: str, protected: bool = False) -> None:
        """Enter a room (key-protected, where the server has them) and return once the
        server said so."""
        raise NotImplementedError

    def send_message(self, room: str, text: str, ref: str | None = None) -> None:
        """Send one chat message (never waits)."""
        raise NotImplementedError

    def send_box(self, room: str, box: str, ref: str | None = None) -> None:
        """Send one sealed message to a key-protected room (never waits)."""
        raise NotImplementedError

    def fill(self, room: str, requests: int) -> None:
        """Ask for `requests` large answers meant for this client alone (if the wire can)."""

    def on_text(self, payload: bytes, now: int) -> None:
        self.last_ns = now
        self.handle(payload, now)

    def handle(self, payload: bytes, now: int) -> None:
        raise NotImplementedError


class Server:
    """A server under test, run as a subprocess that the bench alone starts and stops."""

    name = ""
    wire = ""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path: Path | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """How the server was run, for the report."""
        return {}

    def prepare(self, users: int) -> list[dict[str, Any]]:
        """Credentials for `users` distinct users (whatever the wire needs to log in)."""
        return [{} for _ in range(users)]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`: only the process this object started."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _spawn(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log_path = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # a Ctrl-C of the bench does not reach it first
            )

    def _wait_for(self, find: Any, what: str, timeout: float = 60.0) -> Any:
        """Poll the log until `find(text)` returns something; fail if the process dies."""
        deadline = time.monotonic() + timeout
        assert self.proc is not None and self.log_path is not None
        while time.monotonic() < deadline:
            found = find(self.log_path.read_text(errors="replace"))
            if found is not None:
                return found
            if self.proc.poll() is not None:
                raise TargetError(
                    f"{self.name} exited ({self.proc.returncode}) before {what}:\n"
                    + self.log_tail()
                )
            time.sleep(0.05)
        self.stop()
        raise TargetError(
            f"{self.name} did not report {what} in {timeout:.0f} s:\n" + self.log_tail()
        )


def clean_env(drop_prefix: str = "") -> dict[str, str]:
    env = dict(os.environ)
    if drop_prefix:
        for name in list(env):
            if name.startswith(drop_prefix):
                del env[name]
    return env
