"""`onionchat serve` runs a node; `onionchat connect` is the command-line client."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import errno
import importlib.util
import ipaddress
import logging
import os
import secrets
import shlex
import shutil
import socket
import ssl
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from onionchat import __version__, config, logs

if TYPE_CHECKING:
    from onionchat.tor import Reporter

log = logging.getLogger("onionchat")

EPILOG_SERVE = """\
Every option also has a config key ([server] host, port, data_dir; [log] level, format) and an
environment variable (ONIONCHAT_SERVER_PORT, ...); flags win over the environment, which wins
over the file. docs/config.md lists every key."""

EPILOG_CONNECT = """\
examples:
  onionchat connect http://127.0.0.1:8080 --user alice --register
  onionchat connect http://127.0.0.1:8080 --user bob --room dev --pipe < lines.txt
  onionchat connect 'http://HOST:8080/#room=secret&key=KEY' --user carol
  onionchat connect http://XXXX.onion --user dave        (through tor at 127.0.0.1:9050)
  onionchat connect http://XXXX.onion --user dave --socks 127.0.0.1:9150   (Tor Browser's tor)
  onionchat connect https://chat.example:8443 --user erin --ca private-ca.pem
  onionchat connect unix:data/web.sock --user frank   (a node's own socket, on its machine)"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onionchat",
        description="OnionChat: a self-hosted anonymous group chat on a Tor onion service.",
    )
    parser.add_argument("--version", action="version", version=f"onionchat {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="run a chat node",
        description="Run a chat node: the WebSocket chat, the HTTP API and the web page.",
        epilog=EPILOG_SERVE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", help="TCP port to listen on; 0 picks a free one (default 8080)")
    serve.add_argument(
        "--data-dir", metavar="PATH", help="directory for the database and secrets (default ./data)"
    )
    serve.add_argument(
        "--listen",
        choices=["auto", "unix", "tcp"],
        help="a unix socket in the data directory that only tor reaches, or TCP --host:--port "
        "(default auto: unix when the node launches its own tor)",
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="TOML config file (default ./onionchat.toml if it exists)",
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="least severe level logged (default info)",
    )
    serve.add_argument(
        "--log-format", choices=["text", "json"], help="text for people (default) or JSON lines"
    )
    tor = serve.add_argument_group("Tor (the node is published as a v3 onion service)")
    tor.add_argument(
        "--no-tor",
        dest="tor_mode",
        action="store_const",
        const="off",
        help="no onion service: serve locally (or on --host) only",
    )
    tor.add_argument(
        "--tor-attach",
        metavar="CONTROL",
        help="use a running tor's control port (HOST:PORT or unix:PATH) instead of launching one",
    )
    tor.add_argument(
        "--torrc",
        metavar="FILE",
        help="extra torrc lines for the launched tor (e.g. build/testnet/client.torrc)",
    )
    tor.add_argument(
        "--ephemeral",
        action="store_true",
        default=None,
        help="a throwaway onion address, never written to disk",
    )
    tor.add_argument(
        "--private",
        action="store_true",
        default=None,
        help="only clients holding a key (onionchat onion-auth) can reach the onion",
    )
    tls = serve.add_argument_group("TLS (for a node served on a normal address, with --no-tor)")
    tls.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain: serve HTTPS/WSS")
    tls.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")

    auth = commands.add_parser(
        "onion-auth",
        help="manage who may reach a private onion (--private)",
        description="Manage the clients authorized to reach this node's private onion "
        "(serve --private). A running node reads them when it starts: restart it to apply.",
    )
    _data_dir(auth)
    actions = auth.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="authorize a client and print its key")
    add.add_argument("name", help="a label for the client (letters, digits, - or _)")
    add.add_argument(
        "--public-key",
        metavar="BASE32",
        help="the client's own x25519 public key, if it made its key pair itself",
    )
    actions.add_parser("list", help="list the authorized clients (no secrets)")
    show = actions.add_parser("show", help="print a client's key again")
    show.add_argument("name")
    remove = actions.add_parser("remove", help="revoke a client")
    remove.add_argument("name")

    fed = commands.add_parser(
        "federation-key",
        help="print this node's public key for its peers (and make a network secret)",
        description="Print this node's federation public key (made in the data directory at "
        "first use), to give the operators of its peers for their federation.peers.",
    )
    _data_dir(fed)
    fed.add_argument(
        "--new-network-secret",
        action="store_true",
        help="also print a fresh network secret (federation.secret) for a new network",
    )

    admin = commands.add_parser(
        "admin",
        help="roles, bans, purges and the audit log of a node (running or not)",
        description="Act on the node's data directory as its operator. A running node takes "
        "the change in within a few seconds.",
    )
    admin.add_argument(
        "--data-dir", metavar="PATH", help="the node's data directory (default ./data)"
    )
    actions = admin.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("users", help="every account, its role and when it was made")
    actions.add_parser("rooms", help="every room, its mode and its staff")
    grant = actions.add_parser("grant", help="give an account a node role")
    grant.add_argument("name")
    grant.add_argument("role", choices=["admin", "moderator", "member", "guest"])
    revoke = actions.add_parser("revoke", help="make an account a plain member again")
    revoke.add_argument("name")
    for verb, text in (("ban", "keep a user off the node (or out of --room)"), ("mute", "")):
        act = actions.add_parser(verb, help=text or "let a user read but not write")
        act.add_argument("name")
        act.add_argument("--room", help="only in this room")
        act.add_argument("--for", dest="span", metavar="DURATION", help="30m, 12h, 7d, 2w")
        act.add_argument("--reason")
    for verb, text in (("unban", "lift a ban or a kick"), ("unmute", "lift a mute")):
        lift = actions.add_parser(verb, help=text)
        lift.add_argument("name")
        lift.add_argument("--room")
    purge = actions.add_parser("purge", help="delete a user's messages in a room")
    purge.add_argument("name")
    purge.add_argument("--room", required=True)
    purge.add_argument("--count", type=int, default=1000)
    invite = actions.add_parser("invite", help="make an invite code (registration = invite)")
    invite.add_argument("--uses", type=int, default=1, help="accounts it makes (default 1)")
    invite.add_argument("--hours", type=int, default=72, help="how long it lasts (default 72)")
    actions.add_parser("invites", help="every invite code: who made it, its uses, its end")
    revoke_code = actions.add_parser("revoke-code", help="stop an invite code (first 4 letters)")
    revoke_code.add_argument("label")
    audit = actions.add_parser("audit", help="the audit log, newest last")
    audit.add_argument("--room")
    audit.add_argument("-n", type=int, default=50, help="how many entries (default 50)")

    health = commands.add_parser(
        "health",
        help="ask a running node whether it is healthy (for container health checks)",
        description="Ask the running node's /api/health, over its unix socket or its TCP port "
        "as the config says; exit 0 when it is healthy, 1 otherwise.",
    )
    _data_dir(health)
    health.add_argument("--config", metavar="FILE", type=Path, help="TOML config file")
    health.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS")

    for name, what in (("backup", "write"), ("restore", "read")):
        kept = commands.add_parser(
            name,
            help="back up the database and keys" if name == "backup" else "restore a backup",
            description=(
                "Write a consistent copy of the node's database and keys to FILE (a running "
                "node may be backed up), sealed with a passphrase if one is given."
                if name == "backup"
                else "Restore a backup into a new (or empty) data directory: the node keeps "
                "its onion address, its federation identity, its accounts and history."
            ),
        )
        kept.add_argument("file", metavar="FILE", help=f"the backup to {what}")
        _data_dir(kept)
        kept.add_argument(
            "--passphrase-file",
            metavar="FILE",
            help="a file whose first line is the passphrase that seals (or opens) the backup",
        )

    doctor = commands.add_parser(
        "doctor",
        help="check the config, the data directory, tor, the brokers and the model servers",
        description="Try each part `serve` would use, as it would use it, and say in plain "
        "words what is wrong and what to do; exit 0 when nothing failed, 1 otherwise.",
    )
    doctor.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="TOML config file (default ./onionchat.toml if it exists)",
    )
    _data_dir(doctor)
    doctor.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="the longest each check may take (default 30 for tor and what goes through it, "
        "10 for the others)",
    )

    connect = commands.add_parser(
        "connect",
        help="chat from the terminal",
        description="Chat from the terminal: an interactive prompt, or --pipe for scripts.",
        epilog=EPILOG_CONNECT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    connect.add_argument(
        "url",
        metavar="URL",
        help="the node's address (or unix:PATH, the socket of a node on this machine); a "
        "fragment #room=NAME&key=KEY picks a room and its key",
    )
    connect.add_argument("--user", required=True, metavar="NAME", help="your username")
    connect.add_argument("--room", metavar="NAME", help="room to join (default lobby)")
    connect.add_argument(
        "--password-file",
        metavar="FILE",
        type=Path,
        help="read the password from the first line of FILE instead of asking",
    )
    connect.add_argument("--register", action="store_true", help="create the account first")
    connect.add_argument(
        "--invite", metavar="CODE", help="with --register: the invite code the node asks for"
    )
    connect.add_argument(
        "--answer", metavar="TEXT", help="with --register: the answer to the node's question"
    )
    connect.add_argument(
        "--key",
        metavar="KEY",
        help="the room key (base64url) of a key-protected room; creates the "
        "room key-protected if it does not exist",
    )
    connect.add_argument(
        "--pipe",
        action="store_true",
        help="scripts: send each stdin line, print each message as a JSON "
        "line, exit at end of input",
    )
    connect.add_argument(
        "--bell",
        action="store_true",
        help="ring the terminal's bell when someone mentions you or writes to you directly",
    )
    connect.add_argument(
        "--socks",
        metavar="HOST:PORT",
        help="connect through this SOCKS5 proxy, names resolved by the proxy (default: none, "
        "but tor's 127.0.0.1:9050 for .onion addresses)",
    )
    connect.add_argument(
        "--ca",
        metavar="FILE",
        type=Path,
        help="trust the certificates this PEM CA bundle signed (a private CA) instead of the "
        "system's CAs, for https:// URLs",
    )
    connect.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up connecting after this long (default 30)",
    )
    return parser


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        "server.host": args.host,
        "server.port": args.port,
        "server.data_dir": args.data_dir,
        "server.listen": args.listen,
        "log.level": args.log_level,
        "log.format": args.log_format,
        "server.tls_cert": args.tls_cert,
        "server.tls_key": args.tls_key,
        "tor.mode": "attach" if args.tor_attach else args.tor_mode,
        "tor.control": args.tor_attach,
        "tor.torrc": args.torrc,
        "tor.ephemeral": args.ephemeral,
        "tor.private": args.private,
    }
    settings = _settings(args.config, overrides)
    if settings is None:
        return 2
    logs.setup(settings.log.level, settings.log.format)
    return run_server(settings)


