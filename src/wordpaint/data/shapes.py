"""Shapes world v1: palette, geometry, seeded scene sampler and anti-aliased renderer.

The contract is ``shared/specs/shapes-world.md``. Geometry is written once here and used by
both the renderer and the scorer (which draws the five shapes as templates), so the two can
never disagree about what a "star" is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from wordpaint.errors import WordpaintError

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 75),
    "green": (60, 180, 75),
    "blue": (0, 130, 200),
    "yellow": (255, 225, 25),
    "orange": (245, 130, 48),
    "purple": (145, 30, 180),
    "cyan": (70, 240, 240),
    "pink": (240, 50, 230),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
SIZES: dict[str, float] = {"small": 0.18, "medium": 0.26, "large": 0.36}
SIZE_JITTER = 0.10
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("purple", "triangle"), ("cyan", "star"), ("orange", "square"), ("green", "cross"), ("pink", "circle")}
)
RELATIONS: tuple[str, ...] = ("left_of", "right_of", "above", "below")
STAR_INNER = 0.45
SUPERSAMPLE = 4  # render at 4x and box-downsample: the spec's anti-aliasing
MIN_SIZE, MAX_SIZE = 32, 512

# A star with outer radius R centred in its box spans 2R*sin(72deg) wide and R(1+cos(36deg)) tall,
# so the scorer can recover the star's box from a region's extent.
STAR_WIDTH = 2 * math.sin(math.radians(72))  # in units of R
STAR_HEIGHT = 1 + math.cos(math.radians(36))


@dataclass
class SceneObject:
    """One shape: ``bbox`` is (x0, y0, x1, y1) in canvas fractions 0..1."""

    shape: str
    color: str
    size: str
    bbox: tuple[float, float, float, float]

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return ((x0 + x1) / 2, (y0 + y1) / 2)

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "size": self.size, "bbox": [round(v, 5) for v in self.bbox]}


@dataclass
class Scene:
    background: str
    objects: list[SceneObject] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"background": self.background, "objects": [o.to_dict() for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        return cls(d["background"], [SceneObject(o["shape"], o["color"], o.get("size", "medium"), tuple(o["bbox"])) for o in d["objects"]])


# ----------------------------------------------------------------------------------------------
# Geometry: coverage of a shape on a pixel grid
# ----------------------------------------------------------------------------------------------


def star_polygon(cx: float, cy: float, r: float) -> np.ndarray:
    """(10, 2) vertices of a five-pointed star, one point up, inner radius STAR_INNER * r."""
    ang = -math.pi / 2 + np.arange(10) * math.pi / 5
    rad = np.where(np.arange(10) % 2 == 0, r, r * STAR_INNER)
    return np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)


def _inside_polygon(px: np.ndarray, py: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd ray casting, vectorised over points."""
    inside = np.zeros(px.shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        x0, y0 = poly[i]
        x1, y1 = poly[(i + 1) % n]
        crosses = (y0 > py) != (y1 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (px < xint)
    return inside


def shape_inside(shape: str, box: tuple[float, float, float, float], px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Boolean mask of points (px, py) inside ``shape`` drawn in ``box`` (same units as px, py)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "circle":
        return ((px - cx) / (w / 2)) ** 2 + ((py - cy) / (h / 2)) ** 2 <= 1.0
    in_box = (px >= x0) & (px <= x1) & (py >= y0) & (py <= y1)
    if shape == "square":
        return in_box
    if shape == "triangle":  # apex top-centre, base along the bottom edge
        frac = (py - y0) / h
        return in_box & (np.abs(px - cx) <= frac * w / 2)
    if shape == "cross":  # plus sign, each arm a third of the box wide
        return in_box & ((np.abs(px - cx) <= w / 6) | (np.abs(py - cy) <= h / 6))
    if shape == "star":
        poly = star_polygon(cx, cy, 1.0)
        # scale x and y separately so a non-square box still gets a star touching its box
        poly = np.stack([cx + (poly[:, 0] - cx) * w / 2, cy + (poly[:, 1] - cy) * h / 2], axis=1)
        return _inside_polygon(px, py, poly)
    raise WordpaintError(f"unknown shape {shape!r}; expected one of: {', '.join(SHAPES)}")


def shape_coverage(shape: str, box_px: tuple[float, float, float, float], height: int, width: int, *, ss: int = SUPERSAMPLE) -> np.ndarray:
    """Fraction (H, W) float32 of each pixel covered by ``shape`` in ``box_px`` (pixel units),
    from ss x ss samples per pixel. Only the box's neighbourhood is evaluated."""
    cov = np.zeros((height, width), dtype=np.float32)
    x0, y0, x1, y1 = box_px
    c0, c1 = max(int(math.floor(x0)), 0), min(int(math.ceil(x1)) + 1, width)
    r0, r1 = max(int(math.floor(y0)), 0), min(int(math.ceil(y1)) + 1, height)
    if c1 <= c0 or r1 <= r0:
        return cov
    offs = (np.arange(ss) + 0.5) / ss
    xs = (np.arange(c0, c1)[:, None] + offs[None, :]).reshape(-1)
    ys = (np.arange(r0, r1)[:, None] + offs[None, :]).reshape(-1)
    py, px = np.meshgrid(ys, xs, indexing="ij")
    m = shape_inside(shape, box_px, px, py).astype(np.float32)
    cov[r0:r1, c0:c1] = m.reshape(r1 - r0, ss, c1 - c0, ss).mean(axis=(1, 3))
    return cov


# ----------------------------------------------------------------------------------------------
# Renderer
# ----------------------------------------------------------------------------------------------


def check_size(size: int) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or not MIN_SIZE <= size <= MAX_SIZE:
        raise WordpaintError(f"canvas size must be an integer from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
    return size


def render_scene(scene: Scene, size: int = 64) -> np.ndarray:
    """Render ``scene`` to a (size, size, 3) uint8 array, anti-aliased, exact palette fills."""
    check_size(size)
    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = BACKGROUNDS[scene.background]
    for obj in scene.objects:
        box = tuple(v * size for v in obj.bbox)
        a = shape_coverage(obj.shape, box, size, size)[..., None]
        img = img * (1 - a) + np.asarray(COLORS[obj.color], np.float32) * a
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Relations and scene sampling
# ----------------------------------------------------------------------------------------------


def relation_holds(a: tuple[float, float], b: tuple[float, float], relation: str, *, margin: float = 0.1) -> bool:
    """GenEval's rule on box centres (canvas fractions): A is left of B when A's x is smaller by
    more than ``margin`` and the horizontal offset is the larger one. A tie satisfies nothing."""
    dx, dy = b[0] - a[0], b[1] - a[1]  # positive dx: a is left of b; positive dy: a is above b
    if relation in ("left_of", "right_of"):
        d = dx if relation == "left_of" else -dx
        return d > margin and abs(dx) > abs(dy)
    if relation in ("above", "below"):
        d = dy if relation == "above" else -dy
        return d > margin and abs(dy) > abs(dx)
    raise WordpaintError(f"unknown relation {relation!r}; expected one of: {', '.join(RELATIONS)}")


def place_boxes(rng: np.random.Generator, sides: list[float], *, gap: float, tries: int = 200) -> list[tuple] | None:
    """Place square boxes of the given sides (canvas fractions) with at least ``gap`` between
    them, fully inside the canvas; None when rejection sampling fails."""
    boxes: list[tuple] = []
    for s in sides:
        for _ in range(tries):
            x0, y0 = rng.uniform(0, 1 - s), rng.uniform(0, 1 - s)
            b = (x0, y0, x0 + s, y0 + s)
            if all(b[0] >= o[2] + gap or o[0] >= b[2] + gap or b[1] >= o[3] + gap or o[1] >= b[3] + gap for o in boxes):
                boxes.append(b)
                break
        else:
            return None
    return boxes


def min_gap(size: int) -> float:
    """The spec's 2% gap, raised to 2 px at small canvases so objects never merge."""
    return max(0.02, 2.0 / size)


def sample_color(rng: np.random.Generator, shape: str, *, exclude: frozenset = frozenset(), avoid: tuple = ()) -> str:
    choices = [c for c in COLORS if (c, shape) not in exclude and c not in avoid]
    return choices[rng.integers(len(choices))]


def sample_layout(
    rng: np.random.Generator,
    shapes: list[str],
    colors: list[str],
    *,
    size: int,
    relation: str | None = None,
    sizes: list[str] | None = None,
) -> list[SceneObject]:
    """Sizes and non-overlapping boxes for the given shapes; when ``relation`` is set, object 0
    stands in that relation to object 1. Retries with smaller sizes if the canvas is crowded."""
    gap = min_gap(size)
    for attempt in range(100):
        names = list(sizes) if sizes and attempt < 50 else [list(SIZES)[rng.integers(3 if attempt < 75 else 2)] for _ in shapes]
        sides = [SIZES[n] * (1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER)) for n in names]
        boxes = place_boxes(rng, sides, gap=gap)
        if boxes is None:
            continue
        objs = [SceneObject(s, c, n, b) for s, c, n, b in zip(shapes, colors, names, boxes)]
        if relation is None or relation_holds(objs[0].center, objs[1].center, relation):
            return objs
    raise WordpaintError(f"could not place {len(shapes)} objects (relation={relation}) on the canvas")
