"""Reference-image conditioning (issue 4): the image-folder stream pairs each example with
another style of its concept, the model config checks the option, the tiny recipe trains, and
the pipeline and CLI take a reference picture (tiny configs)."""

import json

import pytest
import torch
from PIL import Image

from wordpaint import TextToImagePipeline
from wordpaint.cli.main import main
from wordpaint.data.imagefolder import ImageFolderStream, reference_candidates
from wordpaint.errors import WordpaintError
from wordpaint.models.registry import build_config
from wordpaint.training.train import train


def _with_concepts(folder):
    """The session's tiny image folder with a concept per row: rows 2k and 2k + 1 (noto and
    twemoji) are one concept, so every concept has two styles."""
    meta = folder / "metadata.jsonl"
    rows = [json.loads(line) for line in meta.read_text().splitlines()]
    for i, r in enumerate(rows):
        r["concept"] = f"c{i // 2}"
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def runs(latent_runs, tmp_path_factory):
    """(image folder with concepts, tiny autoencoder, tiny reference pipeline)."""
    import shutil

    src, ae, _ = latent_runs
    root = tmp_path_factory.mktemp("reference")
    folder = _with_concepts(shutil.copytree(src, root / "folder"))
    ref = train("tiny_reference", root / "run", data=folder, autoencoder=ae, show_progress=False)
    return folder, ae, ref


def test_candidates_are_the_same_concept_in_other_styles():
    rows = [{"concept": "fox", "style": "noto"}, {"concept": "fox", "style": "twemoji"}, {"concept": "fox", "style": "noto"},
            {"concept": "cat", "style": "noto"}, {"text": "no concept"}]
    assert reference_candidates(rows) == [[1], [0, 2], [1], [], []]


def test_stream_references_follow_the_examples(runs):
    folder, _, _ = runs
    plain = ImageFolderStream(folder, size=32, seed=3, cond_drop_prob=0.3, show_progress=False)
    refs = ImageFolderStream(folder, size=32, seed=3, cond_drop_prob=0.3, references=True, reference_drop_prob=0.2, show_progress=False)
    with pytest.raises(WordpaintError, match="without references=True"):
        plain.layouts(0, 4)
    by_file = {r["file_name"]: k for k, r in enumerate(refs.rows)}
    kept = 0
    for step in range(6):
        x, caps = refs.batch(step, 8)
        x0, caps0 = plain.batch(step, 8)
        assert torch.equal(x, x0) and caps == caps0  # references leave the examples as they were
        lay = refs.layouts(step, 8)
        assert torch.equal(lay, refs.layouts(step, 8))  # a pure function of the step
        for k in range(8):
            if not caps[k]:
                assert not lay[k].any()  # no caption, no reference (guidance's unconditional pass)
                continue
            if not lay[k].any():
                continue  # dropped with reference_drop_prob
            kept += 1
            j = next(i for i in range(len(refs.data)) if torch.equal(refs.data[i], x[k]))
            m = next(i for i in range(len(refs.data)) if torch.equal(refs.data[i], lay[k]))
            assert refs.rows[m]["concept"] == refs.rows[j]["concept"] and refs.rows[m]["style"] != refs.rows[j]["style"]
    assert kept > 10 and by_file


def test_reference_style_is_the_next_other_style():
    from wordpaint.data.emoji import reference_style

    three = {"noto", "twemoji", "openmoji"}
    assert [reference_style(three, s) for s in ("noto", "twemoji", "openmoji")] == ["twemoji", "openmoji", "noto"]
    assert reference_style({"noto", "openmoji"}, "noto") == "openmoji" and reference_style({"twemoji"}, "twemoji") is None
    assert reference_style({"noto"}, "fluent") == "noto"  # a style outside the order still gets one


def test_emoji_suite_shows_other_styles(runs, tmp_path):
    from test_latent import _suite_folder
    from wordpaint.eval.report import write_suite_report
    from wordpaint.models.clip import ClipConfig, ClipModel, WordpaintClip

    _, _, ref = runs
    root = _suite_folder(tmp_path / "emoji", styles=("noto", "twemoji"))  # concepts 0 and 1: one cell held out
    torch.manual_seed(0)
    clip = WordpaintClip(ClipModel(ClipConfig(hidden_dim=32, embed_dim=16, dropout=0.0)))
    pipe = TextToImagePipeline.from_pretrained(ref)
    kw = dict(model_name="tiny", data=root, clip=clip, samples_per_cell=1, seed=0, steps=2, guidance=2.0, limit_concepts=4,
              show_progress=False)
    res = json.loads(write_suite_report(pipe, "emoji", tmp_path / "r", reference="other-style", **kw)["json"].read_text())
    s = res["settings"]
    # concepts 0 and 1 lost a style to the held-out split: their seen cell has no other style to show
    assert s["reference"] == "other-style" and s["seen_cells_without_reference"] == 2 and s["heldout_cells_without_reference"] == 0
    plain = json.loads(write_suite_report(pipe, "emoji", tmp_path / "p", **kw)["json"].read_text())
    assert "reference" not in plain["settings"]
    assert plain["figures"]["heldout_cells"]["FID (EfficientNet-Lite0)"] != res["figures"]["heldout_cells"]["FID (EfficientNet-Lite0)"]
    with pytest.raises(WordpaintError, match="unknown reference"):
        write_suite_report(pipe, "emoji", tmp_path / "x", reference="same-style", **kw)


