"""POINT4D at the paper size (24 x 2048 points, B = 1 clip) on one thread of this machine.

Rows: parameters and FLOPs (torch FlopCounterMode on a real forward, 2 FLOPs per
multiply-add, attention included): the model's FLOPs are those of its definition (per-
neighbour set abstraction, ``sa_implementation="eager"``, the paper's 11.5 GFLOPs), the fused
forward executes fewer; fp32 2048^3 matmul FLOP/s on the same thread, measured before and
after the timings, as the ceiling (the faster of the two); forward latency (eval, no_grad)
with its achieved FLOP/s and its ratio to the ceiling;
per-frame set abstraction vs transformer split (what the ROS node can cache);
forward+backward; peak memory of forward and forward+backward as the RSS high-water delta
(VmHWM) in a fresh process; FPS and ball query at 24 x 2048.
"""
from __future__ import annotations

import multiprocessing

import torch

from benchmarks.common import Report, matmul_flops, torch_threads


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1])


def _peak_memory_child(train: bool, queue) -> None:
    """In a fresh process: peak RSS (VmHWM) during one pass minus RSS after building model + input."""
    from cross4d_core.models import Point4DConfig, Point4DEncoder

    torch.manual_seed(0)
    encoder = Point4DEncoder(Point4DConfig()).train(train)
    points = torch.rand(1, 24, 2048, 3)
    before = _status_kib("VmRSS")
    if train:
        encoder(points).token_features.square().mean().backward()
    else:
        with torch.no_grad():
            encoder(points)
    queue.put((_status_kib("VmHWM") - before) / 1024.0)


def run(report: Report) -> None:
    with torch_threads(1):
        _run(report)


def _run(report: Report) -> None:
    from cross4d_core.models import Point4DConfig, Point4DEncoder, count_flops, count_parameters
    from cross4d_core.ops import ball_query, farthest_point_sample, gather_points

    torch.manual_seed(0)
    config = Point4DConfig()
    encoder = Point4DEncoder(config).eval()
    eager = Point4DEncoder(Point4DConfig(sa_implementation="eager")).eval()
    points = torch.rand(1, config.num_frames, config.num_points, 3) * torch.tensor([0.8, 1.8, 0.5])

    report.value("parameters", count_parameters(encoder) / 1e6, "M", note="paper: 3.28M")
    with torch.no_grad():
        forward_flops = count_flops(eager, points)
        executed_flops = count_flops(encoder, points)
    report.value("forward FLOPs per clip", forward_flops / 1e9, "GFLOP",
                 note="paper: 11.5; the per-neighbour definition, what the ratios below count")
    report.value("  executed by the fused forward", executed_flops / 1e9, "GFLOP",
                 note="first set-abstraction layers per point, not per neighbour")
    train_flops = count_flops(lambda: encoder(points).token_features.square().mean().backward())
    report.value("forward+backward FLOPs per clip", train_flops / 1e9, "GFLOP")

    ceiling = matmul_flops(report)
    with torch.no_grad():
        forward = report.time("forward latency per clip", lambda: encoder(points), repeats=5, warmup=1,
                              items=1, item_unit="clips")
        frame_tokens = encoder.encode_frames(points)
        report.time("  encode_frames (per-frame SA, 24 frames)", lambda: encoder.encode_frames(points),
                    repeats=3, warmup=1)
        report.time("  encode_window (transformer)", lambda: encoder.encode_window(frame_tokens),
                    repeats=3, warmup=1)
    ceiling = max(ceiling, matmul_flops(report))
    achieved = forward_flops / (forward["median_ms"] / 1e3)
    report.value("forward achieved FLOP/s", achieved / 1e9, "GFLOP/s")
    report.value("forward achieved / matmul FLOP/s", 100.0 * achieved / ceiling, "%",
                 note=f"floor {forward_flops / ceiling * 1e3:.0f} ms at this run's matmul rate")

    encoder.train()
    backward = report.time("forward+backward per clip",
                           lambda: encoder(points).token_features.square().mean().backward(),
                           repeats=2, warmup=1, items=1, item_unit="clips")
    report.value("forward+backward achieved FLOP/s", train_flops / (backward["median_ms"] / 1e3) / 1e9, "GFLOP/s")

    context = multiprocessing.get_context("spawn")
    for name, train in (("forward (no_grad)", False), ("forward+backward", True)):
        queue = context.Queue()
        child = context.Process(target=_peak_memory_child, args=(train, queue))
        child.start()
        report.value(f"{name} peak memory", queue.get(timeout=120), "MiB",
                     note="VmHWM - VmRSS before the pass, in a fresh spawned process (Linux /proc)")
        child.join()

    flat = points.reshape(-1, config.num_points, 3)
    report.time(f"FPS 24 x 2048 -> {config.sa1_centroids}", lambda: farthest_point_sample(flat, config.sa1_centroids),
                repeats=3, warmup=1)
    report.time("FPS 24 x 2048 -> 512", lambda: farthest_point_sample(flat, 512), repeats=3, warmup=1,
                note="a Python loop over the samples took ~190 ms")
    centres = gather_points(flat, farthest_point_sample(flat, config.sa1_centroids))
    for mode in ("first", "nearest"):
        report.time(f"ball query 24 x 2048, {config.sa1_centroids} centres, k={config.sa1_neighbours}, {mode}",
                    lambda: ball_query(flat, centres, config.sa1_radius, config.sa1_neighbours, mode=mode),
                    repeats=3, warmup=1)
