"""Family name -> (config class, model class), with named size presets.

``tiny`` is for tests (channels (4, 8), one layer per block); ``shapes48`` is the bundled model;
``emoji_ae`` + ``emoji64`` are the 64 px latent diffusion model of the emoji corpus.
"""

from __future__ import annotations

from wordpaint.errors import check_choice
from wordpaint.models.autoencoder import AutoencoderConfig, AutoencoderModel
from wordpaint.models.clip import ClipConfig, ClipModel
from wordpaint.models.diffusion import DiffusionConfig, DiffusionModel
from wordpaint.models.embed_prior import EmbedPriorConfig, EmbedPriorModel
from wordpaint.models.latent_prior import LatentPriorConfig, LatentPriorModel
from wordpaint.models.noised_clip import NoisedClipConfig, NoisedClipModel
from wordpaint.models.restorer import RestorerConfig, RestorerModel

FAMILIES = {"diffusion": (DiffusionConfig, DiffusionModel), "clip": (ClipConfig, ClipModel),
            "autoencoder": (AutoencoderConfig, AutoencoderModel), "noised_clip": (NoisedClipConfig, NoisedClipModel),
            "latent_prior": (LatentPriorConfig, LatentPriorModel), "embed_prior": (EmbedPriorConfig, EmbedPriorModel),
            "restorer": (RestorerConfig, RestorerModel)}


def unet_levels(channels: tuple[int, ...], cross_attention: tuple[bool, ...], **kw) -> dict:
    """UNet config fields for ``len(channels)`` resolution levels, finest first: the down blocks
    and their mirror-image up blocks, with cross-attention at the levels where ``cross_attention``
    is True (writing both lists out by hand is how a preset ends up with mismatched halves)."""
    if len(channels) != len(cross_attention):
        raise ValueError(f"{len(channels)} channel widths but {len(cross_attention)} cross-attention flags")
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cross_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cross_attention))
    return dict(block_out_channels=tuple(channels), down_block_types=down, up_block_types=up, **kw)


PRESETS: dict[str, tuple[str, dict]] = {
    "tiny": ("diffusion", unet_levels((4, 8), (False, True), resolution=32, attention_head_dim=4, norm_num_groups=4)),
    "shapes48": ("diffusion", dict(resolution=48)),
    # Fashion-MNIST: 28 px grayscale padded to 32, three levels (32 -> 16 -> 8); attention at 8x8
    # only: at 16x16 it more than doubles the training step (2.5 s vs 1.2 s at batch 64 on 2
    # cores) for a 10-class, 28 px dataset
    "fashion32": ("diffusion", unet_levels((32, 64, 96), (False, False, True), resolution=32, in_channels=1)),
    # emoji corpus (issue 4): 64x64x3 <-> 16x16x4 latents, and the text-conditioned UNet on them
    "emoji_ae": ("autoencoder", dict(resolution=64, block_out_channels=(32, 64, 128), latent_channels=4)),
    # latents 16 -> 8 -> 4; cross-attention at 8x8 and 4x4 only: at 16x16 it doubles the step time
    "emoji64": ("diffusion", unet_levels((64, 128, 192), (False, True, True), resolution=16, in_channels=4)),
    # tests: an autoencoder with factor 2 (32 px -> 16x16x4); tiny_latent (below) is the tiny UNet on its latents
    "tiny_ae": ("autoencoder", dict(resolution=32, block_out_channels=(4, 8), norm_num_groups=4, mid_block_add_attention=False)),
}
PRESETS["tiny_latent"] = ("diffusion", {**PRESETS["tiny"][1], "resolution": 16, "in_channels": 4})
# the emoji model's draft (text -> 16x16x4 latent); tiny_prior drafts tiny_latent's grid for tests
PRESETS["emoji_prior"] = ("latent_prior", dict(hidden_dim=2048, num_layers=3, latent_channels=4, resolution=16))
PRESETS["tiny_prior"] = ("latent_prior", dict(hidden_dim=16, num_layers=1, latent_channels=4, resolution=16))
# text -> image vector for an image-embedding UNet (emoji64_embed); tiny_embed_prior for tests (32 px folders)
PRESETS["emoji_embed_prior"] = ("embed_prior", dict(hidden_dim=1024, num_layers=2, resolution=64))
PRESETS["tiny_embed_prior"] = ("embed_prior", dict(hidden_dim=16, num_layers=1, resolution=32))
# text-conditioned pixel restorer after the emoji autoencoder's decoder; tiny_restorer for tests (32 px folders)
PRESETS["emoji_restorer"] = ("restorer", dict(resolution=64, block_out_channels=(32, 64)))
PRESETS["tiny_restorer"] = ("restorer", dict(resolution=32, block_out_channels=(4, 8), norm_num_groups=4, text_embed_dim=8, crop_size=16))


def build_config(*, family: str = "diffusion", preset: str | None = None, **overrides):
    """A config of ``family``, starting from ``preset`` (if given) with ``overrides`` applied."""
    check_choice("model family", family, FAMILIES)
    kw: dict = {}
    if preset is not None:
        check_choice("model preset", preset, PRESETS)
        pfam, kw = PRESETS[preset]
        if pfam != family:
            raise ValueError(f"preset {preset!r} belongs to family {pfam!r}, not {family!r}")
        kw = dict(kw)
    kw.update(overrides)
    cls = FAMILIES[family][0]
    return cls.from_dict(kw) if kw else cls()


def build_model(config, *, empty: bool = False):
    """Instantiate the model class registered for ``config``'s type. ``empty=True`` skips the
    random initialisation (parameters on the meta device) when weights are loaded next."""
    for cfg_cls, model_cls in FAMILIES.values():
        if isinstance(config, cfg_cls):
            return model_cls(config, empty=empty)
    raise ValueError(f"no model registered for config type {type(config).__name__}")


def family_of(config) -> str:
    for name, (cfg_cls, _) in FAMILIES.items():
        if isinstance(config, cfg_cls):
            return name
    raise ValueError(f"unregistered config type {type(config).__name__}")
