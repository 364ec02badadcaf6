"""Percentiles and the figures of one measured step."""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

Latencies: TypeAlias = "npt.NDArray[np.int64]"


def latencies(chunks: list[bytes]) -> Latencies:
    """Concatenate the workers' latency arrays (int64 nanoseconds)."""
    arrays = [np.frombuffer(c, dtype=np.int64) for c in chunks if c]
    if not arrays:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(arrays)


def summary_ms(values: Latencies) -> dict[str, float | None]:
    """p50/p90/p99/max (and mean) in milliseconds, rounded to the microsecond."""
    if values.size == 0:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "p50": round(float(p50) / 1e6, 3),
        "p90": round(float(p90) / 1e6, 3),
        "p99": round(float(p99) / 1e6, 3),
        "max": round(float(values.max()) / 1e6, 3),
        "mean": round(float(values.mean()) / 1e6, 3),
    }


def ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)


def pct_change(new: float | None, old: float | None) -> float | None:
    if new is None or old is None or old == 0:
        return None
    return round((new - old) / old * 100, 1)


def rounded(d: dict[str, Any], digits: int = 1) -> dict[str, Any]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in d.items()}


def slowest_moments(
    drains: list[dict[str, Any]], start_ns: int, bucket_ms: float = 100.0, top: int = 3
) -> list[dict[str, Any]]:
    """The worst windows of a step by the time messages were sent: how late they arrived,
    and at how many of the generator's workers. Late at every worker is the node (or the
    machine) stalling; late at one worker is that worker's own doing."""
    rows = []
    for d in drains:
        lat = np.frombuffer(d.get("lat") or b"", dtype=np.int64)
        sent = np.frombuffer(d.get("sent") or b"", dtype=np.int64)
        if lat.size and lat.size == sent.size:
            rows.append((d.get("worker", 0), lat, sent))
    if not rows:
        return []
    width = int(bucket_ms * 1e6)
    worst: dict[int, dict[int, int]] = {}
    for worker, lat, sent in rows:
        buckets = (sent - start_ns) // width
        low = int(buckets.min())
        peak = np.full(int(buckets.max()) - low + 1, -1, dtype=np.int64)
        np.maximum.at(peak, buckets - low, lat)  # the worst latency of each window
        for b in np.flatnonzero(peak >= 0):
            worst.setdefault(int(b) + low, {})[worker] = int(peak[b])
    ranked = sorted(worst.items(), key=lambda kv: -max(kv[1].values()))[:top]
    return [
        {
            "at_s": round(b * bucket_ms / 1000, 1),
            "max_ms": round(max(w.values()) / 1e6, 1),
            "by_worker_ms": {str(k): round(v / 1e6, 1) for k, v in sorted(w.items())},
        }
        for b, w in ranked
    ]
