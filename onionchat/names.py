"""User and room names: normalised, length-limited, and not able to impersonate one another.

Names are NFKC-normalised and compared case-insensitively (`casefold`). A name must hold a
letter. Letters may come from any script, but not from several in one name, so that `Оlga`
(a Cyrillic `О` followed by Latin letters) cannot pass for `Olga`: this is Unicode TS #39's
"highly restrictive" level, which still allows the usual mixes of Han with Hiragana/Katakana
or Hangul. The digits of a name are all of one digit system, and digits other than ASCII
are of the letters' script (`b०b`, Latin with a Devanagari zero, is refused). Invisible
characters (Default_Ignorable_Code_Point: variation selectors, zero-width characters, the
Hangul fillers) are refused anywhere, and so are stacks of combining marks ("Zalgo").

A valid name can still look like another one as a whole (`сор` in Cyrillic and `cop` in
Latin): `skeleton` gives the TS #39 confusable skeleton, which the store compares so that a
new name cannot look like one already there, and `lookalike` compares a name with others
(a bot's name and aliases).

Data: `_IGNORABLE` is Default_Ignorable_Code_Point from DerivedCoreProperties.txt of Unicode
17.0.0 (the same set since 14.0.0, the version of Python 3.11's unicodedata); the prototypes
come from confusables.txt Version 17.0.0 (UTS #39), vendored unchanged in onionchat/data/.
"""

from __future__ import annotations

import bisect
import functools
import unicodedata
from collections.abc import Iterable
from importlib import resources

from confusable_homoglyphs import categories

from onionchat.i18n import say
from onionchat.protocol import Code, ProtocolError

MAX_USER = 32
MAX_ROOM = 64
# Combining marks, counted in NFD (so `é` is `e` and a mark): at most 2 on one letter
# (Vietnamese `ễ`, Thai `ดิ์`), and at most 4 in a name or, in a longer one, as many as it has
# letters (Devanagari `सुब्रह्मण्यम्` has 8 letters and 5 marks). Zalgo stacks far more.
MAX_MARKS_PER_LETTER = 2
MAX_MARKS = 4
_PUNCT = frozenset("_-.")
_LETTERS = frozenset({"Lu", "Ll", "Lt", "Lo"})  # not Lm: `ー` or `ʰ` alone is no name
_NEUTRAL = frozenset({"Common", "Inherited", "Zyyy", "Zinh", "COMMON", "INHERITED"})
_ALLOWED_MIXES = (
    frozenset({"HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"HAN", "HANGUL"}),
    frozenset({"HAN", "BOPOMOFO"}),
)
_ROUNDS = 4  # skeleton-and-casefold rounds: no character of Unicode needs more than 3
_IGNORABLE = (  # Default_Ignorable_Code_Point, DerivedCoreProperties-17.0.0.txt
    (0x00AD, 0x00AD),  # SOFT HYPHEN
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x061C, 0x061C),  # ARABIC LETTER MARK
    (0x115F, 0x1160),  # HANGUL CHOSEONG FILLER..HANGUL JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ..KHMER VOWEL INHERENT AA
    (0x180B, 0x180F),  # MONGOLIAN FREE VARIATION SELECTORS, MONGOLIAN VOWEL SEPARATOR
    (0x200B, 0x200F),  # ZERO WIDTH SPACE..RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),  # LEFT-TO-RIGHT EMBEDDING..RIGHT-TO-LEFT OVERRIDE
    (0x2060, 0x206F),  # WORD JOINER..NOMINAL DIGIT SHAPES (2065 reserved)
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xFE00, 0xFE0F),  # VARIATION SELECTOR-1..VARIATION SELECTOR-16
    (0xFEFF, 0xFEFF),  # ZERO WIDTH NO-BREAK SPACE
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0xFFF0, 0xFFF8),  # reserved
    (0x1BCA0, 0x1BCA3),  # SHORTHAND FORMAT LETTER OVERLAP..SHORTHAND FORMAT UP STEP
    (0x1D173, 0x1D17A),  # MUSICAL SYMBOL BEGIN BEAM..MUSICAL SYMBOL END PHRASE
    (0xE0000, 0xE0FFF),  # tags, VARIATION SELECTOR-17..256, reserved
)
_IGNORABLE_STARTS = tuple(first for first, _ in _IGNORABLE)


