"""The command-line client, run for real as a subprocess against a real node."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onionchat import cli, crypto, sealed
from onionchat.client import ClientError, Options
from onionchat.client.errors import ChatError
from onionchat.client.transport import probe

from conftest import NodeProcess, client_env, onionchat, pipe_client, register, run_client, user
from socks5 import Socks5Proxy


async def test_two_pipe_clients_talk(node: NodeProcess, password_file: Path) -> None:
    await register(node, "bob")
    async with pipe_client(node.url, "bob", password_file) as bob:
        await bob.next(type="joined")
        async with pipe_client(node.url, "Светлана", password_file, "--register") as olga:
            await olga.next(type="joined")
            await olga.send("привет, bob")
            await olga.send("<script>alert(1)</script>")
            code, _, err = await olga.finish()
            assert code == 0, err
        first = await bob.next(type="message", sender="Светлана")
        second = await bob.next(type="message", sender="Светлана")
        assert first["text"] == "привет, bob" and first["room"] == "lobby"
        assert second["text"] == "<script>alert(1)</script>"
        assert first["id"] < second["id"]
        await bob.send("/me waves back")
        await bob.send("hello Светлана")
        code, _, err = await bob.finish()
        assert code == 0, err
    messages = [line for line in bob.lines if line.get("type") == "message"]
    assert [m["text"] for m in messages[-2:]] == ["waves back", "hello Светлана"]
    assert messages[-2]["me"] is True

    # everything sent was acknowledged and is in the history
    async with user(node, "carol") as carol:
        joined = await carol.join("lobby")
        assert [m["text"] for m in joined["history"]] == [
            "привет, bob",
            "<script>alert(1)</script>",
            "waves back",
            "hello Светлана",
        ]


async def test_history_on_join_in_pipe_mode(node: NodeProcess, password_file: Path) -> None:
    async with user(node, "alice") as alice:
        await alice.join("dev")
        await alice.say("dev", "earlier news")
    await register(node, "bob")
    async with pipe_client(node.url, "bob", password_file, "--room", "dev") as bob:
        line = await bob.next(type="message")
        assert line["text"] == "earlier news" and line["sender"] == "alice"
        assert (await bob.finish())[0] == 0


async def test_key_protected_room_from_the_url_fragment(
    node: NodeProcess, password_file: Path
) -> None:
    key = crypto.encode_key(crypto.new_room_key())
    url = f"{node.url}/#room=plans&key={key}"
    async with pipe_client(url, "alice", password_file, "--register") as alice:
        await alice.next(type="joined")
        async with pipe_client(url, "bob", password_file, "--register") as bob:
            await bob.next(type="joined")
            await alice.send("the eagle lands at dawn")
            line = await bob.next(type="message")
            assert line["room"] == "plans" and line["text"] == "the eagle lands at dawn"
            assert line["decrypted"] is True
            assert (await bob.finish())[0] == 0
        assert (await alice.finish())[0] == 0
    # a client holding another key sees that it cannot read, never garbage
    wrong = crypto.encode_key(crypto.new_room_key())
    async with pipe_client(
        f"{node.url}/#room=plans&key={wrong}", "carol", password_file, "--register"
    ) as carol:
        line = await carol.next(type="message")
        assert line["text"] is None and "cannot decrypt" in line["error"]
        assert (await carol.finish())[0] == 0
    node.stop()
    with sqlite3.connect(node.data_dir / "onionchat.sqlite3") as db:
        (box,) = db.execute("SELECT box FROM messages").fetchone()
        assert db.execute("SELECT text FROM messages").fetchone() == (None,)
    body = sealed.open_body([crypto.decode_key(key)], box)  # signed, and bound to the room
    assert (body.text, body.room, body.sender, body.kind) == (
        "the eagle lands at dawn",
        "plans",
        "alice",
        "message",
    )
    assert b"eagle" not in (node.data_dir / "onionchat.sqlite3").read_bytes()


async def test_a_direct_message_in_pipe_mode(node: NodeProcess, password_file: Path) -> None:
    await register(node, "alice")
    async with user(node, "bob") as bob:
        await bob.join("lobby")
        result = run_client(
            node.url,
            "--user",
            "alice",
            "--password-file",
            str(password_file),
            "--pipe",
            stdin="/msg bob are you free?\n",
        )
        assert result.returncode == 0, result.stderr
        got = await bob.expect("message")
        assert got["text"] == "are you free?" and got["to"] == "bob"


def test_wrong_password_and_taken_name(
    node: NodeProcess, password_file: Path, tmp_path: Path
) -> None:
    args = ("--password-file", str(password_file), "--pipe")
    assert run_client(node.url, "--user", "alice", "--register", *args).returncode == 0
    taken = run_client(node.url, "--user", "ALICE", "--register", *args)
    assert taken.returncode == 1 and "taken" in taken.stderr
    wrong_file = tmp_path / "wrong"
    wrong_file.write_text("not it\n")
    wrong = run_client(node.url, "--user", "alice", "--password-file", str(wrong_file), "--pipe")
    assert wrong.returncode == 1 and "wrong username or password" in wrong.stderr
    assert "not it" not in wrong.stderr + wrong.stdout


def test_bad_options_exit_2(node: NodeProcess, password_file: Path) -> None:
    bad_key = run_client(
        f"{node.url}/#room=x&key=short",
        "--user",
        "a",
        "--password-file",
        str(password_file),
        "--pipe",
    )
    assert bad_key.returncode == 2 and "key" in bad_key.stderr


async def test_through_a_socks5_proxy_with_remote_names(
    node_factory: Any, password_file: Path
) -> None:
    """The node is reached by a name only the proxy knows: the client cannot have resolved it
    itself, and the proxy saw a name, never an address."""
    node = node_factory(env={"ONIONCHAT_SERVER_HOSTS": "chat.onionchat.test"})
    async with Socks5Proxy({"chat.onionchat.test": "127.0.0.1"}) as proxy:
        url = f"http://chat.onionchat.test:{node.port}"
        socks = ("--register", "--socks", f"127.0.0.1:{proxy.port}")
        async with pipe_client(url, "alice", password_file, *socks) as alice:
            await alice.send("over the proxy")
            code, _, err = await alice.finish(timeout=30)
        assert code == 0, err
        assert proxy.requests and {r.kind for r in proxy.requests} == {"domain"}
        assert {r.host for r in proxy.requests} == {"chat.onionchat.test"}
    async with user(node, "bob") as bob:
        joined = await bob.join("lobby")
        assert [m["text"] for m in joined["history"]] == ["over the proxy"]


async def test_a_missing_proxy_is_a_clear_error(node: NodeProcess, password_file: Path) -> None:
    async with Socks5Proxy({}) as proxy:
        port = proxy.port  # a port that was just free, and is closed again after this block
    result = await asyncio.to_thread(
        run_client,
        node.url,
        "--user",
        "alice",
        "--register",
        "--password-file",
        str(password_file),
        "--pipe",
        "--socks",
        f"127.0.0.1:{port}",
    )
    assert result.returncode == 1
    assert "proxy" in result.stderr.lower() and f"127.0.0.1:{port}" in result.stderr


def onion_address(seed: bytes) -> str:
    """A well-formed v3 onion address (key, checksum, version), though no service has it."""
    key = hashlib.sha256(seed).digest()
    checksum = hashlib.sha3_256(b".onion checksum" + key + b"\x03").digest()[:2]
    return base64.b32encode(key + checksum + b"\x03").decode().lower() + ".onion"


def options(*args: str) -> Options:
    return Options.from_args(cli._parser().parse_args(["connect", *args]))


def test_onion_addresses_go_through_tor_by_default() -> None:
    """No real tor is asked here (one may listen on 9050 on this machine): only the choice."""
    onion = onion_address(b"default")
    chosen = options(f"http://{onion}", "--user", "alice")
    assert chosen.socks == "127.0.0.1:9050" and chosen.proxy == "socks5h://127.0.0.1:9050"
    assert options(f"http://www.{onion}:8080", "--user", "a").socks == "127.0.0.1:9050"
    given = options(f"http://{onion}", "--user", "alice", "--socks", "127.0.0.1:9150")
    assert given.socks == "127.0.0.1:9150"
    # any other host is reached directly unless --socks says otherwise
    assert options("http://127.0.0.1:8080", "--user", "alice").socks is None
    assert options("http://chat.example", "--user", "a").proxy is None


def test_a_mistyped_onion_address_is_a_bad_option() -> None:
    onion = onion_address(b"typo")
    typo = ("b" if onion[0] != "b" else "c") + onion[1:]
    with pytest.raises(ClientError, match="its checksum does not match"):
        options(f"http://{typo}", "--user", "alice")
    with pytest.raises(ClientError, match="56 letters"):
        options("http://short.onion", "--user", "alice")


async def test_no_tor_for_an_onion_is_a_clear_error(password_file: Path) -> None:
    async with Socks5Proxy({}) as proxy:
        port = proxy.port  # a port that was just free, and is closed again after this block
    result = await asyncio.to_thread(
        run_client,
        f"http://{onion_address(b'no tor')}",
        "--user",
        "alice",
        "--password-file",
        str(password_file),
        "--pipe",
        "--socks",
        f"127.0.0.1:{port}",
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"onionchat: no SOCKS proxy at 127.0.0.1:{port} (connection refused): is tor running? "
        "Start it, or give its SocksPort with --socks HOST:PORT\n"
    )


async def test_an_onion_through_the_proxy(node_factory: Any, password_file: Path) -> None:
    """The whole session (the first probe, HTTP, the WebSocket) goes to the proxy by name."""
    onion = onion_address(b"reachable")
    node = node_factory(env={"ONIONCHAT_SERVER_HOSTS": onion})
    async with Socks5Proxy({onion: "127.0.0.1"}) as proxy:
        url = f"http://{onion}:{node.port}"
        socks = ("--register", "--socks", f"127.0.0.1:{proxy.port}")
        async with pipe_client(url, "alice", password_file, *socks) as alice:
            await alice.send("to the onion")
            code, _, err = await alice.finish(timeout=30)
        assert code == 0, err
        assert {(r.kind, r.host, r.port) for r in proxy.requests} == {("domain", onion, node.port)}
        assert len(proxy.requests) >= 3


# Tor's SocksPort with the ExtendedErrors flag answers these codes (proposal 304) when it cannot
# reach an onion. Here tests/socks5.py imitates them; tests/test_tor.py meets the real ones on a
# private Tor network.
TOR_REPLIES = {
    0xF0: "descriptor cannot be found",
    0xF1: "descriptor is invalid",
    0xF2: "introduction to the onion service failed",
    0xF3: "rendezvous with the onion service failed",
    0xF4: "private and needs client authorization: ask its operator for a key, add it to "
    "your tor's ClientOnionAuthDir",
    0xF5: "client authorization was refused",
    0xF6: "not a valid onion address",
    0xF7: "introduction to the onion service timed out",
    0x01: "general failure (tor tells more with the ExtendedErrors flag on its SocksPort)",
    0x04: "host unreachable (tor tells more with the ExtendedErrors flag on its SocksPort)",
    0x05: "connection refused",
    0x06: "timed out",
}


@pytest.mark.parametrize("code", TOR_REPLIES)
async def test_what_tor_says_of_an_onion_is_told_plainly(code: int) -> None:
    onion = onion_address(b"refused")
    async with Socks5Proxy({}, replies={onion: code}) as proxy:
        socks = f"127.0.0.1:{proxy.port}"
        with pytest.raises(ChatError) as refused:
            await probe(options(f"http://{onion}", "--user", "alice", "--socks", socks))
    message = str(refused.value)
    assert message.startswith(f"the SOCKS proxy at {socks} cannot reach {onion}: "), message
    assert TOR_REPLIES[code] in message
    assert [(r.kind, r.host, r.port) for r in proxy.requests] == [("domain", onion, 80)]


async def test_a_private_onion_stops_the_client_before_the_password(password_file: Path) -> None:
    """End to end: the proxy refuses the first stream (tor's 0xF4), the client exits 1 with the
    advice, and nothing else went to the proxy."""
    onion = onion_address(b"private")
    async with Socks5Proxy({}, replies={onion: 0xF4}) as proxy:
        result = await asyncio.to_thread(
            run_client,
            f"http://{onion}",
            "--user",
            "alice",
            "--password-file",
            str(password_file),
            "--pipe",
            "--socks",
            f"127.0.0.1:{proxy.port}",
            stdin="never sent\n",
        )
    assert result.returncode == 1 and not result.stdout
    assert result.stderr == (
        f"onionchat: the SOCKS proxy at 127.0.0.1:{proxy.port} cannot reach {onion}: the onion "
        "service is private and needs client authorization: ask its operator for a key, add it "
        "to your tor's ClientOnionAuthDir and reload tor\n"
    )
    assert [r.host for r in proxy.requests] == [onion]


def test_an_unreachable_node_is_a_clear_error(password_file: Path) -> None:
    result = run_client(
        "http://127.0.0.1:9",
        "--user",
        "alice",
        "--password-file",
        str(password_file),
        "--pipe",
        "--timeout",
        "5",
    )
    assert result.returncode == 1
    assert "127.0.0.1:9" in result.stderr


async def test_interactive_mode_in_a_terminal(node: NodeProcess, password_file: Path) -> None:
    """A person at a real terminal (tmux): history on join, typing, mentions in colour."""
    async with user(node, "alice") as alice:
        await alice.join("lobby")
        await alice.say("lobby", "welcome, whoever comes next")
        with terminal_client(node, "bob", password_file) as session:
            screen = await wait_for_screen(session, "welcome, whoever comes next")
            await alice.expect("presence", user="bob", state="join")
            subprocess.run(["tmux", "send-keys", "-t", session, "hi alice", "Enter"], check=True)
            got = await alice.expect("message", sender="bob")
            assert got["text"] == "hi alice"
            await alice.say("lobby", "@bob look here", ref="m")
            screen = await wait_for_screen(session, "look here", escapes=True)
            line = next(line for line in screen.splitlines() if "look here" in line)
            assert "\x1b[" in line, "a mention of bob is not highlighted"
            subprocess.run(["tmux", "send-keys", "-t", session, "/who", "Enter"], check=True)
            await wait_for_screen(session, "alice")
            subprocess.run(["tmux", "send-keys", "-t", session, "/quit", "Enter"], check=True)
            await alice.expect("presence", user="bob", state="leave")


@contextlib.contextmanager
def terminal_client(
    node: NodeProcess,
    name: str,
    password_file: Path,
    cwd: Path | None = None,
    args: tuple[str, ...] = (),
) -> Iterator[str]:
    """`onionchat connect --register` at a real terminal (tmux, 120×30, in `cwd`): yields the
    session."""
    assert shutil.which("tmux"), "tmux is missing: scripts/system-packages installs it"
    session = f"onionchat-{name}-{os.getpid()}"
    command = (
        f"{sys.executable} -m onionchat connect {node.url} --user {name} --register "
        f"--password-file {password_file} {' '.join(args)}"
    )
    subprocess.run(
        [
            "tmux",
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "120",
            "-y",
            "30",
            *(["-c", str(cwd)] if cwd else []),
            command,
        ],
        check=True,
        env=client_env(),
    )
    try:
        yield session
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def keys(session: str, line: str) -> None:
    """Type `line` at the terminal, then Enter."""
    subprocess.run(["tmux", "send-keys", "-t", session, "-l", line], check=True)
    subprocess.run(["tmux", "send-keys", "-t", session, "Enter"], check=True)


async def wait_for_screen(
    session: str, text: str, escapes: bool = False, timeout: float = 15
) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        args = ["tmux", "capture-pane", "-p", "-t", session] + (["-e"] if escapes else [])
        screen = subprocess.run(args, capture_output=True, text=True).stdout
        if text in screen:
            return screen
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared on the screen:\n{screen}")


async def test_on_the_nodes_machine_the_cli_chats_over_its_unix_socket(
    node_factory: Any, password_file: Path
) -> None:
    """A node listening only on its socket (what its tor reaches) is still the operator's to
    chat on and to ask after, from the same machine, with `unix:PATH`."""
    node: NodeProcess = node_factory("--listen", "unix")
    assert node.socket is not None and node.port == 0
    where = f"unix:{node.socket}"
    hint = next(e for e in node.events() if e.get("event") == "hint")
    assert f"connect {where} --user NAME" in hint["msg"]
    secret = ("--password-file", str(password_file))
    said = run_client(where, "--user", "alice", "--register", *secret, "--pipe", stdin="здесь\n")
    assert said.returncode == 0, said.stderr
    read = run_client(where + "#room=lobby", "--user", "bob", "--register", *secret, "--pipe")
    assert read.returncode == 0, read.stderr
    lines = [json.loads(line) for line in read.stdout.splitlines()]
    assert [(m["sender"], m["text"]) for m in lines if m["type"] == "message"] == [
        ("alice", "здесь")
    ]
    as_node = {"ONIONCHAT_SERVER_LISTEN": "unix", "ONIONCHAT_TOR_MODE": "off"}
    health = onionchat("health", "--data-dir", str(node.data_dir), env=as_node)
    assert health.returncode == 0 and health.stdout.startswith("healthy: status ok"), health
    node.stop()
    gone = run_client(where, "--user", "alice", *secret, "--pipe")
    assert gone.returncode == 1 and f"cannot reach the node at {where}" in gone.stderr
    down = onionchat("health", "--data-dir", str(node.data_dir), env=as_node)
    assert down.returncode == 1 and down.stdout.startswith("unhealthy: no answer"), down
    socks = run_client(where, "--user", "alice", "--socks", "127.0.0.1:9050")
    assert socks.returncode == 2 and "--socks does not apply" in socks.stderr


@pytest.mark.parametrize(
    ("password", "said"),
    [
        ("1", "too short: at least 8 characters"),
        ("пароль123", "too easy to guess"),
        ("zzzzzzzzzz", "too easy to guess"),
        ("weakling", "too easy to guess"),  # the name itself
    ],
)
def test_the_cli_refuses_the_weakest_passwords_for_a_new_account(
    node: NodeProcess, tmp_path: Path, password: str, said: str
) -> None:
    secret = tmp_path / "password"
    secret.write_text(password + "\n")
    result = run_client(
        node.url, "--user", "weakling", "--register", "--password-file", str(secret), "--pipe"
    )
    assert result.returncode == 1
    assert said in result.stderr and "cannot be recovered" in result.stderr


def bells(session: str, count: Path) -> None:
    """Each bell the session's window rings adds a line to `count` (tmux's alert-bell hook)."""
    hook = f"run-shell 'echo rang >> {count}'"
    subprocess.run(["tmux", "set-hook", "-t", session, "alert-bell", hook], check=True)


async def rang(session: str, count: Path, times: int) -> None:
    """Wait a little for the bells tmux counts (its hook runs a moment later), then check."""

    def heard() -> int:
        return len(count.read_text().splitlines()) if count.exists() else 0

    for _ in range(50):
        if heard() >= times:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)  # and a moment more, for a bell too many
    screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True)
    assert heard() == times, f"{heard()} bells, not {times}:\n{screen.stdout.decode()}"


async def test_with_bell_the_terminal_rings_for_a_mention_or_a_direct_message(
    node: NodeProcess, password_file: Path, tmp_path: Path
) -> None:
    """The terminal's own notification, at a real terminal (tmux counts the bells): a mention
    and a direct message ring, a plain message does not, history does not, and without
    --bell nothing does."""
    async with user(node, "alice") as alice:
        await alice.join("lobby")
        await alice.say("lobby", "earlier, @bob")  # history when bob joins: no bell
        with terminal_client(node, "bob", password_file, args=("--bell",)) as session:
            count = tmp_path / "bob.bells"
            bells(session, count)
            await alice.expect("presence", user="bob", state="join")
            await wait_for_screen(session, "earlier, @bob")
            await alice.say("lobby", "just talking")
            await wait_for_screen(session, "just talking")
            await rang(session, count, 0)
            await alice.say("lobby", "@bob dinner?")
            await wait_for_screen(session, "@bob dinner?")
            await rang(session, count, 1)
            await alice.send(type="send", to="bob", text="psst", ref="dm")
            await alice.expect("ack", ref="dm")
            await wait_for_screen(session, "psst")
            await rang(session, count, 2)
            keys(session, "@alice coming")  # one's own words ring nothing
            await alice.expect("message", sender="bob", text="@alice coming")
            await rang(session, count, 2)
            # inside bob's: tmux's server, left with no session, would be exiting meanwhile
            with terminal_client(node, "carol", password_file) as quiet:
                still = tmp_path / "carol.bells"
                bells(quiet, still)
                await alice.expect("presence", user="carol", state="join")
                await alice.say("lobby", "@carol hi")
                await wait_for_screen(quiet, "@carol hi")
                await alice.send(type="send", to="carol", text="psst", ref="dm2")
                await wait_for_screen(quiet, "psst")
                await rang(quiet, still, 0)
