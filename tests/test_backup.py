"""`onionchat backup` and `onionchat restore` (issue 13): a running node's database and keys,
sealed with a passphrase, restored into a fresh data directory, make the same node: the same
onion address, the same federation identity, the same accounts, sessions and history. Real
`onionchat serve` processes and the real CLI."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from brokers import brokers
from federation import Network
from test_federation_nodes import linked_processes

from onionchat.federation.network import node_key
from onionchat.onion_keys import OnionKey

from conftest import FAST_AUTH, NodeProcess, connect, register


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onionchat", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_backup_of_a_running_node_restores_the_same_node(
    node_factory: Any, tmp_path: Path
) -> None:
    node = node_factory()
    onion = OnionKey.load_or_create(node.data_dir).address  # as the node's tor would make it
    identity = bytes(node_key(node.data_dir).verify_key)
    token = await register(node, "alice")
    async with connect(node, token) as alice:
        await alice.join("lobby")
        for n in range(20):
            await alice.say("lobby", f"a secret sentence {n}", ref=str(n))
    phrase = tmp_path / "phrase"
    phrase.write_text("correct horse battery staple\n")
    archive = tmp_path / "node.backup"
    made = cli(
        "backup", str(archive), "--data-dir", str(node.data_dir), "--passphrase-file", str(phrase)
    )
    assert made.returncode == 0, made.stderr
    assert "sealed with the passphrase" in made.stdout and "node_key" in made.stdout
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert b"secret sentence" not in archive.read_bytes()
    node.stop()

    wrong = tmp_path / "wrong"
    wrong.write_text("tr0ub4dor\n")
    fresh = tmp_path / "fresh"
    refused = cli(
        "restore", str(archive), "--data-dir", str(fresh), "--passphrase-file", str(wrong)
    )
    assert refused.returncode == 1
    assert "wrong passphrase, or the backup is damaged" in refused.stderr
    assert not fresh.exists() or not any(fresh.iterdir())
    restored = cli(
        "restore", str(archive), "--data-dir", str(fresh), "--passphrase-file", str(phrase)
    )
    assert restored.returncode == 0, restored.stderr
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in fresh.iterdir())
    assert OnionKey.load_or_create(fresh).address == onion
    assert bytes(node_key(fresh).verify_key) == identity
    again = cli("restore", str(archive), "--data-dir", str(fresh), "--passphrase-file", str(phrase))
    assert again.returncode == 1 and "is not empty" in again.stderr

    twin = node_factory(name="twin")
    twin.stop()
    twin.data_dir = fresh
    twin.start()
    async with connect(twin, token) as alice:  # the same session, from the backup
        joined = await alice.join("lobby")
    assert [m["text"] for m in joined["history"]] == [f"a secret sentence {n}" for n in range(20)]


def test_a_backup_without_a_passphrase_says_so_and_what_is_not_a_backup_is_refused(
    node_factory: Any, tmp_path: Path
) -> None:
    node = node_factory()
    archive = tmp_path / "plain.backup"
    made = cli("backup", str(archive), "--data-dir", str(node.data_dir))
    assert made.returncode == 0 and "NOT sealed: keep it safe" in made.stdout
    nothing = cli("backup", str(archive), "--data-dir", str(tmp_path / "nowhere"))
    assert nothing.returncode == 1 and "no onionchat.sqlite3 here" in nothing.stderr
    junk = tmp_path / "junk"
    junk.write_bytes(b"PK\x03\x04 a zip, say")
    refused = cli("restore", str(junk), "--data-dir", str(tmp_path / "d"))
    assert refused.returncode == 1 and "not an OnionChat backup" in refused.stderr


async def test_a_node_restored_from_a_backup_catches_up_from_its_peers(tmp_path: Path) -> None:
    """south is backed up, chats on, and loses its disk; restored from the backup, it gets
    back from north what was written since, its own users' messages too."""
    with brokers(tmp_path / "brokers", 1) as (broker,):
        net = Network(tmp_path, ["north", "south"], [broker.url])
        north, south = (
            NodeProcess(net.data_dir(n), {**FAST_AUTH, **net.env(n)}) for n in net.names
        )
        try:
            north.start()
            south.start()
            await linked_processes([north, south])
            ann, bob = await register(north, "ann"), await register(south, "bob")
            async with connect(north, ann) as on_north, connect(south, bob) as on_south:
                await on_north.join("lobby")
                await on_south.join("lobby")
                await on_north.say("lobby", "before the backup")
                await on_south.expect("message", text="before the backup")
                archive = tmp_path / "south.backup"
                made = cli("backup", str(archive), "--data-dir", str(south.data_dir))
                assert made.returncode == 0, made.stderr
                for n in range(3):
                    await on_north.say("lobby", f"after the backup {n}", ref=str(n))
                    await on_south.expect("message", text=f"after the backup {n}")
                await on_south.say("lobby", "bob, after the backup")
                await on_north.expect("message", text="bob, after the backup")
            south.stop(signal.SIGKILL)  # and its disk is lost

            fresh = tmp_path / "south-restored"
            restored = cli("restore", str(archive), "--data-dir", str(fresh))
            assert restored.returncode == 0, restored.stderr
            south = NodeProcess(fresh, {**FAST_AUTH, **net.env("south")})
            south.start()
            expected = [
                "before the backup",
                *(f"after the backup {n}" for n in range(3)),
                "bob, after the backup",
            ]

            async with connect(south, bob) as again:  # bob's session, from the backup
                seen = [m["text"] for m in (await again.join("lobby"))["history"]]
                while len(seen) < len(expected):  # what repair brings is shown as it comes
                    seen.append((await again.expect("message", timeout=30))["text"])
                assert sorted(seen) == sorted(expected)
                await again.send(type="leave", room="lobby")
                await again.expect("left")
                joined = await again.join("lobby")
            assert [m["text"] for m in joined["history"]] == expected
        finally:
            north.stop()
            south.stop()
