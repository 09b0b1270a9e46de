"""Pretraining throughput: one dense-objective optimisation step of POINT4D through the
:class:`Trainer` (AdamW, clipping, schedule; bf16 autocast on CUDA), in clips/s.

CPU: a tiny and a small config (the paper size takes seconds per step on 2 cores; its
forward/backward cost is in bench_model). CUDA (when available): the paper config at
24 x 2048 in bf16.
"""
from __future__ import annotations

import tempfile

import torch

from benchmarks.common import Report


def synthetic_items(config, n: int, d_p: int = 384, grid: int = 81, first: int = 0) -> list[dict]:
    """Target-cache items ``first .. first + n - 1`` (what the trainer reads) of random points and
    targets for a model config; item ``i`` depends on ``i`` only."""
    T, N = config.num_frames, config.num_points
    items = []
    for i in range(first, first + n):
        g = torch.Generator().manual_seed(i)
        items.append({"points": torch.rand(T, N, 3, generator=g), "slot": torch.arange(T)[:, None].expand(T, N).clone(),
                      "patch": torch.randint(0, grid, (T, N), generator=g), "visible": torch.rand(T, N, generator=g) < 0.5,
                      "grids": torch.randn(T, grid, d_p, generator=g).half(), "clip_target": torch.randn(d_p, generator=g),
                      "label": torch.tensor(0), "video": torch.tensor(i)})
    return items


def _bench(report: Report, name: str, model_config, batch: int, device: str, repeats: int) -> None:
    from cross4d_core.models import Point4DEncoder
    from cross4d_core.objectives import build_objective
    from cross4d_core.training import TrainConfig, Trainer, load_config

    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(TrainConfig, None, [f"out_dir={out}", f"data.batch_size={batch}", f"device={device}",
                                              "epochs=1", "progress=false", "tensorboard=false"])
        torch.manual_seed(0)
        objective = build_objective("dense", Point4DEncoder(model_config), {"target_dim": 384})
        items = synthetic_items(model_config, 2 * batch)
        trainer = Trainer(cfg, objective, items)
        collated = torch.utils.data.default_collate(items[:batch])
        batch_on_device = {k: v.to(trainer.device) for k, v in collated.items()}

        def step():
            trainer.train_step(batch_on_device, step=10)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()

        precision = "bf16" if trainer.autocast else "fp32"
        report.time(f"{name} train step B={batch} {model_config.num_frames}x{model_config.num_points} {precision}",
                    step, repeats=repeats, warmup=2, items=batch, item_unit="clips",
                    note=f"{device}, dense objective, AdamW + clip")
        result = trainer.fit()  # end to end: data loading, schedule, logging, checkpoint
        report.value(f"{name} fit() throughput incl. data + checkpoint", result.clips_per_second, "clips/s",
                     note=f"{result.step} steps")


def run(report: Report) -> None:
    from cross4d_core.models import Point4DConfig

    report.bench = "training"
    _bench(report, "tiny", Point4DConfig.tiny(), batch=8, device="cpu", repeats=10)
    small = Point4DConfig(num_frames=8, num_points=512, sa1_centroids=64, sa2_centroids=16)
    _bench(report, "small (paper widths)", small, batch=4, device="cpu", repeats=3)
    if torch.cuda.is_available():
        _bench(report, "paper", Point4DConfig(), batch=16, device="cuda", repeats=10)


if __name__ == "__main__":
    run(Report())
