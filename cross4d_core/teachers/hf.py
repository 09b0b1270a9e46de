"""Hugging Face teachers: DINOv2 (with and without registers) and V-JEPA 2."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from cross4d_core.errors import TeacherWeightsNotFound
from cross4d_core.geometry.image_transform import ImageTransform
from cross4d_core.teachers.base import FrozenModelTeacher

if TYPE_CHECKING:  # transformers is imported where a teacher is built
    from transformers import Dinov2Model, Dinov2WithRegistersModel, VJEPA2Model


def load_pretrained(model_class, name_or_path: str):
    """``model_class.from_pretrained`` with safetensors only, no remote code, and a clear
    message when the weights are not available offline."""
    try:
        return model_class.from_pretrained(name_or_path, trust_remote_code=False, use_safetensors=True)
    except OSError as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        raise TeacherWeightsNotFound(
            f"teacher weights {name_or_path!r} could not be loaded ({type(err).__name__}: {err}). "
            f"{'HF_HUB_OFFLINE is set, so nothing is downloaded. ' if offline else ''}"
            f"Download them once on a machine with network: `huggingface-cli download {name_or_path}` "
            f"(or `{model_class.__name__}.from_pretrained({name_or_path!r})` with network), "
            f"or pass a local directory that holds config.json and model.safetensors."
        ) from err


def _square_patch(patch_size: int | list[int] | tuple[int, int]) -> int:
    """A config's ``patch_size`` (typed int or pair by transformers): the teachers take square
    patches given as one int (as the released DINOv2 / V-JEPA 2 configs do)."""
    if not isinstance(patch_size, int):
        raise TypeError(f"teacher config: patch_size {patch_size!r} is not one int (square patches only)")
    return patch_size


def _model_type(name_or_path: str) -> str:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=False).model_type
    except OSError as err:
        raise TeacherWeightsNotFound(
            f"teacher config {name_or_path!r} could not be loaded ({err}). Download the model once on a machine "
            f"with network: `huggingface-cli download {name_or_path}`, or pass a local directory."
        ) from err


class Dinov2Teacher(FrozenModelTeacher):
    """DINOv2 or DINOv2-with-registers image teacher (patch 14); frames run as one batch.

    Patch tokens only (CLS and register tokens removed) of the final layer-normed hidden
    state, reshaped to ``[T, hp, wp, C]``. By default images keep their size (cropped to a
    multiple of the patch: 126 px renders -> 9 x 9); ``resize_shortest_edge`` / ``crop`` set
    the camera-image preprocessing.
    """

    model: Dinov2Model | Dinov2WithRegistersModel

    def __init__(self, name_or_path: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                 resize_shortest_edge: int | None = None, crop: int | tuple[int, int] | None = None,
                 batch_size: int = 32):
        from transformers import Dinov2Model, Dinov2WithRegistersModel

        model_type = _model_type(name_or_path)
        classes = {"dinov2": Dinov2Model, "dinov2_with_registers": Dinov2WithRegistersModel}
        if model_type not in classes:
            raise ValueError(
                f"Dinov2Teacher: {name_or_path!r} is a {model_type!r} model, expected one of {list(classes)}"
            )
        super().__init__(load_pretrained(classes[model_type], name_or_path), device, dtype)
        self.name = str(name_or_path)
        self.patch_size = _square_patch(self.model.config.patch_size)
        self.feature_dim = int(self.model.config.hidden_size)
        self.num_prefix_tokens = 1 + int(getattr(self.model.config, "num_register_tokens", 0))
        self.resize_shortest_edge, self.crop, self.batch_size = resize_shortest_edge, crop, batch_size

    def image_transform(self, height: int, width: int) -> ImageTransform:
        return ImageTransform.create(height, width, self.patch_size, self.resize_shortest_edge, self.crop)

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        hp, wp = pixels.shape[-2] // self.patch_size, pixels.shape[-1] // self.patch_size
        tokens = torch.cat([
            self.model(pixel_values=chunk).last_hidden_state[:, self.num_prefix_tokens:]
            for chunk in pixels.split(self.batch_size)
        ])
        return tokens.reshape(pixels.shape[0], hp, wp, -1)


class VJEPA2Teacher(FrozenModelTeacher):
    """V-JEPA 2 video teacher: the clip runs as one ``[1, T, 3, h, w]`` video; tubelets of 2
    frames x 16 x 16 px give time slots ``t // 2`` (an odd last frame is repeated).

    Frames are resized (shortest edge) and centre-cropped to the square ``crop_size`` the
    model was trained at (``config.crop_size``, 256 for the released models). Only the
    encoder runs (``skip_predictor=True``).
    """

    model: VJEPA2Model

    def __init__(self, name_or_path: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                 crop_size: int | None = None):
        from transformers import VJEPA2Model

        model_type = _model_type(name_or_path)
        if model_type != "vjepa2":
            raise ValueError(f"VJEPA2Teacher: {name_or_path!r} is a {model_type!r} model, expected 'vjepa2'")
        super().__init__(load_pretrained(VJEPA2Model, name_or_path), device, dtype)
        config = self.model.config
        self.name = str(name_or_path)
        self.patch_size = _square_patch(config.patch_size)
        self.tubelet = int(config.tubelet_size)
        self.feature_dim = int(config.hidden_size)
        self.crop_size = int(crop_size or config.crop_size)

    def image_transform(self, height: int, width: int) -> ImageTransform:
        return ImageTransform.create(height, width, self.patch_size, self.crop_size, self.crop_size)

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        T = pixels.shape[0]
        pad = -T % self.tubelet
        if pad:
            pixels = torch.cat([pixels, pixels[-1:].expand(pad, -1, -1, -1)])
        hp, wp = pixels.shape[-2] // self.patch_size, pixels.shape[-1] // self.patch_size
        out = self.model(pixel_values_videos=pixels[None], skip_predictor=True).last_hidden_state
        return out.reshape(pixels.shape[0] // self.tubelet, hp, wp, -1)
