"""What the parts of the federation (repair, presence) need of the whole, as a protocol: they
depend on this, not on `network`, which builds them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import nacl.signing

    from onionchat.config import Federation as Settings
    from onionchat.federation.envelope import MessageBody
    from onionchat.node import Node


class Sender(Protocol):
    async def send(self, topic: str, payload: bytes, retain: bool = False) -> None: ...


class Context(Protocol):
    name: str
    node: Node
    settings: Settings
    key: nacl.signing.SigningKey
    network_key: bytes
    peers: dict[str, bytes]

    @property
    def senders(self) -> Sequence[Sender]: ...
    def shares(self, room: str) -> bool: ...
    def drop(self, why: str) -> None: ...
    def canonical(self, name: str, rule: Callable[[str], str]) -> bool: ...
    async def take(self, body: MessageBody, item: bytes) -> bool: ...
    async def keys_of(self, user: str) -> tuple[str | None, str | None]: ...
