"""Slash commands: one table, each with a usage line and one line of help.

Clients send the line as typed (`{"type": "command", "line": "/topic hi", "room": "lobby"}`)
with the room they are looking at, so every client gets the same commands and the same help.
In a key-protected room a client must seal `/me` and `/topic` text itself: the node refuses
to see it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from onionchat.bots import Bots
from onionchat.protocol import Clear, Code, Command, ProtocolError, Send, encode

if TYPE_CHECKING:
    from onionchat.hub import Connection
    from onionchat.node import Node

Handler = Callable[["Node", "Connection", str, "str | None", "str | None"], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class Spec:
    usage: str
    help: str
    run: Handler


def _room(room: str | None, name: str) -> str:
    if room is None:
        raise ProtocolError(Code.BAD_COMMAND, f"/{name} needs a room: join one first")
    return room


async def _help(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    width = max(len(spec.usage) for spec in COMMANDS.values())
    lines = [f"{spec.usage.ljust(width)}  {spec.help}" for spec in COMMANDS.values()]
    node.notice(conn, "Commands:\n" + "\n".join(lines), room, ref)


async def _clear(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    conn.send(encode(Clear(room=room, ref=ref)))


async def _me(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    if not args:
        raise ProtocolError(Code.BAD_COMMAND, "usage: /me ACTION")
    frame = Send(v=1, room=_room(room, "me"), text=args, me=True, ref=ref)
    await node.send(conn, frame)


async def _who(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    node.who(conn, args or _room(room, "who"), ref)


async def _join(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    if not args or " " in args:
        raise ProtocolError(Code.BAD_COMMAND, "usage: /join ROOM")
    try:  # an existing room is joined whatever its mode; only a missing one is created open
        await node.join(conn, args, ref=ref)
    except ProtocolError as exc:
        if exc.code != Code.UNKNOWN_ROOM:
            raise
        await node.join(conn, args, create=True, ref=ref)


async def _leave(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    await node.leave(conn, args or _room(room, "leave"), ref)


async def _rooms(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    await node.list_rooms(conn, ref)


async def _msg(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    to, _, text = args.partition(" ")
    if not to or not text.strip():
        raise ProtocolError(Code.BAD_COMMAND, "usage: /msg USER MESSAGE")
    await node.direct(conn, to.removeprefix("@"), text.strip(), None, False, ref)


async def _topic(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    name = _room(room, "topic")
    if not args:
        current = await node.room(name)
        if current.protected:
            text = "the topic is sealed: your client shows it"
        else:
            text = f"topic of #{current.name}: {current.topic or '(none)'}"
        node.notice(conn, text, current.name, ref)
        return
    await node.set_topic(conn, name, args, None, ref)


async def _bots(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    if not isinstance(node.bots, Bots) or not node.bots.bots:
        node.notice(conn, "this node has no bots", room, ref)
        return
    lines = []
    for bot, problem in await node.bots.status():
        names = ", ".join((bot.name, *bot.aliases))
        state = "ready" if problem is None else f"unavailable: {problem}"
        where = "every room" if "*" in bot.rooms else ", ".join(f"#{r}" for r in bot.rooms)
        lines.append(f"{names} — {bot.model} ({bot.provider}) in {where}: {state}")
    node.notice(
        conn, "Bots (call one with 'Name, question' or @Name):\n" + "\n".join(lines), room, ref
    )


async def _stop(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    name = _room(room, "stop")
    bots = node.bots if isinstance(node.bots, Bots) else None
    stopped = bots.stop(name, conn.user, args or None) if bots else []
    text = f"stopped {', '.join(stopped)}" if stopped else "no bot is answering here"
    node.notice(conn, text, name, ref)


async def _uninvite(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    name = _room(room, "uninvite")
    if not args:
        raise ProtocolError(Code.BAD_COMMAND, "usage: /uninvite BOT")
    bots = node.bots if isinstance(node.bots, Bots) else None
    if bots is None or not await bots.uninvite(await node.room(name), args, conn.user):
        raise ProtocolError(Code.BAD_COMMAND, f"{args} is not a bot that can read #{name}")
    node.notice(conn, f"{args} can no longer read #{name}", name, ref)


async def _nodes(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    report = node.reports.get("federation")
    if report is None:
        node.notice(conn, "this node is on its own: it shares no rooms with others", room, ref)
        return
    status = await report()
    lines = [f"This node: {status['name']}"]
    for b in status["brokers"]:
        waiting = f", {b['outbox']} waiting to be published" if b["outbox"] else ""
        error = f" ({b['error']})" if b["state"] != "up" and b["error"] else ""
        lines.append(f"broker {b['broker']}: {b['state']}{error}{waiting}")
    now = time.time()
    for p in status["peers"]:
        heard = p["last_heard"]
        when = "never heard" if heard is None else f"heard {max(0, round(now - heard))} s ago"
        lines.append(f"peer {p['peer']}: {when}")
    node.notice(conn, "\n".join(lines), room, ref)


COMMANDS: dict[str, Spec] = {
    "help": Spec("/help", "list the commands", _help),
    "clear": Spec("/clear", "clear this window (only on your screen)", _clear),
    "me": Spec("/me ACTION", "say what you are doing: * alice waves", _me),
    "who": Spec("/who [ROOM]", "who is in the room now", _who),
    "join": Spec("/join ROOM", "join a room, creating an open one if it does not exist", _join),
    "leave": Spec("/leave [ROOM]", "leave this room (or ROOM)", _leave),
    "rooms": Spec("/rooms", "list the rooms on this node", _rooms),
    "msg": Spec("/msg USER MESSAGE", "send a direct message", _msg),
    "topic": Spec("/topic [TEXT]", "show or set the room's topic", _topic),
    "bots": Spec("/bots", "the bots you can call by name, and whether they answer now", _bots),
    "stop": Spec("/stop [BOT]", "stop the answer a bot is writing in this room", _stop),
    "uninvite": Spec("/uninvite BOT", "make a bot forget this key-protected room's key", _uninvite),
    "nodes": Spec("/nodes", "the brokers and peer nodes this node shares rooms through", _nodes),
}


def install(node: Node) -> None:
    """The node hands `command` frames here."""

    async def on_command(conn: Connection, frame: Command) -> None:
        await run(node, conn, frame.line, frame.room, frame.ref)

    node.handlers[Command] = on_command


async def run(node: Node, conn: Connection, line: str, room: str | None, ref: str | None) -> None:
    if not line.startswith("/") or line.startswith("//"):
        raise ProtocolError(Code.BAD_COMMAND, "a command starts with one /, e.g. /help")
    name, _, args = line[1:].partition(" ")
    spec = COMMANDS.get(name.casefold())
    if spec is None:
        raise ProtocolError(
            Code.UNKNOWN_COMMAND, f"unknown command /{name}: /help lists the commands"
        )
    await spec.run(node, conn, args.strip(), room, ref)
