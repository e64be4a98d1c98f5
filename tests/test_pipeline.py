import json

import numpy as np
import pytest
import torch

from wordpaint import ModelLoadError, TextToImagePipeline, WordpaintError


def arrays(out):
    return [np.asarray(im) for im in out.images]


def test_output_shape_and_metadata(tiny_pipe):
    out = tiny_pipe(["a red star", "two circles"], num_images_per_prompt=2, seed=5)
    assert len(out.images) == 4 and out.images[0].size == (32, 32) and out.images[0].mode == "RGB"
    assert [m["seed"] for m in out.metadata] == [5, 6, 7, 8]
    assert out.metadata[2]["prompt"] == "two circles" and out.metadata[0]["sampler"] == "dpmpp_2m"


def test_same_seed_same_image_and_batch_independence(tiny_pipe):
    a = arrays(tiny_pipe("a star", num_images_per_prompt=3, seed=1))
    b = arrays(tiny_pipe("a star", num_images_per_prompt=3, seed=1, batch_size=1))
    c = arrays(tiny_pipe("a star", num_images_per_prompt=3, seed=2))
    assert all((x == y).all() for x, y in zip(a, b))
    assert (a[1] == c[0]).all()  # image k uses seed + k
    assert not (a[0] == c[0]).all()


def test_save_load_round_trip_identical_images(tiny_pipe, tiny_dir, text_encoder):
    loaded = TextToImagePipeline.from_pretrained(tiny_dir, text_encoder=text_encoder)
    for k, v in tiny_pipe.model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    for sampler, sched in (("dpmpp_2m", "trailing"), ("dpmpp_2m", "karras"), ("ddim", "karras"), ("euler", "trailing")):
        a = arrays(tiny_pipe("a blue cross above a red circle", seed=3, sampler=sampler, sigma_schedule=sched, num_inference_steps=3))
        b = arrays(loaded("a blue cross above a red circle", seed=3, sampler=sampler, sigma_schedule=sched, num_inference_steps=3))
        assert (a[0] == b[0]).all(), sampler
    index = json.loads((tiny_dir / "model_index.json").read_text())
    assert index["_class_name"] == "TextToImagePipeline" and index["wordpaint_version"]
    assert (tiny_dir / "diffusion" / "model.safetensors").is_file() and (tiny_dir / "text_encoder" / "config.json").is_file()


def test_fp16_save_halves_the_file_and_still_loads(tiny_pipe, tmp_path, text_encoder):
    tiny_pipe.save_pretrained(tmp_path / "h", dtype=torch.float16)
    full = tiny_pipe.save_pretrained(tmp_path / "f")
    s16 = (tmp_path / "h" / "diffusion" / "model.safetensors").stat().st_size
    s32 = (full / "diffusion" / "model.safetensors").stat().st_size
    assert s16 < 0.6 * s32
    TextToImagePipeline.from_pretrained(tmp_path / "h", text_encoder=text_encoder)("a star", seed=0)


def test_int8_weights_round_trip_within_half_a_step_per_channel():
    from wordpaint.io import INT8_SCALE, dequantize_int8, quantize_int8

    torch.manual_seed(0)
    w = torch.randn(6, 3, 3, 3) * torch.tensor([1e-3, 1.0, 5.0, 0.0, 2.0, 0.1]).view(-1, 1, 1, 1)  # rows of very different size, one zero
    state = {"conv.weight": w, "conv.bias": torch.randn(6), "table": torch.randn(4, 5)}
    q = quantize_int8(state, names={"conv.weight", "conv.bias"})
    assert q["conv.weight"].dtype == torch.int8 and q["conv.weight" + INT8_SCALE].shape == (6,)
    assert q["conv.bias"].dtype == torch.float16 and q["table"].dtype == torch.float16  # a vector, and a tensor not named
    back, any_int8 = dequantize_int8(q)
    assert any_int8 and set(back) == set(state) and back["conv.weight"].dtype == torch.float32
    step = w.reshape(6, -1).abs().amax(1) / 127  # each row's own quantisation step
    err = (back["conv.weight"] - w).reshape(6, -1).abs().amax(1)
    assert (err <= step / 2 + 1e-7).all() and (back["conv.weight"][3] == 0).all()
    assert err[0] < 1e-5  # a small row keeps its own precision instead of the tensor's largest row's
    # quantising what it gives back gives the same int8 values again (re-saving an int8 pipeline changes nothing)
    assert torch.equal(quantize_int8(back, names={"conv.weight"})["conv.weight"], q["conv.weight"])
    with pytest.raises(ModelLoadError, match="does not match an int8 tensor"):
        dequantize_int8({"w" + INT8_SCALE: torch.ones(2)}, source="x.safetensors")
    with pytest.raises(ModelLoadError, match="int8 tensor 'w' has no"):
        dequantize_int8({"w": torch.zeros(2, 2, dtype=torch.int8)})


