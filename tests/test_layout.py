"""Layout grounding: layout rasters, ground-truth layouts in the stream, the layout UNet input,
warm start from a prompt-only model, and planned generation through the pipeline."""

import dataclasses

import numpy as np
import pytest
import torch

from wordpaint.data.shapes import COLORS
from wordpaint.data.stream import ShapesStream, make_stream
from wordpaint.errors import WordpaintError
from wordpaint.models.registry import build_config, build_model
from wordpaint.text.layout import LAYOUT_CHANNELS, LayoutObject, layout_from_example, layout_from_plan, object_weight_map, rasterize
from wordpaint.text.plan import PlanObject, ScenePlan


def test_rasterize_channels():
    lay = rasterize([LayoutObject("star", "cyan", (0.25, 0.5, 0.5, 0.75)), LayoutObject("circle", None, (0.6, 0.1, 0.9, 0.4))],
                    "black", height=32, width=32)
    assert lay.shape == (LAYOUT_CHANNELS, 32, 32) and lay.dtype == torch.float32
    # the star's box covers pixels 8..15 x 16..23 exactly; the circle's box has fractional edges
    assert lay[0, 16:24, 8:16].eq(1).all() and lay[0].sum().item() == pytest.approx(64 + (0.3 * 32) ** 2, abs=1e-3)
    rgb = torch.tensor(COLORS["cyan"], dtype=torch.float32) / 127.5 - 1
    assert torch.allclose(lay[1:4, 20, 10], rgb) and lay[4, 20, 10] == 1
    # no colour named for the circle: colour channels stay empty in its box, its shape is set
    assert lay[1:5, 8, 24].abs().sum() == 0 and lay[5, 8, 24] == 1 and lay[8, 20, 10] == 1
    assert lay[5:10].sum(0).max() == 1  # one shape per pixel
    assert lay[11].eq(1).all() and lay[10].eq(0).all() and lay[12].eq(0).all()  # black background everywhere
    empty = rasterize([], None, height=16, width=16)
    assert empty.abs().sum() == 0


def test_silhouette_layouts_paint_the_shape_not_the_box():
    from wordpaint.data.shapes import shape_coverage

    objs = [LayoutObject("star", "cyan", (0.25, 0.5, 0.5, 0.75)), LayoutObject(None, "red", (0.6, 0.1, 0.9, 0.4))]
    box = rasterize(objs, "black", height=32, width=32)
    sil = rasterize(objs, "black", height=32, width=32, silhouettes=True)
    star = torch.from_numpy(shape_coverage("star", (8, 16, 16, 24), 32, 32))
    # the star's mask is the renderer's own star (about a third of its box), in every channel it sets
    assert torch.allclose(sil[0, :, :16], star[:, :16]) and 0.25 < star.sum() / 64 < 0.45
    assert torch.allclose(sil[8], star) and torch.allclose(sil[4, :, :16], star[:, :16])
    rgb = torch.tensor(COLORS["cyan"], dtype=torch.float32) / 127.5 - 1
    assert torch.allclose(sil[1:4, :, :16], rgb[:, None, None] * star[:, :16])
    assert sil[0, 16, 8] == 0 and box[0, 16, 8] == 1  # a box corner outside the star
    # an object of unknown shape keeps its box; the background is unchanged
    assert torch.equal(sil[:, :, 16:], box[:, :, 16:]) and torch.equal(sil[10:], box[10:])


def test_silhouette_layouts_reach_training_and_the_pipeline(text_encoder):
    from wordpaint.pipelines.text_to_image import TextToImagePipeline

    plain, sil = ShapesStream(size=32, seed=4), ShapesStream(size=32, seed=4, silhouettes=True)
    assert torch.equal(plain.batch(0, 4)[0], sil.batch(0, 4)[0])  # same images, only the layouts differ
    a, b = plain.layouts(0, 4), sil.layouts(0, 4)
    assert not torch.equal(a, b) and b[:, 0][a[:, 0] == 0].eq(0).all()  # a silhouette lies inside its box
    ms = make_stream("shapes", size=32, seed=4, layout_drop_prob=0.0, sizes=[32, 40], silhouettes=True)
    assert torch.equal(ms.layouts(0, 4), b)
    with pytest.raises(ValueError, match="needs a layout model"):
        build_config(preset="tiny", layout_silhouettes=True)
    with pytest.raises(ValueError, match="true or false"):
        build_config(preset="tiny", layout_channels=LAYOUT_CHANNELS, layout_silhouettes="yes")
    model = build_model(build_config(preset="tiny", layout_channels=LAYOUT_CHANNELS, layout_silhouettes=True))
    pipe = TextToImagePipeline(text_encoder=text_encoder, model=model, planner="rules")
    plan = pipe.plan("a star")
    lay = pipe._layout(plan, 32, 32)
    objs, bg = layout_from_plan(plan)
    assert torch.equal(lay, rasterize(objs, bg, height=32, width=32, silhouettes=True))
    assert not torch.equal(lay, rasterize(objs, bg, height=32, width=32))


