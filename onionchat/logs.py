"""Structured logs: one event per line, as text for people or as JSON lines for machines.

Events carry fields (`event`, `user`, `room`, `id`, `size`, ...) given as `extra=`. What
never goes in: message bodies, keys, passwords, tokens and client addresses. uvicorn's own
access and connection logs name client addresses, so they are kept below INFO here.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


# C0, DEL and C1 controls, line and paragraph separators, bidi embeddings, overrides, isolates
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean(text: str) -> str:
    """Text with every character that could forge or reorder a log line escaped."""
    return _UNSAFE.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
        ),
        text,
    )


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {
        k: clean(v) if isinstance(v, str) else v
        for k, v in vars(record).items()
        if k not in _STANDARD and v is not None
    }


def _time(record: logging.LogRecord) -> str:
    return datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
        timespec="milliseconds"
    )


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": clean(record.getMessage()),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items() if k != "event")
        line = f"{_time(record)} {record.levelname:<7} {clean(record.getMessage())}"
        if fields:
            line = f"{line}  {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


CLIENT_FAULTS = ("Invalid UTF-8", "Invalid HTTP request")
QUIET_FOR = 10.0  # seconds between two lines about clients' faults of one kind


class _QuietClientErrors(logging.Filter):
    """uvicorn logs a client's invalid UTF-8 as an error with a traceback, and each malformed
    request as a warning: the client's fault, answered with 1007 or 400. A warning without
    the traceback says enough, once per QUIET_FOR seconds and kind, so that no client can
    fill the log; the next line says how many were left out."""

    def __init__(self) -> None:
        super().__init__()
        self._next: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        kind = next((k for k in CLIENT_FAULTS if message.startswith(k)), None)
        if kind is None:
            return True
        if record.created < self._next.get(kind, 0.0):
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return False
        self._next[kind] = record.created + QUIET_FOR
        record.exc_info = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.event = "client_fault"
        record.left_out = self._left_out.pop(kind, 0) or None
        return True


def setup(level: str, format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.access").disabled = True
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.setLevel(max(logging.WARNING, root.level))
    uvicorn_error.addFilter(_QuietClientErrors())
    for name in ("aiosqlite", "asyncio", "websockets", "httpx", "httpcore", "stem"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
