"""Latent diffusion (issue 4): the autoencoder, the image-folder stream, training both with the
shared loop, and the pipeline that denoises latents and decodes them."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import wordpaint
from wordpaint import TextToImagePipeline
from wordpaint.data.captions import sample_example
from wordpaint.data.imagefolder import ImageFolderStream
from wordpaint.data.shapes import render_scene
from wordpaint.errors import ModelLoadError, WordpaintError
from wordpaint.models.autoencoder import AutoencoderConfig, AutoencoderModel, latent_scale
from wordpaint.models.registry import build_config, build_model
from wordpaint.cli.main import main
from wordpaint.pipelines.text_to_image import load_model, save_model
from wordpaint.training.train import train
from helpers import fit


def _folder(root, n=24, size=32):
    """A small image folder shaped like the emoji corpus (name, style, kind, split per row)."""
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        ex = sample_example(np.random.default_rng(i), size=size)
        Image.fromarray(render_scene(ex.scene, size)).save(root / "images" / f"{i}.png")
        rows.append({"file_name": f"images/{i}.png", "text": ex.caption, "name": ex.caption, "style": ("noto", "twemoji")[i % 2],
                     "kind": "emoji", "split": "heldout" if i % 6 == 0 else "train"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def runs(latent_runs):
    return latent_runs  # (folder, autoencoder, latent pipeline), trained once per session (conftest)


def test_autoencoder_learns_to_reconstruct():
    torch.manual_seed(0)
    model = AutoencoderModel(build_config(family="autoencoder", preset="tiny_ae"))
    # smooth images (random 4x4 colour fields upsampled): learnable by a tiny autoencoder
    x = torch.nn.functional.interpolate(torch.rand(4, 3, 4, 4) * 2 - 1, size=32, mode="bilinear")
    first, last = fit(model, lambda step: model({"pixel_values": x}), steps=60)
    assert last < 0.7 * first
    z = model.encode(x)
    assert z.shape == (4, 4, 16, 16)
    assert model.decode(z).shape == x.shape and model.decode(z).abs().max() <= 1


def test_latent_scale_gives_unit_variance():
    torch.manual_seed(0)
    model = AutoencoderModel(AutoencoderConfig(resolution=32, block_out_channels=(4, 8), norm_num_groups=4, mid_block_add_attention=False))
    x = torch.rand(16, 3, 32, 32) * 2 - 1
    model.config.scaling_factor = latent_scale(model, x)
    assert model.encode(x).std().item() == pytest.approx(1.0, rel=1e-4)


def test_decoder_noise_perturbs_the_decoder_input_only_and_is_checked():
    torch.manual_seed(0)
    clean = AutoencoderModel(build_config(family="autoencoder", preset="tiny_ae", train_encoder=False))
    noisy = AutoencoderModel(build_config(family="autoencoder", preset="tiny_ae", train_encoder=False, decoder_noise=0.5))
    noisy.load_state_dict(clean.state_dict())
    batch = {"pixel_values": torch.rand(4, 3, 32, 32) * 2 - 1}
    loss = lambda m, seed: m(batch, generator=torch.Generator().manual_seed(seed)).item()  # noqa: E731
    assert loss(noisy, 1) == loss(noisy, 1) != loss(noisy, 2)  # the generator draws the noise
    assert loss(noisy, 1) != loss(clean, 1)
    assert torch.equal(noisy.encode(batch["pixel_values"]), clean.encode(batch["pixel_values"]))  # encode/decode stay clean
    with pytest.raises(ValueError, match="trains the decoder alone"):
        AutoencoderConfig.from_dict({"decoder_noise": 0.1})
    with pytest.raises(ValueError, match="decoder_noise must be a number"):
        AutoencoderConfig.from_dict({"train_encoder": False, "decoder_noise": "lots"})
    with pytest.raises(ValueError, match="decoder_noise_clean must be a fraction"):
        AutoencoderConfig.from_dict({"train_encoder": False, "decoder_noise": 0.1, "decoder_noise_clean": 1.0})
    with pytest.raises(ValueError, match="set decoder_noise too"):
        AutoencoderConfig.from_dict({"train_encoder": False, "decoder_noise_clean": 0.5})
    # a clean share: same loss as the clean model when every picture is drawn clean, else in between
    half = AutoencoderModel(build_config(family="autoencoder", preset="tiny_ae", train_encoder=False,
                                         decoder_noise=0.5, decoder_noise_clean=0.999999))
    half.load_state_dict(clean.state_dict())
    assert loss(half, 1) == pytest.approx(loss(clean, 1), rel=1e-6)


def test_adversarial_decoder_term_moves_each_network_by_its_own_loss(runs, tmp_path):
    torch.manual_seed(0)
    cfg = dict(family="autoencoder", preset="tiny_ae", train_encoder=False)
    plain = AutoencoderModel(build_config(**cfg))
    adv = AutoencoderModel(build_config(**cfg, adversarial_weight=0.5, disc_channels=8))
    adv.load_state_dict({**adv.state_dict(), **plain.state_dict()})
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    loss = adv({"pixel_values": x})
    assert adv.discriminator(x).shape == (4, 1, 4, 4) and torch.isfinite(loss)
    assert set(adv.loss_terms) == {"loss_reconstruction", "loss_decoder_adversarial", "loss_discriminator"}
    assert adv.loss_terms["loss_reconstruction"] == pytest.approx(plain({"pixel_values": x}).item(), rel=1e-6)
    loss.backward()
    # the critic's gradient is its hinge loss's alone (the decoded pictures reach it detached)
    d_grads = [q.grad.clone() for q in adv.discriminator.parameters()]
    adv.zero_grad()
    recon = adv.vae.decode(adv.vae.encode(x).latent_dist.mean).sample.detach()
    (torch.relu(1 - adv.discriminator(x)).mean() + torch.relu(1 + adv.discriminator(recon)).mean()).backward()
    assert all(torch.allclose(a, q.grad, atol=1e-6) for a, q in zip(d_grads, adv.discriminator.parameters()))
    # the decoder's is reconstruction + weight x the critic's score (the critic's weights held fixed)
    adv.zero_grad()
    adv({"pixel_values": x}).backward()
    dec = [q.grad.clone() for q in adv.vae.decoder.parameters()]
    adv.zero_grad()
    recon = adv.vae.decode(adv.vae.encode(x).latent_dist.mean).sample
    rec = torch.nn.functional.l1_loss(recon, x) + torch.nn.functional.mse_loss(recon, x)
    (rec - 0.5 * adv.discriminator(recon).mean()).backward()
    assert all(torch.allclose(a, q.grad, atol=1e-6) for a, q in zip(dec, adv.vae.decoder.parameters()))
    assert adv.vae.encoder.conv_in.weight.grad is None  # the encoder stays frozen
    with pytest.raises(ValueError, match="trains the decoder alone"):
        AutoencoderConfig.from_dict({"adversarial_weight": 0.1})
    with pytest.raises(ValueError, match="adversarial_weight must be a number"):
        AutoencoderConfig.from_dict({"train_encoder": False, "adversarial_weight": -1})
    with pytest.raises(ValueError, match="disc_channels must be a positive multiple of 4"):
        AutoencoderConfig.from_dict({"train_encoder": False, "adversarial_weight": 0.1, "disc_channels": 6})
    # --init-from an autoencoder without a critic: the critic starts fresh, the decoder exactly as it was
    from safetensors.torch import load_file

    folder, ae, ld = runs
    recipe = json.loads((ae.parent / "recipe.json").read_text())
    recipe = {k: v for k, v in recipe.items() if k not in ("wordpaint_version", "resolved_model_config", "parameters")}
    recipe["model"] = {"family": "autoencoder", "preset": "tiny_ae",
                       "overrides": {"train_encoder": False, "adversarial_weight": 0.1, "disc_channels": 8}}
    (tmp_path / "gan.json").write_text(json.dumps(recipe))
    out = train(str(tmp_path / "gan.json"), tmp_path / "gan", data=folder, init_from=ld, max_steps=2, show_progress=False)
    logged = [json.loads(line) for line in (tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_discriminator" in r for r in logged)
    before, after = load_file(ld / "autoencoder" / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(k.startswith("discriminator.") for k in after) and not any(k.startswith("discriminator.") for k in before)
    assert all(torch.equal(before[k].float(), after[k].float()) for k in before if k.startswith("vae.encoder."))


def test_adaptive_adversarial_weight_balances_the_decoder_gradients():
    torch.manual_seed(0)
    m = AutoencoderModel(build_config(family="autoencoder", preset="tiny_ae", train_encoder=False,
                                      adversarial_weight=0.5, adversarial_adaptive=True, disc_channels=8))
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    loss = m({"pixel_values": x})
    w = m.loss_terms["adversarial_adaptive_weight"]
    # by hand: 0.5 x ||d rec / d W|| / ||d adv / d W|| at the decoder's last convolution W
    recon = m.vae.decode(m.vae.encode(x).latent_dist.mean).sample
    rec = torch.nn.functional.l1_loss(recon, x) + torch.nn.functional.mse_loss(recon, x)
    last = m.vae.decoder.conv_out.weight
    g_rec, = torch.autograd.grad(rec, last, retain_graph=True)
    g_adv, = torch.autograd.grad(-m.discriminator(recon).mean(), last)
    assert w == pytest.approx(0.5 * (g_rec.norm() / (g_adv.norm() + 1e-4)).item(), rel=1e-5)
    # the weight is a constant of the step: W's gradient is rec's plus w x the adversarial term's
    loss.backward()
    assert torch.allclose(last.grad, g_rec + w * g_adv, atol=1e-6)
    with torch.no_grad():  # no gradients to balance (validation): the fixed weight, no error
        assert torch.isfinite(m({"pixel_values": x}))
    with pytest.raises(ValueError, match="set adversarial_weight too"):
        AutoencoderConfig.from_dict({"train_encoder": False, "adversarial_adaptive": True})
    with pytest.raises(ValueError, match="adversarial_adaptive must be true or false"):
        AutoencoderConfig.from_dict({"train_encoder": False, "adversarial_weight": 0.1, "adversarial_adaptive": 1})


def test_stream_is_deterministic_and_leaves_out_heldout_rows(tmp_path):
    folder = _folder(tmp_path / "f")
    s = ImageFolderStream(folder, size=32, seed=3, cond_drop_prob=0.3, show_progress=False)
    assert len(s) == 20 and all(r["split"] == "train" for r in s.rows)
    a, ca = s.batch(5, 8)
    b, cb = ImageFolderStream(folder, size=32, seed=3, cond_drop_prob=0.3, show_progress=False).batch(5, 8)
    assert torch.equal(a, b) and ca == cb
    assert a.shape == (8, 3, 32, 32) and -1 <= a.min() and a.max() <= 1
    # one epoch of examples visits every image exactly once
    seen = [s.index(i) for i in range(len(s))]
    assert sorted(seen) == list(range(len(s)))
    caps = [c for st in range(20) for c in s.batch(st, 8)[1]]
    assert "" in caps and any(c.endswith("noto style") for c in caps)


def test_style_repeats_rebalance_each_epoch_and_check_their_input(tmp_path):
    folder = _folder(tmp_path / "f")
    plain = ImageFolderStream(folder, size=32, seed=3, show_progress=False)
    s = ImageFolderStream(folder, size=32, seed=3, style_repeats={"twemoji": 3}, show_progress=False)
    # no repeats: the pool is the rows themselves, so old recipes keep their exact data order
    assert plain.pool == list(range(len(plain)))
    n_tw = sum(r["style"] == "twemoji" for r in s.rows)
    epoch = [s.index(i) for i in range(len(s.pool))]  # one epoch of the weighted stream
    assert len(epoch) == len(s) + 2 * n_tw
    counts = np.bincount(epoch, minlength=len(s))
    assert all(counts[j] == (3 if r["style"] == "twemoji" else 1) for j, r in enumerate(s.rows))
    assert [ImageFolderStream(folder, size=32, seed=3, style_repeats={"twemoji": 3}, show_progress=False).index(i)
            for i in range(40)] == [s.index(i) for i in range(40)]
    with pytest.raises(WordpaintError, match="no training row has; styles here: \\['noto', 'twemoji'\\]"):
        ImageFolderStream(folder, size=32, style_repeats={"openmoji": 2}, show_progress=False)
    with pytest.raises(WordpaintError, match="integer in \\[1, 100\\], got 0.5"):
        ImageFolderStream(folder, size=32, style_repeats={"twemoji": 0.5}, show_progress=False)
    with pytest.raises(WordpaintError, match="mapping of style to repeats"):
        ImageFolderStream(folder, size=32, style_repeats=["twemoji"], show_progress=False)


def test_trained_folders_round_trip_and_generate_pixels(runs, tmp_path):
    folder, ae, ld = runs
    cfg = json.loads((ae / "config.json").read_text())
    assert cfg["family"] == "autoencoder" and cfg["scaling_factor"] != 1.0
    assert [json.loads(l)["eval"]["psnr_heldout_emoji"] for l in (ae.parent / "metrics.jsonl").read_text().splitlines() if "eval" in l]
    index = json.loads((ld / "model_index.json").read_text())
    assert index["vae"] == "autoencoder"
    pipe = TextToImagePipeline.from_pretrained(ld)
    assert pipe.resolution == 32  # 16x16 latents, factor 2
    out = pipe("fox in noto style", num_inference_steps=2, seed=4, num_images_per_prompt=2)
    assert [im.size for im in out.images] == [(32, 32)] * 2
    pipe.save_pretrained(tmp_path / "copy")
    again = TextToImagePipeline.from_pretrained(tmp_path / "copy")("fox in noto style", num_inference_steps=2, seed=4, num_images_per_prompt=2)
    assert [np.asarray(a).tolist() for a in out.images] == [np.asarray(b).tolist() for b in again.images]
    fid = [json.loads(l)["eval"] for l in (ld.parent / "metrics.jsonl").read_text().splitlines() if "eval" in l]
    assert fid and fid[-1]["n"] == 8 and fid[-1]["fid_efficientnet_lite0"] > 0
    with pytest.raises(WordpaintError, match="multiple of 4"):
        pipe("fox", height=30, num_inference_steps=1)
    # img2img through the autoencoder: the picture is encoded, lightly noised, denoised, decoded
    picture = np.asarray(out.images[0], dtype=float)
    err = lambda s: np.abs(np.asarray(pipe("fox in noto style", image=out.images[0], strength=s, num_inference_steps=10,
                                           seed=1).images[0], dtype=float) - picture).mean()
    assert err(0.1) < err(1.0)


def test_decoder_fine_tuning_keeps_the_encoder_and_its_scale(runs, tmp_path):
    """train_encoder=False (the emoji_ae_decoder recipe): from a pipeline folder's autoencoder,
    only the decoder moves, so latents and the diffusion model trained on them stay valid."""
    from safetensors.torch import load_file

    folder, ae, ld = runs
    recipe = json.loads((ae.parent / "recipe.json").read_text())
    recipe = {k: v for k, v in recipe.items() if k not in ("wordpaint_version", "resolved_model_config", "parameters")}
    recipe["model"] = {"family": "autoencoder", "preset": "tiny_ae", "overrides": {"train_encoder": False}}
    (tmp_path / "dec.json").write_text(json.dumps(recipe))
    out = train(str(tmp_path / "dec.json"), tmp_path / "dec", data=folder, init_from=ld, show_progress=False)
    before, after = load_file(ld / "autoencoder" / "model.safetensors"), load_file(out / "model.safetensors")
    enc = [k for k in before if k.startswith(("vae.encoder.", "vae.quant_conv."))]
    dec = [k for k in before if k.startswith("vae.decoder.")]
    assert enc and all(torch.equal(before[k].float(), after[k].float()) for k in enc)
    assert any(not torch.equal(before[k].float(), after[k].float()) for k in dec)
    old, new = (json.loads((d / "config.json").read_text()) for d in (ld / "autoencoder", out))
    assert new["scaling_factor"] == old["scaling_factor"] and new["train_encoder"] is False
    # a resumed decoder run keeps the scale it started with (read from its own recipe.json);
    # resumed in a copy, since the run's pipeline is used below
    shutil.copytree(tmp_path / "dec", tmp_path / "dec_resumed")
    again = train(str(tmp_path / "dec.json"), tmp_path / "dec_resumed", data=folder, resume=True, max_steps=recipe["max_steps"] + 1,
                  show_progress=False)
    assert json.loads((again / "config.json").read_text())["scaling_factor"] == old["scaling_factor"]
    # a second decoder leg may start from the first run's own folder (one model, no manifest)
    leg2 = train(str(tmp_path / "dec.json"), tmp_path / "dec_leg2", data=folder, init_from=out, max_steps=1, show_progress=False)
    assert json.loads((leg2 / "config.json").read_text())["scaling_factor"] == old["scaling_factor"]
    started = load_file(leg2 / "model.safetensors")
    assert all(torch.equal(after[k].float(), started[k].float()) for k in enc)
    # `wordpaint model replace` puts the new decoder into a copy of the pipeline (how the bundled
    # emoji model got its fine-tuned decoder); the diffusion weights are carried over untouched
    assert main(["model", "replace", str(ld), "--component", "autoencoder", "--from", str(out), "--out", str(tmp_path / "swapped")]) == 0
    swapped = TextToImagePipeline.from_pretrained(tmp_path / "swapped")
    got = load_file(tmp_path / "swapped" / "autoencoder" / "model.safetensors")
    assert all(torch.equal(after[k].float(), got[k]) for k in after)
    assert load_file(tmp_path / "swapped" / "diffusion" / "model.safetensors").keys() == load_file(ld / "diffusion" / "model.safetensors").keys()
    assert swapped("fox in noto style", num_inference_steps=1, seed=0).images[0].size == (32, 32)
    # an autoencoder with other encoder weights would feed the diffusion model foreign latents
    other = AutoencoderModel(AutoencoderConfig(**{**swapped.vae.config.to_dict(), "train_encoder": True}))
    save_model(other, tmp_path / "other")
    with pytest.raises(WordpaintError, match="encoder weights differ"):
        swapped.with_component("autoencoder", other)
    assert swapped.with_component("autoencoder", other, allow_new_latents=True).vae is other
    assert main(["model", "replace", str(ld), "--component", "autoencoder", "--from", str(ld / "diffusion"), "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
    # --from may name a whole pipeline folder: its manifest says where the component is
    assert main(["model", "replace", str(ld), "--component", "diffusion", "--from", str(tmp_path / "swapped"), "--out", str(tmp_path / "again")]) == 0
    assert load_file(tmp_path / "again" / "autoencoder" / "model.safetensors").keys() == before.keys()
    assert main(["model", "replace", str(ld), "--component", "diffusion", "--from", str(out), "--out", str(tmp_path / "bad")]) == 2
    with pytest.raises(WordpaintError, match="missing autoencoder config"):
        train(str(tmp_path / "dec.json"), tmp_path / "dec2", data=folder, init_from=tmp_path, show_progress=False)
    with pytest.raises(WordpaintError, match="pass --init-from"):
        train(str(tmp_path / "dec.json"), tmp_path / "dec3", data=folder, show_progress=False)


def test_autoencoder_trains_on_some_kinds_and_evaluates_others(tmp_path):
    """data.kinds picks the training rows (the emoji-only decoder leg); data.eval_kinds the
    evaluated ones, by default the same kinds."""
    folder = _folder(tmp_path / "folder", n=12)
    rows = [json.loads(l) for l in (folder / "metadata.jsonl").read_text().splitlines()]
    for i, r in enumerate(rows):
        if i % 2:
            r.update(kind="icon", split="test" if i % 4 == 1 else "train")
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = json.loads((Path(wordpaint.__file__).parent / "recipes" / "tiny_ae.json").read_text())
    for name, extra in {"emoji": {}, "both": {"eval_kinds": ["emoji", "icon"]}}.items():
        recipe = {**base, "max_steps": 2, "eval_every": 2, "data": {**base["data"], "kinds": ["emoji"], **extra}}
        (tmp_path / f"{name}.json").write_text(json.dumps(recipe))
        out = train(str(tmp_path / f"{name}.json"), tmp_path / name, data=folder, show_progress=False)
        evals = [json.loads(l)["eval"] for l in (out.parent / "metrics.jsonl").read_text().splitlines() if "eval" in l]
        groups = sorted(k for k in evals[-1] if k.startswith("psnr_"))
        assert groups == (["psnr_heldout_emoji"] if name == "emoji" else ["psnr_heldout_emoji", "psnr_test_icon"])


def test_mismatched_autoencoder_and_missing_autoencoder_are_clear(runs, text_encoder, tmp_path):
    folder, ae, ld = runs
    model = build_model(build_config(family="diffusion", preset="tiny"))  # 3 channels, not 4
    vae = TextToImagePipeline.from_pretrained(ld).vae
    with pytest.raises(ModelLoadError, match="3 channels"):
        TextToImagePipeline(text_encoder=text_encoder, model=model, vae=vae)
    with pytest.raises(WordpaintError, match="data.autoencoder"):
        train("tiny_latent", tmp_path / "x", data=folder, autoencoder="", show_progress=False)


def test_autoencoder_recipe_needs_an_image_folder(tmp_path):
    with pytest.raises(WordpaintError, match="image folder"):
        train("tiny_ae", tmp_path / "x", data=tmp_path / "nowhere", show_progress=False)


def _suite_folder(root, *, styles=("noto", "twemoji", "openmoji")):
    """A 32 px folder shaped like the corpus for the first 4 evaluation concepts, one image per
    style; concepts 0-2 each have one held-out cell."""
    from wordpaint.data.emoji import HELDOUT_FILE

    vocab = json.loads(HELDOUT_FILE.read_text())["eval_concepts"][:4]
    (root / "images").mkdir(parents=True)
    rows = []
    for i, v in enumerate(vocab):
        for j, style in enumerate(styles):
            ex = sample_example(np.random.default_rng(10 * i + j), size=32)
            Image.fromarray(render_scene(ex.scene, 32)).save(root / "images" / f"{i}-{style}.png")
            rows.append({"file_name": f"images/{i}-{style}.png", "text": f"{v['name']} in {style} style", "name": v["name"], "style": style,
                         "kind": "emoji", "concept": v["concept"], "split": "heldout" if j == i % 3 and i < 3 else "train"})
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_emoji_suite_report(runs, tmp_path):
    """The emoji suite on a tiny latent model and an untrained wordpaint-clip: every figure is
    there, accuracies are fractions, and the sample sheet is written."""
    from wordpaint.eval.report import write_suite_report
    from wordpaint.models.clip import ClipConfig, ClipModel, WordpaintClip

    root = _suite_folder(tmp_path / "emoji")
    torch.manual_seed(0)
    clip = WordpaintClip(ClipModel(ClipConfig(hidden_dim=32, embed_dim=16, dropout=0.0)))
    pipe = TextToImagePipeline.from_pretrained(runs[2])
    paths = write_suite_report(pipe, "emoji", tmp_path / "report", model_name="tiny", data=root, clip=clip, samples_per_cell=2,
                               seed=0, steps=2, guidance=2.0, limit_concepts=4, show_progress=False)
    res = json.loads(paths["json"].read_text())
    seen, held = res["figures"]["seen_cells"], res["figures"]["heldout_cells"]
    assert (seen["cells"], seen["images"], held["cells"], held["images"]) == (9, 18, 3, 6)
    for f in (seen, held):
        assert 0 <= f["concept_accuracy"] <= 1 and 0 <= f["style_accuracy"] <= 1 and f["FID (EfficientNet-Lite0)"] > 0
        assert 0 <= f["nearest_real_concept_accuracy (pixels)"] <= 1 and 0 <= f["nearest_real_style_accuracy (pixels)"] <= 1
        # the confusion counts every image once, and its diagonal is the style accuracy
        conf = f["style_confusion (true -> judged)"]
        assert sum(map(sum, (row.values() for row in conf.values()))) == f["images"]
        assert sum(row[t] for t, row in conf.items()) == round(f["style_accuracy"] * f["images"])
    assert (tmp_path / "report" / "samples.png").is_file() and "concept acc." in paths["markdown"].read_text()
    assert "Style judged by wordpaint-clip" in paths["markdown"].read_text()
    assert "prior_strength" not in res["sampling"]  # recorded only when a prior drew the images


def test_bundled_emoji_model_draws_64px():
    pipe = TextToImagePipeline.from_pretrained("emoji")
    assert pipe.vae is not None and pipe.resolution == 64
    out = pipe("red heart in twemoji style", num_inference_steps=2, seed=0)
    assert out.images[0].size == (64, 64) and out.metadata[0]["seed"] == 0
    # the UNet and its low-noise expert ship as int8 weights; the expert draws the steps at sigma <= 0.2
    assert pipe.model.stored_int8 and pipe.expert.stored_int8 and out.metadata[0]["expert_sigma"] == 0.2
    # its restorer runs on the decoded pictures by default (fp16, not int8), and changes them
    assert pipe.restorer is not None and not getattr(pipe.restorer, "stored_int8", False) and out.metadata[0]["restore"] is True
    plain = pipe("red heart in twemoji style", num_inference_steps=2, seed=0, restore=False)
    assert "restore" not in plain.metadata[0] and not np.array_equal(np.asarray(plain.images[0]), np.asarray(out.images[0]))
    # the bundled heart is red: more red than green or blue in the drawn pixels
    a = np.asarray(out.images[0]).astype(float)
    ink = a.sum(-1) < 700  # not white background
    assert ink.mean() > 0.05
    assert a[ink][:, 0].mean() > a[ink][:, 1].mean() + 30


def test_decoder_extra_layers_start_as_the_identity_and_are_checked(tmp_path):
    """decoder_extra_layers: resnets added to each decoder level, last convolution zeroed, so a
    deeper decoder started from a shallower one's weights (--init-from) decodes exactly as it did."""
    from wordpaint.training.train import keep_new_decoder_layers

    torch.manual_seed(0)
    base = AutoencoderModel(build_config(family="autoencoder", preset="tiny_ae", train_encoder=False))
    deep = AutoencoderModel(build_config(family="autoencoder", preset="tiny_ae", train_encoder=False, decoder_extra_layers=1))
    assert sum(p.numel() for p in deep.parameters()) > sum(p.numel() for p in base.parameters())
    weights = keep_new_decoder_layers(base.state_dict(), deep)
    deep.load_state_dict(weights, strict=True)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(deep.reconstruct(x), base.reconstruct(x), atol=1e-6)
    # the added layers train: a loss step moves them
    deep(({"pixel_values": x})).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in deep.named_parameters() if ".resnets.2." in n)
    # the folder round trip rebuilds the extra layers from config.json
    save_model(deep, tmp_path / "deep")
    assert torch.equal(load_model(tmp_path / "deep").reconstruct(x), deep.reconstruct(x))
    plain = base.state_dict()
    assert keep_new_decoder_layers(plain, base) is plain  # no extra layers: the weights as they are
    with pytest.raises(ValueError, match="decoder_extra_layers must be an integer"):
        AutoencoderConfig.from_dict({"decoder_extra_layers": 1.5})


