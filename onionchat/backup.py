"""Backups of a node: a consistent copy of its database and its keys in one archive, sealed
with a passphrase if asked; restored into a fresh data directory.

The database is copied with SQLite's online backup, so a running node can be backed up: the
copy is one moment of it, never half a write. The keys are what makes the node itself: the
onion key (its address), the onion's authorized clients, the federation key (its identity to
its peers) and the bots' key. Tor's own state is not kept: tor makes it again.

An archive is `ONIONCHAT BACKUP 1` and a tar, or `ONIONCHAT SEALED BACKUP 1`, a salt and a
secretbox of that tar under a key derived from the passphrase with Argon2id (256 MiB). The
archive is built in memory: a node's database of a few hundred MiB needs as much free memory.
"""

from __future__ import annotations

import io
import sqlite3
import tarfile
import tempfile
from pathlib import Path

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from onionchat.onion_keys import write_secret
from onionchat.server import DATABASE, private_data_dir

PLAIN = b"ONIONCHAT BACKUP 1\n"
SEALED = b"ONIONCHAT SEALED BACKUP 1\n"
KEYS = ("onion_key", "onion_clients.json", "node_key", "bot_key")
_KDF = nacl.pwhash.argon2id
_SALT = _KDF.SALTBYTES


class BackupError(Exception):
    """What is wrong, said for the operator."""


def make(data_dir: Path, passphrase: bytes | None = None) -> tuple[bytes, list[str]]:
    """The archive of `data_dir`, and the names of what it holds."""
    database = data_dir / DATABASE
    if not database.is_file():
        raise BackupError(f"{data_dir}: no {DATABASE} here (is this a node's data directory?)")
    buffer = io.BytesIO()
    held: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=buffer, mode="w") as tar:
        copy = Path(tmp) / DATABASE
        source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        tar.add(copy, arcname=DATABASE, filter=_private)
        held.append(DATABASE)
        for name in KEYS:
            if (data_dir / name).is_file():
                tar.add(data_dir / name, arcname=name, filter=_private)
                held.append(name)
    archive = buffer.getvalue()
    if passphrase is None:
        return PLAIN + archive, held
    salt = nacl.utils.random(_SALT)
    box = nacl.secret.SecretBox(_key(passphrase, salt))
    return SEALED + salt + bytes(box.encrypt(archive)), held


def restore(archive: bytes, data_dir: Path, passphrase: bytes | None = None) -> list[str]:
    """Write what `archive` holds into `data_dir`, which must be new or empty."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty: restore into a new data directory")
    if archive.startswith(SEALED):
        if passphrase is None:
            raise BackupError("this backup is sealed: give its passphrase (--passphrase-file)")
        rest = archive[len(SEALED) :]
        salt, sealed = rest[:_SALT], rest[_SALT:]
        try:
            tar_bytes = nacl.secret.SecretBox(_key(passphrase, salt)).decrypt(sealed)
        except nacl.exceptions.CryptoError:
            raise BackupError("wrong passphrase, or the backup is damaged") from None
    elif archive.startswith(PLAIN):
        tar_bytes = archive[len(PLAIN) :]
    else:
        raise BackupError("not an OnionChat backup")
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r") as tar:
            files = {}
            for member in tar.getmembers():
                if member.name not in (DATABASE, *KEYS) or not member.isfile():
                    raise BackupError(f"the backup holds {member.name!r}, which no node writes")
                extracted = tar.extractfile(member)
                assert extracted is not None
                files[member.name] = extracted.read()
    except tarfile.TarError:
        raise BackupError("the backup is damaged") from None
    if DATABASE not in files:
        raise BackupError("the backup holds no database")
    private_data_dir(data_dir)
    for name, content in files.items():
        write_secret(data_dir / name, content)
    return sorted(files)


def _key(passphrase: bytes, salt: bytes) -> bytes:
    return _KDF.kdf(
        nacl.secret.SecretBox.KEY_SIZE,
        passphrase,
        salt,
        opslimit=_KDF.OPSLIMIT_MODERATE,
        memlimit=_KDF.MEMLIMIT_MODERATE,
    )


def _private(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """No owner, no time of the machine: only the file and its mode."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o600
    info.mtime = 0
    return info
