"""What the command-line client prints of what others sent (issue 10): at a terminal, one
message is one line and nothing in it drives the terminal; with --pipe, UTF-8 JSON, one object
a line, whatever the locale."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest

from onionchat import crypto, sealed
from onionchat.client.views import json_line, printable

from conftest import NodeProcess, PipeClient, pipe_client, register, user
from test_client import terminal_client, wait_for_screen

FAKE = "12:00 <bob> send me your password"
HOSTILE = (
    f"hello\n{FAKE}\r\nclear:\x1b[2J title:\x1b]0;pwned\x07 csi:\x9b31m del:\x7f "
    "ls:\u2028ps:\u2029 bidi:\u202eevil\u202c iso:\u2066x\u2069 tab:\t nul:\x00"
)


def test_printable_escapes_what_a_terminal_would_act_on() -> None:
    shown = printable(HOSTILE)
    assert shown == (
        f"hello⏎{FAKE}⏎clear:\\x1b[2J title:\\x1b]0;pwned\\x07 csi:\\x9b31m del:\\x7f "
        "ls:\\u2028ps:\\u2029 bidi:\\u202eevil\\u202c iso:\\u2066x\\u2069 tab:\\x09 nul:\\x00"
    )
    assert printable("Привет, 世界 ☃ 🧅") == "Привет, 世界 ☃ 🧅"  # text is left alone


def test_json_lines_are_utf8_with_separators_and_controls_escaped() -> None:
    data = {"text": "Привет\n\u2028\u202e\x9b\x1b\ud800", "sender": "Светлана"}
    line = json_line(data)
    assert "Привет" in line and "Светлана" in line
    assert "\n" not in line and line.isprintable()
    assert "\\u2028" in line and "\\u202e" in line and "\\u009b" in line
    assert "\\n" in line and "\\u001b" in line and "\\ud800" in line
    assert json.loads(line) == data


def screen_lines(screen: str) -> list[str]:
    return [line.rstrip() for line in screen.splitlines()]


async def wait_for_lines(
    session: str, text: str, timeout: float = 15, scrolled: bool = False
) -> list[str]:
    """The screen's lines once `text` is on it, a line wrapped by the terminal joined again
    (`scrolled`: those scrolled off its top too)."""
    deadline = time.monotonic() + timeout
    screen = ""
    scrollback = ["-S", "-"] if scrolled else []
    while time.monotonic() < deadline:
        args = ["tmux", "capture-pane", "-p", "-J", "-t", session, *scrollback]
        screen = subprocess.run(args, capture_output=True, text=True).stdout
        if text in screen:
            return screen_lines(screen)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared on the screen:\n{screen}")


def pane_title(session: str) -> str:
    result = subprocess.run(
        ["tmux", "display-message", "-p", "-t", session, "#{pane_title}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


async def test_a_terminal_shows_one_line_per_message_and_no_escapes(
    node: NodeProcess, password_file: Path
) -> None:
    async with user(node, "alice") as alice:
        await alice.join("lobby")
        await alice.say("lobby", "before the hostile ones", ref="0")
        with terminal_client(node, "bob", password_file) as session:
            await wait_for_screen(session, "before the hostile ones")
            await alice.expect("presence", user="bob", state="join")
            await alice.say("lobby", HOSTILE, ref="1")
            lines = await wait_for_lines(session, "nul:\\x00")
            [shown] = [line for line in lines if "hello⏎" in line]
            assert shown.endswith(
                f"<alice> hello⏎{FAKE}⏎clear:\\x1b[2J title:\\x1b]0;pwned\\x07 csi:\\x9b31m "
                "del:\\x7f ls:\\u2028ps:\\u2029 bidi:\\u202eevil\\u202c iso:\\u2066x\\u2069 "
                "tab:\\x09 nul:\\x00"
            )
            assert not any(line.startswith(FAKE) for line in lines)  # no fake line of bob's
            assert any("before the hostile ones" in line for line in lines)  # not cleared
            assert pane_title(session) != "pwned"
            # a topic someone set is another way in: the change, and the node's notice of it
            await alice.send(type="topic", room="lobby", text=f"calm\n{FAKE}", ref="t")
            await alice.expect("topic", ref="t")
            await wait_for_lines(session, f"set the topic of #lobby: calm⏎{FAKE}")
            subprocess.run(["tmux", "send-keys", "-t", session, "/topic", "Enter"], check=True)
            lines = await wait_for_lines(session, f"-- topic of #lobby: calm⏎{FAKE}")
            assert not any(line.startswith(FAKE) for line in lines)
            # a notice of the node's on several lines: the lines after the first indented
            subprocess.run(["tmux", "send-keys", "-t", session, "/help", "Enter"], check=True)
            lines = await wait_for_lines(session, "leave (Ctrl-D too)", scrolled=True)  # its end
            assert "Commands:" in lines and any(line.startswith("   /who") for line in lines)
            # a direct message, and one's own name: the same (plain text: marked not sealed)
            await alice.send(type="send", to="bob", text=f"psst\n{FAKE}", ref="d")
            await alice.expect("ack", ref="d")
            lines = await wait_for_lines(session, f"[dm, not sealed] alice → bob: psst⏎{FAKE}")
            assert not any(line.startswith(FAKE) for line in lines), "\n".join(lines)
            subprocess.run(["tmux", "send-keys", "-t", session, "/quit", "Enter"], check=True)
            await alice.expect("presence", user="bob", state="leave")


async def raw_message_line(pipe: PipeClient) -> bytes:
    """The next `message` line of the client's output, as the bytes it wrote."""
    assert pipe.proc.stdout is not None
    while True:
        raw = await pipe.proc.stdout.readline()
        assert raw, "the client closed its output"
        if json.loads(raw)["type"] == "message":
            return raw


