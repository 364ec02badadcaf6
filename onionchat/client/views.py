"""How a session is shown: JSON lines for scripts (--pipe), a coloured terminal for people.

Text from the node never drives the terminal: control characters (C0, DEL, C1), the line and
paragraph separators and the bidi overrides and isolates are shown as visible escapes (a
newline as ⏎) before anything is printed, so one message is one line and no escape sequence
reaches the terminal. The JSON lines of --pipe are UTF-8 (so `grep Привет` finds them), with
the same characters escaped by JSON.
"""

from __future__ import annotations

import io
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
    Deleted,
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
_UNSAFE = re.compile("\r\n|[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# In JSON lines: JSON escapes C0 itself; these, and lone surrogates, are escaped here.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_COLOURS = ("ansigreen", "ansiblue", "ansimagenta", "ansicyan", "ansibrightgreen", "ansibrightblue")

Fragments = list[tuple[str, str]]


class PipeView:
    """--pipe: one JSON object a line on stdout, in UTF-8 whatever the locale, flushed at once."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        if out is None:
            _reconfigure(sys.stdout, encoding="utf-8")
        if err is None:  # warnings for people: their locale, but never a failure to encode
            _reconfigure(sys.stderr)
        self._out = out or sys.stdout
        self._err = err or sys.stderr

    def _emit(self, data: dict[str, Any]) -> None:
        self._out.write(json_line(data) + "\n")
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
        for kind in ("reply", "edit", "react"):
            if getattr(m, kind) is not None:
                data[kind] = getattr(m, kind)
        if shown.file is not None:  # without its key: what it is, not what opens it
            data["file"] = {k: v for k, v in shown.file.items() if k != "key"}
        if m.to is not None or shown.unsealed:
            data["sealed"] = shown.sealed  # false: plain text, readable by the node
        if shown.sealed:
            data["decrypted"] = shown.error is None
        if shown.error is not None:
            data["error"] = shown.error
        if shown.rejected is not None:
            data["rejected"] = shown.rejected
        self._emit(data)

    def frame(self, frame: Frame | None, data: dict[str, Any]) -> None:
        self._emit(data)

    def note(self, text: str) -> None:
        self._emit({"type": "notice", "text": text})

    def warn(self, text: str) -> None:
        print(f"onionchat: {printable(text)}", file=self._err, flush=True)

    def error(self, text: str) -> None:
        self._emit({"type": "error", "code": "client", "message": text})

    def tell(self, kind: str, text: str, fields: dict[str, Any], warn: bool = False) -> None:
        self._emit({"type": kind, "text": text, **fields})

    def clear(self) -> None:
        pass


def json_line(data: dict[str, Any]) -> str:
    """One JSON object on one line, non-ASCII text as it is (UTF-8 once written)."""
    text = json.dumps(data, ensure_ascii=False)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _reconfigure(stream: TextIO, encoding: str | None = None) -> None:
    """Write `encoding` (else the locale's); what it cannot hold comes out as an escape."""
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(encoding=encoding, errors="backslashreplace")


class TerminalView:
    """The interactive face: lines printed above the prompt, in colour; with `bell`, the
    terminal's bell for what is meant for the user (a terminal's notification: tmux, screen
    and most terminals mark the window or tab that rang)."""

    def __init__(self, state: State, bell: bool = False) -> None:
        self._state = state
        self._bell = bell

    def message(self, shown: Shown) -> None:
        m = shown.frame
        if self._state.growing.pop(m.id, None) is not None:
            app = get_app_or_none()
            if app is not None:
                app.invalidate()
        number = f"[{shown.number}] " if shown.number else ""
        head: Fragments = [("ansibrightblack", f"{_clock(m.ts)} {number}")]
        if m.to is None and m.room != self._state.current:
            head.append(("ansibrightblack", f"#{printable(m.room)} "))
        if (m.edit or m.react) and shown.rejected is None:
            _print([*head, *self._related(shown)])
            return
        if shown.rejected is not None:
            # Never as a message: on a red ground, so it cannot pass for one.
            body_style, body = (
                "bold ansiwhite bg:ansired",
                printable(f"[rejected: {shown.rejected}]"),
            )
        elif shown.text is None:
            body_style, body = "ansired italic", printable(f"[{shown.error or 'empty message'}]")
        else:
            body = printable(shown.text)
            mine = m.sender == self._state.user  # the node spells us as in `ready`
            mentioned = not mine and mentions(body, self._state.user)
            body_style = "bold ansiyellow" if mentioned else ""
            if shown.live and (mentioned or (m.to is not None and not mine)):
                self._ring()
        sender = printable(m.sender)
        if m.to is not None and shown.unsealed:
            head.append(("bold ansiyellow", "[dm, not sealed] "))
            head.append(("ansimagenta", f"{sender} → {printable(m.to)}: "))
        elif m.to is not None:
            head.append(("ansimagenta", f"[dm] {sender} → {printable(m.to)}: "))
        elif m.me:
            head.append((self._colour(m.sender), f"* {sender} "))
        else:
            head.append((self._colour(m.sender), f"<{sender}> "))
        if m.reply is not None:
            head.append(("ansibrightblack", f"↪{_ref(shown)} "))
        tail: Fragments = []
        if shown.file is not None and shown.rejected is None:
            name = printable(str(shown.file.get("name", "file")))
            size = int(shown.file.get("size", 0))
            tail = [("ansicyan", f" 📎 {name} ({_size(size)}) · /save {shown.number}")]
            if shown.text == shown.file.get("name"):
                body = ""  # the file says its name
        _print([*head, (body_style, body), *tail])

    def _related(self, shown: Shown) -> Fragments:
        """An edit or a reaction, on a line of its own (lines above cannot be rewritten)."""
        m = shown.frame
        sender = printable(m.sender)
        if shown.text is None:
            return [("ansired italic", printable(f"[{shown.error or 'empty'}]"))]
        if m.edit is not None:
            return [
                (self._colour(m.sender), f"* {sender} "),
                ("ansibrightblack", f"edited {_ref(shown)}: "),
                ("", printable(shown.text)),
            ]
        return [
            (self._colour(m.sender), f"* {sender} "),
            ("ansibrightblack", f"reacted {printable(shown.text)} to {_ref(shown)}"),
        ]

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
            case Left() if frame.reason:
                self._info(frame.reason)
                _redraw()
            case Left():
                self._info(f"you left #{frame.room}")
                _redraw()
            case Deleted():
                self._info(self._deleted(frame))
            case Presence():
                verb = {"join": "joined", "leave": "left"}.get(frame.state, frame.state)
                self._info(f"{frame.user} {verb} #{frame.room}")
            case TopicChanged() if data.get("rejected"):
                text = (
                    f"-- a topic for #{frame.room} from {frame.by} [rejected: {data['rejected']}]"
                )
                _print([("bold ansiwhite bg:ansired", printable(text))])
            case TopicChanged() if data.get("cleared"):
                self._info(f"{frame.by} cleared the topic of #{frame.room}")
            case TopicChanged():
                topic = data.get("text") or f"[{data.get('error', 'no topic')}]"
                self._info(f"{frame.by} set the topic of #{frame.room}: {topic}")
            case RoomList():
                self._info("rooms:")
                for listed in frame.rooms:
                    kind = " · key-protected" if listed.protected else ""
                    about = f" · {listed.topic}" if listed.topic else ""
                    line = f"   #{listed.name} · {listed.online} online{kind}{about}"
                    _print([("ansibrightblack", printable(line))])
            case WhoList():
                self._info(f"here in #{frame.room}: {', '.join(frame.members)}")
            case Notice():
                # The node's text may hold lines (and a topic someone set): the first as it
                # is, the others indented, so none can pass for a message.
                first, *more = frame.text.split("\n")
                _print([("ansicyan", printable(first))])
                for line in more:
                    _print([("ansicyan", "   " + printable(line))])
            case Mention():
                now = time.strftime("%H:%M")
                said = printable(f"{frame.sender} mentioned you in #{frame.room}: {frame.text}")
                _print([("ansibrightblack", f"{now} "), ("bold ansiyellow", said)])
                self._ring()
            case Error():
                self.error(frame.message)
            case _:
                pass

    def _deleted(self, frame: Deleted) -> str:
        """Which lines went (by number), or that a reaction was taken back; edits go with
        their message and are not told apart."""
        numbers = self._state.numbers
        lines = [f"[{n.number}]" for n in map(numbers.of, frame.ids) if n is not None]
        kinds = [numbers.related(i) for i in frame.ids]
        other = sum(
            1 for i, k in zip(frame.ids, kinds, strict=True) if k is None and numbers.of(i) is None
        )
        where = "" if frame.room.startswith("@") else f" in #{frame.room}"
        if not lines and not other and "react" in kinds:
            return f"{frame.by} took back a reaction{where}"
        if other:
            lines.append("a message" if other == 1 else f"{other} messages")
        return f"{frame.by} deleted {' and '.join(lines)}{where} (still above, if shown)"

    def note(self, text: str) -> None:
        self._info(text, "ansicyan")

    def warn(self, text: str) -> None:
        _print([("ansiyellow", f"! {printable(text)}")])

    def error(self, text: str) -> None:
        _print([("ansired", f"! {printable(text)}")])

    def tell(self, kind: str, text: str, fields: dict[str, Any], warn: bool = False) -> None:
        if warn:
            self.warn(text)
        else:
            self.note(text)

    def clear(self) -> None:
        app = get_app_or_none()
        if app is not None and app.is_running:
            app.renderer.clear()
        else:
            clear_screen()

    def _ring(self) -> None:
        if not self._bell:
            return
        app = get_app_or_none()
        if app is not None:
            app.output.bell()

    def _info(self, text: str, style: str = "ansibrightblack") -> None:
        _print([(style, f"-- {printable(text)}")])

    def _colour(self, name: str) -> str:
        """Bold for us; for others a colour of their own, the same on every run."""
        if name == self._state.user:
            return "bold"
        return _COLOURS[zlib.crc32(name.encode("utf-8", "replace")) % len(_COLOURS)]


def _size(n: int) -> str:
    return f"{n / 1048576:.1f} MiB" if n >= 1048576 else f"{max(1, round(n / 1024))} KiB"


def _ref(shown: Shown) -> str:
    """What a reply, an edit or a reaction is about: its number, or that it is older."""
    return f"[{shown.about.number}]" if shown.about is not None else "[an earlier message]"


def toolbar(state: State, width: int) -> FormattedText:
    """The answers bots are writing, each on one line that shows its newest words."""
    lines: Fragments = []
    for sender, text in state.growing.values():
        head = f"{printable(sender)} is writing: "
        room = max(10, width - len(head) - 2)
        flat = printable(" ".join(text.split())) or "…"
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


def printable(text: str) -> str:
    """`text` on one line, with nothing in it that a terminal would act on: control, separator
    and bidi characters become visible escapes (`\\x1b`, `\\u202e`), a newline `⏎`."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in ("\n", "\r\n"):
        return "⏎"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