def test_decoder_inputs_pair_sampled_latents_with_their_pictures_and_train_the_decoder(runs, tmp_path):
    """python -m wordpaint.training.decoder_inputs runs the pipeline's own sampler from each training
    picture's noised latent; a decoder recipe with decoder_input_share decodes part of each batch
    from those latents toward the real picture, and every way of getting it wrong is named."""
    from safetensors.torch import load_file

    from wordpaint.training.decoder_inputs import load_decoder_inputs, main as make_inputs

    folder, ae, ld = runs
    pairs = tmp_path / "pairs.safetensors"
    make_inputs(["--model", str(ld), "--data", str(folder), "--per-image", "2", "--strengths", "0.5,1", "--out", str(pairs)])
    latents, names, settings = load_decoder_inputs(pairs)
    train_rows = [json.loads(l) for l in (folder / "metadata.jsonl").read_text().splitlines() if json.loads(l)["split"] == "train"]
    assert names == [r["file_name"] for r in train_rows] and latents.shape == (len(names), 2, 4, 16, 16)
    assert settings["strengths"] == [0.5, 1.0] and [p.name for p in tmp_path.iterdir()] == ["pairs.safetensors"]  # no temporary left
    # the sampler moved each latent off the picture's own one, the more the higher the strength
    pipe = TextToImagePipeline.from_pretrained(ld)
    clean = pipe.vae.encode(ImageFolderStream(folder, size=32, show_progress=False).data)  # (N, 4, 16, 16), rows in order
    strengths = load_file(pairs)["strengths"]
    err = ((latents.float() - clean[:, None]) ** 2).mean(dim=(2, 3, 4))  # (N, K)
    assert 0 < err[strengths == 0.5].mean() < err[strengths == 1.0].mean()

    # the model: a share of ~1 with the clean latents as the given ones is the plain decoder's loss
    torch.manual_seed(0)
    plain = AutoencoderModel(build_config(family="autoencoder", preset="tiny_ae", train_encoder=False))
    given = AutoencoderModel(build_config(family="autoencoder", preset="tiny_ae", train_encoder=False, decoder_input_share=0.999999))
    given.load_state_dict(plain.state_dict())
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    loss = lambda m, z: m({"pixel_values": x, "decoder_input": z}, generator=torch.Generator().manual_seed(1)).item()  # noqa: E731
    assert loss(given, given.encode(x)) == pytest.approx(loss(plain, None), rel=1e-5)
    assert loss(given, torch.zeros(4, 4, 16, 16)) != pytest.approx(loss(plain, None), rel=1e-3)
    with pytest.raises(WordpaintError, match="data.decoder_inputs"):
        given({"pixel_values": x})
    with pytest.raises(ValueError, match="decoder_input_share must be a fraction"):
        AutoencoderConfig.from_dict({"train_encoder": False, "decoder_input_share": 1.0})
    with pytest.raises(ValueError, match="trains the decoder alone"):
        AutoencoderConfig.from_dict({"decoder_input_share": 0.5})

    # training: the decoder moves, the encoder does not
    recipe = json.loads((ae.parent / "recipe.json").read_text())
    recipe = {k: v for k, v in recipe.items() if k not in ("wordpaint_version", "resolved_model_config", "parameters")}
    recipe["model"] = {"family": "autoencoder", "preset": "tiny_ae", "overrides": {"train_encoder": False, "decoder_input_share": 0.5}}
    recipe["max_steps"] = 2
    (tmp_path / "dec.json").write_text(json.dumps(recipe))
    out = train(str(tmp_path / "dec.json"), tmp_path / "dec", data=folder, init_from=ld, decoder_inputs=pairs, show_progress=False)
    before, after = load_file(ld / "autoencoder" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(before[k].float(), after[k].float()) for k in before if k.startswith("vae.encoder."))
    assert any(not torch.equal(before[k].float(), after[k].float()) for k in before if k.startswith("vae.decoder."))
    # each without the other, a missing file, a corrupt one, a file for other pictures: one clear error each
    with pytest.raises(WordpaintError, match="go together"):
        train(str(tmp_path / "dec.json"), tmp_path / "e1", data=folder, init_from=ld, show_progress=False)
    with pytest.raises(WordpaintError, match="not found"):
        train(str(tmp_path / "dec.json"), tmp_path / "e2", data=folder, init_from=ld, decoder_inputs=tmp_path / "none.safetensors",
              show_progress=False)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WordpaintError, match="not a valid pairs file"):
        load_decoder_inputs(tmp_path / "bad.safetensors")
    from wordpaint.training.decoder_inputs import save_decoder_inputs

    save_decoder_inputs(tmp_path / "few.safetensors", latents[:3], strengths[:3], names[:3], settings={})
    with pytest.raises(WordpaintError, match="no sampled latents for"):
        train(str(tmp_path / "dec.json"), tmp_path / "e3", data=folder, init_from=ld, decoder_inputs=tmp_path / "few.safetensors",
              show_progress=False)