def test_int8_components_quarter_the_file_draw_nearly_the_same_and_stay_int8(tiny_pipe, tmp_path, text_encoder):
    tiny_pipe.save_pretrained(tmp_path / "h", dtype=torch.float16)
    tiny_pipe.save_pretrained(tmp_path / "q", dtype=torch.float16, int8=("diffusion",))
    s16 = (tmp_path / "h" / "diffusion" / "model.safetensors").stat().st_size
    s8 = (tmp_path / "q" / "diffusion" / "model.safetensors").stat().st_size
    assert s8 < 0.8 * s16  # the header (tensor names) is a large share of a tiny model's file; the emoji UNet's is 0.5
    half = TextToImagePipeline.from_pretrained(tmp_path / "h", text_encoder=text_encoder)
    q = TextToImagePipeline.from_pretrained(tmp_path / "q", text_encoder=text_encoder)
    assert q.model.stored_int8 and not half.model.stored_int8
    for k, v in half.model.state_dict().items():  # every weight within half an int8 step of its row
        assert torch.allclose(q.model.state_dict()[k], v, atol=float(v.abs().max()) / 254 + 1e-4), k
    a, b = arrays(half("a red star", seed=2)), arrays(q("a red star", seed=2))
    assert np.abs(a[0].astype(int) - b[0].astype(int)).mean() < 8  # nearly the same picture, not bit for bit
    # replacing another component keeps it int8 (the same bytes), even at float16
    q.save_pretrained(tmp_path / "q2", dtype=torch.float16)
    assert (tmp_path / "q2/diffusion/model.safetensors").read_bytes() == (tmp_path / "q/diffusion/model.safetensors").read_bytes()
    with pytest.raises(WordpaintError, match="unknown int8 component 'unet'"):
        tiny_pipe.save_pretrained(tmp_path / "bad", int8=("unet",))
    with pytest.raises(WordpaintError, match="has no 'expert' component"):
        tiny_pipe.save_pretrained(tmp_path / "bad", int8=("expert",))
    assert not (tmp_path / "bad").exists()


