"""Short numbers for the messages a terminal shows, so that a person can answer, edit, react
to or delete one by typing `[3]`'s 3 rather than its 26-character id. Each shown message gets
the next number; the newest `KEPT` are remembered (an older number is said to be gone).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

KEPT = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class Numbered:
    number: int
    room: str
    id: str
    sender: str
    me: bool
    to: str | None  # a direct message's other side, as the node spells it
    file: dict[str, Any] | None = None  # its file: id, name, type, size (and key, if sealed)


class Numbers:
    def __init__(self) -> None:
        self._by_id: collections.OrderedDict[str, Numbered] = collections.OrderedDict()
        self._by_number: dict[int, Numbered] = {}
        self._next = 1
        self._related: collections.OrderedDict[str, str] = collections.OrderedDict()

    def add(
        self,
        room: str,
        id_: str,
        sender: str,
        me: bool,
        to: str | None,
        file: dict[str, Any] | None = None,
    ) -> int:
        found = self._by_id.get(id_)
        if found is not None:
            return found.number
        numbered = Numbered(self._next, room, id_, sender, me, to, file)
        self._next += 1
        self._by_id[id_] = self._by_number[numbered.number] = numbered
        if len(self._by_id) > KEPT:
            _, old = self._by_id.popitem(last=False)
            del self._by_number[old.number]
        return numbered.number

    def relate(self, id_: str, kind: str) -> None:
        """An edit or a reaction shown (it has no number: a deletion of it says what it was)."""
        self._related[id_] = kind
        if len(self._related) > KEPT:
            self._related.popitem(last=False)

    def related(self, id_: str) -> str | None:
        return self._related.get(id_)

    def of(self, id_: str) -> Numbered | None:
        return self._by_id.get(id_)

    def get(self, typed: str) -> Numbered | None:
        """The message `typed` names: `3` or `[3]`."""
        typed = typed.strip().removeprefix("[").removesuffix("]")
        return self._by_number.get(int(typed)) if typed.isdigit() else None
