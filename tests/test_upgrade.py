"""Upgrades (issue 13): this version's node opens databases made by real nodes of earlier
releases (tests/data/, made by tests/old_database.py), keeps every message, account and key,
and keeps a copy of what it upgraded. A database of a newer release is refused in one line."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from onionchat.store import MIGRATIONS

from conftest import FAST_AUTH, NodeProcess, onionchat, run_client
from old_database import LOBBY, PASSWORD, PLANS

DATA = Path(__file__).parent / "data"


def lines(url: str, user: str, password: Path, *args: str) -> list[dict[str, Any]]:
    """What a CLI client in a fresh home prints on joining (it keeps nothing on disk: every
    key it reads with comes from the account on the node)."""
    done = run_client(url, "--user", user, "--password-file", str(password), "--pipe", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def texts(shown: list[dict[str, Any]], room: str) -> list[str]:
    return [m["text"] for m in shown if m["type"] == "message" and m["room"] == room]


@pytest.mark.parametrize("schema", [4, 5, 6, len(MIGRATIONS)])
def test_a_database_of_an_earlier_release_keeps_every_message_account_and_key(
    tmp_path: Path, schema: int
) -> None:
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    database = data / "onionchat.sqlite3"
    shutil.copy(DATA / f"onionchat-schema-{schema}.sqlite3", database)
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    node = NodeProcess(data, FAST_AUTH)
    node.start()
    try:
        alice = lines(node.url, "alice", password)
        assert texts(alice, "lobby") == LOBBY
        # The key of the key-protected room, from alice's keyring on the node: no --key.
        assert texts(lines(node.url, "alice", password, "--room", "plans"), "plans") == PLANS
        # bob's invitation to it, sealed to his identity key, opens with his password.
        assert texts(lines(node.url, "bob", password, "--room", "plans"), "plans") == PLANS
        wrong = run_client(node.url, "--user", "bob", "--password-file", str(tmp_path / "no"))
        assert wrong.returncode != 0
    finally:
        node.stop()

    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 5
    upgraded = [e for e in node.events() if e.get("event") == "db_upgrade"]
    backups = data / "backups"
    if schema == len(MIGRATIONS):
        assert not upgraded and not backups.exists()
        return
    # What was upgraded is kept whole, as private as the database, and opens as it was.
    assert upgraded[0]["from"] == schema and upgraded[0]["to"] == len(MIGRATIONS)
    (copy,) = backups.iterdir()
    assert copy.name.startswith(f"onionchat-schema{schema}-") and copy.suffix == ".sqlite3"
    assert str(copy) in upgraded[0]["msg"]
    assert backups.stat().st_mode & 0o777 == 0o700 and copy.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == schema
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 5


def test_a_database_of_a_newer_release_is_refused_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "node"
    data.mkdir(mode=0o700)
    database = data / "onionchat.sqlite3"
    shutil.copy(DATA / f"onionchat-schema-{len(MIGRATIONS)}.sqlite3", database)
    with sqlite3.connect(database) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    before = database.read_bytes()
    refused = onionchat("serve", "--no-tor", "--port", "0", "--data-dir", str(data))
    assert refused.returncode == 1
    said = refused.stdout + refused.stderr
    assert "made by a newer OnionChat" in said and "Traceback" not in said
    assert database.read_bytes() == before