def test_a_silhouette_recipe_trains_on_silhouette_layouts():
    from accelerate import Accelerator

    from wordpaint.training.train import StepBatches, TextToImageTask, load_recipe, recipe_model_config

    recipe = load_recipe("tiny_layout")
    recipe["model"]["overrides"]["layout_silhouettes"] = True
    config = recipe_model_config(recipe)
    task = TextToImageTask(recipe, config, Accelerator(cpu=True), show_progress=False)
    batch = StepBatches(task, 4)[0]
    want = ShapesStream(size=config.resolution, seed=recipe["seed"], cond_drop_prob=config.cond_drop_prob,
                        layout_drop_prob=config.layout_drop_prob, silhouettes=True)
    assert torch.equal(batch["layout"], want.layouts(0, 4))


def test_layout_from_plan_squares_boxes():
    plan = ScenePlan("a red square", [PlanObject("red square", "square", "red", None, (0.1, 0.1, 0.5, 0.3))], "gray", "flat")
    objs, bg = layout_from_plan(plan)
    x0, y0, x1, y1 = objs[0].box
    assert bg == "gray" and x1 - x0 == pytest.approx(0.2) and y1 - y0 == pytest.approx(0.2)
    assert (x0 + x1) / 2 == pytest.approx(0.3) and (y0 + y1) / 2 == pytest.approx(0.2)


def test_ground_truth_layout_names_only_what_the_caption_says():
    s = ShapesStream(size=32, seed=0)
    seen_counting = seen_unnamed = False
    for i in range(200):
        ex = s.example(i)
        objs, bg = layout_from_example(ex.spec, ex.scene)
        assert len(objs) == len(ex.scene.objects) and bg == ex.spec["background"]
        for o, so in zip(objs, ex.scene.objects):
            assert o.shape == so.shape and o.box == tuple(so.bbox)
            assert o.color in (None, so.color)
            seen_unnamed |= o.color is None
        if ex.spec["task"] == "counting" and ex.spec["objects"][0]["color"]:
            seen_counting = True
            assert all(o.color == ex.spec["objects"][0]["color"] for o in objs)
    assert seen_counting and seen_unnamed


def test_stream_layouts_match_images_and_drop_with_captions():
    s = ShapesStream(size=32, seed=1, cond_drop_prob=0.2, layout_drop_prob=0.2)
    images, captions = s.batch(3, 16)
    lay = s.layouts(3, 16)
    assert lay.shape == (16, LAYOUT_CHANNELS, 32, 32) and torch.equal(lay, s.layouts(3, 16))
    dropped = lay.flatten(1).abs().sum(1) == 0
    assert all(dropped[j] for j, c in enumerate(captions) if c == "")  # unconditional examples lose both
    assert dropped.sum() > sum(c == "" for c in captions)  # and some lose their layout alone
    for j in range(16):
        if dropped[j]:
            continue
        # every object pixel lies inside a box: pixels far from the background colour are covered
        img = (images[j] + 1) * 127.5
        bg = img[:, 0, 0]
        fg = (img - bg[:, None, None]).abs().amax(0) > 60
        assert (lay[j, 0][fg] > 0).all()


