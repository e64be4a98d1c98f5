import numpy as np
import pytest

from wordpaint.data.captions import TASKS, sample_example
from wordpaint.data.shapes import Scene, SceneObject, render_scene
from wordpaint.eval.compositional import aggregate
from wordpaint.eval.scorer import detect_objects, score_image


def _spec(task, objects, count=None, relation=None, background=None):
    return {"task": task, "objects": objects, "count": count, "relation": relation, "background": background}


def test_ground_truth_renders_pass_at_bundled_resolution():
    rng = np.random.default_rng(11)
    ok = {t: [] for t in TASKS}
    for i in range(240):
        e = sample_example(rng, size=48, task=TASKS[i % 6])
        ok[e.spec["task"]].append(score_image(render_scene(e.scene, 48), e.spec)["correct"])
    acc = np.mean([np.mean(v) for v in ok.values()])
    assert acc >= 0.99, {t: np.mean(v) for t, v in ok.items()}


def test_detects_every_shape_and_colour():
    scene = Scene("gray", [
        SceneObject("circle", "red", "large", (0.05, 0.05, 0.40, 0.40)),
        SceneObject("star", "cyan", "large", (0.55, 0.05, 0.90, 0.40)),
        SceneObject("triangle", "purple", "large", (0.05, 0.55, 0.40, 0.90)),
        SceneObject("cross", "yellow", "medium", (0.60, 0.60, 0.86, 0.86)),
    ])
    bg, dets = detect_objects(render_scene(scene, 64))
    assert bg == "gray"
    assert sorted((d.shape, d.color) for d in dets) == sorted([("circle", "red"), ("star", "cyan"), ("triangle", "purple"), ("cross", "yellow")])


def two(shape_a, col_a, shape_b, col_b, bg="white"):
    return render_scene(Scene(bg, [SceneObject(shape_a, col_a, "large", (0.05, 0.3, 0.41, 0.66)),
                                   SceneObject(shape_b, col_b, "large", (0.55, 0.3, 0.91, 0.66))]), 48)


def test_rejects_wrong_colour():
    img = two("circle", "red", "square", "blue")
    assert score_image(img, _spec("colors", [{"shape": "circle", "color": "red"}]))["correct"]
    assert not score_image(img, _spec("colors", [{"shape": "circle", "color": "green"}]))["correct"]
    assert score_image(img, _spec("color_attr", [{"shape": "circle", "color": "red"}, {"shape": "square", "color": "blue"}]))["correct"]
    assert not score_image(img, _spec("color_attr", [{"shape": "circle", "color": "blue"}, {"shape": "square", "color": "red"}]))["correct"]


def test_rejects_wrong_relation():
    img = two("circle", "red", "square", "blue")
    objs = [{"shape": "circle", "color": "red"}, {"shape": "square", "color": "blue"}]
    assert score_image(img, _spec("position", objs, relation="left_of"))["correct"]
    for rel in ("right_of", "above", "below"):
        assert not score_image(img, _spec("position", objs, relation=rel))["correct"]


def test_rejects_wrong_count():
    scene = Scene("black", [SceneObject("star", "yellow", "medium", b) for b in
                            [(0.05, 0.05, 0.31, 0.31), (0.6, 0.05, 0.86, 0.31), (0.3, 0.6, 0.56, 0.86)]]
                  + [SceneObject("star", "red", "small", (0.75, 0.7, 0.93, 0.88))])
    img = render_scene(scene, 48)
    yellow = [{"shape": "star", "color": "yellow"}]
    assert score_image(img, _spec("counting", yellow, count=3))["correct"]
    assert not score_image(img, _spec("counting", yellow, count=2))["correct"]
    assert not score_image(img, _spec("counting", yellow, count=4))["correct"]
    # without a colour, every star counts
    assert score_image(img, _spec("counting", [{"shape": "star", "color": None}], count=4))["correct"]


def test_background_named_in_prompt_must_match():
    img = two("circle", "red", "square", "blue", bg="black")
    assert score_image(img, _spec("single_object", [{"shape": "circle", "color": None}], background="black"))["correct"]
    assert not score_image(img, _spec("single_object", [{"shape": "circle", "color": None}], background="white"))["correct"]


def test_noise_is_ignored_and_blank_fails():
    img = np.full((48, 48, 3), 255, np.uint8)
    img[10, 10] = (230, 25, 75)  # one stray red pixel: hull far under 1% of the canvas
    _, dets = detect_objects(img)
    assert dets == []
    assert not score_image(img, _spec("single_object", [{"shape": "circle", "color": None}]))["correct"]


def test_bad_image_rejected():
    with pytest.raises(ValueError, match="RGB"):
        score_image(np.zeros((48, 48), np.uint8), _spec("single_object", [{"shape": "star", "color": None}]))


def test_aggregate_overall_is_mean_of_tasks():
    recs = [{"task": "colors", "held_out": False, "correct": True}, {"task": "colors", "held_out": True, "correct": False},
            {"task": "counting", "held_out": False, "correct": True}]
    s = aggregate(recs)
    assert s["per_task"] == {"counting": 1.0, "colors": 0.5}
    assert s["overall"] == 0.75 and s["held_out_pairs"] == 0.0
