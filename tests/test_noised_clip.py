"""Noised wordpaint-clip and classifier guidance (issue 4): the model learns pairs from noisy
inputs, its gradient points toward its text, the pipeline guides with it, carries it in its
folder, and the shared training loop trains it (tiny configs)."""

import json

import numpy as np
import pytest
import torch

from wordpaint import TextToImagePipeline
from wordpaint.cli.main import main
from wordpaint.errors import ModelLoadError, WordpaintError
from wordpaint.images import read_png_metadata
from wordpaint.models.noised_clip import NoisedClipConfig, NoisedClipModel
from wordpaint.models.registry import build_config
from wordpaint.pipelines.text_to_image import load_model, style_contrasts
from wordpaint.training.train import train
from helpers import fit


def _tiny(**kw) -> NoisedClipModel:
    torch.manual_seed(0)
    return NoisedClipModel(NoisedClipConfig(block_out_channels=(8, 8), layers_per_block=1, embed_dim=16, emb_dim=16, **kw))


@pytest.fixture(scope="module")
def runs(latent_runs, tmp_path_factory):
    """(guide run folder, tiny latent pipeline, the guide trained on its autoencoder's latents)."""
    folder, ae, ld = latent_runs
    root = tmp_path_factory.mktemp("guide")
    guide = train("tiny_guide", root / "guide", data=folder, autoencoder=ae, show_progress=False)
    return root / "guide", ld, guide


def test_learns_pairs_from_noisy_inputs_and_its_gradient_points_to_its_text():
    model = _tiny()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 4, 16, 16, generator=g)
    batch = {"x0": x0, "text_features": torch.nn.functional.normalize(torch.randn(8, 384, generator=g), dim=-1)}
    first, last = fit(model, lambda step: model(batch, generator=torch.Generator().manual_seed(step)), steps=60)
    assert last < 0.5 * first
    model.eval()
    emb = model.embed_noisy(x0, torch.tensor(0.5))
    assert emb.shape == (8, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(8), atol=1e-5)
    # a small step along the gradient raises the similarity to the text it was taken for
    text = model.embed_text_features(batch["text_features"][[3]]).expand(8, -1)
    x = x0 + 0.5 * torch.randn(x0.shape, generator=g)
    grad = model.guidance_grad(x, torch.tensor(0.5), text)
    assert grad.shape == x.shape and not x.requires_grad
    before = (model.embed_noisy(x, torch.tensor(0.5)) * text).sum(-1)
    after = (model.embed_noisy(x + 1e-3 * grad / grad.norm(), torch.tensor(0.5)) * text).sum(-1)
    assert (after > before).all()


def test_contrast_gradient_is_the_classifier_gradient_over_the_prompt_and_its_contrasts():
    model = _tiny().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 16, 16, generator=g)
    sigma = torch.tensor(0.7)
    texts = model.embed_text_features(torch.randn(3, 3, 384, generator=g).reshape(9, 384)).reshape(3, 3, 16)  # (B, 1 + K, D)
    got = model.guidance_grad(x, sigma, texts[:, 0], texts[:, 1:])
    # d/dx log softmax_0 = grad s_0 - sum_k p_k grad s_k, with s_k = logit_scale * cos(image(x), t_k) per image
    per_text = torch.stack([model.guidance_grad(x, sigma, texts[:, k]) for k in range(3)], 1)  # (B, 1 + K, C, H, W)
    with torch.no_grad():
        p = (model.logit_scale.exp() * torch.einsum("bd,bkd->bk", model.embed_noisy(x, sigma), texts)).softmax(-1)
    want = per_text[:, 0] - (p[:, :, None, None, None] * per_text).sum(1)
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, per_text[:, 0], atol=1e-3)
    # the prompt itself as its only contrast: p = 1/2 each, and the two terms cancel
    assert torch.allclose(model.guidance_grad(x, sigma, texts[:, 0], texts[:, :1]), torch.zeros_like(x), atol=1e-6)


