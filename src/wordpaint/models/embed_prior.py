"""Embedding prior: text -> the image vector an image-embedding diffusion model is conditioned on.

What it is: the prior half of unCLIP (Ramesh et al. 2022): the diffusion model
(``DiffusionConfig.image_embed_dim``) is trained to draw a picture given, beside its caption, a
global vector of the picture itself (EfficientNet-Lite0's pooled 1280-d features); at sampling
time this prior predicts that vector from the caption. An MLP from the frozen MiniLM sentence
vector (the pooled text the UNet already computes) to the vector's direction, trained with
mean(1 - cosine similarity) (the UNet reads the vector L2-normalised, so only its direction
matters).

Why a regression MLP and not DALL-E 2's diffusion prior: one vector per caption is what a
training cell names; a diffusion prior would add variety over vectors, which the UNet's own
noise already gives here, at many times the cost. Why a vector at all: telling the UNet *what
the picture is* through a dense image descriptor is a much easier task to learn than from a
caption (the descriptor separates concepts the caption's MiniLM vector blurs), and predicting
1,280 numbers from text is a far smaller task than predicting a 16x16x4 latent
(:mod:`wordpaint.models.latent_prior`).

Read top to bottom: config -> model (owns its loss) -> embed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from wordpaint.models.config import ConfigMixin, init_device
from wordpaint.models.latent_prior import check_sizes, text_mlp


@dataclass
class EmbedPriorConfig(ConfigMixin):
    """Sizes of the text -> image-vector MLP."""

    family = "embed_prior"

    text_dim: int = 384  # MiniLM pooled
    hidden_dim: int = 1024
    num_layers: int = 2  # hidden layers (Linear + GELU each)
    embed_dim: int = 1280  # EfficientNet-Lite0's pooled features
    dropout: float = 0.1  # on the hidden layers: a regressor fitting ~6k captions needs some
    # the pictures the training vectors are computed from (image-folder data at this size, pixels)
    resolution: int = 64
    extra: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        """The images the training vectors come from are RGB pixels (what a data check compares)."""
        return 3

    @classmethod
    def from_dict(cls, d: dict) -> "EmbedPriorConfig":
        check_sizes(cls, d, ("text_dim", "hidden_dim", "num_layers", "embed_dim", "resolution"))
        p = d.get("dropout", cls.dropout)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ValueError(f"embed_prior dropout must be in [0, 1), got {p!r}")
        return super().from_dict(d)


class EmbedPriorModel(torch.nn.Module):
    """(B, text_dim) pooled text -> (B, embed_dim) unit vectors. ``loss = model(batch)``:
    mean(1 - cosine similarity) to ``image_embed``."""

    def __init__(self, config: EmbedPriorConfig, *, empty: bool = False):
        super().__init__()
        self.config = config
        c = config
        with init_device(empty):
            self.net = text_mlp(c.text_dim, c.hidden_dim, c.num_layers, c.embed_dim, dropout=c.dropout)

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, text_dim) pooled text -> (B, embed_dim) unit vectors: the image vector the caption names."""
        if pooled.ndim != 2 or pooled.shape[1] != self.config.text_dim:
            raise ValueError(f"the embedding prior reads (B, {self.config.text_dim}) pooled text, got {tuple(pooled.shape)}")
        return F.normalize(self.net(pooled.float()), dim=-1)

    def forward(self, batch: dict, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``text_features`` (B, text_dim) pooled captions and ``image_embed`` (B, embed_dim) their
        images' vectors -> mean(1 - cosine similarity). (``generator``: the training loop's
        per-step randomness, which this loss does not need.)"""
        target = batch["image_embed"]
        if target.shape[1:] != (self.config.embed_dim,):
            raise ValueError(f"image_embed has shape {tuple(target.shape)}, the prior predicts (B, {self.config.embed_dim})")
        return 1 - F.cosine_similarity(self.embed(batch["text_features"]), target.float(), dim=-1).mean()
