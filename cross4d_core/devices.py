"""torch device names -> checked ``torch.device`` (training, evaluation and the ROS nodes)."""
from __future__ import annotations

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local rank's GPU when CUDA is available, else CPU; ``cpu``, ``cuda``,
    ``cuda:N`` as given. Anything else, or CUDA without a GPU, raises ``ValueError``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:  # e.g. 'gpu' or 'cuda:x'
        raise ValueError(f"device {name!r} is not cpu, cuda or cuda:N ({exc})") from exc
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        index: int | None = device.index  # torch's stubs say int; None for a bare 'cuda'
        if index is None:
            device = torch.device("cuda", local_rank)
    return device