def test_config_checks_the_reference_option():
    with pytest.raises(ValueError, match="reference_image needs a layout model"):
        build_config(family="diffusion", preset="tiny_latent", reference_image=True)
    with pytest.raises(ValueError, match="layout_channels == in_channels"):
        build_config(family="diffusion", preset="tiny_latent", reference_image=True, layout_channels=13)
    with pytest.raises(ValueError, match="reference_image must be true or false"):
        build_config(family="diffusion", preset="tiny_latent", reference_image="yes", layout_channels=4)
    with pytest.raises(ValueError, match="exclude each other"):
        build_config(family="diffusion", preset="tiny_latent", reference_image=True, layout_channels=4, layout_silhouettes=True)


def test_pipeline_redraws_a_reference_and_records_it(runs, latent_runs):
    folder, _, ref = runs
    pipe = TextToImagePipeline.from_pretrained(ref)
    assert pipe.model.config.reference_image and pipe.planner is None
    picture = Image.open(folder / "images" / "1.png").convert("RGB")
    kw = dict(seed=2, num_inference_steps=2, guidance_scale=2.0)
    plain = pipe("a red circle", **kw)
    a = pipe("a red circle", reference=picture, **kw)
    assert a.metadata[0]["reference"] is True and "reference" not in plain.metadata[0]
    assert a.images[0].tobytes() == pipe("a red circle", reference=picture, **kw).images[0].tobytes()
    # the reference is read: a trained model (non-zero reference weights) draws differently with it
    assert a.images[0].tobytes() != plain.images[0].tobytes()
    # one per prompt, resized to the canvas
    two = pipe(["a red circle", "a blue square"], reference=[picture, picture.resize((20, 20))], **kw)
    assert len(two.images) == 2 and two.images[0].tobytes() == a.images[0].tobytes()
    # None: no reference for that prompt, as the model saw in training (zeros)
    mixed = pipe(["a red circle", "a red circle"], reference=[picture, None], **kw)
    both_plain = pipe(["a red circle", "a red circle"], **kw)
    assert mixed.images[0].tobytes() == a.images[0].tobytes() and mixed.images[1].tobytes() == both_plain.images[1].tobytes()
    assert mixed.metadata[0]["reference"] is True and "reference" not in mixed.metadata[1]
    with pytest.raises(WordpaintError, match=r"reference must be one picture or one per prompt \(2\), got 3"):
        pipe(["a", "b"], reference=[picture] * 3, **kw)
    with pytest.raises(WordpaintError, match="reference 0 must be a PIL image or None, got str"):
        pipe("a", reference="fox.png", **kw)
    for option in ("regional_prompts", "detail"):
        with pytest.raises(WordpaintError, match="this model's layout input is a reference picture"):
            pipe("a", **{option: True}, **kw)
    # a model trained without references says so instead of failing inside torch
    with pytest.raises(WordpaintError, match="reference needs a model trained with reference pictures"):
        TextToImagePipeline.from_pretrained(latent_runs[2])("a", reference=picture, **kw)


def test_generate_cli_takes_a_reference(runs, tmp_path, capsys):
    folder, _, ref = runs
    out = tmp_path / "fox.png"
    assert main(["generate", "fox in twemoji style", "--model", str(ref), "--reference", str(folder / "images" / "1.png"),
                 "--steps", "2", "-o", str(out)]) == 0
    with Image.open(out) as im:
        assert json.loads(im.text["wordpaint"])["reference"] is True
    assert main(["generate", "fox", "--model", str(ref), "--reference", str(tmp_path / "missing.png"), "-o", str(out)]) == 2
    assert "--reference: no such file" in capsys.readouterr().err
    assert main(["eval", "report", "--suite", "shapes", "--reference", "other-style"]) == 2
    assert "--reference is an option of the emoji suite" in capsys.readouterr().err
    assert main(["eval", "report", "--suite", "emoji", "--model", str(ref), "--reference", "same-style"]) == 2
    assert "unknown --reference 'same-style'" in capsys.readouterr().err


def test_image_folder_refuses_a_planned_layout_model(runs, tmp_path):
    folder, ae, _ = runs
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"extends": "tiny_latent", "model": {"overrides": {"layout_channels": 4}}}))
    with pytest.raises(WordpaintError, match="an image folder has no planned layouts"):
        train(str(recipe), tmp_path / "run", data=folder, autoencoder=ae, show_progress=False)
