"""``cross4d synth`` and ``cross4d data {convert,from-bag,info}``: build datasets in the on-disk format."""
from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

from cross4d_core.errors import ConfigError
from cross4d_core.windowing import DEFAULT_MAX_FRAME_GAP_S

READER_FORMATS = ("msr", "ntu60", "hoi4d", "dt4d")


def _option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with a YAML scalar value (``protocol=xview``, ``num_points=1024``)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().replace("-", "_"), yaml.safe_load(value)


def _add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    from cross4d_core.data.synthetic import SyntheticConfig

    parser.add_argument("--subjects", type=int, default=8, help="performers (first half train, rest test)")
    parser.add_argument("--videos-per-class", type=int, default=2, help="videos per class per subject")
    parser.add_argument("--frames", type=int, default=32, help="frames per video")
    parser.add_argument("--classes", type=int, default=None, help="number of action classes (first K; default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--focal", type=float, default=285.0, help="focal length in pixels")
    parser.add_argument("--noise", type=float, default=1.0, help="depth noise scale (0 = clean)")
    defaults = SyntheticConfig()
    parser.add_argument("--facing", type=float, default=defaults.facing_deg,
                        help="subjects face the camera turned by up to +-this many degrees (180: any direction)")
    parser.add_argument("--camera-azimuth", type=float, default=defaults.azimuth_deg,
                        help="camera position round the room, +-degrees")
    parser.add_argument("--aim-offset", type=float, default=defaults.aim_offset_m,
                        help="camera aims up to this many metres off the subject")
    parser.add_argument("--clutter", type=int, default=defaults.clutter,
                        help="static scene objects per video (occluders; part label 'scene')")
    parser.add_argument("--no-images", action="store_true", help="do not store RGB images / cameras")
    parser.add_argument("--max-points", type=int, default=None,
                        help="store a random subset of at most this many points per frame (default: all)")


def register(subparsers) -> None:
    synth = subparsers.add_parser(
        "synth", help="generate the synthetic RGB-D action world as a dataset (and optionally a rosbag2)",
        description="Render articulated figures performing actions with a Kinect-like depth + RGB camera into "
                    "the on-disk dataset format (points, RGB, cameras, part labels, tracks). Resumable.")
    synth.add_argument("--out", required=True, help="dataset directory")
    _add_synth_arguments(synth)
    synth.add_argument("--bag", default=None, help="also record the dataset as a rosbag2 (MCAP) in this new directory")
    synth.add_argument("--bag-videos", type=int, default=None, help="record at most this many videos in the bag")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=run_synth)

    data = subparsers.add_parser("data", help="convert datasets into the on-disk format, inspect them")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    convert = sub.add_parser(
        "convert", help="convert a public dataset (or generate the synthetic one) into the on-disk format",
        description="Convert MSR-Action3D, NTU-RGB+D 60, HOI4D or DeformingThings4D into the on-disk format "
                    "(metres; normalisation recorded in the manifest). Resumable: finished videos are kept.")
    convert.add_argument("--format", required=True, choices=READER_FORMATS + ("synthetic",))
    convert.add_argument("--src", default=None, help="source folder (not used by --format synthetic)")
    convert.add_argument("--out", required=True, help="dataset directory")
    convert.add_argument("--set", dest="options", action="append", type=_option, default=[], metavar="KEY=VALUE",
                         help="reader option, e.g. protocol=xview (ntu60), subtract_center=true (hoi4d), "
                              "label_by=action, num_points=1024 (dt4d); "
                              "synthetic: subjects, videos_per_class, frames, classes, seed")
    convert.add_argument("--quiet", action="store_true", help="no progress bar")
    convert.set_defaults(func=run_convert)

    bag = sub.add_parser("from-bag", help="convert a rosbag2 (directory or .mcap/.db3) into the on-disk format",
                         description="One video per window of the same WindowBuffer the ROS nodes use.")
    bag.add_argument("--bag", required=True, help="bag directory or a bare .mcap / .db3 file")
    bag.add_argument("--out", required=True, help="dataset directory")
    bag.add_argument("--window", type=int, default=24, help="frames per window (video)")
    bag.add_argument("--stride", type=int, default=None, help="frames between windows (default: --window)")
    bag.add_argument("--label", type=int, default=-1, help="label of every window (-1: unlabelled)")
    bag.add_argument("--label-names", default="", help="comma-separated class names")
    bag.add_argument("--split", default="train")
    bag.add_argument("--cloud-topic", default="auto")
    bag.add_argument("--image-topic", default="auto", help="'none' for no images")
    bag.add_argument("--camera-info-topic", default="auto", help="'none' for no camera info")
    bag.add_argument("--sync-tolerance", type=float, default=0.05, help="max |image - cloud| stamp difference (s)")
    bag.add_argument("--max-frame-gap", type=float, default=DEFAULT_MAX_FRAME_GAP_S,
                     help="a longer step between clouds (s) starts a new window (0 = never), as in the nodes")
    bag.add_argument("--quiet", action="store_true", help="no progress bar")
    bag.set_defaults(func=run_from_bag)

    info = sub.add_parser("info", help="print a dataset's manifest summary")
    info.add_argument("root", help="dataset directory")
    info.add_argument("--verify", choices=["none", "size", "checksum"], default="none",
                      help="also check every file against meta.json")
    info.add_argument("--json", action="store_true", help="print the whole manifest as JSON (without the video list)")
    info.set_defaults(func=run_info)


