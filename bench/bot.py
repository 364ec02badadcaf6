"""The `bot` mode (issue 6): how long a bot's token takes from the model server to the clients.

A stand-in Ollama (`bench/model_server.py`) streams unique tokens (`t0 `, `t1 `, …) at a set
pace and notes when it wrote each. `clients` members of one room, on the `websockets` library,
note when each token first reached them: in a `delta` frame (the whole answer so far, sent at
most every FLUSH = 0.25 s) or in the final `message`. Token latency is the difference, per
client and token; both clocks are CLOCK_MONOTONIC, one clock for every process on Linux.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import msgspec
import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection

from bench import stats
from bench.model_server import Answer, ModelServer
from bench.modes import MIB, Bench, Common, field, log
from bench.target import HOST, Server, TargetError

ROOM = "bots"
BOT = "Olga"
CALL = "Olga, go"


@dataclasses.dataclass
class BotOptions:
    clients: int = field(50, "members of the room, all of them measured")
    rounds: int = field(20, "answers, one after the other (the caller changes each round)")
    tokens: int = field(60, "tokens per answer")
    rate: float = field(30.0, "tokens a second from the model server")


class Frame(msgspec.Struct):
    """The fields of a node frame this mode reads; the others are skipped unread."""

    type: str = ""
    id: str | None = None
    ref: str | None = None
    sender: str | None = None
    text: str | None = None
    code: str | None = None
    message: str | None = None


_decode = msgspec.json.Decoder(Frame).decode


@dataclasses.dataclass
class Seen:
    """What one client saw of one answer."""

    arrived: list[int]  # token i first seen at (monotonic ns; 0: not yet)
    have: int = 0  # tokens seen so far
    deltas: int = 0  # delta frames, the first (empty) one included
    empty_deltas: int = 0
    final_ns: int = 0  # the final `message` arrived at
    newest: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (token, arrival)
    garbled: int = 0  # texts that were not t0 … tN in order


class Member:
    """One client in the room: reads every frame and notes when each token arrived."""

    def __init__(self, index: int, tokens: int, finished: asyncio.Queue[tuple[int, str]]) -> None:
        self.index = index
        self.tokens = tokens
        self.finished = finished
        self.ws: ClientConnection | None = None
        self.answers: dict[str, Seen] = {}
        self.waiters: dict[str, asyncio.Future[Frame]] = {}
        self.errors: list[str] = []
        self.reader: asyncio.Task[None] | None = None

    async def open(self, port: int, token: str) -> None:
        self.ws = await websockets.connect(
            f"ws://{HOST}:{port}/ws", compression=None, proxy=None, max_queue=None
        )
        self.reader = asyncio.create_task(self._read(), name=f"member {self.index}")
        await self.request({"type": "auth", "token": token}, "ready")

    async def request(self, frame: dict[str, Any], key: str) -> Frame:
        """Send a frame and wait for the answer keyed `key` (its ref, or `ready`)."""
        assert self.ws is not None
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.waiters[key] = future
        await self.ws.send(msgspec.json.encode({"v": 1} | frame).decode())
        async with asyncio.timeout(30):
            return await future

    async def say(self, text: str) -> int:
        """Send a chat message; returns when it left (monotonic ns)."""
        assert self.ws is not None
        frame = {"v": 1, "type": "send", "room": ROOM, "text": text}
        await self.ws.send(msgspec.json.encode(frame).decode())
        return time.monotonic_ns()

    async def _read(self) -> None:
        assert self.ws is not None
        async for payload in self.ws:
            now = time.monotonic_ns()  # one WebSocket message: every frame in it arrived now
            text = payload if isinstance(payload, str) else payload.decode()
            for line in text.split("\n"):
                if line:
                    self._frame(_decode(line), now)

    def _frame(self, f: Frame, now: int) -> None:
        if f.sender == BOT and f.id is not None and f.type in ("delta", "message"):
            seen = self.answers.get(f.id)
            if seen is None:
                seen = self.answers[f.id] = Seen([0] * self.tokens)
            delta = f.type == "delta"
            if delta:
                seen.deltas += 1
                if not f.text:
                    seen.empty_deltas += 1
            self._tokens(seen, f.text or "", now, delta)
            if not delta and not seen.final_ns:
                seen.final_ns = now
                self.finished.put_nowait((self.index, f.id))
            return
        if f.type == "error":
            self.errors.append(f"{f.code}: {f.message}")
        key = "ready" if f.type == "ready" else f.ref
        waiter = self.waiters.pop(key, None) if key is not None else None
        if waiter is not None and not waiter.done():
            if f.type == "error":
                waiter.set_exception(TargetError(f"{f.code}: {f.message}"))
            else:
                waiter.set_result(f)

    def _tokens(self, seen: Seen, text: str, now: int, delta: bool) -> None:
        """Note the arrival of every token this text holds that the client had not seen,
        and for a delta its newest token (the one that just reached the node)."""
        words = text.split()
        n = min(len(words), self.tokens)
        if n and words[n - 1] != f"t{n - 1}":
            seen.garbled += 1
            return
        for i in range(seen.have, n):
            seen.arrived[i] = now
        if delta and n > seen.have:
            seen.newest.append((n - 1, now))
        seen.have = max(seen.have, n)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


def bot(server: Server, common: Common, o: BotOptions) -> dict[str, Any]:
    """`clients` members in one room; `rounds` times one of them calls the bot and every
    member waits for the whole answer; token latency per member and token."""
    from bench.onionchat_target import OnionChatServer

    if not isinstance(server, OnionChatServer):
        raise TargetError("bot: only OnionChat has bots")
    with ModelServer(tokens=o.tokens, rate=o.rate) as model:
        bot_env = {
            "ONIONCHAT_BOTS_OLGA_BASE_URL": model.base_url,
            # the mode calls the bot every round: the per-user rate is not what it measures
            "ONIONCHAT_BOTS_OLGA_USER_PER_MINUTE": "1000000",
        }
        server.env |= bot_env
        with Bench(server, common) as b:
            creds = server.prepare(o.clients)
            assert b.node is not None
            log(f"bot: {o.clients} clients, {o.rounds} answers of {o.tokens} tokens, {o.rate:g}/s")
            node_cpu0, t0 = b.node.cpu(), time.monotonic()
            rounds = asyncio.run(_run(server.port, creds, o))
            wall = time.monotonic() - t0
            node_cpu = b.node.cpu() - node_cpu0
            peak = b.node.hwm()
        answers = model.answers()
    if len(answers) != o.rounds:
        raise TargetError(f"bot: {o.rounds} calls but {len(answers)} requests at the model server")
    out = _figures(rounds, answers)
    out["settings"] = dataclasses.asdict(o) | {"flush_s": _flush(), "bot_env": bot_env}
    out["node_cpu_pct"] = round(node_cpu / wall * 100, 1)
    out["node_peak_mib"] = round(peak / MIB, 1)
    out["method"] = (
        "a stand-in Ollama (bench/model_server.py: native /api/chat NDJSON) on loopback in the "
        "bench process; clients on the websockets library in the bench process, in one asyncio "
        "loop; latency = client's monotonic_ns at the WebSocket message that first held a "
        "token - the model server's monotonic_ns right after it wrote that token"
    )
    tok, first, final = out["token_latency_ms"], out["first_token_ms"], out["final_message_ms"]
    log(
        f"bot: token p50 {tok['p50']} p99 {tok['p99']} max {tok['max']} ms; first token "
        f"p50 {first['p50']} p99 {first['p99']} ms; final message p50 {final['p50']} "
        f"p99 {final['p99']} ms; {out['deltas_per_answer']['mean']} deltas per answer"
    )
    return out


@dataclasses.dataclass
class Round:
    called_ns: int  # the call left its client
    seen: list[Seen]  # per member


async def _run(port: int, creds: list[dict[str, Any]], o: BotOptions) -> list[Round]:
    finished: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    members = [Member(i, o.tokens, finished) for i in range(len(creds))]
    try:
        opening = (m.open(port, c["token"]) for m, c in zip(members, creds, strict=True))
        await asyncio.gather(*opening)
        await asyncio.gather(
            *(
                m.request({"type": "join", "room": ROOM, "create": True, "ref": "j"}, "j")
                for m in members
            )
        )
        rounds = []
        budget = o.tokens / o.rate + 30.0
        for r in range(o.rounds):
            await asyncio.sleep(0.3)  # a quiet room before each call
            caller = members[r % len(members)]
            called = await caller.say(CALL)
            ids: set[str] = set()
            try:
                async with asyncio.timeout(budget):
                    for _ in members:
                        ids.add((await finished.get())[1])
            except TimeoutError:
                errors = [e for m in members for e in m.errors][:3]
                raise TargetError(
                    f"bot: round {r}: not every member had the answer after {budget:g} s "
                    f"(errors: {errors})"
                ) from None
            if len(ids) != 1:
                raise TargetError(f"bot: round {r}: members saw different answers {ids}")
            (answer_id,) = ids
            rounds.append(Round(called, [m.answers[answer_id] for m in members]))
        return rounds
    finally:
        await asyncio.gather(*(m.close() for m in members), return_exceptions=True)


def _figures(rounds: list[Round], answers: list[Answer]) -> dict[str, Any]:
    token_lat: list[int] = []
    first: list[int] = []
    final: list[int] = []
    missing = garbled = 0
    deltas: list[int] = []
    nonempty: list[int] = []
    call_to_model: list[int] = []
    request_to_first: list[int] = []
    newest: list[int] = []
    for rnd, answer in zip(rounds, answers, strict=True):
        emitted = answer.emitted_ns
        call_to_model.append(answer.received_ns - rnd.called_ns)
        if emitted:
            request_to_first.append(emitted[0] - answer.received_ns)
        for seen in rnd.seen:
            garbled += seen.garbled
            deltas.append(seen.deltas)
            nonempty.append(seen.deltas - seen.empty_deltas)
            for i, at in enumerate(seen.arrived[: len(emitted)]):
                if at:
                    token_lat.append(at - emitted[i])
                else:
                    missing += 1
            if seen.arrived and seen.arrived[0] and emitted:
                first.append(seen.arrived[0] - emitted[0])
            if seen.final_ns and emitted:
                final.append(seen.final_ns - emitted[-1])
            newest += [at - emitted[i] for i, at in seen.newest if i < len(emitted)]

    def ms(values: list[int]) -> dict[str, float | None]:
        return stats.summary_ms(np.array(values, dtype=np.int64))

    def spread(values: list[int]) -> dict[str, float | int | None]:
        if not values:
            return {"mean": None, "min": None, "max": None}
        return {"mean": round(sum(values) / len(values), 2), "min": min(values), "max": max(values)}

    return {
        "answers": len(rounds),
        "tokens_measured": len(token_lat),
        "tokens_missing": missing,
        "garbled_texts": garbled,
        "token_latency_ms": ms(token_lat),
        "first_token_ms": ms(first),
        "final_message_ms": ms(final),
        # each delta's newest token: it went out as it reached the node, so this is the node's
        # own pass-through and fan-out, without the wait for the next FLUSH
        "delta_newest_token_ms": ms(newest),
        "deltas_per_answer": spread(deltas),
        "text_deltas_per_answer": spread(nonempty),
        "call_to_model_request_ms": ms(call_to_model),
        "model_request_to_first_token_ms": ms(request_to_first),
    }


def _flush() -> float | None:
    """The node's delta pace, for the report (None if the node's code cannot be read)."""
    try:
        from onionchat.bots import FLUSH
    except ImportError:
        return None
    return FLUSH
