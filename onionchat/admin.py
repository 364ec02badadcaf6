"""`onionchat admin`: the operator's hand on the data directory, whether the node runs or not.

It writes the database directly (SQLite lets it beside a running node) and then bumps
`meta.order`: a running node reads roles and sanctions again within seconds and carries them
out (the banned are let go, the kicked leave their rooms). The operator outranks everyone;
every change is in the audit log as done by `operator`.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from pathlib import Path

from onionchat import names
from onionchat.auth import invite_hash
from onionchat.authority import CHANGED, NODE_ROLES, NODE_WIDE
from onionchat.moderation import PURGE_COUNT, duration, until
from onionchat.protocol import ProtocolError
from onionchat.store import AuditEntry, Room, Sanction, Store

ACTOR = "operator"
DATABASE = "onionchat.sqlite3"


class AdminError(Exception):
    """What the operator asked cannot be done; the message says why."""


def run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir or "data")
    path = data_dir / DATABASE
    if not path.exists():
        print(f"onionchat admin: there is no database at {path}")
        return 1
    try:
        for line in asyncio.run(_act(path, args)):
            print(line)
    except (AdminError, ProtocolError) as exc:
        print(f"onionchat admin: {exc}")
        return 1
    return 0


async def _act(path: Path, args: argparse.Namespace) -> list[str]:
    store = await Store.open(path)
    try:
        lines = await _carry_out(store, args)
        if args.action not in ("users", "rooms", "audit", "invites", "invite", "revoke-code"):
            await store.put_meta(CHANGED, secrets.token_bytes(8))
        return lines
    finally:
        await store.close()


async def _carry_out(store: Store, args: argparse.Namespace) -> list[str]:
    action = args.action
    if action == "users":
        return [
            f"{n}  {role}  {_day(created)}" + (f"  invited by {by}" if by else "")
            for n, role, created, by in await store.users()
        ]
    if action == "rooms":
        roles: dict[str, list[str]] = {}
        for name, key, role in await store.room_roles():
            roles.setdefault(name, []).append(f"{key} ({role})")
        return [
            f"#{r.name}  {'key-protected' if r.protected else 'open'}  "
            f"{', '.join(roles.get(r.name, [])) or 'no staff'}"
            for r in await store.rooms()
        ]
    if action == "audit":
        return [
            f"{_minute(e.ts)} {e.actor}: {e.action} {e.target or ''}"
            f"{f' in #{e.room}' if e.room else ''}{f' ({e.detail})' if e.detail else ''}"
            for e in await store.audit(args.room, args.n)
        ]
    if action == "invites":
        return [
            f"{label}…  by {inviter}  used {used} of {uses}  until {_minute(expires * 1000)}"
            for label, inviter, used, uses, expires in await store.invites(None)
        ]
    if action == "revoke-code":
        label = args.label.removesuffix("…")
        if not await store.revoke_invite(label, None):
            raise AdminError(f"no invite code {label}… can still be used")
        await _audit(store, "revoke invite code", None, None, f"{label}…")
        return [f"invite code {label}… can no longer be used"]
    if action == "invite":
        if not 1 <= args.uses <= 10_000 or not 1 <= args.hours <= 24 * 366:
            raise AdminError("an invite code has 1 to 10000 uses and lasts 1 to 8784 hours")
        code = secrets.token_urlsafe(12)
        expires = int(time.time()) + args.hours * 3600
        await store.add_invite(invite_hash(code), code[:4], ACTOR, args.uses, expires, 10_000)
        await _audit(store, "invite code", None, None, f"{code[:4]}…, {args.uses} uses")
        return [code]
    user = await store.user_by_key(names.key(args.name))
    if user is None:
        raise AdminError(f"there is no user {args.name!r}")
    if action in ("grant", "revoke"):
        role = args.role if action == "grant" else "member"
        if role not in NODE_ROLES or role == "bot":
            raise AdminError(f"{role!r} is no node role: admin, moderator, member or guest")
        await store.set_role(names.key(user.name), role)
        await _audit(store, f"grant {role}", user.name)
        return [f"{user.name} is a{'n' if role[0] in 'aeiou' else ''} {role} of this node now"]
    room = await _room(store, getattr(args, "room", None))
    where = room.name if room else None
    room_id = room.id if room else NODE_WIDE
    key = names.key(user.name)
    if action in ("ban", "mute"):
        minutes = None if args.span is None else duration(args.span)
        if args.span is not None and minutes is None:
            raise AdminError(f"{args.span!r} is not a duration (30m, 12h, 7d, 2w)")
        sanction = Sanction(room_id, key, action, until(minutes), ACTOR, args.reason)
        await store.put_sanction(sanction)
        if room is not None and action == "ban":
            await store.set_member(user.id, room.id, False)
        await _audit(store, action, user.name, where, args.reason)
        done = {"ban": "banned", "mute": "muted"}[action]
        return [f"{user.name}: {done} {f'in #{where}' if where else 'on the whole node'}"]
    if action in ("unban", "unmute"):
        kinds = ("ban", "kick") if action == "unban" else ("mute",)
        lifted = await store.lift_sanctions(room_id, key, kinds)
        if lifted:
            await _audit(store, action, user.name, where)
        return [f"{user.name}: {'lifted' if lifted else 'nothing to lift'}"]
    assert action == "purge" and room is not None
    ids = await store.written_by(room.id, user.name, min(args.count, PURGE_COUNT), 0)
    gone = await store.delete_messages(room.id, ids)
    await store.scrub()
    await _audit(store, "purge", user.name, where, f"{len(gone)} messages")
    return [f"deleted {len(gone)} messages of {user.name} in #{room.name}"]


async def _room(store: Store, name: str | None) -> Room | None:
    if name is None:
        return None
    room = await store.room(names.room(name.removeprefix("#")))
    if room is None:
        raise AdminError(f"there is no room #{name}")
    return room


async def _audit(
    store: Store,
    action: str,
    target: str | None,
    room: str | None = None,
    detail: str | None = None,
) -> None:
    await store.add_audit(AuditEntry(int(time.time() * 1000), ACTOR, action, target, room, detail))


def _day(seconds: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def _minute(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))
