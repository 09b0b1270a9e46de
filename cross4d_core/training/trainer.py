"""The training loop shared by pretraining and fine-tuning.

The trained module is any ``nn.Module`` whose ``forward(batch)`` (a collated batch: a
typed ``ClipBatch`` / ``TargetBatch`` for the objectives, a dict for fine-tuning) returns the loss
and a dict of scalar metrics, either as an object with ``.loss`` / ``.metrics`` (the
objectives' ``ObjectiveOutput``) or as a ``(loss, metrics)`` tuple; an optional
``after_step()`` runs after every optimizer step (EMA updates). The same code runs as
one CPU process and as ``torchrun`` DDP (gloo on CPU, nccl on CUDA).

Exact resume: items must be a deterministic function of their index (true for the
target cache and ``ClipDataset``); the data order is a function of (seed, epoch); the
checkpoint stores every rank's RNG states and the position inside the epoch.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm
from transformers import set_seed

from cross4d_core.errors import NonFiniteLossError
from cross4d_core.training.checkpoint import (
    latest_checkpoint,
    load_training_checkpoint,
    remove_checkpoint_temporaries,
    save_training_checkpoint,
)
from cross4d_core.training.config import TrainConfig, config_to_dict
from cross4d_core.training.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    barrier,
    init_distributed,
)
from cross4d_core.training.rng import capture_rng_state, restore_rng_state
from cross4d_core.training.schedule import warmup_cosine_lr

log = logging.getLogger(__name__)


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start part-way into an epoch (for exact resume)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` indices of this rank in the current epoch."""
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did in this process (losses are means over all ranks)."""

    step: int
    epoch: int
    step_losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    clips_per_second: float = 0.0
    wall_time_s: float = 0.0
    checkpoint: str | None = None
    resumed_from: str | None = None


def _unpack(output: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    if isinstance(output, tuple) and len(output) == 2:
        return output[0], dict(output[1] or {})
    if hasattr(output, "loss"):
        return output.loss, dict(getattr(output, "metrics", None) or {})
    raise TypeError(f"training module must return (loss, metrics) or an object with .loss, got {type(output).__name__}")


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor) or (dataclasses.is_dataclass(batch) and hasattr(batch, "to")):
        return batch.to(device, non_blocking=True)  # tensors and typed batches (ClipBatch, TargetBatch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _set_dataset_epoch(dataset: Dataset, epoch: int) -> None:
    """Forward the epoch to datasets that resample per epoch (``ClipDataset.set_epoch``)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    set_epoch = getattr(dataset, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)


