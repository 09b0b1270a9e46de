"""Evaluation commands on a pretrained checkpoint directory (``cross4d pretrain`` output):

* ``cross4d probe``     linear probe on frozen mean-pooled features; writes the encoder +
                        probe head as a recognizer, ``<out>/recognizer/`` (what the ROS
                        perception node serves; out defaults to the checkpoint directory)
* ``cross4d transfer``  the same probe on another dataset (pretrain on A, probe on B; out
                        defaults to ``<checkpoint>/transfer_<dataset>``)
* ``cross4d finetune``  label-efficient fine-tuning, pretrained vs scratch, per label fraction
* ``cross4d segment``   per-point part probe (mIoU / mAcc / OA) and temporal correspondence
* ``cross4d robustness`` the clean-feature probe under test-time frame subsampling, point
                        dropout and coordinate jitter (the paper's Table 13)

Each writes ``<name>_results.json`` into its output directory.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from cross4d_core.cli.train import add_config_arguments
from cross4d_core.errors import ConfigError

#: Where ``cross4d probe`` / ``transfer`` write the recognizer inside their output directory.
RECOGNIZER_DIR = "recognizer"

if TYPE_CHECKING:  # imported where used: the CLI starts without torch
    import torch

    from cross4d_core.data.clips import ClipDataset
    from cross4d_core.evaluation.config import ClipDataConfig
    from cross4d_core.models import Point4DEncoder


class FrozenRunConfig(Protocol):
    """What :class:`FrozenEvaluation` reads of its run config (``ProbeRunConfig``,
    ``SegmentRunConfig``, ``RobustnessRunConfig``: dataclasses with these fields)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    data: ClipDataConfig
    device: str


ConfigT = TypeVar("ConfigT", bound=FrozenRunConfig)


def register(subparsers) -> None:
    specs = {
        "probe": ("linear probe of a pretrained encoder; writes OUT/recognizer/ for perception_node", "probe.yaml",
                  run_probe),
        "transfer": ("cross-domain linear probe (pretrained on A, probed on B)", "probe.yaml", run_transfer),
        "finetune": ("label-efficient fine-tuning over label fractions", "finetune.yaml", run_finetune),
        "segment": ("per-point part probe and temporal correspondence accuracy", "segment.yaml", run_segment),
        "robustness": ("probe on clean features, scored under frame / point dropout and jitter", "robustness.yaml",
                       run_robustness),
    }
    for name, (help_text, yaml_name, handler) in specs.items():
        p = subparsers.add_parser(name, help=help_text, description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--checkpoint", required=True, nargs="+", metavar="DIR",
                       help="pretrained checkpoint directory (encoder.safetensors); several (e.g. the seed<S>/ runs "
                            "of `cross4d pretrain --seeds`) are evaluated one after the other")
        p.add_argument("--dataset", required=True, help="dataset root (on-disk format)")
        p.add_argument("--out", default=None, help="output directory (default: see the command; one checkpoint only)")
        add_config_arguments(p, yaml_name)
        if name == "finetune":
            p.add_argument("--resume", action="store_true", help="continue unfinished fine-tuning runs")
        p.set_defaults(func=handler)


def _clip_sets(dataset_root: str, data, model_config, with_train: bool = True):
    from cross4d_core.data.clips import ClipDataset

    kwargs = dict(frames=data.frames or model_config.num_frames, frame_step=data.frame_step,
                  clip_stride=data.clip_stride, num_points=data.num_points or model_config.num_points,
                  short_video=data.short_video, seed=data.seed, verify=data.verify)
    train = ClipDataset(dataset_root, split=data.train_split, **kwargs) if with_train else None
    test = ClipDataset(dataset_root, split=data.test_split, **kwargs)
    for split, clips in ((data.train_split, train), (data.test_split, test)):
        if clips is not None and len(clips) == 0:
            raise ValueError(f"{dataset_root}: split {split!r} gives no {kwargs['frames']}-frame clips "
                             f"({clips.num_videos} videos, {len(clips.short_videos)} short videos with "
                             f"short_video={data.short_video!r}, {len(clips.empty_videos)} empty)")
    return train, test


