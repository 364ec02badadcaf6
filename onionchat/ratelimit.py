"""Rate limits: token buckets, sliding windows, and the growing delays of failed logins."""

from __future__ import annotations

import collections
import dataclasses
import time


class TokenBucket:
    """Allows `rate` events a second on average and `burst` at once."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()

    def allow(self) -> bool:
        """Count one event if the bucket allows it now."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def reserve(self) -> float:
        """Take the next token, now or ahead of time: the seconds until it is due. Callers that
        wait that long are served at the rate, in the order they came."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= 1.0
        return max(0.0, -self._tokens / self._rate)

    def delay(self) -> float:
        """Seconds until the next event would be allowed (as of the last `allow`)."""
        return max(0.0, (1.0 - self._tokens) / self._rate)

    def empty(self) -> None:
        """Start from nothing, as if a full burst had just been spent."""
        self._tokens = 0.0
        self._last = time.monotonic()


class Buckets:
    """A token bucket per key (a user, a name), remembering at most `keys` keys: the one
    forgotten first is the one used longest ago, which would have refilled anyway."""

    def __init__(self, rate: float, burst: int, keys: int = 100_000) -> None:
        self._rate = rate
        self._burst = burst
        self._keys = keys
        self._buckets: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()

    def allow(self, key: str) -> bool:
        bucket = self._buckets.pop(key, None) or TokenBucket(self._rate, self._burst)
        self._buckets[key] = bucket
        while len(self._buckets) > self._keys:
            self._buckets.popitem(last=False)
        return bucket.allow()


class Windows:
    """At most `limit` events per key within `window` seconds; remembers at most `keys` keys."""

    def __init__(self, limit: int, window: float, keys: int = 100_000) -> None:
        self._limit = limit
        self._window = window
        self._keys = keys
        self._events: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may act again (0 when it may act now)."""
        events = self._events.get(key)
        if not events:
            return 0.0
        now = time.monotonic()
        while events and events[0] <= now - self._window:
            events.popleft()
        if len(events) < self._limit:
            return 0.0
        return events[0] + self._window - now

    def hit(self, key: str) -> None:
        events = self._events.pop(key, None) or collections.deque(maxlen=self._limit)
        events.append(time.monotonic())
        self._events[key] = events
        while len(self._events) > self._keys:
            self._events.popitem(last=False)

    def clear(self, key: str) -> None:
        self._events.pop(key, None)


@dataclasses.dataclass(slots=True)
class _Guesses:
    failures: int = 0
    next_try: float = 0.0


class Guesses:
    """Failed logins per name (or per device), slowed by a delay that doubles with each failure
    past the free ones, up to `max_delay`: guessing crawls, and nothing is ever shut for long.
    Remembers at most `keys` names; the one forgotten first is the one idle longest."""

    def __init__(self, free: int, max_delay: float, keys: int = 100_000) -> None:
        self._free = free
        self._max_delay = max_delay
        self._keys = keys
        self._names: collections.OrderedDict[str, _Guesses] = collections.OrderedDict()

    def wait(self, key: str) -> float:
        """Seconds until `key` may be tried again (0: now)."""
        found = self._names.get(key)
        return 0.0 if found is None else max(0.0, found.next_try - time.monotonic())

    def failed(self, key: str) -> None:
        found = self._names.pop(key, None) or _Guesses()
        found.failures += 1
        if found.failures >= self._free:
            delay = min(self._max_delay, 2.0 ** (found.failures - self._free))
            found.next_try = time.monotonic() + delay
        self._names[key] = found
        while len(self._names) > self._keys:
            self._names.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._names.pop(key, None)