def test_a_training_pack_carries_what_the_unet_needs_and_trains_it_without_the_corpus(runs, tmp_path):
    """benchmarks/emoji_gpu.py (for a GPU machine that has neither the pictures nor MiniLM): pack the
    frozen inputs, train from the pack alone, and put the EMA weights back into a pipeline."""
    import importlib.util

    from safetensors.torch import load_file

    spec = importlib.util.spec_from_file_location("emoji_gpu", Path(__file__).parents[1] / "benchmarks" / "emoji_gpu.py")
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    folder, ae, ld = runs
    pk, w = tmp_path / "pack", tmp_path / "weights"
    gpu.main(["pack", "--data", str(folder), "--autoencoder", str(ae), "--model", str(ld / "diffusion"), "--size", "32", "--out", str(pk)])
    info, p = gpu.read_pack(pk)
    rows = [json.loads(l) for l in (folder / "metadata.jsonl").read_text().splitlines()]
    assert info["train_files"] == [r["file_name"] for r in rows if r["split"] == "train"]
    assert info["heldout_files"] == [r["file_name"] for r in rows if r["split"] == "heldout"]
    # the latents are the autoencoder's (float16), the captions each row's two, "" among them
    pipe = TextToImagePipeline.from_pretrained(ld)
    clean = pipe.vae.encode(ImageFolderStream(folder, size=32, show_progress=False).data)  # (N, 4, 16, 16), train rows in order
    assert p["train_latents"].dtype == torch.float16 and torch.allclose(p["train_latents"].float(), clean, atol=2e-2)
    caps = info["captions"]
    assert caps[info["empty_caption"]] == "" and caps[p["train_caption_index"][0, 1]] == f"{rows[1]['name']} in twemoji style"
    # the cut float16 encoder gives the pipeline encoder's token states
    states, mask = gpu.caption_states(pk, info, p, torch.device("cpu"))
    ref = pipe.text_encoder.encode(caps)
    assert torch.equal(mask[:, : ref.attention_mask.shape[1]], ref.attention_mask.long())
    assert (states[:, : ref.hidden_states.shape[1]] - ref.hidden_states).abs().max() < 2e-2

    gpu.main(["train", "--pack", str(pk), "--out", str(w), "--batch-size", "4", "--max-steps", "3", "--warmup-steps", "1",
              "--log-every", "1", "--eval-every", "3"])
    res = json.loads((w / "result.json").read_text())
    log = [json.loads(l) for l in (w / "train_log.jsonl").read_text().splitlines()]
    assert res["steps"] == 3 and [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log)
    assert "val_heldout" in log[-1] and all((w / s).stat().st_size < 16 * 2**20 for s in res["shards"])
    assert res["diffusion_config"] == info["diffusion_config"]  # assemble builds from the config the pack was made for
    gpu.main(["assemble", "--weights", str(w), "--out", str(tmp_path / "dif")])
    model = load_model(tmp_path / "dif")
    shards = {}
    for s in res["shards"]:
        shards.update(load_file(w / s))
    assert all(torch.equal(v, shards[k]) for k, v in model.state_dict().items())
    out = pipe.with_component("diffusion", model)("fox in noto style", num_inference_steps=2, seed=0)
    assert out.images[0].size == (32, 32)

    with pytest.raises(SystemExit, match="not a training pack"):
        gpu.main(["train", "--pack", str(tmp_path / "nowhere"), "--out", str(w)])
    with pytest.raises(SystemExit, match="no result.json"):
        gpu.main(["assemble", "--weights", str(pk), "--out", str(tmp_path / "x")])


