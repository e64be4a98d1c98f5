"""Noised wordpaint-clip: a contrastive image-text model that reads the diffusion model's *noisy*
inputs, for classifier guidance (GLIDE's "noised CLIP", Nichol et al. 2022).

Why a separate model: guiding with a clean-image model means backpropagating through the UNet
and the decoder at every step, and an off-the-shelf CLIP would see pure noise early on. This one
takes x_sigma (latents or pixels, VE view x = x0 + sigma * eps) and sigma directly, so one
guided step costs a forward and backward pass of a ~1M-parameter CNN on a 16x16 grid. Its text
side is the frozen MiniLM sentence vector (the pooled text the UNet already computes) through a
trained head. Nothing here is shared with the wordpaint-clip that judges the samples (EfficientNet
towers on decoded pixels), so a gain it gives is not the judge grading its own gradients.

Read top to bottom: config -> blocks -> model (owns its loss) -> guidance gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from wordpaint.models.config import ConfigMixin, init_device


@dataclass
class NoisedClipConfig(ConfigMixin):
    """The noisy-input image tower, the text head and the noise levels trained on."""

    family = "noised_clip"

    in_channels: int = 4  # the diffusion model's input (emoji64: 4 latent channels)
    resolution: int = 16
    block_out_channels: tuple[int, ...] = (32, 64, 128)  # one stage per entry, halving the grid after each but the last
    layers_per_block: int = 2
    text_dim: int = 384  # MiniLM pooled
    embed_dim: int = 256
    emb_dim: int = 128  # noise-level embedding
    init_temperature: float = 0.07
    # training noise levels: ln sigma ~ U(ln sigma_min, ln sigma_max); guidance is used inside this range only
    sigma_min: float = 0.02
    sigma_max: float = 20.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "NoisedClipConfig":
        lo, hi = d.get("sigma_min", cls.sigma_min), d.get("sigma_max", cls.sigma_max)
        if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and 0 < lo < hi):
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {lo!r}, {hi!r}")
        return super().from_dict(d)


class _ResBlock(torch.nn.Module):
    """GroupNorm -> SiLU -> conv, twice, with the noise level as a scale and shift (FiLM) between."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = torch.nn.GroupNorm(8, c_in), torch.nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = torch.nn.Linear(emb_dim, 2 * c_out)
        self.norm2, self.conv2 = torch.nn.GroupNorm(8, c_out), torch.nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = torch.nn.Conv2d(c_in, c_out, 1) if c_in != c_out else torch.nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return self.skip(x) + h