def _script(char: str) -> str:
    return str(categories.alias(char)).upper()


def _ignorable(char: str) -> bool:
    index = bisect.bisect_right(_IGNORABLE_STARTS, ord(char)) - 1
    return index >= 0 and ord(char) <= _IGNORABLE[index][1]


def _describe(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, 'unassigned')}"


def _check_marks(name: str, kind: str) -> None:
    letters = marks = stacked = 0
    base: str | None = None  # the letter that the marks being counted sit on
    for char in unicodedata.normalize("NFD", name):
        category = unicodedata.category(char)
        if category[0] != "M":
            stacked = 0
            base = char if category[0] == "L" else None
            letters += int(category in _LETTERS)
            continue
        if base is None:
            raise ProtocolError(
                Code.BAD_NAME,
                say(
                    "{kind} name has a combining mark ({describe}) that is not on a letter",
                    kind=kind,
                    describe=_describe(char),
                ),
            )
        marks, stacked = marks + 1, stacked + 1
        if stacked > MAX_MARKS_PER_LETTER:
            raise ProtocolError(
                Code.BAD_NAME,
                say(
                    "{kind} name stacks more than {most} combining marks on {letter}",
                    kind=kind,
                    most=MAX_MARKS_PER_LETTER,
                    letter=f"{unicodedata.normalize('NFC', base)!r}",
                ),
            )
    most = max(MAX_MARKS, letters)
    if marks > most:
        raise ProtocolError(
            Code.BAD_NAME,
            say(
                "{kind} name has {marks} combining marks (at most {most} here)",
                kind=kind,
                marks=marks,
                most=most,
            ),
        )
    if not letters:
        raise ProtocolError(Code.BAD_NAME, say("{kind} name needs at least one letter", kind=kind))


def _check(raw: str, kind: str, limit: int) -> str:
    """Every message names its room and its sender: a name is checked once, then remembered
    (4,096 of them, each no longer than a few times a valid name, so in a bounded space)."""
    if len(raw) > 4 * limit:
        return _checked(raw, kind, limit)
    return _remembered(raw, kind, limit)


def _checked(raw: str, kind: str, limit: int) -> str:
    name = unicodedata.normalize("NFKC", raw).strip()
    if not name:
        raise ProtocolError(Code.BAD_NAME, say("{kind} name is empty", kind=kind))
    if len(name) > limit:
        raise ProtocolError(
            Code.BAD_NAME,
            say(
                "{kind} name is too long ({n} characters, at most {limit})",
                kind=kind,
                n=len(name),
                limit=limit,
            ),
        )
    for char in name:  # NFKC keeps these invisible, and makes none from visible ones
        if _ignorable(char):
            raise ProtocolError(
                Code.BAD_NAME,
                say(
                    "{kind} name holds an invisible character ({describe}), which could make "
                    "it pass for another name",
                    kind=kind,
                    describe=_describe(char),
                ),
            )
    scripts: set[str] = set()
    zeros: dict[int, str] = {}  # the zero of each digit system used -> a digit of it
    for char in name:
        category = unicodedata.category(char)
        if category == "Nd":
            zeros.setdefault(ord(char) - unicodedata.decimal(char), char)
        elif not (category[0] == "L" or category in ("Mn", "Mc") or char in _PUNCT):
            raise ProtocolError(
                Code.BAD_NAME,
                say(
                    "{kind} name may hold only letters, digits and _ - . (not {char})",
                    kind=kind,
                    char=f"{char!r}",
                ),
            )
        if category[0] in "LM" and (script := _script(char)) not in _NEUTRAL:
            scripts.add(script)
    _check_marks(name, kind)
    if len(scripts) > 1 and not any(scripts <= mix for mix in _ALLOWED_MIXES):
        mixed = " and ".join(sorted(s.title() for s in scripts))
        raise ProtocolError(
            Code.BAD_NAME,
            say(
                "{kind} name mixes {mixed} letters, which could impersonate another name",
                kind=kind,
                mixed=mixed,
            ),
        )
    if len(zeros) > 1:
        digits = " and ".join(repr(d) for d in sorted(zeros.values()))
        raise ProtocolError(
            Code.BAD_NAME,
            say(
                "{kind} name mixes digits of different number systems ({digits})",
                kind=kind,
                digits=digits,
            ),
        )
    for zero, digit in zeros.items():
        if zero != ord("0") and _script(digit) not in scripts:
            theirs = " and ".join(sorted(s.title() for s in scripts))
            raise ProtocolError(
                Code.BAD_NAME,
                say(
                    "{kind} name mixes {digits} digits with {theirs} letters, which could "
                    "impersonate another name",
                    kind=kind,
                    digits=_script(digit).title(),
                    theirs=theirs,
                ),
            )
    return name