def _settings(path: Path | None, overrides: dict[str, str | None]) -> config.Settings | None:
    """The settings as `serve` reads them (./onionchat.toml unless --config), or None once the
    error is said."""
    if path is None and Path("onionchat.toml").exists():
        path = Path("onionchat.toml")
    try:
        return config.load(path, overrides=overrides)
    except config.ConfigError as exc:
        print(f"onionchat: config error: {exc}", file=sys.stderr)
        return None


def run_server(settings: config.Settings) -> int:
    import uvicorn

    from onionchat.app import create_app
    from onionchat.http import QuietServer, protocols
    from onionchat.server import DATABASE, private_data_dir
    from onionchat.store import schema_problem
    from onionchat.tor import web_socket

    try:
        path = web_socket(settings)
    except config.ConfigError as exc:
        print(f"onionchat: config error: {exc}", file=sys.stderr)
        return 2
    problem = schema_problem(settings.server.data_dir / DATABASE)
    if problem is not None:
        log.error("cannot start: %s", problem, extra={"event": "error"})
        return 1
    tls = settings.server.tls_cert
    if path is not None:
        private_data_dir(settings.server.data_dir)
        try:
            sock = _unix_listener(path)
        except OSError as exc:
            log.error(
                "cannot listen on %s: %s", path, exc.strerror or exc, extra={"event": "error"}
            )
            return 1
        url, port = f"unix:{path}", 0
    else:
        host = settings.server.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, settings.server.port))
        except OSError as exc:
            log.error(
                "cannot listen on %s port %s: %s",
                host,
                settings.server.port,
                exc.strerror,
                extra={"event": "error"},
            )
            return 1
        port = sock.getsockname()[1]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        url = f"{'https' if tls else 'http'}://{shown}:{port}/"
        # The onion service needs the port picked for --port 0.
        settings = dataclasses.replace(
            settings, server=dataclasses.replace(settings.server, port=port)
        )
    # uvicorn's protocols with the socket cap, the request head's size and deadline, and the
    # ping rate (onionchat/http.py); httptools', or h11's when httptools is missing.
    http_protocol, ws_protocol = protocols(settings)
    uv_config = uvicorn.Config(
        create_app(settings, _reporter(settings)),
        ssl_certfile=tls or None,
        ssl_keyfile=settings.server.tls_key or None,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=http_protocol,
        ws=ws_protocol,
        ws_per_message_deflate=False,
        ws_max_size=4 * settings.limits.max_frame_bytes,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="on",
        backlog=4096,
        # idle kept-alive sockets are closed after this many seconds between requests
        timeout_keep_alive=5,
        # h11 refuses a longer head itself (httptools is fed at most this much by http.py)
        h11_max_incomplete_event_size=settings.limits.header_bytes,
        # no limit_concurrency: it counts WebSockets and answers plain requests 503 (the
        # health check first) once they are many; the socket cap in http.py refuses early
        timeout_graceful_shutdown=int(settings.server.shutdown_grace),
    )
    server = QuietServer(uv_config)
    where = {"socket": str(path)} if path else {"port": port}
    log.info(
        "OnionChat %s listening on %s%s",
        __version__,
        url,
        " (a unix socket that only this user, and its tor, can open)" if path else "",
        extra={"event": "start", "url": url, **where},
    )
    log.info(
        "chat from a terminal: %s connect %s --user NAME --register",
        _program(),
        shlex.quote(url) if path else url,
        extra={"event": "hint"},
    )
    _say_tor(settings, url)
    try:
        server.run(sockets=[sock])
    finally:
        if path is not None:
            path.unlink(missing_ok=True)
    return 0


