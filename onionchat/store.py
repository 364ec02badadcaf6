"""SQLite storage: users, sessions, rooms, members and messages.

One writer connection (SQLite has one writer anyway) drains a queue of writes and commits
them in groups: many messages per transaction, each acknowledged only after its commit. The
writer is a plain `sqlite3` connection in a thread of its own that runs a whole group in one
call: through aiosqlite each statement was a trip between threads and a wake-up of the event
loop, seven and more a commit. A second connection (aiosqlite) reads; WAL lets it read while
the writer writes. With `synchronous=NORMAL` a commit is in the WAL before it is
acknowledged, so killing the node loses nothing it acknowledged (a power cut may lose the
last commits).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite
import msgspec

from onionchat import names
from onionchat.i18n import say
from onionchat.protocol import FileRef, Message, relation

T = TypeVar("T")
log = logging.getLogger("onionchat.store")
SLOW_COMMIT = 0.25  # seconds: past it a commit is logged

MIGRATIONS = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        key TEXT NOT NULL UNIQUE,
        salt BLOB NOT NULL,
        iterations INTEGER NOT NULL,
        hash TEXT NOT NULL,
        created INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        hash BLOB PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created INTEGER NOT NULL,
        expires INTEGER NOT NULL
    );
    CREATE INDEX sessions_expires ON sessions(expires);
    CREATE TABLE rooms (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        protected INTEGER NOT NULL,
        topic TEXT,
        topic_box TEXT,
        created INTEGER NOT NULL
    );
    CREATE TABLE members (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        joined INTEGER NOT NULL,
        PRIMARY KEY (user_id, room_id)
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        sender TEXT NOT NULL,
        text TEXT,
        box TEXT,
        me INTEGER NOT NULL DEFAULT 0,
        recipient TEXT,
        PRIMARY KEY (room_id, id)
    ) WITHOUT ROWID;
    """,
    """
    ALTER TABLE users ADD COLUMN public_key TEXT;
    ALTER TABLE users ADD COLUMN wrapped_key TEXT;
    CREATE TABLE invitations (
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        sender TEXT NOT NULL,
        sealed TEXT NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY (user_id, room_id)
    ) WITHOUT ROWID;
    """,
    # What a name looks like (names.skeleton): a new name may not look like another's.
    # Direct-message rooms (`@...`) keep NULL: their names are made, never chosen.
    """
    ALTER TABLE users ADD COLUMN skeleton TEXT;
    UPDATE users SET skeleton = onionchat_skeleton(name);
    CREATE INDEX users_skeleton ON users(skeleton);
    ALTER TABLE rooms ADD COLUMN skeleton TEXT;
    UPDATE rooms SET skeleton = onionchat_skeleton(name) WHERE name NOT LIKE '@%';
    CREATE INDEX rooms_skeleton ON rooms(skeleton);
    """,
    # Signing keys, keyrings, who set a topic and when, one invitation per inviter.
    """
    ALTER TABLE users ADD COLUMN signing_key TEXT;
    ALTER TABLE users ADD COLUMN keyring TEXT;
    ALTER TABLE users ADD COLUMN keyring_version INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE rooms ADD COLUMN topic_by TEXT;
    ALTER TABLE rooms ADD COLUMN topic_ts INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE invitations_by_sender (
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        sender TEXT NOT NULL,
        sealed TEXT NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY (user_id, room_id, sender)
    ) WITHOUT ROWID;
    INSERT INTO invitations_by_sender SELECT room_id, user_id, sender, sealed, created
        FROM invitations;
    DROP TABLE invitations;
    ALTER TABLE invitations_by_sender RENAME TO invitations;
    """,
    # Federation: the brokers each new message waits to be published to, and for a message
    # from another node, that node's id and its signature (to be passed on in repairs).
    """
    CREATE TABLE outbox (
        broker TEXT NOT NULL,
        room_id INTEGER NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY (broker, room_id, id),
        FOREIGN KEY (room_id, id) REFERENCES messages(room_id, id) ON DELETE CASCADE
    ) WITHOUT ROWID;
    ALTER TABLE messages ADD COLUMN origin TEXT;
    ALTER TABLE messages ADD COLUMN signature BLOB;
    CREATE TABLE peer_keys (
        name TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        signing_key TEXT,
        updated INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # Order: a node role per account (an upgraded node gets no admin by itself: an operator
    # names one with `onionchat admin grant`), room roles by user key, sanctions (kicks, bans
    # and mutes, in a room or node-wide as room 0) and the audit log of moderation.
    """
    ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
    ALTER TABLE rooms ADD COLUMN modes TEXT;
    CREATE TABLE room_roles (
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        user_key TEXT NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (room_id, user_key)
    ) WITHOUT ROWID;
    CREATE TABLE sanctions (
        room_id INTEGER NOT NULL,
        user_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        until INTEGER,
        by TEXT NOT NULL,
        reason TEXT,
        created INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_key, kind)
    ) WITHOUT ROWID;
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        room TEXT,
        detail TEXT
    );
    CREATE INDEX audit_room ON audit(room, id);
    ALTER TABLE users ADD COLUMN invited_by TEXT;
    CREATE TABLE tombstones (
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        PRIMARY KEY (room_id, id)
    ) WITHOUT ROWID;
    CREATE TABLE invite_codes (
        hash BLOB PRIMARY KEY,
        label TEXT NOT NULL,
        inviter TEXT NOT NULL,
        uses INTEGER NOT NULL,
        used INTEGER NOT NULL DEFAULT 0,
        expires INTEGER NOT NULL,
        created INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # Replies, edits and reactions: the message each relates to, and how; the language each
    # account's pages speak; files, each with its message once sent.
    """
    ALTER TABLE messages ADD COLUMN rel TEXT;
    ALTER TABLE messages ADD COLUMN target TEXT;
    CREATE INDEX messages_target ON messages(room_id, target) WHERE target IS NOT NULL;
    ALTER TABLE users ADD COLUMN lang TEXT;
    ALTER TABLE messages ADD COLUMN file TEXT;
    CREATE TABLE files (
        id TEXT PRIMARY KEY,
        room_id INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        uploader TEXT NOT NULL,
        size INTEGER NOT NULL,
        created INTEGER NOT NULL,
        message TEXT
    ) WITHOUT ROWID;
    CREATE INDEX files_message ON files(room_id, message);
    CREATE INDEX files_uploader ON files(uploader);
    CREATE INDEX files_created ON files(created);
    CREATE INDEX messages_file ON messages(room_id, json_extract(file, '$.id'))
        WHERE file IS NOT NULL;
    """,
]
INVITERS = 16  # invitations one user keeps for one room, from different inviters, at most
DRAIN = 10.0  # seconds a closing store waits for the writes handed to it to commit