@dataclasses.dataclass
class FrozenEvaluation(Generic[ConfigT]):
    """What every frozen-encoder protocol starts from: its run config, the encoder and its
    ``config.json``, the device and the train / test clip sets."""

    config: ConfigT
    encoder: Point4DEncoder
    meta: dict
    device: torch.device
    train: ClipDataset
    test: ClipDataset

    @classmethod
    def load(cls, args, config_class: type[ConfigT]) -> FrozenEvaluation[ConfigT]:
        from cross4d_core.devices import resolve_device
        from cross4d_core.training.checkpoint import load_encoder
        from cross4d_core.training.config import load_config

        config = load_config(config_class, args.config, args.overrides)
        device = resolve_device(config.device)
        encoder, meta = load_encoder(args.checkpoint, device)
        train, test = _clip_sets(args.dataset, config.data, encoder.config)
        return cls(config, encoder, meta, device, train, test)

    def write(self, args, protocol: str, results: dict, out: Path | None = None) -> Path:
        """Add the provenance fields and write ``<out>/<protocol>_results.json`` (default out:
        ``--out``, else the checkpoint)."""
        from cross4d_core.evaluation.protocols import dataset_report
        from cross4d_core.fileio import write_json_atomic
        from cross4d_core.training.config import config_to_dict

        results.update({"protocol": protocol, "checkpoint": str(Path(args.checkpoint).resolve()),
                        "model_id": self.meta.get("model_id"), "dataset": str(Path(args.dataset).resolve()),
                        "train_data": dataset_report(self.train), "test_data": dataset_report(self.test),
                        "config": config_to_dict(self.config)})
        out = out or (Path(args.out) if args.out else Path(args.checkpoint))
        write_json_atomic(out / f"{protocol}_results.json", results)
        return out


def _probe(args, kind: str) -> int:
    from cross4d_core.evaluation.config import ProbeRunConfig
    from cross4d_core.evaluation.protocols import run_linear_probe
    from cross4d_core.models import Recognizer, RecognizerConfig, RecognizerProvenance

    run = FrozenEvaluation.load(args, ProbeRunConfig)
    labels = run.train.label_names
    results, head = run_linear_probe(run.encoder, run.train, run.test, len(labels), run.config.probe,
                                     device=run.device, amp=run.config.amp, batch_size=run.config.data.batch_size)
    default_out = Path(args.checkpoint) if kind == "probe" else \
        Path(args.checkpoint) / f"transfer_{Path(args.dataset).resolve().name}"
    out = Path(args.out) if args.out else default_out
    provenance = RecognizerProvenance(
        source_checkpoint=str(Path(args.checkpoint).resolve()), objective=run.meta.get("objective"),
        teacher=run.meta.get("teacher"), pretrain_data=run.meta.get("pretrain_data"),
        dataset=str(Path(args.dataset).resolve()),
        normalisation=dict(run.train.dataset.manifest.get("normalisation") or {}),
        probe_l2=results["probe"].get("l2"), train_accuracy=results["train"]["video_accuracy"],
        test_accuracy=results["test"]["video_accuracy"])
    config = RecognizerConfig(model_config=run.encoder.config, label_names=labels, num_frames=run.train.frames,
                              num_points=run.train.num_points, model_id=run.meta.get("model_id", ""),
                              provenance=provenance)
    recognizer_dir = Recognizer(config, run.encoder.cpu(), head).save_pretrained(out / RECOGNIZER_DIR)
    results.update({"pretrain_data": run.meta.get("pretrain_data"), "objective": run.meta.get("objective"),
                    "teacher": run.meta.get("teacher"), "label_names": labels,
                    "recognizer": str(recognizer_dir.resolve())})
    run.write(args, kind, results, out)
    for name in ("probe", "paper_probe"):
        if name in results:
            print(probe_line(f"{kind} ({'converged L-BFGS' if name == 'probe' else 'paper recipe'})",
                             results[name], results if name == "probe" else results[name]))
    print(f"{kind}: -> {out} (recognizer for perception_node: {recognizer_dir})")
    return 0


def probe_line(title: str, fit: dict, accuracy: dict) -> str:
    """One console line per fitted probe: test / train video accuracy and convergence."""
    state = "converged" if fit["converged"] else "DID NOT CONVERGE"
    l2 = f", l2 {fit['l2']:g}" if fit.get("l2") is not None else ""
    return (f"{title}: test video accuracy {accuracy['test']['video_accuracy']:.4f} "
            f"(clip {accuracy['test']['clip_accuracy']:.4f}), train {accuracy['train']['video_accuracy']:.4f}; "
            f"{state} (gradient {fit['grad_norm']:.1e} after {fit['iterations']} iterations{l2})")


