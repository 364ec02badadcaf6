"""Mentions: a user named with @ in an open room they are not in hears of it.

A listener of the node's: it runs after each new message's fan-out, whichever way the message
came in. Key-protected rooms have no text for the node to read, so nothing to tell.
"""

from __future__ import annotations

import re

from onionchat import names
from onionchat.node import Arrival, Node
from onionchat.protocol import Mention, encode

_MENTION = re.compile(r"(?<![\w@])@([\w.-]+)")


def install(node: Node) -> None:
    node.listeners.append(lambda arrival: _tell(node, arrival))


def _tell(node: Node, arrival: Arrival) -> None:
    message = arrival.message
    if message.text is None or message.to is not None or message.edit or message.react:
        return
    room = arrival.room.name
    seen: set[str] = set()
    for match in _MENTION.finditer(message.text):
        key = names.key(match.group(1).rstrip(".-"))
        if key in seen or key == names.key(message.sender):
            continue
        seen.add(key)
        frame: str | None = None
        for conn in node.hub.user_connections(key):
            if room not in conn.rooms:
                frame = frame or encode(
                    Mention(room=room, id=message.id, sender=message.sender, text=message.text)
                )
                conn.send(frame)
