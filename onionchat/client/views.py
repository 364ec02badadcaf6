"""How a session is shown: JSON lines for scripts (--pipe), a coloured terminal for people.

Text from the node never drives the terminal: control and bidi-override characters are
replaced before anything is printed.
"""

from __future__ import annotations

import json
import re
import sys
import time
import zlib
from typing import Any, TextIO

from prompt_toolkit import print_formatted_text
from prompt_toolkit.application import get_app_or_none
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.shortcuts import clear as clear_screen

from onionchat import names
from onionchat.client.session import Frame, Shown, State
from onionchat.protocol import (
    Delta,
    Error,
    Joined,
    Left,
    Mention,
    Notice,
    Presence,
    RoomList,
    TopicChanged,
    WhoList,
)

_MENTION = re.compile(r"(?<![\w@])@([\w.-]+)")
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_COLOURS = ("ansigreen", "ansiblue", "ansimagenta", "ansicyan", "ansibrightgreen", "ansibrightblue")

Fragments = list[tuple[str, str]]


class PipeView:
    """--pipe: one JSON object a line on stdout, flushed at once, ASCII only."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._err = err or sys.stderr

    def _emit(self, data: dict[str, Any]) -> None:
        self._out.write(json.dumps(data) + "\n")
        self._out.flush()

    def message(self, shown: Shown) -> None:
        m = shown.frame
        data: dict[str, Any] = {
            "type": "message",
            "id": m.id,
            "room": m.room,
            "ts": m.ts,
            "sender": m.sender,
            "text": shown.text,
            "me": m.me,
        }
        if m.to is not None:
            data["to"] = m.to
        if shown.sealed:
            data["decrypted"] = shown.error is None
        if shown.error is not None:
            data["error"] = shown.error
        self._emit(data)

    def frame(self, frame: Frame | None, data: dict[str, Any]) -> None:
        self._emit(data)

    def note(self, text: str) -> None:
        self._emit({"type": "notice", "text": text})

    def warn(self, text: str) -> None:
        print(f"onionchat: {text}", file=self._err, flush=True)

    def error(self, text: str) -> None:
        self._emit({"type": "error", "code": "client", "message": text})

    def clear(self) -> None:
        pass


class TerminalView:
    """The interactive face: lines printed above the prompt, in colour."""

    def __init__(self, state: State) -> None:
        self._state = state

    def message(self, shown: Shown) -> None:
        m = shown.frame
        if self._state.growing.pop(m.id, None) is not None:
            app = get_app_or_none()
            if app is not None:
                app.invalidate()
        head: Fragments = [("ansibrightblack", f"{_clock(m.ts)} ")]
        if m.to is None and m.room != self._state.current:
            head.append(("ansibrightblack", f"#{m.room} "))
        if shown.text is None:
            body_style, body = "ansired italic", f"[{shown.error or 'empty message'}]"
        else:
            body = _safe(shown.text)
            mine = names.key(m.sender) == names.key(self._state.user)
            body_style = "bold ansiyellow" if not mine and mentions(body, self._state.user) else ""
        sender = _safe(m.sender)
        if m.to is not None:
            head.append(("ansimagenta", f"[dm] {sender} → {_safe(m.to)}: "))
        elif m.me:
            head.append((self._colour(m.sender), f"* {sender} "))
        else:
            head.append((self._colour(m.sender), f"<{sender}> "))
        _print([*head, (body_style, body)])

    def _grow(self, frame: Delta) -> None:
        """Lines above the prompt cannot be rewritten: the answer grows in the toolbar under
        the prompt, and is printed once, whole, when it is complete."""
        self._state.growing[frame.id] = (frame.sender, frame.text or "")
        app = get_app_or_none()
        if app is not None:
            app.invalidate()

    def frame(self, frame: Frame | None, data: dict[str, Any]) -> None:
        match frame:
            case Delta():
                self._grow(frame)
            case Joined():
                info = frame.room
                here = ", ".join(frame.members)
                self._info(f"you joined #{info.name} · {len(frame.members)} here: {here}")
                if info.protected:
                    self._info(f"#{info.name} is key-protected: messages are end-to-end sealed")
                joined = self._state.rooms.get(info.name)
                if joined is not None and joined.topic:
                    self._info(f"topic: {joined.topic}")
                _redraw()
            case Left():
                self._info(f"you left #{frame.room}")
                _redraw()
            case Presence():
                verb = {"join": "joined", "leave": "left"}.get(frame.state, frame.state)
                self._info(f"{frame.user} {verb} #{frame.room}")
            case TopicChanged():
                topic = data.get("text") or f"[{data.get('error', 'no topic')}]"
                self._info(f"{frame.by} set the topic of #{frame.room}: {topic}")
            case RoomList():
                self._info("rooms:")
                for listed in frame.rooms:
                    kind = " · key-protected" if listed.protected else ""
                    about = f" · {listed.topic}" if listed.topic else ""
                    line = f"   #{listed.name} · {listed.online} online{kind}{about}"
                    _print([("ansibrightblack", _safe(line))])
            case WhoList():
                self._info(f"here in #{frame.room}: {', '.join(frame.members)}")
            case Notice():
                for line in frame.text.splitlines() or [""]:
                    _print([("ansicyan", _safe(line))])
            case Mention():
                now = time.strftime("%H:%M")
                said = _safe(f"{frame.sender} mentioned you in #{frame.room}: {frame.text}")
                _print([("ansibrightblack", f"{now} "), ("bold ansiyellow", said)])
            case Error():
                self.error(frame.message)
            case _:
                pass

    def note(self, text: str) -> None:
        self._info(text, "ansicyan")

    def warn(self, text: str) -> None:
        _print([("ansiyellow", f"! {_safe(text)}")])

    def error(self, text: str) -> None:
        _print([("ansired", f"! {_safe(text)}")])

    def clear(self) -> None:
        app = get_app_or_none()
        if app is not None and app.is_running:
            app.renderer.clear()
        else:
            clear_screen()

    def _info(self, text: str, style: str = "ansibrightblack") -> None:
        _print([(style, f"-- {_safe(text)}")])

    def _colour(self, name: str) -> str:
        """Bold for us; for others a colour of their own, the same on every run."""
        if names.key(name) == names.key(self._state.user):
            return "bold"
        return _COLOURS[zlib.crc32(names.key(name).encode()) % len(_COLOURS)]


def toolbar(state: State, width: int) -> FormattedText:
    """The answers bots are writing, each on one line that shows its newest words."""
    lines: Fragments = []
    for sender, text in state.growing.values():
        head = f"{_safe(sender)} is writing: "
        room = max(10, width - len(head) - 2)
        flat = _safe(" ".join(text.split())) or "…"
        shown = flat if len(flat) <= room else "…" + flat[-(room - 1) :]
        if lines:
            lines.append(("", "\n"))
        lines += [("bold", head), ("", shown)]
    return FormattedText(lines)


def mentions(text: str, user: str) -> bool:
    """Whether `text` names `user` as the node does (`@name`, case-insensitive)."""
    me = names.key(user)
    return any(names.key(m.group(1).rstrip(".-")) == me for m in _MENTION.finditer(text))


def _print(fragments: Fragments) -> None:
    print_formatted_text(FormattedText(fragments))


def _redraw() -> None:
    """The prompt shows the current room: ask prompt_toolkit to draw it again."""
    app = get_app_or_none()
    if app is not None and app.is_running:
        app.invalidate()


def _clock(ts: int) -> str:
    """HH:MM today, with the date on other days."""
    when = time.localtime(ts / 1000)
    now = time.localtime()
    if (when.tm_year, when.tm_yday) == (now.tm_year, now.tm_yday):
        return time.strftime("%H:%M", when)
    return time.strftime("%Y-%m-%d %H:%M", when)


def _safe(text: str) -> str:
    return _UNSAFE.sub("\ufffd", text)
