"""Training engine: config loading, schedule, exact resume, NaN stop, atomic checkpoints,
DDP (2 gloo processes under torchrun) vs one process, the pretrained encoder directory."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from cross4d_core.training import (
    CheckpointError,
    ConfigError,
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    latest_checkpoint,
    load_config,
    load_encoder,
    save_encoder,
    warmup_cosine_lr,
)
from cross4d_core.training import checkpoint as ckpt_module

REPO = Path(__file__).resolve().parents[1]


class PointsDataset(torch.utils.data.Dataset):
    """Fixed random clips with a regression target (TargetCache-like keys)."""

    def __init__(self, n: int = 32, frames: int = 4, points: int = 8, dim: int = 5):
        g = torch.Generator().manual_seed(0)
        self.points = torch.randn(n, frames, points, 3, generator=g)
        self.target = torch.randn(n, dim, generator=g)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> dict:
        return {"points": self.points[i], "clip_target": self.target[i], "video": torch.tensor(i)}


class NoisyRegression(nn.Module):
    """Uses dropout and torch.randn in forward, so exact resume needs the RNG states."""

    def __init__(self, dim: int = 5, nan_at_call: int | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, dim))
        self.calls = 0
        self.after_steps = 0
        self.nan_at_call = nan_at_call

    def forward(self, batch):
        self.calls += 1
        x = batch["points"] + 0.01 * torch.randn_like(batch["points"])
        loss = ((self.net(x).mean((1, 2)) - batch["clip_target"]) ** 2).mean()
        if self.nan_at_call == self.calls:
            loss = loss * float("nan")
        return loss, {"mse": loss.detach()}

    def after_step(self):
        self.after_steps += 1


def make_config(tmp_path, *extra) -> TrainConfig:
    return load_config(TrainConfig, None, [f"out_dir={tmp_path}", "epochs=3", "data.batch_size=8", "progress=false",
                                           "device=cpu", "keep_checkpoints=20", *extra])


# ----------------------------------------------------------------------------- config / schedule


def test_yaml_config_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 1.0e-3}\nmodel: {preset: tiny, overrides: {hidden_size: 64}}\nepochs: 7\n")
    cfg = load_config(TrainConfig, path, ["optim.lr=2e-3", "optim.betas=[0.8, 0.9]", "max_steps=null",
                                          "objective.options.mask_ratio=0.4"])
    assert cfg.optim.lr == 2e-3 and cfg.optim.betas == (0.8, 0.9) and cfg.epochs == 7
    assert cfg.model.overrides == {"hidden_size": 64} and cfg.objective.options == {"mask_ratio": 0.4}
    assert cfg.optim.weight_decay == 1e-4 and cfg.optim.warmup_fraction == 0.05  # the paper's optimiser settings
    with pytest.raises(ConfigError, match=r"optim.lrr"):
        load_config(TrainConfig, path, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"'epochs' = 'many'"):
        load_config(TrainConfig, path, ["epochs=many"])
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(TrainConfig, path, ["epochs"])


def test_shipped_yaml_configs_load():
    from cross4d_core.configs import train_config, train_config_names
    from cross4d_core.evaluation.config import FinetuneRunConfig, ProbeRunConfig, SegmentRunConfig

    expected = {"pretrain_dense": ("dense", "targets"), "pretrain_global": ("global", "targets"),
                "pretrain_intra": ("intra", "clips"), "pretrain_tiny": ("dense", "targets")}
    assert {f"{name}.yaml" for name in expected} | {"probe.yaml", "finetune.yaml", "segment.yaml"} <= set(
        train_config_names())
    for name, (objective, source) in expected.items():
        cfg = load_config(TrainConfig, f"{name}.yaml")
        assert (cfg.objective.name, cfg.data.source) == (objective, source)
        assert cfg.optim.lr == 5e-4 and cfg.optim.weight_decay == 1e-4
        assert cfg == load_config(TrainConfig, train_config(f"{name}.yaml"))
    assert load_config(ProbeRunConfig, "probe.yaml").probe.paper.epochs == 300
    assert load_config(FinetuneRunConfig, "finetune.yaml").fractions == [0.1, 0.25, 0.5, 1.0]
    assert load_config(SegmentRunConfig, "segment.yaml").segment.correspondence_gaps == (8, 15)


def test_a_config_file_wins_over_the_shipped_config_of_its_name(tmp_path, monkeypatch):
    from cross4d_core.configs import train_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "probe.yaml").write_text("epochs: 7\n")
    assert load_config(TrainConfig, "probe.yaml").epochs == 7
    with pytest.raises(ConfigError, match=r"no shipped config 'nosuch.yaml' \(shipped: .*pretrain_dense.yaml"):
        train_config("nosuch.yaml")
    with pytest.raises(ConfigError, match="cannot read config file nosuch.yaml"):
        load_config(TrainConfig, "nosuch.yaml")


@given(total=st.integers(20, 2000), frac=st.sampled_from([0.0, 0.05, 0.1]))
def test_warmup_cosine_schedule(total, frac):
    lrs = [warmup_cosine_lr(s, total, 1.0, frac) for s in range(total)]
    warm = max(1, round(frac * total)) if frac > 0 else 0
    for s in range(warm):  # linear warm-up up to the base lr
        assert lrs[s] == pytest.approx((s + 1) / warm)
    assert lrs[warm] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[warm:], lrs[warm + 1:]))  # monotone cosine decay
    mid = warm + (total - warm - 1) // 2
    expected = 0.5 * (1 + math.cos(math.pi * (mid - warm) / max(1, total - warm - 1)))
    assert lrs[mid] == pytest.approx(expected)


# ----------------------------------------------------------------------------- trainer


def test_resume_gives_bit_identical_next_losses(tmp_path):
    cfg = make_config(tmp_path, "checkpoint_every_steps=3", "max_steps=9")
    torch.manual_seed(0)
    first = Trainer(cfg, NoisyRegression(), PointsDataset()).fit()
    assert len(first.step_losses) == 9 and first.step == 9
    assert first.epoch_losses and first.step_losses[0] != first.step_losses[1]
    for step in (3, 4, 8):  # mid-epoch (3), epoch boundary (4 = 32 / 8), late (8 = epoch end)
        torch.manual_seed(123)  # a different init: everything must come from the checkpoint
        model = NoisyRegression()
        again = Trainer(cfg, model, PointsDataset()).fit(resume=tmp_path / "checkpoints" / f"step_{step:08d}")
        assert again.step_losses == first.step_losses[step:], step  # bit-identical floats
        assert model.after_steps == 9 - step
    # --resume with no path picks the newest complete checkpoint (the final one: nothing left).
    done = Trainer(cfg, NoisyRegression(), PointsDataset()).fit(resume=True)
    assert done.step == 9 and done.step_losses == [] and done.resumed_from.endswith("step_00000009")


def test_resume_with_real_dense_objective(tmp_path):
    from cross4d_core.models import Point4DConfig, Point4DEncoder
    from cross4d_core.objectives import build_objective
    from cross4d_core.targets import ClipTargets, TargetBatch

    mc = Point4DConfig.tiny()
    g = torch.Generator().manual_seed(1)
    B, T, N, S, P, D = 8, mc.num_frames, mc.num_points, mc.num_frames, 9, 16
    items = [ClipTargets(points=torch.rand(T, N, 3, generator=g),
                         target_index=torch.where(torch.rand(T, N, generator=g) > 0.4,
                                                  torch.randint(0, S * P, (T, N), generator=g), -1),
                         features=torch.randn(S * P, D, generator=g).half(), clip_target=torch.randn(D, generator=g),
                         label=torch.tensor(0), video=torch.tensor(i), start=torch.tensor(0), clip=torch.tensor(i))
             for i in range(B * 2)]

    def run(resume=False):
        torch.manual_seed(0)
        obj = build_objective("dense", Point4DEncoder(mc), {"target_dim": D})
        return Trainer(make_config(tmp_path, "data.batch_size=4", "max_steps=5", "checkpoint_every_steps=2"),
                       obj, items, collate_fn=TargetBatch.collate).fit(resume=resume)

    first = run()
    second = run(resume=tmp_path / "checkpoints" / "step_00000002")
    assert second.step_losses == first.step_losses[2:]
    assert first.step_losses[-1] < first.step_losses[0]


def test_nan_loss_stops_with_clear_message(tmp_path):
    cfg = make_config(tmp_path, "checkpoint_every_steps=2")
    model = NoisyRegression(nan_at_call=3)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan at step 3 .*step_00000002"):
        Trainer(cfg, model, PointsDataset()).fit()
    assert model.after_steps == 2  # the bad step never reached the optimizer
    assert latest_checkpoint(tmp_path).name == "step_00000002"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    cfg = make_config(tmp_path, "max_steps=2")
    trainer = Trainer(cfg, NoisyRegression(), PointsDataset())
    trainer.fit()
    good = latest_checkpoint(tmp_path)
    assert good.name == "step_00000002"
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    def crash(*args, **kwargs):  # dies after model.safetensors was written
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt_module.save_training_checkpoint(tmp_path, 3, trainer.module, trainer.optimizer, {}, {})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000002"]  # no half-written dir
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    # A leftover temp dir of a killed process is ignored by resume.
    (tmp_path / "checkpoints" / ".step_00000005.abc.tmp").mkdir()
    assert latest_checkpoint(tmp_path) == good
    # A corrupt file is named in the error.
    (good / "optimizer.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="optimizer.safetensors"):
        Trainer(cfg, NoisyRegression(), PointsDataset()).fit(resume=True)


def test_checkpoint_rotation_keeps_newest(tmp_path):
    cfg = make_config(tmp_path, "keep_checkpoints=2", "checkpoint_every_steps=1", "max_steps=6")
    Trainer(cfg, NoisyRegression(), PointsDataset()).fit()
    assert [p.name for p in ckpt_module.list_checkpoints(tmp_path)] == ["step_00000005", "step_00000006"]


def test_tensorboard_scalars_written(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    Trainer(make_config(tmp_path, "max_steps=4", "log_every_steps=1"), NoisyRegression(), PointsDataset()).fit()
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/mse"} <= tags
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]


@pytest.mark.parametrize("override, match", [
    ("data.batch_size=64", r"dataset of 32 items gives no full batch of data.batch_size=64"),
    ("data.batch_size=0", r"data.batch_size=0 must be >= 1"),
    ("epochs=0", r"epochs=0 and max_steps=None must be >= 1"),
    ("max_steps=0", r"epochs=3 and max_steps=0 must be >= 1"),
])
def test_trainer_rejects_bad_sizes(tmp_path, override, match):
    with pytest.raises(ValueError, match=match):
        Trainer(make_config(tmp_path, override), NoisyRegression(), PointsDataset())


DDP_WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    from torch import nn
    from cross4d_core.training import TrainConfig, Trainer, load_config
    from cross4d_core.training.distributed import shutdown_distributed

    class Data(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x, self.y = torch.randn(48, 4, 8, 3, generator=g), torch.randn(48, 5, generator=g)
        def __len__(self):
            return 48
        def __getitem__(self, i):
            return {"points": self.x[i], "clip_target": self.y[i]}

    class Regression(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 5))
        def forward(self, batch):
            loss = ((self.net(batch["points"]).mean((1, 2)) - batch["clip_target"]) ** 2).mean()
            return loss, {}

    torch.set_num_threads(1)
    out = sys.argv[1]
    cfg = load_config(TrainConfig, None, [f"out_dir={out}", "epochs=2", "data.batch_size=8", "device=cpu",
                                          "progress=false", "tensorboard=false", "optim.lr=1e-2"])
    torch.manual_seed(0)
    model = Regression()
    init = [p.detach().flatten().tolist() for p in model.parameters()]
    result = Trainer(cfg, model, Data()).fit()
    if int(os.environ.get("RANK", "0")) == 0:
        params = [p.detach().flatten().tolist() for p in model.parameters()]
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump({"losses": result.step_losses, "params": params, "init": init,
                       "world": int(os.environ.get("WORLD_SIZE", "1"))}, f)
    shutdown_distributed()
''')


def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"}
    torchrun = Path(sys.executable).parent / "torchrun"
    one, two = tmp_path / "one", tmp_path / "two"
    procs = [subprocess.Popen([sys.executable, str(script), str(one)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT),
             subprocess.Popen([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(two)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out.decode()[-3000:]
    a = json.loads((one / "result.json").read_text())
    b = json.loads((two / "result.json").read_text())
    assert a["world"] == 1 and b["world"] == 2
    assert len(a["losses"]) == len(b["losses"]) == 12  # 48 items / global batch 8 x 2 epochs
    assert b["losses"] == pytest.approx(a["losses"], rel=1e-5, abs=1e-6)
    for pa, pb in zip(a["params"], b["params"]):
        assert pb == pytest.approx(pa, rel=1e-4, abs=1e-5)
    assert a["init"] == b["init"] and a["params"] != a["init"]  # same start, and training moved it


# ----------------------------------------------------------------------------- pretrained encoder directory


def test_pretrained_encoder_round_trip(tmp_path):
    from cross4d_core.models import Point4DConfig, Point4DEncoder

    torch.manual_seed(0)
    encoder = Point4DEncoder(Point4DConfig.tiny()).eval()
    save_encoder(tmp_path, encoder, model_id="point4d-test", normalisation={"units": "m"},
                 extra={"objective": "dense", "teacher": None})
    loaded, meta = load_encoder(tmp_path)
    assert meta == {"model_id": "point4d-test", "model_config": encoder.config.to_dict(),
                    "normalisation": {"units": "m"}, "objective": "dense", "teacher": None}
    points = torch.rand(2, 4, 64, 3)
    with torch.no_grad():
        assert torch.equal(loaded(points).clip_feature, encoder(points).clip_feature)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "encoder.safetensors"]
    (tmp_path / "encoder.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="encoder.safetensors: corrupt safetensors file"):
        load_encoder(tmp_path)


def test_a_kill_during_checkpoint_deletion_leaves_no_incomplete_checkpoint(tmp_path, monkeypatch):
    cfg = make_config(tmp_path, "keep_checkpoints=1", "checkpoint_every_steps=1", "max_steps=2")
    Trainer(cfg, NoisyRegression(), PointsDataset()).fit()
    root = tmp_path / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step_00000002"]

    import shutil

    def killed(path, *args, **kwargs):  # the process dies half-way through deleting the old checkpoint
        (Path(path) / "state.json").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed)
    trainer = Trainer(make_config(tmp_path, "keep_checkpoints=1"), NoisyRegression(), PointsDataset())
    with pytest.raises(KeyboardInterrupt):
        ckpt_module.save_training_checkpoint(tmp_path, 3, trainer.module, trainer.optimizer, {}, {}, keep=1)
    monkeypatch.undo()
    # step_2 was renamed away before its deletion started: no step_N/ without state.json remains
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["step_00000003"]
    assert latest_checkpoint(tmp_path).name == "step_00000003"
    # an older version's half-deleted checkpoint (no state.json) is not listed
    (root / "step_00000009").mkdir()
    assert [p.name for p in ckpt_module.list_checkpoints(tmp_path)] == ["step_00000003"]
    # the next run's rank 0 removes what the killed one left behind
    leftovers = [p for p in root.iterdir() if p.name.startswith(".")]
    assert leftovers and all(p.name.endswith(".tmp") for p in leftovers)
    Trainer(make_config(tmp_path, "max_steps=4"), NoisyRegression(), PointsDataset()).fit()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