def test_style_contrasts_swaps_the_asked_style_for_each_other():
    styles = ["noto", "twemoji", "openmoji"]
    assert style_contrasts("fox in twemoji style", styles) == ["fox in noto style", "fox in openmoji style"]
    assert style_contrasts("A Fox in Noto style, smiling", styles) == ["A Fox in twemoji style, smiling", "A Fox in openmoji style, smiling"]
    assert style_contrasts("fox in pixel style", styles) == [] and style_contrasts("fox", styles) == []
    assert style_contrasts("fox in pixel style in openmoji style", styles) == ["fox in pixel style in noto style",
                                                                                "fox in pixel style in twemoji style"]


def test_masked_contrasts_fall_back_to_the_plain_gradient_row_by_row():
    model = _tiny().eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 16, 16, generator=g)
    sigma = torch.tensor(0.7)
    texts = model.embed_text_features(torch.randn(6, 384, generator=g)).reshape(2, 3, 16)
    mask = torch.tensor([[True, False], [False, False]])
    got = model.guidance_grad(x, sigma, texts[:, 0], texts[:, 1:], mask)
    assert torch.allclose(got[:1], model.guidance_grad(x[:1], sigma, texts[:1, 0], texts[:1, 1:2]), atol=1e-5)
    assert torch.allclose(got[1:], model.guidance_grad(x[1:], sigma, texts[1:, 0]), atol=1e-5)


def test_config_checks_noise_range():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        build_config(family="noised_clip", sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="unknown noised_clip config keys"):
        build_config(family="noised_clip", channels=3)


def test_pipeline_guides_round_trips_and_records_it(runs, tmp_path):
    _, ld, guide = runs
    pipe = TextToImagePipeline.from_pretrained(ld)
    assert pipe.guide is None
    with pytest.raises(WordpaintError, match="needs a pipeline with a guide"):
        pipe("fox", clip_guidance_scale=1.0, num_inference_steps=2)
    guided = pipe.with_component("guide", load_model(guide))
    kw = dict(seed=3, num_inference_steps=2, guidance_scale=2.0)
    assert guided.to("cpu") is guided and guided.guide.logit_scale.device.type == "cpu"
    plain = guided("a red circle", **kw)
    assert "clip_guidance_scale" not in plain.metadata[0]
    a = guided("a red circle", clip_guidance_scale=50.0, **kw)
    b = guided("a red circle", clip_guidance_scale=50.0, **kw)
    assert a.images[0].tobytes() == b.images[0].tobytes()  # same seed, same guided image
    assert a.images[0].tobytes() != plain.images[0].tobytes()  # the guide changes the sample
    assert plain.images[0].tobytes() == pipe("a red circle", **kw).images[0].tobytes()  # scale 0: the guide is not used
    assert a.metadata[0]["clip_guidance_scale"] == 50.0
    for bad in (-1.0, float("nan"), "strong"):
        with pytest.raises(WordpaintError, match="clip_guidance_scale"):
            guided("fox", clip_guidance_scale=bad, num_inference_steps=2)
    # contrast texts: the (K + 1)-way classifier's gradient, recorded; per prompt or one list for all
    c = guided("a red circle", clip_guidance_scale=50.0, clip_guidance_contrast=["a blue circle", "a red square"], **kw)
    assert c.images[0].tobytes() != a.images[0].tobytes()
    assert c.metadata[0]["clip_guidance_contrast"] == ["a blue circle", "a red square"]
    two = guided(["a red circle", "fox"], clip_guidance_scale=50.0, **kw,
                 clip_guidance_contrast=[["a blue circle", "a red square"], ["cat", "dog"]])
    assert two.images[0].tobytes() == c.images[0].tobytes() and two.metadata[1]["clip_guidance_contrast"] == ["cat", "dog"]
    with pytest.raises(WordpaintError, match="needs clip_guidance_scale > 0"):
        guided("fox", clip_guidance_contrast=["cat"], num_inference_steps=2)
    for bad in ([], "a blue circle", [["a"]], [3], [["a"], [3]], ["ok", "x" * 5000]):
        with pytest.raises(WordpaintError, match="clip_guidance_contrast"):
            guided(["fox", "cat"], clip_guidance_scale=1.0, clip_guidance_contrast=bad, num_inference_steps=2)
    # a folder's clip_contrast_styles: prompts that ask for one of them are contrasted with the others
    styled = guided.with_component("guide", guided.guide)
    styled.defaults["clip_contrast_styles"] = ["noto", "twemoji", "openmoji"]
    auto = styled(["fox in twemoji style", "a red circle"], clip_guidance_scale=50.0, **kw)
    assert auto.metadata[0]["clip_guidance_contrast"] == ["fox in noto style", "fox in openmoji style"]
    assert "clip_guidance_contrast" not in auto.metadata[1]  # names no style: the plain guidance
    assert auto.images[1].tobytes() == guided(["fox", "a red circle"], clip_guidance_scale=50.0, **kw).images[1].tobytes()
    explicit = guided("fox in twemoji style", clip_guidance_scale=50.0, clip_guidance_contrast=["fox in noto style", "fox in openmoji style"], **kw)
    # the same guidance as the explicit contrasts, up to float summation order (a batch of two vs one)
    assert np.abs(np.asarray(auto.images[0], float) - np.asarray(explicit.images[0], float)).max() <= 2
    assert styled("fox in twemoji style", clip_guidance_scale=50.0, clip_guidance_contrast=None, **kw).images[0].tobytes() == \
        guided("fox in twemoji style", clip_guidance_scale=50.0, **kw).images[0].tobytes()  # None: no contrast
    # the folder carries the guide and loads it back
    guided.save_pretrained(tmp_path / "p")
    assert json.loads((tmp_path / "p" / "model_index.json").read_text())["guide"] == "guide"
    back = TextToImagePipeline.from_pretrained(tmp_path / "p")
    assert isinstance(back.guide, NoisedClipModel)
    assert back("a red circle", clip_guidance_scale=50.0, **kw).images[0].tobytes() == a.images[0].tobytes()
    # a guide must read what the diffusion model denoises
    with pytest.raises(ModelLoadError, match="guide reads 3"):
        pipe.with_component("guide", _tiny(in_channels=3))
    with pytest.raises(WordpaintError, match="cannot be the pipeline's 'guide'"):
        pipe.with_component("guide", pipe.vae)


