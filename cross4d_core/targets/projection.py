"""The fixed linear map C -> d_p applied to teacher patch features before caching."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cross4d_core.fileio import atomic_path


@dataclass
class FeatureProjection:
    """``y = (x - mean) @ weight``.

    Attributes:
        weight: ``[C, d_p]`` float32.
        mean: ``[C]`` float32 (zeros for the random projection).
        kind: ``random`` or ``pca``; seed: RNG seed of the random projection.
    """

    weight: torch.Tensor
    mean: torch.Tensor
    kind: str
    seed: int | None = None

    @classmethod
    def random(cls, in_dim: int, out_dim: int = 384, seed: int = 0) -> FeatureProjection:
        """Seeded Gaussian matrix scaled by ``1 / sqrt(out_dim)`` (Johnson-Lindenstrauss: cosine
        similarities between features are approximately kept)."""
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(in_dim, out_dim, generator=generator) / out_dim**0.5
        return cls(weight, torch.zeros(in_dim), "random", seed)

    @classmethod
    def pca(cls, features: torch.Tensor, out_dim: int = 384) -> FeatureProjection:
        """Top ``out_dim`` principal directions of ``features [M, C]`` (needs ``out_dim <= min(M, C)``);
        signs fixed so the largest loading of each direction is positive (deterministic)."""
        features = features.reshape(-1, features.shape[-1]).double()
        M, C = features.shape
        if out_dim > min(M, C):
            raise ValueError(f"FeatureProjection.pca: d_p={out_dim} needs at least that many samples and channels, "
                             f"got {M} samples of {C} channels")
        mean = features.mean(0)
        _, _, vh = torch.linalg.svd(features - mean, full_matrices=False)
        weight = vh[:out_dim].T
        sign = torch.sign(weight.gather(0, weight.abs().argmax(0, keepdim=True)))
        return cls((weight * sign).float(), mean.float(), "pca")

    @property
    def in_dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def out_dim(self) -> int:
        return int(self.weight.shape[1])

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """``[..., C] -> [..., d_p]`` (float32)."""
        if features.shape[-1] != self.in_dim:
            raise ValueError(f"FeatureProjection: features have {features.shape[-1]} channels, expected {self.in_dim}")
        return (features.float() - self.mean.to(features.device)) @ self.weight.to(features.device)

    def save(self, path: str | Path) -> None:
        """Atomic safetensors file with ``weight``, ``mean`` and the kind / seed as metadata."""
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            save_file({"weight": self.weight.contiguous(), "mean": self.mean.contiguous()}, str(tmp),
                      metadata={"kind": self.kind, "seed": "" if self.seed is None else str(self.seed)})

    @classmethod
    def load(cls, path: str | Path) -> FeatureProjection:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            weight, mean = f.get_tensor("weight"), f.get_tensor("mean")
        seed = meta.get("seed", "")
        return cls(weight, mean, meta.get("kind", "random"), int(seed) if seed else None)
