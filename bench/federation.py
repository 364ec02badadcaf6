"""The `federation` mode (issue 12): two nodes sharing a room through two mosquitto brokers.

1. The broker's own ceiling on this machine, in the same run: a minimal aiomqtt publisher and
   subscriber at QoS 1 through one broker (what the nodes' figure is a ratio to).
2. Throughput: 5 senders on node A at rising rates and one client on node B (the path between
   nodes, not the fan-out to many clients); the highest rate B takes in whole (no loss, p99
   under a second) is the federated throughput.
3. Latency at the `fixed` load: 50 clients, half on each node, 5 senders on A at 10 msgs/s;
   send-to-receive p50/p99 within A beside across to B, in the same step.
4. The same while broker 1 is SIGKILLed in the middle: lost, shown twice, p99 across.

Goals: cross-node p99 under 50 ms at the fixed load; federated throughput at least half the
broker's QoS 1 ceiling; a broker's SIGKILL costs no message and no honest p99 over 1 s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiomqtt

from bench import stats
from bench.load import Pool
from bench.modes import ROOM, Common, field, log
from bench.onionchat_target import OnionChatServer
from bench.system import ProcessMeter, machine_cpu_busy
from bench.target import HOST, TargetError
from onionchat.federation.network import node_key

MOSQUITTO = "/usr/sbin/mosquitto"  # Debian's (scripts/system-packages)


@dataclasses.dataclass
class FederationOptions:
    clients: int = field(50, "clients in the room, half on each node")
    senders: int = field(5, "clients on node A that send")
    rate: float = field(10.0, "messages a second per sender at the fixed load")
    seconds: float = field(10.0, "length of each measured step")
    rates: str = field(
        "500,1000,1500,2000,2500,3000,3500,4000,5000,6000",
        "total msgs/s tried for throughput (5 senders on A, one "
        "client on B), in order, until one is not taken in whole",
    )
    ceiling_messages: int = field(20_000, "messages of the broker-ceiling measurement")
    kill: bool = field(True, "the step where a broker is SIGKILLed in the middle")


class Broker:
    """A mosquitto on a free loopback port, ended by the PID it was started with."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as s:
            s.bind((HOST, 0))
            self.port: int = s.getsockname()[1]
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "mosquitto.conf"
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "")
        conf.write_text(
            f"listener {self.port} {HOST}\nallow_anonymous true\nuser {user}\n"
            "max_inflight_messages 0\nset_tcp_nodelay true\n"  # as docs/federation.md says
        )
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.meter = ProcessMeter([self.proc.pid])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise TargetError("mosquitto did not listen")

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