def test_object_weight_map_gives_every_object_the_same_total_weight():
    small, large = LayoutObject("star", None, (0.0, 0.0, 0.25, 0.25)), LayoutObject("circle", "red", (0.5, 0.5, 1.0, 1.0))
    m = object_weight_map([small, large], height=32, width=32)
    assert m.shape == (1, 32, 32) and m[0, 20:, :16].eq(0).all()  # background
    # the small box is a quarter the side of the canvas: 4x the large one's weight per pixel, equal sums
    assert m[0, 2, 2].item() == pytest.approx(4 * m[0, 20, 20].item())
    assert m[0, :8, :8].sum().item() == pytest.approx(m[0, 16:, 16:].sum().item(), rel=1e-5)
    s = ShapesStream(size=32, seed=1, cond_drop_prob=0.5, layout_drop_prob=0.5)
    maps, lay = s.object_maps(2, 8), s.layouts(2, 8)
    assert maps.shape == (8, 1, 32, 32) and torch.equal(maps, s.object_maps(2, 8))
    assert ((maps[:, 0] > 0) == (lay[:, 0] > 0))[lay.flatten(1).abs().sum(1) > 0].all()  # same boxes as the layout
    assert (maps.flatten(1).sum(1) > 0).all()  # and kept where the layout input was dropped


def test_object_weighted_loss_counts_object_pixels_more():
    model = build_model(build_config(preset="tiny", object_loss_weight=8.0))
    model.net = lambda x, *a, **k: torch.zeros_like(x)  # pred = 0: the error is the target itself
    # the image is 0 except a block of 1s; with v-prediction the target there is larger on average
    x0 = torch.zeros(8, 3, 32, 32)
    x0[:, :, :8, :8] = 1.0
    batch = {"pixel_values": x0, "encoder_hidden_states": torch.randn(8, 5, 384), "encoder_attention_mask": torch.ones(8, 5, dtype=torch.bool)}
    on_block, elsewhere = torch.zeros(8, 1, 32, 32), torch.zeros(8, 1, 32, 32)
    on_block[:, :, :8, :8] = 1.0
    elsewhere[:, :, 16:24, 16:24] = 1.0

    def loss(obj_map):
        return model({**batch, "object_map": obj_map}, generator=torch.Generator().manual_seed(0)).item()

    with pytest.raises(ValueError, match="object_map"):
        model(batch)
    plain = loss(torch.zeros(8, 1, 32, 32))  # no objects: the weights renormalise to plain MSE
    assert loss(on_block) > 1.2 * plain and loss(elsewhere) < plain
    with pytest.raises(ValueError, match="object_loss_weight"):
        build_config(preset="tiny", object_loss_weight=-1.0)


def test_layouts_need_the_shapes_stream():
    with pytest.raises(WordpaintError, match="no layouts"):
        make_stream("fashion_mnist", size=32, layout_drop_prob=0.1)


def test_multi_size_stream_cycles_canvas_sizes_batch_by_batch():
    ms = make_stream("shapes", size=32, seed=3, cond_drop_prob=0.2, layout_drop_prob=0.2, sizes=[32, 40])
    for step, size in ((0, 32), (1, 40), (2, 32), (5, 40)):
        images, captions = ms.batch(step, 3)
        assert images.shape == (3, 3, size, size) and ms.layouts(step, 3).shape == (3, 13, size, size)
        # the batch a single-size stream of that size gives for the same step: resuming is exact
        ref_images, ref_captions = ShapesStream(size=size, seed=3, cond_drop_prob=0.2, layout_drop_prob=0.2).batch(step, 3)
        assert torch.equal(images, ref_images) and captions == ref_captions
    for bad in ([], [32, "40"], 48, [True]):
        with pytest.raises(WordpaintError, match="data.sizes"):
            make_stream("shapes", size=32, sizes=bad)
    with pytest.raises(WordpaintError, match="canvas size"):
        make_stream("shapes", size=32, sizes=[32, 16])
    with pytest.raises(WordpaintError, match="works with: shapes"):
        make_stream("fashion_mnist", size=32, sizes=[28, 32])


def test_warm_start_from_a_prompt_only_model_changes_nothing():
    from wordpaint.training.train import widen_conv_in

    torch.manual_seed(0)
    base = build_model(build_config(preset="tiny"))
    lay_model = build_model(build_config(preset="tiny", layout_channels=LAYOUT_CHANNELS))
    weights = widen_conv_in(base.state_dict(), lay_model)
    lay_model.load_state_dict(weights)
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([10.0, 500.0])
    states, mask = torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.bool)
    layout = torch.rand(2, LAYOUT_CHANNELS, 32, 32)
    with torch.no_grad():
        ref = base.net(x, t, states, mask)
        assert torch.allclose(lay_model.net(x, t, states, mask, layout), ref, atol=1e-6)
        assert torch.allclose(lay_model.net(x, t, states, mask), ref, atol=1e-6)
    assert widen_conv_in(base.state_dict(), base).keys() == base.state_dict().keys()


