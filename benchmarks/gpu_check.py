"""``make gpu-check``: the CUDA path of cross4d in one command, prepared in advance for a GPU
machine that is at hand rarely and briefly (a benchmark script, not a test).

Writes ``<out>/gpu.json`` and ``<out>/gpu.md`` (machine, driver, torch / CUDA / NCCL
versions; every timing as median / min / max) after each section, so a run cut short still
leaves what it measured:

1. ``tests``: the tests marked ``cuda`` (``tests/test_cuda.py``) in a subprocess;
2. ``pretrain``: one dense-objective :class:`Trainer` step at the paper size (POINT4D at
   24 x 2048, bf16 autocast) for batch 32 and 64, eager and with the transformer blocks
   under ``torch.compile``: clips/s, the step split into data (collate + pinned host-to-device
   copy) / forward / backward / optimiser (differences of nested timings), peak memory;
3. ``teachers``: randomly initialised DINOv2-large-shaped (hidden 1024, 24 layers, patch 14)
   and V-JEPA 2-L-shaped teachers on 126 px renders (frames/s), and the whole per-clip
   precompute (render + DINOv2-L + projection + cache write, clips/s);
4. ``perception``: inference at the paper size with the per-frame cache of the ROS node
   (``cross4d_ros.frame_cache``, no ROS needed), ms per window;
5. ``ddp``: ``torchrun`` DDP over every visible GPU with NCCL (a world of one on one GPU);
6. ``msr``: the MSR-Action3D estimate, target precompute + 100 epochs at the measured rates.

``--dry`` runs the same code at a tiny size on the CPU (the cuda tests on the CPU, DDP with
gloo); ``make test`` runs it (``tests/test_gpu_check.py``) so the script cannot rot.

Usage: ``python -m benchmarks.gpu_check [--dry] [--out reports] [--only SECTION ...]``
(``make gpu-check``, ``make gpu-check ARGS=--dry``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_training import synthetic_items
from benchmarks.common import Report, machine_info
from benchmarks.run import markdown_report
from cross4d_core.fileio import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("tests", "pretrain", "teachers", "perception", "ddp", "msr")
#: Environment variable that runs the cuda tests on the CPU (``tests/test_cuda.py``).
CUDA_TESTS_DEVICE = "CROSS4D_CUDA_TESTS_DEVICE"

#: MSR-Action3D: 567 videos of 40.2 frames on average; clips of 24 frames at frame step 1
#: starting at every frame (``ClipDataset(frames=24, frame_step=1, clip_stride=1)``, the
#: paper's 24 x 2048 at stride 1 and the P4Transformer loader's sampling), 100 epochs.
MSR_VIDEOS, MSR_MEAN_FRAMES, MSR_CLIP_FRAMES, MSR_EPOCHS = 567, 40.2, 24, 100


@dataclass(frozen=True)
class Sizes:
    """What each section runs: the paper size on CUDA, or a tiny size on the CPU (``--dry``)."""

    tiny: bool
    batches: tuple[int, ...]
    repeats: int
    warmup: int
    compile_backend: str
    dinov2: dict
    vjepa2: dict
    teacher_frames: int
    precompute_clips: int
    windows: int
    ddp_batch_per_rank: int
    ddp_steps: int

    def model_config(self):
        from cross4d_core.models import Point4DConfig

        return Point4DConfig.tiny() if self.tiny else Point4DConfig()


PAPER = Sizes(
    tiny=False, batches=(32, 64), repeats=5, warmup=2, compile_backend="inductor",
    # DINOv2-large: 24 layers of width 1024, 16 heads, patch 14, position grid of 518 px
    dinov2=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, patch_size=14,
                image_size=518),
    # V-JEPA 2-L: the config defaults (1024 x 24 layers, 16 heads, 16 px x 2-frame tubelets, 256 px);
    # the predictor never runs (skip_predictor), so a 1-layer one keeps the checkpoint small
    vjepa2=dict(pred_hidden_size=64, pred_num_hidden_layers=1, pred_num_attention_heads=4),
    teacher_frames=24, precompute_clips=16, windows=20, ddp_batch_per_rank=32, ddp_steps=10)
DRY = Sizes(
    tiny=True, batches=(2, 4), repeats=2, warmup=1, compile_backend="eager",
    dinov2=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, patch_size=14,
                image_size=126),
    vjepa2=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, crop_size=32,
                frames_per_clip=8, pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=2),
    teacher_frames=4, precompute_clips=2, windows=3, ddp_batch_per_rank=2, ddp_steps=2)


@dataclass
class Context:
    sizes: Sizes
    device: torch.device
    tmp: Path
    deadline: float
    figures: dict = field(default_factory=dict)  # measured rates the MSR estimate uses

    def left_s(self) -> float:
        return self.deadline - time.monotonic()


class SyntheticTargets(torch.utils.data.Dataset):
    """``length`` target-cache items cycling through a pool of ``pool`` random ones (item ``i``
    is a function of ``i``): the trainer's input without a cache on disk or GBs of memory."""

    def __init__(self, config, length: int, pool: int) -> None:
        self.items = synthetic_items(config, min(pool, length))
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        return self.items[i % len(self.items)]


