"""`onionchat serve` runs a node; `onionchat connect` is the command-line client."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import shutil
import socket
import sys
from pathlib import Path

from onionchat import __version__, config, logs

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
  onionchat connect https://chat.example:8443 --user erin --ca private-ca.pem"""


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
        help="the node's address; a fragment #room=NAME&key=KEY picks a room and its key",
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
    path = args.config
    if path is None and Path("onionchat.toml").exists():
        path = Path("onionchat.toml")
    overrides = {
        "server.host": args.host,
        "server.port": args.port,
        "server.data_dir": args.data_dir,
        "log.level": args.log_level,
        "log.format": args.log_format,
    }
    try:
        settings = config.load(path, overrides=overrides)
    except config.ConfigError as exc:
        print(f"onionchat: config error: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log.level, settings.log.format)
    return run_server(settings)


def run_server(settings: config.Settings) -> int:
    import uvicorn

    from onionchat.app import create_app

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
    url = f"http://{shown}:{port}/"
    uv_config = uvicorn.Config(
        create_app(settings),
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        ws="websockets-sansio",
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
    )
    server = uvicorn.Server(uv_config)
    log.info(
        "OnionChat %s listening on %s",
        __version__,
        url,
        extra={"event": "start", "url": url, "port": port},
    )
    log.info(
        "chat from a terminal: %s connect %s --user NAME --register",
        _program(),
        url,
        extra={"event": "hint"},
    )
    server.run(sockets=[sock])
    return 0


def _program() -> str:
    """How to run `onionchat` from here: by name when it is on PATH, else by its path."""
    script = Path(sys.executable).parent / "onionchat"
    if shutil.which("onionchat") or not script.exists():
        return "onionchat"
    return os.path.relpath(script)


def _connect(args: argparse.Namespace) -> int:
    from onionchat import client

    logging.basicConfig(level=logging.WARNING, format="onionchat: %(message)s")
    try:
        options = client.Options.from_args(args)
    except client.ClientError as exc:
        print(f"onionchat: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(client.main(options))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _connect(args)


if __name__ == "__main__":
    sys.exit(main())