def test_layout_residuals_start_from_the_old_model_and_learn():
    from wordpaint.training.train import zero_new_layout_residuals

    torch.manual_seed(0)
    old = build_model(build_config(preset="tiny", layout_channels=LAYOUT_CHANNELS))
    new = build_model(build_config(preset="tiny", layout_channels=LAYOUT_CHANNELS, layout_residuals=True))
    weights = zero_new_layout_residuals(old.state_dict(), new)
    new.load_state_dict(weights)  # strict: every new key is filled
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10.0, 500.0])
    states, mask = torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.bool)
    layout = torch.rand(2, LAYOUT_CHANNELS, 32, 32)
    with torch.no_grad():
        assert torch.equal(new.net(x, t, states, mask, layout), old.net(x, t, states, mask, layout))
    # one residual per skip connection of the UNet (shapes checked by diffusers when added)
    down, mid = new.layout_residuals(layout)
    assert len(down) == 1 + 2 * 1 + 1 and mid.shape == (2, 8, 16, 16)  # tiny: channels (4, 8), one layer per block
    batch = {"pixel_values": torch.rand(2, 3, 32, 32) * 2 - 1, "encoder_hidden_states": states, "encoder_attention_mask": mask, "layout": layout}
    new(batch, generator=torch.Generator().manual_seed(0)).backward()
    grads = [c.weight.grad for c in new.layout_residuals.convs]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)  # the zero convolutions get gradient
    with torch.no_grad():  # and once non-zero they change the output
        for c in new.layout_residuals.convs:
            c.weight.add_(0.1)
        assert not torch.allclose(new.net(x, t, states, mask, layout), old.net(x, t, states, mask, layout))
    with pytest.raises(ValueError, match="needs a layout model"):
        build_config(preset="tiny", layout_residuals=True)


@pytest.fixture(scope="module")
def layout_pipe(text_encoder):
    from wordpaint.pipelines.text_to_image import TextToImagePipeline

    torch.manual_seed(0)
    model = build_model(build_config(preset="tiny", layout_channels=LAYOUT_CHANNELS))
    with torch.no_grad():  # make the layout input matter (a fresh model's weights are random anyway)
        model.unet.conv_in.weight[:, 3:] += 0.5
    return TextToImagePipeline(text_encoder=text_encoder, model=model, defaults={"num_inference_steps": 2}, planner="rules")


def test_layout_model_draws_the_plan(layout_pipe, tmp_path):
    out = layout_pipe("a red circle to the left of a blue square", seed=3)
    m = out.metadata[0]
    assert m["planner"] == "rules" and len(m["plan"]["objects"]) == 2
    moved = layout_pipe.plan("a red circle to the left of a blue square")
    moved.objects[0].box, moved.objects[1].box = moved.objects[1].box, moved.objects[0].box
    swapped = layout_pipe("a red circle to the left of a blue square", seed=3, plans=[moved])
    a, b = np.asarray(out.images[0], dtype=float), np.asarray(swapped.images[0], dtype=float)
    assert np.abs(a - b).mean() > 0.3  # the boxes, not only the text, steer the image (ignored boxes: 0)
    assert swapped.metadata[0]["planner"] == "given"
    again = layout_pipe("a red circle to the left of a blue square", seed=3, plans=[moved])
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(swapped.images[0]))
    path = swapped.save(tmp_path / "x.png")
    assert path.is_file()