def _keep_going(report: Report, ctx: Context, name: str, failed: list[str], fn, *args) -> None:
    """Run ``fn(*args)``; a failure is printed, recorded in ``failed`` and as a FAILED row, and
    the caller goes on with its next configuration. CUDA's cached memory is released after."""
    try:
        fn(*args)
    except Exception as exc:
        traceback.print_exc()
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
        report.value(f"{name}: FAILED", 0, "", note=failed[-1][:500])
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_config(ctx: Context, out: Path, batch: int, **extra):
    from cross4d_core.training import TrainConfig, load_config

    overrides = {"out_dir": out, "data.batch_size": batch, "device": ctx.device.type, "epochs": 1, "amp": True,
                 "progress": False, "tensorboard": False, **extra}
    return load_config(TrainConfig, None, [f"{k}={v}" for k, v in overrides.items()])


def _dense_objective(config):
    from cross4d_core.models import Point4DEncoder
    from cross4d_core.objectives import build_objective

    torch.manual_seed(0)
    return build_objective("dense", Point4DEncoder(config), {"target_dim": 384})


# ----------------------------------------------------------------------------------- sections

def section_tests(report: Report, ctx: Context) -> None:
    """The cuda-marked tests in a subprocess (on the CPU under ``--dry``); one row per test."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if ctx.sizes.tiny:
        env.update({CUDA_TESTS_DEVICE: "cpu", "OMP_NUM_THREADS": "1"})
    junit = ctx.tmp / "cuda-tests.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={junit}", "tests/test_cuda.py"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=max(60.0, min(300.0, ctx.left_s())))
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        outcome = "failed" if outcome in ("failure", "error") else outcome
        counts[outcome] += 1
        report.value(case.get("name"), float(case.get("time", 0.0)) * 1e3, "ms", note=outcome)
    report.value("cuda tests passed", counts["passed"], "tests",
                 note=f"{counts['failed']} failed, {counts['skipped']} skipped")
    if proc.returncode != 0 or counts["passed"] == 0:
        raise RuntimeError(f"cuda tests: {counts} (pytest exit {proc.returncode}): {proc.stdout[-2000:]}")


def section_pretrain(report: Report, ctx: Context) -> None:
    """A training step at each batch size, eager and compiled, split into its phases."""
    config, sizes = ctx.sizes.model_config(), ctx.sizes
    failed = []
    for batch in sizes.batches:
        dataset = SyntheticTargets(config, 2 * batch, pool=batch)
        for compiled in (False, True):
            precision = "bf16" if ctx.device.type == "cuda" else "fp32"  # the trainer's autocast (amp: true)
            name = f"B={batch} {config.num_frames}x{config.num_points} {precision}" + (" compiled" if compiled else "")
            if compiled and ctx.left_s() < (60 if sizes.tiny else 150):
                report.value(f"{name}: skipped", 0, "", note="not enough of the time budget left")
                continue
            # one configuration failing (say, a compiler error) keeps the others' figures
            _keep_going(report, ctx, name, failed, _pretrain_step, report, ctx, dataset, batch, compiled, name)
    if failed:
        raise RuntimeError("; ".join(failed))


def _pretrain_step(report: Report, ctx: Context, dataset: SyntheticTargets, batch: int, compiled: bool,
                   name: str) -> None:
    from cross4d_core.targets import TargetBatch
    from cross4d_core.training import Trainer

    device, sizes = ctx.device, ctx.sizes
    items = [dataset[i] for i in range(batch)]
    objective = _dense_objective(sizes.model_config())
    trainer = Trainer(_train_config(ctx, ctx.tmp / f"pretrain_{batch}_{compiled}", batch), objective, dataset,
                      collate_fn=TargetBatch.collate)
    if compiled:  # the dense blocks; the point ops' Python loops stay eager
        for block in objective.encoder.blocks:
            block.compile(backend=sizes.compile_backend, dynamic=False)

    def load():
        collated = TargetBatch.collate(items)
        if device.type == "cuda":
            collated = collated.pin_memory()
        out = collated.to(device, non_blocking=True)
        _sync(device)
        return out

    on_device = load()

    def forward(backward: bool = False):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=trainer.autocast):
            loss = objective(on_device).loss
        if backward:
            loss.backward()
            objective.zero_grad(set_to_none=True)
        _sync(device)

    def step():
        trainer.train_step(on_device, step=0)
        _sync(device)

    started = time.perf_counter()
    step()  # the first step compiles
    report.value(f"{name}: first step", (time.perf_counter() - started) * 1e3, "ms",
                 note="includes torch.compile" if compiled else "warm-up (CUDA context, allocator, kernels)")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = dict(repeats=sizes.repeats, warmup=sizes.warmup)
    data = report.time(f"{name}: data (collate + pin + copy)", load, **timed)
    fwd = report.time(f"{name}: forward", forward, **timed)
    fwd_bwd = report.time(f"{name}: forward + backward", lambda: forward(True), **timed)
    full = report.time(f"{name}: train step", step, items=batch, item_unit="clips", **timed)
    report.value(f"{name}: backward", fwd_bwd["median_ms"] - fwd["median_ms"], "ms", note="difference of medians")
    report.value(f"{name}: optimiser (clip + AdamW + logging)", full["median_ms"] - fwd_bwd["median_ms"], "ms",
                 note="difference of medians")
    clips_per_s = batch / ((full["median_ms"] + data["median_ms"]) / 1e3)
    report.value(f"{name}: clips/s incl. data", clips_per_s, "clips/s")
    if device.type == "cuda":
        report.value(f"{name}: peak memory", torch.cuda.max_memory_allocated(device) / 2**30, "GiB")
    ctx.figures[f"train_clips_per_s_B{batch}" + ("_compiled" if compiled else "")] = clips_per_s


def section_teachers(report: Report, ctx: Context) -> None:
    """Random DINOv2-L / V-JEPA 2-L teachers on renders (frames/s), then the per-clip precompute."""
    from transformers import Dinov2Config, Dinov2Model, VJEPA2Config, VJEPA2Model

    failed = []
    for kind, model_class, config_class, shape in (("dinov2", Dinov2Model, Dinov2Config, ctx.sizes.dinov2),
                                                   ("vjepa2", VJEPA2Model, VJEPA2Config, ctx.sizes.vjepa2)):
        # one teacher failing keeps the other's figures
        _keep_going(report, ctx, kind, failed, lambda: _teacher(report, ctx, kind, model_class(config_class(**shape))))
    if failed:
        raise RuntimeError("; ".join(failed))


def _teacher(report: Report, ctx: Context, kind: str, model: torch.nn.Module) -> None:
    from cross4d_core.targets.precompute import precompute_targets
    from cross4d_core.teachers import load_teacher
    from cross4d_core.types import Clip

    sizes, device = ctx.sizes, ctx.device
    frames = sizes.teacher_frames
    images = np.random.default_rng(0).integers(0, 256, (frames, 126, 126, 3), dtype=np.uint8)
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    model.save_pretrained(ctx.tmp / kind)  # loaded back the way `cross4d precompute` loads a teacher
    del model
    teacher = load_teacher(kind, str(ctx.tmp / kind), device=device, dtype=torch.bfloat16)

    def run():
        teacher.grid_features(images)
        _sync(device)

    row = report.time(f"{kind} ({parameters:.4g}M parameters, random init): {frames} frames of 126 px", run,
                      repeats=sizes.repeats, warmup=sizes.warmup, items=frames, item_unit="frames",
                      note="bf16 autocast" if device.type == "cuda" else "fp32 on CPU")
    ctx.figures[f"{kind}_frames_per_s"] = row["rate"]
    if kind != "dinov2":
        return
    # the whole precompute of a clip, as `cross4d precompute --source render` runs it
    config = sizes.model_config()
    g = np.random.default_rng(1)
    clips = [Clip(points=(g.normal(size=(config.num_frames, config.num_points, 3)) * [0.25, 0.8, 0.15]
                          + [0.0, 0.0, 3.0]).astype(np.float32),
                  stamps_ns=np.arange(config.num_frames, dtype=np.int64) * 66_666_667)
             for _ in range(sizes.precompute_clips)]
    started = time.perf_counter()
    precompute_targets(clips, teacher, "render", ctx.tmp / "cache", shard_size=8)
    _sync(device)
    seconds = time.perf_counter() - started
    report.value(f"precompute (render + {kind} + projection + write), {len(clips)} clips", len(clips) / seconds,
                 "clips/s", note=f"{seconds:.2f} s; render on {torch.get_num_threads()} CPU threads")
    ctx.figures["precompute_clips_per_s"] = len(clips) / seconds


def section_perception(report: Report, ctx: Context) -> None:
    """Sliding windows at stride 1 the way perception_node runs them (a random recognizer saved and
    loaded from its directory, per-frame cache, head), and without the cache."""
    from cross4d_core.frame_cache import FrameEncodingCache
    from cross4d_core.models import Recognizer, RecognizerConfig

    config, device, sizes = ctx.sizes.model_config(), ctx.device, ctx.sizes
    torch.manual_seed(0)
    T = config.num_frames
    labels = [f"action{c}" for c in range(20)]  # MSR-Action3D's 20 classes
    directory = Recognizer(RecognizerConfig(model_config=config, label_names=labels, num_frames=T,
                                            num_points=config.num_points, model_id="gpu-check-random")
                           ).save_pretrained(ctx.tmp / "recognizer")
    recognizer = Recognizer.from_pretrained(directory, device)
    frames = torch.rand(T + sizes.windows + 1, config.num_points, 3) * torch.tensor([0.8, 1.8, 0.5])
    cache = FrameEncodingCache(recognizer.encoder, T + 1)
    for cached in (True, False):
        position = iter(range(sizes.windows + 1))

        def window():
            w = next(position)
            points = frames[w:w + T].to(device)  # like the node: each window's points go to the device
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = recognizer.classify(cache.encode(list(range(w, w + T)), points)) if cached \
                    else recognizer(points[None])
            out.logits.float().cpu()
            _sync(device)

        report.time(f"window {T}x{config.num_points}, stride 1, " + ("per-frame cache" if cached else "no cache"),
                    window, repeats=sizes.windows, warmup=1, items=1, item_unit="windows",
                    note="one new frame per window" if cached else "every frame of the window encoded")


def section_ddp(report: Report, ctx: Context) -> None:
    """``torchrun`` over every visible GPU (NCCL; gloo and one CPU process under ``--dry``)."""
    world = 1 if ctx.sizes.tiny or ctx.device.type != "cuda" else max(1, torch.cuda.device_count())
    out = ctx.tmp / "ddp"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if ctx.sizes.tiny:
        env["OMP_NUM_THREADS"] = "1"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", str(world), "-m", "benchmarks.gpu_check",
           "--ddp-worker", "--out", str(out)] + (["--dry"] if ctx.sizes.tiny else [])
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=max(60.0, min(300.0, ctx.left_s())))
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exit {proc.returncode}: {proc.stdout[-1500:]} {proc.stderr[-1500:]}")
    result = json.loads((out / "ddp.json").read_text())
    report.value("world size", result["world_size"], "ranks", note=f"backend {result['backend']}")
    report.value("all_reduce of rank ids", float(result["all_reduce_ok"]), "ok")
    report.value(f"DDP fit, B={result['global_batch']}, {result['steps']} steps", result["clips_per_second"],
                 "clips/s", note=f"{result['wall_time_s']:.2f} s incl. data and the final checkpoint")


def ddp_worker(out: Path, dry: bool) -> None:
    """One ``torchrun`` rank: an explicit process group (so a world of one still runs DDP),
    an all-reduce check, then a short :class:`Trainer` fit under DDP."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from cross4d_core.targets import TargetBatch
    from cross4d_core.training import Trainer
    from cross4d_core.training.distributed import shutdown_distributed

    sizes = DRY if dry else PAPER
    cuda = torch.cuda.is_available() and not dry
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    check = torch.tensor([rank + 1.0], device=device)
    dist.all_reduce(check)
    config = sizes.model_config()
    batch = sizes.ddp_batch_per_rank * world
    dataset = SyntheticTargets(config, batch * sizes.ddp_steps, pool=sizes.ddp_batch_per_rank)
    ctx = Context(sizes, device, out, deadline=time.monotonic())
    trainer = Trainer(_train_config(ctx, out / "run", batch, max_steps=sizes.ddp_steps), _dense_objective(config),
                      dataset, collate_fn=TargetBatch.collate)
    if not isinstance(trainer.wrapped, DistributedDataParallel):
        raise RuntimeError("the trainer did not wrap the model in DDP")
    result = trainer.fit()
    if rank == 0:
        write_text_atomic(out / "ddp.json", json.dumps({
            "world_size": world, "backend": backend, "all_reduce_ok": float(check) == world * (world + 1) / 2,
            "global_batch": batch, "steps": result.step, "clips_per_second": result.clips_per_second,
            "wall_time_s": result.wall_time_s, "losses": result.step_losses,
            "nccl": _nccl_version() if cuda else None}))
    shutdown_distributed()


