"""Settings: embedded defaults, then `onionchat.toml`, then `ONIONCHAT_*` variables, then flags.

Each key lives in a section (`[server] port = 8080`), has an environment variable named after
both (`ONIONCHAT_SERVER_PORT`), and is checked at start: a bad value stops the node with a
message naming the key, where it came from, and what is wrong (`onionchat serve` exits 2).
`docs/config.md` documents every key; a test keeps it in step with this module.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onionchat import names
from onionchat.protocol import ProtocolError, max_box_length


class ConfigError(Exception):
    """An invalid setting; the message names the key and the reason."""


def _key(
    doc: str, *, low: float | None = None, high: float | None = None, choices: tuple[str, ...] = ()
) -> Any:
    return {"doc": doc, "low": low, "high": high, "choices": choices}


@dataclasses.dataclass(frozen=True)
class Server:
    host: str = dataclasses.field(
        default="127.0.0.1",
        metadata=_key("Address to listen on. Keep 127.0.0.1 when the node is reached through Tor."),
    )
    port: int = dataclasses.field(
        default=8080,
        metadata=_key("TCP port to listen on (0 picks a free one).", low=0, high=65535),
    )
    data_dir: Path = dataclasses.field(
        default=Path("data"),
        metadata=_key("Directory for the database and the node's secrets (created 0700)."),
    )
    origins: str = dataclasses.field(
        default="",
        metadata=_key(
            "Extra allowed WebSocket `Origin`s, comma-separated; the node's own origin is always "
            "allowed and clients that send no Origin (the CLI) are not affected."
        ),
    )
    hosts: str = dataclasses.field(
        default="",
        metadata=_key(
            "Extra host names the node answers to, comma-separated; its onion address, "
            "`server.host` and loopback names are always accepted, any other `Host` gets 421 "
            "(DNS rebinding)."
        ),
    )
    tls_cert: str = dataclasses.field(
        default="",
        metadata=_key(
            "PEM certificate (chain) file: serve HTTPS and WSS on a normal address. Onion "
            "services need no TLS: Tor already encrypts and authenticates the connection."
        ),
    )
    tls_key: str = dataclasses.field(
        default="", metadata=_key("PEM private key file of `tls_cert`.")
    )
    listen: str = dataclasses.field(
        default="auto",
        metadata=_key(
            "`unix`: a socket `DATA_DIR/web.sock` (0600, in the 0700 data directory) that the "
            "onion targets, so no other local user, process or container can reach the chat "
            "around Tor; `tcp`: `host`:`port`, which any local process can reach without Tor; "
            "`auto`: unix when the node launches its own tor, tcp otherwise (a system tor runs "
            "as another user and cannot open a socket in the data directory).",
            choices=("auto", "unix", "tcp"),
        ),
    )
    shutdown_grace: float = dataclasses.field(
        default=10.0,
        metadata=_key(
            "Seconds a stop (SIGTERM, Ctrl-C) waits for connections to close and requests "
            "under way to finish, once WebSockets are told 1012; then they are cut.",
            low=0,
            high=600,
        ),
    )


@dataclasses.dataclass(frozen=True)
class Log:
    level: str = dataclasses.field(
        default="info",
        metadata=_key("Least severe level logged.", choices=("debug", "info", "warning", "error")),
    )
    format: str = dataclasses.field(
        default="text",
        metadata=_key(
            "`text` for people, `json` for one JSON object per line.", choices=("text", "json")
        ),
    )


@dataclasses.dataclass(frozen=True)
class Limits:
    max_frame_bytes: int = dataclasses.field(
        default=65536,
        metadata=_key(
            "Largest WebSocket frame the node reads; larger ones get a `too_large` error "
            "(and frames over four times this size close the connection with 1009).",
            low=1024,
            high=16 * 1024 * 1024,
        ),
    )
    max_text_chars: int = dataclasses.field(
        default=4000,
        metadata=_key(
            "Longest message text, in characters (a key-protected room's ciphertext may be as "
            "long as the same text sealed).",
            low=1,
            high=1_000_000,
        ),
    )
    send_queue_bytes: int = dataclasses.field(
        default=1024 * 1024,
        metadata=_key(
            "Bytes of frames waiting for one connection (queued or being written) before it is "
            "closed as too slow (4009).",
            low=64 * 1024,
            high=1024 * 1024 * 1024,
        ),
    )
    user_queue_bytes: int = dataclasses.field(
        default=4 * 1024 * 1024,
        metadata=_key(
            "Bytes waiting for all of one user's connections together; the connection that "
            "goes over is closed as too slow (4009).",
            low=64 * 1024,
            high=1024 * 1024 * 1024,
        ),
    )
    rate: float = dataclasses.field(
        default=20.0,
        metadata=_key(
            "Frames per second one connection may send, on average.", low=0.1, high=1_000_000
        ),
    )
    burst: int = dataclasses.field(
        default=60,
        metadata=_key(
            "Frames one connection may send at once above the rate.", low=1, high=1_000_000
        ),
    )
    flood_strikes: int = dataclasses.field(
        default=50,
        metadata=_key(
            "Frames refused for going over a rate (frames, history pages, joins) within ten "
            "seconds before the connection is closed as flooding (4008).",
            low=1,
            high=1_000_000,
        ),
    )
    flood_penalty: float = dataclasses.field(
        default=30.0,
        metadata=_key(
            "Seconds a user whose connection was closed for flooding (4008: frames or pings) "
            "may not connect again.",
            low=0,
            high=86_400,
        ),
    )
    history_page: int = dataclasses.field(
        default=50, metadata=_key("Messages sent on joining a room.", low=0, high=200)
    )
    history_bytes: int = dataclasses.field(
        default=256 * 1024,
        metadata=_key(
            "Most bytes of messages in one history page (on joining or asked for); a page "
            "that would be larger holds fewer messages and says there are more.",
            low=16 * 1024,
            high=64 * 1024 * 1024,
        ),
    )
    connections: int = dataclasses.field(
        default=2000,
        metadata=_key(
            "Open chat connections (WebSockets and no-JS pages) on the whole node.",
            low=1,
            high=1_000_000,
        ),
    )
    user_connections: int = dataclasses.field(
        default=16,
        metadata=_key(
            "Open chat connections (WebSockets and no-JS pages) of one user.", low=1, high=10_000
        ),
    )
    unauthenticated: int = dataclasses.field(
        default=64,
        metadata=_key(
            "WebSockets open at once that have not authenticated yet.", low=1, high=1_000_000
        ),
    )
    sockets: int = dataclasses.field(
        default=4096,
        metadata=_key(
            "Open TCP connections to the node; more are answered 503 and closed (the node also "
            "keeps 64 file descriptors of its limit free).",
            low=16,
            high=1_000_000,
        ),
    )
    header_bytes: int = dataclasses.field(
        default=16 * 1024,
        metadata=_key(
            "Largest request head (request line and headers); larger ones get 431.",
            low=1024,
            high=1024 * 1024,
        ),
    )
    request_timeout: float = dataclasses.field(
        default=10.0,
        metadata=_key(
            "Seconds a client has at most to send a whole request head (or a WebSocket "
            "handshake) once it connects or starts a request (each socket's deadline is drawn "
            "between three quarters of this and this, so that sockets opened together expire "
            "apart); a silent or slow one is answered 408 and closed.",
            low=0.5,
            high=600,
        ),
    )
    write_timeout: float = dataclasses.field(
        default=30.0,
        metadata=_key(
            "Seconds the node keeps a connection whose client reads nothing of what waits for "
            "it (the socket's buffer stays full); then it is cut.",
            low=1,
            high=3600,
        ),
    )
    ping_rate: float = dataclasses.field(
        default=2.0,
        metadata=_key(
            "WebSocket pings per second one connection may send on average (burst: 10 times "
            "this); more close the connection (4008).",
            low=0.01,
            high=1_000_000,
        ),
    )
    room_creations: int = dataclasses.field(
        default=20,
        metadata=_key("Rooms one user may create per hour.", low=0, high=1_000_000),
    )
    join_wave: int = dataclasses.field(
        default=20,
        metadata=_key(
            "Newcomers (users who were not members) joining one room within "
            "`join_wave_seconds` that make it invite-only by itself, staff told (0: never).",
            low=0,
            high=1_000_000,
        ),
    )
    join_wave_seconds: float = dataclasses.field(
        default=60.0,
        metadata=_key("The window of `join_wave`, in seconds.", low=1, high=86_400),
    )
    history_rate: float = dataclasses.field(
        default=2.0,
        metadata=_key(
            "History pages per second one user may ask for on average, over all their "
            "connections (burst: 10 times this), a join's first page included (past it a join "
            "comes without its page, `more` set, for the client to page in later). A page "
            "costs the node a thousand times a message: reading and encoding up to "
            "`history_bytes`.",
            low=0.01,
            high=1_000_000,
        ),
    )
    join_rate: float = dataclasses.field(
        default=2.0,
        metadata=_key(
            "Room joins per second one user may make on average, over all their connections "
            "and pages (burst: 50 times this, for a client rejoining its rooms).",
            low=0.01,
            high=1_000_000,
        ),
    )
    bot_answers: int = dataclasses.field(
        default=4,
        metadata=_key(
            "Bot answers being written at once on the whole node; more wait in their room's queue.",
            low=1,
            high=10_000,
        ),
    )


@dataclasses.dataclass(frozen=True)
class Auth:
    session_hours: float = dataclasses.field(
        default=720.0, metadata=_key("How long a session token lasts.", low=0.001, high=24 * 3650)
    )
    pbkdf2_iterations: int = dataclasses.field(
        default=600_000,
        metadata=_key(
            "PBKDF2-SHA256 iterations clients use on new accounts to derive the login secret.",
            low=1000,
            high=10_000_000,
        ),
    )
    argon2: str = dataclasses.field(
        default="owasp",
        metadata=_key(
            "argon2id cost for hashing login secrets (`min` is for tests only).",
            choices=("min", "owasp", "interactive", "moderate", "sensitive"),
        ),
    )
    hash_workers: int = dataclasses.field(
        default=1,
        metadata=_key(
            "Hashes computed at once; each takes the argon2 memory cost.", low=1, high=64
        ),
    )
    max_iterations: int = dataclasses.field(
        default=2_000_000,
        metadata=_key(
            "Most PBKDF2 iterations an account may register with (the no-JS login derives "
            "them on the node).",
            low=1000,
            high=10_000_000,
        ),
    )
    free_failures: int = dataclasses.field(
        default=5,
        metadata=_key(
            "Failed logins of one name before each further attempt must wait (a delay that "
            "doubles with every failure).",
            low=1,
            high=10_000,
        ),
    )
    max_delay: float = dataclasses.field(
        default=60.0,
        metadata=_key(
            "Longest wait between two login attempts of one name (from a device that has not "
            "logged in to it before).",
            low=1,
            high=86_400,
        ),
    )
    hash_rate: float = dataclasses.field(
        default=4.0,
        metadata=_key(
            "Hashes per second the node starts at most, whatever the workers could do: the "
            "budget of hashing work that keeps the chat's share of the machine under a spray.",
            low=0.1,
            high=100_000,
        ),
    )
    hash_queue: int = dataclasses.field(
        default=64,
        metadata=_key(
            "Logins and registrations waiting for a hash worker; more are refused (429) "
            "without hashing.",
            low=1,
            high=100_000,
        ),
    )
    registration: str = dataclasses.field(
        default="open",
        metadata=_key(
            "Who may make an account: `open` (anyone with the address), `waiting` (anyone, "
            "but node staff admit each newcomer with /admit; while no node staff has been "
            "connected for `waiting_fallback` minutes newcomers come straight in), `invite` "
            "(with an invite code that a member made with /invitecode), `closed` (nobody). "
            "The node's first account is always taken: it is the admin.",
            choices=("open", "waiting", "invite", "closed"),
        ),
    )
    waiting_fallback: float = dataclasses.field(
        default=30.0,
        metadata=_key(
            "Minutes without any node staff connected after which `waiting` lets newcomers "
            "straight in (0: never).",
            low=0,
            high=525_600,
        ),
    )
    guests: bool = dataclasses.field(
        default=False,
        metadata=_key(
            "Whether visitors may enter without an account, as guests: a name of the node's "
            "making (`guest-1a2b3c`), for `guest_hours`, in open rooms, unable to make rooms "
            "or invite codes; node staff mute or shut out all guests at once (/guests)."
        ),
    )
    guest_hours: float = dataclasses.field(
        default=4.0,
        metadata=_key("How long a guest's session lasts.", low=0.05, high=24 * 30),
    )
    question: str = dataclasses.field(
        default="",
        metadata=_key(
            "A question every newcomer answers to register (none when empty): a light "
            "challenge of the node's own that works without JavaScript, beside Tor's proof of "
            "work on the onion. Not needed on a private onion."
        ),
    )
    answers: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata=_key(
            "The answers `question` takes, compared without case, accents' forms or spaces "
            "at the ends (NFKC, casefolded)."
        ),
    )
    newcomer_minutes: float = dataclasses.field(
        default=10.0,
        metadata=_key(
            "Minutes a new account is a newcomer: it writes no links and at most "
            "`newcomer_rate` messages a second (0: no such minutes).",
            low=0,
            high=10_080,
        ),
    )
    newcomer_rate: float = dataclasses.field(
        default=0.5,
        metadata=_key(
            "Messages a second a newcomer writes on average (burst 5).", low=0.001, high=1000
        ),
    )
    registrations: int = dataclasses.field(
        default=60,
        metadata=_key(
            "Accounts the node creates per minute at most (counted apart from logins).",
            low=1,
            high=1_000_000,
        ),
    )
    derivations: int = dataclasses.field(
        default=8,
        metadata=_key(
            "No-JS logins waiting for the node to derive a password (two run at once); more "
            "are refused (429).",
            low=1,
            high=10_000,
        ),
    )
    auth_timeout: float = dataclasses.field(
        default=10.0,
        metadata=_key("Seconds a new WebSocket has to authenticate.", low=0.1, high=600),
    )


@dataclasses.dataclass(frozen=True)
class Tor:
    mode: str = dataclasses.field(
        default="auto",
        metadata=_key(
            "`launch` runs the node's own tor, `attach` uses a running tor's control port, `off` "
            "serves locally only; `auto` launches when a tor binary is found, else is `off`.",
            choices=("auto", "launch", "attach", "off"),
        ),
    )
    binary: str = dataclasses.field(
        default="", metadata=_key("The tor program (default: `tor` on PATH, then /usr/sbin/tor).")
    )
    torrc: str = dataclasses.field(
        default="",
        metadata=_key(
            "A file of extra torrc lines for the launched tor, e.g. the `client.torrc` of "
            "`scripts/testnet up` to join the private test network."
        ),
    )
    control: str = dataclasses.field(
        default="127.0.0.1:9051",
        metadata=_key("attach: the control port, `HOST:PORT` or `unix:/path/to/socket`."),
    )
    control_password: str = dataclasses.field(
        default="",
        metadata=_key(
            "attach: the control port's password, when it has no cookie authentication (better "
            "given as ONIONCHAT_TOR_CONTROL_PASSWORD than written in a file)."
        ),
    )
    ephemeral: bool = dataclasses.field(
        default=False,
        metadata=_key("A throwaway onion address, never written to disk (a new one each start)."),
    )
    private: bool = dataclasses.field(
        default=False,
        metadata=_key(
            "v3 client authorization: only clients holding a key from `onionchat onion-auth` "
            "can reach the onion."
        ),
    )
    onion_port: int = dataclasses.field(
        default=80, metadata=_key("The onion service's port.", low=1, high=65535)
    )
    pow: bool = dataclasses.field(
        default=True,
        metadata=_key(
            "tor's proof-of-work defence: under a flood of introductions, visitors who solve a "
            "puzzle get in first (`PoWDefensesEnabled`; needs `pow: yes` in "
            "`tor --list-modules`). Where tor refuses it the onion is published without it, "
            "with a warning."
        ),
    )
    pow_queue_rate: int = dataclasses.field(
        default=250,
        metadata=_key(
            "Introductions a second that tor passes on from its proof-of-work queue "
            "(`PoWQueueRate`; 0: tor's default).",
            low=0,
            high=2**32 - 1,
        ),
    )
    pow_queue_burst: int = dataclasses.field(
        default=2500,
        metadata=_key(
            "Introductions tor may pass on at once from its proof-of-work queue "
            "(`PoWQueueBurst`; 0: tor's default).",
            low=0,
            high=2**32 - 1,
        ),
    )
    max_streams: int = dataclasses.field(
        default=32,
        metadata=_key(
            "Streams open at once on one rendezvous circuit, that is from one visitor "
            "(`MaxStreams`; a browser tab needs about seven; 0: no limit).",
            low=0,
            high=65535,
        ),
    )
    max_streams_close_circuit: bool = dataclasses.field(
        default=True,
        metadata=_key(
            "Close a visitor's circuit when it asks for more than `max_streams` streams, "
            "rather than refusing only the streams past it (`MaxStreamsCloseCircuit`)."
        ),
    )
    log_level: str = dataclasses.field(
        default="notice",
        metadata=_key(
            "Least severe level of tor's own log.",
            choices=("debug", "info", "notice", "warn", "err"),
        ),
    )
    log_file: str = dataclasses.field(
        default="", metadata=_key("tor's own log file (default `DATA_DIR/tor/tor.log`).")
    )
    bootstrap_timeout: float = dataclasses.field(
        default=60.0,
        metadata=_key(
            "Seconds to wait for tor to reach the Tor network before saying why it cannot "
            "(the node serves locally meanwhile, and tor keeps trying).",
            low=1,
            high=3600,
        ),
    )


@dataclasses.dataclass(frozen=True)
class Files:
    max_bytes: int = dataclasses.field(
        default=4 * 1024 * 1024,
        metadata=_key(
            "Largest file one may send, in bytes (as uploaded: sealed, in a key-protected room "
            "or a sealed conversation); 0: no files.",
            low=0,
            high=256 * 1024 * 1024,
        ),
    )
    user_bytes: int = dataclasses.field(
        default=64 * 1024 * 1024,
        metadata=_key(
            "Bytes of files one user keeps on the node at once (past it, an upload is refused "
            "until older files expire or are deleted).",
            low=0,
            high=1 << 40,
        ),
    )
    room_bytes: int = dataclasses.field(
        default=512 * 1024 * 1024,
        metadata=_key(
            "Bytes of files one room (or conversation) keeps at once.", low=0, high=1 << 40
        ),
    )
    days: float = dataclasses.field(
        default=30.0,
        metadata=_key(
            "Days a file is kept after it was sent (its message stays, saying the file is "
            "gone); 0: as long as its message.",
            low=0,
            high=36500,
        ),
    )
    per_minute: int = dataclasses.field(
        default=20,
        metadata=_key("Files one user may upload a minute.", low=1, high=100_000),
    )


@dataclasses.dataclass(frozen=True)
class Federation:
    name: str = dataclasses.field(
        default="",
        metadata=_key(
            "This node's name in its network (lower-case letters, digits and `-`, at most 32): "
            "its users appear elsewhere as `user@NAME`. Empty, or no brokers: a single node."
        ),
    )
    network: str = dataclasses.field(
        default="onionchat",
        metadata=_key("The network's name: the first level of every MQTT topic it uses."),
    )
    secret: str = dataclasses.field(
        default="",
        metadata=_key(
            "The network key every node of the network shares (base64 of 32 bytes, from "
            "`onionchat federation-key`): every envelope is sealed with it and topics are "
            "keyed with it, so brokers learn no room name and no text. Better given as "
            "ONIONCHAT_FEDERATION_SECRET than written in a file."
        ),
    )
    peers: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata=_key(
            "The nodes this one trusts, each `NAME=PUBLIC_KEY` (the key `onionchat "
            "federation-key` prints on that node); messages of any other are dropped."
        ),
    )
    brokers: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata=_key(
            "MQTT brokers, each published to and subscribed on: `mqtt://[USER@]HOST[:PORT]` or "
            "`mqtts://…`, with options after `?`: `password_env=VAR` (the password's "
            "environment variable), `ca=FILE`, `cert=FILE`, `key=FILE` (TLS), `version=3.1.1` "
            "(default 5), `tor=1` (through the node's tor; always for `.onion`), "
            "`proxy=socks5://HOST:PORT` (through another SOCKS5 proxy, which resolves the "
            "broker's name)."
        ),
    )
    rooms: tuple[str, ...] = dataclasses.field(
        default=("*",),
        metadata=_key("Rooms shared with the network; `*` for every room (not direct messages)."),
    )
    session_expiry: int = dataclasses.field(
        default=7 * 86400,
        metadata=_key(
            "Seconds a broker keeps this node's session (and queues its messages) while it is "
            "away (MQTT 5).",
            low=0,
            high=2**32 - 1,
        ),
    )
    connect_timeout: float = dataclasses.field(
        default=30.0,
        metadata=_key(
            "Seconds to reach a broker and get its answer (at least 120 for `.onion` brokers, "
            "whose circuits take long to build).",
            low=1,
            high=600,
        ),
    )
    max_skew: float = dataclasses.field(
        default=300.0,
        metadata=_key(
            "Seconds another node's clock may be ahead of this one's: a message stamped further "
            "in the future is dropped.",
            low=1,
            high=86400,
        ),
    )
    repair_interval: float = dataclasses.field(
        default=300.0,
        metadata=_key(
            "Seconds between two reconciliations of each shared room with the peers (one also "
            "follows every connection to a broker).",
            low=1,
            high=86400,
        ),
    )


BOT_PROMPT = (
    "You are {name}, an assistant in a group chat. Each message you see starts with its "
    "author's name. Answer the person who called you, briefly, in the language they used."
)


@dataclasses.dataclass(frozen=True)
class Bot:
    """One named model. In the file: a `[bots.ID]` table (ID: lowercase letters and digits);
    in the environment: ONIONCHAT_BOTS_ID_KEY. Lists are TOML arrays or comma-separated."""

    enabled: bool = dataclasses.field(
        default=True, metadata=_key("Whether the bot answers at all.")
    )
    name: str = dataclasses.field(
        default="Olga", metadata=_key("The name it answers to and writes under.")
    )
    aliases: tuple[str, ...] = dataclasses.field(
        default=("Ольга", "Оля"),
        metadata=_key("Other names it answers to (no account may take them)."),
    )
    provider: str = dataclasses.field(
        default="ollama",
        metadata=_key(
            "Wire format of the model server: `ollama` (native /api/chat), `openai` "
            "(/v1/chat/completions: OpenAI, Ollama's /v1, llama.cpp, vLLM, LM Studio) or "
            "`anthropic` (/v1/messages).",
            choices=("ollama", "openai", "anthropic"),
        ),
    )
    base_url: str = dataclasses.field(
        default="http://127.0.0.1:11434", metadata=_key("The model server's base URL.")
    )
    model: str = dataclasses.field(default="llama3.2", metadata=_key("The model's name."))
    api_key_env: str = dataclasses.field(
        default="",
        metadata=_key(
            "Name of the environment variable holding the API key (the key itself is never "
            "written in a config file, logged or shown)."
        ),
    )
    system_prompt: str = dataclasses.field(
        default=BOT_PROMPT.format(name="Olga"),
        metadata=_key("What the model is told before the conversation."),
    )
    context_chars: int = dataclasses.field(
        default=8000,
        metadata=_key(
            "Budget of recent room messages (with their authors) sent as context, in characters.",
            low=0,
            high=1_000_000,
        ),
    )
    max_answer_chars: int = dataclasses.field(
        default=4000,
        metadata=_key("Longest answer; a longer one is cut there.", low=1, high=1_000_000),
    )
    max_tokens: int = dataclasses.field(
        default=1024, metadata=_key("Tokens the model may generate.", low=1, high=1_000_000)
    )
    rooms: tuple[str, ...] = dataclasses.field(
        default=("*",), metadata=_key("Rooms it may answer in; `*` for every room.")
    )
    via_tor: bool = dataclasses.field(
        default=False,
        metadata=_key(
            "Reach the model server through the node's tor (for cloud providers; needs Tor on)."
        ),
    )
    first_token_timeout: float = dataclasses.field(
        default=120.0,
        metadata=_key(
            "Seconds to wait for the first token (a local model may need to load).",
            low=0.1,
            high=3600,
        ),
    )
    idle_timeout: float = dataclasses.field(
        default=60.0,
        metadata=_key("Seconds to wait between two tokens.", low=0.1, high=3600),
    )
    queue: int = dataclasses.field(
        default=4,
        metadata=_key(
            "Requests waiting per room while the bot answers there; more are refused.",
            low=0,
            high=1000,
        ),
    )
    user_per_minute: float = dataclasses.field(
        default=6.0,
        metadata=_key("Requests one user may make of this bot per minute.", low=0.01, high=1e6),
    )


BOT_ID = re.compile(r"[a-z][a-z0-9]{0,31}")


def _bot_defaults(bot_id: str) -> Bot:
    """Olga is there out of the box; any other bot starts from its ID as its name."""
    if bot_id == "olga":
        return Bot()
    name = bot_id.capitalize()
    return Bot(name=name, aliases=(), system_prompt=BOT_PROMPT.format(name=name))


@dataclasses.dataclass(frozen=True)
class Settings:
    server: Server = Server()
    log: Log = Log()
    limits: Limits = Limits()
    files: Files = Files()
    auth: Auth = Auth()
    tor: Tor = Tor()
    federation: Federation = Federation()
    brokers: tuple[Broker, ...] = ()  # federation.brokers, parsed and checked at start
    bots: dict[str, Bot] = dataclasses.field(default_factory=lambda: {"olga": Bot()})


SECTIONS: dict[str, type[Any]] = {
    "server": Server,
    "log": Log,
    "limits": Limits,
    "files": Files,
    "auth": Auth,
    "tor": Tor,
    "federation": Federation,
}


def env_name(section: str, key: str) -> str:
    return f"ONIONCHAT_{section}_{key}".upper()


def _convert(raw: Any, kind: Any, where: str, meta: Mapping[str, Any], typed: bool = False) -> Any:
    """Check one value; `typed` sources (TOML) must give numbers as numbers."""
    from_text = isinstance(raw, str) and not typed
    try:
        if kind in (tuple[str, ...], "tuple[str, ...]"):
            if isinstance(raw, str) and not typed:
                raw = [part.strip() for part in raw.split(",") if part.strip()]
            if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
                raise ValueError
            value: Any = tuple(raw)
        elif kind in (bool, "bool"):
            if isinstance(raw, bool):
                value = raw
            elif from_text and raw.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                value = raw.lower() in ("1", "true", "yes", "on")
            else:
                raise ValueError
        elif kind in (int, "int"):
            if isinstance(raw, bool) or not (isinstance(raw, int) or from_text):
                raise ValueError
            value = int(raw)
        elif kind in (float, "float"):
            if isinstance(raw, bool) or not (isinstance(raw, int | float) or from_text):
                raise ValueError
            value = float(raw)
        elif kind in (Path, "Path"):
            if not isinstance(raw, str):
                raise ValueError
            value = Path(raw).expanduser()
        else:
            if not isinstance(raw, str):
                raise ValueError
            value = raw
    except ValueError:
        name = getattr(kind, "__name__", kind)
        raise ConfigError(f"{where}: expected {_article(name)}, got {raw!r}") from None
    if meta["choices"] and value not in meta["choices"]:
        raise ConfigError(f"{where}: must be one of {', '.join(meta['choices'])}, got {raw!r}")
    if meta["low"] is not None and value < meta["low"]:
        raise ConfigError(f"{where}: must be at least {meta['low']}, got {raw!r}")
    if meta["high"] is not None and value > meta["high"]:
        raise ConfigError(f"{where}: must be at most {meta['high']}, got {raw!r}")
    return value


def _article(name: str) -> str:
    return {
        "bool": "true or false",
        "int": "an integer",
        "float": "a number",
        "Path": "a path",
        "str": "a string",
        "tuple[str, ...]": "a list of strings",
    }.get(name, name)


def load(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Layer the sources; `overrides` maps `section.key` to values from flags."""
    env = os.environ if env is None else env
    table: dict[str, Any] = {}
    if path is not None:
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for section in table:
        if section == "bots":
            continue
        if section not in SECTIONS:
            raise ConfigError(f"{path}: unknown section [{section}]")
        if not isinstance(table[section], dict):
            raise ConfigError(f"{path}: {section} must be a table ([{section}])")
    known = {env_name(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    for name in env:
        if name.startswith("ONIONCHAT_BOTS_"):
            continue  # checked by _bots
        if name.startswith("ONIONCHAT_") and name not in known:
            raise ConfigError(f"{name}: unknown setting (see docs/config.md)")
    for dotted in overrides or {}:
        if dotted.partition(".")[0] not in SECTIONS:
            raise ConfigError(f"{dotted}: unknown setting")
    sections = {}
    for section, cls in SECTIONS.items():
        given = dict(table.get(section, {}))
        values = {}
        for field in dataclasses.fields(cls):
            meta = field.metadata
            dotted = f"{section}.{field.name}"
            if overrides and overrides.get(dotted) is not None:
                values[field.name] = _convert(
                    overrides[dotted], field.type, f"--{field.name.replace('_', '-')}", meta
                )
            elif env_name(section, field.name) in env:
                name = env_name(section, field.name)
                values[field.name] = _convert(env[name], field.type, name, meta)
            elif field.name in given:
                values[field.name] = _convert(
                    given[field.name], field.type, dotted, meta, typed=True
                )
            given.pop(field.name, None)
        if given:
            raise ConfigError(f"{path}: unknown key {section}.{sorted(given)[0]}")
        sections[section] = cls(**values)
    settings = Settings(**sections, bots=_bots(table.get("bots", {}), env, path))
    _check_together(settings)
    return dataclasses.replace(settings, brokers=_check_federation(settings, env))


def _bots(given: Any, env: Mapping[str, str], path: Path | None) -> dict[str, Bot]:
    """`[bots.ID]` tables and ONIONCHAT_BOTS_ID_KEY variables over the defaults (Olga)."""
    if not isinstance(given, dict) or not all(isinstance(v, dict) for v in given.values()):
        raise ConfigError(f"{path}: bots must hold one table per bot ([bots.olga])")
    fields = {f.name: f for f in dataclasses.fields(Bot)}
    from_env: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith("ONIONCHAT_BOTS_"):
            continue
        rest = name.removeprefix("ONIONCHAT_BOTS_")
        key = next((k for k in fields if rest.endswith("_" + k.upper())), None)
        bot_id = rest[: -len(key) - 1].lower() if key else ""
        if key is None or not BOT_ID.fullmatch(bot_id):
            raise ConfigError(f"{name}: unknown setting (bots are ONIONCHAT_BOTS_<ID>_<KEY>)")
        from_env.setdefault(bot_id, {})[key] = value
    bots: dict[str, Bot] = {}
    for bot_id in ["olga", *given, *from_env]:
        if bot_id in bots:
            continue
        if not BOT_ID.fullmatch(bot_id):
            raise ConfigError(f"bots.{bot_id}: a bot ID is lowercase letters and digits")
        table, variables = dict(given.get(bot_id, {})), from_env.get(bot_id, {})
        values = {}
        for key in list(table):
            if key not in fields:
                raise ConfigError(f"{path}: unknown key bots.{bot_id}.{key}")
        for key, field in fields.items():
            if key in variables:
                where = f"ONIONCHAT_BOTS_{bot_id.upper()}_{key.upper()}"
                values[key] = _convert(variables[key], field.type, where, field.metadata)
            elif key in table:
                where = f"bots.{bot_id}.{key}"
                values[key] = _convert(table[key], field.type, where, field.metadata, typed=True)
        bots[bot_id] = dataclasses.replace(_bot_defaults(bot_id), **values)
    taken: dict[str, str] = {}
    for bot_id, bot in bots.items():
        if not bot.enabled:
            continue
        for label in (bot.name, *bot.aliases):
            try:
                names.username(label)  # a bot has an account under its name; aliases are kept
            except ProtocolError as exc:  # from accounts too, so they must be valid names
                raise ConfigError(f"bots.{bot_id}: the name {label!r}: {exc}") from None
            if any(c.isspace() for c in label.strip()):
                raise ConfigError(f"bots.{bot_id}: the name {label!r} must be one word")
            if label.casefold() in taken:
                raise ConfigError(
                    f"bots.{bot_id}: the name {label!r} is also bots.{taken[label.casefold()]}'s"
                )
            taken[label.casefold()] = bot_id
        if bot.api_key_env and bot.api_key_env not in env:
            raise ConfigError(
                f"bots.{bot_id}.api_key_env: the environment has no {bot.api_key_env}"
            )
    return {bot_id: bot for bot_id, bot in bots.items() if bot.enabled}


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _check_together(settings: Settings) -> None:
    server, tor = settings.server, settings.tor
    if tor.mode != "off" and server.host not in LOOPBACK and not server.host.startswith("127."):
        raise ConfigError(
            f"server.host: {server.host} would let anyone reach the node around Tor; with Tor "
            "on it listens on its unix socket or on loopback only (tor.mode = off / --no-tor "
            "to serve a normal address)"
        )
    if bool(server.tls_cert) != bool(server.tls_key):
        raise ConfigError("server.tls_cert and server.tls_key: give both or neither")
    for name, path in (("server.tls_cert", server.tls_cert), ("server.tls_key", server.tls_key)):
        if path and not Path(path).expanduser().is_file():
            raise ConfigError(f"{name}: no such file: {path}")
    if tor.pow and tor.pow_queue_rate and tor.pow_queue_burst < tor.pow_queue_rate:
        raise ConfigError(
            f"tor.pow_queue_burst: {tor.pow_queue_burst} is below tor.pow_queue_rate "
            f"({tor.pow_queue_rate}): tor needs the burst to be at least the rate"
        )
    if tor.torrc and not Path(tor.torrc).expanduser().is_file():
        raise ConfigError(f"tor.torrc: no such file: {tor.torrc}")
    if settings.auth.max_iterations < settings.auth.pbkdf2_iterations:
        raise ConfigError(
            f"auth.max_iterations: {settings.auth.max_iterations} is below "
            f"auth.pbkdf2_iterations ({settings.auth.pbkdf2_iterations}): no account could register"
        )
    if bool(settings.auth.question.strip()) != bool(settings.auth.answers):
        raise ConfigError("auth.question and auth.answers: give both or neither")
    limits = settings.limits
    needed = max_box_length(limits.max_text_chars) + 512
    if needed > limits.max_frame_bytes:
        raise ConfigError(
            f"limits.max_text_chars: {limits.max_text_chars} characters, sealed in a "
            f"key-protected room, need frames of {needed} bytes, over "
            f"limits.max_frame_bytes ({limits.max_frame_bytes})"
        )


NODE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
MQTT_VERSIONS = ("5", "3.1.1")


@dataclasses.dataclass(frozen=True)
class Broker:
    """One broker of `federation.brokers`, as parsed and checked at start."""

    url: str  # as given, without the password: the broker's name in logs and the outbox
    host: str
    port: int
    tls: bool
    username: str | None = None
    password_env: str = ""
    password: str | None = dataclasses.field(default=None, repr=False)  # read at start
    ca: str = ""
    cert: str = ""
    key: str = ""
    version: str = "5"
    tor: bool = False
    proxy: str = ""  # socks5://HOST:PORT, for a broker not reached through tor

    @property
    def onion(self) -> bool:
        return self.host.endswith(".onion")


def broker(url: str, env: Mapping[str, str] | None = None) -> Broker:
    """Parse and check one broker URL; ConfigError says what is wrong with it."""
    where = f"federation.brokers: {url!r}"
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"{where}: give mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    if parsed.password is not None:
        raise ConfigError(f"{where}: give the password as password_env=VAR, not in the URL")
    try:
        port = parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)
    except ValueError:
        raise ConfigError(f"{where}: the port is not a number from 1 to 65535") from None
    if not parsed.hostname:
        raise ConfigError(f"{where}: no host")
    options = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
    known = {"password_env", "ca", "cert", "key", "version", "tor", "proxy"}
    if unknown := sorted(set(options) - known):
        raise ConfigError(
            f"{where}: unknown option {unknown[0]} (known: {', '.join(sorted(known))})"
        )
    version = options.get("version", "5")
    if version not in MQTT_VERSIONS:
        raise ConfigError(f"{where}: version must be 5 or 3.1.1")
    tls = parsed.scheme == "mqtts"
    for option in ("ca", "cert", "key"):
        if options.get(option):
            if not tls:
                raise ConfigError(f"{where}: {option}= needs mqtts://")
            if not Path(options[option]).expanduser().is_file():
                raise ConfigError(f"{where}: {option}: no such file: {options[option]}")
    if bool(options.get("cert")) != bool(options.get("key")):
        raise ConfigError(f"{where}: give cert= and key= together")
    password_env = options.get("password_env", "")
    password = (os.environ if env is None else env).get(password_env) if password_env else None
    if password_env and password is None:
        raise ConfigError(f"{where}: the environment variable {password_env} is not set")
    if password_env and parsed.username is None:
        raise ConfigError(f"{where}: a password needs a user (mqtt://USER@HOST)")
    tor = options.get("tor", "0").lower() in ("1", "true", "yes", "on")
    proxy = options.get("proxy", "")
    if proxy:
        if tor or parsed.hostname.endswith(".onion"):
            raise ConfigError(f"{where}: proxy= is for a broker not reached through tor")
        _socks5(where, proxy)
    return Broker(
        url=urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, "", "", "")),
        host=parsed.hostname,
        port=port,
        tls=tls,
        username=urllib.parse.unquote(parsed.username) if parsed.username else None,
        password_env=password_env,
        password=password,
        ca=options.get("ca", ""),
        cert=options.get("cert", ""),
        key=options.get("key", ""),
        version=version,
        tor=tor or parsed.hostname.endswith(".onion"),
        proxy=proxy,
    )


