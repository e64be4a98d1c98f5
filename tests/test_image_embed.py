"""Image-embedding conditioning (unCLIP-style): the diffusion model's image_embed_dim, the
embedding prior that predicts the vector from text, and the pipeline that joins them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from wordpaint.errors import ModelLoadError, WordpaintError
from wordpaint.models.diffusion import DiffusionConfig, DiffusionModel
from wordpaint.models.embed_prior import EmbedPriorConfig, EmbedPriorModel
from wordpaint.models.registry import build_config
from wordpaint.training.train import StepBatches, train, widen_class_embedding


def _pair(dim: int = 12):
    """(pooled-text model, the same with an image-embedding input), tiny, random weights."""
    torch.manual_seed(0)
    base = DiffusionModel(build_config(preset="tiny_latent", pooled_text=True)).eval()
    wide = DiffusionModel(build_config(preset="tiny_latent", pooled_text=True, image_embed_dim=dim)).eval()
    return base, wide


def _inputs(b: int = 3, dim: int = 12):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 4, 16, 16, generator=g)
    t = torch.tensor([10.0, 500.0, 990.0])[:b]
    states = torch.randn(b, 5, 384, generator=g)
    mask = torch.ones(b, 5, dtype=torch.bool)
    return x, t, states, mask, torch.randn(b, dim, generator=g)


@pytest.mark.parametrize("bad, match", [
    ({"image_embed_dim": 8}, "needs pooled_text"),
    ({"pooled_text": True, "image_embed_dim": -1}, "image_embed_dim must be an integer"),
    ({"pooled_text": True, "image_embed_dim": True}, "image_embed_dim must be an integer"),
    ({"pooled_text": True, "image_embed_dim": 8, "image_embed_drop_prob": 1.5}, r"image_embed_drop_prob must be in \[0, 1\]"),
])
def test_config_rejects_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        DiffusionConfig.from_dict(bad)


def test_a_widened_model_starts_from_the_old_outputs_and_then_reads_the_vector():
    base, wide = _pair()
    wide.load_state_dict(widen_class_embedding(base.state_dict(), wide))
    x, t, states, mask, emb = _inputs()
    with torch.no_grad():
        old = base.net(x, t, states, mask)
        # the new inputs have zero weights: any vector, or none, gives the old model's output
        assert torch.allclose(wide.net(x, t, states, mask, None, emb), old, atol=1e-6)
        assert torch.allclose(wide.net(x, t, states, mask), old, atol=1e-6)
        w = wide.unet.class_embedding.linear_1.weight
        w[:, 384:] = torch.randn_like(w[:, 384:])
        with_vec = wide.net(x, t, states, mask, None, emb)
        # zeros stay "no vector"; a vector now changes the output, and only its direction counts
        assert torch.allclose(wide.net(x, t, states, mask, None, torch.zeros_like(emb)), old, atol=1e-6)
        assert not torch.allclose(with_vec, old, atol=1e-3)
        assert torch.allclose(wide.net(x, t, states, mask, None, 7.0 * emb), with_vec, atol=1e-5)


def test_shape_errors_are_clear():
    base, wide = _pair()
    x, t, states, mask, emb = _inputs()
    with pytest.raises(ValueError, match=r"image_embed has shape \(3, 5\), this model reads \(3, 12\)"):
        wide.net(x, t, states, mask, None, emb[:, :5])
    with pytest.raises(ValueError, match="reads no image embedding"):
        base.net(x, t, states, mask, None, emb)


def test_batches_drop_the_vector_with_the_caption_and_at_the_configured_rate(latent_runs):
    from wordpaint.data.imagefolder import ImageFolderStream

    stream = ImageFolderStream(latent_runs[0], size=32, seed=3, cond_drop_prob=0.5, show_progress=False)
    vectors = torch.arange(1, len(stream) + 1, dtype=torch.float32).unsqueeze(1).repeat(1, 4)  # row r -> r + 1

    def batches(drop: float) -> StepBatches:
        task = SimpleNamespace(stream=stream, rank=0, world=1, seed=3, image_embeds=vectors,
                               config=SimpleNamespace(image_embed_drop_prob=drop))
        return StepBatches(task, 8)

    kept = 0
    for step in range(6):
        _, captions = stream.batch(step, 8)
        rows = stream.batch_rows(step, 8)
        emb = batches(0.0)._image_embed(step, captions, {"rank": 0, "world_size": 1})
        for r, c, e in zip(rows, captions, emb):
            assert torch.equal(e, torch.zeros(4) if c == "" else vectors[r])  # dropped captions lose it too
        kept += sum(c != "" for c in captions)
        # a pure function of the step, and drop probability 1 keeps none
        half = batches(0.5)._image_embed(step, captions, {"rank": 0, "world_size": 1})
        assert torch.equal(half, batches(0.5)._image_embed(step, captions, {"rank": 0, "world_size": 1}))
        assert not batches(1.0)._image_embed(step, captions, {"rank": 0, "world_size": 1}).any()
    assert 0 < kept < 48


def test_embed_prior_config_and_loss():
    for bad in ({"hidden_dim": 0}, {"embed_dim": 2.5}, {"dropout": 1.0}, {"num_layers": True}):
        with pytest.raises(ValueError, match="embed_prior"):
            EmbedPriorConfig.from_dict(bad)
    prior = EmbedPriorModel(EmbedPriorConfig(hidden_dim=8, num_layers=1, embed_dim=6))
    out = prior.embed(torch.randn(5, 384))
    assert out.shape == (5, 6) and torch.allclose(out.norm(dim=-1), torch.ones(5), atol=1e-5)
    with torch.no_grad():
        loss = prior({"text_features": torch.randn(5, 384), "image_embed": torch.randn(5, 6)})
    assert 0 <= loss.item() <= 2
    with pytest.raises(ValueError, match=r"the prior predicts \(B, 6\)"):
        prior({"text_features": torch.randn(5, 384), "image_embed": torch.randn(5, 7)})
    with pytest.raises(ValueError, match=r"reads \(B, 384\) pooled text"):
        prior.embed(torch.randn(5, 100))


def test_tiny_recipes_train_and_the_pipeline_round_trips_with_the_prior(latent_runs, tmp_path, capsys):
    from wordpaint.pipelines.text_to_image import TextToImagePipeline, load_model

    folder, ae, ld = latent_runs
    run = train("tiny_embed", tmp_path / "emb", data=folder, autoencoder=ae, init_from=ld, show_progress=False)
    prior_run = train("tiny_embed_prior", tmp_path / "prior", data=folder, show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "prior" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval"] for r in rows if "eval" in r]
    assert evals and {"train_cos", "train_recall1"} <= set(evals[-1])

    pipe = TextToImagePipeline.from_pretrained(run).with_component("embed_prior", load_model(prior_run))
    pipe.save_pretrained(tmp_path / "both")
    pipe = TextToImagePipeline.from_pretrained(tmp_path / "both")
    assert isinstance(pipe.embed_prior, EmbedPriorModel)
    # make the vector matter, whatever four training steps did
    w = pipe.model.unet.class_embedding.linear_1.weight
    w.data[:, 384:] = torch.randn(w.shape[0], w.shape[1] - 384, generator=torch.Generator().manual_seed(0))
    kw = dict(num_inference_steps=2, seed=0)
    with_prior = pipe(["fox in noto style", "apple"], **kw)
    assert with_prior.metadata[0]["image_embed"] == "prior"
    again = pipe(["fox in noto style", "apple"], **kw)
    assert [im.tobytes() for im in again.images] == [im.tobytes() for im in with_prior.images]
    text_only = pipe(["fox in noto style", "apple"], image_embed=None, **kw)
    assert "image_embed" not in text_only.metadata[0]
    assert text_only.images[0].tobytes() != with_prior.images[0].tobytes()
    given = pipe(["fox in noto style", "apple"], image_embed=torch.rand(1280), **kw)
    assert given.metadata[1]["image_embed"] == "given"
    with pytest.raises(WordpaintError, match=r"image_embed must be a \(1280,\) tensor"):
        pipe("apple", image_embed=torch.rand(3, 1280), **kw)
    with pytest.raises(WordpaintError, match="NaN"):
        pipe("apple", image_embed=torch.full((1280,), float("nan")), **kw)
    # a model without the input refuses a vector and the prior
    plain = TextToImagePipeline.from_pretrained(ld)
    with pytest.raises(WordpaintError, match="reads none"):
        plain("apple", image_embed=torch.rand(1280), **kw)
    with pytest.raises(ModelLoadError, match="reads 0-d ones"):
        plain.with_component("embed_prior", pipe.embed_prior)

    # the command line: a picture's own vector (variations), none, a missing file
    from PIL import Image

    from wordpaint.cli.main import main

    out = tmp_path / "fox.png"
    for option, source in ((str(folder / "images" / "1.png"), "given"), ("none", None), ("prior", "prior")):
        assert main(["generate", "fox in noto style", "--model", str(tmp_path / "both"), "--image-embed", option, "--steps", "2",
                     "-o", str(out)]) == 0
        with Image.open(out) as im:
            assert json.loads(im.text["wordpaint"]).get("image_embed") == source
    assert main(["generate", "fox", "--model", str(tmp_path / "both"), "--image-embed", str(tmp_path / "no.png"), "-o", str(out)]) == 2
    assert "--image-embed: no such file" in capsys.readouterr().err

    # the emoji suite draws with the prior's vector or from the text alone, and says which
    from test_latent import _suite_folder

    from wordpaint.eval.report import write_suite_report
    from wordpaint.models.clip import ClipConfig, ClipModel, WordpaintClip

    suite = _suite_folder(tmp_path / "suite")
    clip = WordpaintClip(ClipModel(ClipConfig(hidden_dim=32, embed_dim=16, dropout=0.0)))
    fids = {}
    for mode, said in (("prior", "prior"), ("none", "none (text alone)")):
        paths = write_suite_report(pipe, "emoji", tmp_path / mode, model_name="both", data=suite, clip=clip, samples_per_cell=1,
                                   seed=0, steps=2, guidance=2.0, limit_concepts=4, show_progress=False, image_embed=mode)
        res = json.loads(paths["json"].read_text())
        assert res["settings"]["image_embed"] == said
        fids[mode] = res["figures"]["seen_cells"]["FID (EfficientNet-Lite0)"]
    assert fids["prior"] != fids["none"]  # other pictures
    assert main(["eval", "report", "--suite", "shapes", "--image-embed", "none"]) == 2
    assert "--image-embed is an option of the emoji suite" in capsys.readouterr().err


def test_embed_prior_reads_pictures_not_latents(latent_runs, tmp_path):
    folder, ae, _ = latent_runs
    with pytest.raises(WordpaintError, match="drop data.autoencoder"):
        train("tiny_embed_prior", tmp_path / "p", data=folder, autoencoder=ae, show_progress=False)