def _room(row: Any) -> Room:
    modes = Modes() if row[7] is None else Modes(**json.loads(row[7]))
    return Room(row[0], row[1], bool(row[2]), row[3], row[4], row[5], int(row[6]), modes)


class Conflict(Exception):
    """A unique name is already taken."""


class NotAdmitted(Exception):
    """A registration the node's mode refuses: closed, or an invite code missing, unknown,
    used up or expired."""


class Lookalike(Conflict):
    """A new name is not taken but looks like one that is (the same `names.skeleton`)."""

    def __init__(self, existing: str) -> None:
        super().__init__(f"the name looks like {existing!r}")
        self.existing = existing


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    salt: bytes
    iterations: int
    hash: str
    role: str = "member"  # on the node: admin, moderator, member, guest, or bot
    created: int = 0  # Unix seconds
    lang: str | None = None  # the language the account chose for its pages (None: the browser's)


@dataclasses.dataclass(frozen=True, slots=True)
class Modes:
    """What a room's staff set: who may enter and speak, and for how long words are kept."""

    invite: bool = False  # only its members, those allowed in and staff may join
    moderated: bool = False  # only voiced members and staff speak
    limit: int = 0  # at most this many present at once (0: no limit)
    slow: int = 0  # seconds between a member's messages (0: off)
    expiry: int = 0  # hours a message is kept (0: for ever)
    lockdown: bool = False  # invite-only and moderated at once


@dataclasses.dataclass(frozen=True, slots=True)
class StoredFile:
    """An uploaded file: whose, where, how big; the message that carries it, once sent."""

    id: str
    room_id: int
    uploader: str  # the uploader's key
    size: int
    created: int  # Unix seconds
    message: str | None = None


class OverQuota(Exception):
    """An upload past what one user or one room may keep."""


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """The message a reply, an edit or a reaction is about."""

    sender: str
    me: bool
    rel: str | None  # its own relation: an edit or a reaction is no target
    deleted: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Room:
    id: int
    name: str
    protected: bool
    topic: str | None = None
    topic_box: str | None = None
    topic_by: str | None = None
    topic_ts: int = 0
    modes: Modes = Modes()


@dataclasses.dataclass(frozen=True, slots=True)
class Published:
    """A user's keys as their client published them (None until it has)."""

    name: str
    public: str | None
    wrapped: str | None
    signing: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class Sanction:
    """A kick (until its end), a ban or a mute of a user in a room, or node-wide (room 0);
    `until` in ms since the epoch, None for ever."""

    room_id: int
    user_key: str
    kind: str
    until: int | None
    by: str
    reason: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEntry:
    """One act of moderation: who, what, to whom, where, when; never a message's words."""

    ts: int
    actor: str
    action: str
    target: str | None = None
    room: str | None = None
    detail: str | None = None


@dataclasses.dataclass(slots=True)
class _Write:
    future: asyncio.Future[Any]
    message: tuple[Any, ...] | None = None
    op: Callable[[sqlite3.Connection], Any] | None = None  # run in the writer's thread
    outbox: Sequence[str] = ()  # the brokers a new message is to be published to
    alone: bool = False  # run outside any transaction (a checkpoint)