def test_gradient_difference_term_charges_for_texture_on_a_flat_fill():
    from wordpaint.models.autoencoder import gradient_difference

    flat = torch.zeros(2, 3, 16, 16)
    textured = flat + 0.05 * (torch.arange(16) % 2).float()  # stripes: each neighbour differs by 0.05
    shifted = flat + 0.05  # the same mean error, but flat
    assert gradient_difference(flat, flat).item() == 0.0
    assert gradient_difference(shifted, flat).item() == pytest.approx(0.0, abs=1e-7)
    assert gradient_difference(textured, flat).item() == pytest.approx(0.05)  # horizontal only
    torch.manual_seed(0)
    plain = AutoencoderModel(build_config(family="autoencoder", preset="tiny_ae", train_encoder=False))
    gdl = AutoencoderModel(build_config(family="autoencoder", preset="tiny_ae", train_encoder=False, gradient_weight=2.0))
    gdl.load_state_dict(plain.state_dict())
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    recon = plain.vae.decode(plain.vae.encode(x).latent_dist.mean).sample
    assert gdl({"pixel_values": x}).item() == pytest.approx(plain({"pixel_values": x}).item() + 2.0 * gradient_difference(recon, x).item(), rel=1e-5)
    with pytest.raises(ValueError, match="gradient_weight must be a number"):
        AutoencoderConfig.from_dict({"gradient_weight": -0.5})