def _unix_listener(path: Path) -> socket.socket:
    """A socket only this user can open (tor runs as this user too). A socket file left by a
    node that was killed is replaced; a node still listening there gets its own error."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()
            else:
                raise OSError(errno.EADDRINUSE, "another node is listening there")
            finally:
                probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    return sock


def _reporter(settings: config.Settings) -> Reporter:
    from onionchat.terminal import Terminal
    from onionchat.tor import Reporter

    return Terminal() if settings.log.format == "text" else Reporter()


def _say_tor(settings: config.Settings, url: str) -> None:
    """Off is said loudly: someone who expected an onion must not believe they have one."""
    from onionchat.tor import resolve_mode

    mode = resolve_mode(settings)
    if mode != "off":
        how = f"attached to {settings.tor.control}" if mode == "attach" else "launching tor"
        log.info(
            "onion service: %s; serving locally at %s meanwhile",
            how,
            url,
            extra={"event": "tor_mode", "mode": mode},
        )
        return
    why = (
        "tor.mode is off"
        if settings.tor.mode == "off"
        else "no tor program found (apt-get install tor, or set tor.binary)"
    )
    log.warning(
        "TOR IS OFF (%s): no onion service; the node is reachable only at %s",
        why,
        url,
        extra={"event": "tor_mode", "mode": "off"},
    )


def _program() -> str:
    """How to run `onionchat` from here, to paste: by name when it is on PATH, else by its
    path: relative when it is below the working directory, else absolute (a relative path that
    climbs out and back in is no help to a reader)."""
    script = Path(sys.executable).parent / "onionchat"
    if shutil.which("onionchat") == str(script) or not script.exists():
        return "onionchat"
    relative = os.path.relpath(script)
    return shlex.quote(relative if not relative.startswith("..") else str(script.absolute()))


def _connect(args: argparse.Namespace) -> int:
    from onionchat import client

    logging.basicConfig(level=logging.WARNING, format="onionchat: %(message)s")
    try:
        options = client.Options.from_args(args)
    except client.ClientError as exc:
        print(f"onionchat: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(client.main(options))


def _onion_auth(args: argparse.Namespace) -> int:
    from onionchat.onion_keys import Clients, OnionKey, OnionKeyError

    data_dir = Path(args.data_dir or config.Server().data_dir)
    clients = Clients(data_dir)
    try:
        if args.action == "list":
            for client in clients.all():
                kind = "key made here" if client.private else "own key"
                print(f"{client.name}\t{client.public}\t({kind})")
            return 0
        if args.action == "remove":
            if not clients.remove(args.name):
                print(f"onionchat: no client named {args.name!r}", file=sys.stderr)
                return 1
            print(f"removed {args.name}: it cannot reach the onion once the node restarts")
            return 0
        if args.action == "add":
            client = clients.add(args.name, args.public_key)
        else:
            found = clients.get(args.name)
            if found is None:
                print(f"onionchat: no client named {args.name!r}", file=sys.stderr)
                return 1
            client = found
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        address = OnionKey.load_or_create(data_dir).address
    except OnionKeyError as exc:
        print(f"onionchat: {exc}", file=sys.stderr)
        return 1
    if client.private is None:
        print(f"{client.name} is authorized with its own key; it holds the private half")
        return 0
    print(
        f"client {client.name}: give them this key; Tor Browser asks for it when they open\n"
        f"http://{address}.onion/\n\n  {client.private}\n\n"
        f"For a tor client, put this line in {client.name}.auth_private in its "
        f"ClientOnionAuthDir:\n\n  {client.auth_private_line(address)}\n\n"
        "(The address is that of the kept key: a node run with --ephemeral has another.)"
    )
    if args.action == "add":
        print("A running node applies the change when it restarts.")
    return 0


def _federation_key(args: argparse.Namespace) -> int:
    from onionchat.federation.network import node_key
    from onionchat.server import private_data_dir

    data_dir = Path(args.data_dir or config.Server().data_dir)
    private_data_dir(data_dir)
    public = base64.b64encode(bytes(node_key(data_dir).verify_key)).decode()
    print(f"this node's public key, for its peers' federation.peers (NAME={public}):\n{public}")
    if args.new_network_secret:
        secret = base64.b64encode(secrets.token_bytes(32)).decode()
        print(
            "\na new network secret: give it to every node of the network as "
            f"ONIONCHAT_FEDERATION_SECRET, and keep it as secret as a password:\n{secret}"
        )
    return 0


def _health(args: argparse.Namespace) -> int:
    import httpx

    from onionchat.tor import web_socket

    settings = _settings(args.config, {"server.data_dir": args.data_dir})
    if settings is None:
        return 2
    server = settings.server
    try:
        path = web_socket(settings)
    except config.ConfigError as exc:
        print(f"onionchat: config error: {exc}", file=sys.stderr)
        return 2
    host = server.host
    with contextlib.suppress(ValueError):  # a name, not an address
        if ipaddress.ip_address(host).is_unspecified:  # listening everywhere: ask loopback
            host = "::1" if ":" in host else "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if server.tls_cert else "http"
    url = "http://localhost/api/health" if path else f"{scheme}://{shown}:{server.port}/api/health"
    # Over loopback the node must present its own certificate, whatever name it is for.
    verify = ssl.create_default_context(cafile=server.tls_cert) if server.tls_cert else True
    if isinstance(verify, ssl.SSLContext):
        verify.check_hostname = False
        verify.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    transport = httpx.HTTPTransport(uds=str(path)) if path else None
    try:
        with httpx.Client(transport=transport, verify=verify, trust_env=False) as http:
            answer = http.get(url, timeout=args.timeout)
        report = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"unhealthy: no answer from {path or url}: {exc}")
        return 1
    said = ", ".join(
        f"{what} {report.get(what)}" for what in ("status", "database", "tor", "clients")
    )
    if answer.status_code != 200 or report.get("status") != "ok":
        print(f"unhealthy ({answer.status_code}): {said}")
        return 1
    print(f"healthy: {said}")
    return 0


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", metavar="PATH", help="the node's data directory (default ./data)"
    )


def _backup(args: argparse.Namespace) -> int:
    from onionchat import backup
    from onionchat.onion_keys import write_secret

    data_dir = Path(args.data_dir or config.Server().data_dir)
    try:
        passphrase = _passphrase(args.passphrase_file)
        if args.command == "backup":
            archive, held = backup.make(data_dir, passphrase)
            write_secret(Path(args.file), archive)
            sealed = "sealed with the passphrase" if passphrase else "NOT sealed: keep it safe"
            print(f"wrote {args.file} ({len(archive):,} bytes, {sealed}): {', '.join(held)}")
        else:
            held = backup.restore(Path(args.file).read_bytes(), data_dir, passphrase)
            print(f"restored into {data_dir}: {', '.join(held)}")
    except (backup.BackupError, OSError) as exc:
        print(f"onionchat: {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _passphrase(path: str | None) -> bytes | None:
    if path is None:
        return None
    lines = Path(path).read_bytes().splitlines()
    if not lines or not lines[0]:
        raise OSError(f"{path}: the first line (the passphrase) is empty")
    return lines[0]


def _doctor(args: argparse.Namespace) -> int:
    from onionchat import doctor

    return doctor.run(args.config, args.data_dir, args.timeout)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "doctor":
        return _doctor(args)
    if args.command in ("backup", "restore"):
        return _backup(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "onion-auth":
        return _onion_auth(args)
    if args.command == "federation-key":
        return _federation_key(args)
    if args.command == "health":
        return _health(args)
    if args.command == "admin":
        from onionchat import admin

        return admin.run(args)
    return _connect(args)


if __name__ == "__main__":
    sys.exit(main())
