"""Files from a terminal: `/file PATH` sends one to the room in view (sealed here first, with a
key of its own, in a key-protected room), `/save N` saves the file of message [N] in the
current directory (opened here), under its name made safe, never over another file.
"""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path
from typing import Any

from onionchat.client.errors import ChatError
from onionchat.client.options import Options
from onionchat.client.transport import http_client

_TYPE = re.compile(r"^[a-z0-9.+-]{1,40}/[a-z0-9.+-]{1,80}$")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:]|^\.+")


def read(typed: str) -> tuple[str, str, bytes] | None:
    """The file a user named: its name, type and bytes; None when there is none."""
    path = Path(typed).expanduser()
    if not typed or not path.is_file():
        return None
    guessed = mimetypes.guess_type(path.name)[0] or ""
    kind = guessed if _TYPE.match(guessed) else "application/octet-stream"
    return path.name[:255], kind, path.read_bytes()


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def upload(options: Options, token: str, room: str, data: bytes) -> dict[str, Any]:
    """The file's id and size on the node, once it took the upload."""
    async with http_client(options, timeout=max(options.timeout, len(data) / 16384 + 10)) as http:
        answer = await http.post(
            "/api/files",
            params={"room": room},
            content=data,
            headers={**_auth(token), "content-type": "application/octet-stream"},
        )
    body: dict[str, Any] = answer.json()
    if answer.status_code != 201:
        raise ChatError(str(body.get("message", f"the node answered {answer.status_code}")))
    return body


async def download(options: Options, token: str, room: str, file_id: str) -> bytes | None:
    """The file's bytes as uploaded, or None when it is gone (deleted, or expired)."""
    async with http_client(options, timeout=max(options.timeout, 120)) as http:
        answer = await http.get(
            f"/api/files/{file_id}", params={"room": room}, headers=_auth(token)
        )
    if answer.status_code == 404:
        return None
    if answer.status_code != 200:
        raise ChatError(f"the node answered {answer.status_code}")
    return answer.content


def save(directory: Path, name: str, data: bytes) -> Path:
    """Written under `name` made safe (no path, no control characters), beside and never over
    what is there: `name (1)`, `name (2)`..."""
    safe = _UNSAFE.sub("_", name).strip() or "file"
    stem, dot, suffix = safe.rpartition(".")
    stem, suffix = (stem, f".{suffix}") if dot and stem else (safe, "")
    for n in range(1000):
        path = directory / (f"{stem} ({n}){suffix}" if n else f"{stem}{suffix}")
        try:
            with path.open("xb") as out:
                out.write(data)
        except FileExistsError:
            continue
        return path
    raise ChatError(f"too many files named {safe} here")
