import pytest
import torch

from wordpaint.models.registry import PRESETS, build_config, build_model, unet_levels
from wordpaint.sampling.samplers import SAMPLERS


def test_tiny_preset_is_tiny():
    m = build_model(build_config(preset="tiny"))
    assert sum(p.numel() for p in m.parameters()) < 100_000
    assert set(PRESETS) >= {"tiny", "shapes48"}


def test_unknown_preset_and_family():
    with pytest.raises(ValueError, match="unknown model preset"):
        build_config(preset="huge")
    with pytest.raises(ValueError, match="unknown model family"):
        build_config(family="gan")


def test_unet_levels_mirrors_the_blocks_and_configs_check_level_counts():
    kw = unet_levels((8, 16, 32), (False, True, True))
    assert kw["down_block_types"] == ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    assert kw["up_block_types"] == ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    with pytest.raises(ValueError, match="2 channel widths but 3"):
        unet_levels((8, 16), (False, True, True))
    # a recipe override that widens the UNet by a level but keeps the preset's block lists
    with pytest.raises(ValueError, match="one entry per level each, got block_out_channels: 3, down_block_types: 2"):
        build_config(preset="tiny", block_out_channels=(4, 8, 16))


@pytest.mark.parametrize("sampling", ["uniform", "lognormal"])
def test_loss_falls_when_overfitting_one_batch(text_encoder, sampling):
    from wordpaint.data.stream import ShapesStream

    torch.manual_seed(0)
    model = build_model(build_config(preset="tiny", timestep_sampling=sampling))
    images, caps = ShapesStream(size=32, seed=0).batch(0, 8)
    enc = text_encoder.encode(caps)
    batch = {"pixel_values": images, "encoder_hidden_states": enc.hidden_states, "encoder_attention_mask": enc.attention_mask}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator()

    def loss_at(seed):  # the same timesteps and noise each time: a fixed objective
        return model(batch, generator=gen.manual_seed(seed))

    with torch.no_grad():
        first = sum(loss_at(s).item() for s in range(4)) / 4
    for step in range(120):
        loss = loss_at(step % 4)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = sum(loss_at(s).item() for s in range(4)) / 4
    assert last < 0.6 * first, (first, last)


def test_sigmas_and_timestep_mapping():
    m = build_model(build_config(preset="tiny"))
    s = m.sigmas(10)
    assert s.shape == (11,) and s[-1] == 0 and (s[:-1].diff() < 0).all()
    k = m.sigmas(10, "karras")
    assert k.shape == (11,) and k[-1] == 0 and (k[:-1].diff() < 0).all() and k[0].item() == pytest.approx(80.0)
    assert k[-2] == pytest.approx(m.log_sigmas.exp()[0].item())
    t = m.sigma_to_t(m.log_sigmas.exp()[[0, 500, 999]])
    assert torch.allclose(t, torch.tensor([0.0, 500.0, 999.0]), atol=1e-3)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_reach_the_data_for_an_exact_denoiser(name):
    # data = a single point x0: the ideal denoiser returns x0 at any sigma, and every sampler must land on it
    x0 = torch.linspace(-1, 1, 12).reshape(1, 3, 2, 2)
    sigmas = torch.tensor([80.0, 10.0, 2.0, 0.5, 0.0])
    x = x0 + sigmas[0] * torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    out = SAMPLERS[name](lambda x, s: x0.expand_as(x), x, sigmas, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out, x0, atol=1e-5)


def test_dpmpp_is_more_accurate_than_euler_on_a_gaussian():
    # data ~ N(0, 1): D(x, s) = x / (1 + s^2), the exact ODE solution maps x_T to x_T / sqrt(1 + s_max^2)
    den = lambda x, s: x / (1 + s**2)
    sig = torch.cat([torch.logspace(1, -1, 5), torch.zeros(1)])
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * (1 + sig[0] ** 2) ** 0.5
    exact = x / (1 + sig[0] ** 2) ** 0.5
    err = {k: (SAMPLERS[k](den, x.clone(), sig) - exact).abs().mean().item() for k in ("euler", "dpmpp_2m")}
    assert err["dpmpp_2m"] < err["euler"]


