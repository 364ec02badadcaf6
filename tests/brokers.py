"""Real mosquitto brokers for the tests: each on a free loopback port, with a config file of its
own, started and ended by the PID recorded when it started (never another process)."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"  # scripts/system-packages
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
MICROSOCKS = shutil.which("microsocks") or "/usr/bin/microsocks"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Mosquitto:
    """One broker. `lines` are extra mosquitto.conf lines for its listener (TLS, passwords,
    ACLs, queue limits)."""

    def __init__(self, directory: Path, lines: list[str] | None = None) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.lines = lines or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    "per_listener_settings true",
                    # started as root, mosquitto would drop to its own user, who cannot read
                    # the test's files: it stays the test's user
                    f"user {getpass.getuser()}",
                    f"listener {self.port} 127.0.0.1",
                    *(self.lines or ["allow_anonymous true"]),
                    # mosquitto 2.0.11 (Debian 12) hands queued QoS 1 messages out at ~60 a
                    # second once a client's in-flight quota is full: docs/federation.md
                    "max_inflight_messages 0",
                    "set_tcp_nodelay true",  # small packets each way: no Nagle (40 ms each)
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    "",
                ]
            )
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        _listening(self.proc, self.port, self.log_path, "mosquitto")

    def kill(self) -> None:
        """SIGKILL: whatever it held in memory is gone."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)
        self.proc = None


class Socks5:
    """Debian's microsocks, a real SOCKS5 proxy on a loopback port; its log holds a line for
    each connection it made (`client[N] 127.0.0.1: connected to HOST:PORT`)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = directory / "microsocks.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"socks5://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [MICROSOCKS, "-i", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        _listening(self.proc, self.port, self.log_path, "microsocks")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def connections(self) -> list[str]:
        return [line for line in self.log_path.read_text().splitlines() if "connected to" in line]


def _listening(proc: subprocess.Popen[bytes], port: int, log: Path, what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-2000:]}")
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), 0.2),
        ):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen within 10 s")


@contextlib.contextmanager
def brokers(root: Path, count: int, lines: list[str] | None = None) -> Iterator[list[Mosquitto]]:
    started = [Mosquitto(root / f"broker{n}", lines) for n in range(count)]
    try:
        for broker in started:
            broker.start()
        yield started
    finally:
        for broker in started:
            broker.stop()


def password_file(path: Path, users: dict[str, str]) -> Path:
    path.write_text("")
    for user, password in users.items():
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(path), user, password], check=True)
    return path