async def _ceiling(url: str, count: int, payload: bytes) -> dict[str, Any]:
    """A minimal publisher and subscriber at QoS 1 (64 publishes awaiting PUBACK at once)."""
    host, port = url.rsplit("/", 1)[1].split(":")
    got = 0
    done = asyncio.Event()
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]  # as the node's links have it
    async with aiomqtt.Client(
        host, int(port), identifier="ceiling-sub", socket_options=nodelay
    ) as sub:
        await sub.subscribe("ceiling", qos=1)

        async def receive() -> None:
            nonlocal got
            async for _ in sub.messages:
                got += 1
                if got >= count:
                    done.set()
                    return

        task = asyncio.create_task(receive())
        async with aiomqtt.Client(
            host, int(port), identifier="ceiling-pub", socket_options=nodelay
        ) as pub:
            pub.pending_calls_threshold = 1000
            window = asyncio.Semaphore(64)
            t0 = time.monotonic()

            async def one() -> None:
                async with window:
                    await pub.publish("ceiling", payload, qos=1)

            await asyncio.gather(*(one() for _ in range(count)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 60)
            seconds = time.monotonic() - t0
        task.cancel()
    return {"messages": count, "received": got, "msgs_per_s": round(got / seconds)}


def _nodes(root: Path, brokers: list[Broker]) -> tuple[OnionChatServer, OnionChatServer]:
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    servers = {name: OnionChatServer() for name in ("a", "b")}
    keys = {}
    for name, server in servers.items():
        keys[name] = base64.b64encode(bytes(node_key(server.data_dir).verify_key)).decode()
    for name, server in servers.items():
        peers = ",".join(f"{n}={k}" for n, k in keys.items() if n != name)
        server.env |= {
            "ONIONCHAT_FEDERATION_NAME": name,
            "ONIONCHAT_FEDERATION_SECRET": secret,
            "ONIONCHAT_FEDERATION_PEERS": peers,
            "ONIONCHAT_FEDERATION_BROKERS": ",".join(b.url for b in brokers),
        }
    return servers["a"], servers["b"]


def _linked(servers: list[OnionChatServer], count: int, timeout: float = 30.0) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ups = []
        for server in servers:
            health = httpx.get(f"http://{HOST}:{server.port}/api/health", trust_env=False).json()
            ups.append(sum(b["state"] == "up" for b in health["federation"]["brokers"]))
        if min(ups) >= count:
            return
        time.sleep(0.1)
    raise TargetError("the nodes did not connect to their brokers")


def _published(server: OnionChatServer) -> tuple[int, int]:
    """(messages, publishes) a node's links have had acknowledged, over its brokers."""
    import httpx

    health = httpx.get(f"http://{HOST}:{server.port}/api/health", trust_env=False).json()
    brokers = health["federation"]["brokers"]
    return sum(b["published"] for b in brokers), sum(b["publishes"] for b in brokers)


class Pair:
    """Clients on both nodes: a pool of workers per node, each step run on both at once."""

    def __init__(self, servers: list[OnionChatServer], creds: list[list[dict[str, Any]]]) -> None:
        self.pools: list[Pool] = []
        for server, mine in zip(servers, creds, strict=True):
            pool = Pool(server.wire, server.port, 1)
            opened = {"creds": list(enumerate(mine)), "concurrency": 32, "stall": []}
            if any(r["failed"] for r in pool.call("open", [opened])):
                raise TargetError("clients failed to log in")
            pool.call("join", {"room": ROOM, "at_ns": time.monotonic_ns() + 100_000_000})
            self.pools.append(pool)

    def close(self) -> None:
        for pool in self.pools:
            pool.close()

    def step(
        self, step: int, senders: int, rate: float, seconds: float, payload: int, during: Any = None
    ) -> dict[str, Any]:
        start_ns = time.monotonic_ns() + 200_000_000
        runs: list[Any] = [None, None]

        def run(i: int) -> None:
            runs[i] = self.pools[i].call(
                "run",
                {
                    "step": step,
                    "senders": {k: k for k in range(senders)} if i == 0 else {},
                    "n_senders": senders,
                    "rate": rate,
                    "start_ns": start_ns,
                    "duration": seconds,
                    "payload": payload,
                    "room": ROOM,
                },
            )

        threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        if during is not None:
            time.sleep(seconds / 2 + 0.2)
            during()
        for t in threads:
            t.join()
        sent = sum(n for r in runs[0] for n in r["sent"].values())
        drains: list[Any] = [None, None]

        def drain(i: int) -> None:
            drains[i] = self.pools[i].call("drain", {"expected": sent, "timeout": 30.0})

        threads = [threading.Thread(target=drain, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out: dict[str, Any] = {"sent": sent, "offered_msgs_per_s": round(senders * rate)}
        for i, where in ((0, "within_a"), (1, "across_to_b")):
            d = drains[i]
            receivers = sum(x["receivers"] for x in d)  # senders too: their own come back
            total = sum(x["total"] for x in d)
            expected = sent * max(receivers, 0)
            last = max((x["last_ns"] for x in d), default=0)
            out[where] = {
                "receivers": receivers,
                "latency_ms": stats.summary_ms(stats.latencies([x["lat"] for x in d])),
                "lost": max(0, expected - total),
                "duplicated": sum(sum(x["dup"]) for x in d),
                "msgs_per_s": round(sent / max((last - start_ns) / 1e9, seconds)),
            }
        return out


def federation(server: Any, common: Common, o: FederationOptions) -> dict[str, Any]:
    """`server` is unused: the mode makes its own two nodes (and two brokers)."""
    root = Path(tempfile.mkdtemp(prefix="onionchat-bench-fed-"))
    brokers = [Broker(root / f"broker{n}") for n in range(2)]
    a = b = None
    pair: Pair | None = None
    try:
        log(f"federation: the broker's ceiling, {o.ceiling_messages:,} messages at QoS 1")
        ceiling = asyncio.run(_ceiling(brokers[0].url, o.ceiling_messages, b"x" * common.payload))
        log(f"federation: broker ceiling {ceiling['msgs_per_s']:,} msgs/s")
        a, b = _nodes(root, brokers)
        a.start()
        b.start()
        _linked([a, b], 2)
        half = o.clients // 2
        creds = [a.prepare(half), b.prepare(o.clients - half)]
        pair = Pair([a, b], creds)
        log(f"federation: {o.clients} clients, 5 × {o.rate:g} msgs/s on A, {o.seconds:g} s")
        fixed = pair.step(1, o.senders, o.rate, o.seconds, common.payload)
        log(f"federation: fixed load: {_brief(fixed)}")
        pair.close()
        # throughput: the path between nodes, not the fan-out: the senders and one client
        pair = Pair([a, b], [creds[0][: o.senders], creds[1][:1]])
        throughput: list[dict[str, Any]] = []
        best, packed = 0, 0.0
        shares = CpuShares(
            {"node_a": [a.pid], "node_b": [b.pid]}
            | {f"broker_{k}": [broker.proc.pid] for k, broker in enumerate(brokers, 1)}
            | {f"clients_{x}": pool.pids for x, pool in zip("ab", pair.pools, strict=True)}
        )
        for n, total in enumerate(float(r) for r in o.rates.split(",")):
            before = _published(a)
            shares.start()
            s = pair.step(10 + n, o.senders, total / o.senders, o.seconds, common.payload)
            s["cpu_pct"] = shares.stop()
            after = _published(a)
            messages, publishes = (x - y for x, y in zip(after, before, strict=True))
            s["messages_per_publish"] = round(messages / max(publishes, 1), 2)
            across = s["across_to_b"]
            s["whole"] = across["lost"] == 0 and (across["latency_ms"]["p99"] or 1e9) < 1000
            throughput.append(s)
            log(f"federation: {total:g} msgs/s offered: {_brief(s)}")
            if not s["whole"]:
                break
            if across["msgs_per_s"] > best:
                best, packed = across["msgs_per_s"], s["messages_per_publish"]
        pair.close()
        killed = None
        if o.kill:
            pair = Pair([a, b], creds)
            log("federation: the fixed load again, broker 1 SIGKILLed halfway")
            killed = pair.step(3, o.senders, o.rate, o.seconds, common.payload, brokers[0].kill)
            log(f"federation: broker killed: {_brief(killed)}")
        return {
            "settings": dataclasses.asdict(o),
            "broker_ceiling": ceiling,
            "fixed": fixed,
            "throughput_steps": throughput,
            "federated_msgs_per_s": best,
            "throughput_ratio_to_ceiling": round(best / max(ceiling["msgs_per_s"], 1), 3),
            "messages_per_publish_at_best": packed,
            "broker_killed": killed,
        }
    finally:
        if pair is not None:
            pair.close()
        for node in (a, b):
            if node is not None:
                node.cleanup()
        for broker in brokers:
            broker.stop()


class CpuShares:
    """Per cent of a core each process group took over a step, and the whole machine's busy
    share of all its cores: where the throughput's limit is."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.meters = {name: ProcessMeter(pids) for name, pids in groups.items()}
        self._t0, self._cpu0, self._busy0 = 0.0, {name: 0.0 for name in groups}, (0.0, 0.0)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = {name: m.cpu() for name, m in self.meters.items()}
        self._busy0 = machine_cpu_busy()[:2]

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t0, 1e-9)
        out = {
            name: round(100 * (m.cpu() - self._cpu0[name]) / wall, 1)
            for name, m in self.meters.items()
        }
        busy, total = machine_cpu_busy()[:2]
        out["machine_busy"] = round(
            100 * (busy - self._busy0[0]) / max(total - self._busy0[1], 1e-9), 1
        )
        return out


def _brief(s: dict[str, Any]) -> str:
    w, x = s["within_a"], s["across_to_b"]
    return (
        f"within A p50 {w['latency_ms']['p50']} p99 {w['latency_ms']['p99']} ms; across to B "
        f"p50 {x['latency_ms']['p50']} p99 {x['latency_ms']['p99']} ms, {x['msgs_per_s']:,} "
        f"msgs/s, lost {x['lost']}, dup {x['duplicated']}"
        + (
            f", {s['messages_per_publish']} messages a publish"
            if "messages_per_publish" in s
            else ""
        )
        + (
            "; CPU % of a core: " + ", ".join(f"{k} {v:g}" for k, v in s["cpu_pct"].items())
            if "cpu_pct" in s
            else ""
        )
    )
