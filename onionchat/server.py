"""The composition root: the node's parts, built and wired in one place, and stopped in order.

The core (store, accounts, node) knows none of its features; here each feature is given the
core and registers what it listens to. `app.py` only serves HTTP and WebSockets on top of a
`Server`; tests build one without HTTP to drive the node in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from onionchat import commands, identity, mentions
from onionchat.auth import Accounts
from onionchat.bots import Bots, reserved_names
from onionchat.config import Settings
from onionchat.federation.network import Federation
from onionchat.node import Node
from onionchat.store import Store
from onionchat.tor import OnionService, Reporter

log = logging.getLogger("onionchat.server")
DATABASE = "onionchat.sqlite3"  # in the data directory


@dataclasses.dataclass
class Server:
    settings: Settings
    store: Store
    accounts: Accounts
    node: Node
    bots: Bots
    onion: OnionService
    federation: Federation | None


def private_data_dir(data_dir: Path) -> None:
    """The data directory holds the database and the keys: nobody else may list it."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if data_dir.stat().st_mode & 0o077:
        data_dir.chmod(0o700)
        log.warning("the data directory was open to others: made it 0700", extra={"event": "fixed"})


async def _node_secret(store: Store) -> bytes:
    secret = await store.get_meta("node_secret")
    if secret is None:
        secret = secrets.token_bytes(32)
        await store.put_meta("node_secret", secret)
    return secret


@contextlib.asynccontextmanager
async def running(settings: Settings, reporter: Reporter | None = None) -> AsyncIterator[Server]:
    """Open the store, build the node and its features, start tor; on the way out, stop them
    in the reverse order, tor last (nothing is written after the store is closed, and the
    onion is there until the node is done)."""
    data_dir = settings.server.data_dir
    private_data_dir(data_dir)
    store = await Store.open(data_dir / DATABASE)
    onion = OnionService(settings, reporter)
    try:
        secret = await _node_secret(store)
        await store.delete_expired_sessions()
        accounts = Accounts(store, settings.auth, secret, reserved_names(settings.bots))
        try:
            node = Node(settings, store, accounts)
            accounts.staff_around = node.staff_around
            accounts.guests_welcome = node.guests_welcome
            await node.authority.load()
            commands.install(node)
            identity.install(node)
            mentions.install(node)
            node.bots = bots = Bots(node, lambda: onion.proxy)
            node.listeners.append(bots.hear)
            federation = None
            if settings.brokers:
                federation = Federation(node, settings, lambda: onion.proxy)
                federation.install()
            await bots.start(accounts, secret, data_dir)
            upkeep = asyncio.create_task(node.maintain(), name="node-upkeep")
            try:
                onion.start()
                if federation is not None:
                    federation.start()
                try:
                    yield Server(settings, store, accounts, node, bots, onion, federation)
                finally:
                    if federation is not None:
                        await federation.close()
            finally:
                await bots.close()
                upkeep.cancel()
        finally:
            accounts.close()
    finally:
        await store.close()
        await onion.close()
        log.info("stopped", extra={"event": "stop"})