def test_saved_weights_are_byte_identical_from_save_to_save(tiny_pipe, tmp_path):
    """safetensors writes its metadata in a random order (its issue #584); our files must not
    change bytes (and checksums) when the same weights are saved again."""
    import hashlib

    from safetensors import safe_open

    from wordpaint.io import save_safetensors

    meta = {f"key{i}": str(i) for i in range(16)}
    digests = set()
    for i in range(6):
        save_safetensors(tmp_path / f"{i}.safetensors", {"b": torch.ones(3), "a": torch.zeros(2, 2)}, metadata=meta)
        digests.add(hashlib.sha256((tmp_path / f"{i}.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1
    with safe_open(str(tmp_path / "0.safetensors"), "pt") as f:
        assert f.metadata() == meta and torch.equal(f.get_tensor("b"), torch.ones(3))
    a, b = tiny_pipe.save_pretrained(tmp_path / "p1"), tiny_pipe.save_pretrained(tmp_path / "p2")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_guidance_changes_the_image(tiny_pipe):
    a = arrays(tiny_pipe("a star", seed=0, guidance_scale=0.0))[0]
    b = arrays(tiny_pipe("a star", seed=0, guidance_scale=5.0))[0]
    assert not (a == b).all()


def test_guidance_interval_guides_only_inside_it(tiny_pipe):
    kw = dict(seed=0, guidance_scale=5.0, num_inference_steps=3)
    sigmas = tiny_pipe.model.sigmas(3, "trailing")
    full = arrays(tiny_pipe("a star", **kw))[0]
    unguided = arrays(tiny_pipe("a star", **{**kw, "guidance_scale": 1.0}))[0]
    # an interval that holds every noise level is ordinary guidance; one that holds none runs the
    # conditional model alone, exactly what guidance 1 does
    assert (arrays(tiny_pipe("a star", **kw, guidance_interval=(0.0, float("inf"))))[0] == full).all()
    assert (arrays(tiny_pipe("a star", **kw, guidance_interval=(1e6, 2e6)))[0] == unguided).all()
    # guiding only the last, low-noise steps gives a third image, and says so in its metadata
    out = tiny_pipe("a star", **kw, guidance_interval=(0.0, float(sigmas[1]) * 0.99))
    part = arrays(out)[0]
    assert not (part == full).all() and not (part == unguided).all()
    assert out.metadata[0]["guidance_interval"] == [0.0, pytest.approx(float(sigmas[1]) * 0.99)]


def test_negative_prompt_replaces_the_unconditional_text(tiny_pipe):
    kw = dict(seed=0, guidance_scale=5.0, num_inference_steps=2)
    plain = arrays(tiny_pipe(["a star", "a circle"], **kw))
    # the empty negative prompt is the default unconditional text: the same pixels
    assert all((a == b).all() for a, b in zip(plain, arrays(tiny_pipe(["a star", "a circle"], **kw, negative_prompt=""))))
    # one per prompt: only the prompt given a non-empty one changes, and its metadata says so
    out = tiny_pipe(["a star", "a circle"], **kw, negative_prompt=["a red square", ""])
    neg = arrays(out)
    assert not (neg[0] == plain[0]).all() and (neg[1] == plain[1]).all()
    assert [m["negative_prompt"] for m in out.metadata] == ["a red square", ""]
    assert "negative_prompt" not in tiny_pipe("a star", **kw).metadata[0]
    # at guidance 1 the unconditional half never runs
    one = dict(kw, guidance_scale=1.0)
    assert (arrays(tiny_pipe("a star", **one, negative_prompt="a red square"))[0] == arrays(tiny_pipe("a star", **one))[0]).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(prompt=""), "prompt is empty"),
        (dict(prompt="   "), "prompt is empty"),
        (dict(prompt=None), "prompt must be"),
        (dict(prompt=42), "prompt must be"),
        (dict(prompt=[]), "prompt must be"),
        (dict(prompt=["ok", 3]), "prompt must be a string"),
        (dict(prompt="a red circle " * 40), "at most 77"),
        (dict(num_inference_steps=0), "num_inference_steps must be from 1"),
        (dict(num_inference_steps=2.5), "num_inference_steps must be an integer"),
        (dict(guidance_scale=-1.0), "guidance_scale must be a finite number >= 0"),
        (dict(guidance_scale=float("nan")), "guidance_scale"),
        (dict(sampler="plms"), "unknown sampler 'plms'; expected one of: dpmpp_2m, ddim, euler, ddpm, dpmpp_2m_sde"),
        (dict(sigma_schedule="cosine"), "unknown sigma_schedule 'cosine'; expected one of: karras, trailing"),
        (dict(height=31), "height must be a multiple of 2"),
        (dict(width=33), "width must be a multiple of 2"),
        (dict(num_images_per_prompt=0), "num_images_per_prompt"),
        (dict(seed=-1), "seed must be from 0"),
        (dict(guidance_interval=(2.0, 1.0)), "guidance_interval must be None or a pair"),
        (dict(guidance_interval=(0.5,)), "guidance_interval must be None or a pair"),
        (dict(guidance_interval="low"), "guidance_interval must be None or a pair"),
        (dict(negative_prompt=["a", "b"]), "negative_prompt must be a string or a list of 1 strings"),
        (dict(negative_prompt=3), "negative_prompt must be a string"),
        (dict(negative_prompt="a red circle " * 40), "negative_prompt: prompt is .* at most 77"),
    ],
)
def test_bad_input_is_a_clear_value_error(tiny_pipe, kwargs, match):
    kw = {"prompt": "a star", **kwargs}
    with pytest.raises(WordpaintError, match=match) as e:
        tiny_pipe(kw.pop("prompt"), **kw)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


