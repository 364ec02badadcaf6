"""Invitations, both ways: /invite seals a room's key to a user, signed by us; an invitation
that comes is opened and checked, and its key decided on. A key never replaces one held (it
waits for /usekey), and for a room one holds no key for it is taken only if it opens the
room's messages (keys.choose), since any member may invite with a key of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Protocol

from onionchat import crypto, sealed
from onionchat.client.keys import NO_SIGNER, OwnKeys, Spawn, choose, lookup
from onionchat.client.outbox import Outbox
from onionchat.client.trust import Teller, Trust, Who
from onionchat.protocol import HistoryPage, MessageFrame

PROBE = 50  # messages asked for to see whether an invitation's key opens the room


class Shows(Teller, Protocol):
    """The session's view, as far as invitations need it."""

    def frame(self, frame: None, data: dict[str, Any]) -> None:
        """The `invited` frame as received, with what it came to instead of its box."""


class Where(Who, Protocol):
    """Where the session is: the room we are in, the rooms joined."""

    @property
    def current(self) -> str | None: ...
    @property
    def rooms(self) -> Mapping[str, object]: ...
    def protected(self, room: str | None) -> bool: ...


def room_boxes(messages: Iterable[MessageFrame]) -> list[str]:
    """A room's message boxes, in the order given: direct messages are not the room's."""
    return [m.box for m in messages if m.box is not None and m.to is None]