def test_guide_weights_the_layout_or_the_text_apart():
    from wordpaint.pipelines.text_to_image import guide

    full, text, layout, none = (torch.full((1, 1, 2, 2), v) for v in (3.0, 2.0, 1.0, 0.5))
    assert torch.equal(guide({"full": full, "none": none}, guidance_scale=4.0), none + 4 * (full - none))
    assert torch.equal(guide({"full": full}, guidance_scale=1.0), full)
    # none + g (text - none) + g_l (full - text): 0.5 + 4 * 1.5 + 2 * 1
    d = {"full": full, "text": text, "none": none}
    assert torch.allclose(guide(d, guidance_scale=4.0, layout_guidance_scale=2.0), torch.full_like(full, 8.5))
    assert torch.allclose(guide(d, guidance_scale=4.0, layout_guidance_scale=4.0), guide(d, guidance_scale=4.0))
    assert torch.allclose(guide({"full": full, "text": text}, guidance_scale=1.0, layout_guidance_scale=3.0), text + 3 * (full - text))
    # none + g (layout - none) + g_t (full - layout): 0.5 + 4 * 0.5 + 2 * 2; at g_t = 0 the full pass is not needed
    d = {"full": full, "layout": layout, "none": none}
    assert torch.allclose(guide(d, guidance_scale=4.0, text_guidance_scale=2.0), torch.full_like(full, 6.5))
    assert torch.allclose(guide(d, guidance_scale=4.0, text_guidance_scale=4.0), guide(d, guidance_scale=4.0))
    assert torch.allclose(guide({"layout": layout, "none": none}, guidance_scale=4.0, text_guidance_scale=0.0), none + 4 * (layout - none))


def test_layout_guidance_scale_in_the_pipeline(layout_pipe):
    kw = dict(seed=5, num_inference_steps=2, guidance_scale=3.0)
    arrays = lambda out: np.asarray(out.images[0], dtype=float)
    usual = arrays(layout_pipe("a red circle", **kw))
    same = layout_pipe("a red circle", **kw, layout_guidance_scale=3.0)  # g_l = g: the usual two passes
    assert np.array_equal(arrays(same), usual) and same.metadata[0]["layout_guidance_scale"] == 3.0
    strong = layout_pipe("a red circle", **kw, layout_guidance_scale=8.0)
    assert np.abs(arrays(strong) - usual).mean() > 1.0  # the layout's own scale changes the image
    assert np.array_equal(arrays(layout_pipe("a red circle", **kw, layout_guidance_scale=8.0)), arrays(strong))
    for bad in (-1.0, float("inf"), "high", True):
        with pytest.raises(WordpaintError, match="layout_guidance_scale must be a finite number >= 0"):
            layout_pipe("a red circle", **kw, layout_guidance_scale=bad)


def test_text_guidance_scale_in_the_pipeline(layout_pipe, text_encoder):
    from wordpaint.pipelines.text_to_image import TextToImagePipeline

    kw = dict(seed=5, num_inference_steps=2, guidance_scale=3.0)
    arrays = lambda out: np.asarray(out.images[0], dtype=float)
    plan = [layout_pipe.plan("a red circle")]
    usual = arrays(layout_pipe("a red circle", **kw, plans=plan))
    same = layout_pipe("a red circle", **kw, plans=plan, text_guidance_scale=3.0)  # g_t = g: the usual two passes
    assert np.array_equal(arrays(same), usual) and same.metadata[0]["text_guidance_scale"] == 3.0
    # at g_t = 0 the image comes from the layout alone: the conditioning text no longer matters
    reworded = [plan, [dataclasses.replace(plan[0], prompt="a huge blue star")]]
    alone = [arrays(layout_pipe("a red circle", **kw, plans=p, text_guidance_scale=0.0)) for p in reworded]
    assert np.array_equal(alone[0], alone[1]) and not np.array_equal(alone[0], usual)
    with_text = [arrays(layout_pipe("a red circle", **kw, plans=p)) for p in reworded]
    assert not np.array_equal(with_text[0], with_text[1])
    assert not np.array_equal(arrays(layout_pipe("a red circle", **kw, plans=plan, text_guidance_scale=1.0)), usual)
    with pytest.raises(WordpaintError, match="set at most one"):
        layout_pipe("a red circle", **kw, text_guidance_scale=0.0, layout_guidance_scale=2.0)
    with pytest.raises(WordpaintError, match="text_guidance_scale must be a finite number >= 0"):
        layout_pipe("a red circle", **kw, text_guidance_scale=-1.0)
    plain = TextToImagePipeline(text_encoder=text_encoder, model=build_model(build_config(preset="tiny")))
    with pytest.raises(WordpaintError, match="reads no layout"):
        plain("a red circle", **kw, text_guidance_scale=0.0)


