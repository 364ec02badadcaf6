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
