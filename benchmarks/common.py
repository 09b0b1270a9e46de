"""Shared timing and reporting helpers for the benchmarks.

A benchmark module ``benchmarks/bench_<area>.py`` defines ``run(report: Report)`` and
records its figures with :meth:`Report.time` (repeated wall-clock timing) or
:meth:`Report.value` (a single derived number such as parameter count or points/s).

Shared machines run anywhere between ~0.4x and 1x of their quiet speed from one run to the
next, so compute figures are reported against a floor measured in the same run:
:func:`matmul_flops` (compute-bound work) and :func:`memcpy_bandwidth` (memory-bound work).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def measure(fn: Callable[[], object], repeats: int = 10, warmup: int = 2) -> dict:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    Returns ``{"median_ms", "min_ms", "max_ms", "repeats"}``.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "repeats": repeats,
    }


@dataclass
class Report:
    """Collects benchmark rows: ``{"bench", "name", ..., "note"}``."""

    bench: str = ""
    rows: list[dict] = field(default_factory=list)

    def time(self, name: str, fn: Callable[[], object], repeats: int = 10, warmup: int = 2,
             items: float | None = None, item_unit: str = "items", note: str = "") -> dict:
        """Time ``fn`` and record it; with ``items`` (work per call) also record a rate in items/s."""
        row = {"bench": self.bench, "name": name, **measure(fn, repeats, warmup), "note": note}
        if items is not None:
            row["rate"] = items / (row["median_ms"] / 1e3)
            row["rate_unit"] = f"{item_unit}/s"
        self.rows.append(row)
        print(f"  {name}: median {row['median_ms']:.3f} ms (min {row['min_ms']:.3f}, max {row['max_ms']:.3f})"
              + (f", {row['rate']:.4g} {row['rate_unit']}" if items is not None else ""), flush=True)
        return row

    def value(self, name: str, value: float, unit: str, note: str = "") -> dict:
        row = {"bench": self.bench, "name": name, "value": value, "unit": unit, "note": note}
        self.rows.append(row)
        print(f"  {name}: {value:.4g} {unit}", flush=True)
        return row


@contextlib.contextmanager
def torch_threads(threads: int):
    """Run the body with ``threads`` torch intra-op threads, then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def matmul_flops(report: Report, size: int = 2048, repeats: int = 5) -> float:
    """Record and return the fp32 ``size^3`` matmul rate (FLOP/s) on the current thread count:
    the compute floor of the run."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    row = report.time(f"fp32 matmul {size}^3 ({torch.get_num_threads()} threads)", lambda: a @ b,
                      repeats=repeats, warmup=1)
    flops = 2 * size**3 / (row["median_ms"] / 1e3)
    report.value("fp32 matmul FLOP/s", flops / 1e9, "GFLOP/s", note="floor of this run's compute figures")
    return flops


def memcpy_bandwidth(report: Report, mib: int = 64, repeats: int = 10) -> float:
    """Record and return the bandwidth (bytes/s) of copying ``mib`` MiB between two buffers:
    the memory floor of the run."""
    import torch

    src = torch.empty(mib * 2**20, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src).fill_(0)
    row = report.time(f"memcpy {mib} MiB", lambda: dst.copy_(src), repeats=repeats, warmup=2)
    bandwidth = mib * 2**20 / (row["median_ms"] / 1e3)
    report.value("memcpy bandwidth", bandwidth / 1e9, "GB/s", note="floor of this run's memory-bound figures")
    return bandwidth


def machine_info() -> dict:
    """Machine and library versions recorded with every benchmark run."""
    import os

    import numpy
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu_model"] = names[0]
    except OSError:
        pass
    for dist in ("transformers", "rosbags", "opencv-python-headless", "ros-rclpy"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = None
    return info