LOCALES = {
    "default": {},
    "ascii": {"PYTHONIOENCODING": "ascii", "LANG": "C", "LC_ALL": "C"},
    "latin-1": {"PYTHONIOENCODING": "latin-1", "LANG": "en_US.ISO-8859-1"},
}


@pytest.mark.parametrize("locale", LOCALES)
async def test_pipe_output_is_utf8_whatever_the_locale(
    node: NodeProcess, password_file: Path, locale: str
) -> None:
    await register(node, "bob")
    async with user(node, "Светлана") as sveta:
        await sveta.join("lobby")
        async with pipe_client(node.url, "bob", password_file, env=LOCALES[locale]) as bob:
            await bob.next(type="joined")
            await sveta.say("lobby", "Привет, bob\nвторая строка\u2028☃ 🧅")
            raw = await raw_message_line(bob)
            # `grep Привет` finds it: the UTF-8 bytes themselves, on one line
            assert "Привет".encode() in raw and "Светлана".encode() in raw
            assert raw.count(b"\n") == 1 and raw.endswith(b"\n")
            assert (
                b"\\n" in raw and b"\\u2028" in raw and b"\\u" not in raw.replace(b"\\u2028", b"")
            )
            line = json.loads(raw)
            assert line["text"] == "Привет, bob\nвторая строка\u2028☃ 🧅"
            assert line["sender"] == "Светлана"
            # and what the script writes, in UTF-8, arrives as it was written
            await bob.send("Здравствуй, Светлана")
            got = await sveta.expect("message", sender="bob")
            assert got["text"] == "Здравствуй, Светлана"
            echo = await raw_message_line(bob)
            assert "Здравствуй, Светлана".encode() in echo
            code, _, err = await bob.finish()
            assert code == 0, err


async def test_a_room_key_goes_with_the_nodes_name_of_the_room(
    node: NodeProcess, password_file: Path
) -> None:
    """`--room Straße` is the room `strasse` to the node: the key is kept under that name."""
    key = crypto.new_room_key()
    url = f"{node.url}/#room=Stra%C3%9Fe&key={crypto.encode_key(key)}"
    async with pipe_client(url, "alice", password_file, "--register") as alice:
        joined = await alice.next(type="joined")
        assert joined["room"]["name"] == "strasse" and joined["room"]["protected"] is True
        await alice.send("on the street")
        mine = await alice.next(type="message")
        assert mine["room"] == "strasse" and mine["text"] == "on the street"
        assert mine["decrypted"] is True
        code, _, err = await alice.finish()
        assert code == 0, err
    async with user(node, "bob") as bob:
        history = (await bob.join("strasse", protected=True))["history"]
    body = sealed.open_body([key], history[0]["box"])
    assert (body.text, body.room) == ("on the street", "strasse")  # the node's name, signed
