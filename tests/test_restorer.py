"""The restorer (issue 4): a text-conditioned pixel network after the autoencoder's decoder: its
config checks, that it starts as the identity and learns a text-dependent fix, its training
recipe on an autoencoder's round trips, and the pipeline's ``restore`` option."""

import json

import numpy as np
import pytest
import torch

from wordpaint import TextToImagePipeline
from wordpaint.cli.main import main
from wordpaint.errors import ModelLoadError, WordpaintError
from wordpaint.images import read_png_metadata
from wordpaint.models.registry import build_config, build_model
from wordpaint.models.restorer import RestorerModel
from wordpaint.pipelines.text_to_image import load_model
from wordpaint.training.train import StepBatches, load_recipe, train
from helpers import fit


def _tiny(**kw) -> RestorerModel:
    torch.manual_seed(0)
    return build_model(build_config(family="restorer", preset="tiny_restorer", **kw))


def test_config_rejects_bad_sizes_and_ranges():
    with pytest.raises(ValueError, match="multiples of norm_num_groups"):
        build_config(family="restorer", preset="tiny_restorer", block_out_channels=(4, 6))
    with pytest.raises(ValueError, match="crop_size <= resolution"):
        build_config(family="restorer", preset="tiny_restorer", crop_size=48)
    with pytest.raises(ValueError, match="multiples of 2"):
        build_config(family="restorer", preset="tiny_restorer", crop_size=15)
    with pytest.raises(ValueError, match="noisy_share must be a number in \\[0, 1\\], got 1.5"):
        build_config(family="restorer", preset="tiny_restorer", noisy_share=1.5)
    with pytest.raises(ValueError, match="text_dim must be an integer >= 1"):
        build_config(family="restorer", preset="tiny_restorer", text_dim=0)


def test_starts_as_the_identity_and_checks_its_inputs():
    m = _tiny().eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    t = torch.randn(3, 384)
    assert torch.equal(m.restore(x, t), x)  # zeroed last convolutions: x + 0
    with pytest.raises(ValueError, match="\\(B, 3, H, W\\) pictures"):
        m.restore(x[:, :1], t)
    with pytest.raises(ValueError, match="\\(3, 384\\) pooled text"):
        m.restore(x, t[:, :10])
    with pytest.raises(ValueError, match="multiples of 2"):
        m.restore(x[..., :31, :31], t)
    with pytest.raises(ValueError, match="same shape"):
        m({"decoded": x, "pixel_values": x[..., :16, :16], "text_features": t})


def test_learns_a_fix_that_depends_on_the_text():
    """Two texts ask for opposite fixes of the same input (brighter / darker): only a network that
    reads the text can bring both losses down, and the two outputs must move apart."""
    m = _tiny()
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)) - 0.5
    t = torch.cat([torch.ones(4, 384), -torch.ones(4, 384)])
    target = torch.cat([x[:4] + 0.4, x[4:] - 0.2])
    first, last = fit(m, lambda step: m({"decoded": x, "pixel_values": target, "text_features": t}), steps=150, lr=1e-2)
    assert last < 0.3 * first
    shift = m.restore(x, t) - x
    assert shift[:4].mean() > 0.3 and shift[4:].mean() < -0.1


def test_training_on_round_trips_and_restore_in_the_pipeline(latent_runs, tmp_path, capsys):
    folder, ae, ld = latent_runs
    run = train("tiny_restorer", tmp_path / "r", data=folder, autoencoder=ae, show_progress=False)
    ev = [json.loads(l)["eval"] for l in (run.parent / "metrics.jsonl").read_text().splitlines() if "eval" in l]
    # held-out PSNR of the round trip and of the restored round trip, overall and per style
    assert ev and {"psnr_round_trip", "psnr_restored", "psnr_noto_restored", "psnr_noto_round_trip"} <= set(ev[-1])
    assert load_model(run).config.family == "restorer"


    out = tmp_path / "with_restorer"
    assert main(["model", "replace", str(ld), "--component", "restorer", "--from", str(run), "--out", str(out)]) == 0
    pipe = TextToImagePipeline.from_pretrained(out)
    assert pipe.restorer is not None and not pipe.defaults["restore"]
    # make the restorer's effect visible: a random last convolution instead of the trained small one
    torch.manual_seed(1)
    torch.nn.init.normal_(pipe.restorer.conv_out.weight, std=0.3)
    plain = pipe("fox in noto style", seed=3, num_inference_steps=2)
    fixed = pipe("fox in noto style", seed=3, num_inference_steps=2, restore=True)
    assert "restore" not in plain.metadata[0] and fixed.metadata[0]["restore"] is True
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(fixed.images[0]))
    # the folder's default round-trips, and the CLI switches it off and on
    pipe.defaults["restore"] = True
    pipe.save_pretrained(tmp_path / "default_on")
    again = TextToImagePipeline.from_pretrained(tmp_path / "default_on")
    assert again.defaults["restore"] is True
    assert np.array_equal(np.asarray(again("fox in noto style", seed=3, num_inference_steps=2).images[0]), np.asarray(fixed.images[0]))
    png = tmp_path / "a.png"
    assert main(["generate", "fox in noto style", "-o", str(png), "--model", str(tmp_path / "default_on"), "--steps", "2",
                 "--restore", "off"]) == 0
    assert "restore" not in read_png_metadata(png)
    code = main(["generate", "fox", "-o", str(png), "--model", str(ld), "--steps", "2", "--restore", "on"])
    assert code == 2 and "restore needs a pipeline with a restorer" in capsys.readouterr().err

    with pytest.raises(WordpaintError, match="restore must be True or False, got 'yes'"):
        pipe("fox", num_inference_steps=2, restore="yes")
    with pytest.raises(ModelLoadError, match="no autoencoder"):
        TextToImagePipeline(text_encoder=pipe.text_encoder, model=pipe.model, restorer=pipe.restorer)