def test_trained_guide_logs_heldout_retrieval_and_cli_adds_it(runs, tmp_path, capsys):
    root, ld, guide = runs
    assert isinstance(load_model(guide), NoisedClipModel)
    evals = [json.loads(line)["eval"] for line in (root / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert evals and evals[-1]["n"] == 4 and all(0 <= v <= 1 for k, v in evals[-1].items() if k.startswith("recall1"))
    assert not (root / "samples").exists()  # a guide draws nothing
    out = tmp_path / "with_guide"
    assert main(["model", "replace", str(ld), "--component", "guide", "--from", str(guide), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["model", "info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["components"]["guide"]["family"] == "noised_clip"
    png = tmp_path / "g.png"
    assert main(["generate", "a red circle", "--model", str(out), "--steps", "2", "--clip-guidance", "20", "-o", str(png)]) == 0
    assert png.is_file()
    assert main(["generate", "a red circle", "--model", str(out), "--steps", "2", "--clip-guidance", "20", "--clip-contrast", "a blue circle",
                 "--clip-contrast", "a red square", "-o", str(png)]) == 0
    assert read_png_metadata(png)["clip_guidance_contrast"] == ["a blue circle", "a red square"]


def test_report_refuses_clip_guidance_without_a_guide(runs, capsys):
    _, ld, _ = runs
    assert main(["eval", "report", "--model", str(ld), "--suite", "emoji", "--clip-guidance", "2"]) == 2
    assert "needs a model with a guide" in capsys.readouterr().err
    assert main(["eval", "report", "--model", str(ld), "--suite", "emoji", "--clip-contrast-styles", "noto"]) == 2
    assert "at least two styles" in capsys.readouterr().err