_INSERT_MESSAGE = (
    "INSERT OR IGNORE INTO messages "
    "(room_id, id, ts, sender, text, box, me, recipient, origin, signature, rel, target, file) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_HUMAN = "SELECT 1 FROM users WHERE role != 'bot' LIMIT 1"


def _use_invite(db: sqlite3.Connection, code_hash: bytes | None) -> str:
    """Count one use of an invite code; who made it."""
    if code_hash is None:
        raise NotAdmitted("this node takes new accounts with an invite code only")
    row = db.execute(
        "UPDATE invite_codes SET used = used + 1 "
        "WHERE hash = ? AND used < uses AND expires > ? RETURNING inviter",
        (code_hash, _now()),
    ).fetchone()
    if row is None:
        raise NotAdmitted("that invite code is unknown, used up or expired")
    return str(row[0])


_INSERT_OUTBOX = "INSERT OR IGNORE INTO outbox (broker, room_id, id) VALUES (?, ?, ?)"


_STORED = (
    "SELECT m.room_id, m.id FROM json_each(?1) AS k JOIN messages AS m "
    "ON m.room_id = json_extract(k.value, '$[0]') AND m.id = json_extract(k.value, '$[1]') "
    "UNION ALL SELECT t.room_id, t.id FROM json_each(?1) AS k JOIN tombstones AS t "
    "ON t.room_id = json_extract(k.value, '$[0]') AND t.id = json_extract(k.value, '$[1]')"
)


def _insert_messages(db: sqlite3.Connection, writes: list[_Write]) -> list[bool]:
    """Insert a batch of messages, and say which were new: one query finds those stored
    before (in this transaction, so nothing can slip in between), a repeat within the batch is
    not new either, and only new ones get outbox rows."""
    rows = [w.message for w in writes if w.message is not None]
    keys = [(row[0], row[1]) for row in rows]
    stored = {(row[0], row[1]) for row in db.execute(_STORED, (json.dumps(keys),))}
    new: list[bool] = []
    for key in keys:
        new.append(key not in stored)
        stored.add(key)
    db.executemany(_INSERT_MESSAGE, [row for row, n in zip(rows, new, strict=True) if n])
    outbox = [
        (broker, *key)
        for write, key, n in zip(writes, keys, new, strict=True)
        if n
        for broker in write.outbox
    ]
    if outbox:
        db.executemany(_INSERT_OUTBOX, outbox)
    return new


Outcome = tuple[_Write, Any, BaseException | None]


def _commit(db: sqlite3.Connection, batch: list[_Write]) -> list[Outcome]:
    """One transaction for the whole batch, in the writer's thread: the messages first, then
    each op in a savepoint of its own, so that one op's failure is only its own."""
    results: list[Outcome] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        writes = [w for w in batch if w.message is not None]
        if writes:
            new = _insert_messages(db, writes)
            results.extend((w, is_new, None) for w, is_new in zip(writes, new, strict=True))
        for write in batch:
            if write.op is None or write.alone:
                if write.message is None and write.op is None:
                    results.append((write, None, None))
                continue
            db.execute("SAVEPOINT op")
            try:
                value = write.op(db)
            except sqlite3.IntegrityError as exc:
                db.execute("ROLLBACK TO op")
                results.append((write, None, Conflict(str(exc))))
            except Exception as exc:
                db.execute("ROLLBACK TO op")
                results.append((write, None, exc))
            else:
                results.append((write, value, None))
            db.execute("RELEASE op")
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            db.execute("ROLLBACK")
        raise
    for write in batch:
        if write.alone and write.op is not None:
            try:
                results.append((write, write.op(db), None))
            except Exception as exc:
                results.append((write, None, exc))
    return results


def _now() -> int:
    return int(time.time())


def _open_writer(path: Path) -> sqlite3.Connection:
    """In the writer's thread, which alone uses the connection from then on."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA secure_delete=ON")  # what is deleted is overwritten, not left
        # for the migration that fills the skeleton columns of existing rows
        db.create_function("onionchat_skeleton", 1, names.skeleton, deterministic=True)
        _migrate(db, path)
    except BaseException:
        db.close()
        raise
    return db


async def _open_reader(path: Path) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, isolation_level=None)
    await db.execute("PRAGMA busy_timeout=5000")
    await db.execute("PRAGMA foreign_keys=ON")
    return db


class Store:
    def __init__(
        self,
        writer: sqlite3.Connection,
        thread: concurrent.futures.ThreadPoolExecutor,
        reader: aiosqlite.Connection,
    ) -> None:
        self._writer = writer
        self._thread = thread  # the writer's: one thread, which alone touches `writer`
        self._reader = reader
        self._queue: asyncio.Queue[_Write] = asyncio.Queue()
        self._task = asyncio.create_task(self._write_loop(), name="store-writer")

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating, migrating) the database; the files are readable by the owner only."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        loop = asyncio.get_running_loop()
        thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        old_umask = os.umask(0o077)
        try:
            writer = await loop.run_in_executor(thread, _open_writer, path)
            try:
                reader = await _open_reader(path)
            except BaseException:
                await loop.run_in_executor(thread, writer.close)
                raise
        except BaseException:
            thread.shutdown(wait=False)
            raise
        finally:
            os.umask(old_umask)
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{path}{suffix}", 0o600)
        return cls(writer, thread, reader)

    async def close(self) -> None:
        """What was handed to the writer is committed first (a message acknowledged or about
        to be is never lost to a stop), for at most DRAIN seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), DRAIN)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._reader.close()
        await asyncio.get_running_loop().run_in_executor(self._thread, self._writer.close)
        self._thread.shutdown(wait=True)

    # -- writes ---------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            started = time.monotonic()
            try:
                results = await loop.run_in_executor(self._thread, _commit, self._writer, batch)
            except Exception as exc:  # the database itself failed: every caller hears of it
                results = [(write, None, exc) for write in batch]
            finally:
                for _ in batch:
                    self._queue.task_done()
            for write, value, failure in results:
                if write.future.done():
                    continue
                if failure is None:
                    write.future.set_result(value)
                else:
                    write.future.set_exception(failure)
            self._timed(time.monotonic() - started, len(batch))

    def _timed(self, seconds: float, writes: int) -> None:
        """Every message waits for its commit before anyone sees it: a slow one (a disk that
        stalls, a checkpoint's flush) holds the whole node, and the operator is told."""
        if seconds >= SLOW_COMMIT:
            log.warning(
                "a commit took %.2f s (%d writes waited for it)",
                seconds,
                writes,
                extra={"event": "slow_commit", "seconds": round(seconds, 3), "writes": writes},
            )

    async def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(future, op=op))
        return await future

    async def add_message(
        self,
        room_id: int,
        message: Message,
        outbox: Sequence[str] = (),
        origin: str | None = None,
        signature: bytes | None = None,
    ) -> bool:
        """Whether the message is new, once it is committed (`queue_message`, awaited)."""
        return await self.queue_message(room_id, message, outbox, origin, signature)

    def queue_message(
        self,
        room_id: int,
        message: Message,
        outbox: Sequence[str] = (),
        origin: str | None = None,
        signature: bytes | None = None,
    ) -> asyncio.Future[bool]:
        """Hand a message to the writer now, so that messages are stored in the order they
        were queued; the future says whether it was new, once committed. A copy of one stored
        (its id in its room) changes nothing; a new one gets an outbox row for each of `outbox`
        (the brokers it is to be published to) in the same transaction. A message from
        another node keeps that node's id and signature."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        rel, target = relation(message) or (None, None)
        row = (
            room_id,
            message.id,
            message.ts,
            message.sender,
            message.text,
            message.box,
            int(message.me),
            message.to,
            origin,
            signature,
            rel,
            target,
            None if message.file is None else msgspec.json.encode(message.file).decode(),
        )
        self._queue.put_nowait(_Write(future, message=row, outbox=outbox))
        return future

    async def create_user(
        self,
        name: str,
        key: str,
        salt: bytes,
        iterations: int,
        hash: str,
        *,
        bot: bool = False,
        guest: bool = False,
        admission: str = "open",
        invite: bytes | None = None,
    ) -> User:
        """Raises Conflict if the name (its key) is taken, and Lookalike if it looks like
        another user's name, unless it is a bot's account (whose name the operator chose).
        The first account of a node that has none but bots' is its admin, whatever the
        `admission` (the registration mode: `open`, `waiting`, `invite` with the hash of a
        code, `closed`), which refuses the others with NotAdmitted: all in one transaction,
        so that two first registrations cannot both be, nor a code be used more than it may."""
        skeleton = names.skeleton(name)

        def op(db: sqlite3.Connection) -> tuple[int, str]:
            first = not bot and not guest and not db.execute(_HUMAN).fetchone()
            role = "bot" if bot else "guest" if guest else "admin" if first else "member"
            inviter = None
            if not first and not bot and not guest:
                if admission == "closed":
                    raise NotAdmitted("this node takes no new accounts")
                if admission == "waiting":
                    role = "waiting"
                if admission == "invite":
                    inviter = _use_invite(db, invite)
            cursor = db.execute(
                "INSERT INTO users "
                "(name, key, salt, iterations, hash, created, skeleton, role, invited_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, key, salt, iterations, hash, _now(), skeleton, role, inviter),
            )
            assert cursor.lastrowid is not None
            if not bot:
                _refuse_lookalike(db, "users", skeleton, cursor.lastrowid)
            return cursor.lastrowid, role

        user_id, role = await self._write(op)
        return User(user_id, name, salt, iterations, hash, role, _now())

    async def delete_idle_guests(self) -> int:
        """Guests whose sessions have all ended go, their accounts with them (their words
        stay, under the name they had)."""

        def op(db: sqlite3.Connection) -> int:
            return db.execute(
                "DELETE FROM users WHERE role = 'guest' AND NOT EXISTS (SELECT 1 FROM sessions "
                "WHERE sessions.user_id = users.id AND sessions.expires > ?)",
                (_now(),),
            ).rowcount

        return await self._write(op)

    async def has_humans(self) -> bool:
        return await self._one(_HUMAN, ()) is not None

    async def add_invite(
        self, code_hash: bytes, label: str, inviter: str, uses: int, expires: int, most: int
    ) -> bool:
        """A new invite code, unless the inviter already has `most` that can still be used."""

        def op(db: sqlite3.Connection) -> bool:
            live = db.execute(
                "SELECT count(*) FROM invite_codes WHERE inviter = ? AND used < uses "
                "AND expires > ?",
                (inviter, _now()),
            ).fetchone()[0]
            if live >= most:
                return False
            db.execute(
                "INSERT INTO invite_codes (hash, label, inviter, uses, expires, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (code_hash, label, inviter, uses, expires, _now()),
            )
            return True

        return await self._write(op)

    async def invite_valid(self, code_hash: bytes) -> bool:
        row = await self._one(
            "SELECT 1 FROM invite_codes WHERE hash = ? AND used < uses AND expires > ?",
            (code_hash, _now()),
        )
        return row is not None

    async def invites(self, inviter: str | None) -> list[tuple[str, str, int, int, int]]:
        """(label, inviter, used, uses, expires) of the codes of one inviter, or of all."""
        rows = await self._all(
            "SELECT label, inviter, used, uses, expires FROM invite_codes "
            "WHERE ? IS NULL OR inviter = ? ORDER BY created",
            (inviter, inviter),
        )
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def revoke_invite(self, label: str, inviter: str | None) -> int:
        def op(db: sqlite3.Connection) -> int:
            sql = "UPDATE invite_codes SET uses = used WHERE label = ? AND used < uses"
            args: tuple[Any, ...] = (label,)
            if inviter is not None:
                sql, args = sql + " AND inviter = ?", (label, inviter)
            return db.execute(sql, args).rowcount

        return await self._write(op)

    async def waiting(self) -> list[str]:
        rows = await self._all("SELECT name FROM users WHERE role = 'waiting' ORDER BY id")
        return [r[0] for r in rows]

    async def create_session(self, token_hash: bytes, user_id: int, expires: int) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO sessions (hash, user_id, created, expires) VALUES (?, ?, ?, ?)",
                (token_hash, user_id, _now(), expires),
            )

        await self._write(op)

    async def delete_session(self, token_hash: bytes) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM sessions WHERE hash = ?", (token_hash,))

        await self._write(op)

    async def delete_expired_sessions(self) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM sessions WHERE expires <= ?", (_now(),))

        await self._write(op)

    async def create_room(self, name: str, protected: bool, owner: str | None = None) -> Room:
        """Raises Conflict if the room exists, and Lookalike if its name looks like another
        room's; direct-message rooms (`@...`) are not compared. `owner` (a user key) owns it
        from its first moment."""
        skeleton = None if name.startswith("@") else names.skeleton(name)

        def op(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "INSERT INTO rooms (name, protected, created, skeleton) VALUES (?, ?, ?, ?)",
                (name, int(protected), _now(), skeleton),
            )
            assert cursor.lastrowid is not None
            if skeleton is not None:
                _refuse_lookalike(db, "rooms", skeleton, cursor.lastrowid)
            if owner is not None:
                db.execute(
                    "INSERT INTO room_roles (room_id, user_key, role) VALUES (?, ?, 'owner')",
                    (cursor.lastrowid, owner),
                )
            return cursor.lastrowid

        return Room(await self._write(op), name, protected)

    async def set_topic(
        self, room_id: int, text: str | None, box: str | None, by: str | None, ts: int
    ) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE rooms SET topic = ?, topic_box = ?, topic_by = ?, topic_ts = ? "
                "WHERE id = ?",
                (text, box, by, ts, room_id),
            )

        await self._write(op)

    async def set_member(self, user_id: int, room_id: int, member: bool) -> bool:
        """Whether it changed anything (a member who was not one, or the other way)."""

        def op(db: sqlite3.Connection) -> bool:
            if member:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO members (user_id, room_id, joined) VALUES (?, ?, ?)",
                    (user_id, room_id, _now()),
                )
            else:
                cursor = db.execute(
                    "DELETE FROM members WHERE user_id = ? AND room_id = ?", (user_id, room_id)
                )
            return cursor.rowcount > 0

        return await self._write(op)

    async def set_modes(self, room_id: int, modes: Modes) -> None:
        def op(db: sqlite3.Connection) -> None:
            value = None if modes == Modes() else json.dumps(dataclasses.asdict(modes))
            db.execute("UPDATE rooms SET modes = ? WHERE id = ?", (value, room_id))

        await self._write(op)

    async def set_identity(
        self, user_id: int, public: str, wrapped: str, signing: str | None
    ) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE users SET public_key = ?, wrapped_key = ?, signing_key = ? WHERE id = ?",
                (public, wrapped, signing, user_id),
            )

        await self._write(op)

    async def add_file(self, file: StoredFile, user_bytes: int | None, room_bytes: int) -> None:
        """A new upload (or a file fetched from another node, `user_bytes` None), unless it
        would take its uploader or its room past their bytes (counted in the same
        transaction, so that uploads at once cannot slip past)."""

        def op(db: sqlite3.Connection) -> None:
            (mine,) = db.execute(
                "SELECT coalesce(sum(size), 0) FROM files WHERE uploader = ?", (file.uploader,)
            ).fetchone()
            if user_bytes is not None and mine + file.size > user_bytes:
                raise OverQuota(
                    say(
                        "you keep {size} of files here, at most {max}: delete some, or wait "
                        "for them to expire",
                        size=_mib(mine),
                        max=_mib(user_bytes),
                    )
                )
            (theirs,) = db.execute(
                "SELECT coalesce(sum(size), 0) FROM files WHERE room_id = ?", (file.room_id,)
            ).fetchone()
            if theirs + file.size > room_bytes:
                raise OverQuota(say("this room keeps {max} of files at most", max=_mib(room_bytes)))
            db.execute(
                "INSERT INTO files (id, room_id, uploader, size, created, message) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (file.id, file.room_id, file.uploader, file.size, file.created, file.message),
            )

        await self._write(op)

    async def message_of_file(self, room: Room, file_id: str) -> Message | None:
        """The message that carries this file in the room."""
        row = await self._one(
            _ROWS + "WHERE room_id = ? AND json_extract(file, '$.id') = ? AND file IS NOT NULL",
            (room.id, file_id),
        )
        return None if row is None else _message(row, room.name)

    async def file(self, id_: str) -> StoredFile | None:
        row = await self._one(
            "SELECT id, room_id, uploader, size, created, message FROM files WHERE id = ?", (id_,)
        )
        return None if row is None else StoredFile(*row)

    async def attach_file(self, id_: str, message: str) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute("UPDATE files SET message = ? WHERE id = ?", (message, id_))

        await self._write(op)

    async def delete_files_of(self, room_id: int, messages: list[str]) -> list[str]:
        """The files of these messages, gone from the database: their ids, to unlink."""

        def op(db: sqlite3.Connection) -> list[str]:
            return [
                r[0]
                for r in db.execute(
                    "DELETE FROM files WHERE room_id = ? AND message IN "
                    "(SELECT value FROM json_each(?)) RETURNING id",
                    (room_id, json.dumps(messages)),
                )
            ]

        return await self._write(op)

    async def delete_expired_files(self, unsent: int, sent: int | None) -> list[str]:
        """Uploads no message took since `unsent`, and files sent before `sent` (Unix s)."""

        def op(db: sqlite3.Connection) -> list[str]:
            return [
                r[0]
                for r in db.execute(
                    "DELETE FROM files WHERE (message IS NULL AND created < ?) "
                    "OR (? IS NOT NULL AND created < ?) RETURNING id",
                    (unsent, sent, sent),
                )
            ]

        return await self._write(op)

    async def set_lang(self, user_id: int, lang: str | None) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute("UPDATE users SET lang = ? WHERE id = ?", (lang, user_id))

        await self._write(op)

    async def set_keyring(self, user_id: int, sealed: str, version: int) -> int | None:
        """Store the keyring if `version` follows the stored one (None); if not, the version
        stored, untouched."""

        def op(db: sqlite3.Connection) -> int | None:
            cursor = db.execute(
                "UPDATE users SET keyring = ?, keyring_version = ? "
                "WHERE id = ? AND keyring_version = ?",
                (sealed, version, user_id, version - 1),
            )
            if cursor.rowcount:
                return None
            found = db.execute("SELECT keyring_version FROM users WHERE id = ?", (user_id,))
            row = found.fetchone()
            return int(row[0]) if row else 0

        result: int | None = await self._write(op)
        return result

    async def put_invitation(self, room_id: int, user_id: int, sender: str, sealed: str) -> None:
        """One invitation per inviter, user and room (a new one from the same inviter replaces
        theirs, never another's), and at most INVITERS per user and room, the oldest out."""

        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO invitations (room_id, user_id, sender, sealed, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (room_id, user_id, sender, sealed, _now()),
            )
            db.execute(
                "DELETE FROM invitations WHERE room_id = ? AND user_id = ? AND sender NOT IN "
                "(SELECT sender FROM invitations WHERE room_id = ? AND user_id = ? "
                "ORDER BY created DESC LIMIT ?)",
                (room_id, user_id, room_id, user_id, INVITERS),
            )

        await self._write(op)

    async def delete_invitation(self, room_id: int, user_id: int) -> bool:
        def op(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "DELETE FROM invitations WHERE room_id = ? AND user_id = ?", (room_id, user_id)
            )
            return cursor.rowcount > 0

        return await self._write(op)

    async def put_meta(self, key: str, value: bytes) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

        await self._write(op)

    # -- order: roles, sanctions, the audit log, deletions ---------------------------------

    async def set_role(self, user_key: str, role: str) -> bool:
        """A node role (admin, moderator, member, guest); whether there is such a user."""

        def op(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE users SET role = ? WHERE key = ? AND role != 'bot'", (role, user_key)
            )
            return cursor.rowcount > 0

        return await self._write(op)

    async def set_room_role(self, room_id: int, user_key: str, role: str | None) -> None:
        def op(db: sqlite3.Connection) -> None:
            if role is None:
                db.execute(
                    "DELETE FROM room_roles WHERE room_id = ? AND user_key = ?",
                    (room_id, user_key),
                )
            else:
                db.execute(
                    "INSERT OR REPLACE INTO room_roles (room_id, user_key, role) VALUES (?, ?, ?)",
                    (room_id, user_key, role),
                )

        await self._write(op)

    async def put_sanction(self, sanction: Sanction) -> None:
        """A kick, ban or mute; one of each kind per user and room, the newest kept."""

        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO sanctions "
                "(room_id, user_key, kind, until, by, reason, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    sanction.room_id,
                    sanction.user_key,
                    sanction.kind,
                    sanction.until,
                    sanction.by,
                    sanction.reason,
                    _now(),
                ),
            )

        await self._write(op)

    async def lift_sanctions(self, room_id: int, user_key: str, kinds: Sequence[str]) -> int:
        """How many there were."""

        def op(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "DELETE FROM sanctions WHERE room_id = ? AND user_key = ? AND kind IN "
                "(SELECT value FROM json_each(?))",
                (room_id, user_key, json.dumps(list(kinds))),
            )
            return cursor.rowcount

        return await self._write(op)

    async def add_audit(self, entry: AuditEntry) -> None:
        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO audit (ts, actor, action, target, room, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (entry.ts, entry.actor, entry.action, entry.target, entry.room, entry.detail),
            )

        await self._write(op)

    async def delete_messages(self, room_id: int, ids: Sequence[str]) -> list[str]:
        """Delete these messages, their edits and reactions (and their outbox rows), and say
        which there were; their ids
        stay as tombstones, so that no copy (a redelivery, a repair) brings them back. With
        `secure_delete` their bytes are overwritten in the pages they leave; `scrub` then
        takes the old pages out of the write-ahead log."""

        def op(db: sqlite3.Connection) -> list[str]:
            found = [r[0] for r in db.execute(_DELETED, (json.dumps(list(ids)), room_id))]
            db.executemany(
                "DELETE FROM messages WHERE room_id = ? AND id = ?",
                [(room_id, id_) for id_ in found],
            )
            db.executemany(
                "INSERT OR IGNORE INTO tombstones (room_id, id) VALUES (?, ?)",
                [(room_id, id_) for id_ in found],
            )
            return found

        return await self._write(op)

    async def scrub(self) -> bool:
        """Write the log into the database and truncate it, so that what was deleted is in
        neither file; False when a reader kept it from finishing (tried again next time)."""

        def op(db: sqlite3.Connection) -> bool:
            row = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return row is not None and row[0] == 0

        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(future, op=op, alone=True))
        return await future

    async def node_roles(self) -> dict[str, str]:
        """Every account's role other than member's and bot's, by user key."""
        rows = await self._all("SELECT key, role FROM users WHERE role NOT IN ('member', 'bot')")
        return {r[0]: r[1] for r in rows}

    async def room_roles(self) -> list[tuple[str, str, str]]:
        """(room, user key, role) of every room role."""
        rows = await self._all(
            "SELECT r.name, x.user_key, x.role FROM room_roles x JOIN rooms r ON r.id = x.room_id"
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def sanctions(self, now_ms: int) -> list[Sanction]:
        """Those still running."""
        rows = await self._all(
            "SELECT room_id, user_key, kind, until, by, reason FROM sanctions "
            "WHERE until IS NULL OR until > ?",
            (now_ms,),
        )
        return [Sanction(*r) for r in rows]

    async def audit(self, room: str | None, limit: int) -> list[AuditEntry]:
        """The newest entries, oldest first: of one room, or (None) of the whole node."""
        if room is None:
            sql, args = "SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,)
        else:
            sql = "SELECT * FROM audit WHERE room = ? ORDER BY id DESC LIMIT ?"
            args = (room, limit)  # type: ignore[assignment]
        return [AuditEntry(*r[1:]) for r in reversed(await self._all(sql, args))]

    async def written_by(self, room_id: int, sender: str, limit: int, since: int) -> list[str]:
        """Ids of the newest `limit` messages of `sender` in a room, written at or after
        `since` (ms)."""
        rows = await self._all(
            "SELECT id FROM messages WHERE room_id = ? AND sender = ? AND ts >= ? "
            "ORDER BY id DESC LIMIT ?",
            (room_id, sender, since, limit),
        )
        return [r[0] for r in rows]

    async def target(self, room_id: int, id_: str) -> Target | None:
        """What a reply, an edit or a reaction needs to know of the message it is about."""
        row = await self._one(
            "SELECT sender, me, rel, 0 FROM messages WHERE room_id = ?1 AND id = ?2 "
            "UNION ALL SELECT '', 0, NULL, 1 FROM tombstones WHERE room_id = ?1 AND id = ?2",
            (room_id, id_),
        )
        return None if row is None else Target(row[0], bool(row[1]), row[2], bool(row[3]))

    async def related(self, room: Room, ids: list[str]) -> list[Message]:
        """The edits and reactions of these messages, wherever they are in the room."""
        rows = await self._all(
            "SELECT m.id, m.ts, m.sender, m.text, m.box, m.me, m.recipient, m.rel, m.target, "
            "m.file FROM json_each(?) AS k JOIN messages AS m ON m.room_id = ? "
            "AND m.target = k.value "
            "AND m.rel IN ('edit', 'react') ORDER BY m.id",
            (json.dumps(ids), room.id),
        )
        return [_message(r, room.name) for r in rows]

    async def reacted(self, room_id: int, target: str, sender: str, text: str) -> bool:
        """Whether `sender` reacted to the message with this text already (an open room's)."""
        row = await self._one(
            "SELECT 1 FROM messages WHERE room_id = ? AND target = ? AND rel = 'react' "
            "AND sender = ? AND text = ? LIMIT 1",
            (room_id, target, sender, text),
        )
        return row is not None

    async def room_members(self, room_id: int) -> list[str]:
        rows = await self._all(
            "SELECT u.name FROM members m JOIN users u ON u.id = m.user_id "
            "WHERE m.room_id = ? ORDER BY u.name LIMIT 10000",
            (room_id,),
        )
        return [r[0] for r in rows]

    async def is_member(self, user_id: int, room_id: int) -> bool:
        row = await self._one(
            "SELECT 1 FROM members WHERE user_id = ? AND room_id = ?", (user_id, room_id)
        )
        return row is not None

    async def older(self, room_id: int, ts: int, limit: int) -> list[str]:
        """Ids of the oldest messages of a room written before `ts` (ms)."""
        rows = await self._all(
            "SELECT id FROM messages WHERE room_id = ? AND ts < ? ORDER BY id LIMIT ?",
            (room_id, ts, limit),
        )
        return [r[0] for r in rows]

    async def users(self) -> list[tuple[str, str, int, str | None]]:
        """(name, role, created, inviter) of every account."""
        rows = await self._all("SELECT name, role, created, invited_by FROM users ORDER BY id")
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    # -- federation -----------------------------------------------------------------------

    async def outbox(self, broker: str, limit: int) -> list[tuple[Room, Message]]:
        """The oldest messages still to be published to `broker` (its PUBACK not yet seen)."""
        rows = await self._all(
            "SELECT r.id, r.name, r.protected, m.id, m.ts, m.sender, m.text, m.box, m.me, "
            "m.recipient, m.rel, m.target, m.file "
            "FROM outbox AS o JOIN messages AS m ON m.room_id = o.room_id AND m.id = o.id "
            "JOIN rooms AS r ON r.id = o.room_id WHERE o.broker = ? ORDER BY o.id LIMIT ?",
            (broker, limit),
        )
        return [(Room(r[0], r[1], bool(r[2])), _message(r[3:], r[1])) for r in rows]

    async def published(self, broker: str, keys: list[tuple[int, str]]) -> None:
        """`broker` has acknowledged these (room id, message id): their outbox rows go."""

        def op(db: sqlite3.Connection) -> None:
            db.executemany(
                "DELETE FROM outbox WHERE broker = ? AND room_id = ? AND id = ?",
                [(broker, room_id, id_) for room_id, id_ in keys],
            )

        await self._write(op)

    async def set_peer_keys(self, name: str, public: str, signing: str | None) -> None:
        """The keys of a user of another node (`name@node`), as their node vouches for them."""

        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO peer_keys (name, public_key, signing_key, updated) "
                "VALUES (?, ?, ?, ?)",
                (name, public, signing, _now()),
            )

        await self._write(op)

    async def peer_keys(self, name: str) -> Published | None:
        row = await self._one(
            "SELECT name, public_key, NULL, signing_key FROM peer_keys WHERE name = ?", (name,)
        )
        return None if row is None else Published(*row)

    async def outbox_sizes(self) -> dict[str, int]:
        rows = await self._all("SELECT broker, count(*) FROM outbox GROUP BY broker")
        return {r[0]: r[1] for r in rows}

    async def message_ids(
        self, room_id: int, lo: str, hi: str, limit: int, newest: bool = False
    ) -> list[str]:
        """Ids of a room's messages (not direct ones) with lo <= id < hi, in order: the
        oldest `limit` of them, or with `newest` the newest."""
        rows = await self._all(_IDS[newest], (room_id, lo, hi, limit))
        ids = [r[0] for r in rows]
        return ids[::-1] if newest else ids

    async def signed_messages(
        self, room: Room, ids: list[str]
    ) -> list[tuple[Message, str | None, bytes | None]]:
        """Messages with the node they came from and its signature (None: written here)."""
        rows = await self._all(
            "SELECT m.id, m.ts, m.sender, m.text, m.box, m.me, m.recipient, m.rel, m.target, "
            "m.file, m.origin, m.signature "
            "FROM json_each(?) AS k JOIN messages AS m ON m.room_id = ? AND m.id = k.value "
            "WHERE m.recipient IS NULL ORDER BY m.id",
            (json.dumps(ids), room.id),
        )
        return [
            (_message(r, room.name), r[10], None if r[11] is None else bytes(r[11])) for r in rows
        ]

    # -- reads ----------------------------------------------------------------------------

    async def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        async with self._reader.execute(sql, args) as cursor:
            return await cursor.fetchone()

    async def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        async with self._reader.execute(sql, args) as cursor:
            return list(await cursor.fetchall())

    async def ping(self) -> bool:
        return bool(await self._one("SELECT 1", ()))

    async def get_meta(self, key: str) -> bytes | None:
        row = await self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else bytes(row[0])

    async def identity(self, user_key: str) -> Published | None:
        row = await self._one(
            "SELECT name, public_key, wrapped_key, signing_key FROM users WHERE key = ?",
            (user_key,),
        )
        return None if row is None else Published(*row)

    async def keyring(self, user_id: int) -> tuple[str, int] | None:
        """The sealed keyring and its version, None until the user's client stored one."""
        row = await self._one("SELECT keyring, keyring_version FROM users WHERE id = ?", (user_id,))
        return None if row is None or row[0] is None else (row[0], int(row[1]))

    async def invitations(self, user_id: int) -> list[tuple[str, str, str]]:
        """(room, sender, sealed key) for every room this user was invited into."""
        return [
            (r[0], r[1], r[2])
            for r in await self._all(
                "SELECT r.name, i.sender, i.sealed FROM invitations i "
                "JOIN rooms r ON r.id = i.room_id WHERE i.user_id = ? ORDER BY i.created",
                (user_id,),
            )
        ]

    async def user_by_key(self, key: str) -> User | None:
        row = await self._one(
            "SELECT id, name, salt, iterations, hash, role, created, lang FROM users WHERE key = ?",
            (key,),
        )
        return None if row is None else User(row[0], row[1], bytes(row[2]), *row[3:])

    async def session(self, token_hash: bytes) -> tuple[User, int] | None:
        """The session's user and expiry (epoch seconds), expired or not."""
        row = await self._one(
            "SELECT u.id, u.name, u.salt, u.iterations, u.hash, u.role, u.created, u.lang, "
            "s.expires FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.hash = ?",
            (token_hash,),
        )
        if row is None:
            return None
        return User(row[0], row[1], bytes(row[2]), *row[3:8]), row[8]

    async def room(self, name: str) -> Room | None:
        row = await self._one(
            "SELECT id, name, protected, topic, topic_box, topic_by, topic_ts, modes FROM rooms "
            "WHERE name = ?",
            (name,),
        )
        return None if row is None else _room(row)

    async def rooms(self) -> list[Room]:
        rows = await self._all(
            "SELECT id, name, protected, topic, topic_box, topic_by, topic_ts, modes FROM rooms "
            "WHERE name NOT LIKE '@%' ORDER BY name"
        )
        return [_room(r) for r in rows]

    async def rooms_of(self, user_id: int) -> list[str]:
        rows = await self._all(
            "SELECT r.name FROM members m JOIN rooms r ON r.id = m.room_id "
            "WHERE m.user_id = ? ORDER BY r.name",
            (user_id,),
        )
        return [r[0] for r in rows]

    async def history(
        self, room: Room, before: str | None, limit: int
    ) -> tuple[list[Message], bool]:
        """Up to `limit` messages before `before` (or the newest), oldest first, and whether
        older ones remain."""
        args: tuple[Any, ...] = (room.id,) if before is None else (room.id, before)
        rows = await self._all(_HISTORY[before is None], (*args, limit + 1))
        return [_message(r, room.name) for r in reversed(rows[:limit])], len(rows) > limit

    async def newest(
        self, room: Room, before: str | None, limit: int
    ) -> AsyncGenerator[Message, None]:
        """Up to `limit` messages before `before` (or the newest), newest first, read in
        batches that grow as they are taken: a page cut by its size reads little more than
        it keeps (asking every size first cost more than the page: a row of 4,000 characters
        is counted character by character)."""
        args: tuple[Any, ...] = (room.id,) if before is None else (room.id, before)
        async with self._reader.execute(_HISTORY[before is None], (*args, limit)) as cursor:
            batch = 64  # 64 rows of 4,000 characters read in 0.2 ms here
            while rows := await cursor.fetchmany(batch):
                for row in rows:
                    yield _message(row, room.name)
                batch = 256


