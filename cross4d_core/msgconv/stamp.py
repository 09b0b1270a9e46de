"""builtin_interfaces/Time <-> float seconds, duck-typed (``sec``/``nanosec``, or ROS 1 ``secs``/``nsecs``).

A float64 holds today's epoch times to about 0.2 microseconds, so a round trip through
float seconds may move a stamp by a few hundred nanoseconds; compare stamps as
``(sec, nanosec)`` where exact equality matters.
"""
from __future__ import annotations

import math


def stamp_to_seconds(stamp) -> float:
    """``stamp.sec + stamp.nanosec * 1e-9`` as a float (seconds)."""
    sec = getattr(stamp, "sec", None)
    if sec is None:
        return stamp.secs + stamp.nsecs * 1e-9
    return sec + stamp.nanosec * 1e-9


def seconds_to_stamp_parts(seconds: float) -> tuple[int, int]:
    """Float seconds -> ``(sec, nanosec)`` with ``0 <= nanosec < 1e9`` (rounded to the
    nearest nanosecond; negative times have a negative ``sec``)."""
    if not math.isfinite(seconds):
        raise ValueError(f"stamp seconds must be finite, got {seconds}")
    sec = math.floor(seconds)
    nanosec = round((seconds - sec) * 1e9)
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return int(sec), int(nanosec)
