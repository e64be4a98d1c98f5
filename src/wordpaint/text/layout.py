"""Scene layouts as image-aligned conditioning channels (the "layout channels" variant of
layout-grounded diffusion; GLIGEN's grounding tokens are the attention-based alternative).

A layout is what a planner decides: per object a box, a shape and maybe a colour; maybe a
background. :func:`rasterize` turns it into a (LAYOUT_CHANNELS, H, W) tensor that the UNet reads
beside the noisy image, so the model learns *where* from the boxes and *what* from the
attributes painted inside them, while the text still conditions it through cross-attention.
Hand-written because diffusers has no layout encoder for a UNet's input; ControlNet-style
conditioning images are the same idea.

Channels (values in [-1, 1] or {0, 1}; 0 everywhere means "not specified"):

    0        box coverage (anti-aliased: fractional at box edges), or with ``silhouettes`` the
             shape's own coverage in its box (every channel below uses the same mask)
    1..3     colour RGB in [-1, 1] inside the box, when the plan names one
    4        colour known (1 inside the box of an object whose colour is named)
    5..9     shape one-hot inside the box (circle, square, triangle, star, cross)
    10..12   background one-hot everywhere, when named (white, black, gray)

Training uses ground-truth boxes from the shapes world with exactly the attributes its caption
names (an unnamed colour stays unknown), so a plan from any planner looks like training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from wordpaint.data.shapes import BACKGROUNDS, COLORS, SHAPES, shape_coverage

LAYOUT_CHANNELS = 13
_BG_NAMES = tuple(BACKGROUNDS)


@dataclass(frozen=True)
class LayoutObject:
    """One object of a layout: ``box`` (x0, y0, x1, y1) in canvas fractions, y down."""

    shape: str | None
    color: str | None
    box: tuple[float, float, float, float]


def _coverage_1d(lo: float, hi: float, n: int) -> np.ndarray:
    """(n,) fraction of each pixel [k/n, (k+1)/n) covered by the interval [lo, hi]."""
    edges = np.arange(n + 1) / n
    return np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None) * n


def box_coverage(box: tuple[float, float, float, float], height: int, width: int) -> np.ndarray:
    """(height, width) float64 fraction of each pixel covered by ``box`` (x0, y0, x1, y1) in
    fractions of the grid (anti-aliased edges; parts outside the grid are ignored)."""
    x0, y0, x1, y1 = box
    return np.outer(_coverage_1d(y0, y1, height), _coverage_1d(x0, x1, width))


def rasterize(objects: list[LayoutObject], background: str | None, *, height: int, width: int,
              silhouettes: bool = False) -> torch.Tensor:
    """(LAYOUT_CHANNELS, height, width) float32 conditioning image of a layout. With
    ``silhouettes``, an object of known shape covers that shape's silhouette in its box (the
    renderer's own anti-aliased geometry) instead of the whole box; an unknown shape keeps its box."""
    out = np.zeros((LAYOUT_CHANNELS, height, width), dtype=np.float32)
    for o in objects:
        x0, y0, x1, y1 = o.box
        if silhouettes and o.shape is not None:
            cov = shape_coverage(o.shape, (x0 * width, y0 * height, x1 * width, y1 * height), height, width)  # (H, W)
        else:
            cov = box_coverage(o.box, height, width).astype(np.float32)  # (H, W)
        # boxes never overlap in a valid plan; max() keeps channels in range if they touch
        out[0] = np.maximum(out[0], cov)
        if o.color is not None:
            rgb = np.asarray(COLORS[o.color], dtype=np.float32) / 127.5 - 1
            out[1:4] += rgb[:, None, None] * cov
            out[4] = np.maximum(out[4], cov)
        if o.shape is not None:
            k = 5 + SHAPES.index(o.shape)
            out[k] = np.maximum(out[k], cov)
    if background is not None:
        out[10 + _BG_NAMES.index(background)] = 1.0
    return torch.from_numpy(out)


def object_weight_map(objects: list[LayoutObject], *, height: int, width: int, ref_area: float = 0.26**2) -> torch.Tensor:
    """(1, height, width) map that is 0 on the background and ``ref_area / area`` inside each
    object's box, so every object carries the same total weight whatever its size (a small star,
    ~9 px across at 48 px, otherwise gets a quarter of a large one's gradient). The default
    ``ref_area`` is a medium shapes-world object's, whose map value is 1.
    :class:`~wordpaint.models.diffusion.DiffusionModel` turns it into loss weights."""
    out = np.zeros((height, width), dtype=np.float32)
    for o in objects:
        x0, y0, x1, y1 = o.box
        area = max((x1 - x0) * (y1 - y0), 1e-4)
        cov = box_coverage(o.box, height, width)
        out = np.maximum(out, (cov * (ref_area / area)).astype(np.float32))
    return torch.from_numpy(out)[None]


def _square(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The square the renderer draws in a box: centred, side = the shorter side."""
    x0, y0, x1, y1 = box
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, min(x1 - x0, y1 - y0) / 2
    return (cx - half, cy - half, cx + half, cy + half)


def layout_from_plan(plan) -> tuple[list[LayoutObject], str | None]:
    """Objects and background of a :class:`~wordpaint.text.plan.ScenePlan` (boxes squared, as
    shapes-world objects are drawn in square boxes)."""
    return [LayoutObject(o.shape, o.color, _square(o.box)) for o in plan.objects], plan.background


def layout_from_example(spec: dict, scene) -> tuple[list[LayoutObject], str | None]:
    """The ground-truth layout of a training example: the scene's boxes and shapes, colours only
    where the caption's spec names them, the background only when the caption names it."""
    named = [o.get("color") for o in spec["objects"]]
    if spec.get("task") == "counting":
        named = named[:1] * len(scene.objects)
    objs = [LayoutObject(o.shape, c, tuple(o.bbox)) for o, c in zip(scene.objects, named)]
    return objs, spec.get("background")
