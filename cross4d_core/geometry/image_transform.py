"""The resize + centre-crop a teacher applies to its input, and the matching map from
original pixel coordinates to patch-grid cells. Both the teacher's preprocessing and
the correspondence use this one object, so image and points can never disagree.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ImageTransform:
    """Resize ``(in_h, in_w) -> (resize_h, resize_w)``, then crop ``(crop_h, crop_w)`` at
    ``(top, left)``, then cut into ``patch x patch`` cells.

    Pixel ``i`` covers ``[i - 0.5, i + 0.5)`` in every image, so a continuous coordinate
    ``u`` maps to ``(u + 0.5) * resize_w / in_w - 0.5 - left`` in the crop, and to patch
    column ``floor((u + 0.5) * resize_w / in_w - left) // patch``. A point exactly on a
    patch boundary belongs to the patch on its right / below (half-open cells).
    """

    in_h: int
    in_w: int
    resize_h: int
    resize_w: int
    top: int
    left: int
    crop_h: int
    crop_w: int
    patch: int

    @classmethod
    def create(
        cls, in_h: int, in_w: int, patch: int, resize_shortest_edge: int | None = None,
        crop: int | tuple[int, int] | None = None,
    ) -> ImageTransform:
        """Resize so the shorter side is ``resize_shortest_edge`` (keep the size when None),
        then centre-crop to ``crop`` (``(h, w)`` or square; default: the largest multiple of
        ``patch`` that fits)."""
        if in_h <= 0 or in_w <= 0:
            raise ValueError(f"ImageTransform: image size must be positive, got {in_w}x{in_h}")
        if patch <= 0:
            raise ValueError(f"ImageTransform: patch must be positive, got {patch}")
        if resize_shortest_edge is None:
            rh, rw = in_h, in_w
        elif in_h <= in_w:
            rh, rw = resize_shortest_edge, max(1, round(in_w * resize_shortest_edge / in_h))
        else:
            rh, rw = max(1, round(in_h * resize_shortest_edge / in_w)), resize_shortest_edge
        if crop is None:
            ch, cw = rh // patch * patch, rw // patch * patch
        else:
            ch, cw = (crop, crop) if isinstance(crop, int) else crop
        if ch > rh or cw > rw or ch < patch or cw < patch:
            raise ValueError(
                f"ImageTransform: crop {cw}x{ch} does not fit the resized image {rw}x{rh} (input {in_w}x{in_h}, "
                f"patch {patch})"
            )
        return cls(in_h, in_w, rh, rw, (rh - ch) // 2, (rw - cw) // 2, ch, cw, patch)

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(grid_h, grid_w)`` patch cells of the cropped image."""
        return self.crop_h // self.patch, self.crop_w // self.patch

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Resize (bicubic, antialiased) and crop float images ``[B, C, in_h, in_w]`` to
        ``[B, C, grid_h * patch, grid_w * patch]``."""
        if tuple(images.shape[-2:]) != (self.in_h, self.in_w):
            raise ValueError(
                f"ImageTransform.apply: images are {images.shape[-1]}x{images.shape[-2]}, "
                f"expected {self.in_w}x{self.in_h}"
            )
        if (self.resize_h, self.resize_w) != (self.in_h, self.in_w):
            images = F.interpolate(
                images, size=(self.resize_h, self.resize_w), mode="bicubic", align_corners=False, antialias=True
            )
        gh, gw = self.grid_size
        return images[..., self.top : self.top + gh * self.patch, self.left : self.left + gw * self.patch]

    def pixel_to_grid(self, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map pixel coordinates ``uv [..., 2]`` of the original image to flat patch indices.

        Returns:
            ``patch [...]`` int64 (``row * grid_w + col``, -1 outside the crop) and
            ``inside [...]`` bool.
        """
        gh, gw = self.grid_size
        x = (uv[..., 0] + 0.5) * (self.resize_w / self.in_w) - self.left
        y = (uv[..., 1] + 0.5) * (self.resize_h / self.in_h) - self.top
        col = torch.floor(x / self.patch)
        row = torch.floor(y / self.patch)
        inside = (col >= 0) & (col < gw) & (row >= 0) & (row < gh)
        patch = torch.where(inside, row * gw + col, torch.full_like(col, -1)).long()
        return patch, inside
