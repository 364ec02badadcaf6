"""`python -m bench MODE [options]`: OnionChat's benchmark, optionally beside OnionShare.

Modes: fixed, saturate, idle, ingest, history, bot, hostile, federation, and all (every mode,
with the OnionShare comparison). Results go to bench/results/DATE-LABEL/ as JSON, Markdown
and a PNG plot.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from bench import bot, federation, hostile, modes, report
from bench.system import machine
from bench.target import Server, TargetError

HERE = Path(__file__).resolve().parent
COMPARABLE = {"fixed", "saturate", "idle"}  # OnionShare has no acks, persistence or history


def make_server(name: str, node_env: dict[str, str]) -> Server:
    if name == "onionchat":
        from bench.onionchat_target import OnionChatServer

        return OnionChatServer(env=node_env)
    if name == "onionshare":
        from bench.onionshare_target import OnionShareServer

        return OnionShareServer()
    raise ValueError(name)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--vs",
        choices=["onionshare", "none"],
        default=None,
        help="run the same workload against OnionShare's chat too (default: only with `all`)",
    )
    p.add_argument("--workers", type=int, default=2, help="load-generator processes (default 2)")
    p.add_argument("--payload", type=int, default=100, help="message text bytes (default 100)")
    p.add_argument("--out", type=Path, help="results directory (default bench/results/DATE-LABEL)")
    p.add_argument("--label", default=socket.gethostname(), help="machine label for the results")
    p.add_argument("--quick", action="store_true", help="a short smoke run: small and fast")
    p.add_argument(
        "--node-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra ONIONCHAT_* setting for the node (repeatable), e.g. "
        "ONIONCHAT_LIMITS_SEND_QUEUE=4096",
    )


def _options(cls: type[Any], p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One option per field of a mode's options dataclass, with its default."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        text = f.metadata.get("help", "")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif f.type in ("str", str):
            p.add_argument(flag, default=None, help=f"{text} (default {f.default})")
        else:
            kind = int if f.type in ("int", int) else float
            p.add_argument(flag, type=kind, default=None, help=f"{text} (default {f.default:g})")


OPTION_CLASSES: dict[str, type[Any]] = {
    "fixed": modes.FixedOptions,
    "saturate": modes.SaturateOptions,
    "idle": modes.IdleOptions,
    "ingest": modes.IngestOptions,
    "history": modes.HistoryOptions,
    "bot": bot.BotOptions,
    "hostile": hostile.HostileOptions,
    "federation": federation.FederationOptions,
}

#: Every mode's function; `bot` and `hostile` live in their own modules (they bring their own
#: model server, their own attackers).
MODES: dict[str, Any] = modes.MODES | {
    "bot": bot.bot,
    "hostile": hostile.hostile,
    "federation": federation.federation,
}

QUICK: dict[str, dict[str, Any]] = {
    "fixed": {"seconds": 3.0, "stall_seconds": 5.0},
    "saturate": {"seconds": 2.0, "max_steps": 4, "start": 20_000.0, "factor": 2.0, "beyond": 1},
    "idle": {"connections": 1_000, "users": 200, "join": 200},
    "ingest": {"seconds": 3.0},
    "history": {"messages": 50_000, "rounds": 50, "batch": 25_000},
    "bot": {"clients": 10, "rounds": 3, "tokens": 20},
    "hostile": {
        "seconds": 4.0,
        "warmup": 1.5,
        "settle": 10.0,
        "drain": 10.0,
        "slow_sockets": 50,
        "header_mib": 32.0,
        "honest_logins": 3,
        "baseline_again": False,
        "interleave": False,
    },
    "federation": {"seconds": 3.0, "rates": "500,2000", "ceiling_messages": 5_000},
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    helps = {
        "fixed": "N clients, S send R msgs/s for T s; then one client stops reading",
        "saturate": "raise the load until p99 > 100 ms or a loss (200 clients)",
        "idle": "memory per idle connection; time and bytes for many clients to join",
        "ingest": "acknowledged, persisted messages/s from many senders",
        "history": "time to the first page of a room of 1,000,000 messages",
        "bot": "a bot's tokens: model server → 50 clients (stand-in Ollama, 30 tokens/s)",
        "hostile": "the fixed load beside each attack in turn: p99 vs baseline, node RSS",
        "federation": "2 nodes × 2 mosquitto brokers: throughput, latency across, a broker killed",
    }
    for name, cls in OPTION_CLASSES.items():
        p = sub.add_parser(name, help=helps[name])
        _add_common(p)
        _options(cls, p)
    p = sub.add_parser("all", help="every mode, with the OnionShare comparison (~15 min)")
    _add_common(p)
    return parser.parse_args(argv)


def mode_options(mode: str, args: argparse.Namespace) -> Any:
    """The mode's options: given on the command line, else --quick's, else the defaults."""
    cls = OPTION_CLASSES[mode]
    values: dict[str, Any] = dict(QUICK[mode]) if args.quick else {}
    if args.mode == mode:
        for f in dataclasses.fields(cls):
            if getattr(args, f.name) is not None:
                values[f.name] = getattr(args, f.name)
    return cls(**values)


def _stop(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so that every server and worker started is stopped."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _stop)
    run_modes = list(OPTION_CLASSES) if args.mode == "all" else [args.mode]
    vs = args.vs if args.vs is not None else ("onionshare" if args.mode == "all" else "none")
    date = datetime.date.today().isoformat()
    out_dir = args.out or HERE / "results" / f"{date}-{args.label}"
    stem = "results" if args.mode == "all" else args.mode
    node_env = dict(item.split("=", 1) for item in args.node_env)
    common = modes.Common(workers=args.workers, payload=args.payload, quick=args.quick)

    from bench.onionchat_target import NODE_ENV, node_settings

    results: dict[str, Any] = {
        "date": date,
        "command": "scripts/bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(args.label),
        "node_settings": node_settings(NODE_ENV | node_env),
        "node_source": _source(),
        "generator": {
            "workers": args.workers,
            "payload_bytes": args.payload,
            "client": "own WebSocket client on asyncio Protocol (uvloop), msgspec JSON, "
            "TCP_NODELAY, separate processes",
        },
        "modes": {},
    }
    if vs == "onionshare":
        from bench.onionshare_target import ensure_installed, server_settings

        ensure_installed()
        results["onionshare_settings"] = server_settings()
    started = time.monotonic()
    failures = 0
    for mode in run_modes:
        options = mode_options(mode, args)
        targets = ["onionchat"] + (
            ["onionshare"] if vs == "onionshare" and mode in COMPARABLE else []
        )
        for target in targets:
            try:
                server = make_server(target, node_env)
                result = MODES[mode](server, common, options)
            except (TargetError, OSError) as exc:
                failures += 1
                print(f"bench: {mode} against {target} failed: {exc}", file=sys.stderr)
                result = {"error": str(exc)}
            results["modes"].setdefault(mode, {})[target] = result
    results["seconds"] = round(time.monotonic() - started, 1)
    results["targets"] = report.targets(results["modes"])
    results["comparison"] = report.comparison(results["modes"])
    print()
    print(report.table(results))
    print()
    for path in report.write(results, out_dir, stem):
        print(f"bench: wrote {path}")
    return 1 if failures else 0


def _source() -> dict[str, Any]:
    """Which node was measured: the commit, and whether onionchat/ had changes on top."""
    import subprocess

    root = HERE.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "onionchat"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None}
    return {"commit": commit, "onionchat_modified": bool(dirty)}


if __name__ == "__main__":
    sys.exit(main())
