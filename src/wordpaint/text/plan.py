"""Scene plans: the structured layout a planner writes and the layout-grounded generator draws.

A plan is background + style + objects (phrase, attributes, box in canvas fractions) + the
rewritten prompt. :func:`repair` makes any plan valid (boxes inside the canvas, no overlaps, at
most ``MAX_OBJECTS``) and records in ``warnings`` everything it changed or dropped, so nothing
is lost silently. ``JSON_SCHEMA`` is what constrained decoding holds an LLM planner to.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from wordpaint.data.shapes import BACKGROUNDS, COLORS, SHAPES, SIZES, Scene, SceneObject
from wordpaint.errors import WordpaintError

MAX_OBJECTS = 4  # the shapes world's limit (spec: 1 to 4 objects)
MIN_SIDE = 0.08  # smallest box side kept (canvas fraction); smaller boxes are enlarged
GAP = 0.02  # the spec's minimum gap between boxes
STYLES = ("flat",)  # the shapes world draws one style; later corpora add more

JSON_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "background": {"enum": [*BACKGROUNDS, None]},
        "style": {"enum": [*STYLES, None]},
        "objects": {
            "type": "array",
            "minItems": 0,
            "maxItems": MAX_OBJECTS,
            "items": {
                "type": "object",
                "properties": {
                    "phrase": {"type": "string", "maxLength": 40},
                    "shape": {"enum": list(SHAPES)},
                    "color": {"enum": [*COLORS, None]},
                    "size": {"enum": [*SIZES, None]},
                    "box": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 4, "maxItems": 4},
                },
                "required": ["phrase", "shape", "color", "size", "box"],
            },
        },
        "prompt": {"type": "string", "maxLength": 200},
    },
    "required": ["background", "style", "objects", "prompt"],
}


@dataclass
class PlanObject:
    """One object: ``box`` is (x0, y0, x1, y1) in canvas fractions, y down."""

    phrase: str
    shape: str
    color: str | None = None
    size: str | None = None
    box: tuple[float, float, float, float] = (0.37, 0.37, 0.63, 0.63)

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2, (y0 + y1) / 2)


@dataclass
class ScenePlan:
    prompt: str
    objects: list[PlanObject]
    background: str | None = None
    style: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        for o in d["objects"]:
            o["box"] = [round(v, 4) for v in o["box"]]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: object) -> "ScenePlan":
        """Build a plan from parsed JSON, checking types and vocabularies (a clear error, not a KeyError)."""
        if not isinstance(d, dict):
            raise WordpaintError(f"a plan must be a JSON object, got {type(d).__name__}")
        objs = d.get("objects")
        if not isinstance(objs, list):
            raise WordpaintError("a plan needs an 'objects' list")
        out = []
        for i, o in enumerate(objs):
            if not isinstance(o, dict):
                raise WordpaintError(f"plan object {i} must be a JSON object")
            shape = o.get("shape")
            if shape not in SHAPES:
                raise WordpaintError(f"plan object {i}: unknown shape {shape!r}; expected one of: {', '.join(SHAPES)}")
            color, size = o.get("color"), o.get("size")
            if color is not None and color not in COLORS:
                raise WordpaintError(f"plan object {i}: unknown color {color!r}; expected one of: {', '.join(COLORS)}")
            if size is not None and size not in SIZES:
                raise WordpaintError(f"plan object {i}: unknown size {size!r}; expected one of: {', '.join(SIZES)}")
            box = o.get("box")
            if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
                raise WordpaintError(f"plan object {i}: box must be 4 finite numbers [x0, y0, x1, y1], got {box!r}")
            out.append(PlanObject(str(o.get("phrase") or shape)[:40], shape, color, size, tuple(float(v) for v in box)))
        bg = d.get("background")
        if bg is not None and bg not in BACKGROUNDS:
            raise WordpaintError(f"unknown background {bg!r}; expected one of: {', '.join(BACKGROUNDS)}")
        style = d.get("style")
        if style is not None and style not in STYLES:
            raise WordpaintError(f"unknown style {style!r}; expected one of: {', '.join(STYLES)}")
        return cls(str(d.get("prompt", "")), out, bg, style, list(d.get("warnings", [])))


# -- repair ----------------------------------------------------------------------------------------
def _overlap(a: tuple, b: tuple, gap: float) -> tuple[float, float]:
    """Overlap of two boxes grown by ``gap`` along x and y (<= 0 on an axis means separated)."""
    ox = min(a[2], b[2]) - max(a[0], b[0]) + gap
    oy = min(a[3], b[3]) - max(a[1], b[1]) + gap
    return ox, oy


def _clip(box: tuple) -> tuple[float, float, float, float]:
    """Order the corners, enforce MIN_SIDE <= side <= 1, then shift the box inside the canvas."""
    x0, x1 = sorted((box[0], box[2]))
    y0, y1 = sorted((box[1], box[3]))
    w, h = min(max(x1 - x0, MIN_SIDE), 1.0), min(max(y1 - y0, MIN_SIDE), 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    cx, cy = min(max(cx, w / 2), 1 - w / 2), min(max(cy, h / 2), 1 - h / 2)
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _separate(boxes: list[tuple], gap: float, iters: int = 200) -> tuple[list[tuple], bool]:
    """Push overlapping boxes apart along the axis of least overlap; (boxes, success)."""
    boxes = [list(b) for b in boxes]
    for _ in range(iters):
        moved = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                ox, oy = _overlap(boxes[i], boxes[j], gap)
                if ox <= 1e-9 or oy <= 1e-9:
                    continue
                moved = True
                axis = 0 if ox <= oy else 1
                ci = (boxes[i][axis] + boxes[i][axis + 2]) / 2
                cj = (boxes[j][axis] + boxes[j][axis + 2]) / 2
                d = (ox if axis == 0 else oy) / 2 + 1e-4
                sign = -1 if ci <= cj else 1  # keep their order along the axis
                for b, s in ((boxes[i], sign), (boxes[j], -sign)):
                    b[axis] += s * d
                    b[axis + 2] += s * d
                boxes[i], boxes[j] = list(_clip(boxes[i])), list(_clip(boxes[j]))
        if not moved:
            return [tuple(b) for b in boxes], True
    return [tuple(b) for b in boxes], False


def repair(plan: ScenePlan, *, max_objects: int = MAX_OBJECTS, gap: float = GAP) -> ScenePlan:
    """A valid copy of ``plan``: at most ``max_objects`` objects (extras dropped with a warning),
    every box inside the canvas with sides >= MIN_SIDE, and >= ``gap`` between boxes (pushed
    apart, then shrunk about their centres if pushing cannot make room)."""
    warnings = list(plan.warnings)
    objs = [PlanObject(o.phrase, o.shape, o.color, o.size, o.box) for o in plan.objects]
    if not objs:
        # nothing drawable was named: an empty layout (the generator then follows the prompt alone)
        if not any("no object" in w for w in warnings):
            warnings.append(f"no object the model can draw was found; shapes: {', '.join(SHAPES)}")
        return ScenePlan(plan.prompt, [], plan.background, plan.style, warnings)
    if len(objs) > max_objects:
        dropped = objs[max_objects:]
        warnings.append(f"dropped {len(dropped)} object(s) ({', '.join(o.phrase for o in dropped)}): the canvas holds at most {max_objects}")
        objs = objs[:max_objects]
    clipped = [_clip(o.box) for o in objs]
    if any(max(abs(a - b) for a, b in zip(c, o.box)) > 1e-6 for c, o in zip(clipped, objs)):
        warnings.append("moved or resized boxes to fit inside the canvas")
    boxes, ok = _separate(clipped, gap)
    scale = 1.0
    while not ok:
        scale *= 0.85
        if scale < 0.2:  # cannot happen for <= MAX_OBJECTS boxes of MIN_SIDE, but never loop forever
            raise WordpaintError("could not lay out the plan's objects without overlap")
        shrunk = []
        for b in clipped:
            cx, cy, w, h = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0]) * scale, (b[3] - b[1]) * scale
            shrunk.append(_clip((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)))
        boxes, ok = _separate(shrunk, gap)
    if any(max(abs(a - b) for a, b in zip(n, c)) > 1e-6 for n, c in zip(boxes, clipped)):
        warnings.append("moved boxes apart so that objects do not overlap")
    for o, b in zip(objs, boxes):
        o.box = tuple(float(v) for v in b)
    return ScenePlan(plan.prompt, objs, plan.background, plan.style, warnings)


def is_valid(plan: ScenePlan, *, gap: float = GAP) -> bool:
    """True when every invariant :func:`repair` establishes holds."""
    if not (0 <= len(plan.objects) <= MAX_OBJECTS):
        return False
    for o in plan.objects:
        x0, y0, x1, y1 = o.box
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1) or o.shape not in SHAPES:
            return False
    for i, a in enumerate(plan.objects):
        for b in plan.objects[i + 1 :]:
            ox, oy = _overlap(a.box, b.box, gap - 1e-6)
            if ox > 0 and oy > 0:
                return False
    return True


def plan_to_scene(plan: ScenePlan, *, default_background: str = "white", default_color: str = "red") -> Scene:
    """The shapes-world scene a plan describes, with square boxes (the renderer draws squares)
    centred in the plan's boxes; unnamed colours and backgrounds take the given defaults."""
    objs = []
    for o in plan.objects:
        (cx, cy), side = o.center, min(o.box[2] - o.box[0], o.box[3] - o.box[1])
        objs.append(SceneObject(o.shape, o.color or default_color, o.size or "medium", (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)))
    return Scene(plan.background or default_background, objs)
