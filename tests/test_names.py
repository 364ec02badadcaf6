"""Names that cannot pass for someone else: refused with a reason, and lookalikes of names
already taken refused by the store, in the same transaction as the insert."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from onionchat import names
from onionchat.protocol import Code, ProtocolError
from onionchat.store import MIGRATIONS, Conflict, Lookalike, Store

DATA = Path(names.__file__).resolve().parent / "data"
CONFUSABLES_SHA256 = "091c7f82fc39ef208faf8f94d29c244de99254675e09de163160c810d13ef22a"
CHECKS: list[Callable[[str], str]] = [names.username, names.room]


def refusal(check: Callable[[str], str], name: str) -> str:
    with pytest.raises(ProtocolError) as caught:
        check(name)
    assert caught.value.code == Code.BAD_NAME
    return caught.value.message


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Olga\ufe0f", "U+FE0F VARIATION SELECTOR-16"),  # pixel-identical to the bot Olga
        ("Olga\u034f", "U+034F COMBINING GRAPHEME JOINER"),
        ("alice\ufe00", "U+FE00"),
        ("alice\u180b", "U+180B"),
        ("alice\U000e0100", "U+E0100 VARIATION SELECTOR-17"),
        ("alice\u17b4", "U+17B4"),
        ("\u3164", "HANGUL"),  # HANGUL FILLER alone (NFKC makes it U+1160)
        ("\u115f", "U+115F HANGUL CHOSEONG FILLER"),
        ("\u1160", "U+1160 HANGUL JUNGSEONG FILLER"),
        ("\uffa0", "HANGUL"),
        ("bo\u200bb", "U+200B ZERO WIDTH SPACE"),
        ("bo\u200db", "U+200D ZERO WIDTH JOINER"),
        ("\u2060bob", "U+2060 WORD JOINER"),
        ("bob\u00ad", "U+00AD SOFT HYPHEN"),
        ("bob\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("bob\U000e0041", "U+E0041 TAG LATIN CAPITAL LETTER A"),
    ],
)
def test_invisible_characters_are_refused(
    check: Callable[[str], str], name: str, shown: str
) -> None:
    message = refusal(check, name)
    assert "invisible character" in message and shown in message


def test_every_default_ignorable_code_point_is_refused() -> None:
    for first, last in names._IGNORABLE:
        for point in range(first, last + 1):
            assert "invisible" in refusal(names.username, f"a{chr(point)}b"), hex(point)


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("name", [".", "..", "___", "123", "-", "1.2", "_0_"])
def test_names_without_a_letter_are_refused(check: Callable[[str], str], name: str) -> None:
    assert "needs at least one letter" in refusal(check, name)


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a\u0301\u0302\u0303", "stacks more than 2 combining marks on 'a'"),
        ("\u00e1\u0302\u0303", "stacks more than 2"),  # a precomposed á counts as a + mark
        ("O\u0338\u0337l\u0338\u0337g\u0338\u0337a\u0338\u0337", "8 combining marks (at most 4"),
        ("\u0301", "not on a letter"),  # a combining mark alone
        ("\u0301\u0302", "not on a letter"),
        ("_\u0301x", "not on a letter"),
        ("1\u0301x", "not on a letter"),
        ("a\u20dd", "only letters"),  # an enclosing mark draws a symbol, not a letter
    ],
)
def test_stacked_and_stray_combining_marks_are_refused(
    check: Callable[[str], str], name: str, reason: str
) -> None:
    assert reason in refusal(check, name)


def test_a_longer_name_may_have_a_mark_on_every_letter() -> None:
    names.username("b\u0301" * 6)  # 6 letters, 6 marks
    message = refusal(names.username, "b\u0301\u0301" * 2 + "b\u0301")
    assert "5 combining marks (at most 4 here)" in message
    message = refusal(names.username, "b\u0301\u0301" * 4 + "bb")
    assert "8 combining marks (at most 6 here)" in message


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("b०b", "mixes Devanagari digits with Latin letters"),
        ("bob१", "mixes Devanagari digits with Latin letters"),
        ("Ольга٣", "mixes Arabic digits with Cyrillic letters"),
        ("b1१", "mixes digits of different number systems ('1' and '१')"),
        ("राम1१", "mixes digits of different number systems"),
        ("محمد١۲", "mixes digits of different number systems"),  # Arabic-Indic and Persian
    ],
)
def test_mixed_digit_systems_are_refused(
    check: Callable[[str], str], name: str, reason: str
) -> None:
    assert reason in refusal(check, name)


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Оlga", "mixes Cyrillic and Latin letters"),
        ("lоbby", "mixes Cyrillic and Latin letters"),
        ("two words", "only letters, digits and _ - ."),
        ("", "empty"),
    ],
)
def test_what_was_refused_before_still_is(
    check: Callable[[str], str], name: str, reason: str
) -> None:
    assert reason in refusal(check, name)


@pytest.mark.parametrize(
    "name",
    [
        "Ольга",
        "Дмитрий",
        "Светлана",
        "山田たろう",
        "Straße",
        "José",
        "Αλέξης",
        "Nguyễn",
        "सुब्रह्मण्यम्",  # 8 letters, 5 marks
        "สมศักดิ์",
        "がぎぐげご",  # in NFD, a voiced mark on every letter
        "राम१२",  # Devanagari digits with Devanagari letters
        "محمد۱۲",
        "writer0",
        "a_b-c.d",
        "O\u0338l\u0338g\u0338a\u0338",  # one mark on each letter: allowed, and no Olga
    ],
)
def test_single_script_names_stay_welcome(name: str) -> None:
    assert names.username(name) == name
    assert names.room(name) == name.casefold()


def test_decomposed_input_is_the_same_name() -> None:
    assert names.username("Jose\u0301") == "José" == names.username("José")
    assert names.room("#Jose\u0301") == "josé"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("сор", "cop"),  # whole-script Cyrillic
        ("МАХ", "MAX"),
        ("МАХ", "max"),  # case aside: Cyrillic capitals look like Latin ones
        ("Мах", "Max"),
        ("соре", "cope"),
        ("rn", "m"),  # a prototype of two characters
        ("0lga", "Olga"),
        ("OIga", "Olga"),
        ("Olga\ufe0f", "Olga"),  # invisibles count for nothing (rows from before the rule)
        ("ｃｏｐ", "cop"),
    ],
)
def test_lookalikes_have_the_same_skeleton(a: str, b: str) -> None:
    assert names.skeleton(a) == names.skeleton(b)


@pytest.mark.parametrize(("a", "b"), [("Ольга", "Olga"), ("мах", "max"), ("alice", "alicia")])
def test_different_looking_names_have_different_skeletons(a: str, b: str) -> None:
    assert names.skeleton(a) != names.skeleton(b)


def test_a_skeleton_is_settled() -> None:
    for name in ("МАХ", "Ϛ", "ꮗ", "rnax", "Olga", "山田たろう"):
        assert names.skeleton(names.skeleton(name)) == names.skeleton(name)


def test_lookalike_finds_the_name_it_could_pass_for() -> None:
    bots = ["Olga", "Max"]
    assert names.lookalike("0lga", bots) == "Olga"
    assert names.lookalike("МАХ", bots) == "Max"  # whole-script Cyrillic capitals
    assert names.lookalike("OLGA", bots) is None  # the same name: not a lookalike of it
    assert names.lookalike("Ольга", bots) is None


def test_the_vendored_confusables_are_unicode_17_unchanged() -> None:
    data = (DATA / "confusables.txt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == CONFUSABLES_SHA256
    assert b"\n# Version: 17.0.0\n" in data[:1000]
    assert CONFUSABLES_SHA256 in (DATA / "README.md").read_text()
    assert names._prototypes()[ord("m")] == "rn"
    assert names._prototypes()[ord("с")] == "c"


# -- the store ----------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "node.db")
    try:
        yield opened
    finally:
        await opened.close()


async def new_user(store: Store, name: str, *, bot: bool = False) -> None:
    name = names.username(name)
    await store.create_user(name, names.key(name), bytes(16), 1000, "hash", bot=bot)


@pytest.mark.parametrize(("first", "second"), [("cop", "сор"), ("сор", "cop"), ("MAX", "МАХ")])
async def test_a_lookalike_of_a_user_is_refused(store: Store, first: str, second: str) -> None:
    await new_user(store, first)
    with pytest.raises(Lookalike) as caught:
        await new_user(store, second)
    assert caught.value.existing == first
    assert await store.user_by_key(names.key(second)) is None  # the insert was undone


async def test_the_same_name_is_still_a_plain_conflict(store: Store) -> None:
    await new_user(store, "MAX")
    with pytest.raises(Conflict) as caught:
        await new_user(store, "max")
    assert type(caught.value) is Conflict


async def test_a_bot_account_may_look_like_a_user(store: Store) -> None:
    await new_user(store, "0lga")
    await new_user(store, "Olga", bot=True)
    assert await store.user_by_key("olga") is not None


async def test_two_lookalikes_at_once_cannot_both_get_in(store: Store) -> None:
    results = await asyncio.gather(
        new_user(store, "cop"), new_user(store, "сор"), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["Lookalike", "NoneType"]


async def test_a_lookalike_of_a_room_is_refused(store: Store) -> None:
    await store.create_room(names.room("cope"), False)
    with pytest.raises(Lookalike) as caught:
        await store.create_room(names.room("соре"), False)  # whole-script Cyrillic
    assert caught.value.existing == "cope"
    assert await store.room("соре") is None
    with pytest.raises(ProtocolError, match="mixes Cyrillic and Latin"):
        names.room("lоbby")  # a Cyrillic о among Latin letters never gets this far
    with pytest.raises(Conflict) as same:
        await store.create_room("cope", True)
    assert type(same.value) is Conflict


async def test_direct_message_rooms_are_not_compared(store: Store) -> None:
    await store.create_room("@cop+max", False)
    await store.create_room("@max+сор", False)
    assert await store.room("@max+сор") is not None


async def test_the_migration_fills_the_skeletons_of_old_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        old.executescript(script)
    old.execute("PRAGMA user_version = 2")
    users = [("MAX", "max"), ("Olga\ufe0f", "olga\ufe0f"), ("Дмитрий", "дмитрий")]
    for name, key in users:
        old.execute(
            "INSERT INTO users (name, key, salt, iterations, hash, created) "
            "VALUES (?, ?, x'00', 1000, 'hash', 0)",
            (name, key),
        )
    for room in ("cope", "@max+olga"):
        old.execute("INSERT INTO rooms (name, protected, created) VALUES (?, 0, 0)", (room,))
    old.commit()
    old.close()

    store = await Store.open(path)
    try:
        with pytest.raises(Lookalike, match="MAX"):
            await new_user(store, "МАХ")
        with pytest.raises(Lookalike, match="Olga"):
            await new_user(store, "0lga")
        with pytest.raises(Lookalike, match="cope"):
            await store.create_room("соре", False)
    finally:
        await store.close()

    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        for name, skeleton in db.execute("SELECT name, skeleton FROM users"):
            assert skeleton == names.skeleton(name)
        rooms = dict(db.execute("SELECT name, skeleton FROM rooms"))
        assert rooms == {"cope": names.skeleton("cope"), "@max+olga": None}
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"users_skeleton", "rooms_skeleton"} <= indexes
    finally:
        db.close()
