"""Frames to the node: one at a time, in order, paced under the node's rate limit.

The node drops a frame that comes too fast without reading it, and says so with a
`rate_limited` error that carries the frame's ref. Pacing a little under the limits it
announces in `ready` makes that practically never happen: a frame sent again after newer ones
would arrive out of order. If it happens all the same, the frame goes out again before
anything newer, once the node's bucket has had time to refill.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import json
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from onionchat import PROTOCOL_VERSION
from onionchat.ratelimit import TokenBucket


@dataclasses.dataclass(frozen=True, order=True)
class _Outgoing:
    number: int  # the order of first sending: a frame sent again keeps its place
    ref: str = dataclasses.field(compare=False)
    data: dict[str, Any] = dataclasses.field(compare=False)


class Outbox:
    """Every frame after `auth` goes through here, so it can be paced, resent and settled."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._pacer: TokenBucket | None = None  # until the node tells its limits
        self._refs = itertools.count(1)
        self._numbers = itertools.count()
        self._lock = asyncio.Lock()  # one sender at a time keeps frames in order
        self._queue: list[_Outgoing] = []  # a heap: waiting to go, oldest first
        self._unanswered: dict[str, _Outgoing] = {}  # sent, in sending order
        self._pongs: dict[str, asyncio.Future[None]] = {}
        self._resending: asyncio.Task[None] | None = None

    def pace(self, rate: float, burst: int) -> None:
        """Stay under the node's limits with room to spare, since delays on the way can bunch
        frames up: nine tenths of its rate, half of its burst."""
        self._pacer = TokenBucket(0.9 * rate, max(1, burst // 2))

    def ref(self) -> str:
        """A fresh ref, for a frame whose answer the caller wants to recognise."""
        return f"c{next(self._refs)}"

    async def send(self, frame: dict[str, Any]) -> str:
        """Send `frame` (given a ref unless it has one); return once it has gone."""
        ref = frame.get("ref") or self.ref()
        data = {"v": PROTOCOL_VERSION, **frame, "ref": ref}
        heapq.heappush(self._queue, _Outgoing(next(self._numbers), ref, data))
        await self._flush()
        return ref

    async def _pace(self) -> None:
        """Wait until one more frame may go, and count it."""
        while self._pacer is not None:
            if self._pacer.allow():
                return
            await asyncio.sleep(self._pacer.delay())

    async def _flush(self) -> None:
        async with self._lock:
            while self._queue:
                await self._pace()
                frame = heapq.heappop(self._queue)
                self._unanswered[frame.ref] = frame
                text = json.dumps(frame.data, ensure_ascii=False, separators=(",", ":"))
                with contextlib.suppress(ConnectionClosed):  # the reader reports the close
                    await self._ws.send(text)

    def answered(self, ref: str) -> None:
        """The node answered `ref`, and so every frame sent before it: it handles a
        connection's frames one by one, in order. (Some frames, like a topic, get no answer
        of their own: a later answer settles them.)"""
        if ref not in self._unanswered:
            return
        for earlier in list(self._unanswered):
            del self._unanswered[earlier]
            pong = self._pongs.pop(earlier, None)
            if pong is not None and not pong.done():
                pong.set_result(None)
            if earlier == ref:
                return

    def dropped(self, ref: str) -> bool:
        """The node dropped `ref` unread for rate: send it again, before anything newer.
        False if `ref` is not a frame of ours that awaits an answer."""
        frame = self._unanswered.pop(ref, None)
        if frame is None:
            return False
        heapq.heappush(self._queue, frame)
        if self._pacer is not None:  # the node's bucket ran dry: give it time to refill
            self._pacer.empty()
        if self._resending is None or self._resending.done():
            self._resending = asyncio.create_task(self._flush())
        return True

    async def settle(self) -> None:
        """Return once the node has answered every frame sent. A ping goes last, and its pong
        answers everything before it; frames dropped meanwhile went again after it, so then
        another ping follows them."""
        while self._queue or self._unanswered:
            ref = self.ref()
            pong: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._pongs[ref] = pong
            await self.send({"type": "ping", "ref": ref})
            await pong

    @property
    def unsettled(self) -> int:
        """Frames (pings aside) not yet answered."""
        frames = [*self._queue, *self._unanswered.values()]
        return sum(1 for frame in frames if frame.data["type"] != "ping")

    def close(self) -> None:
        if self._resending is not None:
            self._resending.cancel()