def _sigma_embedding(sigma: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) sigma -> (B, dim) sinusoidal features of ln(sigma) / 4 (EDM's c_noise)."""
    c = sigma.log() / 4
    freqs = torch.exp(torch.arange(dim // 2, device=sigma.device) * (-math.log(1000.0) / (dim // 2)))
    ang = c[:, None] * freqs[None] * 1000
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


class NoisedClipModel(torch.nn.Module):
    """(x_sigma, sigma) -> unit image embedding; pooled text -> unit text embedding.
    ``loss = model(batch)``: CLIP's symmetric loss on clean inputs noised here at random levels."""

    def __init__(self, config: NoisedClipConfig, *, empty: bool = False):
        super().__init__()
        self.config = config
        ch = config.block_out_channels
        with init_device(empty):
            self.sigma_mlp = torch.nn.Sequential(torch.nn.Linear(config.emb_dim, config.emb_dim), torch.nn.SiLU(),
                                                 torch.nn.Linear(config.emb_dim, config.emb_dim))
            self.conv_in = torch.nn.Conv2d(config.in_channels, ch[0], 3, padding=1)
            blocks, c_prev = [], ch[0]
            for c in ch:
                for _ in range(config.layers_per_block):
                    blocks.append(_ResBlock(c_prev, c, config.emb_dim))
                    c_prev = c
            self.blocks = torch.nn.ModuleList(blocks)
            self.norm_out = torch.nn.GroupNorm(8, ch[-1])
            self.image_proj = torch.nn.Linear(ch[-1], config.embed_dim)
            self.text_head = torch.nn.Sequential(torch.nn.LayerNorm(config.text_dim), torch.nn.Linear(config.text_dim, 512),
                                                 torch.nn.GELU(), torch.nn.Linear(512, config.embed_dim))
            self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))

    def embed_noisy(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) VE-view input x0 + sigma * eps and (B,) or scalar sigma -> (B, embed_dim), unit norm."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        h = self.conv_in(x / (1 + sigma[:, None, None, None] ** 2) ** 0.5)  # the VP-scaled input, unit variance at any sigma
        emb = self.sigma_mlp(_sigma_embedding(sigma, self.config.emb_dim))
        per_stage = self.config.layers_per_block
        for i, block in enumerate(self.blocks):
            h = block(h, emb)
            if (i + 1) % per_stage == 0 and (i + 1) // per_stage < len(self.config.block_out_channels):
                h = F.avg_pool2d(h, 2)  # 16 -> 8 -> 4 for the default three stages
        h = F.silu(self.norm_out(h)).mean((2, 3))  # (B, C) global average
        return F.normalize(self.image_proj(h), dim=-1)

    def embed_text_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, text_dim) pooled text -> (B, embed_dim), unit norm."""
        return F.normalize(self.text_head(pooled.float()), dim=-1)

    def sample_sigmas(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n,) training noise levels, log-uniform over [sigma_min, sigma_max]."""
        lo, hi = math.log(self.config.sigma_min), math.log(self.config.sigma_max)
        return (lo + (hi - lo) * torch.rand(n, generator=generator)).exp()

    def forward(self, batch: dict, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x0`` (B, C, H, W) clean inputs, ``text_features`` (B, text_dim), optional ``text_ids``
        (B,) (equal ids: the same caption, all such pairs positive) -> the contrastive loss."""
        x0 = batch["x0"]
        sigma = self.sample_sigmas(len(x0), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        img = self.embed_noisy(x0 + sigma[:, None, None, None] * noise, sigma)
        txt = self.embed_text_features(batch["text_features"])
        logits = self.logit_scale.exp().clamp(max=100.0) * img @ txt.T  # (B, B)
        ids = batch.get("text_ids")
        same = torch.eye(len(img), device=img.device) if ids is None else (ids[:, None] == ids[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        return (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.T.log_softmax(1)).sum(1).mean()) / 2

    def guidance_grad(self, x: torch.Tensor, sigma: torch.Tensor, text_embeds: torch.Tensor,
                      contrast_embeds: torch.Tensor | None = None, contrast_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) gradient of ``logit_scale * cos(image(x, sigma), text)`` with respect to x:
        the direction in which the noisy sample looks more like its prompt to this model. With
        ``contrast_embeds`` (B, K, embed_dim) it is the gradient of log p(text | x) under the
        (K + 1)-way zero-shot classifier over the text and its K contrasts (classifier guidance
        proper): grad cos(text) - sum_k p_k grad cos(t_k), which moves the sample only along what
        tells the prompt apart from the contrasts, and fades as the prompt's probability nears 1.
        ``contrast_mask`` (B, K) bool keeps some contrasts of a row only; a row that keeps none gets
        the plain similarity's gradient."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            img = self.embed_noisy(x, sigma)  # (B, embed_dim)
            if contrast_embeds is None:
                objective = self.logit_scale.exp() * (img * text_embeds).sum()
            else:
                texts = torch.cat([text_embeds[:, None], contrast_embeds], 1)  # (B, 1 + K, embed_dim)
                logits = self.logit_scale.exp() * torch.einsum("bd,bkd->bk", img, texts)  # (B, 1 + K)
                if contrast_mask is None:
                    contrast_mask = torch.ones(logits.shape[0], logits.shape[1] - 1, dtype=torch.bool, device=x.device)
                keep = torch.cat([torch.ones_like(contrast_mask[:, :1]), contrast_mask], 1).bool()  # (B, 1 + K)
                log_p = logits.masked_fill(~keep, -math.inf).log_softmax(-1)[:, 0]
                objective = torch.where(contrast_mask.any(1), log_p, logits[:, 0]).sum()
            (grad,) = torch.autograd.grad(objective, x)
        return grad