def _param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices / kernels only (not on biases, norms, embeddings of rank 1)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """AdamW + warm-up/cosine, gradient clipping, bf16 autocast on CUDA, DDP, checkpoints.

    Args:
        config: the run configuration (``optim``, ``data.batch_size`` = global batch, ...).
        model: the training module (objective or classifier); moved to the device.
        dataset: map-style dataset; its items are collated with ``collate_fn``.
        prepare_batch: applied to each batch on the device before the forward (outside
            autocast and autograd), e.g. the frozen teacher of online-teacher training.
        dist_info: process-group info; by default initialised from ``torchrun``'s env vars.
    """

    def __init__(self, config: TrainConfig, model: nn.Module, dataset: Dataset, *,
                 collate_fn: Callable | None = None, prepare_batch: Callable[[Any], Any] | None = None,
                 dist_info: DistInfo | None = None):
        self.config = config
        self.dist = dist_info or init_distributed(config.device)
        self.device = self.dist.device
        self.module = model.to(self.device)
        assert isinstance(dataset, Sized)  # map-style: the sampler needs its length
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.prepare_batch = prepare_batch
        world = self.dist.world_size
        if config.epochs < 1 or (config.max_steps is not None and config.max_steps < 1):
            raise ValueError(f"epochs={config.epochs} and max_steps={config.max_steps} must be >= 1 "
                             "(the run would train nothing)")
        if config.data.batch_size < 1:
            raise ValueError(f"data.batch_size={config.data.batch_size} must be >= 1")
        if config.data.batch_size % world:
            raise ValueError(f"data.batch_size={config.data.batch_size} must be divisible by the "
                             f"world size {world}")
        self.per_rank_batch = config.data.batch_size // world
        self.sampler = ResumableDistributedSampler(dataset, num_replicas=world, rank=self.dist.rank,
                                                   shuffle=True, seed=config.seed, drop_last=True)
        self.steps_per_epoch = self.sampler.num_samples // self.per_rank_batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"dataset of {len(dataset)} items gives no full batch of "
                             f"data.batch_size={config.data.batch_size} (world size {world})")
        self.total_steps = config.epochs * self.steps_per_epoch
        self.optimizer = torch.optim.AdamW(_param_groups(self.module, config.optim.weight_decay),
                                           lr=config.optim.lr, betas=config.optim.betas)
        self.parameters = [p for g in self.optimizer.param_groups for p in g["params"]]
        if not self.parameters:
            raise ValueError("the training module has no trainable parameters")
        self.wrapped: nn.Module = self.module
        if self.dist.enabled:
            self.wrapped = DistributedDataParallel(
                self.module, device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters)
        self.autocast = config.amp and self.device.type == "cuda"
        self.out_dir = Path(config.out_dir)

    # ------------------------------------------------------------------ checkpoints

    def _save(self, epoch: int, batch_in_epoch: int, step: int) -> Path | None:
        rng = all_gather_objects(capture_rng_state(), self.dist)
        if not self.dist.is_main:
            return None
        tensors = {f"rank{r}.{k}": v for r, states in enumerate(rng) for k, v in states.items()}
        state = {"epoch": epoch, "batch_in_epoch": batch_in_epoch, "world_size": self.dist.world_size,
                 "sampler_seed": self.config.seed, "total_steps": self.total_steps,
                 "config": config_to_dict(self.config)}
        return save_training_checkpoint(self.out_dir, step, self.module, self.optimizer, state, tensors,
                                        keep=self.config.keep_checkpoints)

    def _resume(self, resume: Literal[True] | str | Path) -> tuple[int, int, int, str | None]:
        path = latest_checkpoint(self.out_dir) if resume is True else Path(resume)
        if path is None:
            log.info("no checkpoint under %s: starting from scratch", self.out_dir)
            return 0, 0, 0, None
        state, rng = load_training_checkpoint(path, self.module, self.optimizer, self.device)
        prefix = f"rank{self.dist.rank}."
        if state.get("world_size") == self.dist.world_size:
            restore_rng_state({k[len(prefix):]: v for k, v in rng.items() if k.startswith(prefix)})
        else:
            log.warning("checkpoint %s was written by %s ranks, resuming on %d: RNG streams reseeded",
                        path, state.get("world_size"), self.dist.world_size)
            set_seed((self.config.seed + self.dist.rank + 7919 * state["step"]) % 2**32)
        epoch, batch = state["epoch"], state["batch_in_epoch"]
        if batch >= self.steps_per_epoch:
            epoch, batch = epoch + 1, 0
        return epoch, batch, state["step"], str(path)

    # ------------------------------------------------------------------ loop

    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        _set_dataset_epoch(self.dataset, epoch)
        self.sampler.set_start(start_batch * self.per_rank_batch)
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return DataLoader(self.dataset, batch_size=self.per_rank_batch, sampler=self.sampler, drop_last=True,
                          num_workers=self.config.data.num_workers, collate_fn=self.collate_fn,
                          generator=generator, pin_memory=self.device.type == "cuda")

    def train_step(self, batch: Any, step: int = 0, epoch: int = 0) -> tuple[float, dict[str, float]]:
        """One optimisation step on a collated batch at schedule position ``step``; returns the
        loss (mean over ranks) and the logged scalars. Raises :class:`NonFiniteLossError`."""
        lr = warmup_cosine_lr(step, self.total_steps, self.config.optim.lr, self.config.optim.warmup_fraction,
                              self.config.optim.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = _to_device(batch, self.device)
        if self.prepare_batch is not None:
            batch = self.prepare_batch(batch)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss, metrics = _unpack(self.wrapped(batch))
        names = sorted(metrics)
        values = torch.stack([loss.detach().float().reshape(())] + [
            torch.as_tensor(metrics[k], dtype=torch.float32, device=self.device).detach().reshape(()) for k in names])
        reduced: list[float] = all_reduce_mean(values, self.dist).tolist()
        if not torch.isfinite(torch.tensor(reduced[0])):
            last = latest_checkpoint(self.out_dir)
            raise NonFiniteLossError(
                f"non-finite loss {reduced[0]} at step {step + 1} (epoch {epoch + 1}); stopping. "
                f"Last good checkpoint: {last if last else 'none'}. Lower optim.lr, check the data, "
                f"or resume with --resume.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.optim.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, self.config.optim.grad_clip))
        else:
            grad_norm = float(torch.linalg.vector_norm(torch.stack(
                [torch.linalg.vector_norm(p.grad) for p in self.parameters if p.grad is not None])))
        self.optimizer.step()
        after_step = getattr(self.module, "after_step", None)
        if callable(after_step):
            after_step()
        return reduced[0], {"lr": lr, "grad_norm": grad_norm, **dict(zip(names, reduced[1:]))}

    def fit(self, resume: bool | str | Path = False) -> TrainResult:
        """Train for ``config.epochs`` (or until ``config.max_steps``); checkpoint each epoch.

        ``resume=True`` continues from the newest checkpoint under ``out_dir`` (fresh start
        when there is none); a path resumes from that checkpoint directory.
        """
        cfg = self.config
        if self.dist.is_main:
            for leftover in remove_checkpoint_temporaries(self.out_dir):
                log.info("removed %s, left by a killed run", leftover)
        barrier(self.dist)
        if resume:
            epoch, start_batch, step, resumed_from = self._resume(resume)
        else:
            set_seed(cfg.seed + self.dist.rank)
            epoch, start_batch, step, resumed_from = 0, 0, 0, None
        writer = None
        if self.dist.is_main and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        result = TrainResult(step=step, epoch=epoch, resumed_from=resumed_from)
        max_steps = cfg.max_steps if cfg.max_steps is not None else self.total_steps
        self.module.train()
        started, clips = time.perf_counter(), 0
        try:
            progress = self.dist.is_main and cfg.progress
            # A live bar on a terminal; one line per epoch in logs and pipes (`make demo > log`).
            live = progress and sys.stderr.isatty()
            while epoch < cfg.epochs and step < max_steps:
                epoch_started = time.perf_counter()
                bar = tqdm(total=self.steps_per_epoch, initial=start_batch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           disable=not live, dynamic_ncols=True, leave=False)
                epoch_losses = []
                batch_index = start_batch
                for batch in self._loader(epoch, start_batch):
                    loss, scalars = self.train_step(batch, step, epoch)
                    step, batch_index = step + 1, batch_index + 1
                    clips += cfg.data.batch_size
                    result.step_losses.append(loss)
                    epoch_losses.append(loss)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{scalars['lr']:.2e}")
                    if writer is not None and (step % cfg.log_every_steps == 0 or step == 1):
                        writer.add_scalar("train/loss", loss, step)
                        for k, v in scalars.items():
                            writer.add_scalar(f"train/{k}", v, step)
                    if step >= max_steps:
                        break
                    if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0 \
                            and batch_index < self.steps_per_epoch:
                        self._save(epoch, batch_index, step)
                bar.close()
                if epoch_losses:
                    result.epoch_losses.append(sum(epoch_losses) / len(epoch_losses))
                    if progress and not live:
                        print(f"epoch {epoch + 1}/{cfg.epochs}: loss {result.epoch_losses[-1]:.4f} "
                              f"({len(epoch_losses)} steps, {time.perf_counter() - epoch_started:.1f} s)",
                              file=sys.stderr, flush=True)
                    if writer is not None:
                        writer.add_scalar("train/epoch_loss", result.epoch_losses[-1], epoch + 1)
                if batch_index >= self.steps_per_epoch:
                    epoch, start_batch = epoch + 1, 0
                else:
                    start_batch = batch_index
                path = self._save(epoch, start_batch, step)
                result.checkpoint = str(path) if path else None
        finally:
            if writer is not None:
                writer.close()
        barrier(self.dist)  # ranks leave together: a rank exiting mid-teardown aborts its peers in gloo
        result.step, result.epoch = step, epoch
        result.wall_time_s = time.perf_counter() - started
        result.clips_per_second = clips / result.wall_time_s if result.wall_time_s > 0 else 0.0
        return result