_remembered = functools.lru_cache(maxsize=4096)(_checked)


def username(raw: str) -> str:
    """The display form of a valid username (NFKC); raises ProtocolError if invalid."""
    return _check(raw, say("user"), MAX_USER)


def room(raw: str) -> str:
    """The canonical (case-folded) form of a valid room name; a leading `#` is dropped."""
    return _check(raw.removeprefix("#"), say("room"), MAX_ROOM).casefold()


def key(name: str) -> str:
    """The comparison key: two names with the same key are the same name."""
    return unicodedata.normalize("NFKC", name).strip().casefold()


@functools.cache
def _prototypes() -> dict[int, str]:
    """confusables.txt as a `str.translate` table: code point -> its prototype (1+ chars)."""
    data = resources.files("onionchat").joinpath("data").joinpath("confusables.txt")
    table: dict[int, str] = {}
    for line in data.read_text(encoding="utf-8-sig").splitlines():
        fields = line.split("#", 1)[0].split(";")
        if len(fields) >= 2:
            table[int(fields[0], 16)] = "".join(chr(int(h, 16)) for h in fields[1].split())
    return table


def _ts39(text: str) -> str:
    """UTS #39 skeleton: NFD, without default ignorables, each character mapped to its
    prototype, NFD again."""
    text = "".join(c for c in unicodedata.normalize("NFD", text) if not _ignorable(c))
    return unicodedata.normalize("NFD", text.translate(_prototypes()))


def skeleton(name: str) -> str:
    """What `name` looks like, case aside: two names with the same skeleton can pass for
    each other (`сор` and `cop`, `МАХ` and `MAX`, `rn` and `m`).

    NFKC (as for `key`), then the UTS #39 skeleton, then `casefold`, repeated until nothing
    changes. The skeleton comes before the case-folding because confusables.txt maps the
    capitals (Cyrillic `М` -> `M`) but not always their small letters (`м` -> `ʍ`); it comes
    again after, because a small letter may have a prototype of its own (`m` -> `rn`).
    """
    text = unicodedata.normalize("NFKC", name).strip()
    for _ in range(_ROUNDS):
        folded = _ts39(text).casefold()
        if folded == text:
            break
        text = folded
    return text


def lookalike(name: str, others: Iterable[str]) -> str | None:
    """The first of `others` that `name` could pass for (same skeleton, not the same name)."""
    own, mine = key(name), skeleton(name)
    return next((o for o in others if key(o) != own and skeleton(o) == mine), None)


def direct_room(a: str, b: str) -> str:
    """The room that holds the direct messages between two users (`@` never starts a room)."""
    first, second = sorted((key(a), key(b)))
    return f"@{first}+{second}"


def direct_room_there(room: str, here: str) -> tuple[str, str] | None:
    """A conversation of a user of this node (`here`) with a user of another: that node, and
    the name it gives the conversation (`@ann+bob@south` here is `@ann@north+bob` on south);
    None for a conversation of two users of this node."""
    first, _, second = room[1:].partition("+")
    remote, local = (first, second) if "@" in first else (second, first)
    user, _, node = remote.rpartition("@")
    if not user or "@" in local:
        return None
    return node, direct_room(f"{local}@{here}", user)
