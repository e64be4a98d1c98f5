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
from wordpaint.errors import WordpaintError, check_choice

SPLITS = {"train": HELD_OUT_PAIRS, "all": frozenset()}


def batch_indices(step: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> range:
    """Example indices of batch ``step`` on ``rank``: (step * world + rank) * B ... + B - 1, so
    ranks take disjoint examples and a resumed run sees the batches it would have seen."""
    start = (step * world_size + rank) * batch_size
    return range(start, start + batch_size)


class ShapesStream(torch.utils.data.IterableDataset):
    """Endless (image, caption) examples. ``split="train"`` never shows the held-out pairs."""

    def __init__(self, *, size: int = 48, seed: int = 0, split: str = "train", cond_drop_prob: float = 0.0,
                 layout_drop_prob: float = 0.0, text_drop_prob: float = 0.0, silhouettes: bool = False):
        check_choice("split", split, SPLITS)
        self.silhouettes = silhouettes  # layouts paint shapes' silhouettes, not boxes (DiffusionConfig.layout_silhouettes)
        self.size, self.seed, self.split = check_size(size), seed, split
        self.exclude = SPLITS[split]
        self.cond_drop_prob, self.layout_drop_prob, self.text_drop_prob = cond_drop_prob, layout_drop_prob, text_drop_prob

    def example(self, i: int) -> Example:
        rng = np.random.default_rng([self.seed, i])
        return sample_example(rng, size=self.size, exclude=self.exclude)

    def _drops(self, i: int) -> tuple[bool, bool]:
        """(drop caption, drop layout) of example i: an unconditional example (for CFG) loses both;
        of the rest, one loses its layout alone (layout_drop_prob) or else its caption alone
        (text_drop_prob: the layout must then carry colours and shapes by itself)."""
        r = np.random.default_rng([self.seed, i, 1])
        drop_caption = r.random() < self.cond_drop_prob
        drop_layout = drop_caption or r.random() < self.layout_drop_prob
        # drawn last and only when asked for, so streams without it are unchanged
        if self.text_drop_prob and not drop_layout:
            drop_caption = r.random() < self.text_drop_prob
        return drop_caption, drop_layout

    def item(self, i: int) -> tuple[torch.Tensor, str]:
        """(3, H, W) float in [-1, 1] and the caption ('' with prob. cond_drop_prob, for CFG)."""
        ex = self.example(i)
        img = torch.from_numpy(render_scene(ex.scene, self.size)).permute(2, 0, 1).float() / 127.5 - 1
        return img, "" if self._drops(i)[0] else ex.caption

    def layout(self, i: int) -> torch.Tensor:
        """(LAYOUT_CHANNELS, H, W) ground-truth layout of example i (zeros when dropped)."""
        from wordpaint.text.layout import layout_from_example, rasterize

        if self._drops(i)[1]:
            return rasterize([], None, height=self.size, width=self.size)
        ex = self.example(i)
        return rasterize(*layout_from_example(ex.spec, ex.scene), height=self.size, width=self.size, silhouettes=self.silhouettes)

    def object_maps(self, step: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """(B, 1, H, W) :func:`~wordpaint.text.layout.object_weight_map` of the examples of
        :meth:`batch`, from the true boxes even when the layout input is dropped: the target image
        is the same either way."""
        from wordpaint.text.layout import layout_from_example, object_weight_map

        maps = []
        for i in batch_indices(step, batch_size, rank=rank, world_size=world_size):
            ex = self.example(i)
            maps.append(object_weight_map(layout_from_example(ex.spec, ex.scene)[0], height=self.size, width=self.size))
        return torch.stack(maps)

    def layouts(self, step: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """(B, LAYOUT_CHANNELS, H, W) layouts of the examples of :meth:`batch` (same indices)."""
        return torch.stack([self.layout(i) for i in batch_indices(step, batch_size, rank=rank, world_size=world_size)])

    def batch(self, step: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, list[str]]:
        """Batch ``step`` for ``rank``: indices (step * world + rank) * B ... + B - 1."""
        items = [self.item(i) for i in batch_indices(step, batch_size, rank=rank, world_size=world_size)]
        return torch.stack([x for x, _ in items]), [c for _, c in items]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, str]]:
        info = torch.utils.data.get_worker_info()
        i, stride = (info.id, info.num_workers) if info else (0, 1)
        while True:
            yield self.item(i)
            i += stride


class MultiSizeStream:
    """Batch ``step`` of the shapes world drawn at ``sizes[step % len(sizes)]`` px, so one run
    trains a convolutional model at several canvas sizes (the renderer scales every object, so a
    small star gets ~10 px at 48 px and ~13 px at 64). Same ``batch`` / ``layouts`` /
    ``object_maps`` interface as :class:`ShapesStream`; a batch is still a pure function of the
    step, so resuming is exact."""

    def __init__(self, sizes: list[int] | tuple[int, ...], **kwargs):
        if not isinstance(sizes, (list, tuple)) or not sizes or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
            raise WordpaintError(f"data.sizes must be a non-empty list of canvas sizes in pixels, got {sizes!r}")
        self.sizes = tuple(sizes)
        self.streams = [ShapesStream(size=s, **kwargs) for s in self.sizes]

    def at(self, step: int) -> ShapesStream:
        """The stream that draws batch ``step``."""
        return self.streams[step % len(self.streams)]

    def batch(self, step: int, batch_size: int, **where) -> tuple[torch.Tensor, list[str]]:
        return self.at(step).batch(step, batch_size, **where)

    def layouts(self, step: int, batch_size: int, **where) -> torch.Tensor:
        return self.at(step).layouts(step, batch_size, **where)

    def object_maps(self, step: int, batch_size: int, **where) -> torch.Tensor:
        return self.at(step).object_maps(step, batch_size, **where)


def make_stream(name: str, *, size: int, seed: int = 0, split: str = "train", cond_drop_prob: float = 0.0,
                layout_drop_prob: float | None = None, text_drop_prob: float = 0.0, sizes: list[int] | None = None,
                silhouettes: bool = False):
    """The training stream registered as ``name`` (shapes, fashion_mnist). ``layout_drop_prob``
    (not None) asks for ground-truth layouts, which only the shapes stream has;
    ``text_drop_prob`` drops a layout example's caption alone; ``sizes`` (shapes only) cycles
    the canvas size batch by batch (:class:`MultiSizeStream`); ``silhouettes`` paints layouts'
    shapes as silhouettes instead of boxes."""
    from wordpaint.data.fashion_mnist import FashionMNISTStream

    streams = {"shapes": ShapesStream, "fashion_mnist": FashionMNISTStream}
    check_choice("dataset", name, streams)
    if sizes is not None:
        if name != "shapes":
            raise WordpaintError(f"data.sizes (several canvas sizes) needs a renderer that draws at any size; dataset {name!r} has "
                                 "one size; it works with: shapes")
        return MultiSizeStream(sizes, seed=seed, split=split, cond_drop_prob=cond_drop_prob, layout_drop_prob=layout_drop_prob or 0.0,
                               text_drop_prob=text_drop_prob, silhouettes=silhouettes)
    if layout_drop_prob is not None:
        if name != "shapes":
            raise WordpaintError(f"dataset {name!r} has no layouts; a layout model (layout_channels > 0) trains on: shapes")
        return ShapesStream(size=size, seed=seed, split=split, cond_drop_prob=cond_drop_prob, layout_drop_prob=layout_drop_prob,
                            text_drop_prob=text_drop_prob, silhouettes=silhouettes)
    return streams[name](size=size, seed=seed, split=split, cond_drop_prob=cond_drop_prob)