def _guard(fn):
    """Run ``fn`` once per ``--checkpoint`` (``args.checkpoint`` one directory each time)."""
    def handler(args) -> int:
        checkpoints = list(args.checkpoint)
        if args.out and len(checkpoints) > 1:
            raise ConfigError(f"--out names one output directory; {len(checkpoints)} checkpoints were given")
        for checkpoint in checkpoints:
            code = fn(argparse.Namespace(**{**vars(args), "checkpoint": checkpoint}))
            if code:
                return code
        return 0
    return handler


@_guard
def run_probe(args) -> int:
    return _probe(args, "probe")


@_guard
def run_transfer(args) -> int:
    return _probe(args, "transfer")


@_guard
def run_finetune(args) -> int:
    from cross4d_core.evaluation.config import FinetuneRunConfig
    from cross4d_core.evaluation.protocols import run_finetune as finetune
    from cross4d_core.fileio import write_json_atomic
    from cross4d_core.models import Point4DEncoder
    from cross4d_core.training.checkpoint import load_encoder
    from cross4d_core.training.config import config_to_dict, load_config
    from cross4d_core.training.distributed import init_distributed, shutdown_distributed

    config = load_config(FinetuneRunConfig, args.config, args.overrides)
    info = init_distributed(config.device)
    try:
        pretrained, meta = load_encoder(args.checkpoint, "cpu")
        train, test = _clip_sets(args.dataset, config.data, pretrained.config)

        def make_encoder(init: str):
            if init == "pretrained":
                return load_encoder(args.checkpoint, "cpu")[0].train()
            if init == "scratch":
                return Point4DEncoder(pretrained.config)
            raise ValueError(f"finetune inits must be 'pretrained' or 'scratch', got {init!r}")

        out = Path(args.out) if args.out else Path(args.checkpoint) / "finetune"
        results = finetune(make_encoder, pretrained.hidden_size, train, test, len(train.label_names), config,
                           out, resume=args.resume)
        if info.is_main:
            results.update({"protocol": "finetune", "checkpoint": str(Path(args.checkpoint).resolve()),
                            "model_id": meta.get("model_id"), "dataset": str(Path(args.dataset).resolve()),
                            "train_data_clips": len(train), "config": config_to_dict(config)})
            write_json_atomic(out / "finetune_results.json", results)
            for key, run in results["runs"].items():
                print(f"finetune {key}: test video accuracy {run['test']['video_accuracy']:.4f}")
    finally:
        shutdown_distributed()
    return 0


@_guard
def run_segment(args) -> int:
    from cross4d_core.evaluation.config import SegmentRunConfig
    from cross4d_core.evaluation.segmentation import run_segmentation_probe

    run = FrozenEvaluation.load(args, SegmentRunConfig)
    part_names = run.train.dataset.manifest.get("part_names")
    results, _ = run_segmentation_probe(run.encoder, run.train, run.test, len(part_names) if part_names else None,
                                        run.config.segment, device=run.device, amp=run.config.amp)
    if not results:
        raise ValueError(f"{args.dataset}: clips carry neither part labels nor tracks; nothing to evaluate")
    results["part_names"] = part_names
    out = run.write(args, "segment", results)
    print(f"segment: mIoU {results.get('miou')}, mAcc {results.get('macc')}, OA {results.get('overall_accuracy')}, "
          f"correspondence {results.get('correspondence')} -> {out}")
    return 0


@_guard
def run_robustness(args) -> int:
    from cross4d_core.evaluation.config import RobustnessRunConfig
    from cross4d_core.evaluation.robustness import run_robustness as robustness

    run = FrozenEvaluation.load(args, RobustnessRunConfig)
    results = robustness(run.encoder, run.train, run.test, len(run.train.label_names), run.config.robustness,
                         run.config.probe, device=run.device, amp=run.config.amp,
                         batch_size=run.config.data.batch_size)
    out = run.write(args, "robustness", results)
    for row in results["results"]:
        print(f"robustness {row['kind']}={row['value']:g} ({row['frames']} frames x {row['points']} points): "
              f"test video accuracy {row['video_accuracy']:.4f}")
    print(f"robustness: -> {out}")
    return 0
