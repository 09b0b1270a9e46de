"""``cross4d pretrain``: pretrain the POINT4D student with one objective (dense | global | intra | none).

Runs as one process or under ``torchrun`` (DDP). Writes ``<out_dir>/encoder.safetensors``,
``config.json`` (the pretrained encoder directory ``cross4d probe | finetune | ...`` read;
``cross4d probe`` adds ``recognizer/``, what the ROS perception node serves),
``pretrain_results.json``, resumable checkpoints in ``checkpoints/`` and TensorBoard logs.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the CLI starts without torch
    from cross4d_core.data.clips import ClipDataset
    from cross4d_core.targets import OnlineClips, TargetCache

from cross4d_core.configs import train_config_names


def add_config_arguments(parser: argparse.ArgumentParser, default_config: str | None) -> None:
    """``--config`` (default: the shipped config ``default_config``, see :mod:`cross4d_core.configs`)
    and repeatable ``--set``."""
    parser.add_argument("--config", default=default_config,
                        help="YAML config: a file, or the name of a shipped one (an existing file of that name "
                             f"wins): {', '.join(train_config_names())} (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-3 (repeatable)")


def register(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="pretrain the POINT4D student (torchrun for multi-GPU)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, "pretrain_dense.yaml")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
    p.add_argument("--seeds", type=parse_seeds, default=None, metavar="S1,S2,...",
                   help="one run per seed, in OUT_DIR/seed<S>/ (compare methods over several seeds; "
                        "`cross4d report` shows mean ± std)")
    p.set_defaults(func=run_pretrain)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (distinct non-negative integers)."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def build_model_config(model_cfg):
    """``Point4DConfig`` from a :class:`ModelConfig` (preset ``paper`` or ``tiny`` + overrides)."""
    from cross4d_core.models import Point4DConfig

    if model_cfg.preset == "paper":
        return Point4DConfig(**model_cfg.overrides)
    if model_cfg.preset == "tiny":
        return Point4DConfig.tiny(**model_cfg.overrides)
    raise ValueError(f"model.preset must be 'paper' or 'tiny', got {model_cfg.preset!r}")


@dataclasses.dataclass
class PretrainData:
    """What pretraining reads: the dataset, the ``collate_fn`` that makes the objectives' typed
    batch of its items, the step-time batch transform (the online teacher), and provenance."""

    dataset: TargetCache | ClipDataset | OnlineClips
    collate_fn: Callable[[list[Any]], Any]
    prepare_batch: Callable[[Any], Any] | None = None
    d_p: int | None = None
    teacher: str | None = None
    normalisation: dict = dataclasses.field(default_factory=dict)
    target_means: dict = dataclasses.field(default_factory=dict)


def build_pretrain_dataset(config, device=None) -> PretrainData:
    """The training data of a :class:`TrainConfig`: a target cache (``data.source: targets``),
    an on-disk dataset with the frozen teacher run on ``device`` (a ``torch.device``, default
    CPU) in the training step (``online``; the ``teacher`` section), or plain clips (``clips``)."""
    data_cfg = config.data
    if not data_cfg.path:
        raise ValueError("data.path is empty: set it in the config or with --set data.path=DIR")
    if data_cfg.source == "targets":
        from cross4d_core.targets import TargetCache

        cache = TargetCache(data_cfg.path)
        m = cache.manifest
        return PretrainData(cache, cache.collate, d_p=int(m["d_p"]), teacher=m["teacher"]["name"],
                            normalisation=dict((m.get("dataset") or {}).get("normalisation") or {}),
                            target_means={k: cache.target_mean(k) for k in ("clip_target", "point_target")})
    if data_cfg.source not in ("clips", "online"):
        raise ValueError(f"data.source must be 'targets', 'online' or 'clips', got {data_cfg.source!r}")
    from cross4d_core.data.clips import ClipDataset

    t = config.teacher
    clips = ClipDataset(data_cfg.path, split=data_cfg.split, frames=data_cfg.frames,
                        frame_step=data_cfg.frame_step, clip_stride=data_cfg.clip_stride,
                        num_points=data_cfg.num_points, short_video=data_cfg.short_video,
                        seed=t.seed if data_cfg.source == "online" else 0, verify=data_cfg.verify)
    normalisation = dict(clips.dataset.manifest.get("normalisation") or {})
    if data_cfg.source == "clips":
        from cross4d_core.targets import ClipBatch

        return PretrainData(clips, ClipBatch.collate, normalisation=normalisation)
    from cross4d_core.cli.precompute import make_teacher
    from cross4d_core.correspondence import RenderViews
    from cross4d_core.targets import FeatureProjection, OnlineClips, OnlineTeacher

    device = device or "cpu"
    teacher = make_teacher(t.kind, t.model, str(device), source=t.source,
                           part_names=clips.dataset.manifest.get("part_names"), pose_bins=t.pose_bins, seed=t.seed,
                           bf16=str(device).startswith("cuda"), resize=t.resize, crop=t.crop)
    views = RenderViews(num_cameras=t.cameras, azimuth_deg=t.azimuth, elevation_deg=t.elevation)
    online = OnlineClips(clips, teacher, t.source, t.image_size, t.splat_radius, t.depth_tolerance, views)
    projection = FeatureProjection.random(teacher.feature_dim, t.d_p, t.seed)
    return PretrainData(online, online.collate, OnlineTeacher(teacher, projection), d_p=t.d_p, teacher=teacher.name,
                        normalisation=normalisation)


def pretrain(config, resume: bool = False) -> dict:
    """Run pretraining for a :class:`TrainConfig`; returns the results dict (rank 0 writes files)."""
    from transformers import set_seed

    from cross4d_core.fileio import write_json_atomic
    from cross4d_core.models import Point4DEncoder, count_parameters
    from cross4d_core.objectives import build_objective
    from cross4d_core.training.checkpoint import save_encoder
    from cross4d_core.training.config import config_to_dict
    from cross4d_core.training.distributed import barrier, init_distributed
    from cross4d_core.training.trainer import Trainer

    info = init_distributed(config.device)
    set_seed(config.seed)
    model_config = build_model_config(config.model)
    encoder = Point4DEncoder(model_config)
    options = dict(config.objective.options)
    data, target_mean = None, None
    if config.objective.name != "none":
        data = build_pretrain_dataset(config, info.device)
        if data.d_p is not None:
            options.setdefault("target_dim", data.d_p)
        target_mean = data.target_means.get("clip_target" if config.objective.name == "global" else "point_target")
    objective = build_objective(config.objective.name, encoder, options, target_mean)
    out = Path(config.out_dir)
    results: dict = {"objective": config.objective.name, "config": config_to_dict(config),
                     "model_config": model_config.to_dict(), "parameters": count_parameters(encoder),
                     "world_size": info.world_size, "device": str(info.device)}
    if getattr(objective, "requires_training", True):
        assert data is not None  # only objective 'none' reads no data, and it trains nothing
        trainer = Trainer(config, objective, data.dataset, collate_fn=data.collate_fn,
                          prepare_batch=data.prepare_batch, dist_info=info)
        result = trainer.fit(resume=resume)
        results.update({"steps": result.step, "epochs_completed": result.epoch,
                        "epoch_losses": result.epoch_losses, "step_losses": result.step_losses,
                        "final_loss": result.step_losses[-1] if result.step_losses else None,
                        "clips_per_second": result.clips_per_second, "wall_time_s": result.wall_time_s,
                        "checkpoint": result.checkpoint, "resumed_from": result.resumed_from,
                        "train_items": len(data.dataset)})
    if info.is_main:
        model_id = f"point4d-{config.objective.name}-{out.resolve().name}"
        teacher = data.teacher if data is not None else None
        pretrain_data = str(Path(config.data.path).resolve()) if data is not None else None
        save_encoder(out, objective.encoder.cpu(), model_id=model_id,
                     normalisation=data.normalisation if data is not None else {},
                     extra={"objective": config.objective.name, "pretrain_data": pretrain_data, "teacher": teacher})
        results.update({"model_id": model_id, "teacher": teacher})
        write_json_atomic(out / "pretrain_results.json", results)
    barrier(info)
    return results


def run_pretrain(args) -> int:
    from cross4d_core.training.config import TrainConfig, load_config
    from cross4d_core.training.distributed import shutdown_distributed

    try:
        config = load_config(TrainConfig, args.config, args.overrides)
        runs = [config] if args.seeds is None else [
            dataclasses.replace(config, seed=seed, out_dir=str(Path(config.out_dir) / f"seed{seed}"))
            for seed in args.seeds]
        for run in runs:
            results = pretrain(run, resume=args.resume)
            if "model_id" in results:  # rank 0
                print(f"pretrained {results['objective']} (seed {run.seed}): steps={results.get('steps', 0)} "
                      f"final_loss={results.get('final_loss')} -> {run.out_dir}")
    finally:
        shutdown_distributed()
    return 0
