"""Streaming shapes-world training data.

Example ``i`` of a stream is a pure function of (seed, i): batches are reproducible, a resumed
run sees exactly the batches it would have seen, and ranks of a multi-process run take
disjoint indices without coordination.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from wordpaint.data.captions import Example, sample_example
from wordpaint.data.shapes import HELD_OUT_PAIRS, check_size, render_scene
from wordpaint.errors import check_choice

SPLITS = {"train": HELD_OUT_PAIRS, "all": frozenset()}


class ShapesStream(torch.utils.data.IterableDataset):
    """Endless (image, caption) examples. ``split="train"`` never shows the held-out pairs."""

    def __init__(self, *, size: int = 48, seed: int = 0, split: str = "train", cond_drop_prob: float = 0.0):
        check_choice("split", split, SPLITS)
        self.size, self.seed, self.split = check_size(size), seed, split
        self.exclude = SPLITS[split]
        self.cond_drop_prob = cond_drop_prob

    def example(self, i: int) -> Example:
        rng = np.random.default_rng([self.seed, i])
        return sample_example(rng, size=self.size, exclude=self.exclude)

    def item(self, i: int) -> tuple[torch.Tensor, str]:
        """(3, H, W) float in [-1, 1] and the caption ('' with prob. cond_drop_prob, for CFG)."""
        ex = self.example(i)
        img = torch.from_numpy(render_scene(ex.scene, self.size)).permute(2, 0, 1).float() / 127.5 - 1
        drop = np.random.default_rng([self.seed, i, 1]).random() < self.cond_drop_prob
        return img, "" if drop else ex.caption

    def batch(self, step: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, list[str]]:
        """Batch ``step`` for ``rank``: indices (step * world + rank) * B ... + B - 1."""
        start = (step * world_size + rank) * batch_size
        items = [self.item(start + j) for j in range(batch_size)]
        return torch.stack([x for x, _ in items]), [c for _, c in items]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, str]]:
        info = torch.utils.data.get_worker_info()
        i, stride = (info.id, info.num_workers) if info else (0, 1)
        while True:
            yield self.item(i)
            i += stride


def make_stream(name: str, *, size: int, seed: int = 0, split: str = "train", cond_drop_prob: float = 0.0):
    """The training stream registered as ``name`` (shapes, fashion_mnist)."""
    from wordpaint.data.fashion_mnist import FashionMNISTStream

    streams = {"shapes": ShapesStream, "fashion_mnist": FashionMNISTStream}
    check_choice("dataset", name, streams)
    return streams[name](size=size, seed=seed, split=split, cond_drop_prob=cond_drop_prob)
