import math

import numpy as np
import pytest

from wordpaint.data.shapes import (
    BACKGROUNDS,
    COLORS,
    HELD_OUT_PAIRS,
    STAR_INNER,
    Scene,
    SceneObject,
    relation_holds,
    render_scene,
    sample_layout,
    shape_coverage,
)
from wordpaint.data.stream import ShapesStream
from wordpaint.errors import WordpaintError


def test_palette_is_the_spec():
    assert COLORS["red"] == (230, 25, 75) and COLORS["cyan"] == (70, 240, 240) and COLORS["pink"] == (240, 50, 230)
    assert BACKGROUNDS == {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}
    assert len(COLORS) == 8


@pytest.mark.parametrize("color", list(COLORS))
@pytest.mark.parametrize("bg", list(BACKGROUNDS))
def test_render_pixel_exact_fill_and_background(color, bg):
    scene = Scene(bg, [SceneObject("square", color, "large", (0.25, 0.25, 0.75, 0.75))])
    img = render_scene(scene, 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert (img[20:44, 20:44] == COLORS[color]).all()  # interior: exact palette value
    assert (img[:12] == BACKGROUNDS[bg]).all()  # away from the shape: exact background


def test_antialiased_edges():
    scene = Scene("white", [SceneObject("circle", "blue", "large", (0.2, 0.2, 0.8, 0.8))])
    img = render_scene(scene, 64).reshape(-1, 3)
    exact = {tuple(c) for c in (COLORS["blue"], BACKGROUNDS["white"])}
    mixed = [p for p in map(tuple, img) if p not in exact]
    assert len(mixed) > 20  # edge pixels blend (4x supersampling)


@pytest.mark.parametrize(
    "shape,area",
    [
        ("square", 1.0),
        ("circle", math.pi / 4),
        ("triangle", 0.5),
        ("cross", 5 / 9),  # a plus whose arms are a third wide: 5 of 9 cells
        # star: 10 triangles between outer radius 1/2 and inner radius 0.45/2, in a unit box
        ("star", 10 * 0.5 * 0.5 * (0.5 * STAR_INNER) * math.sin(math.pi / 5)),
    ],
)
def test_shape_area_matches_geometry(shape, area):
    cov = shape_coverage(shape, (10.0, 10.0, 110.0, 110.0), 120, 120)
    assert cov.sum() / 100**2 == pytest.approx(area, rel=0.01)


def test_triangle_apex_top_and_star_point_up():
    tri = shape_coverage("triangle", (0, 0, 100, 100), 100, 100) > 0.5
    assert tri[5].sum() < 15 and tri[95].sum() > 90  # narrow at the top, full base at the bottom
    star = shape_coverage("star", (0, 0, 100, 100), 100, 100) > 0.5
    rows = np.nonzero(star.any(1))[0]
    assert rows.min() <= 1  # a point touches the top edge
    assert rows.max() < 92  # the lower points stop at R(1 + cos 36deg) = 0.905 of the box


def test_cross_arm_width():
    cross = shape_coverage("cross", (0, 0, 90, 90), 90, 90) > 0.5
    assert cross[5].sum() == 30 and cross[45].sum() == 90


def test_layout_no_overlap_inside_canvas():
    rng = np.random.default_rng(0)
    for _ in range(50):
        objs = sample_layout(rng, ["star", "circle", "cross", "square"], ["red", "blue", "green", "pink"], size=48)
        for o in objs:
            assert 0 <= o.bbox[0] < o.bbox[2] <= 1 and 0 <= o.bbox[1] < o.bbox[3] <= 1
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                gap = 2 / 48
                assert a.bbox[2] + gap <= b.bbox[0] or b.bbox[2] + gap <= a.bbox[0] or a.bbox[3] + gap <= b.bbox[1] or b.bbox[3] + gap <= a.bbox[1]


def test_relation_rule():
    assert relation_holds((0.2, 0.5), (0.6, 0.5), "left_of")
    assert not relation_holds((0.2, 0.5), (0.25, 0.5), "left_of")  # under 0.1 apart
    assert not relation_holds((0.2, 0.2), (0.6, 0.7), "left_of")  # vertical offset is larger
    assert relation_holds((0.2, 0.2), (0.6, 0.7), "above")
    assert not relation_holds((0.2, 0.2), (0.6, 0.6), "left_of") and not relation_holds((0.2, 0.2), (0.6, 0.6), "above")  # tie
    assert relation_holds((0.8, 0.5), (0.3, 0.5), "right_of") and relation_holds((0.5, 0.9), (0.5, 0.2), "below")


def test_position_layouts_satisfy_relation():
    rng = np.random.default_rng(1)
    for rel in ("left_of", "right_of", "above", "below"):
        for _ in range(10):
            a, b = sample_layout(rng, ["star", "circle"], ["red", "blue"], size=48, relation=rel)
            assert relation_holds(a.center, b.center, rel)


def test_train_split_never_shows_held_out_pairs():
    stream = ShapesStream(size=48, seed=3, split="train")
    seen = {(o.color, o.shape) for i in range(3000) for o in stream.example(i).scene.objects}
    assert not seen & HELD_OUT_PAIRS
    assert len(seen) == 40 - len(HELD_OUT_PAIRS)  # every other pair does appear
    full = ShapesStream(size=48, seed=3, split="all")
    assert {(o.color, o.shape) for i in range(3000) for o in full.example(i).scene.objects} & HELD_OUT_PAIRS


def test_stream_is_deterministic_and_batches_are_disjoint_across_ranks():
    s = ShapesStream(size=32, seed=5, cond_drop_prob=0.5)
    x1, c1 = s.batch(7, 4)
    x2, c2 = s.batch(7, 4)
    assert (x1 == x2).all() and c1 == c2
    assert x1.shape == (4, 3, 32, 32) and x1.min() >= -1 and x1.max() <= 1
    _, r0 = s.batch(3, 4, rank=0, world_size=2)
    _, r1 = s.batch(3, 4, rank=1, world_size=2)
    assert r0 != r1
    drops = sum(s.item(i)[1] == "" for i in range(400))
    assert 140 < drops < 260  # condition dropout near the configured 0.5


@pytest.mark.parametrize("size", [31, 513, 40.0, True])
def test_bad_canvas_size(size):
    with pytest.raises(WordpaintError, match="canvas size"):
        render_scene(Scene("white", []), size)


def test_renderer_scales_to_other_sizes():
    scene = Scene("black", [SceneObject("circle", "yellow", "large", (0.3, 0.3, 0.66, 0.66))])
    small, big = render_scene(scene, 32), render_scene(scene, 256)
    frac = lambda im: (im.reshape(-1, 3) != 0).any(1).mean()
    assert frac(small) == pytest.approx(frac(big), abs=0.02)
