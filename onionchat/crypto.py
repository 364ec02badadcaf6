"""Client-side cryptography, byte-compatible with the browser client (WebCrypto + tweetnacl).

- Login secret and wrapping key: PBKDF2-SHA256 over the password, with the account's salt
  prefixed by a purpose label, 32 bytes each. Two labels make two unrelated keys: the node
  sees the login secret, never the wrapping key.
- Room messages: NaCl secretbox (XSalsa20-Poly1305) with the 32-byte room key; the box on
  the wire is standard base64 of nonce (24 bytes) followed by the ciphertext.
- Room keys travel as unpadded base64url (43 characters), e.g. in a URL fragment.
- Identity: an X25519 key pair; the node keeps the secret key only wrapped: standard base64 of
  a secretbox of the 32 secret bytes under the wrapping key.
- Invitations: a room key sealed to a user's public key: standard base64 of an ephemeral public
  key (32), a nonce (24) and `crypto_box(room key, nonce, their public, ephemeral secret)`
  (tweetnacl's `nacl.box` and PyNaCl's `Box` agree on it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time

import nacl.exceptions
import nacl.public
import nacl.pwhash
import nacl.secret
import nacl.utils

KEY_BYTES = nacl.secret.SecretBox.KEY_SIZE
LOGIN_LABEL = b"onionchat login\0"
WRAP_LABEL = b"onionchat wrap\0"


class CryptoError(Exception):
    """A key or a box that cannot be used."""


def _derive(password: str, salt: bytes, iterations: int, label: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), label + salt, iterations, 32)


def login_secret(password: str, salt: bytes, iterations: int) -> bytes:
    return _derive(password, salt, iterations, LOGIN_LABEL)


def wrapping_key(password: str, salt: bytes, iterations: int) -> bytes:
    return _derive(password, salt, iterations, WRAP_LABEL)


def new_room_key() -> bytes:
    return nacl.utils.random(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode()


def decode_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("the room key is not base64url") from None
    if len(key) != KEY_BYTES:
        raise CryptoError(f"the room key must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def seal(key: bytes, text: str) -> str:
    box = nacl.secret.SecretBox(key).encrypt(text.encode())
    return base64.b64encode(bytes(box)).decode()


def open_bytes(key: bytes, box: str) -> bytes:
    try:
        raw = base64.b64decode(box, validate=True)
        return nacl.secret.SecretBox(key).decrypt(raw)
    except (binascii.Error, ValueError, TypeError, nacl.exceptions.CryptoError):
        raise CryptoError("cannot decrypt: wrong room key or damaged message") from None


def open_box(key: bytes, box: str) -> str:
    try:
        return open_bytes(key, box).decode()
    except UnicodeDecodeError:
        raise CryptoError("cannot decrypt: wrong room key or damaged message") from None


def seal_file(key: bytes, data: bytes) -> bytes:
    """A file sealed with a key of its own: nonce (24) || secretbox, raw (no base64)."""
    return bytes(nacl.secret.SecretBox(key).encrypt(data))


def open_file(key: bytes, sealed: bytes) -> bytes:
    try:
        return nacl.secret.SecretBox(key).decrypt(sealed)
    except (ValueError, TypeError, nacl.exceptions.CryptoError):
        raise CryptoError("cannot decrypt the file: wrong key or damaged") from None


def new_identity() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair: (secret, public)."""
    secret = nacl.public.PrivateKey.generate()
    return bytes(secret), bytes(secret.public_key)


def wrap_identity(wrapping: bytes, secret: bytes) -> str:
    return base64.b64encode(bytes(nacl.secret.SecretBox(wrapping).encrypt(secret))).decode()


def unwrap_identity(wrapping: bytes, wrapped: str) -> bytes:
    try:
        return nacl.secret.SecretBox(wrapping).decrypt(base64.b64decode(wrapped, validate=True))
    except (binascii.Error, ValueError, nacl.exceptions.CryptoError):
        raise CryptoError("cannot unwrap the identity key: wrong password?") from None


def seal_room_key(room_key: bytes, their_public: bytes) -> str:
    ephemeral = nacl.public.PrivateKey.generate()
    box = nacl.public.Box(ephemeral, nacl.public.PublicKey(their_public)).encrypt(room_key)
    return base64.b64encode(bytes(ephemeral.public_key) + bytes(box)).decode()


def open_room_key(sealed: str, secret: bytes) -> bytes:
    try:
        raw = base64.b64decode(sealed, validate=True)
        box = nacl.public.Box(nacl.public.PrivateKey(secret), nacl.public.PublicKey(raw[:32]))
        return box.decrypt(raw[32:])
    except (binascii.Error, ValueError, nacl.exceptions.CryptoError):
        raise CryptoError("cannot open the invitation: not sealed to this identity") from None


def public_of(secret: bytes) -> bytes:
    """The X25519 public key that goes with `secret`."""
    try:
        return bytes(nacl.public.PrivateKey(secret).public_key)
    except (TypeError, ValueError, nacl.exceptions.CryptoError):
        raise CryptoError("not an identity secret key") from None


def shared_key(my_secret: bytes, their_public: bytes) -> bytes:
    """The key two users share for sealed direct messages: `nacl.box.before(their public, my
    secret)`, the same from both sides; messages are secretboxes under it (`seal`, `open_box`)."""
    try:
        box = nacl.public.Box(
            nacl.public.PrivateKey(my_secret), nacl.public.PublicKey(their_public)
        )
    except (TypeError, ValueError, nacl.exceptions.CryptoError):
        raise CryptoError("not a usable identity key") from None
    return bytes(box.shared_key())


def verify_hash(stored: bytes, secret: bytes) -> tuple[bool, float]:
    """Whether `secret` matches its argon2id hash, and how long it took to say so. Here, not
    in `auth`: a hashing worker imports the module of its work, and this one is small (with
    `auth` came the store and 180 more modules, 16 MiB a worker)."""
    start = time.perf_counter()
    try:
        ok = bool(nacl.pwhash.verify(stored, secret))
    except nacl.exceptions.InvalidkeyError:
        ok = False
    return ok, time.perf_counter() - start
