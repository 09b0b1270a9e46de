"""The torch parameters both nodes declare (``device``, ``torch_threads``) and their setup."""
from __future__ import annotations

import torch

from cross4d_core.devices import resolve_device
from cross4d_ros.params import Param

TORCH_PARAMS = [
    Param("device", "cpu", "torch device: cpu, cuda or cuda:N", read_only=True),
    Param("torch_threads", 0, "CPU threads of torch; 0 = torch's default. Fewer threads than cores avoid "
          "OpenMP oversubscription when the CPU is shared with other processes", read_only=True, min=0, max=1024),
]


def resolve_torch_device(name: str) -> torch.device:
    """The checked ``device`` parameter (a ``ValueError`` naming it otherwise; ``auto`` is not offered)."""
    if name == "auto":
        raise ValueError("parameter 'device' = 'auto' is not cpu, cuda or cuda:N")
    try:
        return resolve_device(name)
    except ValueError as exc:
        raise ValueError(f"parameter 'device' = {name!r}: {exc}") from exc


def configure_torch(params: dict) -> torch.device:
    """Apply the :data:`TORCH_PARAMS` (thread count) and return the checked device."""
    device = resolve_torch_device(params["device"])
    if params["torch_threads"]:
        torch.set_num_threads(params["torch_threads"])
    return device