def _synth(out: str, args: argparse.Namespace, progress: bool) -> dict:
    from cross4d_core.data.synthetic import ACTION_NAMES, SyntheticConfig, generate_synthetic_dataset

    config = SyntheticConfig(width=args.width, height=args.height, focal=args.focal, noise=args.noise,
                             facing_deg=args.facing, azimuth_deg=args.camera_azimuth, aim_offset_m=args.aim_offset,
                             clutter=args.clutter)
    return generate_synthetic_dataset(out, num_subjects=args.subjects,
                                      videos_per_class_per_subject=args.videos_per_class, frames=args.frames,
                                      seed=args.seed, classes=args.classes or len(ACTION_NAMES), config=config,
                                      with_images=not args.no_images, max_points=args.max_points,
                                      progress=progress)


def run_synth(args: argparse.Namespace) -> int:
    summary = _synth(args.out, args, progress=not args.quiet)
    print(json.dumps({"out": args.out, **summary}))
    if args.bag:
        from cross4d_core.data.rosbag import write_synthetic_bag

        print(json.dumps(write_synthetic_bag(args.out, args.bag, max_videos=args.bag_videos)))
    return 0


def run_convert(args: argparse.Namespace) -> int:
    options: dict[str, Any] = dict(args.options)
    if args.format == "synthetic":
        defaults = argparse.ArgumentParser(add_help=False)
        _add_synth_arguments(defaults)
        synth_args = defaults.parse_args([])
        for key, value in options.items():
            key = {"videos_per_class_per_subject": "videos_per_class", "num_subjects": "subjects"}.get(key, key)
            if not hasattr(synth_args, key):
                raise ConfigError(f"unknown synthetic option {key!r}")
            setattr(synth_args, key, value)
        summary = _synth(args.out, synth_args, progress=not args.quiet)
    else:
        if args.src is None:
            raise ConfigError(f"--src is required for --format {args.format}")
        if not Path(args.src).exists():
            raise ConfigError(f"--src {args.src} does not exist")
        reader = importlib.import_module(f"cross4d_core.data.readers.{args.format}")
        summary = reader.convert(Path(args.src), Path(args.out), progress=not args.quiet, **options)
    print(json.dumps({"format": args.format, "out": args.out, **summary}))
    return 0


def run_from_bag(args: argparse.Namespace) -> int:
    from cross4d_core.data.rosbag import convert_bag

    def topic(value: str) -> str | None:
        return None if value.lower() == "none" else value

    summary = convert_bag(
        Path(args.bag), Path(args.out), label=args.label,
        label_names=[n for n in args.label_names.split(",") if n], split=args.split,
        window_length=args.window, stride=args.stride, max_frame_gap=args.max_frame_gap, progress=not args.quiet,
        cloud_topic=args.cloud_topic, image_topic=topic(args.image_topic),
        camera_info_topic=topic(args.camera_info_topic), sync_tolerance=args.sync_tolerance,
    )
    print(json.dumps(summary))
    return 0


def run_info(args: argparse.Namespace) -> int:
    from cross4d_core.data.format import Dataset4D

    dataset = Dataset4D.open(args.root, allow_incomplete=True)
    m = dataset.manifest
    if args.verify != "none":
        print(f"verified {dataset.verify(args.verify)} files ({args.verify})")
    if args.json:
        print(json.dumps({k: v for k, v in m.items() if k != "videos"}, indent=1))
        return 0
    c = m["counts"]
    print(f"{args.root}: {m['format']} v{m['version']}{'' if m['complete'] else ' (INCOMPLETE)'}")
    print(f"  source: {m['source']}   units: {m['units']}")
    print(f"  normalisation: {json.dumps(m['normalisation'])}")
    print(f"  videos: {c['videos']}   frames: {c['frames']}   points: {c['points']}   "
          f"empty frames: {c['empty_frames']}   unlabelled videos: {c['unlabelled_videos']}")
    for split, s in sorted(c["by_split"].items()):
        print(f"  split {split}: {s['videos']} videos, {s['frames']} frames")
    for name, n in zip(m["label_names"], c["videos_per_label"]):
        print(f"  {n:6d}  {name}")
    return 0
