"""Frozen 2D teachers behind one interface (DINOv2, DINOv2-with-registers, V-JEPA 2)."""
from __future__ import annotations

import torch

from cross4d_core.errors import TeacherWeightsNotFound
from cross4d_core.teachers.base import FrozenModelTeacher, Teacher
from cross4d_core.teachers.hf import Dinov2Teacher, VJEPA2Teacher
from cross4d_core.teachers.parts import PART_TEACHER_NAME, PartTeacher

TEACHERS = {"dinov2": Dinov2Teacher, "vjepa2": VJEPA2Teacher}


def load_teacher(kind: str, name_or_path: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                 **kwargs) -> Teacher:
    """Load a frozen teacher.

    Args:
        kind: ``dinov2`` (also with registers) or ``vjepa2``.
        name_or_path: Hugging Face model id (from the local cache when offline) or a local directory.
        device: where the teacher runs; dtype: ``torch.bfloat16`` for bf16 autocast on CUDA
            (ignored on CPU).
        **kwargs: teacher-specific preprocessing (``resize_shortest_edge``, ``crop`` for
            DINOv2; ``crop_size`` for V-JEPA 2).
    """
    if kind not in TEACHERS:
        raise ValueError(f"load_teacher: kind {kind!r} is not one of {sorted(TEACHERS)}")
    return TEACHERS[kind](name_or_path, device=device, dtype=dtype, **kwargs)


__all__ = ["PART_TEACHER_NAME", "TEACHERS", "Dinov2Teacher", "FrozenModelTeacher", "PartTeacher", "Teacher",
           "TeacherWeightsNotFound", "VJEPA2Teacher", "load_teacher"]
