import re

import numpy as np

from wordpaint.data.captions import PLURALS, TASKS, caption_for, sample_example, sample_spec
from wordpaint.eval.prompts import generate_prompt_set, load_prompts


def _many(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return [sample_example(rng, size=48) for _ in range(n)]


def test_every_task_is_produced_with_variety():
    exs = _many()
    for task in TASKS:
        caps = {e.caption for e in exs if e.spec["task"] == task}
        assert len(caps) > 100, task
        starts = {c.split()[0] for c in caps}
        assert len(starts) >= 3, (task, starts)  # several phrasings


def test_grammar_features_present():
    text = "\n".join(e.caption for e in _many())
    for needle in [" and ", " next to ", " to the left of ", " left of ", " right of ", " above ", " below ",
                   " on a black background", " grey ", "two ", "three ", "four ", "an orange", "small ", "large "]:
        assert needle in text + " ", needle
    for plural in PLURALS.values():
        assert re.search(rf"\b{plural}\b", text), plural


def test_caption_names_what_the_spec_requires():
    rng = np.random.default_rng(1)
    for _ in range(500):
        task = TASKS[rng.integers(6)]
        spec = sample_spec(rng, task)
        cap = caption_for(spec, rng)
        for o in spec["objects"]:
            assert o["shape"] in cap
            if o["color"]:
                assert o["color"] in cap
        if spec["background"]:
            assert ("grey" if spec["background"] == "gray" and "grey" in cap else spec["background"]) in cap


def test_scene_matches_spec():
    for e in _many(600, seed=2):
        spec, objs = e.spec, e.scene.objects
        n = spec["count"] if spec["task"] == "counting" else len(spec["objects"])
        assert len(objs) == n
        if spec["background"]:
            assert e.scene.background == spec["background"]
        for o in objs:
            want = spec["objects"][0] if spec["task"] == "counting" else spec["objects"][objs.index(o)]
            assert o.shape == want["shape"] and (not want["color"] or o.color == want["color"])


def test_builtin_prompt_set():
    items = load_prompts()
    for task in TASKS:
        assert sum(p["task"] == task for p in items) >= 50
    assert sum(p["held_out"] for p in items) >= 30
    assert len({(p["task"], p["prompt"]) for p in items}) == len(items)  # distinct within each task
    # the committed file is what the generator makes: the benchmark cannot drift silently
    assert [p["prompt"] for p in generate_prompt_set()] == [p["prompt"] for p in items]
