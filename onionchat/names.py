"""User and room names: normalised, length-limited, and not able to impersonate one another.

Names are NFKC-normalised and compared case-insensitively (`casefold`). Letters may come from
any script, but not from several in one name, so that `Оlga` (a Cyrillic `О` followed by Latin
letters) cannot pass for `Olga`: this is Unicode TS #39's "highly restrictive" level, which
still allows the usual mixes of Han with Hiragana/Katakana or Hangul.
"""

from __future__ import annotations

import unicodedata

from confusable_homoglyphs import categories

from onionchat.protocol import Code, ProtocolError

MAX_USER = 32
MAX_ROOM = 64
_PUNCT = frozenset("_-.")
_NEUTRAL = frozenset({"Common", "Inherited", "Zyyy", "Zinh", "COMMON", "INHERITED"})
_ALLOWED_MIXES = (
    frozenset({"HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"HAN", "HANGUL"}),
    frozenset({"HAN", "BOPOMOFO"}),
)


def _script(char: str) -> str:
    return str(categories.alias(char)).upper()


def _check(raw: str, kind: str, limit: int) -> str:
    name = unicodedata.normalize("NFKC", raw).strip()
    if not name:
        raise ProtocolError(Code.BAD_NAME, f"{kind} name is empty")
    if len(name) > limit:
        raise ProtocolError(
            Code.BAD_NAME, f"{kind} name is too long ({len(name)} characters, at most {limit})"
        )
    scripts: set[str] = set()
    for char in name:
        category = unicodedata.category(char)
        if category[0] == "L":
            script = _script(char)
            if script not in _NEUTRAL:
                scripts.add(script)
        elif not (category == "Nd" or char in _PUNCT or category == "Mn"):
            raise ProtocolError(
                Code.BAD_NAME,
                f"{kind} name may hold only letters, digits and _ - . (not {char!r})",
            )
    if len(scripts) > 1 and not any(scripts <= mix for mix in _ALLOWED_MIXES):
        mixed = " and ".join(sorted(s.title() for s in scripts))
        raise ProtocolError(
            Code.BAD_NAME,
            f"{kind} name mixes {mixed} letters, which could impersonate another name",
        )
    return name


def username(raw: str) -> str:
    """The display form of a valid username (NFKC); raises ProtocolError if invalid."""
    return _check(raw, "user", MAX_USER)


def room(raw: str) -> str:
    """The canonical (case-folded) form of a valid room name; a leading `#` is dropped."""
    return _check(raw.removeprefix("#"), "room", MAX_ROOM).casefold()


def key(name: str) -> str:
    """The comparison key: two names with the same key are the same name."""
    return unicodedata.normalize("NFKC", name).strip().casefold()


def direct_room(a: str, b: str) -> str:
    """The room that holds the direct messages between two users (`@` never starts a room)."""
    first, second = sorted((key(a), key(b)))
    return f"@{first}+{second}"
