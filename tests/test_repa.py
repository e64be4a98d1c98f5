"""REPA (representation alignment, issue 4): the config checks its options, the model's loss is
the denoising loss plus the weighted alignment term, the targets are EfficientNet-Lite0's feature
maps, and the tiny recipe trains and starts from a model without the head (tiny configs)."""

import json

import pytest
import torch

from wordpaint.errors import WordpaintError
from wordpaint.models.diffusion import DiffusionConfig, DiffusionModel
from wordpaint.models.registry import build_config
from wordpaint.training.train import load_init_weights, repa_targets, train
from helpers import fit


def _batch(config: DiffusionConfig, *, b: int = 3, target: bool = True) -> dict:
    g = torch.Generator().manual_seed(0)
    r = config.resolution
    out = {"pixel_values": torch.randn(b, config.in_channels, r, r, generator=g),
           "encoder_hidden_states": torch.randn(b, 5, config.cross_attention_dim, generator=g),
           "encoder_attention_mask": torch.ones(b, 5, dtype=torch.bool)}
    if target:
        grid = r // config.downsample_factor
        out["repa_target"] = torch.randn(b, config.repa_dim, grid, grid, generator=g)
    return out


@pytest.mark.parametrize("bad", [{"repa_weight": -0.1}, {"repa_weight": True}, {"repa_weight": "0.5"}, {"repa_dim": 0}, {"repa_dim": 2.5}])
def test_config_rejects_bad_options(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        build_config(family="diffusion", preset="tiny_latent", **bad)


def test_loss_is_denoising_plus_weighted_alignment():
    torch.manual_seed(0)
    config = build_config(family="diffusion", preset="tiny_latent", repa_weight=0.5, repa_dim=16)
    model, plain = DiffusionModel(config), DiffusionModel(build_config(family="diffusion", preset="tiny_latent"))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("repa_head.")})
    batch = _batch(config)
    loss = model(batch, generator=torch.Generator().manual_seed(1))
    terms = model.loss_terms
    # the head changes nothing the denoiser computes: same draws, same denoising loss as without it
    assert terms["loss_diffusion"] == pytest.approx(plain(batch, generator=torch.Generator().manual_seed(1)).item(), rel=1e-6)
    assert loss.item() == pytest.approx(terms["loss_diffusion"] + 0.5 * terms["loss_repa"], rel=1e-5)
    assert 0 <= terms["loss_repa"] <= 2
    # the alignment term reaches the UNet's encoder (through the mid block), not only the head
    model.zero_grad()
    model.repa_loss(_mid(model, batch), batch).backward()
    assert model.unet.down_blocks[0].resnets[0].conv1.weight.grad.abs().sum() > 0
    assert model.unet.up_blocks[-1].resnets[0].conv1.weight.grad is None  # the decoder half is not on its path


def _mid(model: DiffusionModel, batch: dict) -> torch.Tensor:
    return model.net_and_mid(batch["pixel_values"], torch.full((len(batch["pixel_values"]),), 500.0),
                             batch["encoder_hidden_states"], batch["encoder_attention_mask"])[1]


def test_alignment_can_be_learned():
    torch.manual_seed(0)
    config = build_config(family="diffusion", preset="tiny_latent", repa_weight=1.0, repa_dim=16)
    model, batch = DiffusionModel(config), _batch(config, b=4)
    first, last = fit(model, lambda step: model.repa_loss(_mid(model, batch), batch), steps=30)
    assert last < 0.5 * first


def test_missing_or_misshapen_targets_are_clear_errors():
    config = build_config(family="diffusion", preset="tiny_latent", repa_weight=0.5, repa_dim=16)
    model = DiffusionModel(config)
    with pytest.raises(ValueError, match="needs batch\\['repa_target'\\]"):
        model(_batch(config, target=False))
    bad = _batch(config)
    bad["repa_target"] = bad["repa_target"][:, :, :2]
    with pytest.raises(ValueError, match="repa_target has shape"):
        model(bad)


def test_targets_are_the_feature_maps_the_metrics_pool():
    from wordpaint.eval.metrics import extract

    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g) for _ in range(3)]
    maps = repa_targets(images, grid=4)
    assert maps.shape == (3, 1280, 4, 4) and maps.dtype == torch.float16
    # pooled over the grid they are the 1280-d features FID reads (7x7 -> 4x4 pooling overlaps, so
    # compare the grid-1 map, which is exactly the global average)
    pooled = repa_targets(images, grid=1).float().flatten(1)
    assert torch.allclose(pooled, extract(images)[0].float(), atol=2e-2, rtol=1e-2)
    with pytest.raises(WordpaintError, match="repa_dim must be 1280"):
        repa_targets(images, grid=4, dim=16)


def test_tiny_recipe_trains_logs_both_terms_and_starts_from_a_model_without_the_head(latent_runs, tmp_path):
    from wordpaint.pipelines.text_to_image import load_model

    folder, ae, ld = latent_runs
    run = train("tiny_repa", tmp_path / "run", data=folder, autoencoder=ae, init_from=ld, show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "loss" in r]
    assert logged and all("loss_diffusion" in r and "loss_repa" in r for r in logged)
    model = load_model(run / "diffusion")
    assert model.config.repa_weight == 0.5 and model.repa_head is not None
    # --init-from a model without the head: the denoiser's weights are the source's, the head is fresh
    fresh = DiffusionModel(model.config)
    loaded = load_init_weights(fresh, ld, component="diffusion")
    src = load_model(ld / "diffusion")
    assert all(torch.equal(loaded[k], v) for k, v in src.state_dict().items())
    assert any(k.startswith("repa_head.") for k in loaded)


def test_repa_needs_an_image_folder(tmp_path):
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"extends": "tiny", "model": {"overrides": {"repa_weight": 0.5}}, "max_steps": 1}))
    with pytest.raises(WordpaintError, match="repa_weight needs an image folder"):
        train(str(recipe), tmp_path / "run", show_progress=False)


def test_stream_batch_rows_are_the_batch(latent_runs):
    from wordpaint.data.imagefolder import ImageFolderStream

    stream = ImageFolderStream(latent_runs[0], size=32, seed=2, show_progress=False)
    for step in range(3):
        x, _ = stream.batch(step, 5)
        assert torch.equal(stream.data[stream.batch_rows(step, 5)], x)
