"""Latent prior (issue 4): the text -> latent regressor fits its pairs, the pipeline starts the
chain from its draft (prior_strength), carries it in its folder, and the shared training loop
trains it (tiny configs)."""

import json

import pytest
import torch

from wordpaint import TextToImagePipeline
from wordpaint.cli.main import main
from wordpaint.errors import ModelLoadError, WordpaintError
from wordpaint.images import to_pil
from wordpaint.models.latent_prior import LatentPriorConfig, LatentPriorModel
from wordpaint.models.registry import build_config
from wordpaint.pipelines.text_to_image import load_model
from wordpaint.training.train import train
from helpers import fit


@pytest.fixture(scope="module")
def runs(latent_runs, tmp_path_factory):
    """(prior run folder, tiny latent pipeline, the prior trained on its autoencoder's latents)."""
    folder, ae, ld = latent_runs
    root = tmp_path_factory.mktemp("prior")
    prior = train("tiny_prior", root / "prior", data=folder, autoencoder=ae, show_progress=False)
    return root / "prior", ld, prior


def test_fits_its_pairs():
    torch.manual_seed(0)
    model = LatentPriorModel(LatentPriorConfig(hidden_dim=64, num_layers=2))
    g = torch.Generator().manual_seed(0)
    batch = {"x0": torch.randn(8, 4, 16, 16, generator=g),
             "text_features": torch.nn.functional.normalize(torch.randn(8, 384, generator=g), dim=-1)}
    first, last = fit(model, lambda step: model(batch), steps=150)
    assert last < 0.2 * first  # memorises 8 (text, latent) pairs
    assert model.draft(batch["text_features"]).shape == (8, 4, 16, 16)


def test_config_checks_sizes():
    with pytest.raises(ValueError, match="hidden_dim must be an integer >= 1"):
        build_config(family="latent_prior", hidden_dim=0)
    with pytest.raises(ValueError, match="unknown latent_prior config keys"):
        build_config(family="latent_prior", channels=3)
    assert build_config(family="latent_prior", preset="tiny_prior").in_channels == 4


def test_pipeline_starts_from_the_draft_round_trips_and_records_it(runs, tmp_path):
    _, ld, prior = runs
    pipe = TextToImagePipeline.from_pretrained(ld)
    assert pipe.prior is None and pipe.defaults["prior_strength"] is None
    with pytest.raises(WordpaintError, match="needs a pipeline with a prior"):
        pipe("fox", prior_strength=0.5, num_inference_steps=2)
    drafted = pipe.with_component("prior", load_model(prior))
    kw = dict(seed=3, num_inference_steps=4, guidance_scale=2.0)
    plain = drafted("a red circle", **kw)
    assert "prior_strength" not in plain.metadata[0]
    assert plain.images[0].tobytes() == pipe("a red circle", **kw).images[0].tobytes()  # None: the prior is not used
    a = drafted("a red circle", prior_strength=0.5, **kw)
    assert a.images[0].tobytes() == drafted("a red circle", prior_strength=0.5, **kw).images[0].tobytes()
    assert a.images[0].tobytes() != plain.images[0].tobytes()
    assert a.metadata[0]["prior_strength"] == 0.5
    # the draft is the chain's start: a strength-0.5 chain from it equals img2img's loop given the draft
    sigmas = drafted.model.sigmas(4, "trailing")[2:]
    x = drafted.sample_batch(["a red circle"], seeds=[3], sigmas=sigmas, guidance_scale=2.0, sampler="dpmpp_2m",
                             height=drafted.resolution, width=drafted.resolution, from_prior=True)
    assert to_pil(x)[0].tobytes() == a.images[0].tobytes()
    for bad in (-0.1, 1.5, "half", True):
        with pytest.raises(WordpaintError, match="prior_strength must be a number in"):
            drafted("fox", prior_strength=bad, num_inference_steps=2)
    # strength 0: the draft itself, decoded, whatever the seed
    draft = drafted("a red circle", prior_strength=0, **kw)
    with torch.no_grad():
        z = drafted.prior.draft(drafted.text_encoder.encode(["a red circle"]).pooled)
    assert draft.images[0].tobytes() == to_pil(drafted.vae.decode(z))[0].tobytes()
    assert drafted("a red circle", prior_strength=0, **{**kw, "seed": 9}).images[0].tobytes() == draft.images[0].tobytes()
    with pytest.raises(WordpaintError, match="runs no step"):
        drafted("fox", prior_strength=0.1, num_inference_steps=2)
    with pytest.raises(WordpaintError, match="give one of them"):
        drafted("fox", prior_strength=0.5, image=a.images[0], num_inference_steps=2)
    with pytest.raises(WordpaintError, match="drafts 32 x 32 px pictures only"):
        drafted("fox", prior_strength=0.5, height=64, width=64, num_inference_steps=2)
    # the folder carries the prior (and a default strength) and loads it back
    drafted.defaults["prior_strength"] = 0.5
    drafted.save_pretrained(tmp_path / "p")
    index = json.loads((tmp_path / "p" / "model_index.json").read_text())
    assert index["prior"] == "prior" and index["defaults"]["prior_strength"] == 0.5
    back = TextToImagePipeline.from_pretrained(tmp_path / "p")
    assert isinstance(back.prior, LatentPriorModel)
    assert back("a red circle", **kw).images[0].tobytes() == a.images[0].tobytes()
    # a prior must draft what the diffusion model denoises
    with pytest.raises(ModelLoadError, match="prior drafts 3"):
        pipe.with_component("prior", LatentPriorModel(LatentPriorConfig(hidden_dim=8, num_layers=1, latent_channels=3)))
    with pytest.raises(WordpaintError, match="cannot be the pipeline's 'prior'"):
        pipe.with_component("prior", pipe.vae)


def test_trained_prior_logs_fit_and_cli_adds_and_uses_it(runs, tmp_path, capsys):
    root, ld, prior = runs
    assert isinstance(load_model(prior), LatentPriorModel)
    evals = [json.loads(line)["eval"] for line in (root / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert evals and {"train_mse", "train_var", "heldout_mse"} <= set(evals[-1]) and evals[-1]["train_mse"] > 0
    assert list((root / "samples").glob("*.png"))  # the recipe's prompts' drafts, decoded
    out = tmp_path / "with_prior"
    assert main(["model", "replace", str(ld), "--component", "prior", "--from", str(prior), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["model", "info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["components"]["prior"]["family"] == "latent_prior"
    png = tmp_path / "g.png"
    assert main(["generate", "a red circle", "--model", str(out), "--steps", "4", "--prior-strength", "0.5", "-o", str(png)]) == 0
    assert png.is_file()
    assert main(["generate", "a red circle", "--model", str(out), "--steps", "4", "--prior-strength", "lots", "-o", str(png)]) == 2
    assert "--prior-strength must be a number in [0, 1] or off" in capsys.readouterr().err
    assert main(["eval", "report", "--model", str(ld), "--suite", "emoji", "--prior-strength", "0.5"]) == 2
    assert "needs a model with a prior" in capsys.readouterr().err
