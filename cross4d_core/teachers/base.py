"""The small interface every frozen 2D teacher implements, and its neural-model base."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
import torch

from cross4d_core.geometry.image_transform import ImageTransform

#: ImageNet normalisation used by DINOv2 and V-JEPA 2.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Teacher(ABC):
    """A frozen teacher that maps a clip's frames to per-slot patch grids.

    The teacher owns its preprocessing: :meth:`image_transform` gives the resize / crop for
    an input size, and the same object maps pixels to grid cells for the correspondence.

    Attributes:
        name: model id or path (recorded in the target cache manifest).
        patch_size: pixels per patch side (after the transform).
        tubelet: frames per time slot (1 for image models).
        feature_dim: channels C of the patch features.
        input_kind: what :meth:`grid_features` reads: ``"rgb"`` images ``[T, H, W, 3]``
            uint8, or ``"part_labels"`` ``[T, H, W]`` int (the synthetic part teacher).
    """

    name: str
    patch_size: int
    tubelet: int = 1
    feature_dim: int
    input_kind: str = "rgb"

    @abstractmethod
    def image_transform(self, height: int, width: int) -> ImageTransform:
        """The resize / crop applied to ``height x width`` input images."""

    @abstractmethod
    def grid_features(self, images: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, ImageTransform]:
        """Patch features of one clip: ``feats [S, hp, wp, C]`` float32 (``S = ceil(T /
        tubelet)``) and the :class:`ImageTransform` that maps input pixels to the grid."""

    def slot_of_frame(self, t: int | torch.Tensor) -> int | torch.Tensor:
        """Teacher time slot of frame ``t``."""
        return t // self.tubelet

    def num_slots(self, num_frames: int) -> int:
        return math.ceil(num_frames / self.tubelet)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return self.image_transform(height, width).grid_size

    def pixel_to_grid(self, uv: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat patch index (-1 outside the crop) and inside mask of pixels ``uv [..., 2]`` of a
        ``height x width`` input image."""
        return self.image_transform(height, width).pixel_to_grid(uv)


class FrozenModelTeacher(Teacher):
    """A frozen neural image / video model on RGB frames (ImageNet-normalised)."""

    def __init__(self, model: torch.nn.Module, device: torch.device | str, dtype: torch.dtype | None):
        self.device = torch.device(device)
        # bf16 autocast only where it is fast and supported; the CPU path stays in fp32.
        self.autocast_dtype = dtype if (dtype not in (None, torch.float32) and self.device.type == "cuda") else None
        self.model = model.to(self.device).eval().requires_grad_(False)

    @abstractmethod
    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised ``[T, 3, h, w]`` frames of one clip -> ``[S, hp, wp, C]``."""

    def preprocess(self, images: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, ImageTransform]:
        """``[T, H, W, 3]`` uint8 RGB -> normalised float ``[T, 3, h, w]`` on the device."""
        images = torch.as_tensor(images)
        if images.dim() != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"{type(self).__name__}: images must be [T, H, W, 3] uint8, got "
                             f"{tuple(images.shape)} {images.dtype}")
        T, H, W, _ = images.shape
        if T == 0 or H == 0 or W == 0:
            raise ValueError(f"{type(self).__name__}: empty images {tuple(images.shape)}")
        transform = self.image_transform(H, W)
        pixels = images.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        pixels = transform.apply(pixels)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device)[:, None, None]
        std = torch.tensor(IMAGENET_STD, device=self.device)[:, None, None]
        return (pixels - mean) / std, transform

    def grid_features(self, images: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, ImageTransform]:
        """``images [T, H, W, 3]`` uint8 RGB -> ``feats [S, hp, wp, C]`` float32 + transform."""
        pixels, transform = self.preprocess(images)
        with torch.inference_mode(), torch.autocast(
            self.device.type, dtype=self.autocast_dtype or torch.bfloat16, enabled=self.autocast_dtype is not None
        ):
            feats = self._forward(pixels)
        return feats.float(), transform
