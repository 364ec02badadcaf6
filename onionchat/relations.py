"""What a page of open-room messages shows once its edits, reactions and replies are folded in:
each message with the text of its latest edit by its own writer, its reactions counted with
who, and the message a reply quotes. For the pages without JavaScript, which show what the
node holds; the browser and the CLI fold their own, from boxes they check themselves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from onionchat import names
from onionchat.protocol import REACTIONS, Message


@dataclasses.dataclass(frozen=True, slots=True)
class Quote:
    """The message a reply answers, as it reads now ("" text: not here any more)."""

    id: str
    sender: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    message: Message
    text: str | None
    edited: bool = False
    reactions: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (emoji, who), in REACTIONS order
    quote: Quote | None = None


def is_line(message: Message) -> bool:
    """A message of its own (a reply included), not an edit or a reaction of another."""
    return not (message.edit or message.react)


def fold(page: list[Message], related: Iterable[Message], quoted: Iterable[Message]) -> list[Line]:
    """The lines of `page`, with `quoted` (the messages its replies answer) and `related` (the
    edits and reactions of both, wherever they are in the room) folded in."""
    lines = [m for m in page if is_line(m)]
    quoted = list(quoted)
    own = {m.id: names.key(m.sender) for m in [*lines, *quoted]}
    edits: dict[str, Message] = {}
    reacted: dict[str, dict[str, dict[str, str]]] = {}
    for m in related:
        if m.edit and own.get(m.edit) == names.key(m.sender) and m.text is not None:
            if m.edit not in edits or m.id > edits[m.edit].id:
                edits[m.edit] = m
        elif m.react and m.text in REACTIONS:
            who = reacted.setdefault(m.react, {}).setdefault(m.text, {})
            who.setdefault(names.key(m.sender), m.sender)
    texts = {m.id: (edits[m.id].text if m.id in edits else m.text, m.sender) for m in quoted}
    texts.update((m.id, (edits[m.id].text if m.id in edits else m.text, m.sender)) for m in lines)
    folded = []
    for m in lines:
        by = reacted.get(m.id, {})
        quote = None
        if m.reply:
            text, sender = texts.get(m.reply, ("", ""))
            quote = Quote(m.reply, sender, text or "")
        folded.append(
            Line(
                message=m,
                text=edits[m.id].text if m.id in edits else m.text,
                edited=m.id in edits,
                reactions=tuple((e, tuple(by[e].values())) for e in REACTIONS if e in by),
                quote=quote,
            )
        )
    return folded
