"""Text-conditioned pixel diffusion: diffusers' UNet2DConditionModel cross-attending to frozen
text-encoder token states, trained with the epsilon objective on a diffusers noise schedule.

Read top to bottom: config -> model (owns its loss) -> denoiser view for the samplers.
Classifier-free guidance comes from condition dropout, done on captions by the data stream
(an empty caption is the unconditional input at sampling time too).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from wordpaint.models.config import ConfigMixin, init_device


@dataclass
class DiffusionConfig(ConfigMixin):
    """Everything needed to rebuild the network and its noise schedule."""

    family = "diffusion"  # class attribute (no annotation): not a config field

    resolution: int = 48
    in_channels: int = 3
    block_out_channels: tuple[int, ...] = (32, 64, 128, 192)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    attention_head_dim: int = 32
    norm_num_groups: int = 16
    cross_attention_dim: int = 384  # = text encoder hidden size (MiniLM: 384)
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"  # or "epsilon"
    # min-SNR-gamma weighting (Hang et al. 2023). Off by default: in x0 terms it weights a timestep by
    # min(snr, gamma), starving the high-noise steps that decide background and layout.
    snr_gamma: float | None = None
    cond_drop_prob: float = 0.1
    # training noise levels: "uniform" over the T discrete timesteps (DDPM), or "lognormal" in
    # sigma (EDM, Karras et al. 2022: ln sigma ~ N(mean, std)), which spends the steps on the
    # mid-noise range where shapes form instead of on near-pure noise
    timestep_sampling: str = "uniform"
    lognormal_mean: float = -0.6
    lognormal_std: float = 1.4
    # fraction of each batch trained at the last timestep (t = T-1, sigma ~2e4: pure noise), where
    # the "trailing" schedule's first sampling step always lands. ln sigma ~ N(-0.6, 1.4) puts
    # ~0.03% of samples at t >= 990, so that step (the one that sets the background's colour and
    # the rough layout) is almost untrained and drifts in every continuation leg: a 700-step leg
    # from the bundle drew 19 of 31 black backgrounds grey in one step (bundle: 2 of 31).
    terminal_prob: float = 0.0
    # layout grounding: extra input channels the UNet reads beside the noisy image
    # (wordpaint.text.layout.LAYOUT_CHANNELS = 13; 0 = a prompt-only model). With layouts, each
    # training example also loses its layout alone with layout_drop_prob, so one model serves
    # both prompt-only and planned generation.
    layout_channels: int = 0
    layout_drop_prob: float = 0.1
    # ... and of the examples that keep their layout, this fraction loses its caption alone, so the
    # model learns to draw from the layout by itself (colours and shapes painted in their boxes)
    # instead of reading them from the text, where a held-out pair's colours bleed between objects
    text_drop_prob: float = 0.0
    # object-weighted loss: per-pixel weight 1 + object_loss_weight * object map (0 on the
    # background, ref_area / area inside each object's box; wordpaint.text.layout.object_weight_map),
    # renormalised to mean 1 per image, so small objects' shapes and colours are not drowned by the
    # background's pixels. 0 = plain MSE. Needs training data with true boxes (the shapes world).
    object_loss_weight: float = 0.0
    # pooled-text conditioning: the prompt's sentence vector (masked mean of the token states,
    # L2-normalised as sentence-transformers pools MiniLM) goes through diffusers' "projection"
    # class embedding (an MLP) and is added to the timestep embedding, so every ResNet block at
    # every resolution is modulated by the whole prompt, as Imagen and SDXL add a pooled text
    # vector. Cross-attention alone sits only at the two coarsest levels of the small presets.
    pooled_text: bool = False
    # layout at every resolution (layout models): besides the input channels, the layout is
    # average-pooled to each skip connection's grid and added there through a zero-initialised
    # 3x3 convolution, via diffusers' ControlNet inputs (down_block_additional_residuals,
    # mid_block_additional_residual). Without it the layout enters only at conv_in and must survive
    # every block to reach the decoder; small objects' colours and shapes are what it loses.
    layout_residuals: bool = False
    # silhouette layouts (layout models): an object whose shape the plan names is painted into the
    # layout channels as that shape's anti-aliased silhouette in its box (the shapes world's own
    # geometry, wordpaint.data.shapes.shape_coverage) instead of as the filled box, as
    # segmentation-map conditioning (Make-A-Scene, ControlNet-seg) gives a mask rather than a box.
    # The plan holds no more than before (shape + box); the UNet no longer has to invent a ~9 px
    # star's points inside a box, which is where box layouts fail most.
    layout_silhouettes: bool = False
    # reference-image conditioning: the layout channels carry the latent of a reference picture
    # (for the emoji model: the same concept drawn in another style) instead of a planned layout,
    # as Re-Imagen and retrieval-augmented diffusion condition on retrieved neighbours. The model
    # learns to redraw the reference's subject in the prompt's style; the pipeline takes it as
    # ``reference=`` (an image) and uses no planner. Needs layout_channels == in_channels.
    reference_image: bool = False
    # representation alignment (REPA, Yu et al. 2024): the mid block's (B, C, h, w) states, through
    # a small MLP head (1x1 convolutions), are pulled toward a frozen image network's features of
    # the *clean* image (batch["repa_target"], (B, repa_dim, h, w)) at every noise level, with loss
    # repa_weight * mean(1 - cosine similarity) per position, so the denoiser's hidden states learn
    # what the picture is sooner. The head is used in training only; 0 = off. The trainer's targets
    # are EfficientNet-Lite0's final feature map (repa_dim 1280), the network the FID and
    # wordpaint-clip's image tower also read: say so beside any figure of a REPA model.
    repa_weight: float = 0.0
    repa_dim: int = 1280
    # image-embedding conditioning (unCLIP, Ramesh et al. 2022; Kandinsky 2.2's decoder): a global
    # image vector (the trainer's: EfficientNet-Lite0's pooled 1280-d features of the training
    # image) joins the pooled text in the class-embedding MLP, so the UNet can be told *what the
    # picture is* by a vector a separate prior predicts from the text (models.embed_prior).
    # L2-normalised and scaled to unit RMS per dimension inside the model; zeros = none. Each
    # example loses it with image_embed_drop_prob (and always with its caption), so one model
    # draws from text alone too and classifier-free guidance has an unconditional branch.
    # Needs pooled_text; 0 = off. Same caveat as REPA: the FID and wordpaint-clip read that network.
    image_embed_dim: int = 0
    image_embed_drop_prob: float = 0.1
    extra: dict = field(default_factory=dict)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_dict(cls, d: dict) -> "DiffusionConfig":
        if d.get("prediction_type", "v_prediction") not in ("epsilon", "v_prediction"):
            raise ValueError(f"unknown prediction_type {d['prediction_type']!r}; expected epsilon or v_prediction")
        if d.get("timestep_sampling", "uniform") not in ("uniform", "lognormal"):
            raise ValueError(f"unknown timestep_sampling {d['timestep_sampling']!r}; expected uniform or lognormal")
        if not d.get("object_loss_weight", 0.0) >= 0:
            raise ValueError(f"object_loss_weight must be >= 0, got {d['object_loss_weight']!r}")
        _check_fraction(d, "terminal_prob")
        # diffusers builds one down and one up block per channel width; a recipe override that
        # changes one list and not the others would otherwise fail deep inside UNet2DConditionModel
        levels = {k: len(d.get(k, getattr(cls, k))) for k in ("block_out_channels", "down_block_types", "up_block_types")}
        if len(set(levels.values())) != 1:
            raise ValueError("block_out_channels, down_block_types and up_block_types need one entry per level each, got "
                             + ", ".join(f"{k}: {n}" for k, n in levels.items()))
        rw = d.get("repa_weight", 0.0)
        if isinstance(rw, bool) or not isinstance(rw, (int, float)) or not rw >= 0:
            raise ValueError(f"repa_weight must be a number >= 0, got {rw!r}")
        rd = d.get("repa_dim", 1280)
        if isinstance(rd, bool) or not isinstance(rd, int) or rd < 1:
            raise ValueError(f"repa_dim must be a positive integer, got {rd!r}")
        ed = d.get("image_embed_dim", 0)
        if isinstance(ed, bool) or not isinstance(ed, int) or ed < 0:
            raise ValueError(f"image_embed_dim must be an integer >= 0, got {ed!r}")
        if ed and not d.get("pooled_text"):
            raise ValueError("image_embed_dim needs pooled_text (the image vector joins the pooled text's class-embedding MLP)")
        _check_fraction(d, "image_embed_drop_prob")
        for flag in ("layout_residuals", "layout_silhouettes", "reference_image"):  # options of the layout input
            if not isinstance(d.get(flag, False), bool):
                raise ValueError(f"{flag} must be true or false, got {d[flag]!r}")
            if d.get(flag) and not d.get("layout_channels"):
                raise ValueError(f"{flag} needs a layout model (layout_channels > 0)")
        if d.get("reference_image"):
            if d["layout_channels"] != d.get("in_channels", 3):
                raise ValueError(f"reference_image needs layout_channels == in_channels (the reference is encoded like the image), "
                                 f"got {d['layout_channels']} and {d.get('in_channels', 3)}")
            if d.get("layout_silhouettes"):
                raise ValueError("reference_image and layout_silhouettes exclude each other: the layout channels carry one or the other")
        return super().from_dict(d)


def _check_fraction(d: dict, key: str) -> None:
    """Raise a clear ValueError unless ``d[key]`` (when given) is a number in [0, 1]."""
    v = d.get(key, 0.0)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
        raise ValueError(f"{key} must be in [0, 1], got {v!r}")


def make_alphas_cumprod(config: DiffusionConfig) -> torch.Tensor:
    """(T,) cumulative alphas from diffusers' schedule of the configured name."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule)
    return sched.alphas_cumprod.float().clone()