def _socks5(where: str, url: str) -> None:
    parsed = urllib.parse.urlsplit(url)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme != "socks5" or not parsed.hostname or port is None or parsed.username:
        raise ConfigError(
            f"{where}: give proxy=socks5://HOST:PORT (the broker's name is resolved by the proxy)"
        )


def peers(settings: Settings) -> dict[str, bytes]:
    """`federation.peers` as node name -> Ed25519 public key."""
    out: dict[str, bytes] = {}
    for entry in settings.federation.peers:
        name, _, key = entry.partition("=")
        name = name.strip()
        if not NODE_NAME.fullmatch(name):
            raise ConfigError(f"federation.peers: {entry!r}: give NAME=PUBLIC_KEY")
        try:
            raw = base64.b64decode(key.strip(), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ConfigError(f"federation.peers: {name}: the key is not base64 of 32 bytes")
        if name in out or name == settings.federation.name:
            raise ConfigError(f"federation.peers: {name} is given twice")
        out[name] = raw
    return out


def network_secret(settings: Settings) -> bytes:
    try:
        raw = base64.b64decode(settings.federation.secret, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(
            "federation.secret: not base64 of 32 bytes (`onionchat federation-key` makes one)"
        )
    return raw


def _check_federation(settings: Settings, env: Mapping[str, str]) -> tuple[Broker, ...]:
    fed = settings.federation
    if not fed.brokers:
        return ()
    if not NODE_NAME.fullmatch(fed.name):
        raise ConfigError(
            f"federation.name: {fed.name!r}: with brokers, give this node a name of lower-case "
            "letters, digits and `-` (at most 32)"
        )
    if not fed.network or "/" in fed.network or "+" in fed.network or "#" in fed.network:
        raise ConfigError("federation.network: a name without /, + or #")
    if any(k.lower() == "mqtt_proxy" for k in (*env, *os.environ)):
        raise ConfigError(
            "mqtt_proxy is set in the environment: paho would send broker traffic through it "
            "unasked; unset it (a broker through Tor takes tor=1)"
        )
    network_secret(settings)
    peers(settings)
    parsed = tuple(broker(url, env) for url in fed.brokers)
    if len({b.url for b in parsed}) != len(parsed):
        raise ConfigError("federation.brokers: a broker is given twice")
    if any(b.tor for b in parsed) and settings.tor.mode == "off":
        raise ConfigError("federation.brokers: a broker through Tor needs tor (tor.mode)")
    return parsed


def documented_keys() -> list[tuple[str, str, Any, str]]:
    """(section.key, environment variable, default, doc) for every setting."""
    return [
        (f"{s}.{f.name}", env_name(s, f.name), f.default, f.metadata["doc"])
        for s, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
    ] + [
        (f"bots.ID.{f.name}", f"ONIONCHAT_BOTS_ID_{f.name.upper()}", f.default, f.metadata["doc"])
        for f in dataclasses.fields(Bot)
    ]