def _message(r: Any, room: str) -> Message:
    """A message from the columns of `_ROWS`."""
    return Message(
        id=r[0],
        room=room,
        ts=r[1],
        sender=r[2],
        text=r[3],
        box=r[4],
        me=bool(r[5]),
        to=r[6],
        file=None if r[9] is None else msgspec.json.decode(r[9], type=FileRef),
        **_related(r[7], r[8]),
    )


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KiB"


def _related(rel: str | None, target: str | None) -> dict[str, str]:
    return {} if rel is None or target is None else {rel: target}


# A deleted message's id stays in the room's set (a tombstone), so that a repair with a peer
# that still has it neither brings it back nor asks for it again.
_IDS_IN = (
    "SELECT id FROM (SELECT id FROM messages WHERE room_id = ?1 AND recipient IS NULL "
    "UNION ALL SELECT id FROM tombstones WHERE room_id = ?1) WHERE id >= ?2 AND id < ?3 "
)
_IDS = {False: _IDS_IN + "ORDER BY id LIMIT ?4", True: _IDS_IN + "ORDER BY id DESC LIMIT ?4"}
_ROWS = "SELECT id, ts, sender, text, box, me, recipient, rel, target, file FROM messages "
# A message, and the edits and reactions that go with it (a reply stays: its own words).
_DELETED = (
    "SELECT m.id FROM json_each(?1) AS k JOIN messages AS m ON m.room_id = ?2 AND m.id = k.value "
    "UNION SELECT m.id FROM json_each(?1) AS k JOIN messages AS m "
    "ON m.room_id = ?2 AND m.target = k.value AND m.rel IN ('edit', 'react') ORDER BY 1"
)
_HISTORY = {
    True: _ROWS + "WHERE room_id = ? ORDER BY id DESC LIMIT ?",
    False: _ROWS + "WHERE room_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
}

