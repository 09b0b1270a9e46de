"""Per-frame encoder cache of streaming inference: overlapping windows reuse the frame
tokens of frames seen before.

``encoder.encode_frames`` is strictly per-frame, so the tokens of a frame do not depend
on its position in the window; only the frames new since the last window are encoded,
then ``encoder.encode_window`` runs on the assembled window.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

import torch

from cross4d_core.models import FrameTokens, Point4DEncoder, Point4DOutput


class FrameEncodingCache:
    """Encodes windows with an LRU cache of per-frame tokens keyed by frame (e.g. ``(sequence, stamp_ns)``).

    Args:
        encoder: a ``Point4DEncoder`` (``encode_frames`` / ``encode_window``).
        capacity: frames kept (the window length plus the stride is enough).
    """

    def __init__(self, encoder: Point4DEncoder, capacity: int) -> None:
        self.encoder = encoder
        self.capacity = int(capacity)
        self._tokens: OrderedDict[Hashable, FrameTokens] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._tokens)

    def clear(self) -> None:
        self._tokens.clear()

    @torch.no_grad()
    def encode(self, keys: Sequence[Hashable], points: torch.Tensor) -> Point4DOutput:
        """``keys`` (T frame keys) and ``points [T, N, 3]`` -> the encoder's window output (B = 1)."""
        missing = [t for t, k in enumerate(keys) if k not in self._tokens]
        if missing:
            fresh = self.encoder.encode_frames(points[missing].unsqueeze(0))
            for i, t in enumerate(missing):
                self._tokens[keys[t]] = fresh.frames(i)
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        for k in keys:
            self._tokens.move_to_end(k)
        while len(self._tokens) > max(self.capacity, len(keys)):
            self._tokens.popitem(last=False)
        return self.encoder.encode_window(FrameTokens.concat([self._tokens[k] for k in keys]))
