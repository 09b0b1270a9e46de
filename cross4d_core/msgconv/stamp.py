"""Time stamps: integer nanoseconds everywhere, and the one place they are converted.

cross4d keys frames, windows, datasets and messages on ``int`` nanoseconds since the
epoch (``sec * 10**9 + nanosec`` of a ``builtin_interfaces/Time``), so a stamp survives
every hop bit-exactly: header -> frame -> window -> output header, and header -> dataset
(``stamps.npy`` is int64 nanoseconds) -> training. Seconds appear only at the edges:
parameters and dataset readers that count frames at a frame rate (:func:`seconds_to_ns`)
and log lines (:func:`ns_to_seconds`).
"""
from __future__ import annotations

import numbers
from typing import cast

import numpy as np

from cross4d_core.msgconv.protocols import Ros1TimeLike, TimeLike

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp: TimeLike | Ros1TimeLike) -> int:
    """A ``builtin_interfaces/Time`` (``sec``/``nanosec``; ROS 1 ``secs``/``nsecs``), duck-typed -> ns."""
    sec = getattr(stamp, "sec", None)
    if sec is None:
        ros1 = cast(Ros1TimeLike, stamp)  # no ``sec``: the ROS 1 spelling
        return int(ros1.secs) * NS_PER_S + int(ros1.nsecs)
    return int(sec) * NS_PER_S + int(cast(TimeLike, stamp).nanosec)


def ns_to_stamp_parts(ns: int | np.integer) -> tuple[int, int]:
    """Integer nanoseconds -> ``(sec, nanosec)`` with ``0 <= nanosec < 10**9`` (negative times
    have a negative ``sec``). Floats are refused: a stamp in float seconds is a unit error."""
    value: object = ns  # checked at run time too: callers outside the type checker pass floats
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"stamps are integer nanoseconds, got {type(value).__name__} {value!r} "
                        "(convert seconds with seconds_to_ns)")
    sec, nanosec = divmod(int(value), NS_PER_S)
    return sec, nanosec


def seconds_to_ns(seconds):
    """Seconds (a number or an array) -> integer nanoseconds (``int`` or int64 array),
    rounded to the nearest nanosecond. Raises ValueError for NaN / Inf."""
    values = np.asarray(seconds, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"stamp seconds must be finite, got {seconds}")
    ns = np.rint(values * NS_PER_S).astype(np.int64)
    return int(ns) if ns.ndim == 0 else ns


def ns_to_seconds(ns):
    """Nanoseconds (an int or an array) -> float seconds, for display and arithmetic on durations."""
    return np.asarray(ns, dtype=np.int64) / NS_PER_S if np.ndim(ns) else int(ns) / NS_PER_S
