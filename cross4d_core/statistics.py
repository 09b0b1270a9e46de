"""Summary statistics of a set of embeddings (teacher targets, encoder features): is it
collapsed, and how many directions does it use?"""
from __future__ import annotations

import torch


def embedding_statistics(x: torch.Tensor, centre: bool = False) -> dict[str, float]:
    """Statistics of ``x [M, d]`` (optionally centred first).

    Returns:
        ``mean_pairwise_cosine``: mean cosine similarity over pairs ``i != j`` (1 = all rows
        point the same way); ``effective_rank``: ``exp`` of the entropy of the normalised
        singular values (Roy & Vetterli 2007; 1 = one direction, d = isotropic);
        ``varying_energy``: the fraction of ``sum |x_i|^2`` not explained by the mean row.
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"embedding_statistics: need [M >= 2, d] rows, got {tuple(x.shape)}")
    x = x.double()
    mean = x.mean(0)
    energy = float(x.pow(2).sum())
    varying = float((x - mean).pow(2).sum()) / energy if energy > 0 else 0.0
    if centre:
        x = x - mean
    m = x.shape[0]
    unit = torch.nn.functional.normalize(x, dim=1)
    total = unit.sum(0)
    cosine = (float(total @ total) - float(unit.pow(2).sum())) / (m * (m - 1))
    sigma = torch.linalg.svdvals(x)
    p = sigma / sigma.sum() if float(sigma.sum()) > 0 else sigma
    p = p[p > 0]
    rank = float(torch.exp(-(p * p.log()).sum())) if len(p) else 0.0
    return {"mean_pairwise_cosine": cosine, "effective_rank": rank, "varying_energy": varying}
