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

from onionchat import i18n, moderation
from onionchat.authority import GUEST_WORDS, NODE_STAFF
from onionchat.bots import Bots
from onionchat.i18n import joined, say
from onionchat.protocol import Clear, Code, Command, Delete, ProtocolError, Send, encode

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
        raise ProtocolError(
            Code.BAD_COMMAND, say("/{name} needs a room: join one first", name=name)
        )
    return room


async def _help(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    """The usages read out here, in the reader's language, so that their column lines up."""
    rows = [(i18n.said(conn.lang, spec.usage), spec.help) for spec in COMMANDS.values()]
    width = max(len(usage) for usage, _ in rows)
    lines = [say("{usage}  {help}", usage=usage.ljust(width), help=help) for usage, help in rows]
    node.notice(conn, joined("\n", [say("Commands:"), *lines]), room, ref)


async def _clear(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    conn.send(encode(Clear(room=room, ref=ref)))


async def _me(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    if not args:
        raise ProtocolError(Code.BAD_COMMAND, say("usage: /me ACTION"))
    frame = Send(v=1, room=_room(room, "me"), text=args, me=True, ref=ref)
    await node.send(conn, frame)


async def _who(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    node.who(conn, args or _room(room, "who"), ref)


async def _join(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    if not args or " " in args:
        raise ProtocolError(Code.BAD_COMMAND, say("usage: /join ROOM"))
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
        raise ProtocolError(Code.BAD_COMMAND, say("usage: /msg USER MESSAGE"))
    await node.direct(conn, to.removeprefix("@"), text.strip(), None, False, ref)


async def _topic(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    name = _room(room, "topic")
    if not args:
        current = await node.room(name)
        if current.protected:
            text = say("the topic is sealed: your client shows it")
        else:
            topic = current.topic or say("(none)")
            text = say("topic of #{room}: {topic}", room=current.name, topic=topic)
        node.notice(conn, text, current.name, ref)
        return
    await node.set_topic(conn, name, args, None, ref)


async def _bots(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    if not isinstance(node.bots, Bots) or not node.bots.bots:
        node.notice(conn, say("this node has no bots"), room, ref)
        return
    lines = [say("Bots (call one with 'Name, question' or @Name):")]
    staff = node.authority.level(conn.user_key) >= NODE_STAFF  # the details are the operator's
    for bot, problem in await node.bots.status():
        state: str = say("ready") if problem is None else say("unavailable")
        if problem is not None and staff:
            state = say("unavailable: {problem}", problem=problem)
        where = say("every room") if "*" in bot.rooms else ", ".join(f"#{r}" for r in bot.rooms)
        lines.append(
            say(
                "{names} — {model} ({provider}) in {where}: {state}",
                names=", ".join((bot.name, *bot.aliases)),
                model=bot.model,
                provider=bot.provider,
                where=where,
                state=state,
            )
        )
    node.notice(conn, joined("\n", lines), room, ref)


async def _stop(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    name = _room(room, "stop")
    bots = node.bots if isinstance(node.bots, Bots) else None
    stopped = bots.stop(name, conn.user, args or None) if bots else []
    text = (
        say("stopped {bots}", bots=", ".join(stopped))
        if stopped
        else say("no bot is answering here")
    )
    node.notice(conn, text, name, ref)


async def _uninvite(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    name = _room(room, "uninvite")
    if not args:
        raise ProtocolError(Code.BAD_COMMAND, say("usage: /uninvite BOT"))
    node.authority.require(conn.user_key, "bots", name)
    bots = node.bots if isinstance(node.bots, Bots) else None
    if bots is None or not await bots.uninvite(await node.room(name), args, conn.user):
        raise ProtocolError(
            Code.BAD_COMMAND, say("{bot} is not a bot that can read #{room}", bot=args, room=name)
        )
    node.notice(conn, say("{bot} can no longer read #{room}", bot=args, room=name), name, ref)


async def _nodes(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    report = node.reports.get("federation")
    if report is None:
        node.notice(conn, say("this node is on its own: it shares no rooms with others"), room, ref)
        return
    status = await report()
    lines = [say("This node: {name}", name=status["name"])]
    for b in status["brokers"]:
        waiting = say(", {count} waiting to be published", count=b["outbox"]) if b["outbox"] else ""
        error = f" ({b['error']})" if b["state"] != "up" and b["error"] else ""
        lines.append(
            say(
                "broker {broker}: {state}{error}{waiting}",
                broker=b["broker"],
                state=b["state"],
                error=error,
                waiting=waiting,
            )
        )
    now = time.time()
    for p in status["peers"]:
        heard = p["last_heard"]
        when = (
            say("never heard")
            if heard is None
            else say("heard {seconds} s ago", seconds=max(0, round(now - heard)))
        )
        lines.append(say("peer {peer}: {when}", peer=p["peer"], when=when))
    node.notice(conn, joined("\n", lines), room, ref)


def _sanction_args(args: str, usage: str) -> tuple[str, int | None, str | None]:
    """NAME [DURATION] [REASON]: the duration is a number of minutes, or 30m, 12h, 7d, 2w,
    or `forever`."""
    words = args.split()
    if not words:
        raise ProtocolError(Code.BAD_COMMAND, say("usage: {usage}", usage=usage))
    minutes = None
    rest = words[1:]
    if rest and (rest[0].casefold() == "forever" or moderation.duration(rest[0]) is not None):
        minutes = moderation.duration(rest[0])
        rest = rest[1:]
    return words[0], minutes, moderation.reason(rest)


def _sanctioning(
    name: str, act: Callable[..., Awaitable[None]], node_wide: bool = False
) -> Handler:
    """The command NAME [DURATION] [REASON] of a sanction: in this room, or node-wide."""

    async def run(
        node: Node, conn: Connection, args: str, room: str | None, ref: str | None
    ) -> None:
        target, minutes, reason = _sanction_args(args, COMMANDS[name].usage)
        here = None if node_wide else await node.room(_room(room, name))
        await act(node, conn, here, target, minutes, reason, ref)

    return run


async def _unban(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    await _lift(node, conn, args, room, ref, "unban", moderation.unban)


async def _unmute(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    await _lift(node, conn, args, room, ref, "unmute", moderation.unmute)


async def _lift(
    node: Node,
    conn: Connection,
    args: str,
    room: str | None,
    ref: str | None,
    name: str,
    lift: Callable[..., Awaitable[int]],
) -> None:
    """The room's sanction, and the node-wide one too for those who may lift it."""
    target = args.strip()
    if not target or " " in target:
        raise ProtocolError(Code.BAD_COMMAND, say("usage: {usage}", usage=COMMANDS[name].usage))
    lifted = 0
    if room is not None:
        lifted += await lift(node, conn, await node.room(room), target, ref)
    if node.authority.may(conn.user_key, "node-ban"):
        node_wide = await lift(node, conn, None, target, ref)
        if node_wide:
            node.notice(conn, say("lifted {target}'s node-wide sanction", target=target), room, ref)
        lifted += node_wide
    if not lifted:
        what = say("banned or kicked") if name == "unban" else say("muted")
        node.notice(conn, say("{target} is not {what} here", target=target, what=what), room, ref)


async def _delete(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    if not args or " " in args:
        raise ProtocolError(Code.BAD_COMMAND, say("usage: {usage}", usage=COMMANDS["delete"].usage))
    await moderation.delete(node, conn, await node.room(_room(room, "delete")), args, ref)


async def _purge(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    words = args.split()
    if len(words) not in (1, 2):
        raise ProtocolError(Code.BAD_COMMAND, say("usage: {usage}", usage=COMMANDS["purge"].usage))
    count = minutes = None
    if len(words) == 2:
        if words[1].isdigit():
            count = int(words[1])
        elif (minutes := moderation.duration(words[1])) is None:
            raise ProtocolError(
                Code.BAD_COMMAND, say("give a count (50) or a time back (30m, 12h, 7d)")
            )
    here = await node.room(_room(room, "purge"))
    await moderation.purge(node, conn, here, words[0], count, minutes, ref)


async def _op(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    words = args.split()
    if len(words) not in (1, 2) or (len(words) == 2 and words[1] not in ("moderator", "owner")):
        raise ProtocolError(Code.BAD_COMMAND, say("usage: {usage}", usage=COMMANDS["op"].usage))
    role = words[1] if len(words) == 2 else "moderator"
    here = await node.room(_room(room, "op"))
    await moderation.name_staff(node, conn, here, words[0], role, ref)


async def _deop(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    if not args or " " in args:
        raise ProtocolError(Code.BAD_COMMAND, say("usage: {usage}", usage=COMMANDS["deop"].usage))
    here = await node.room(_room(room, "deop"))
    await moderation.name_staff(node, conn, here, args, None, ref)


async def _grant(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    words = args.split()
    if len(words) != 2:
        raise ProtocolError(Code.BAD_COMMAND, say("usage: {usage}", usage=COMMANDS["grant"].usage))
    await moderation.grant(node, conn, words[0], words[1], ref)


async def _staff(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    name = _room(room, "staff")
    shown = moderation.staff(node, name)
    text = say(
        "staff of #{room}: {staff}",
        room=name,
        staff=", ".join(shown) if shown else say("none (node staff act here)"),
    )
    node.notice(conn, text, name, ref)


async def _audit(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    words = args.split()
    whole = bool(words) and words[0] == "all"
    words = words[1:] if whole else words
    if len(words) > 1 or (words and not words[0].isdigit()):
        raise ProtocolError(Code.BAD_COMMAND, say("usage: {usage}", usage=COMMANDS["audit"].usage))
    lines = int(words[0]) if words else moderation.AUDIT_LINES
    where = None if whole else _room(room, "audit")
    shown = await moderation.audit(node, conn, where, lines)
    title = say("the node") if where is None else f"#{where}"
    body = "\n".join(shown) if shown else say("(nothing yet)")
    node.notice(conn, say("Audit log of {title}:\n{body}", title=title, body=body), room, ref)


async def _mode(node: Node, conn: Connection, args: str, room: str | None, ref: str | None) -> None:
    here = await node.room(_room(room, "mode"))
    words = args.split()
    if not words:
        node.notice(
            conn,
            say(
                "modes of #{room}: {modes}",
                room=here.name,
                modes=moderation.describe(here.modes),
            ),
            room,
            ref,
        )
        return
    if len(words) != 2:
        raise ProtocolError(Code.BAD_COMMAND, say("usage: {usage}", usage=COMMANDS["mode"].usage))
    await moderation.set_mode(node, conn, here, words[0].casefold(), words[1].casefold(), ref)


async def _role_command(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None, name: str
) -> None:
    if not args or " " in args:
        raise ProtocolError(Code.BAD_COMMAND, say("usage: {usage}", usage=COMMANDS[name].usage))
    here = await node.room(_room(room, name))
    role = {"voice": "voice", "devoice": None, "allow": "allowed"}[name]
    await moderation.let_in(node, conn, here, args, role, ref)


async def _voice(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    await _role_command(node, conn, args, room, ref, "voice")


async def _devoice(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    await _role_command(node, conn, args, room, ref, "devoice")


async def _allow(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    await _role_command(node, conn, args, room, ref, "allow")


async def _knock(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    if not args or " " in args:
        raise ProtocolError(Code.BAD_COMMAND, say("usage: {usage}", usage=COMMANDS["knock"].usage))
    if not node.knocks.allow(conn.user_key):
        raise ProtocolError(Code.RATE_LIMITED, say("you knocked a moment ago: wait a minute"))
    moderation.knock(node, conn, await node.room(args.removeprefix("#")), ref)


async def _admit(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    if not args or " " in args:
        raise ProtocolError(Code.BAD_COMMAND, say("usage: {usage}", usage=COMMANDS["admit"].usage))
    await moderation.admit(node, conn, args, ref)


async def _waiting(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    node.authority.require(conn.user_key, "admit")
    waiting = await node.store.waiting()
    text = (
        say("waiting: {users}", users=", ".join(waiting)) if waiting else say("nobody is waiting")
    )
    node.notice(conn, text, room, ref)


async def _invitecode(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    words = args.split()
    if len(words) > 2 or not all(w.isdigit() for w in words):
        raise ProtocolError(
            Code.BAD_COMMAND, say("usage: {usage}", usage=COMMANDS["invitecode"].usage)
        )
    uses = int(words[0]) if words else 1
    hours = int(words[1]) if len(words) > 1 else 72
    await moderation.make_invite(node, conn, uses, hours, ref)


async def _invitecodes(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    codes = await node.store.invites(conn.user)
    now = time.time()
    lines: list[str] = [
        say(
            "{label}…  used {used} of {uses}, {left}",
            label=label,
            used=used,
            uses=uses,
            left=say("{hours} h left", hours=max(1, round((expires - now) / 3600)))
            if used < uses and expires > now
            else say("done"),
        )
        for label, _, used, uses, expires in codes
    ]
    node.notice(
        conn, joined("\n", [say("Your invite codes:"), *(lines or [say("(none)")])]), room, ref
    )


async def _revokecode(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    label = args.strip().removesuffix("…")
    if len(label) != 4:
        raise ProtocolError(
            Code.BAD_COMMAND, say("usage: {usage}", usage=COMMANDS["revokecode"].usage)
        )
    if not await node.store.revoke_invite(label, conn.user):
        raise ProtocolError(
            Code.BAD_COMMAND, say("you have no usable invite code {label}…", label=label)
        )
    node.notice(conn, say("invite code {label}… can no longer be used", label=label), room, ref)


async def _guests(
    node: Node, conn: Connection, args: str, room: str | None, ref: str | None
) -> None:
    if not args:
        node.authority.require(conn.user_key, "guests")
        node.notice(
            conn,
            say(
                "guests are {guests} on this node",
                guests=GUEST_WORDS.get(node.authority.guests, node.authority.guests),
            ),
            room,
            ref,
        )
        return
    await moderation.guests(node, conn, args.strip().casefold(), ref)


COMMANDS: dict[str, Spec] = {
    "help": Spec(say("/help"), say("list the commands"), _help),
    "clear": Spec(say("/clear"), say("clear this window (only on your screen)"), _clear),
    "me": Spec(say("/me ACTION"), say("say what you are doing: * alice waves"), _me),
    "who": Spec(say("/who [ROOM]"), say("who is in the room now"), _who),
    "join": Spec(
        say("/join ROOM"), say("join a room, creating an open one if it does not exist"), _join
    ),
    "leave": Spec(say("/leave [ROOM]"), say("leave this room (or ROOM)"), _leave),
    "rooms": Spec(say("/rooms"), say("list the rooms on this node"), _rooms),
    "msg": Spec(say("/msg USER MESSAGE"), say("send a direct message"), _msg),
    "topic": Spec(say("/topic [TEXT]"), say("show or set the room's topic"), _topic),
    "bots": Spec(
        say("/bots"), say("the bots you can call by name, and whether they answer now"), _bots
    ),
    "stop": Spec(say("/stop [BOT]"), say("stop the answer a bot is writing in this room"), _stop),
    "uninvite": Spec(
        say("/uninvite BOT"), say("make a bot forget this key-protected room's key"), _uninvite
    ),
    "nodes": Spec(
        say("/nodes"), say("the brokers and peer nodes this node shares rooms through"), _nodes
    ),
    "staff": Spec(say("/staff"), say("the room's owner and moderators"), _staff),
    "kick": Spec(
        say("/kick NAME [MINUTES] [REASON]"),
        say("staff: out of the room for a while"),
        _sanctioning("kick", moderation.kick),
    ),
    "ban": Spec(
        say("/ban NAME [DURATION] [REASON]"),
        say("staff: out of the room (for good)"),
        _sanctioning("ban", moderation.ban),
    ),
    "unban": Spec(say("/unban NAME"), say("staff: lift a ban or a kick"), _unban),
    "mute": Spec(
        say("/mute NAME [DURATION] [REASON]"),
        say("staff: may read, not write"),
        _sanctioning("mute", moderation.mute),
    ),
    "unmute": Spec(say("/unmute NAME"), say("staff: may write again"), _unmute),
    "delete": Spec(say("/delete ID"), say("delete your message (staff: anyone's)"), _delete),
    "purge": Spec(
        say("/purge NAME [COUNT|TIME]"), say("staff: delete NAME's newest messages"), _purge
    ),
    "op": Spec(say("/op NAME [moderator|owner]"), say("owner: name a room moderator"), _op),
    "deop": Spec(say("/deop NAME"), say("owner: make a moderator a member again"), _deop),
    "audit": Spec(say("/audit [all] [LINES]"), say("staff: what staff did, newest last"), _audit),
    "nodeban": Spec(
        say("/nodeban NAME [DURATION] [REASON]"),
        say("node staff: off the node"),
        _sanctioning("nodeban", moderation.ban, node_wide=True),
    ),
    "nodemute": Spec(
        say("/nodemute NAME [DURATION] [REASON]"),
        say("node staff: silent on the node"),
        _sanctioning("nodemute", moderation.mute, node_wide=True),
    ),
    "grant": Spec(say("/grant NAME ROLE"), say("admin: admin, moderator, member or guest"), _grant),
    "mode": Spec(
        say("/mode [MODE VALUE]"),
        say("the room's modes; staff: invite, moderated, limit, slow, expiry, lockdown"),
        _mode,
    ),
    "voice": Spec(say("/voice NAME"), say("staff: NAME may speak in a moderated room"), _voice),
    "devoice": Spec(say("/devoice NAME"), say("staff: NAME may no longer speak there"), _devoice),
    "allow": Spec(say("/allow NAME"), say("staff: let NAME into an invite-only room"), _allow),
    "knock": Spec(say("/knock ROOM"), say("ask an invite-only room's staff to let you in"), _knock),
    "invitecode": Spec(
        say("/invitecode [USES] [HOURS]"), say("a code that lets friends register"), _invitecode
    ),
    "invitecodes": Spec(say("/invitecodes"), say("your invite codes and their uses"), _invitecodes),
    "revokecode": Spec(
        say("/revokecode CODE"), say("stop an invite code (its first 4 letters)"), _revokecode
    ),
    "admit": Spec(
        say("/admit NAME"), say("node staff: let a newcomer out of the waiting room"), _admit
    ),
    "waiting": Spec(say("/waiting"), say("node staff: who waits to be admitted"), _waiting),
    "guests": Spec(
        say("/guests [mute|unmute|out|in]"), say("node staff: all guests at once"), _guests
    ),
}


def install(node: Node) -> None:
    """The node hands `command` frames here."""

    async def on_command(conn: Connection, frame: Command) -> None:
        await run(node, conn, frame.line, frame.room, frame.ref)

    async def on_delete(conn: Connection, frame: Delete) -> None:
        room = await node.readable_room(conn, frame.room)
        await moderation.delete(node, conn, room, frame.id, frame.ref, told=False)

    node.handlers[Command] = on_command
    node.handlers[Delete] = on_delete


async def run(node: Node, conn: Connection, line: str, room: str | None, ref: str | None) -> None:
    if not line.startswith("/") or line.startswith("//"):
        raise ProtocolError(Code.BAD_COMMAND, say("a command starts with one /, e.g. /help"))
    name, _, args = line[1:].partition(" ")
    spec = COMMANDS.get(name.casefold())
    if spec is None:
        raise ProtocolError(
            Code.UNKNOWN_COMMAND,
            say("unknown command /{name}: /help lists the commands", name=name),
        )
    await spec.run(node, conn, args.strip(), room, ref)