def msr_estimate(ctx: Context) -> dict:
    """Target precompute + 100 epochs of MSR-Action3D at the measured rates (batch 32, the
    faster of eager and compiled)."""
    clips_per_video = MSR_MEAN_FRAMES - MSR_CLIP_FRAMES + 1
    clips = MSR_VIDEOS * clips_per_video
    train_rates = [v for k, v in ctx.figures.items() if k.startswith("train_clips_per_s_B32")] or \
        [v for k, v in ctx.figures.items() if k.startswith("train_clips_per_s")]
    precompute = ctx.figures.get("precompute_clips_per_s")
    if not train_rates or not precompute:
        raise RuntimeError(f"needs the pretrain and teachers sections' rates, have {sorted(ctx.figures)}")
    precompute_s = clips / precompute
    train_s = MSR_EPOCHS * clips / max(train_rates)
    return {
        "clips_per_epoch": clips,
        "assumption": (f"{MSR_VIDEOS} videos x ({MSR_MEAN_FRAMES} - {MSR_CLIP_FRAMES} + 1) clips: every start frame "
                       f"of a {MSR_CLIP_FRAMES}-frame clip at frame step 1 (ClipDataset clip_stride=1, the "
                       "P4Transformer MSR loader's sampling; shorter videos give one padded clip, so this "
                       "slightly under-counts); all videos (pretraining needs no labels)"),
        "precompute_clips_per_s": precompute, "train_clips_per_s": max(train_rates),
        "precompute_min": precompute_s / 60, "train_min": train_s / 60, "total_min": (precompute_s + train_s) / 60,
        "goal_min": 10.0,
    }


