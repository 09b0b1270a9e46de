"""``cross4d precompute``: correspondence + frozen teacher -> fp16 target cache."""
from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "precompute",
        help="run the frozen teacher once and cache dense per-point targets",
        description="Compute the point -> patch correspondence (render or camera) and the frozen teacher's "
        "projected patch features for every clip of a dataset; writes a resumable fp16 target cache.",
    )
    parser.add_argument("--dataset", required=True, help="dataset root (on-disk format of `cross4d data convert`)")
    parser.add_argument("--split", default=None, help="dataset split (default: all videos)")
    parser.add_argument("--teacher", choices=["dinov2", "vjepa2", "parts"], default="dinov2",
                        help="parts: the synthetic part teacher (render mode, datasets with part labels; NOT a "
                             "foundation model: a stand-in with known semantics)")
    parser.add_argument("--pose-bins", type=int, default=3,
                        help="parts teacher: orientation bins per part (1: part labels only)")
    parser.add_argument("--model", default="facebook/dinov2-large",
                        help="Hugging Face id or local directory (dinov2 / vjepa2)")
    parser.add_argument("--source", choices=["render", "camera"], default="render")
    parser.add_argument("--out", required=True, help="cache directory (an unfinished one is resumed)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the teacher (CUDA only)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--frame-step", type=int, default=1)
    parser.add_argument("--clip-stride", type=int, default=1)
    parser.add_argument("--num-points", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0, help="point sampling and projection seed")
    parser.add_argument("--d-p", type=int, default=384, help="projected target size")
    parser.add_argument("--projection", choices=["random", "pca"], default="random")
    parser.add_argument("--image-size", type=int, default=126, help="render size (render mode)")
    parser.add_argument("--splat-radius", type=int, default=1)
    parser.add_argument("--cameras", type=int, default=1, help="render mode: virtual cameras (paper Table 15: 1/2/4)")
    parser.add_argument("--azimuth", type=float, default=0.0,
                        help="render mode: first camera's turn (degrees) about the vertical from the sensor's view")
    parser.add_argument("--elevation", type=float, default=0.0,
                        help="render mode: cameras' tilt (degrees) to look down on the subject")
    parser.add_argument("--resize", type=int, default=None,
                        help="camera mode, dinov2: resize the shorter image side to this (default 224)")
    parser.add_argument("--crop", type=int, default=None, help="camera mode, dinov2: square centre crop (default 224)")
    parser.add_argument("--depth-tolerance", type=float, default=0.05, help="camera-mode occlusion tolerance (m)")
    parser.add_argument("--shard-size", type=int, default=64, help="videos per atomically written shard")
    parser.add_argument("--overwrite", action="store_true", help="discard an existing cache with other settings")
    parser.set_defaults(func=run)


def make_teacher(kind: str, model: str, device: str, *, source: str = "render", part_names: list | None = None,
                 pose_bins: int = 3, seed: int = 0, bf16: bool = False, resize: int | None = None,
                 crop: int | None = None):
    """The frozen teacher ``kind`` (``dinov2`` | ``vjepa2`` | ``parts``) as ``cross4d precompute`` and
    online-teacher pretraining build it; ``part_names``: the dataset's (part teacher)."""
    import torch

    from cross4d_core.teachers import PartTeacher, load_teacher

    if kind == "parts":
        if not part_names:
            raise ValueError("the part teacher needs a dataset with part labels (manifest part_names)")
        return PartTeacher(len(part_names), pose_bins=pose_bins, seed=seed, device=device)
    kwargs = {}
    if kind == "dinov2" and source == "camera":
        kwargs = {"resize_shortest_edge": resize or 224, "crop": crop or 224}
    elif kind == "vjepa2" and crop:
        kwargs = {"crop_size": crop}
    return load_teacher(kind, model, device=device, dtype=torch.bfloat16 if bf16 else None, **kwargs)


def run(args: argparse.Namespace) -> int:
    from cross4d_core.correspondence import RenderViews
    from cross4d_core.data import ClipDataset
    from cross4d_core.targets import precompute_targets

    clips = ClipDataset(args.dataset, split=args.split, frames=args.frames, frame_step=args.frame_step,
                        clip_stride=args.clip_stride, num_points=args.num_points, seed=args.seed,
                        with_images=args.source == "camera")
    try:
        teacher = make_teacher(args.teacher, args.model, args.device, source=args.source,
                               part_names=clips.dataset.manifest.get("part_names"), pose_bins=args.pose_bins,
                               seed=args.seed, bf16=args.bf16, resize=args.resize, crop=args.crop)
    except ValueError as err:
        raise ValueError(f"{args.dataset}: {err}") from err
    views = RenderViews(num_cameras=args.cameras, azimuth_deg=args.azimuth, elevation_deg=args.elevation)
    manifest = precompute_targets(
        clips, teacher, args.source, args.out, d_p=args.d_p, projection=args.projection, seed=args.seed,
        image_size=args.image_size, splat_radius=args.splat_radius, depth_tolerance=args.depth_tolerance,
        shard_size=args.shard_size, overwrite=args.overwrite, progress=True, views=views,
        dataset_info={"root": str(args.dataset), "split": args.split, "frames": args.frames,
                      "frame_step": args.frame_step, "clip_stride": args.clip_stride, "num_points": args.num_points,
                      "seed": args.seed, "normalisation": clips.dataset.manifest.get("normalisation") or {}},
    )
    print(f"precompute: {args.out}: " + json.dumps(manifest["counts"]))
    return 0