def pooled_states(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, D) L2-normalised mean of the (B, L, D) token states over the real tokens of the
    (B, L) mask: the text encoder's pooled vector, recomputed here so batches and samplers need
    not carry it."""
    m = mask.to(states.dtype).unsqueeze(-1)  # (B, L, 1)
    mean = (states * m).sum(1) / m.sum(1).clamp(min=1)
    return F.normalize(mean, dim=-1)


def scaled_image_embed(embed: torch.Tensor | None, batch: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """(B, dim): ``embed`` L2-normalised and scaled by sqrt(dim) (unit RMS per dimension, whatever
    the feature network's scale); None -> zeros (no image embedding), as zeros stay zeros."""
    if embed is None:
        return like.new_zeros(batch, dim)
    if embed.shape != (batch, dim):
        raise ValueError(f"image_embed has shape {tuple(embed.shape)}, this model reads ({batch}, {dim})")
    return F.normalize(embed.to(like.dtype), dim=-1) * dim**0.5


class LayoutResiduals(torch.nn.Module):
    """The layout as ControlNet-style residuals: one zero-initialised 3x3 convolution per UNet
    skip connection (and one for the mid block), reading the (B, C_l, H, W) layout average-pooled
    to that connection's grid. Hand-written because diffusers' ControlNetModel copies the whole
    encoder (twice the compute); this is the cheapest form of the same interface."""

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        n, chans = len(config.block_out_channels), config.block_out_channels
        # the skips diffusers' UNet2DConditionModel collects: conv_in's output, then per block
        # layers_per_block ResNet outputs and (all blocks but the last) the downsampler's
        grid = [(chans[0], 1)]
        for i, c in enumerate(chans):
            grid += [(c, 2**i)] * config.layers_per_block + ([(c, 2 ** (i + 1))] if i < n - 1 else [])
        self.factors = [f for _, f in grid] + [2 ** (n - 1)]  # + the mid block's
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(config.layout_channels, c, 3, padding=1) for c, _ in grid + [(chans[-1], 0)])
        for conv in self.convs:  # zero: a model gaining them starts from its old outputs exactly
            torch.nn.init.zeros_(conv.weight)
            torch.nn.init.zeros_(conv.bias)

    def forward(self, layout: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """(down residuals, one per skip, each (B, C_k, H / f_k, W / f_k); mid residual)."""
        out = [conv(F.avg_pool2d(layout, f) if f > 1 else layout) for conv, f in zip(self.convs, self.factors)]
        return tuple(out[:-1]), out[-1]


class DiffusionModel(torch.nn.Module):
    """``loss = model(batch)`` with batch = {"pixel_values": (B,3,H,W) in [-1,1],
    "encoder_hidden_states": (B,L,D), "encoder_attention_mask": (B,L) bool} and, for a layout
    model, "layout": (B, layout_channels, H, W) (zeros = no layout); with object_loss_weight,
    "object_map": (B, 1, H, W); with repa_weight, "repa_target": (B, repa_dim, h, w) at the mid
    block's grid (h = H / downsample_factor); with image_embed_dim, "image_embed": (B, image_embed_dim)
    (zeros = none)."""

    family = "diffusion"

    def __init__(self, config: DiffusionConfig, *, empty: bool = False):
        super().__init__()
        from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

        self.config = config
        # empty: parameters on the meta device (no random init, ~1 s saved on every cold start)
        with init_device(empty):
            self.unet = UNet2DConditionModel(
                sample_size=config.resolution,
                in_channels=config.in_channels + config.layout_channels,
                out_channels=config.in_channels,
                block_out_channels=config.block_out_channels,
                down_block_types=config.down_block_types,
                up_block_types=config.up_block_types,
                layers_per_block=config.layers_per_block,
                attention_head_dim=config.attention_head_dim,
                norm_num_groups=config.norm_num_groups,
                cross_attention_dim=config.cross_attention_dim,
                class_embed_type="projection" if config.pooled_text else None,
                projection_class_embeddings_input_dim=config.cross_attention_dim + config.image_embed_dim if config.pooled_text else None,
            )
            self.layout_residuals = LayoutResiduals(config) if config.layout_residuals else None
            # REPA's projector (three layers, as in the paper), per position of the mid block's grid
            c, h = config.block_out_channels[-1], 512
            self.repa_head = torch.nn.Sequential(
                torch.nn.Conv2d(c, h, 1), torch.nn.SiLU(), torch.nn.Conv2d(h, h, 1), torch.nn.SiLU(), torch.nn.Conv2d(h, config.repa_dim, 1),
            ) if config.repa_weight else None
        ac = make_alphas_cumprod(config)
        self.register_buffer("alphas_cumprod", ac, persistent=False)
        # sigma_t = sqrt((1 - abar) / abar): the VE view used by k-diffusion style samplers
        self.register_buffer("log_sigmas", (((1 - ac) / ac) ** 0.5).log(), persistent=False)

    # -- training ------------------------------------------------------------------------------
    def forward(self, batch: dict, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE on the configured target (epsilon or v) at timesteps drawn as configured, optionally
        min-SNR-gamma weighted so that easy low-noise steps do not dominate the gradient."""
        x0 = batch["pixel_values"]
        b = x0.shape[0]
        # random draws come from the generator's device (the trainer's is a CPU one) and are then
        # moved: the same seed gives the same timesteps and noise on a CPU and on a GPU
        gen_device = generator.device if generator is not None else torch.device("cpu")
        if self.config.timestep_sampling == "lognormal":
            ls = self.log_sigmas
            log_sigma = self.config.lognormal_mean + self.config.lognormal_std * torch.randn(b, generator=generator, device=gen_device).to(x0.device)
            sigma = log_sigma.clamp(ls[0], ls[-1]).exp()
            t = self.sigma_to_t(sigma)  # continuous timesteps, as the samplers use
            abar = (1 / (1 + sigma**2)).view(b, 1, 1, 1)
        else:
            t = torch.randint(0, self.config.num_train_timesteps, (b,), generator=generator, device=gen_device).to(x0.device)
            abar = self.alphas_cumprod[t].view(b, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=generator, device=gen_device).to(x0.device)
        if self.config.terminal_prob:  # drawn after the noise, so the other samples match a run without it
            last = (torch.rand(b, generator=generator, device=gen_device) < self.config.terminal_prob).to(x0.device)
            t = torch.where(last, torch.full_like(t, self.config.num_train_timesteps - 1), t)
            abar = torch.where(last.view(b, 1, 1, 1), self.alphas_cumprod[-1].to(abar.dtype), abar)
        xt = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        args = (xt, t.float(), batch["encoder_hidden_states"], batch["encoder_attention_mask"], batch.get("layout"), batch.get("image_embed"))
        pred, mid = self.net_and_mid(*args) if self.repa_head is not None else (self.net(*args), None)
        v = self.config.prediction_type == "v_prediction"
        target = abar.sqrt() * noise - (1 - abar).sqrt() * x0 if v else noise
        err = (pred - target).pow(2)  # (B, C, H, W)
        if self.config.object_loss_weight:
            if "object_map" not in batch:
                raise ValueError("object_loss_weight needs batch['object_map'] (B,1,H,W): train on data with true boxes (shapes)")
            w = 1 + self.config.object_loss_weight * batch["object_map"].to(err.dtype)  # (B, 1, H, W)
            err = err * (w / w.mean(dim=(2, 3), keepdim=True))
        per_sample = err.mean(dim=(1, 2, 3))  # (B,)
        if self.config.snr_gamma:
            snr = (abar / (1 - abar)).view(b)
            # eps: min(snr, g) / snr; v: min(snr, g) / (snr + 1)  (both = x0-space weight min(snr, g))
            w = snr.clamp(max=self.config.snr_gamma) / (snr + 1 if v else snr)
            per_sample = per_sample * w
        if self.repa_head is None:
            return per_sample.mean()
        diffusion, align = per_sample.mean(), self.repa_loss(mid, batch)
        # the two terms, for the trainer's log (the returned loss is their weighted sum)
        self.loss_terms = {"loss_diffusion": diffusion.item(), "loss_repa": align.item()}
        return diffusion + self.config.repa_weight * align

    def repa_loss(self, mid: torch.Tensor, batch: dict) -> torch.Tensor:
        """mean(1 - cosine similarity) between the head's projection of the (B, C, h, w) mid-block
        states and batch["repa_target"] (B, repa_dim, h, w), per position."""
        target = batch.get("repa_target")
        if target is None:
            raise ValueError("repa_weight > 0 needs batch['repa_target'] (B, repa_dim, h, w): the clean images' features")
        proj = self.repa_head(mid)  # (B, repa_dim, h, w)
        if target.shape != proj.shape:
            raise ValueError(f"repa_target has shape {tuple(target.shape)}, the mid block gives {tuple(proj.shape)}")
        return 1 - F.cosine_similarity(proj, target.to(proj.dtype), dim=1).mean()

    def net(self, x: torch.Tensor, t: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
            layout: torch.Tensor | None = None, image_embed: torch.Tensor | None = None) -> torch.Tensor:
        """Raw UNet output (epsilon or v) for (B,C,H,W) ``x`` at (continuous) timesteps ``t`` (B,);
        a layout model reads ``layout`` (B, layout_channels, H, W) concatenated to ``x``; an
        image-embedding model ``image_embed`` (B, image_embed_dim) (None or zeros = none)."""
        extra = {}
        if self.config.layout_channels:
            if layout is None:
                layout = x.new_zeros(x.shape[0], self.config.layout_channels, *x.shape[2:])
            layout = layout.to(x.dtype)
            if self.layout_residuals is not None:
                down, mid = self.layout_residuals(layout)
                extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
            x = torch.cat([x, layout], dim=1)
        pooled = pooled_states(states, mask) if self.config.pooled_text else None  # (B, D)
        if self.config.image_embed_dim:
            pooled = torch.cat([pooled, scaled_image_embed(image_embed, x.shape[0], self.config.image_embed_dim, pooled)], dim=1)
        elif image_embed is not None:
            raise ValueError("this model reads no image embedding (image_embed_dim = 0)")
        # diffusers turns the 0/1 mask into an additive bias; 1 = attend
        return self.unet(x, t, encoder_hidden_states=states, encoder_attention_mask=mask.to(x.dtype), class_labels=pooled, **extra).sample

    def net_and_mid(self, x: torch.Tensor, t: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
                    layout: torch.Tensor | None = None, image_embed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(:meth:`net`'s output, the UNet mid block's (B, C, h, w) output), for REPA: the mid
        block is read through a forward hook that lives for this one call."""
        mid: list[torch.Tensor] = []
        hook = self.unet.mid_block.register_forward_hook(lambda m, i, o: mid.append(o))
        try:
            out = self.net(x, t, states, mask, layout, image_embed)
        finally:
            hook.remove()
        return out, mid[0]

    # -- sampling view -------------------------------------------------------------------------
    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Continuous timestep for each sigma, by linear interpolation in log sigma."""
        log_sigma = sigma.clamp(min=1e-10).log()
        ls = self.log_sigmas
        idx = torch.searchsorted(ls, log_sigma.reshape(-1)).clamp(1, len(ls) - 1)
        lo, hi = ls[idx - 1], ls[idx]
        w = ((log_sigma.reshape(-1) - lo) / (hi - lo)).clamp(0, 1)
        return (idx - 1 + w).reshape(sigma.shape)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, states: torch.Tensor, mask: torch.Tensor,
                layout: torch.Tensor | None = None, image_embed: torch.Tensor | None = None) -> torch.Tensor:
        """Denoiser D(x; sigma) ~ E[x0 | x] in the VE parametrisation x = x0 + sigma * eps."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)  # samplers keep sigmas on the CPU
        s = sigma.reshape(-1, 1, 1, 1)
        c_in = 1 / (s**2 + 1) ** 0.5  # = sqrt(abar): back to the VP input the UNet was trained on
        t = self.sigma_to_t(sigma.reshape(-1)).expand(x.shape[0])
        out = self.net(x * c_in, t, states, mask, layout, image_embed)
        if self.config.prediction_type == "v_prediction":
            return x * c_in**2 - s * c_in * out  # x0 = sqrt(abar) x_t - sqrt(1 - abar) v
        return x - s * out

    def sigmas(self, steps: int, schedule: str = "trailing", *, sigma_max: float = 80.0) -> torch.Tensor:
        """(steps+1,) decreasing sigmas, then 0. ``trailing``: evenly spaced timesteps starting
        at the last one (diffusers' "trailing" spacing); ``karras``: EDM spacing (rho = 7) from
        min(sigma_max, the schedule's largest) down to the schedule's smallest."""
        from wordpaint.sampling.samplers import karras_sigmas

        table = self.log_sigmas.exp()
        if schedule == "karras":
            return karras_sigmas(steps, table[0].item(), min(sigma_max, table[-1].item()))
        if schedule != "trailing":
            raise ValueError(f"unknown sigma schedule {schedule!r}; expected karras or trailing")
        T = self.config.num_train_timesteps
        ts = torch.arange(T, 0, -T / steps).round().long() - 1  # T-1, ..., evenly spaced
        return torch.cat([table[ts], table.new_zeros(1)])