def section_msr(report: Report, ctx: Context) -> None:
    est = msr_estimate(ctx)
    ctx.figures["msr"] = est
    report.value("clips per epoch", est["clips_per_epoch"], "clips", note=est["assumption"])
    report.value("target precompute", est["precompute_min"], "min",
                 note=f"at {est['precompute_clips_per_s']:.3g} clips/s")
    report.value(f"{MSR_EPOCHS} epochs", est["train_min"], "min", note=f"at {est['train_clips_per_s']:.3g} clips/s")
    report.value("precompute + 100 epochs", est["total_min"], "min",
                 note="--dry: tiny sizes on the CPU, not an estimate" if ctx.sizes.tiny
                 else f"goal <= {est['goal_min']:.0f} min on one H100/H200")


SECTION_FUNCTIONS = {"tests": section_tests, "pretrain": section_pretrain, "teachers": section_teachers,
                     "perception": section_perception, "ddp": section_ddp, "msr": section_msr}


# ----------------------------------------------------------------------------------- report

def _nccl_version() -> str:
    version = torch.cuda.nccl.version()  # a tuple in torch 2, an int before
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def gpu_machine_info() -> dict:
    info = machine_info()
    info["torch_cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cudnn"] = torch.backends.cudnn.version()
        info["nccl"] = _nccl_version()
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=30).stdout.split()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            info["driver"] = None
    return info