def test_restorer_batches_are_crops_and_a_pure_function_of_the_step():
    class Stream:  # two 8x8 pictures; rows picked in turn
        images = None

        def batch(self, step, bs, rank=0, world_size=1):
            return torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8), ["a", "b"]

        def batch_rows(self, step, bs, rank=0, world_size=1):
            return [0, 1]

    class Task:
        stream, rank, world, seed = Stream(), 0, 1, 0
        config = build_config(family="restorer", preset="tiny_restorer", resolution=8, crop_size=4, noisy_share=0.5)
        decoded = torch.stack([torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)], dim=1).half()  # clean = 0, noisy = 1

    batches = StepBatches(Task(), 2)
    b = batches[7]
    assert b["pixel_values"].shape == b["decoded"].shape == (2, 3, 4, 4) and b["captions"] == ["a", "b"]
    assert torch.equal(batches[7]["decoded"], b["decoded"]) and torch.equal(batches[7]["pixel_values"], b["pixel_values"])
    picks = torch.stack([batches[s]["decoded"][:, 0, 0, 0] for s in range(40)])  # 0 (clean) or 1 (noisy) per picture
    assert 0.2 < picks.mean() < 0.8
    corners = {tuple(batches[s]["pixel_values"][0, 0, 0, :1].tolist()) for s in range(40)}
    assert len(corners) > 1  # the crop moves with the step


def test_restorer_recipe_needs_an_autoencoder_and_held_out_rows(latent_runs, tmp_path):
    import shutil

    folder, ae, _ = latent_runs
    with pytest.raises(WordpaintError, match="data.autoencoder"):
        train("tiny_restorer", tmp_path / "r", data=folder, show_progress=False)
    train_only = tmp_path / "train_only"
    shutil.copytree(folder, train_only)
    rows = [json.loads(l) for l in (train_only / "metadata.jsonl").read_text().splitlines()]
    (train_only / "metadata.jsonl").write_text("".join(json.dumps({**r, "split": "train"}) + "\n" for r in rows))
    with pytest.raises(WordpaintError, match="held-out rows \\(split heldout or test\\); .* has none"):
        train("tiny_restorer", tmp_path / "r2", data=train_only, autoencoder=ae, show_progress=False)


def test_sampled_inputs_replace_a_share_of_the_round_trips_and_leave_other_batches_exact():
    """sampled_share: a picture that has decoded sampled latents is shown one of them instead of its
    round trip with that probability; pictures without keep their round trips; the draws come after
    the old ones, so the crop and the clean / noisy pick are those of a recipe without them."""
    class Stream:
        images = None

        def batch(self, step, bs, rank=0, world_size=1):
            return torch.zeros(2, 3, 8, 8), ["a", "b"]

        def batch_rows(self, step, bs, rank=0, world_size=1):
            return [0, 1]

    def task(sampled: bool = True, **kw):
        class Task:
            stream, rank, world, seed = Stream(), 0, 1, 0
            config = build_config(family="restorer", preset="tiny_restorer", resolution=8, crop_size=4, noisy_share=0.5, **kw)
            decoded = torch.stack([torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)], dim=1).half()  # clean = 0, noisy = 1
            if sampled:
                # K = 2 for the first picture only; the second (an icon, say) has none
                sampled_decoded = torch.stack([torch.full((1, 3, 8, 8), 2.0), torch.full((1, 3, 8, 8), 3.0)], dim=1).half()
                sampled_slot = torch.tensor([0, -1])
        return Task()

    plain = StepBatches(task(sampled=False), 2)
    never, always, half = (StepBatches(task(sampled_share=s), 2) for s in (0.0, 1.0, 0.5))
    for s in range(10):
        assert torch.equal(never[s]["decoded"], plain[s]["decoded"])
    firsts = torch.stack([always[s]["decoded"][0, 0, 0, 0] for s in range(40)])
    assert set(firsts.tolist()) == {2.0, 3.0}  # both of its K sampled latents, never its round trips
    assert all(always[s]["decoded"][1, 0, 0, 0].item() in (0.0, 1.0) for s in range(40))  # no sampled latents: round trips
    mixed = torch.stack([half[s]["decoded"][0, 0, 0, 0] for s in range(60)])
    assert 0.2 < (mixed >= 2).float().mean() < 0.8
    assert torch.equal(half[5]["decoded"], StepBatches(task(sampled_share=0.5), 2)[5]["decoded"])  # a pure function of the step


