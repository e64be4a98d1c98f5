"""Restorer: a small text-conditioned pixel network that runs after the autoencoder's decoder.

Why: a latent diffusion model's pictures are only as good as what its autoencoder can say. The
emoji model's 16x16x4 latent leaves a style's look partly open: the round trip of a real Twemoji
picture (encode, decode) is taken for Noto on 29 of the 200 seen evaluation cells, because the
decoder, which sees the latent alone, draws a flat fill with a faint shading. The restorer also
reads the prompt (the pooled MiniLM vector the pipeline already has), so it can put back what
the style implies: flat fills for Twemoji, shading for Noto, outlines for OpenMoji.

What it learns: real pictures only. Input: the autoencoder's round trip of a training picture,
from its latent or (``latent_noise``) from its latent plus Gaussian noise of a random level (a
sampled latent is slightly wrong, the same way) or (``sampled_share``) from a latent the diffusion
model's sampler returned for it; target: the picture itself; loss: L1 + MSE on
pixels, on random ``crop_size`` crops (the network is convolutional; the text is global).
Conditioned on the picture's caption. It never sees the evaluation's judge.

Architecture: a two-level residual network (full resolution, then half), each residual block's
normalised activations scaled and shifted by the text (FiLM, Perez et al. 2018), the output a
residual added to the decoded picture through a zeroed last convolution, so an untrained
restorer is the identity. Diffusers has no small text-conditioned image-to-image network (its
UNet2DConditionModel at this size would cost ~20x the compute), so it is written here.

Read top to bottom: config -> blocks -> model (owns its loss) -> restore.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from wordpaint.models.config import ConfigMixin, check_number, init_device
from wordpaint.models.latent_prior import check_sizes


@dataclass
class RestorerConfig(ConfigMixin):
    family = "restorer"  # class attribute: not a config field

    resolution: int = 64  # the pictures it restores (the autoencoder's)
    text_dim: int = 384  # MiniLM pooled
    text_embed_dim: int = 128  # the text vector every block's FiLM reads
    block_out_channels: tuple[int, ...] = (32, 64)  # one level per entry, each half the last's resolution
    layers_per_block: int = 1  # residual blocks per level on the way down (and one per level on the way up)
    norm_num_groups: int = 8
    # training inputs: this share of the pictures is decoded from its latent plus noise of a std
    # drawn uniformly in [0, latent_noise] (scaled, unit-variance latent units); the rest from the
    # clean latent. Fixed per picture when the training inputs are made (two decodes per picture)
    latent_noise: float = 0.3
    noisy_share: float = 0.5
    # ... and this share of the pictures that have them (the recipe's data.decoder_inputs file, made
    # by python -m wordpaint.training.decoder_inputs) is decoded instead from a latent the diffusion
    # model's own sampler returned for that picture (SDEdit from its noised latent, at the
    # pipeline's settings), so the restorer also learns to undo what the sampler does to a picture
    # of that style (the emoji model's last step turns ~1 in 4 Twemoji pictures Noto-like), not
    # only what the autoencoder does. 0 = round trips only.
    sampled_share: float = 0.0
    crop_size: int = 32  # training crops (pixels); the full picture at sampling time
    mse_weight: float = 1.0  # loss = L1 + mse_weight * MSE
    extra: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        """RGB pixels (what a data check compares)."""
        return 3

    @classmethod
    def from_dict(cls, d: dict) -> "RestorerConfig":
        check_sizes(cls, d, ("resolution", "text_dim", "text_embed_dim", "layers_per_block", "norm_num_groups", "crop_size"))
        cfg = super().from_dict(d)
        ch = cfg.block_out_channels
        if not ch or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 or c % cfg.norm_num_groups for c in ch):
            raise ValueError(f"restorer block_out_channels must be positive multiples of norm_num_groups "
                             f"({cfg.norm_num_groups}), got {list(ch)!r}")
        if cfg.resolution % 2 ** (len(ch) - 1) or cfg.crop_size % 2 ** (len(ch) - 1) or cfg.crop_size > cfg.resolution:
            raise ValueError(f"restorer resolution ({cfg.resolution}) and crop_size ({cfg.crop_size}) must be multiples of "
                             f"{2 ** (len(ch) - 1)} (one halving per level after the first), crop_size <= resolution")
        for name, lo, hi in (("latent_noise", 0.0, 10.0), ("noisy_share", 0.0, 1.0), ("sampled_share", 0.0, 1.0),
                             ("mse_weight", 0.0, 10.0)):
            check_number(f"restorer {name}", getattr(cfg, name), f"a number in [{lo:g}, {hi:g}]", lambda v: lo <= v <= hi)
        return cfg


class FilmBlock(torch.nn.Module):
    """Residual block: GroupNorm -> FiLM by the text -> SiLU -> 3x3 conv -> GroupNorm -> SiLU ->
    3x3 conv (zeroed: the block starts as the identity). (B, C, H, W), (B, E) -> (B, C, H, W)."""

    def __init__(self, channels: int, text_embed_dim: int, groups: int):
        super().__init__()
        nn = torch.nn
        self.norm1, self.conv1 = nn.GroupNorm(groups, channels), nn.Conv2d(channels, channels, 3, 1, 1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, channels), nn.Conv2d(channels, channels, 3, 1, 1)
        self.film = nn.Linear(text_embed_dim, 2 * channels)  # per-channel (scale, shift)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(text)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        y = self.conv1(F.silu(self.norm1(h) * (1 + scale) + shift))
        return h + self.conv2(F.silu(self.norm2(y)))


class RestorerModel(torch.nn.Module):
    """``restore(images, pooled)``: (B, 3, H, W) decoded pictures in [-1, 1] and their prompts'
    (B, text_dim) pooled text -> restored pictures. ``loss = model(batch)`` with ``decoded`` (the
    inputs), ``pixel_values`` (the targets) and ``text_features``."""

    family = "restorer"

    def __init__(self, config: RestorerConfig, *, empty: bool = False):
        super().__init__()
        nn = torch.nn
        self.config = config
        ch, e, g = config.block_out_channels, config.text_embed_dim, config.norm_num_groups
        with init_device(empty):
            self.text = nn.Sequential(nn.Linear(config.text_dim, e), nn.SiLU())
            self.conv_in = nn.Conv2d(3, ch[0], 3, 1, 1)
            self.down = nn.ModuleList(nn.ModuleList(FilmBlock(c, e, g) for _ in range(config.layers_per_block)) for c in ch)
            self.downsample = nn.ModuleList(nn.Conv2d(a, b, 3, 2, 1) for a, b in zip(ch, ch[1:]))
            self.upsample = nn.ModuleList(nn.Conv2d(b, a, 3, 1, 1) for a, b in zip(ch, ch[1:]))
            self.up = nn.ModuleList(FilmBlock(c, e, g) for c in ch[:-1])
            self.conv_out = nn.Conv2d(ch[0], 3, 3, 1, 1)
            nn.init.zeros_(self.conv_out.weight)  # the identity until trained
            nn.init.zeros_(self.conv_out.bias)

    def net(self, x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W), (B, text_dim) -> (B, 3, H, W): x plus the predicted residual (unclamped)."""
        t = self.text(pooled.float())  # (B, E)
        h, skips = self.conv_in(x), []
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, t)
            if level < len(self.downsample):
                skips.append(h)
                h = self.downsample[level](h)  # (B, C_next, H / 2, W / 2)
        for level in reversed(range(len(self.up))):  # back up: nearest x2, conv to the level's width, add its skip
            h = skips[level] + self.upsample[level](F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = self.up[level](h, t)
        return x + self.conv_out(F.silu(h))

    def forward(self, batch: dict, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """L1 + mse_weight * MSE of the restored ``decoded`` (B, 3, h, w) crops against ``pixel_values``
        (same shape). (``generator``: the training loop's per-step randomness; the crops and inputs
        are drawn by the task.)"""
        x, target = batch["decoded"].float(), batch["pixel_values"].float()
        if x.shape != target.shape:
            raise ValueError(f"decoded {tuple(x.shape)} and pixel_values {tuple(target.shape)} must have the same shape")
        out = self.net(x, batch["text_features"])
        return F.l1_loss(out, target) + self.config.mse_weight * F.mse_loss(out, target)

    @torch.no_grad()
    def restore(self, images: torch.Tensor, pooled: torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
        """(B, 3, H, W) decoded pictures in [-1, 1], (B, text_dim) pooled prompts -> (B, 3, H, W)
        restored pictures clamped to [-1, 1], on ``images``' device."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"the restorer reads (B, 3, H, W) pictures, got {tuple(images.shape)}")
        if pooled.shape != (images.shape[0], self.config.text_dim):
            raise ValueError(f"the restorer reads ({images.shape[0]}, {self.config.text_dim}) pooled text, got {tuple(pooled.shape)}")
        k = 2 ** (len(self.config.block_out_channels) - 1)
        if images.shape[2] % k or images.shape[3] % k:
            raise ValueError(f"the restorer's picture sides must be multiples of {k}, got {tuple(images.shape[2:])}")
        p = next(self.parameters())
        out = [self.net(images[i : i + batch_size].to(p), pooled[i : i + batch_size].to(p)).clamp(-1, 1).to(images.device)
               for i in range(0, len(images), batch_size)]
        return torch.cat(out)
