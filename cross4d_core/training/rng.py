"""Capture and restore the RNG states of python, numpy, torch and CUDA as tensors.

The states are stored in a checkpoint's ``rng.safetensors`` so a resumed run draws the
same random numbers as an uninterrupted one. Seeding itself is ``transformers.set_seed``.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def capture_rng_state() -> dict[str, torch.Tensor]:
    """The current global RNG states as a flat dict of CPU tensors."""
    version, py_state, gauss = random.getstate()
    np_state = np.random.get_state(legacy=True)  # the default, spelled out: numpy's stubs pick legacy=False
    assert isinstance(np_state, tuple)  # legacy: the MT19937 state tuple
    name, keys, pos, has_gauss, cached = np_state
    state = {
        "python": torch.tensor([version, *py_state], dtype=torch.int64),
        "python_gauss": torch.tensor([gauss is not None, gauss or 0.0], dtype=torch.float64),
        "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
        "numpy_extra": torch.tensor([pos, has_gauss, cached], dtype=torch.float64),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda.{i}"] = s
    return state


def restore_rng_state(state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"].tolist()
    has_gauss, gauss = state["python_gauss"].tolist()
    random.setstate((int(py[0]), tuple(int(v) for v in py[1:]), gauss if has_gauss else None))
    pos, np_has_gauss, cached = state["numpy_extra"].tolist()
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), int(pos),
                         int(np_has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    cuda = sorted((k for k in state if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state[k] for k in cuda])
