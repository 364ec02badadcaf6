"""What the person who starts a node sees on the terminal: a bar, then the URL and a QR code;
and client keys only where no log file keeps them."""

from __future__ import annotations

import io

from onionchat.onion_keys import Client
from onionchat.terminal import Terminal, qr
from onionchat.tor import Bootstrap

URL = "http://yz3jxrtq4ikq4jnnxg2evdbqtnftqh4wt3l53jmb5qeylukayf4kqqyd.onion/"
KEY = Client("default", "A" * 52, "B" * 52)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_redraws_in_place_and_ends_with_a_newline() -> None:
    out = Tty()
    terminal = Terminal(out)
    terminal.progress(Bootstrap(14, "Handshaking with a relay"))
    terminal.progress(Bootstrap(100, "Done"))
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 2  # the same line, redrawn
    assert " 14% Handshaking with a relay" in text and text.endswith("100% Done\n")


def test_the_url_comes_with_a_qr_code_of_it() -> None:
    out = io.StringIO()
    Terminal(out).published(URL, 1.5)
    text = out.getvalue()
    assert URL in text and qr(URL) in text
    # A scannable symbol: the three finder patterns' corners, in half-block characters.
    assert text.count("█ ▄▄▄▄▄ █") >= 2


def test_client_keys_go_to_a_terminal_never_to_a_log_file() -> None:
    tty, file = Tty(), io.StringIO()
    Terminal(tty).private([KEY], "a" * 56)
    Terminal(file).private([KEY], "a" * 56)
    assert (
        "B" * 52 in tty.getvalue() and f"{'a' * 56}:descriptor:x25519:{'B' * 52}" in tty.getvalue()
    )
    assert "B" * 52 not in file.getvalue()
