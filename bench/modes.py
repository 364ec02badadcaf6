"""The benchmark's modes: fixed, saturate, idle, ingest and history.

Each mode starts its own server (a fresh node, a fresh data directory), drives it with a
pool of load-generator processes, and returns a JSON-ready dict of figures. `Bench` is the
plumbing they share: the server, the workers, the clients and one measured step.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench import stats
from bench.load import Pool
from bench.system import ProcessMeter, machine_cpu_busy
from bench.target import Server, TargetError

ROOM = "bench"
MIB = 2**20


def log(text: str) -> None:
    print(f"bench: {text}", flush=True)


def field(default: Any, help: str) -> Any:
    """A mode option: its default and its --help text."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class Common:
    """Options every mode shares."""

    workers: int = 2
    payload: int = 100
    quick: bool = False


class Bench:
    """One server under test, its load-generator pool and its clients."""

    def __init__(self, server: Server, common: Common) -> None:
        self.server = server
        self.common = common
        self.pool: Pool | None = None
        self.node: ProcessMeter | None = None
        self.gen: ProcessMeter | None = None
        self.creds: list[dict[str, Any]] = []
        self.stall: list[int] = []
        self.rooms: list[tuple[str, dict[str, Any]]] = []

    @property
    def name(self) -> str:
        return self.server.name

    def __enter__(self) -> Bench:
        try:
            self.server.start()
            self.node = ProcessMeter([self.server.pid])
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_clients()
        cleanup = getattr(self.server, "cleanup", None)
        if cleanup is not None:
            cleanup()
        else:
            self.server.stop()

    # -- clients --------------------------------------------------------------------------

    def connect(
        self, creds: list[dict[str, Any]], stall: list[int] | None = None, concurrency: int = 32
    ) -> dict[str, Any]:
        """Start the workers and log every client in; client `i` uses `creds[i]`."""
        self.close_clients()
        self.creds, self.stall = creds, list(stall or [])
        self.pool = Pool(self.server.wire, self.server.port, self.common.workers)
        self.gen = ProcessMeter(self.pool.pids)
        t0 = time.monotonic()
        parts = self.pool.split(list(enumerate(creds)))
        results = self.pool.call(
            "open",
            [{"creds": p, "concurrency": concurrency, "stall": self.stall} for p in parts],
        )
        failed = sum(r["failed"] for r in results)
        if failed:
            errors = [e for r in results for e in r["errors"]]
            raise TargetError(f"{failed} of {len(creds)} clients failed to log in: {errors[:3]}")
        return {"clients": len(creds), "seconds": round(time.monotonic() - t0, 2)}

    def join(
        self, room: str, record: bool = True, strict: bool = True, **kwargs: Any
    ) -> dict[str, Any]:
        """Join clients to a room at the same moment; the merged answer of the workers.
        With `strict`, a client that fails to join fails the mode."""
        assert self.pool is not None
        if record:
            self.rooms.append((room, kwargs))
        at = time.monotonic_ns() + 100_000_000
        results = self.pool.call("join", {"room": room, "at_ns": at} | kwargs)
        failed = sum(r["failed"] for r in results)
        errors = [e for r in results for e in r["errors"]]
        if failed and strict:
            raise TargetError(f"{failed} clients failed to join #{room}: {errors[:3]}")
        first = min(r["first_ns"] for r in results)
        return {
            "clients": sum(r["clients"] for r in results),
            "failed": failed,
            "errors": sorted(set(errors))[:3],
            "seconds_to_answers": (max(r["joined_ns"] for r in results) - first) / 1e9,
            "seconds_to_quiet": (max(r["last_ns"] for r in results) - first) / 1e9,
            "bytes": sum(r["bytes"] for r in results),
            "frames": sum(r["frames"] for r in results),
            "presence_frames": sum(r["presence"] for r in results),
        }

    def counts(self) -> dict[str, Any]:
        assert self.pool is not None
        results = self.pool.call("counts", {})
        return {
            "clients": sum(r["clients"] for r in results),
            "closed": sum(r["closed"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "last_error": next((r["last_error"] for r in results if r["last_error"]), ""),
        }

    def reconnect(self) -> None:
        """Log every client in again and rejoin the rooms (after the server dropped some)."""
        rooms = list(self.rooms)
        self.connect(self.creds, self.stall)
        self.rooms = []
        for room, kwargs in rooms:
            self.join(room, **kwargs)

    def close_clients(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    # -- one measured step ----------------------------------------------------------------

    def step(
        self,
        *,
        step: int,
        senders: int,
        rate: float,
        duration: float,
        room: str = ROOM,
        drain_timeout: float = 30.0,
    ) -> dict[str, Any]:
        """`senders` clients (the first ones) send `rate` messages a second each for
        `duration` seconds; every other client except stalled ones records."""
        assert self.pool is not None and self.node is not None and self.gen is not None
        payload = self.common.payload
        sender_map = {i: i for i in range(senders)}
        node_cpu0, gen_cpu0 = self.node.cpu(), self.gen.cpu_each()
        busy0, total0, stolen0 = machine_cpu_busy()
        start_ns = time.monotonic_ns() + 150_000_000
        runs = self.pool.call(
            "run",
            {
                "step": step,
                "senders": sender_map,
                "n_senders": senders,
                "rate": rate,
                "start_ns": start_ns,
                "duration": duration,
                "payload": payload,
                "room": room,
            },
        )
        sent_by: dict[int, int] = {}
        for r in runs:
            sent_by.update(r["sent"])
        total_sent = sum(sent_by.values())
        drains = self.pool.call("drain", {"expected": total_sent, "timeout": drain_timeout})
        end_ns = time.monotonic_ns()
        wall = (end_ns - start_ns) / 1e9
        node_cpu = self.node.cpu() - node_cpu0
        gen_each = [b - a for a, b in zip(gen_cpu0, self.gen.cpu_each(), strict=True)]
        busy1, total1, stolen1 = machine_cpu_busy()
        receivers = sum(d["receivers"] for d in drains)
        lat = stats.latencies([d["lat"] for d in drains])
        distinct = sum(d["total"] for d in drains)
        expected = total_sent * receivers
        last_ns = max((d["last_ns"] for d in drains), default=0)
        span = (last_ns - start_ns) / 1e9 if last_ns > start_ns else duration
        cores = _cores()
        node_util = node_cpu / wall
        gen_util = sum(gen_each) / wall
        headroom = max(0.05, min(float(len(gen_each)), cores - node_util))
        offered = senders * rate * receivers
        sent_rate = total_sent * receivers / duration
        machine_busy = (busy1 - busy0) / max(total1 - total0, 1e-9)
        # the generator was the limit: it used ≥ 90 % of what the node left it, or one
        # worker used a whole core, or it could not send at the pace asked, or the machine
        # was full while the node itself was below 90 % of a core
        limited = (
            gen_util >= 0.9 * headroom
            or max(gen_each) / wall >= 0.9
            or (offered > 0 and sent_rate < 0.95 * offered)
            or (machine_busy >= 0.95 and node_util < 0.9)
        )
        return {
            "step": step,
            "clients": receivers,
            "senders": senders,
            "rate_per_sender": round(rate, 2),
            "duration_s": duration,
            "payload_bytes": payload,
            "offered_deliveries_per_s": round(offered),
            "sent_messages": total_sent,
            "sent_deliveries_per_s": round(sent_rate),
            "achieved_deliveries_per_s": round(distinct / max(span, duration)),
            "deliveries": distinct,
            "expected_deliveries": expected,
            "lost": max(0, expected - distinct),
            "duplicated": sum(sum(d["dup"]) for d in drains),
            "reordered": sum(sum(d["reorder"]) for d in drains),
            "stale": sum(d["stale"] for d in drains),
            "latency_ms": stats.summary_ms(lat),
            "slowest_moments": stats.slowest_moments(drains, start_ns),
            "node_cpu_pct": round(node_util * 100, 1),
            "node_rss_mib": round(self.node.rss() / MIB, 1),
            "node_peak_mib": round(self.node.hwm() / MIB, 1),
            "generator_cpu_pct": round(gen_util * 100, 1),
            "generator_worker_cpu_pct": [round(g / wall * 100, 1) for g in gen_each],
            "generator_limited": bool(limited),
            "machine_busy_pct": round(machine_busy * 100, 1),
            "machine_stolen_pct": round((stolen1 - stolen0) / max(total1 - total0, 1e-9) * 100, 2),
            "error_frames": sum(d["errors"] for d in drains),
            "last_error": next((d["last_error"] for d in drains if d["last_error"]), ""),
            "closed_clients": sum(d["closed"] for d in drains),
        }


def _cores() -> float:
    import os

    return float(os.cpu_count() or 1)


def passed(result: dict[str, Any], p99_limit_ms: float) -> bool:
    p99 = result["latency_ms"]["p99"]
    return (
        result["lost"] == 0
        and result["closed_clients"] == 0
        and p99 is not None
        and p99 <= p99_limit_ms
    )


def brief(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    flag = " GENERATOR-LIMITED" if r["generator_limited"] else ""
    return (
        f"offered {r['offered_deliveries_per_s']:,}/s achieved "
        f"{r['achieved_deliveries_per_s']:,}/s p50 {lat['p50']} p99 {lat['p99']} "
        f"max {lat['max']} ms lost {r['lost']} dup {r['duplicated']} "
        f"reord {r['reordered']} node {r['node_cpu_pct']}% gen {r['generator_cpu_pct']}%"
        f"{flag}"
    )


# -- fixed ---------------------------------------------------------------------------------


@dataclasses.dataclass
class FixedOptions:
    clients: int = field(50, "clients in the room (all of them record)")
    senders: int = field(5, "clients that send (the first ones)")
    rate: float = field(10.0, "messages a second per sender")
    seconds: float = field(10.0, "length of the measured step")
    stall: bool = field(True, "then run again with one more client that stops reading")
    stall_seconds: float = field(30.0, "length of the step with the stalled client")
    stall_fill: int = field(100, "history pages the stalled client asks for, to fill its buffers")


def fixed(server: Server, common: Common, o: FixedOptions) -> dict[str, Any]:
    """N clients, S of them send R msgs/s for T s; then the same while one more client
    (a member that has read everything so far) stops reading."""
    stall_index = o.clients
    with Bench(server, common) as b:
        creds = server.prepare(o.clients + (1 if o.stall else 0))
        b.connect(creds, stall=[stall_index] if o.stall else [])
        b.join(ROOM)
        log(
            f"{b.name} fixed: {o.clients} clients, {o.senders} × {o.rate:g} msgs/s, {o.seconds:g} s"
        )
        base = b.step(step=1, senders=o.senders, rate=o.rate, duration=o.seconds)
        log(f"{b.name} fixed: {brief(base)}")
        out: dict[str, Any] = {"settings": dataclasses.asdict(o), "result": base}
        if o.stall:
            log(f"{b.name} fixed: again for {o.stall_seconds:g} s, one client stops reading")
            assert b.pool is not None
            # it stops reading, then asks for history pages to fill its buffers sooner
            b.pool.call("stall", {"room": ROOM, "fill": o.stall_fill})
            t0 = time.time()
            time.sleep(1.0)
            stalled = b.step(step=2, senders=o.senders, rate=o.rate, duration=o.stall_seconds)
            log(f"{b.name} fixed (one stalled): {brief(stalled)}")
            check = [c for part in b.pool.call("stall_check", {"wait": 8.0}) for c in part]
            dropped = bool(check) and all(c["closed"] for c in check)
            # the baseline again, so that the change can be told from the machine's noise
            log(f"{b.name} fixed: the baseline again")
            again = b.step(step=3, senders=o.senders, rate=o.rate, duration=o.seconds)
            log(f"{b.name} fixed (again): {brief(again)}")
            p99s = [r["latency_ms"]["p99"] for r in (base, again)]
            baseline = sum(p99s) / 2 if None not in p99s else None
            out["baseline_again"] = again
            info: dict[str, Any] = {
                "result": stalled,
                "stalled_client": check[0] if check else None,
                "dropped": dropped,
                "baseline_p99_ms": baseline,
                "baseline_p99_spread_pct": stats.pct_change(p99s[1], p99s[0]),
                "p99_change_pct": stats.pct_change(stalled["latency_ms"]["p99"], baseline),
            }
            disconnects = getattr(server, "disconnects", None)
            if disconnects is not None:
                events = disconnects(4009)
                info["node_dropped_4009"] = len(events)
                if events:
                    import datetime

                    when = datetime.datetime.fromisoformat(events[0]["ts"]).timestamp()
                    info["dropped_after_stall_s"] = round(when - t0, 1)
            out["one_stalled"] = info
        return out


# -- saturate ------------------------------------------------------------------------------


@dataclasses.dataclass
class SaturateOptions:
    clients: int = field(200, "clients in the room")
    senders: int = field(20, "clients that send")
    seconds: float = field(5.0, "length of each step")
    start: float = field(20_000.0, "offered deliveries/s of the first step")
    factor: float = field(1.3, "each step offers this many times the last")
    max_steps: int = field(20, "at most this many steps (re-runs included)")
    p99_limit_ms: float = field(100.0, "a step passes with p99 at most this and nothing lost")
    beyond: int = field(3, "steps past the first failure, while throughput still grows")


def saturate(server: Server, common: Common, o: SaturateOptions) -> dict[str, Any]:
    """Raise the offered deliveries/s step by step until p99 > limit or a loss (a failed
    step is re-run once); then go a few steps further while throughput still grows, to find
    the saturation throughput."""
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    peak: dict[str, Any] | None = None
    strict_over = False
    beyond = o.beyond
    with Bench(server, common) as b:
        b.connect(server.prepare(o.clients))
        b.join(ROOM)
        level = o.start
        n = 0
        while n < o.max_steps:
            rate = level / (o.senders * o.clients)
            tries = 1 if strict_over else 2
            r: dict[str, Any] = {}
            for attempt in range(tries):
                n += 1
                r = b.step(step=n, senders=o.senders, rate=rate, duration=o.seconds)
                r["retry"] = attempt > 0
                r["passed"] = passed(r, o.p99_limit_ms)
                steps.append(r)
                log(f"{b.name} saturate {n}: {'PASS' if r['passed'] else 'fail'} {brief(r)}")
                if r["closed_clients"] or b.counts()["closed"]:
                    log(f"{b.name}: clients were dropped; reconnecting them")
                    b.reconnect()
                if r["passed"]:
                    break
                time.sleep(1.0)
            if r["passed"]:
                best = r
            else:
                strict_over = True
            grew = (
                peak is None
                or r["achieved_deliveries_per_s"] > 1.02 * (peak["achieved_deliveries_per_s"])
            )
            if r["lost"] == 0 and grew:
                peak = r
            if strict_over:
                if r["lost"] or not grew or beyond <= 0:
                    break
                beyond -= 1
            level *= o.factor
            time.sleep(0.5)
    return {
        "settings": dataclasses.asdict(o),
        "steps": steps,
        "highest_passed": best,
        "highest_passed_deliveries_per_s": best["achieved_deliveries_per_s"] if best else 0,
        "highest_passed_offered_per_s": best["offered_deliveries_per_s"] if best else 0,
        "saturation_deliveries_per_s": peak["achieved_deliveries_per_s"] if peak else 0,
        "saturation_p99_ms": peak["latency_ms"]["p99"] if peak else None,
        "generator_limited_at_best": bool(best and best["generator_limited"]),
    }


# -- idle ------------------------------------------------------------------------------------


@dataclasses.dataclass
class IdleOptions:
    connections: int = field(10_000, "idle connections, all joined to one room (OnionChat)")
    users: int = field(1_000, "distinct accounts the connections share")
    join: int = field(1_000, "clients that join one room at once (after N/2 did)")


def idle(server: Server, common: Common, o: IdleOptions) -> dict[str, Any]:
    """Memory per idle connection (authenticated, joined to one room), then the time and
    bytes for N/2 and then N clients to join a room at once (so the growth of traffic with
    N shows: ×4 when each join costs traffic linear in N, ×8 when it sends full lists)."""
    is_chat = server.wire == "onionchat"
    half = o.join // 2
    with Bench(server, common) as b:
        assert b.node is not None
        if is_chat:
            users = server.prepare(max(o.users, o.join))
            conns = o.connections
            creds = [users[i % len(users)] for i in range(conns)]
        else:  # one connection per user, and clients of the first round leave before the second
            conns = half + o.join
            creds = server.prepare(conns)
        time.sleep(0.5)
        rss0 = b.node.rss()
        log(f"{b.name} idle: opening {conns:,} connections")
        opened = b.connect(creds, concurrency=64)
        out: dict[str, Any] = {"settings": dataclasses.asdict(o) | {"connections": conns}}
        out["open"] = opened
        if is_chat:
            joined = b.join("idle", concurrency=64, quiet=1.0)
            time.sleep(1.0)
            rss1 = b.node.rss()
            out["memory"] = {
                "connections": conns,
                "users": len(users),
                "rss_before_mib": round(rss0 / MIB, 1),
                "rss_after_mib": round(rss1 / MIB, 1),
                "per_connection_kib": round((rss1 - rss0) / conns / 1024, 1),
                "peak_mib": round(b.node.hwm() / MIB, 1),
                "join_all_seconds": round(joined["seconds_to_quiet"], 2),
            }
            log(f"{b.name} idle: {out['memory']}")
            first = b.join("join-a", indices=list(range(half)), quiet=0.5, strict=False)
            second = b.join(
                "join-b", indices=list(range(half, half + o.join)), quiet=0.5, strict=False
            )
        else:
            first = b.join("chat", indices=list(range(half)), quiet=0.5, strict=False)
            assert b.pool is not None
            # the first round's clients go; their departures are not measured
            b.pool.call("leave_all", {"indices": list(range(half))})
            time.sleep(1.0)
            second = b.join(
                "chat", indices=list(range(half, half + o.join)), quiet=0.5, strict=False
            )
            time.sleep(1.0)
            rss1 = b.node.rss()
            out["memory"] = {
                "connections": o.join,
                "rss_before_mib": round(rss0 / MIB, 1),
                "rss_after_mib": round(rss1 / MIB, 1),
                "per_connection_kib": round((rss1 - rss0) / o.join / 1024, 1),
                "peak_mib": round(b.node.hwm() / MIB, 1),
                "note": "after the join rounds, so it includes what they left behind",
            }
        for key, j in (("join_half", first), ("join", second)):
            j["seconds"] = round(j.pop("seconds_to_quiet"), 3)
            j["seconds_to_answers"] = round(j["seconds_to_answers"], 3)
            j["bytes_per_join"] = round(j["bytes"] / max(j["clients"], 1))
            if j["failed"]:  # figures of a join that did not happen would mislead
                j["seconds_measured"], j["seconds"] = j["seconds"], None
                j["bytes_per_join"] = None
            out[key] = j
        ok = not first["failed"] and not second["failed"]
        growth = second["bytes"] / first["bytes"] if first["bytes"] and ok else None
        out["traffic_growth_x2_clients"] = round(growth, 2) if growth else None
        out["traffic_exponent"] = round(math.log2(growth), 2) if growth else None
        log(
            f"{b.name} idle: join {o.join}: {second['seconds']} s, {second['bytes']:,} bytes"
            + (f", {second['failed']} FAILED: {second['errors']}" if second["failed"] else "")
        )
        out["node_peak_mib"] = round(b.node.hwm() / MIB, 1)
        return out


# -- ingest ----------------------------------------------------------------------------------


@dataclasses.dataclass
class IngestOptions:
    clients: int = field(50, "sending connections, each in a room of its own")
    window: int = field(16, "sends each keeps waiting for their ack")
    seconds: float = field(10.0, "length of the run")
    protected: bool = field(
        False, "key-protected rooms: every message a signed box (as the clients seal them)"
    )


def sealed_boxes(payload: int, count: int = 64) -> tuple[list[str], dict[str, Any]]:
    """Boxes as the clients make them (format 2: signed, bound), and what one costs to make and
    to open and verify on this machine in Python (the CLI's and the bots' cost per message)."""
    from onionchat import crypto, sealed

    key, secret = crypto.new_room_key(), crypto.new_identity()[0]
    signer, public = sealed.signing_key(secret), sealed.signing_public(secret)
    text = "x" * payload
    t0 = time.perf_counter()
    boxes = [
        sealed.seal_body(key, signer, room="ingest", sender="bench", kind="message", text=text)
        for _ in range(count)
    ]
    t1 = time.perf_counter()
    for box in boxes:
        body = sealed.open_body([key], box)
        body.check("ingest", "bench", "message", body.ts)
        assert body.verify(public)
    t2 = time.perf_counter()
    cost = {
        "box_chars": len(boxes[0]),
        "seal_and_sign_us": round((t1 - t0) / count * 1e6, 1),
        "open_check_and_verify_us": round((t2 - t1) / count * 1e6, 1),
    }
    return boxes, cost


CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by scripts/system-packages

BROWSER_CRYPTO = """async ([payload, count]) => {
  const s = await import("/static/js/sealed.js");
  const key = nacl.randomBytes(32), me = s.signingKeys(nacl.randomBytes(32));
  const text = "x".repeat(payload), boxes = [];
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    boxes.push(s.sealBody(key, me, {room: "ingest", sender: "bench", kind: "message", text}));
  }
  const t1 = performance.now();
  for (const box of boxes) {
    const body = s.openBody([key], box).body;
    const wrong = s.checkBody(body, "ingest", "bench", "message", body.ts);
    if (wrong || !s.verifyBody(body, me.publicKey)) {
      throw new Error("a box did not verify");
    }
  }
  const t2 = performance.now();
  const fast = await s.hasWebEd25519();
  const verify = (box) => s.verifyBodyFast(s.openBody([key], box).body, me.publicKey);
  const checks = await Promise.all(boxes.map(verify));
  if (!checks.every(Boolean)) throw new Error("a box did not verify through WebCrypto");
  const t3 = performance.now();
  const us = (ms) => ms / count * 1000;
  return [us(t1 - t0), us(t2 - t1), fast ? us(t3 - t2) : null];
}"""


def browser_crypto_cost(port: int, payload: int, count: int = 300) -> dict[str, Any]:
    """The same per-message cost in Chromium (tweetnacl, the page's own module)."""
    import asyncio
    import os

    if not os.path.exists(CHROMIUM):
        return {"error": f"{CHROMIUM} is missing: scripts/system-packages installs it"}
    from playwright.async_api import async_playwright

    async def measure() -> list[float | None]:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = await browser.new_page()
                await page.goto(f"http://127.0.0.1:{port}/")
                result: list[float | None] = await page.evaluate(BROWSER_CRYPTO, [payload, count])
                return result
            finally:
                await browser.close()

    seal, opened, fast = asyncio.run(measure())
    assert seal is not None and opened is not None
    return {
        "seal_and_sign_us": round(seal, 1),
        "open_check_and_verify_us": round(opened, 1),
        "open_and_verify_webcrypto_us": None if fast is None else round(fast, 1),
    }


def ingest(server: Server, common: Common, o: IngestOptions) -> dict[str, Any]:
    """Many senders, each in its own room, each keeping a window of sends waiting for their
    ack: acknowledged messages per second, then a check that every acked one is stored."""
    database = getattr(server, "database", None)
    with Bench(server, common) as b:
        b.connect(server.prepare(o.clients))
        b.join("ingest", per_client=True, protected=o.protected)
        boxes, cost = sealed_boxes(common.payload) if o.protected else (None, {})
        assert b.pool is not None and b.node is not None and b.gen is not None
        node_cpu0, gen_cpu0 = b.node.cpu(), b.gen.cpu()
        start = time.monotonic_ns() + 100_000_000
        log(f"{b.name} ingest: {o.clients} senders × window {o.window}, {o.seconds:g} s")
        results = b.pool.call(
            "ingest",
            {
                "start_ns": start,
                "duration": o.seconds,
                "window": o.window,
                "payload": common.payload,
                "room": "ingest",
                "boxes": boxes,
            },
        )
        wall = (time.monotonic_ns() - start) / 1e9
        node_cpu, gen_cpu = b.node.cpu() - node_cpu0, b.gen.cpu() - gen_cpu0
        ids = [i for r in results for i in r["ids"]]
        last = max(r["last_ns"] for r in results)
        span = (last - start) / 1e9
        lat = stats.latencies([r["lat"] for r in results])
        out: dict[str, Any] = {
            "settings": dataclasses.asdict(o) | {"payload_bytes": common.payload},
            "acked": len(ids),
            "acked_per_s": round(len(ids) / span) if span > 0 else 0,
            "unacked_at_end": sum(r["unacked"] for r in results),
            "ack_latency_ms": stats.summary_ms(lat),
            "error_frames": sum(r["errors"] for r in results),
            "last_error": next((r["last_error"] for r in results if r["last_error"]), ""),
            "node_cpu_pct": round(node_cpu / wall * 100, 1),
            "generator_cpu_pct": round(gen_cpu / wall * 100, 1),
            "node_peak_mib": round(b.node.hwm() / MIB, 1),
        }
        if cost:
            out["python_crypto_per_message"] = cost
            out["browser_crypto_per_message"] = browser_crypto_cost(
                getattr(server, "port", 0), common.payload
            )
        if database is not None:
            out["stored"] = _verify_stored(database, ids)
        log(
            f"{b.name} ingest: {out['acked_per_s']:,} acked msgs/s, p99 ack "
            f"{out['ack_latency_ms']['p99']} ms, stored check {out.get('stored')}"
        )
        return out


def _verify_stored(database: Any, ids: list[str]) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute(
            "SELECT m.id FROM messages m JOIN rooms r ON r.id = m.room_id "
            "WHERE r.name LIKE 'ingest-%'"
        ).fetchall()
    finally:
        db.close()
    stored = {r[0] for r in rows}
    missing = [i for i in ids if i not in stored]
    return {
        "rows": len(stored),
        "acked_missing": len(missing),
        "acked_duplicate_ids": len(ids) - len(set(ids)),
        "ok": not missing and len(ids) == len(set(ids)),
    }


# -- history ---------------------------------------------------------------------------------


@dataclasses.dataclass
class HistoryOptions:
    messages: int = field(1_000_000, "messages inserted into the room")
    rounds: int = field(200, "requests of each kind")
    batch: int = field(100_000, "rows per insert transaction")


def history(server: Server, common: Common, o: HistoryOptions) -> dict[str, Any]:
    """Time to the first page of a room holding `messages` messages, at the node."""
    from bench.onionchat_target import OnionChatServer

    if not isinstance(server, OnionChatServer):
        raise TargetError("history: only OnionChat keeps history")
    with Bench(server, common) as b:
        creds = server.prepare(1)
        b.connect(creds)
        b.join("big")
        b.close_clients()
        server.stop()
        log(f"history: inserting {o.messages:,} messages straight into SQLite")
        t0 = time.monotonic()
        before = _fill(server.database, "big", creds[0]["user"], o, common.payload)
        fill_s = time.monotonic() - t0
        server.start()
        assert b.node is not None
        b.node = ProcessMeter([server.pid])
        b.connect(creds)
        assert b.pool is not None
        result = b.pool.call(
            "history",
            [{"room": "big", "before": before, "rounds": o.rounds}]
            + [{"room": "big", "before": before, "rounds": 0}] * (b.pool.size - 1),
        )[0]
        times = {k: np.array(v, dtype=np.int64) for k, v in result["times"].items()}
        ping = float(np.median(times["ping"])) if times["ping"].size else 0.0
        out: dict[str, Any] = {
            "settings": dataclasses.asdict(o) | {"payload_bytes": common.payload},
            "fill_seconds": round(fill_s, 1),
            "database_mib": round(server.database.stat().st_size / MIB, 1),
            "ping_rtt_ms": stats.summary_ms(times["ping"]),
            "frame_bytes": result["bytes"],
        }
        for key, label in (
            ("join", "join"),
            ("history", "history_before"),
            ("newest", "history_newest"),
        ):
            raw = times[key]
            net = np.maximum(raw - int(ping), 0)
            out[label] = {
                "raw_ms": stats.summary_ms(raw),
                "at_node_ms": stats.summary_ms(net),
                "first_ms": round(float(raw[0]) / 1e6, 3) if raw.size else None,
            }
        log(
            f"history: join→joined at node p50 {out['join']['at_node_ms']['p50']} ms, "
            f"p99 {out['join']['at_node_ms']['p99']} ms; history before p99 "
            f"{out['history_before']['at_node_ms']['p99']} ms"
        )
        return out


def _fill(database: Any, room: str, sender: str, o: HistoryOptions, payload: int) -> list[str]:
    """Insert the messages in big transactions; returns ids to page back from."""
    from onionchat.ids import IdGenerator

    db = sqlite3.connect(database)
    try:
        db.execute("PRAGMA synchronous=OFF")
        (room_id,) = db.execute("SELECT id FROM rooms WHERE name = ?", (room,)).fetchone()
        gen = IdGenerator()
        pad = "." * payload
        picks = set(random.Random(3).sample(range(51, o.messages), min(o.rounds, o.messages - 51)))
        before: list[str] = []
        done = 0
        while done < o.messages:
            rows = []
            for i in range(done, min(done + o.batch, o.messages)):
                id_, ts = gen.next()
                text = f"history message {i} "
                rows.append((room_id, id_, ts, sender, text + pad[len(text) :], None, 0, None))
                if i in picks:
                    before.append(id_)
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO messages (room_id, id, ts, sender, text, box, me, recipient) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.execute("COMMIT")
            done += len(rows)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    random.Random(4).shuffle(before)
    return before


MODES: dict[str, Callable[..., dict[str, Any]]] = {
    "fixed": fixed,
    "saturate": saturate,
    "idle": idle,
    "ingest": ingest,
    "history": history,
}