def test_sde_sampler_draws_the_data_distribution_not_its_mean():
    # data ~ N(0, 1) with the exact denoiser: the SDE sampler must return samples of variance 1 (a
    # sampler that returned the posterior mean from a high last sigma would shrink them), from
    # the generator alone (same seed, same samples), and eta = 0 must be the ODE solver (2M)
    den = lambda x, s: x / (1 + s**2)
    sig = torch.cat([torch.logspace(1.5, -1.5, 25), torch.zeros(1)])
    x = torch.randn(20000, generator=torch.Generator().manual_seed(0)) * (1 + sig[0] ** 2) ** 0.5
    sde = SAMPLERS["dpmpp_2m_sde"]
    out = sde(den, x.clone(), sig, generator=torch.Generator().manual_seed(1))
    assert abs(out.var().item() - 1) < 0.05 and abs(out.mean().item()) < 0.03
    assert torch.equal(out, sde(den, x.clone(), sig, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(out, sde(den, x.clone(), sig, generator=torch.Generator().manual_seed(2)))
    assert torch.allclose(sde(den, x.clone(), sig, eta=0.0), SAMPLERS["dpmpp_2m"](den, x.clone(), sig), atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoiser_inverts_the_training_target(prediction_type, monkeypatch):
    # a network that outputs the exact training target must make denoise() return x0 exactly
    m = build_model(build_config(preset="tiny", prediction_type=prediction_type))
    x0, noise = torch.rand(2, 3, 8, 8) * 2 - 1, torch.randn(2, 3, 8, 8)
    sigma = torch.tensor(1.7)
    abar = 1 / (1 + sigma**2)
    target = abar.sqrt() * noise - (1 - abar).sqrt() * x0 if prediction_type == "v_prediction" else noise
    monkeypatch.setattr(m, "net", lambda *a: target)
    assert torch.allclose(m.denoise(x0 + sigma * noise, sigma, None, None), x0, atol=1e-5)


def test_unknown_prediction_type():
    with pytest.raises(ValueError, match="prediction_type"):
        build_config(preset="tiny", prediction_type="x0")


def test_lognormal_timesteps_are_continuous_and_in_range():
    model = build_model(build_config(preset="tiny", timestep_sampling="lognormal"))
    sigma = torch.tensor([1e-4, 0.5, 1e6])
    t = model.sigma_to_t(sigma.clamp(model.log_sigmas[0].exp(), model.log_sigmas[-1].exp()))
    assert 0 <= t.min() and t.max() <= model.config.num_train_timesteps - 1 and t[1] != t[1].round()
    with pytest.raises(ValueError, match="timestep_sampling"):
        build_config(preset="tiny", timestep_sampling="beta")


@pytest.mark.parametrize("sampling", ["uniform", "lognormal"])
def test_terminal_prob_trains_that_fraction_at_the_last_timestep(sampling):
    """terminal_prob puts samples at t = T-1 (where the trailing schedule's first step lands) and
    leaves the other samples' timesteps and noise exactly as without it."""
    from wordpaint.models.diffusion import DiffusionConfig

    def timesteps(p: float) -> torch.Tensor:
        torch.manual_seed(0)
        model = build_model(build_config(preset="tiny", timestep_sampling=sampling, terminal_prob=p))
        seen = []
        model.net = lambda x, t, *a: (seen.append(t.clone()), torch.zeros_like(x))[1]
        batch = {"pixel_values": torch.zeros(64, 3, 32, 32), "encoder_hidden_states": torch.zeros(64, 1, 384),
                 "encoder_attention_mask": torch.ones(64, 1, dtype=torch.bool)}
        model(batch, generator=torch.Generator().manual_seed(3))
        return seen[0].float()

    T = 1000
    base, half, every = timesteps(0.0), timesteps(0.5), timesteps(1.0)
    assert (every == T - 1).all() and not (base == T - 1).any()
    last = half == T - 1
    assert 10 < int(last.sum()) < 54  # ~half of 64
    assert torch.equal(half[~last], base[~last])
    assert DiffusionConfig.from_dict(build_config(preset="tiny", terminal_prob=0.05).to_dict()).terminal_prob == 0.05
    for bad in (1.5, -0.1, "0.05", None):
        with pytest.raises(ValueError, match="terminal_prob"):
            build_config(preset="tiny", terminal_prob=bad)


def test_pooled_text_is_the_encoders_vector_and_warm_starts_exactly(text_encoder):
    from wordpaint.models.diffusion import DiffusionConfig, pooled_states
    from wordpaint.training.train import zero_new_class_embedding

    # prompts of different lengths: the shorter one is padded, and padding must not leak in
    enc = text_encoder.encode(["a red circle", "three small purple triangles left of a big yellow square"])
    assert not enc.attention_mask.all()
    assert torch.allclose(pooled_states(enc.hidden_states, enc.attention_mask), enc.pooled, atol=1e-5)

    torch.manual_seed(0)
    base = build_model(build_config(preset="tiny"))
    cfg = build_config(preset="tiny", pooled_text=True)
    assert DiffusionConfig.from_dict(cfg.to_dict()).pooled_text
    pooled = build_model(cfg)
    pooled.load_state_dict(zero_new_class_embedding(base.state_dict(), pooled))
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10.0, 500.0])
    with torch.no_grad():
        assert torch.allclose(pooled.net(x, t, enc.hidden_states, enc.attention_mask),
                              base.net(x, t, enc.hidden_states, enc.attention_mask), atol=1e-6)
    # the zero last layer still gets a gradient, so the prompt vector starts to count at once
    batch = {"pixel_values": x.clamp(-1, 1), "encoder_hidden_states": enc.hidden_states, "encoder_attention_mask": enc.attention_mask}
    pooled(batch, generator=torch.Generator().manual_seed(0)).backward()
    assert pooled.unet.class_embedding.linear_2.weight.grad.abs().sum() > 0
    assert zero_new_class_embedding(pooled.state_dict(), pooled).keys() == pooled.state_dict().keys()
