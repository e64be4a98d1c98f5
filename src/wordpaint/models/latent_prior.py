"""Latent prior: a text -> latent regressor that drafts the picture the diffusion model then refines.

What it is: an MLP from the frozen MiniLM sentence vector of a caption (the pooled text the
UNet already computes) to a whole latent grid (emoji64: 16x16x4), trained with mean squared error
on the autoencoder's latents. Its output is the minimum-MSE estimate E[z | text]: a single, sharp
latent for a caption that names one training image, a blend where a caption is ambiguous or new.
The pipeline starts the diffusion chain from that draft, noised part of the way up the schedule
(img2img / SDEdit, ``prior_strength``), as DiffuseVAE (Pandey et al. 2022) starts a diffusion
refiner from a VAE's coarse sample.

Why: the diffusion UNet's x0 estimate at its top noise level is the same E[z | text] in theory,
but learning it through denoising on this CPU takes far longer than this direct regression
(the emoji UNet had 203 min and still draws blobs; this prior fits the 6,148 training emoji in
12 min). What it showed (README, "A text -> latent draft"): it copies its training cells and does
not generalise to held-out ones, and the UNet degrades its drafts at every strength, so it is a
measuring tool and an option, not the bundled default. Why an MLP and no convolutions: a conv
decoder (FiLM ResBlocks, 4 -> 16 px, 6.8M parameters) trained ~20x slower per example here (2.0 s
per batch of 128 against 0.17 s per batch of 256), and memorising one latent per caption needs
capacity, not spatial priors.

Read top to bottom: config -> model (owns its loss) -> draft.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from wordpaint.models.config import ConfigMixin, init_device


def check_sizes(cls, d: dict, keys: tuple[str, ...]) -> None:
    """Raise a clear ValueError unless each of ``keys`` (in ``d``, else ``cls``'s default) is an
    integer >= 1, naming the family: the text-MLP priors' config check."""
    for key in keys:
        v = d.get(key, getattr(cls, key))
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{cls.family} {key} must be an integer >= 1, got {v!r}")


def text_mlp(text_dim: int, hidden_dim: int, num_layers: int, out_dim: int, *, dropout: float = 0.0) -> torch.nn.Sequential:
    """LayerNorm, then ``num_layers`` x (Linear + GELU [+ Dropout when ``dropout`` > 0]), then a
    Linear to ``out_dim``: the pooled text -> target MLP of the priors. No Dropout module at 0, so
    a dropout-free MLP keeps the layer indices its saved weights were written with."""
    layers: list[torch.nn.Module] = [torch.nn.LayerNorm(text_dim)]
    width = text_dim
    for _ in range(num_layers):
        layers += [torch.nn.Linear(width, hidden_dim), torch.nn.GELU()] + ([torch.nn.Dropout(dropout)] if dropout else [])
        width = hidden_dim
    layers.append(torch.nn.Linear(width, out_dim))
    return torch.nn.Sequential(*layers)


@dataclass
class LatentPriorConfig(ConfigMixin):
    """Sizes of the text -> latent MLP."""

    family = "latent_prior"

    text_dim: int = 384  # MiniLM pooled
    hidden_dim: int = 2048
    num_layers: int = 3  # hidden layers (Linear + GELU each)
    latent_channels: int = 4  # the diffusion model's input channels
    resolution: int = 16  # the latent grid's side
    extra: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        """The diffusion model's input channels it drafts (what a training data check compares)."""
        return self.latent_channels

    @classmethod
    def from_dict(cls, d: dict) -> "LatentPriorConfig":
        check_sizes(cls, d, ("text_dim", "hidden_dim", "num_layers", "latent_channels", "resolution"))
        return super().from_dict(d)


class LatentPriorModel(torch.nn.Module):
    """(B, text_dim) pooled text -> (B, C, R, R) latents. ``loss = model(batch)``: MSE to ``x0``."""

    def __init__(self, config: LatentPriorConfig, *, empty: bool = False):
        super().__init__()
        self.config = config
        c = config
        with init_device(empty):
            self.net = text_mlp(c.text_dim, c.hidden_dim, c.num_layers, c.latent_channels * c.resolution**2)

    def draft(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, text_dim) pooled text -> (B, C, R, R): the latent the caption most likely names."""
        c = self.config
        return self.net(pooled.float()).view(len(pooled), c.latent_channels, c.resolution, c.resolution)

    def forward(self, batch: dict, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x0`` (B, C, R, R) latents of the images, ``text_features`` (B, text_dim) their
        pooled captions -> mean squared error of the draft. (``generator``: the training loop's
        per-step randomness, which this loss does not need.)"""
        return F.mse_loss(self.draft(batch["text_features"]), batch["x0"])
