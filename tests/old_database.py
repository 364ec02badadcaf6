"""The databases that tests/test_upgrade.py upgrades: each made by a real node of an earlier
release, written to by its real command-line clients, and committed in tests/data/.

    .venv/bin/python tests/old_database.py CHECKOUT tests/data/onionchat-schema-N.sqlite3

runs `onionchat serve` and `onionchat connect` from CHECKOUT (a `git worktree` of the
release), then keeps the stopped node's database as one file.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PASSWORD = "an old release's password"
ROOM_KEY = "BiqAk_m0I8cE4jifRZ9gHhHVN_nkuASUQEH9By2yE-w"  # base64url, 32 bytes: room "plans"
FAST_AUTH = {
    "ONIONCHAT_AUTH_ARGON2": "min",
    "ONIONCHAT_AUTH_PBKDF2_ITERATIONS": "1000",
    "ONIONCHAT_AUTH_HASH_RATE": "1000",
}
# (user, options, lines): each a CLI client in --pipe mode, in this order.
SESSIONS: list[tuple[str, list[str], list[str]]] = [
    # alice made #lobby and owns it: since roles (schema 6), only she may set its topic
    (
        "alice",
        ["--register"],
        ["hello from the old release", "привет из старой версии", "/topic the old lobby"],
    ),
    ("bob", ["--register"], ["hi alice"]),
    ("alice", ["--room", "plans", f"--key={ROOM_KEY}"], ["a sealed plan", "/invite bob"]),
    ("alice", [], ["/msg bob a direct word"]),
]
ONIONCHAT = [sys.executable, "-m", "onionchat"]
JSON = ["--log-format", "json"]
LOBBY = ["hello from the old release", "привет из старой версии", "hi alice"]
PLANS = ["a sealed plan"]


def make(checkout: Path, out: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONIONCHAT_")}
    env.update(FAST_AUTH, PYTHONPATH=str(checkout.resolve()))
    with tempfile.TemporaryDirectory() as tmp:
        data, log = Path(tmp) / "data", Path(tmp) / "node.log"
        password = Path(tmp) / "password"
        password.write_text(PASSWORD + "\n")
        with log.open("wb") as out_log:
            node = subprocess.Popen(
                [*ONIONCHAT, "serve", "--no-tor", "--port", "0", "--data-dir", str(data), *JSON],
                stdout=out_log,
                stderr=out_log,
                env=env,
                cwd=tmp,
            )
        try:
            url = _url(log)
            secret = ["--password-file", str(password)]
            for user, options, lines in SESSIONS:
                subprocess.run(
                    [*ONIONCHAT, "connect", url, "--user", user, "--pipe", *options, *secret],
                    input="\n".join(lines) + "\n",
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=tmp,
                    check=True,
                    timeout=60,
                )
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(30)
        db = sqlite3.connect(data / "onionchat.sqlite3")
        try:
            out.unlink(missing_ok=True)
            db.execute("VACUUM INTO ?", (str(out),))
        finally:
            db.close()


def _url(log: Path) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event.get("event") == "start":
                return f"http://127.0.0.1:{event['port']}"
        time.sleep(0.1)
    raise SystemExit(f"the node did not start: {log.read_text()}")


if __name__ == "__main__":
    make(Path(sys.argv[1]), Path(sys.argv[2]))