class Invitations:
    """Invitations sent and received, and which of the keys they bring is taken."""

    def __init__(
        self,
        own: OwnKeys,
        trust: Trust,
        outbox: Outbox,
        spawn: Spawn,
        view: Shows,
        refuse: Callable[[str], None],
        where: Where,
    ) -> None:
        self._own = own
        self._trust = trust
        self._outbox = outbox
        self._spawn = spawn
        self._view = view
        self._refuse = refuse
        self._where = where
        # Invitations whose signature held: waiting for a look at the room's boxes, and the
        # ones not taken, which /usekey can take.
        self._candidates: dict[str, dict[str, bytes]] = {}
        self._offers: dict[tuple[str, str], bytes] = {}
        self._probes: dict[str, str] = {}  # ref of a `history` asked for that look -> room
        self._rotations: dict[str, str] = {}  # ref of a `who` for a new key's members -> room

    # -- commands -----------------------------------------------------------------------------

    async def cmd_invite(self, args: str) -> bool:
        """/invite USER: seal the current room's newest key to a user (or a bot), signed by us."""
        room = self._where.current
        if not args or " " in args:
            self._refuse("usage: /invite USER")
            return True
        if room is None or not self._where.protected(room):
            self._refuse("/invite is for key-protected rooms: anyone may join an open one")
            return True
        await self._invite(room, args)
        return True

    async def cmd_rotate(self, args: str) -> bool:
        """/rotate: a new key for the current room, ours from now on, sealed to each of its
        members (asked of the node: `who` with `all`) and the bots that read it, so that one
        who was kicked, holding only the older keys, reads nothing written after."""
        room = self._where.current
        if room is None or not self._where.protected(room):
            self._refuse("/rotate is for key-protected rooms: an open room has no key")
            return True
        if not self._own.room_keys(room) or self._own.signer is None:
            self._refuse(f"you hold no key for #{room} to follow, or no signing key")
            return True
        self._own.keyring.add(room, crypto.new_room_key())
        self._own.save()
        ref = self._outbox.ref()
        self._rotations[ref] = room
        await self._outbox.send({"type": "who", "room": room, "all": True, "ref": ref})
        self._view.tell(
            "key",
            f"#{room} has a new key, yours from now on: sealing it to its members",
            {"room": room, "outcome": "rotating"},
        )
        return True

    def rotating(self, ref: str) -> bool:
        return ref in self._rotations

    async def rotated(self, ref: str, members: list[str]) -> None:
        """Seal the room's new key to each member the node listed (not ourselves)."""
        room = self._rotations.pop(ref)
        for name in members:
            if name != self._where.user:
                await self._invite(room, name)

    async def _invite(self, room: str, args: str) -> None:
        keys = self._own.room_keys(room)
        if not keys:
            self._refuse(f"you hold no key for #{room}: there is none to share")
            return
        if self._own.signer is None:
            self._refuse(f"cannot invite: {NO_SIGNER}")
            return
        name = args.removeprefix("@")
        peer = await self._trust.await_peer(self._trust.peer(name))
        if peer is None:
            self._refuse(f"cannot invite {name}: {self._trust.why_not(name)}")
            return
        if self._trust.new_key(peer.user) is not None:
            self._refuse(self._trust.advice(peer.user, "invite them"))
            return
        invitation = sealed.seal_invitation(
            keys[0],
            self._trust.box_public(peer),
            self._own.signer,
            room=room,
            sender=self._where.user,
            to=peer.user,
        )
        frame = {"type": "invite", "room": room, "to": peer.user, "sealed": invitation}
        await self._outbox.send(frame)

    async def cmd_usekey(self, args: str) -> bool:
        """/usekey ROOM USER: take a key that was not taken, as the room's newest."""
        room, _, inviter = args.partition(" ")
        room, inviter = room.removeprefix("#"), inviter.strip()
        if not room or not inviter:
            self._refuse("usage: /usekey ROOM USER")
            return True
        found = lookup(self._offers, (room, inviter))
        if found is None:
            self._refuse(f"no invitation of {inviter} to #{room} with a key you do not hold")
            return True
        (room, inviter), key = found
        del self._offers[(room, inviter)]
        older = len(self._own.room_keys(room))
        self._own.keyring.add(room, key)
        self._own.save()
        kept = f" (the {older} older key(s) stay, for older messages)" if older else ""
        self._view.tell(
            "key",
            f"#{room} now uses the key of {inviter}'s invitation{kept}",
            {"room": room, "from": inviter, "outcome": "used"},
        )
        return True

    # -- invitations that come ----------------------------------------------------------------

    def pending(self, room: str) -> bool:
        """Whether invitations to `room` wait for a look at its messages."""
        return room in self._candidates

    async def invitation(
        self,
        room: str,
        sender: str,
        sealed_key: str,
        data: dict[str, Any] | None = None,
        staff: bool = False,
    ) -> None:
        """Open and check an invitation; take its key only as the rules say (never over a key
        held, unless the room's staff made it: a rotation; and only if it opens the room's
        messages). `data`: the live `invited` frame; `staff`: the node says the sender is
        staff of the room."""
        outcome, why = await self._open(room, sender, sealed_key)
        if data is not None:
            shown = {k: v for k, v in data.items() if k != "sealed"}
            shown["opened"] = why is None
            if why is not None:
                shown["error"] = why
            self._view.frame(None, shown)
        if outcome is None:
            return
        held = self._own.room_keys(room)
        fields = {"room": room, "from": sender}
        if outcome in held:
            if data is not None:
                self._view.tell(
                    "invitation",
                    f"{sender} invited you to #{room} (with the key you hold)",
                    fields | {"outcome": "held"},
                )
            return
        if held and staff:
            self._own.keyring.add(room, outcome)
            self._own.save()
            self._view.tell(
                "key",
                f"{sender} made a new key for #{room}: yours from now on (the older ones stay, "
                "for older messages)",
                fields | {"outcome": "rotated"},
            )
            return
        if held:
            self._offer_kept(room, sender, outcome)
            return
        self._candidates.setdefault(room, {})[sender] = outcome
        if room in self._where.rooms:
            ref = self._outbox.ref()
            self._probes[ref] = room
            frame = {"type": "history", "room": room, "limit": PROBE, "ref": ref}
            self._spawn(self._outbox.send(frame))
        else:
            self._view.tell(
                "invitation",
                f"{sender} invited you to #{room}: /join {room} (its key is taken if it opens "
                "the room's messages)",
                fields | {"outcome": "waiting"},
            )

    async def _open(
        self, room: str, sender: str, sealed_key: str
    ) -> tuple[bytes | None, str | None]:
        """(the room key, None) for an invitation that holds, else (None, why not; said)."""
        fields = {"room": room, "from": sender}
        if self._own.identity is None:
            why = f"cannot open {sender}'s invitation to #{room}: this client has no identity key"
            self._view.tell("invitation", why, fields | {"outcome": "locked"}, warn=True)
            return None, why
        try:
            invitation = sealed.open_invitation(sealed_key, self._own.identity[0])
            invitation.check(room, sender, self._where.user)
        except crypto.CryptoError as exc:
            why = f"cannot open {sender}'s invitation to #{room}: {exc}"
            self._view.tell("invitation", why, fields | {"outcome": "locked"}, warn=True)
            return None, why
        except sealed.Rejected as exc:
            return None, self._rejected(room, sender, str(exc))
        signing, reason = await self._trust.signing_of(sender)
        if signing is None:
            return None, self._rejected(room, sender, reason or "no signing key")
        if not invitation.verify(signing):
            await self._trust.refresh(sender)  # the one first seen may have changed
            new = self._trust.new_key(sender)
            reason = f"the signature is not {sender}'s"
            if new is not None and invitation.verify(new[1]):
                reason = f"it is signed with {sender}'s new key, not the one you know"
            return None, self._rejected(room, sender, reason)
        return invitation.key, None

    def _rejected(self, room: str, sender: str, reason: str) -> str:
        why = f"{sender}'s invitation to #{room} is rejected: {reason}; nothing of it is used"
        fields = {"room": room, "from": sender, "outcome": "rejected", "reason": reason}
        self._view.tell("invitation", why, fields, warn=True)
        return why

    def _offer_kept(self, room: str, sender: str, key: bytes) -> None:
        self._offers[(room, sender)] = key
        self._view.tell(
            "invitation",
            f"{sender} invited you to #{room} with a different key: you keep yours "
            f"(/usekey {room} {sender} adds theirs as the newest key)",
            {"room": room, "from": sender, "outcome": "kept"},
            warn=True,
        )

    # -- deciding -----------------------------------------------------------------------------

    def probing(self, ref: str) -> bool:
        """Whether a `history` page answers our look at a room for its invitations."""
        return ref in self._probes

    def probed(self, ref: str, page: HistoryPage) -> Coroutine[Any, Any, None]:
        """The decision the page of probe `ref` brings, to run in its turn."""
        room = self._probes.pop(ref)
        return self.decide(room, room_boxes(page.messages), complete=not page.more)

    def forget(self, ref: str) -> None:
        """The node refused `ref`: if it was a probe, no page will come."""
        self._probes.pop(ref, None)

    async def decide(self, room: str, boxes: list[str], complete: bool) -> None:
        """The invitations for a room we hold no key for, against its message boxes (oldest
        first; never the topic's, which any member may set): the key that opens them is
        taken (keys.choose); the others are said and left for /usekey."""
        candidates = self._candidates.pop(room, {})
        if not candidates:
            return
        held = self._own.room_keys(room)
        if held:  # a key came meanwhile (--key, another invitation, another device)
            for sender, key in candidates.items():
                if key not in held:
                    self._offer_kept(room, sender, key)
            return
        winner, reasons = choose(candidates, boxes, complete)
        if winner is not None:
            self._own.keyring.add(room, candidates[winner])
            self._own.save()
            how = "its key opens the room's messages" if boxes else "the room has no messages yet"
            self._view.tell(
                "invitation",
                f"{winner} invited you to #{room}: {how}; you hold its key now",
                {"room": room, "from": winner, "outcome": "accepted"},
            )
        for sender, reason in reasons.items():
            self._offers[(room, sender)] = candidates[sender]
            if reason.startswith("it does not open"):
                text = f"{sender}'s key for #{room} does not open its messages: not used"
            else:
                text = f"{sender}'s key for #{room} is not used: {reason}"
            self._view.tell(
                "invitation",
                f"{text} (/usekey {room} {sender} takes it all the same)",
                {"room": room, "from": sender, "outcome": "not_used", "reason": reason},
                warn=True,
            )