def _write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "gpu.json", json.dumps(result, indent=2, default=str))
    title = "cross4d gpu-check" + (" (--dry: tiny sizes on the CPU)" if result["dry"] else "")
    lines = [markdown_report(result, title),
             "| section | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {s['status']} | {s['seconds']:.1f} |" for name, s in result["sections"].items()]
    msr = result.get("msr_estimate")
    if msr:
        lines += ["", f"MSR-Action3D estimate: {msr['clips_per_epoch']:.0f} clips per epoch ({msr['assumption']}); "
                      f"precompute {msr['precompute_min']:.1f} min + {MSR_EPOCHS} epochs {msr['train_min']:.1f} min = "
                      f"**{msr['total_min']:.1f} min** (goal <= {msr['goal_min']:.0f} min)."]
    write_text_atomic(out / "gpu.md", "\n".join(lines) + "\n")


def run_check(out: Path, dry: bool, only: list[str] | None, budget_s: float) -> dict:
    if not dry and not torch.cuda.is_available():
        raise SystemExit("gpu-check: no CUDA device is visible; `--dry` runs the same code at a tiny size on the CPU")
    sizes = DRY if dry else PAPER
    if dry:
        torch.set_num_threads(1)  # tiny tensors: more threads only contend on a shared CPU
    result = {"machine": gpu_machine_info(), "dry": dry, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "rows": [], "failed": {}, "sections": {}}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cross4d-gpu-check-") as tmp:
        ctx = Context(sizes, torch.device("cpu" if dry else "cuda"), Path(tmp), deadline=started + budget_s)
        for name in SECTIONS:
            if only and name not in only:
                continue
            report = Report(bench=name)
            section_started = time.monotonic()
            print(f"[gpu-check] {name}", flush=True)
            if ctx.left_s() <= 0:
                status = "skipped: time budget spent"
            else:
                try:
                    SECTION_FUNCTIONS[name](report, ctx)
                    status = "ok"
                except Exception as exc:  # one failing section must not hide the others' figures
                    traceback.print_exc()
                    status = "FAILED"
                    result["failed"][name] = f"{type(exc).__name__}: {exc}"[:3000]
            result["rows"].extend(report.rows)
            result["sections"][name] = {"status": status, "seconds": time.monotonic() - section_started}
            if "msr" in ctx.figures:
                result["msr_estimate"] = ctx.figures["msr"]
            result["wall_time_s"] = time.monotonic() - started
            _write(out, result)
    print(f"[gpu-check] wrote {out / 'gpu.json'} and {out / 'gpu.md'} in {result['wall_time_s']:.1f} s", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", help="tiny sizes on the CPU (what `make test` runs)")
    parser.add_argument("--out", type=Path, default=REPO / "reports")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, default=None)
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="sections not started by then are skipped (the whole check must fit in 8 minutes)")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args.out, args.dry)
        return 0
    result = run_check(args.out, args.dry, args.only, args.budget_s)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
