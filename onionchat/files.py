"""Files sent in rooms and conversations: the bytes as uploaded (in a key-protected room or a
sealed conversation, sealed by the client with a key of the file's own, which only the
message's box carries) in the data directory, one file each, mode 0600, and a row each in the
database. Bounded in size per file, per user and per room, and in uploads a minute; deleted
with their message, `files.days` after they were sent, or an hour after an upload that no
message took.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

from onionchat.config import Files as FileSettings
from onionchat.i18n import say
from onionchat.protocol import Code, ProtocolError
from onionchat.ratelimit import Buckets
from onionchat.store import OverQuota, Room, Store, StoredFile

log = logging.getLogger("onionchat.files")
UNSENT = 3600  # seconds an upload waits for its message
CHUNK = 64 * 1024


def new_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")


class Files:
    def __init__(self, settings: FileSettings, store: Store, directory: Path) -> None:
        self.settings = settings
        self.store = store
        self.directory = directory
        self._uploads = Buckets(settings.per_minute / 60, settings.per_minute, 10_000)

    def path(self, id_: str) -> Path:
        return self.directory / id_

    async def put(self, room: Room, uploader: str, length: int, body: AsyncIterator[bytes]) -> str:
        """Take an upload of `length` bytes (its Content-Length: no more, no less), within the
        bounds; its id. Nothing of a refused upload stays."""
        limit = self.settings.max_bytes
        if not limit:
            raise ProtocolError(Code.FORBIDDEN, say("this node takes no files"))
        if length > limit:
            said = say(
                "the file is too large ({size} bytes, at most {max})",
                size=f"{length:,}",
                max=f"{limit:,}",
            )
            raise ProtocolError(Code.TOO_LARGE, said)
        if length < 1:
            raise ProtocolError(Code.BAD_BODY, say("the file is empty"))
        if not self._uploads.allow(uploader):
            raise ProtocolError(
                Code.RATE_LIMITED,
                say("at most {per_minute} files a minute", per_minute=self.settings.per_minute),
            )
        self.directory.mkdir(mode=0o700, exist_ok=True)
        id_ = new_id()
        path = self.path(id_)
        got = 0
        try:
            with _private(path) as out:
                async for chunk in body:
                    got += len(chunk)
                    if got > length:
                        raise ProtocolError(Code.BAD_BODY, say("the file is longer than it said"))
                    out.write(chunk)
            if got != length:
                raise ProtocolError(Code.BAD_BODY, say("the file is shorter than it said"))
            await self.store.add_file(
                StoredFile(id_, room.id, uploader, length, int(time.time())),
                self.settings.user_bytes,
                self.settings.room_bytes,
            )
        except OverQuota as exc:
            path.unlink(missing_ok=True)
            raise ProtocolError(Code.TOO_LARGE, exc.args[0]) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return id_

    async def attach(self, room: Room, uploader: str, id_: str, size: int, message: str) -> None:
        """The upload a message carries: the writer's own, to this room, not sent before, of
        the size the message says."""
        found = await self.store.file(id_)
        if found is None or found.room_id != room.id or found.uploader != uploader:
            raise ProtocolError(
                Code.BAD_FRAME, say("no such upload of yours here: upload it first")
            )
        if found.message is not None:
            raise ProtocolError(Code.BAD_FRAME, say("that file was sent already"))
        if found.size != size:
            raise ProtocolError(
                Code.BAD_FRAME,
                say("the file has {size} bytes, not {expected}", size=found.size, expected=size),
            )
        await self.store.attach_file(id_, message)

    async def readable(self, room: Room, id_: str) -> Path | None:
        """The file's bytes, if it is one of the room's that a message carries."""
        found = await self.store.file(id_)
        if found is None or found.room_id != room.id or found.message is None:
            return None
        path = self.path(id_)
        return path if path.exists() else None

    async def forget(self, room: Room, messages: list[str]) -> None:
        """Their messages are deleted: so are they."""
        self._unlink(await self.store.delete_files_of(room.id, messages))

    async def expire(self) -> int:
        """Files past `files.days`, and uploads no message took within the hour."""
        now = int(time.time())
        kept = int(self.settings.days * 86400)
        gone = await self.store.delete_expired_files(now - UNSENT, now - kept if kept else None)
        self._unlink(gone)
        return len(gone)

    def _unlink(self, ids: list[str]) -> None:
        for id_ in ids:
            self.path(id_).unlink(missing_ok=True)
        if ids:
            log.info("files deleted", extra={"event": "files_deleted", "count": len(ids)})


@contextlib.contextmanager
def _private(path: Path):  # type: ignore[no-untyped-def]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        yield out
