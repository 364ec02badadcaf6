"""The command-line client behind `onionchat connect`.

It logs in over HTTP (the password never leaves this process, only a PBKDF2 login secret
does), then chats over one WebSocket. Room keys stay here too: in a key-protected room every
message is sealed and signed before it leaves and opened and checked after it arrives, so the
node relays ciphertext only and no member passes for another; the keys live in the account's
keyring, sealed here with the password-derived wrapping key and kept on the node. One session
serves two faces: an interactive prompt for people, and `--pipe` (stdin lines in, JSON lines
out) for scripts and tests.

    options      what `onionchat connect` was told, checked; the password
    transport    reaching the node (HTTP, WebSocket, SOCKS5, TLS); which hop failed, told plainly
    account      register, log in, log out
    outbox       frames out: refs, pacing under the node's rate limit, resending, settling
    session      the chat: lines into frames, frames into things to show
    keys         our identity key and the keyring kept on the node, peers' keys, replays,
                 which invitation's key to take
    trust        peers' keys pinned on first sight, key changes, /whois, /trust; every box checked
    invitations  /invite, invitations opened and checked, which key is taken, /usekey
    views        JSON lines for scripts, a coloured terminal for people
    numbers      each shown message's [N], to name it by
    attachments  /file and /save
    passwords    the weakest refused for a new account
    run          the two modes, and the entry point
"""

from onionchat.client.errors import ChatError, ClientError
from onionchat.client.options import Options
from onionchat.client.run import main

__all__ = ["ChatError", "ClientError", "Options", "main"]