def test_a_saved_layout_pipeline_keeps_its_planner(layout_pipe, tmp_path):
    from wordpaint.pipelines.text_to_image import TextToImagePipeline

    again = TextToImagePipeline.from_pretrained(layout_pipe.save_pretrained(tmp_path / "p"))
    assert again.planner is not None and again.planner.name == "rules"
    out = again("a red circle to the left of a blue square", seed=1)
    assert out.metadata[0]["planner"] == "rules" and len(out.metadata[0]["plan"]["objects"]) == 2
    assert TextToImagePipeline.from_pretrained(tmp_path / "p", planner=None).planner is None


def test_given_plans_are_checked_and_repaired(layout_pipe):
    with pytest.raises(WordpaintError, match="one per prompt"):
        layout_pipe(["a star", "a circle"], plans=[layout_pipe.plan("a star")])
    with pytest.raises(WordpaintError, match="ScenePlan"):
        layout_pipe("a star", plans=[{"objects": []}])
    bad = ScenePlan("two stars", [PlanObject("star", "star", None, None, (0.2, 0.2, 0.5, 0.5)),
                                  PlanObject("star", "star", None, None, (0.3, 0.3, 0.6, 0.6))])
    out = layout_pipe("two stars", plans=[bad], seed=0)
    boxes = [o["box"] for o in out.metadata[0]["plan"]["objects"]]
    assert len(boxes) == 2 and (boxes[0][2] <= boxes[1][0] or boxes[1][2] <= boxes[0][0] or boxes[0][3] <= boxes[1][1] or boxes[1][3] <= boxes[0][1])
    assert any("overlap" in w or "moved" in w or "apart" in w for w in out.warnings)


def test_tiny_layout_recipe_trains_and_round_trips(tmp_path, text_encoder):
    from wordpaint.pipelines.text_to_image import TextToImagePipeline
    from wordpaint.training.train import train

    folder = train("tiny_layout", tmp_path / "run", show_progress=False)
    pipe = TextToImagePipeline.from_pretrained(folder, text_encoder=text_encoder, planner="rules")
    assert pipe.model.config.layout_channels == LAYOUT_CHANNELS
    a = pipe("three stars", seed=0, num_inference_steps=2)
    b = TextToImagePipeline.from_pretrained(folder, text_encoder=text_encoder, planner="rules")("three stars", seed=0, num_inference_steps=2)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    assert len(a.metadata[0]["plan"]["objects"]) == 3


def test_text_drop_keeps_the_layout_and_leaves_other_streams_unchanged():
    plain = ShapesStream(size=32, seed=1, cond_drop_prob=0.2, layout_drop_prob=0.2)
    td = ShapesStream(size=32, seed=1, cond_drop_prob=0.2, layout_drop_prob=0.2, text_drop_prob=0.5)
    drops = [td._drops(i) for i in range(200)]
    base = [plain._drops(i) for i in range(200)]
    # the caption-and-layout and layout-only drops are the plain stream's; only captions are added
    assert [d[1] for d in drops] == [b[1] for b in base]
    assert all(d[0] for d, b in zip(drops, base) if b[0])
    text_only = [i for i, (c, l) in enumerate(drops) if c and not l]
    assert 40 < len(text_only) < 90  # about half of the ~128 examples that keep their layout
    _, captions = td.batch(0, 64)
    lay = td.layouts(0, 64)
    kept = lay.flatten(1).abs().sum(1) > 0
    assert any(c == "" and kept[j] for j, c in enumerate(captions))  # a layout without its caption