def test_missing_and_corrupt_folders(tmp_path, tiny_dir, text_encoder):
    import shutil

    with pytest.raises(ModelLoadError, match="model folder not found"):
        TextToImagePipeline.from_pretrained(tmp_path / "nope", text_encoder=text_encoder)
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir, bad)
    (bad / "model_index.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="corrupt model index"):
        TextToImagePipeline.from_pretrained(bad, text_encoder=text_encoder)
    shutil.copy(tiny_dir / "model_index.json", bad / "model_index.json")
    (bad / "diffusion" / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError, match="corrupt weights file"):
        TextToImagePipeline.from_pretrained(bad, text_encoder=text_encoder)
    (bad / "diffusion" / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="missing weights file"):
        TextToImagePipeline.from_pretrained(bad, text_encoder=text_encoder)


def test_weights_with_wrong_shapes(tmp_path, tiny_dir, text_encoder):
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "shapes"
    shutil.copytree(tiny_dir, bad)
    st = load_file(bad / "diffusion" / "model.safetensors")
    key = "unet.conv_in.weight"
    st[key] = torch.zeros(st[key].shape[0] + 1, *st[key].shape[1:])
    save_file(st, bad / "diffusion" / "model.safetensors")
    with pytest.raises(ModelLoadError, match=f"{key} has shape"):
        TextToImagePipeline.from_pretrained(bad, text_encoder=text_encoder)
    cfg = json.loads((bad / "diffusion" / "config.json").read_text())
    cfg["block_out_channels"] = [8, 8]
    cfg["norm_num_groups"] = 4
    (bad / "diffusion" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="do not match the model config"):
        TextToImagePipeline.from_pretrained(bad, text_encoder=text_encoder)
    cfg["family"] = "gan"
    (bad / "diffusion" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="unknown model family 'gan'"):
        TextToImagePipeline.from_pretrained(bad, text_encoder=text_encoder)


def test_pipeline_plan_and_planner_conditioning(tiny_dir):
    from wordpaint import TextToImagePipeline

    pipe = TextToImagePipeline.from_pretrained(tiny_dir, planner="rules")
    plan = pipe.plan("a red circle to the left of a blue square")
    assert [o.shape for o in plan.objects] == ["circle", "square"] and plan.objects[0].center[0] < plan.objects[1].center[0]
    out = pipe("un cercle rouge", num_inference_steps=1)
    assert out.warnings and "no object" in out.warnings[0]
    assert out.metadata[0]["conditioning_prompt"] == "un cercle rouge"  # nothing planned: the prompt itself


def test_sample_sheet_writes_each_caption_under_its_picture(tmp_path, monkeypatch):
    from PIL import Image, ImageFont

    from wordpaint.eval.report import sample_sheet
    from wordpaint.images import label_font

    pics = [(Image.new("RGB", (64, 64), c), f"picture {k} in noto style") for k, c in enumerate(["red", "green", "blue"])]
    sample_sheet(pics, tmp_path / "s.png", cols=2, scale=2)
    sheet = np.asarray(Image.open(tmp_path / "s.png").convert("L"))
    cw, ch = 64 * 2 + 40, 64 * 2 + 34
    assert sheet.shape == (2 * ch, 2 * cw)
    for k in range(3):  # dark text in the caption strip of each cell, none in the empty fourth cell
        x, y = (k % 2) * cw, (k // 2) * ch
        assert (sheet[y + 128 + 2:y + ch, x:x + cw] < 100).sum() > 20
    assert (sheet[ch:, cw:] < 100).sum() == 0
    # no DejaVu on the machine: PIL's own font, still a usable font
    label_font.cache_clear()
    real_truetype = ImageFont.truetype

    def no_dejavu(font, *a, **k):
        if font == "DejaVuSans.ttf":
            raise OSError("cannot open resource")
        return real_truetype(font, *a, **k)

    monkeypatch.setattr(ImageFont, "truetype", no_dejavu)
    try:
        assert hasattr(label_font(10), "getbbox")
    finally:
        label_font.cache_clear()


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    # mkstemp/mkdtemp create private files (0600/0700); written results must be readable like
    # any file the user makes (0666/0777 less the umask), or a shared model folder or a served
    # image is unreadable by others
    import os

    from wordpaint.io import atomic_dir, write_json

    mask = os.umask(0o022)
    os.umask(mask)
    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_dir(tmp_path / "folder") as tmp:
        write_json(tmp / "config.json", {})
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~mask
    assert (tmp_path / "folder" / "config.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_strength_sigmas_runs_the_last_steps():
    from wordpaint.pipelines.text_to_image import strength_sigmas

    sigmas = torch.tensor([80.0, 20.0, 5.0, 1.0, 0.25, 0.0])  # 5 steps
    assert strength_sigmas(sigmas, 1.0).tolist() == sigmas.tolist()
    assert strength_sigmas(sigmas, 0.6).tolist() == [5.0, 1.0, 0.25, 0.0]  # int(5 x 0.6) = 3 steps
    with pytest.raises(WordpaintError, match="runs no step"):
        strength_sigmas(sigmas, 0.1)


def test_img2img_starts_from_the_picture(tiny_pipe):
    from PIL import Image

    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    target = np.asarray(picture, dtype=float)
    err = lambda out: np.abs(np.asarray(out.images[0], dtype=float) - target).mean()
    kw = dict(seed=3, num_inference_steps=10)
    low = tiny_pipe("a red circle", image=picture, strength=0.1, **kw)  # one step from the lowest noise level
    full = tiny_pipe("a red circle", image=picture, strength=1.0, **kw)
    assert err(low) < 25 < 60 < err(full)  # an untrained model keeps a lightly noised picture, not a fully noised one
    assert low.metadata[0]["strength"] == 0.1 and low.metadata[0]["init_image"] is True
    again = tiny_pipe("a red circle", image=picture, strength=0.1, **kw)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(low.images[0]))
    # the canvas defaults to the picture's size; a picture of another size is resized to a given one
    big = picture.resize((48, 48))
    assert tiny_pipe("a red circle", image=big, strength=0.5, **kw).images[0].size == (48, 48)
    assert tiny_pipe("a red circle", image=big, strength=0.5, height=32, width=32, **kw).images[0].size == (32, 32)
    two = tiny_pipe(["a red circle", "a blue square"], image=[picture, picture.transpose(Image.FLIP_LEFT_RIGHT)], strength=0.1, **kw)
    assert np.abs(np.asarray(two.images[0], dtype=float) - np.asarray(low.images[0], dtype=float)).max() <= 1
    for kwargs, match in [(dict(image="x.png"), "image 0 must be a PIL image"),
                          (dict(image=[picture] * 3), r"one per prompt \(1\), got 3"),
                          (dict(image=picture, strength=0.0), r"strength must be a number in \(0, 1\]"),
                          (dict(image=picture, strength=1.5), r"strength must be a number in \(0, 1\]"),
                          (dict(image=picture, strength=0.05), "runs no step")]:
        with pytest.raises(WordpaintError, match=match):
            tiny_pipe("a red circle", **kw, **kwargs)


def _weak_copy(pipe, seed: int):
    """A model of the same family and inputs as ``pipe.model`` with other (random) weights."""
    from wordpaint.models.registry import build_model

    torch.manual_seed(seed)
    return build_model(pipe.model.config)


def test_autoguidance_steps_away_from_the_weaker_model(tiny_pipe, tmp_path, text_encoder):
    import copy

    plain = arrays(tiny_pipe("a star", seed=0, num_inference_steps=3))[0]
    # a weak model identical to the model gives D - D_weak = 0: autoguidance changes nothing
    same = tiny_pipe.with_component("autoguide", copy.deepcopy(tiny_pipe.model))
    assert (arrays(same("a star", seed=0, num_inference_steps=3, autoguidance_scale=2.0))[0] == plain).all()
    pipe = tiny_pipe.with_component("autoguide", _weak_copy(tiny_pipe, 3))
    assert (arrays(pipe("a star", seed=0, num_inference_steps=3))[0] == plain).all()  # default scale 0: off
    out = pipe("a star", seed=0, num_inference_steps=3, autoguidance_scale=2.0)
    assert not (arrays(out)[0] == plain).all() and out.metadata[0]["autoguidance_scale"] == 2.0
    # the folder keeps the component and its default
    pipe.defaults["autoguidance_scale"] = 2.0
    pipe.save_pretrained(tmp_path / "ag")
    assert json.loads((tmp_path / "ag" / "model_index.json").read_text())["autoguide"] == "autoguide"
    loaded = TextToImagePipeline.from_pretrained(tmp_path / "ag", text_encoder=text_encoder)
    assert (arrays(loaded("a star", seed=0, num_inference_steps=3))[0] == arrays(out)[0]).all()


def test_expert_denoises_the_steps_at_or_below_its_sigma(tiny_pipe, tmp_path, text_encoder):
    expert = _weak_copy(tiny_pipe, 5)
    pipe = tiny_pipe.with_component("expert", expert)
    plain = arrays(tiny_pipe("a star", seed=0, num_inference_steps=3))[0]
    assert (arrays(pipe("a star", seed=0, num_inference_steps=3))[0] == plain).all()  # default None: the model alone
    sigmas = tiny_pipe.model.sigmas(3, tiny_pipe.defaults["sigma_schedule"])  # (4,): three evaluated levels, then 0
    # below every evaluated level: the model alone; above every one: the expert alone, as if it were the model
    assert (arrays(pipe("a star", seed=0, num_inference_steps=3, expert_sigma=float(sigmas[2]) / 2))[0] == plain).all()
    as_model = arrays(tiny_pipe.with_component("diffusion", expert)("a star", seed=0, num_inference_steps=3))[0]
    every = arrays(pipe("a star", seed=0, num_inference_steps=3, expert_sigma=float(sigmas[0]) * 2))[0]
    assert (every == as_model).all() and not (every == plain).all()
    # at the middle level: the model's first step, the expert's last two: neither model's picture
    out = pipe("a star", seed=0, num_inference_steps=3, expert_sigma=float(sigmas[1]))
    mixed = arrays(out)[0]
    assert not (mixed == plain).all() and not (mixed == as_model).all()
    assert out.metadata[0]["expert_sigma"] == float(sigmas[1])
    # the folder keeps the component and its default
    pipe.defaults["expert_sigma"] = float(sigmas[1])
    pipe.save_pretrained(tmp_path / "ex")
    assert json.loads((tmp_path / "ex" / "model_index.json").read_text())["expert"] == "expert"
    loaded = TextToImagePipeline.from_pretrained(tmp_path / "ex", text_encoder=text_encoder)
    assert (arrays(loaded("a star", seed=0, num_inference_steps=3))[0] == mixed).all()
    # from a pipeline folder: its own expert where it has one (not its model), else its model
    from wordpaint.pipelines.text_to_image import component_folder

    assert component_folder(tmp_path / "ex", "expert") == tmp_path / "ex" / "expert"
    tiny_pipe.save_pretrained(tmp_path / "run")
    assert component_folder(tmp_path / "run", "expert") == tmp_path / "run" / "diffusion"
    assert (arrays(loaded("a star", seed=0, num_inference_steps=3, expert_sigma=None))[0] == plain).all()


def test_refine_pass_is_img2img_of_the_finished_picture(tiny_pipe):
    import copy

    from PIL import Image

    from wordpaint.pipelines.text_to_image import REFINE_SEED_OFFSET

    kw = dict(seed=3, num_inference_steps=4)
    plain = arrays(tiny_pipe("a star", **kw))[0].astype(float)
    out = tiny_pipe("a star", refine_strength=0.5, **kw)
    refined = arrays(out)[0].astype(float)
    assert out.metadata[0]["refine_strength"] == 0.5 and "refine_strength" not in tiny_pipe("a star", **kw).metadata[0]
    # the same as img2img of the saved picture at that strength with the refine pass's seed (up to the
    # picture's rounding to 8 bits in between), and not the picture itself
    by_hand = arrays(tiny_pipe("a star", image=Image.fromarray(plain.astype(np.uint8)), strength=0.5, seed=3 + REFINE_SEED_OFFSET,
                               num_inference_steps=4))[0].astype(float)
    assert np.abs(refined - by_hand).mean() < 0.2 * np.abs(refined - plain).mean()
    # with an expert, the expert draws every refine step: a copy of the model changes nothing, another model does
    same = tiny_pipe.with_component("expert", copy.deepcopy(tiny_pipe.model))
    assert (arrays(same("a star", refine_strength=0.5, **kw))[0] == refined).all()
    other = tiny_pipe.with_component("expert", _weak_copy(tiny_pipe, 5))
    assert not (arrays(other("a star", refine_strength=0.5, **kw))[0] == refined).all()
    assert (arrays(other("a star", **kw))[0] == plain).all()  # no refine pass: the expert is not used
    for bad, match in [(0.0, "refine_strength must be a number in"), (1.5, "refine_strength must be a number in"),
                       (True, "refine_strength must be a number in"), (0.1, "refine_strength 0.1 runs no step of 4")]:
        with pytest.raises(WordpaintError, match=match):
            tiny_pipe("a star", refine_strength=bad, **kw)


def test_expert_errors(tiny_pipe):
    from wordpaint.models.registry import build_config, build_model

    with pytest.raises(WordpaintError, match="needs a pipeline with an expert"):
        tiny_pipe("a star", expert_sigma=0.5)
    pipe = tiny_pipe.with_component("expert", _weak_copy(tiny_pipe, 3))
    for bad in (-1.0, float("nan"), True, "0.5"):
        with pytest.raises(WordpaintError, match="expert_sigma must be None or a finite noise level"):
            pipe("a star", expert_sigma=bad)
    other = build_model(build_config(preset="tiny", cross_attention_dim=32))
    with pytest.raises(ModelLoadError, match="expert model must read the diffusion model's inputs; they differ in cross_attention_dim"):
        tiny_pipe.with_component("expert", other)


def test_autoguidance_errors(tiny_pipe):
    from wordpaint.models.registry import build_config, build_model

    with pytest.raises(WordpaintError, match="needs a pipeline with an autoguide"):
        tiny_pipe("a star", autoguidance_scale=1.0)
    pipe = tiny_pipe.with_component("autoguide", _weak_copy(tiny_pipe, 3))
    with pytest.raises(WordpaintError, match="autoguidance_scale must be"):
        pipe("a star", autoguidance_scale=-1.0)
    other = build_model(build_config(preset="tiny", cross_attention_dim=32))
    with pytest.raises(ModelLoadError, match="cross_attention_dim"):
        tiny_pipe.with_component("autoguide", other)