def test_restorer_recipe_on_sampled_latents_and_its_errors(latent_runs, tmp_path):
    from wordpaint.training.decoder_inputs import load_decoder_inputs, main as make_inputs, save_decoder_inputs

    folder, ae, ld = latent_runs
    pairs = tmp_path / "pairs.safetensors"
    make_inputs(["--model", str(ld), "--data", str(folder), "--per-image", "1", "--strengths", "0.5", "--out", str(pairs)])
    latents, names, _ = load_decoder_inputs(pairs)
    few = tmp_path / "few.safetensors"  # sampled latents for three pictures: the others train on round trips alone
    save_decoder_inputs(few, latents[:3], torch.full((3, 1), 0.5), names[:3], settings={})
    recipe = load_recipe("tiny_restorer")
    recipe["model"]["overrides"] = {"sampled_share": 1.0}
    recipe["max_steps"], recipe["eval_every"] = 2, 2
    (tmp_path / "sampled.json").write_text(json.dumps(recipe))
    run = train(str(tmp_path / "sampled.json"), tmp_path / "r", data=folder, autoencoder=ae, decoder_inputs=few, show_progress=False)
    assert load_model(run).config.sampled_share == 1.0
    with pytest.raises(WordpaintError, match="go together"):  # a share without the file
        train(str(tmp_path / "sampled.json"), tmp_path / "e1", data=folder, autoencoder=ae, show_progress=False)
    with pytest.raises(WordpaintError, match="go together"):  # the file without a share
        train("tiny_restorer", tmp_path / "e2", data=folder, autoencoder=ae, decoder_inputs=pairs, show_progress=False)
    save_decoder_inputs(tmp_path / "other.safetensors", latents[:2], torch.full((2, 1), 0.5), ["x.png", "y.png"], settings={})
    with pytest.raises(WordpaintError, match="none of the training pictures"):
        train(str(tmp_path / "sampled.json"), tmp_path / "e3", data=folder, autoencoder=ae,
              decoder_inputs=tmp_path / "other.safetensors", show_progress=False)
    save_decoder_inputs(tmp_path / "wide.safetensors", torch.zeros(3, 1, 8, 16, 16), torch.full((3, 1), 0.5), names[:3], settings={})
    with pytest.raises(WordpaintError, match="latents; the autoencoder's are"):
        train(str(tmp_path / "sampled.json"), tmp_path / "e4", data=folder, autoencoder=ae,
              decoder_inputs=tmp_path / "wide.safetensors", show_progress=False)


def test_sampled_latents_draw_with_the_pipelines_expert_at_its_expert_sigma(latent_runs):
    """The restorer's (and a decoder's) sampled latents are what the pipeline draws: a pipeline whose
    defaults hand its last steps to an expert makes different latents than the same pipeline without."""
    import copy

    from wordpaint.data.imagefolder import ImageFolderStream
    from wordpaint.training.decoder_inputs import sampled_latents

    folder, _, ld = latent_runs
    pipe = TextToImagePipeline.from_pretrained(ld)
    images = ImageFolderStream(folder, size=32, show_progress=False).data[:2]  # (2, 3, 32, 32) in [-1, 1]
    kw = dict(strengths=(0.5,), per_image=1, show_progress=False)
    plain, _ = sampled_latents(pipe, images, ["a", "b"], **kw)
    expert = copy.deepcopy(pipe.model)
    with torch.no_grad():
        for p in expert.parameters():
            p.add_(0.05 * torch.randn_like(p))
    with_expert = TextToImagePipeline(text_encoder=pipe.text_encoder, model=pipe.model, vae=pipe.vae, expert=expert)
    with_expert.defaults.update(pipe.defaults)
    assert torch.equal(sampled_latents(with_expert, images, ["a", "b"], **kw)[0], plain)  # expert_sigma None: unused
    with_expert.defaults["expert_sigma"] = 100.0  # above every level: the expert draws every step
    assert not torch.equal(sampled_latents(with_expert, images, ["a", "b"], **kw)[0], plain)
