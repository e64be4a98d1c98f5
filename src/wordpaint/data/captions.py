"""Caption grammar for the shapes world.

A *spec* is the structured meaning of a prompt (what the scorer checks); a caption is one of
many phrasings of it; a scene is one rendering that satisfies it. Training samples a spec,
phrases it and draws a scene for it; evaluation keeps the spec of each prompt for the scorer.

spec = {"task": str, "objects": [{"shape", "color"|None, "size"|None}], "count": int|None,
        "relation": str|None, "background": str|None}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wordpaint.data.shapes import (
    BACKGROUNDS,
    HELD_OUT_PAIRS,
    RELATIONS,
    SHAPES,
    SIZES,
    Scene,
    sample_color,
    sample_layout,
)

TASKS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses"}
SIZE_WORDS = {"small": ("small", "tiny"), "medium": ("medium", "medium-sized"), "large": ("large", "big")}
FRAMES = ("{x}", "a photo of {x}", "an image of {x}", "a picture of {x}", "a drawing of {x}", "there is {x}")
BG_FRAMES = (" on a {bg} background", " against a {bg} background", " on {bg}")
JOINERS = (" and ", " next to ", " with ", " beside ")
RELATION_WORDS = {
    "left_of": (" to the left of ", " left of ", " on the left of "),
    "right_of": (" to the right of ", " right of ", " on the right of "),
    "above": (" above ", " over "),
    "below": (" below ", " under ", " beneath "),
}


@dataclass
class Example:
    """A training or evaluation item: the structured spec, its caption and (for training) a scene."""

    spec: dict
    caption: str
    scene: Scene | None = None


def _pick(rng: np.random.Generator, seq):
    return seq[rng.integers(len(seq))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(obj: dict, rng: np.random.Generator) -> str:
    """'a small red star', 'an orange circle', 'a cross'."""
    words = []
    if obj.get("size"):
        words.append(_pick(rng, SIZE_WORDS[obj["size"]]))
    if obj.get("color"):
        words.append(obj["color"])
    words.append(obj["shape"])
    return f"{_article(words[0])} {' '.join(words)}"


def caption_for(spec: dict, rng: np.random.Generator) -> str:
    """One phrasing of ``spec``; different rng draws give different phrasings."""
    task, objs = spec["task"], spec["objects"]
    if task in ("single_object", "colors"):
        x = noun_phrase(objs[0], rng)
    elif task in ("two_object", "color_attr"):
        x = noun_phrase(objs[0], rng) + _pick(rng, JOINERS) + noun_phrase(objs[1], rng)
    elif task == "position":
        x = noun_phrase(objs[0], rng) + _pick(rng, RELATION_WORDS[spec["relation"]]) + noun_phrase(objs[1], rng)
    elif task == "counting":
        o = objs[0]
        num = NUMBER_WORDS[spec["count"]] if rng.random() < 0.85 else str(spec["count"])
        x = " ".join(w for w in (num, o.get("color"), PLURALS[o["shape"]]) if w)
    else:
        raise ValueError(f"unknown task {task!r}")
    frame = _pick(rng, FRAMES)
    if task == "counting":
        frame = frame.replace("there is", "there are")
    text = frame.format(x=x)
    if spec.get("background"):
        bg = spec["background"]
        if bg == "gray" and rng.random() < 0.5:
            bg = "grey"
        text += _pick(rng, BG_FRAMES).format(bg=bg)
    return text


def sample_spec(
    rng: np.random.Generator,
    task: str,
    *,
    exclude: frozenset = HELD_OUT_PAIRS,
    p_background: float = 0.3,
    p_size: float = 0.2,
    held_out: bool = False,
) -> dict:
    """A random spec for ``task``. Colours never form an ``exclude`` pair; with ``held_out`` the
    first coloured object is forced to be one of the held-out pairs (for evaluation)."""
    def obj(shape: str, color: str | None) -> dict:
        return {"shape": shape, "color": color, "size": _pick(rng, list(SIZES)) if rng.random() < p_size else None}

    def two_shapes() -> list[str]:
        i, j = rng.choice(len(SHAPES), 2, replace=False)
        return [SHAPES[i], SHAPES[j]]

    def colors_for(shapes: list[str], distinct: bool = True) -> list[str]:
        out: list[str] = []
        for s in shapes:
            out.append(sample_color(rng, s, exclude=exclude, avoid=tuple(out) if distinct else ()))
        if held_out:
            c, s = sorted(HELD_OUT_PAIRS)[rng.integers(len(HELD_OUT_PAIRS))]
            shapes[0], out[0] = s, c
            if len(shapes) > 1 and shapes[1] == s:  # keep the two shapes distinct
                shapes[1] = _pick(rng, [x for x in SHAPES if x != s])
            if len(out) > 1 and out[1] == c:
                out[1] = sample_color(rng, shapes[1], exclude=exclude, avoid=(c,))
        return out

    spec: dict = {"task": task, "objects": [], "count": None, "relation": None, "background": None}
    if task == "single_object":
        shape = _pick(rng, SHAPES)
        color = sample_color(rng, shape, exclude=exclude) if rng.random() < 0.4 else None
        spec["objects"] = [obj(shape, color)]
    elif task == "colors":
        shapes = [_pick(rng, SHAPES)]
        spec["objects"] = [obj(shapes[0], colors_for(shapes)[0])]
    elif task == "two_object":
        shapes = two_shapes()
        cols = colors_for(shapes) if rng.random() < 0.3 else [None, None]
        spec["objects"] = [obj(s, c) for s, c in zip(shapes, cols)]
    elif task == "color_attr":
        shapes = two_shapes()
        spec["objects"] = [obj(s, c) for s, c in zip(shapes, colors_for(shapes))]
    elif task == "position":
        shapes = two_shapes()
        cols = colors_for(shapes) if (held_out or rng.random() < 0.7) else [None, None]
        spec["objects"] = [{"shape": s, "color": c, "size": None} for s, c in zip(shapes, cols)]
        spec["relation"] = _pick(rng, RELATIONS)
    elif task == "counting":
        shapes = [_pick(rng, SHAPES)]
        color = colors_for(shapes)[0] if (held_out or rng.random() < 0.5) else None
        spec["objects"] = [{"shape": shapes[0], "color": color, "size": None}]
        spec["count"] = int(rng.integers(2, 5))
    else:
        raise ValueError(f"unknown task {task!r}; expected one of: {', '.join(TASKS)}")
    if rng.random() < p_background:
        spec["background"] = _pick(rng, list(BACKGROUNDS))
    return spec


def scene_for(spec: dict, rng: np.random.Generator, *, size: int, exclude: frozenset = HELD_OUT_PAIRS) -> Scene:
    """Draw a scene that satisfies ``spec``: every object the caption names and nothing else;
    unnamed colours, sizes and background are sampled (never forming an ``exclude`` pair)."""
    if spec["task"] == "counting":
        o = spec["objects"][0]
        objs = [dict(o) for _ in range(spec["count"])]
    else:
        objs = spec["objects"]
    shapes = [o["shape"] for o in objs]
    colors = [o["color"] or sample_color(rng, o["shape"], exclude=exclude) for o in objs]
    sizes = [o.get("size") or list(SIZES)[rng.integers(3)] for o in objs]
    placed = sample_layout(rng, shapes, colors, size=size, relation=spec.get("relation"), sizes=sizes)
    background = spec.get("background") or _pick(rng, list(BACKGROUNDS))
    return Scene(background, placed)


def sample_example(
    rng: np.random.Generator,
    *,
    size: int,
    task: str | None = None,
    exclude: frozenset = HELD_OUT_PAIRS,
) -> Example:
    """One training example: a spec for ``task`` (uniform over TASKS when None), a caption and a scene."""
    task = task or _pick(rng, TASKS)
    spec = sample_spec(rng, task, exclude=exclude)
    return Example(spec, caption_for(spec, rng), scene_for(spec, rng, size=size, exclude=exclude))


def spec_pairs(spec: dict) -> set[tuple[str, str]]:
    """The (colour, shape) pairs a spec names."""
    return {(o["color"], o["shape"]) for o in spec["objects"] if o.get("color")}


def ground_truth(example: Example) -> dict:
    """The spec's ground-truth record: background, objects with bboxes, caption, task (+ spec)."""
    gt = example.scene.to_dict()
    gt.update(caption=example.caption, task=example.spec["task"], spec=example.spec)
    return gt
