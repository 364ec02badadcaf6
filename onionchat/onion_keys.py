"""The onion's identity key and its authorized clients, kept in the data directory (0600).

The node makes its own ed25519 key instead of asking tor for one, so the address is known (and
client keys can be handed out) before tor ever runs, and the key is on disk before tor holds it.
Client authorization is v3's: x25519 key pairs, whose public halves go to ADD_ONION and whose
private halves go to the people allowed in (Tor Browser asks for exactly that base32 string).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path

import nacl.public
import nacl.signing

KEY_FILE = "onion_key"
CLIENTS_FILE = "onion_clients.json"
NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")  # tor's own limit on client names is similar


class OnionKeyError(Exception):
    """A key or client file that cannot be used; the message says which and why."""


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _unb32(text: str) -> bytes:
    text = text.strip().upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


def write_secret(path: Path, data: bytes) -> None:
    """Atomically, and never readable by others even for a moment."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


@dataclasses.dataclass(frozen=True)
class OnionKey:
    seed: bytes = dataclasses.field(repr=False)

    @classmethod
    def generate(cls) -> OnionKey:
        return cls(os.urandom(32))

    @classmethod
    def load_or_create(cls, data_dir: Path) -> OnionKey:
        path = data_dir / KEY_FILE
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            key = cls.generate()
            write_secret(path, f"ed25519-seed:{base64.b64encode(key.seed).decode()}\n".encode())
            return key
        kind, _, blob = text.partition(":")
        try:
            seed = base64.b64decode(blob, validate=True)
        except ValueError:
            seed = b""
        if kind != "ed25519-seed" or len(seed) != 32:
            raise OnionKeyError(f"{path}: not an onion key written by OnionChat")
        return cls(seed)

    @property
    def public(self) -> bytes:
        return bytes(nacl.signing.SigningKey(self.seed).verify_key)

    @property
    def address(self) -> str:
        """The 56-character v3 address (rend-spec-v3 §6), without `.onion`."""
        version = b"\x03"
        checksum = hashlib.sha3_256(b".onion checksum" + self.public + version).digest()[:2]
        return _b32(self.public + checksum + version).lower()

    @property
    def tor_blob(self) -> str:
        """ADD_ONION's `ED25519-V3:` key: tor's expanded form, the clamped scalar then the
        second half of SHA-512(seed)."""
        h = bytearray(hashlib.sha512(self.seed).digest())
        h[0] &= 248
        h[31] &= 127
        h[31] |= 64
        return "ED25519-V3:" + base64.b64encode(bytes(h)).decode("ascii")


@dataclasses.dataclass(frozen=True)
class Client:
    name: str
    public: str  # base32 x25519 public key, for ADD_ONION's ClientAuthV3
    private: str | None = dataclasses.field(default=None, repr=False)  # None: brought their own

    def auth_private_line(self, address: str) -> str:
        """A line for a tor client's ClientOnionAuthDir (`NAME.auth_private`)."""
        return f"{address}:descriptor:x25519:{self.private}"

    @property
    def control_blob(self) -> str:
        """ONION_CLIENT_AUTH_ADD takes the private key in base64, not base32."""
        assert self.private is not None
        return "x25519:" + base64.b64encode(_unb32(self.private)).decode("ascii")


class Clients:
    """The authorized clients of a private onion, in `DATA_DIR/onion_clients.json` (0600)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / CLIENTS_FILE

    def all(self) -> list[Client]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return [Client(c["name"], c["public"], c.get("private")) for c in raw["clients"]]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError):
            raise OnionKeyError(f"{self.path}: not a client list written by OnionChat") from None

    def get(self, name: str) -> Client | None:
        return next((c for c in self.all() if c.name == name), None)

    def add(self, name: str, public: str | None = None) -> Client:
        if not NAME.fullmatch(name):
            raise OnionKeyError(f"client name {name!r}: use 1–32 letters, digits, - or _")
        if self.get(name) is not None:
            raise OnionKeyError(f"client {name!r} already exists (remove it first)")
        if public is None:
            key = nacl.public.PrivateKey.generate()
            client = Client(name, _b32(bytes(key.public_key)), _b32(bytes(key)))
        else:
            try:
                raw = _unb32(public)
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise OnionKeyError("the public key must be 52 base32 characters (an x25519 key)")
            client = Client(name, _b32(raw))
        self._write([*self.all(), client])
        return client

    def remove(self, name: str) -> bool:
        clients = self.all()
        kept = [c for c in clients if c.name != name]
        if len(kept) == len(clients):
            return False
        self._write(kept)
        return True

    def _write(self, clients: list[Client]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {"clients": [dataclasses.asdict(c) for c in clients]}
        write_secret(self.path, (json.dumps(data, indent=2) + "\n").encode())
