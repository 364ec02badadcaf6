"""Message ids: time-ordered, unique across nodes, and sortable as plain strings.

The layout is ULID's: 48 bits of milliseconds then 80 random bits, in Crockford base32 (26
characters). Within one millisecond the random part is incremented, so the ids one node
hands out are strictly increasing even when the clock stands still or steps back.
"""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
LENGTH = 26


def _encode(value: int) -> str:
    chars = []
    for _ in range(LENGTH):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_valid(text: str) -> bool:
    return len(text) == LENGTH and all(c in _ALPHABET for c in text) and text[0] <= "7"


def milliseconds(text: str) -> int:
    """The time in a valid id: a message's `ts` is always its id's."""
    value = 0
    for c in text[:10]:
        value = value * 32 + _ALPHABET.index(c)
    return value


def first_at(ms: int) -> str:
    """The smallest id of a millisecond: every id made then or later sorts at or after it."""
    return _encode(ms << _RANDOM_BITS)


class IdGenerator:
    """Hands out strictly increasing ids; `ms` is the timestamp stored with each message."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> tuple[str, int]:
        ms = time.time_ns() // 1_000_000
        value = (ms << _RANDOM_BITS) | secrets.randbits(_RANDOM_BITS - 1)
        if value <= self._last:
            value = self._last + 1
            ms = value >> _RANDOM_BITS
        self._last = value
        return _encode(value), ms