def test_regions_for_masks_and_texts():
    from wordpaint.pipelines.text_to_image import regions_for

    plan = ScenePlan("a red circle left of an orange square", [
        PlanObject("red circle", "circle", "red", None, (0.1, 0.3, 0.45, 0.65)),
        PlanObject("orange square", "square", "orange", None, (0.5, 0.3, 0.85, 0.65))], "black", "flat")
    r = regions_for([plan, None], height=32, width=32, margin=0.04)
    assert r.texts == ["a red circle on a black background", "an orange square on a black background"]
    assert r.index.tolist() == [0, 0] and r.weight.shape == (2, 1, 32, 32) and r.keep.shape == (2, 1, 32, 32)
    # a partition of every pixel: the objects' shares and the full prompt's add up to 1
    total = r.keep.clone().index_add_(0, r.index, r.weight)
    assert torch.allclose(total, torch.ones_like(total))
    assert r.weight[0, 0, 15, 8] == 1 and r.keep[0, 0, 15, 8] == 0  # inside the circle's box
    assert r.keep[0, 0, 1, 1] == 1 and r.weight[:, 0, 1, 1].abs().sum() == 0  # far from both
    # the grown boxes touch between the objects (gap 0.05 < 2 x 0.04): they share those pixels
    assert 0 < r.weight[0, 0, 15, 15] < 1 and 0 < r.weight[1, 0, 15, 15] < 1
    assert r.keep[1].eq(1).all()  # an image without a plan keeps its full prompt everywhere
    assert regions_for([None, ScenePlan("", [], None, "flat")], height=8, width=8) is None
    # two red stars share one pass (same text, same layout): one region covering both boxes
    stars = ScenePlan("two red stars", [PlanObject("red star", "star", "red", None, (0.1, 0.1, 0.3, 0.3)),
                                        PlanObject("red star", "star", "red", None, (0.6, 0.6, 0.8, 0.8))], None, "flat")
    r = regions_for([stars], height=20, width=20, margin=0.0)
    assert r.texts == ["a red star"] and r.weight[0, 0, 4, 4] == 1 and r.weight[0, 0, 14, 14] == 1 and r.keep[0, 0, 10, 10] == 1


def test_regional_prompts_in_the_pipeline(layout_pipe, text_encoder):
    from wordpaint.pipelines.text_to_image import TextToImagePipeline

    kw = dict(seed=5, num_inference_steps=2, guidance_scale=3.0)
    arrays = lambda out: np.asarray(out.images[0], dtype=float)
    prompt = "a red circle to the left of a blue square"
    usual = arrays(layout_pipe(prompt, **kw))
    out = layout_pipe(prompt, **kw, regional_prompts=True)
    assert out.metadata[0]["regional_prompts"] is True and not np.array_equal(arrays(out), usual)
    assert np.array_equal(arrays(layout_pipe(prompt, **kw, regional_prompts=True)), arrays(out))
    # batching: the same image alone and beside another prompt with a different number of objects
    both = layout_pipe([prompt, "three green stars"], **kw, regional_prompts=True)
    assert np.abs(np.asarray(both.images[0], dtype=float) - arrays(out)).max() <= 1
    # a one-object plan whose text is the object's phrase: the region pass is the full pass, so
    # the blend gives the usual image back (to rounding: the batch differs)
    plan = [dataclasses.replace(layout_pipe.plan("a red circle"), prompt="a red circle")]
    same = [arrays(layout_pipe("a red circle", **kw, plans=plan, regional_prompts=r)) for r in (False, True)]
    assert np.abs(same[0] - same[1]).max() <= 1
    assert arrays(layout_pipe(prompt, seed=5, num_inference_steps=2, guidance_scale=1.0, regional_prompts=True)).shape == usual.shape
    with pytest.raises(WordpaintError, match="combines with the usual guidance only"):
        layout_pipe(prompt, **kw, regional_prompts=True, text_guidance_scale=0.0)
    with pytest.raises(WordpaintError, match="regional_prompts must be True or False"):
        layout_pipe(prompt, **kw, regional_prompts="yes")
    plain = TextToImagePipeline(text_encoder=text_encoder, model=build_model(build_config(preset="tiny")))
    with pytest.raises(WordpaintError, match="needs a layout model"):
        plain("a red circle", **kw, regional_prompts=True)


def _detail_plan():
    return ScenePlan("a red star, a green circle and a blue square", [
        PlanObject("red star", "star", "red", "small", (0.1, 0.1, 0.28, 0.28)),
        PlanObject("green circle", "circle", "green", "small", (0.32, 0.1, 0.5, 0.28)),
        PlanObject("blue square", "square", "blue", "large", (0.5, 0.5, 0.86, 0.86))], "black", "flat")