_LOOKALIKE = {
    "users": "SELECT name FROM users WHERE skeleton = ? AND id != ? ORDER BY id LIMIT 1",
    "rooms": "SELECT name FROM rooms WHERE skeleton = ? AND id != ? ORDER BY id LIMIT 1",
}


def _refuse_lookalike(
    db: sqlite3.Connection, table: Literal["users", "rooms"], skeleton: str, new_id: int
) -> None:
    """Raises Lookalike if a row other than the new one has this skeleton: in the insert's
    transaction (its savepoint is rolled back), so two lookalikes cannot both get in."""
    row = db.execute(_LOOKALIKE[table], (skeleton, new_id)).fetchone()
    if row is not None:
        raise Lookalike(row[0])


class SchemaError(Exception):
    """The database cannot be used by this version of OnionChat; the message says what to do."""


def schema_problem(path: Path) -> str | None:
    """Why this version cannot open the database, asked before the node starts (so that the
    operator reads one line, not a failed start's traceback); None when it can."""
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        return f"{path} cannot be read ({exc}): restore it from a backup (onionchat restore)"
    return _newer(path, version)


def _newer(path: Path, version: int) -> str | None:
    if version <= len(MIGRATIONS):
        return None
    return (
        f"{path} has schema {version}, made by a newer OnionChat than this one (which knows "
        f"schemas up to {len(MIGRATIONS)}): run that version, or restore the copy its upgrade "
        "left in backups/ beside the database"
    )


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Numbered steps under `PRAGMA user_version`, each in its own transaction; an existing
    database is first copied whole to `backups/` beside it, so an upgrade can be undone."""
    row = db.execute("PRAGMA user_version").fetchone()
    version = row[0] if row else 0
    if (newer := _newer(path, version)) is not None:
        raise SchemaError(newer)
    if 0 < version < len(MIGRATIONS):
        backups = path.parent / "backups"
        backups.mkdir(mode=0o700, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        copy = backups / f"{path.stem}-schema{version}-{stamp}{path.suffix}"
        db.execute("VACUUM INTO ?", (str(copy),))
        os.chmod(copy, 0o600)
        log.info(
            "upgrading the database from schema %d to %d; the old one is kept in %s",
            version,
            len(MIGRATIONS),
            copy,
            extra={"event": "db_upgrade", "from": version, "to": len(MIGRATIONS)},
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
