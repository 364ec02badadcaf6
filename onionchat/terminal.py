"""What the node shows the person who started it: tor's bootstrap as a bar, then the onion's
URL with a QR code to scan into a phone's Tor Browser. Log lines say the same for machines."""

from __future__ import annotations

import io
import shutil
import sys
from typing import TextIO

import segno

from onionchat.onion_keys import Client
from onionchat.tor import Bootstrap, Reporter

BAR = 30


def bar(progress: int, summary: str, width: int = BAR) -> str:
    filled = max(0, min(width, progress * width // 100))
    return f"tor [{'█' * filled}{'·' * (width - filled)}] {progress:3d}% {summary}"


def qr(url: str) -> str:
    out = io.StringIO()
    segno.make(url, error="m").terminal(out=out, compact=True)
    return out.getvalue()


class Terminal(Reporter):
    """On a terminal the bar redraws in place; elsewhere (a file, a journal) the log lines
    the base class writes are enough, and the QR code still comes with the URL."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def progress(self, bootstrap: Bootstrap) -> None:
        if not self.tty:
            super().progress(bootstrap)
            return
        columns = shutil.get_terminal_size().columns
        line = bar(bootstrap.progress, bootstrap.summary)[: columns - 1]
        end = "\n" if bootstrap.progress >= 100 else ""
        self.stream.write(f"\r\x1b[K{line}{end}")
        self.stream.flush()

    def published(self, url: str, seconds: float) -> None:
        super().published(url, seconds)
        self.stream.write(f"\n{qr(url)}\n  {url}\n\n")
        self.stream.flush()

    def private(self, clients: list[Client], address: str) -> None:
        super().private(clients, address)
        if not self.tty:
            return  # keys are secrets: shown on a terminal, never written to a log file
        for client in clients:
            if client.private:
                self.stream.write(
                    f"  client {client.name}: key for Tor Browser  {client.private}\n"
                    f"    for a tor client's ClientOnionAuthDir ({client.name}.auth_private):\n"
                    f"    {client.auth_private_line(address)}\n"
                )
        self.stream.flush()