def test_detail_crops_enlarge_each_small_object():
    from wordpaint.pipelines.text_to_image import DETAIL_FILL, detail_crops

    crops = detail_crops([None, _detail_plan()], height=56, width=56)
    assert [(c.image, c.obj) for c in crops] == [(1, 0), (1, 1)]  # the large square gets none
    star = crops[0]
    assert star.side == round(0.18 * 56 / DETAIL_FILL) == 28 and (star.x0, star.y0) == (0, 0)  # shifted inside the canvas
    assert star.plan.prompt == "a red star on a black background" and star.plan.background == "black"
    boxes = {o.phrase: o.box for o in star.plan.objects}
    assert set(boxes) == {"red star", "green circle"}  # the square is outside this crop
    assert np.allclose(boxes["red star"], (0.2, 0.2, 0.56, 0.56)) and np.allclose(boxes["green circle"], (0.64, 0.2, 1.0, 0.56))
    # the redrawn crop replaces the star's box and a margin around it, nothing else
    assert star.mask.shape == (28, 28) and star.mask[10, 10] == 1 and star.mask[2, 2] == 0 and star.mask[10, 20] == 0
    circle = crops[1]
    assert circle.x0 + circle.side <= 56 and circle.x0 <= 0.32 * 56 and 0.5 * 56 <= circle.x0 + circle.side
    assert detail_crops([_detail_plan()], height=56, width=56, max_side=0.1) == []
    # a wide box is drawn as the square of its shorter side: that square's size decides
    wide = ScenePlan("a red star", [PlanObject("red star", "star", "red", None, (0.1, 0.1, 0.7, 0.28))], None, "flat")
    (c,) = detail_crops([wide], height=56, width=56)
    assert c.side == 28 and c.plan.prompt == "a red star"


def test_detail_pass_redraws_only_the_small_objects(layout_pipe, text_encoder):
    from wordpaint.pipelines.text_to_image import TextToImagePipeline, detail_crops

    plan = _detail_plan()
    kw = dict(seed=2, num_inference_steps=4, plans=[plan], height=48, width=48)
    arr = lambda out, k=0: np.asarray(out.images[k], dtype=float)
    base = layout_pipe(plan.prompt, **kw)
    out = layout_pipe(plan.prompt, **kw, detail=True)
    assert out.metadata[0]["detail"] is True and out.metadata[0]["detail_strength"] == 0.5
    changed = np.abs(arr(out) - arr(base)).max(axis=2) > 0  # (H, W)
    masks = np.zeros((48, 48))
    for c in detail_crops([plan], height=48, width=48):
        masks[c.y0 : c.y0 + c.side, c.x0 : c.x0 + c.side] += c.mask.numpy()
    assert changed.any() and not changed[masks == 0].any()  # redrawn inside the small objects' masks only
    assert np.array_equal(arr(layout_pipe(plan.prompt, **kw, detail=True)), arr(out))  # same seed, same image
    # batch independence: beside another image (with objects of its own) it is the same image
    other = ScenePlan("a red star", [PlanObject("red star", "star", "red", "small", (0.6, 0.6, 0.78, 0.78))], None, "flat")
    both = layout_pipe([plan.prompt, "a red star"], **{**kw, "plans": [plan, other]}, detail=True)
    assert np.abs(arr(both) - arr(out)).max() <= 1
    assert arr(layout_pipe(plan.prompt, **kw, detail=True, detail_strength=1.0)).shape == (48, 48, 3)
    # a folder's defaults can turn it on (the bundled shapes model does); an explicit False wins
    on = TextToImagePipeline(text_encoder=text_encoder, model=layout_pipe.model, defaults={**layout_pipe.defaults, "detail": True})
    assert np.array_equal(arr(on(plan.prompt, **kw)), arr(out))
    assert np.array_equal(arr(on(plan.prompt, **kw, detail=False)), arr(base))
    with pytest.raises(WordpaintError, match="detail must be True or False"):
        layout_pipe(plan.prompt, **kw, detail=1)
    with pytest.raises(WordpaintError, match=r"detail_strength must be a number in \(0, 1\]"):
        layout_pipe(plan.prompt, **kw, detail=True, detail_strength=2)
    plain = TextToImagePipeline(text_encoder=text_encoder, model=build_model(build_config(preset="tiny")))
    with pytest.raises(WordpaintError, match="this model reads no layout"):
        plain("a red circle", num_inference_steps=2, detail=True)
