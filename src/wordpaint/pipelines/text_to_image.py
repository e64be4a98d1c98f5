"""TextToImagePipeline: prompt -> frozen text encoder -> text-conditioned denoiser -> images.

Folder format (diffusers-style, round-trips exactly with save_pretrained / from_pretrained):

    model_index.json          pipeline class, wordpaint version, component folders, defaults
    text_encoder/config.json  which local encoder (weights stay in their package)
    diffusion/config.json     the model config (+ family, wordpaint version)
    diffusion/model.safetensors
    autoencoder/              (latent models only) the frozen autoencoder: the diffusion model
                              works on its latents and the pipeline decodes them
    guide/                    (optional) a noised wordpaint-clip for clip_guidance_scale
    prior/                    (optional) a latent prior: drafts the start of the chain (prior_strength)
    embed_prior/              (optional) an embedding prior: the image vector from the prompt (image_embed)
    autoguide/                (optional) a weaker diffusion model of the same inputs (autoguidance_scale)
    expert/                   (optional) a low-noise expert: a diffusion model of the same inputs that
                              denoises the steps at or below expert_sigma (eDiff-I's expert denoisers)
    restorer/                 (optional, latent models) a text-conditioned pixel network run on the
                              decoded pictures (``restore``): puts back what the prompt's style implies
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import wordpaint
from wordpaint.errors import ModelLoadError, WordpaintError, check_choice
from wordpaint.images import save_png, to_pil
from wordpaint.io import (atomic_dir, dequantize_int8, load_safetensors, load_state_dict_strict, quantize_int8, read_json, save_safetensors,
                          write_json)
from wordpaint.models.config import module_device
from wordpaint.models.registry import FAMILIES, build_model, family_of
from wordpaint.sampling.samplers import SAMPLERS, SIGMA_SCHEDULES
from wordpaint.text.encoder import TextEncoder, TextEncoderConfig

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "weights" / "shapes48"
BUNDLED_MODELS = {"shapes": BUNDLED_DIR, "emoji": BUNDLED_DIR.parent / "emoji64", "fashion": BUNDLED_DIR.parent / "fashion32"}
# detail pass (``detail=True``): objects whose box side is at most DETAIL_MAX_SIDE of the canvas are
# redrawn in a crop in which they fill DETAIL_FILL of the side (a large shapes-world object is 0.36)
DETAIL_MAX_SIDE = 0.22
DETAIL_FILL = 0.36
DETAIL_STRENGTH = 0.5
DETAIL_MARGIN = 0.02  # canvas fractions around the box that the redrawn crop replaces (the plans' minimum gap)
DEFAULTS = {"sampler": "dpmpp_2m", "num_inference_steps": 10, "guidance_scale": 3.0, "sigma_schedule": "trailing",
            "guidance_interval": None, "layout_guidance_scale": None, "text_guidance_scale": None, "clip_guidance_scale": 0.0,
            "autoguidance_scale": 0.0, "expert_sigma": None, "refine_strength": None, "clip_contrast_styles": None,
            "detail": False, "detail_strength": DETAIL_STRENGTH, "prior_strength": None, "restore": False}
MAX_STEPS = 1000
COMPONENT_FAMILIES = {"diffusion": "diffusion", "autoencoder": "autoencoder", "guide": "noised_clip", "prior": "latent_prior",
                      "embed_prior": "embed_prior", "autoguide": "diffusion", "expert": "diffusion",
                      "restorer": "restorer"}  # folder -> model family
INDEX_KEYS = {"diffusion": "model", "autoencoder": "vae", "guide": "guide", "prior": "prior", "embed_prior": "embed_prior",
              "autoguide": "autoguide", "expert": "expert", "restorer": "restorer"}  # folder -> model_index.json key = constructor argument = attribute
# the diffusion components that stand in for the model (on some steps, or beside it) and so must read its inputs
SAME_INPUT_KEYS = ("in_channels", "resolution", "cross_attention_dim", "layout_channels", "reference_image", "image_embed_dim")
MAX_SEED = 2**63 - 1
REFINE_SEED_OFFSET = 2**40  # the refine pass of the image with noise seed s draws its noise from s + this


@dataclass
class TextToImageOutput:
    images: list  # PIL images, num_images_per_prompt per prompt, prompt-major
    metadata: list[dict] = field(default_factory=list)  # per image: prompt, seed, settings (and plan)
    warnings: list[str] = field(default_factory=list)  # what a planner dropped or changed, per prompt

    def save(self, path: str | os.PathLike, index: int = 0) -> Path:
        """Save image ``index`` as a PNG with its generation metadata."""
        return save_png(self.images[index], path, metadata=self.metadata[index])


def _check_scale(name: str, value: object) -> None:
    """A guidance scale: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise WordpaintError(f"{name} must be a finite number >= 0, got {value!r}")


def check_interval(value: object) -> tuple[float, float] | None:
    """``None`` or a (lo, hi) pair of noise levels with 0 <= lo < hi (hi may be inf)."""
    if value is None:
        return None
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) for v in value)
    if not ok or not 0 <= value[0] < value[1]:
        raise WordpaintError(f"guidance_interval must be None or a pair (sigma_lo, sigma_hi) with 0 <= sigma_lo < sigma_hi, got {value!r}")
    return float(value[0]), float(value[1])


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise WordpaintError(f"{name} must be an integer from {lo} to {hi}, got {value!r}")
    if not lo <= value <= hi:
        raise WordpaintError(f"{name} must be from {lo} to {hi}, got {value}")
    return value


def _same_inputs(name: str, other, model):
    """``other`` (a diffusion model called with ``model``'s inputs, or None) frozen for sampling;
    raises ModelLoadError naming each input it reads differently."""
    if other is None:
        return None
    differ = [k for k in SAME_INPUT_KEYS if getattr(other.config, k, None) != getattr(model.config, k, None)]
    if differ:
        raise ModelLoadError(f"the {name} model must read the diffusion model's inputs; they differ in "
                             + ", ".join(f"{k} ({getattr(other.config, k, None)!r} vs {getattr(model.config, k, None)!r})" for k in differ))
    return other.eval().requires_grad_(False)


def check_strength(name: str, value: object, *, off: str | None = None) -> float | None:
    """An img2img strength (``name`` in the error): a number in (0, 1]; where ``off`` names the
    switched-off spelling ("None", or a CLI option's "off"), also None."""
    if value is None and off is not None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise WordpaintError(f"{name} must be a number in (0, 1]{f' or {off}' if off else ''}, got {value!r}")
    return float(value)


def check_expert_sigma(value: object) -> float | None:
    """``None`` (no expert) or the noise level at or below which the expert denoises: a finite number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise WordpaintError(f"expert_sigma must be None or a finite noise level >= 0, got {value!r}")
    return float(value)


def _per_prompt(pictures, n: int, *, what: str) -> list:
    """``pictures`` (one, or a list or tuple of one per prompt) as a list of ``n``; ``what`` names
    the argument in the error."""
    out = list(pictures) if isinstance(pictures, (list, tuple)) else [pictures] * n
    if len(out) != n:
        raise WordpaintError(f"{what} must be one picture or one per prompt ({n}), got {len(out)}")
    return out


class TextToImagePipeline:
    """Text-to-image with a frozen text encoder and a diffusion model (EMA weights); with a
    ``vae`` (an :class:`~wordpaint.models.autoencoder.AutoencoderModel`) the model denoises the
    autoencoder's latents and the pipeline decodes them (latent diffusion)."""

    def __init__(self, *, text_encoder: TextEncoder, model, vae=None, defaults: dict | None = None, planner=None, guide=None,
                 prior=None, embed_prior=None, autoguide=None, expert=None, restorer=None):
        from wordpaint.text.planners import get_planner

        self.text_encoder = text_encoder
        self.model = model.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        # optional noised wordpaint-clip for classifier guidance (clip_guidance_scale); reads the model's own inputs
        self.guide = guide.eval().requires_grad_(False) if guide is not None else None
        if guide is not None and (guide.config.in_channels, guide.config.resolution) != (model.config.in_channels, model.config.resolution):
            raise ModelLoadError(f"the guide reads {guide.config.in_channels} x {guide.config.resolution}^2 inputs, the diffusion model "
                                 f"denoises {model.config.in_channels} x {model.config.resolution}^2")
        # optional latent prior (prior_strength): drafts the model's input from the pooled text
        self.prior = prior.eval().requires_grad_(False) if prior is not None else None
        if prior is not None and (prior.config.latent_channels, prior.config.resolution) != (model.config.in_channels, model.config.resolution):
            raise ModelLoadError(f"the prior drafts {prior.config.latent_channels} x {prior.config.resolution}^2 inputs, the diffusion model "
                                 f"denoises {model.config.in_channels} x {model.config.resolution}^2")
        if prior is not None and prior.config.text_dim != text_encoder.dim:
            raise ModelLoadError(f"the prior reads pooled text of width {prior.config.text_dim}, the text encoder gives {text_encoder.dim}")
        # optional embedding prior (an image-embedding model, unCLIP): the image vector from the pooled text
        self.embed_prior = embed_prior.eval().requires_grad_(False) if embed_prior is not None else None
        if embed_prior is not None and embed_prior.config.embed_dim != getattr(model.config, "image_embed_dim", 0):
            raise ModelLoadError(f"the embedding prior predicts {embed_prior.config.embed_dim}-d image vectors, the diffusion model reads "
                                 f"{getattr(model.config, 'image_embed_dim', 0)}-d ones (image_embed_dim)")
        if embed_prior is not None and embed_prior.config.text_dim != text_encoder.dim:
            raise ModelLoadError(f"the embedding prior reads pooled text of width {embed_prior.config.text_dim}, the text encoder gives {text_encoder.dim}")
        # optional weaker model (autoguidance_scale) and low-noise expert (expert_sigma): each is called
        # with the model's own inputs, so it must read exactly those
        self.autoguide = _same_inputs("autoguide", autoguide, model)
        self.expert = _same_inputs("expert", expert, model)
        # optional restorer (restore): a pixel network on the decoded pictures, reading the pooled prompt
        self.restorer = restorer.eval().requires_grad_(False) if restorer is not None else None
        if restorer is not None:
            if vae is None:
                raise ModelLoadError("a restorer works on the pictures an autoencoder decodes; this pipeline has no autoencoder")
            if restorer.config.text_dim != text_encoder.dim:
                raise ModelLoadError(f"the restorer reads pooled text of width {restorer.config.text_dim}, the text encoder gives {text_encoder.dim}")
        if vae is not None:
            if model.config.in_channels != vae.config.latent_channels:
                raise ModelLoadError(f"the diffusion model takes {model.config.in_channels} channels, the autoencoder's latents have {vae.config.latent_channels}")
            if model.config.layout_channels and not model.config.reference_image:
                raise ModelLoadError("a layout model on latents is not supported (layouts are rasterised at pixel size)")
        self.defaults = {**DEFAULTS, **(defaults or {})}
        # planner: a backend name ("rules", "smollm2", ...), a planner object, or None (the prompt
        # conditions the model directly)
        self.planner = get_planner(planner) if planner is not None else None

    # -- folder format -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, *, text_encoder: TextEncoder | None = None,
                        planner="default") -> "TextToImagePipeline":
        """Load a pipeline folder; no argument (or ``"shapes"``) loads the bundled model.
        ``planner`` names a scene planner backend (see :mod:`wordpaint.text.planners`) or is a
        planner object; ``"default"`` takes the folder's default (``defaults["planner"]`` in
        model_index.json: the bundled layout model plans with ``rules``); None plans nothing."""
        if path is None or str(path) in BUNDLED_MODELS:
            name = "shapes" if path is None else str(path)
            path = BUNDLED_MODELS[name]
            if not (Path(path) / "model_index.json").is_file():
                raise ModelLoadError(
                    f"the bundled {name!r} model is missing from this install ({path}); reinstall wordpaint or pass a model folder"
                    + (" (train one with the recipes emoji_ae and emoji64, see the README)" if name == "emoji" else "")
                )
        path = Path(path)
        if not path.is_dir():
            raise ModelLoadError(
                f"model folder not found: {path} (give a folder written by save_pretrained or `wordpaint train`, "
                f"or one of: {', '.join(BUNDLED_MODELS)}); nothing is downloaded"
            )
        index = read_json(path / "model_index.json", what="model index")
        if index.get("_class_name") != cls.__name__:
            raise ModelLoadError(f"{path}/model_index.json is for {index.get('_class_name')!r}, not {cls.__name__}")
        if text_encoder is None:
            te_cfg = read_json(path / "text_encoder" / "config.json", what="text encoder config")
            text_encoder = TextEncoder(TextEncoderConfig(**{k: te_cfg[k] for k in ("name_or_path", "max_length", "normalize_pooled") if k in te_cfg}))
        model = load_model(path / index.get("model", "diffusion"))
        if model.config.cross_attention_dim != text_encoder.dim:
            raise ModelLoadError(
                f"model expects text states of width {model.config.cross_attention_dim}, the text encoder gives {text_encoder.dim}"
            )
        # the optional components (autoencoder, guide, prior) the index names
        optional = {key: load_model(path / index[key]) for key in INDEX_KEYS.values() if key != "model" and index.get(key)}
        defaults = dict(index.get("defaults") or {})
        if isinstance(planner, str) and planner == "default":
            planner = defaults.get("planner")
        return cls(text_encoder=text_encoder, model=model, defaults=defaults, planner=planner, **optional)

    def save_pretrained(self, path: str | os.PathLike, *, dtype: torch.dtype = torch.float32, int8: tuple[str, ...] = ()) -> Path:
        """Write the pipeline folder atomically (``dtype=torch.float16`` halves the file). ``int8``
        names components (folder names: "diffusion", "expert", ...) whose weights are stored as
        int8 with per-channel scales (:func:`save_model`; half of float16's bytes again); a
        component loaded from int8 weights is written as int8 again. A planner that needs no
        options (rules, smollm2) is written as the folder's default, so a layout model loads with
        the planner it was evaluated with."""
        parts = self.components()
        for name in int8:
            check_choice("int8 component", name, COMPONENT_FAMILIES)
            if parts[name] is None:
                raise WordpaintError(f"int8: this pipeline has no {name!r} component (it has: "
                                     f"{', '.join(k for k, v in parts.items() if v is not None)})")
        as_int8 = self.int8_components(int8)
        path = Path(path)
        defaults = dict(self.defaults)
        if self.planner is not None and self.planner.name in ("rules", "smollm2"):
            defaults["planner"] = self.planner.name
        with atomic_dir(path) as tmp:
            write_json(tmp / "model_index.json", {
                "_class_name": type(self).__name__,
                "wordpaint_version": wordpaint.__version__,
                "text_encoder": "text_encoder",
                **{INDEX_KEYS[folder]: folder for folder, module in self.components().items() if module is not None},
                "defaults": defaults,
            })
            write_json(tmp / "text_encoder" / "config.json", {**self.text_encoder.to_config_dict(), "wordpaint_version": wordpaint.__version__})
            for folder, module in parts.items():
                if module is not None:
                    save_model(module, tmp / folder, dtype=torch.int8 if folder in as_int8 else dtype)
        return path

    def int8_components(self, also: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The components :meth:`save_pretrained` writes as int8 weights: those loaded from int8
        files and those named in ``also``."""
        return tuple(name for name, m in self.components().items()
                     if m is not None and (name in also or getattr(m, "stored_int8", False)))

    def components(self) -> dict:
        """The model components by folder name ("diffusion", "autoencoder", "guide", "prior", "embed_prior",
        "autoguide", "expert", "restorer"; None where absent)."""
        return {folder: getattr(self, key) for folder, key in INDEX_KEYS.items()}  # index key = attribute name

    def with_component(self, name: str, model, *, allow_new_latents: bool = False) -> "TextToImagePipeline":
        """A copy of this pipeline with component ``name`` ("diffusion", "autoencoder", "guide",
        "prior", "embed_prior", "autoguide", "expert" or "restorer") replaced (or, for the optional ones,
        added) by ``model``: e.g. a fine-tuned decoder from a ``train_encoder=false`` run, a noised
        wordpaint-clip for ``clip_guidance_scale``, a latent prior for ``prior_strength``, a
        weaker diffusion model for ``autoguidance_scale``, a low-noise expert for ``expert_sigma``,
        or a restorer for ``restore``.

        A latent diffusion model was trained on its autoencoder's latents, so a new autoencoder
        must encode exactly as the old one did (same encoder weights and ``scaling_factor``):
        only its decoder may differ. ``allow_new_latents=True`` skips that check, for when the
        diffusion model will be retrained on the new latents."""
        check_choice("component", name, COMPONENT_FAMILIES)
        family = family_of(model.config)
        if family != COMPONENT_FAMILIES[name]:
            raise WordpaintError(f"a {family!r} model cannot be the pipeline's {name!r} component (that takes a {COMPONENT_FAMILIES[name]!r} model)")
        parts = {INDEX_KEYS[folder]: module for folder, module in self.components().items()}
        parts[INDEX_KEYS[name]] = model
        if name == "autoencoder" and self.vae is not None and not allow_new_latents:
            _check_same_latents(self.vae, model)
        return type(self)(text_encoder=self.text_encoder, defaults=dict(self.defaults), planner=self.planner, **parts)

    def to(self, device: str | torch.device) -> "TextToImagePipeline":
        """Move every component (text encoder, diffusion model, autoencoder, guide, prior) to ``device``;
        returns the pipeline. Noise is still drawn on the CPU, so a seed gives the same start anywhere."""
        self.text_encoder.to(device)
        for module in self.components().values():
            if module is not None:
                module.to(device)
        return self

    # -- planning ------------------------------------------------------------------------------
    def plan(self, prompt: str, *, seed: int = 0):
        """The scene plan for ``prompt`` from this pipeline's planner (the rules planner if none)."""
        from wordpaint.text.planners import get_planner

        return (self.planner or get_planner("rules")).plan(prompt, seed=seed)

    def _condition(self, prompts: list[str], seed: int, plans: list | None) -> tuple[list[str], list, list[str]]:
        """(text to encode, ScenePlan or None, warnings) per prompt. Without a planner or given
        plans: the prompt itself. With a plan that has objects: the plan's rewritten prompt (the
        grammar the model was trained on); a layout model also draws the plan's boxes."""
        from wordpaint.text.plan import ScenePlan, is_valid, repair

        if plans is not None:
            if not isinstance(plans, (list, tuple)) or len(plans) != len(prompts) or not all(isinstance(p, ScenePlan) for p in plans):
                raise WordpaintError(f"plans must be a list of ScenePlan, one per prompt ({len(prompts)}), got {type(plans).__name__}")
            plans = [p if is_valid(p) else repair(p) for p in plans]
        elif self.planner is not None:
            plans = [self.planner.plan(p, seed=seed) for p in prompts]
        else:
            return prompts, [None] * len(prompts), []
        texts, warnings = [], []
        for p, plan in zip(prompts, plans):
            text = plan.prompt if plan.objects and plan.prompt else p
            self.text_encoder.check_prompt(text)
            texts.append(text)
            warnings += [f"{p[:60]!r}: {w}" for w in plan.warnings]
        return texts, list(plans), warnings

    def _layout(self, plan, height: int, width: int) -> torch.Tensor | None:
        """(LAYOUT_CHANNELS, H, W) for a layout model (zeros without a plan with objects: the
        model's "no layout"), None for a prompt-only model and for a reference model (whose layout
        input is a reference picture's latent, :meth:`_references`; none = zeros in the model)."""
        from wordpaint.text.layout import layout_from_plan, rasterize

        if not self.model.config.layout_channels or self.model.config.reference_image:
            return None
        if plan is None or not plan.objects:
            return torch.zeros(self.model.config.layout_channels, height, width)
        objects, background = layout_from_plan(plan)
        return rasterize(objects, background, height=height, width=width, silhouettes=self.model.config.layout_silhouettes)

    # -- generation ----------------------------------------------------------------------------
    @property
    def vae_factor(self) -> int:
        """Pixels per latent cell along a side (1 for a pixel model)."""
        return self.vae.config.downsample_factor if self.vae is not None else 1

    @property
    def resolution(self) -> int:
        """The image size (pixels) the model was trained at."""
        return self.model.config.resolution * self.vae_factor

    def _validate(self, prompt, steps, guidance, sampler, n, height, width, seed, plans=None):
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise WordpaintError(f"prompt must be a non-empty string or a non-empty list of strings, got {prompt!r:.60}")
        for p in prompts:
            if not isinstance(p, str):
                raise WordpaintError(f"prompt must be a string, got {type(p).__name__}")
            if not p.strip():
                raise WordpaintError("prompt is empty; describe the image, e.g. 'a red circle to the left of a blue square'")
            if self.planner is None and plans is None:  # with a plan, its rewritten prompt is what gets encoded
                self.text_encoder.check_prompt(p)
        _check_int("num_inference_steps", steps, 1, MAX_STEPS)
        _check_scale("guidance_scale", guidance)
        check_choice("sampler", sampler, SAMPLERS)
        _check_int("num_images_per_prompt", n, 1, 1024)
        f = self.model.config.downsample_factor * self.vae_factor
        for name, v in (("height", height), ("width", width)):
            _check_int(name, v, f, 4096)
            if v % f:
                raise WordpaintError(f"{name} must be a multiple of {f} for this model, got {v} (the model was trained at {self.resolution})")
        if seed is not None:
            _check_int("seed", seed, 0, MAX_SEED)
        return list(prompts)

    def _init_images(self, image, n: int, height: int, width: int, *, what: str = "image") -> torch.Tensor:
        """(n, C, height, width) pixels in [-1, 1] from one PIL image or one per prompt (resized to
        the canvas when their size differs; transparency composited on white); ``what`` names the
        argument in errors."""
        from PIL import Image

        from wordpaint.images import on_white

        images = _per_prompt(image, n, what=what)
        channels = self.vae.config.in_channels if self.vae is not None else self.model.config.in_channels
        out = []
        for k, im in enumerate(images):
            if not isinstance(im, Image.Image):
                raise WordpaintError(f"{what} {k} must be a PIL image, got {type(im).__name__}")
            im = on_white(im)
            if channels == 1:
                im = im.convert("L")
            if im.size != (width, height):
                im = im.resize((width, height), Image.BICUBIC)
            a = torch.from_numpy(np.asarray(im, dtype=np.float32).reshape(height, width, -1)).permute(2, 0, 1)
            out.append(a / 127.5 - 1)
        return torch.stack(out)

    def _references(self, reference, n: int, height: int, width: int) -> tuple[torch.Tensor, list[bool]]:
        """((n, C, h, w) what a reference model reads, whether prompt k has a reference) of one
        picture or one per prompt (None: no reference for that prompt, zeros as in training): each
        picture resized to the canvas and encoded like an image (a latent pipeline's latents)."""
        if not self.model.config.reference_image:
            raise WordpaintError("reference needs a model trained with reference pictures (reference_image = true, e.g. the "
                                 "emoji64_ref recipe); this one reads " + ("a planned layout" if self.model.config.layout_channels else "text only"))
        from PIL import Image

        pictures = _per_prompt(reference, n, what="reference")
        for k, p in enumerate(pictures):
            if p is not None and not isinstance(p, Image.Image):
                raise WordpaintError(f"reference {k} must be a PIL image or None, got {type(p).__name__}")
        given = [k for k, p in enumerate(pictures) if p is not None]
        h, w = height // self.vae_factor, width // self.vae_factor
        out = torch.zeros(len(pictures), self.model.config.layout_channels, h, w)
        if given:
            x = self._init_images([pictures[k] for k in given], len(given), height, width, what="reference")
            out[given] = self.vae.encode(x).cpu().float() if self.vae is not None else x
        return out, [p is not None for p in pictures]

    def _detail(self, x: torch.Tensor, plans: list, *, seeds: list[int], steps: int, schedule: str, strength: float,
                regional_prompts: bool, **sampling) -> torch.Tensor:
        """``x`` (B, C, H, W) in [-1, 1] with every small planned object redrawn (``detail=True`` of
        :meth:`__call__`). Crop k of image b uses noise seed ``seeds[b] + (k + 1) * 1_000_003``, so
        the result does not depend on batch size."""
        import torch.nn.functional as F

        _, _, height, width = x.shape
        crops = detail_crops(plans, height=height, width=width)
        if not crops:
            return x
        R = self.resolution
        pix = torch.cat([F.interpolate(x[c.image : c.image + 1, :, c.y0 : c.y0 + c.side, c.x0 : c.x0 + c.side], size=(R, R),
                                       mode="bicubic", align_corners=False).clamp(-1, 1) for c in crops])  # (N, C, R, R)
        crop_plans = [c.plan for c in crops]
        layouts = torch.stack([self._layout(pl, R, R) for pl in crop_plans])
        f = self.vae_factor
        regions = regions_for(crop_plans, height=R // f, width=R // f) if regional_prompts else None
        sigmas = strength_sigmas(self.model.sigmas(steps, schedule), strength, name="detail_strength")
        out = self.sample_batch([pl.prompt for pl in crop_plans], seeds=[seeds[c.image] + (c.obj + 1) * 1_000_003 for c in crops],
                                sigmas=sigmas, height=R, width=R, layouts=layouts, regions=regions, init=pix, **sampling)
        x = x.clone()
        for c, y in zip(crops, out):
            y = F.interpolate(y[None], size=(c.side, c.side), mode="bilinear", antialias=True, align_corners=False)[0]
            m = c.mask  # (side, side) the share of the redrawn crop
            patch = x[c.image, :, c.y0 : c.y0 + c.side, c.x0 : c.x0 + c.side]
            x[c.image, :, c.y0 : c.y0 + c.side, c.x0 : c.x0 + c.side] = patch * (1 - m) + y * m
        return x

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        *,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        sampler: str | None = None,
        seed: int | None = None,
        num_images_per_prompt: int = 1,
        height: int | None = None,
        width: int | None = None,
        sigma_schedule: str | None = None,
        guidance_interval: tuple[float, float] | None | str = "default",
        layout_guidance_scale: float | None | str = "default",
        text_guidance_scale: float | None | str = "default",
        batch_size: int = 16,
        plans: list | None = None,
        regional_prompts: bool = False,
        clip_guidance_scale: float | str = "default",
        clip_guidance_contrast: list[str] | list[list[str]] | None | str = "default",
        autoguidance_scale: float | str = "default",
        expert_sigma: float | None | str = "default",
        refine_strength: float | None | str = "default",
        image=None,
        strength: float = 0.8,
        detail: bool | str = "default",
        detail_strength: float | str = "default",
        prior_strength: float | None | str = "default",
        restore: bool | str = "default",
        reference=None,
        image_embed: torch.Tensor | None | str = "prior",
        negative_prompt: str | list[str] | None = None,
        show_progress: bool = False,
    ) -> TextToImageOutput:
        """Generate images. Image k (prompt-major) uses noise from seed + k, so a result does not
        depend on batch size; ``seed=None`` draws a random seed (recorded in the metadata).
        ``plans`` (one :class:`~wordpaint.text.plan.ScenePlan` per prompt) replaces the planner:
        e.g. ground-truth layouts, or plans a user edited. ``guidance_interval=(lo, hi)`` applies
        guidance only at noise levels lo <= sigma <= hi and runs the conditional model alone
        elsewhere (Kynkaanniemi et al. 2024): cheaper, and often no worse; ``None`` guides every
        step; ``"default"`` takes the model folder's. ``layout_guidance_scale`` (layout models)
        weights the plan's layout apart from the text (:func:`guide`; one more model pass per
        step); ``None`` guides both with ``guidance_scale``; ``"default"`` takes the folder's.
        ``text_guidance_scale`` is the other way round: the layout gets ``guidance_scale`` and the
        text its own weight; 0 draws from the layout alone (for a model trained with
        ``text_drop_prob``; on the shapes model neither helped, see the README). At most one of
        the two may be set. ``regional_prompts`` (layout models, with a plan): inside each object's
        box (and a small margin) the conditional estimate comes from a pass whose text names that
        object alone ("a green cross"), elsewhere from the whole prompt, as LMD composes per-box
        generations; one more conditional pass per object (:func:`regions_for`).
        ``clip_guidance_scale`` > 0 (a pipeline with a ``guide``) adds classifier guidance from a
        noised wordpaint-clip on top (:mod:`wordpaint.models.noised_clip`); ``"default"`` takes the folder's.
        ``clip_guidance_contrast`` (texts, the same for every prompt, or one list per prompt) turns that
        guidance into a (K + 1)-way classifier's: it climbs log p(prompt | x) against those texts
        (e.g. the same subject in the other styles) instead of the prompt's similarity alone, so it
        pushes only along what tells the prompt apart from them (a prompt with an empty list gets
        the plain guidance); ``"default"``: where the folder names ``clip_contrast_styles``, each
        prompt that asks for one of them ("... in twemoji style") is contrasted with itself in the
        others (:func:`style_contrasts`), else none; None: none.
        ``autoguidance_scale`` > 0 (a pipeline with an ``autoguide``: a weaker diffusion model of the
        same inputs, e.g. a smaller or shorter-trained one) adds autoguidance (Karras et al. 2024):
        the guided estimate moves by that weight times (conditional estimate - the weaker model's
        conditional estimate), away from the weaker model's typical errors; one more pass of the
        weaker model per step; ``"default"`` takes the folder's.
        ``expert_sigma`` (a pipeline with an ``expert``: a diffusion model of the same inputs trained
        only on low noise) hands every step at noise level <= that sigma to the expert instead of the
        model (eDiff-I's expert denoisers, Balaji et al. 2022, cut to two): the model lays out the
        picture, the expert draws its last details; no extra pass. None: the model alone;
        ``"default"`` takes the folder's. ``refine_strength`` s (SDXL's refiner) runs img2img on each
        finished picture at strength s (re-encoded by a latent pipeline, fresh noise from seed +
        ``REFINE_SEED_OFFSET``): every step by the ``expert`` where the pipeline has one, else by the
        model (``num_inference_steps * s`` more steps); None: no refine pass; ``"default"`` takes the folder's.
        ``restore`` (a pipeline with a ``restorer``, :mod:`wordpaint.models.restorer`) runs the finished,
        decoded pictures through it, conditioned on each prompt: a small pixel network trained to undo
        the autoencoder's round-trip losses given the text; ``"default"`` takes the folder's.
        ``image`` (a PIL image, or one per prompt) starts from that picture instead of pure noise
        (img2img, SDEdit): it is noised to the level ``strength`` of the way up the schedule and
        denoised from there, so ``num_inference_steps * strength`` steps run (diffusers' convention);
        ``strength`` 1 keeps nothing of it. ``detail`` (layout models, with a plan) redraws every small
        planned object (box side <= ``DETAIL_MAX_SIDE`` of the canvas) in a second pass: a square crop
        around it, enlarged to the model's resolution so that the object is as large as the large
        objects it draws best, goes through img2img at ``detail_strength`` with the crop's own layout
        and the object's phrase, and is pasted back inside the object's box (:func:`detail_crops`),
        as LMD draws each box on its own and face "detailers" redraw small faces; ``"default"``
        takes the folder's (the bundled shapes model: on, strength 0.5). ``prior_strength`` (a pipeline
        with a ``prior``, :mod:`wordpaint.models.latent_prior`) starts the chain from the prior's draft
        of the prompt instead of pure noise, noised that far up the schedule, as ``image`` does with
        ``strength`` (DiffuseVAE's coarse-sample-then-refine); 0 returns the draft itself (decoded, no
        diffusion step, the same for every seed); None starts from noise; ``"default"`` takes the folder's.
        ``reference`` (a reference model, ``reference_image``: a PIL image, or one per prompt) is the
        picture whose subject the model redraws as the prompt asks (the emoji model: the same concept
        in another style); the unconditional half of guidance gets none, as in training.
        ``image_embed`` (an image-embedding model, ``image_embed_dim``: unCLIP's decoder) is the image
        vector the picture is drawn to match: ``"prior"`` predicts it from each prompt with the
        pipeline's ``embed_prior`` (none without one: text alone), None draws from text alone, a
        (P, D) or (D,) tensor gives it (e.g. :func:`wordpaint.eval.metrics.extract` features of a picture:
        variations of it); the unconditional half of guidance gets none, as in training.
        ``negative_prompt`` (one string, or one per prompt) is encoded in place of the empty text
        of guidance's unconditional half, so guidance pushes away from it (diffusers' convention;
        no effect at ``guidance_scale`` 1, and the ``detail`` pass draws without it)."""
        interval = check_interval(self.defaults["guidance_interval"] if guidance_interval == "default" else guidance_interval)
        steps = self.defaults["num_inference_steps"] if num_inference_steps is None else num_inference_steps
        guidance = self.defaults["guidance_scale"] if guidance_scale is None else guidance_scale
        layout_guidance = self.defaults["layout_guidance_scale"] if layout_guidance_scale == "default" else layout_guidance_scale
        text_guidance = self.defaults["text_guidance_scale"] if text_guidance_scale == "default" else text_guidance_scale
        clip_guidance = self.defaults["clip_guidance_scale"] if clip_guidance_scale == "default" else clip_guidance_scale
        _check_scale("clip_guidance_scale", clip_guidance)
        autoguidance = self.defaults["autoguidance_scale"] if autoguidance_scale == "default" else autoguidance_scale
        _check_scale("autoguidance_scale", autoguidance)
        if autoguidance and self.autoguide is None:
            raise WordpaintError("autoguidance_scale needs a pipeline with an autoguide (a weaker diffusion model component, "
                                 "added with `wordpaint model replace --component autoguide`); this one has none")
        if autoguidance and regional_prompts:
            raise WordpaintError("autoguidance_scale does not combine with regional_prompts: set one of them")
        expert_sigma = check_expert_sigma(self.defaults["expert_sigma"] if expert_sigma == "default" else expert_sigma)
        restore = self.defaults["restore"] if restore == "default" else restore
        if not isinstance(restore, bool):
            raise WordpaintError(f"restore must be True or False, got {restore!r}")
        if restore and self.restorer is None:
            raise WordpaintError("restore needs a pipeline with a restorer (a text-conditioned pixel network component, "
                                 "added with `wordpaint model replace --component restorer`); this one has none")
        refine = check_strength("refine_strength", self.defaults["refine_strength"] if refine_strength == "default" else refine_strength,
                                off="None")
        if expert_sigma is not None and self.expert is None:
            raise WordpaintError("expert_sigma needs a pipeline with an expert (a low-noise diffusion model component, "
                                 "added with `wordpaint model replace --component expert`); this one has none")
        if clip_guidance and self.guide is None:
            raise WordpaintError("clip_guidance_scale needs a pipeline with a guide (a noised wordpaint-clip component); this one has none")
        if clip_guidance_contrast not in (None, "default") and not clip_guidance:
            raise WordpaintError("clip_guidance_contrast shapes the guide's classifier guidance: it needs clip_guidance_scale > 0")
        for name, value in (("layout_guidance_scale", layout_guidance), ("text_guidance_scale", text_guidance)):
            if value is not None:
                _check_scale(name, value)
        if text_guidance is not None and not self.model.config.layout_channels:
            raise WordpaintError("text_guidance_scale weighs the text apart from a plan's layout; this model reads no layout "
                                 "(layout_channels = 0)")
        if not isinstance(regional_prompts, bool):
            raise WordpaintError(f"regional_prompts must be True or False, got {regional_prompts!r}")
        if regional_prompts and not self.model.config.layout_channels:
            raise WordpaintError("regional_prompts needs a layout model (it conditions each object's box on its own phrase); "
                                 "this model reads no layout (layout_channels = 0)")
        if regional_prompts and (layout_guidance is not None or text_guidance is not None):
            raise WordpaintError("regional_prompts combines with the usual guidance only, not with layout_guidance_scale "
                                 "or text_guidance_scale")
        if layout_guidance is not None and text_guidance is not None:
            raise WordpaintError("layout_guidance_scale and text_guidance_scale are alternatives (one weighs the layout apart "
                                 "from the text, the other the text apart from the layout): set at most one")
        detail = self.defaults["detail"] if detail == "default" else detail
        detail_strength = self.defaults["detail_strength"] if detail_strength == "default" else detail_strength
        if not isinstance(detail, bool):
            raise WordpaintError(f"detail must be True or False, got {detail!r}")
        if detail and not self.model.config.layout_channels:
            raise WordpaintError("detail redraws each small planned object from its layout; this model reads no layout "
                                 "(layout_channels = 0)")
        if (regional_prompts or detail) and self.model.config.reference_image:
            raise WordpaintError("regional_prompts and detail work on a planned layout; this model's layout input is a reference picture")
        prior_strength = self.defaults["prior_strength"] if prior_strength == "default" else prior_strength
        check_strength("strength", strength)
        check_strength("detail_strength", detail_strength)
        if prior_strength is not None and (isinstance(prior_strength, bool) or not isinstance(prior_strength, (int, float))
                                           or not 0 <= prior_strength <= 1):
            raise WordpaintError(f"prior_strength must be a number in [0, 1] or None, got {prior_strength!r}")
        if prior_strength is not None and self.prior is None:
            raise WordpaintError("prior_strength needs a pipeline with a prior (a latent_prior component); this one has none")
        if prior_strength is not None and image is not None:
            raise WordpaintError("image and prior_strength both choose where the chain starts: give one of them "
                                 "(prior_strength=None to start from the image)")
        sampler = sampler or self.defaults["sampler"]
        schedule = sigma_schedule or self.defaults["sigma_schedule"]
        check_choice("sigma_schedule", schedule, SIGMA_SCHEDULES)
        if image is not None and height is None and width is None:  # img2img draws at the picture's size by default
            first = image[0] if isinstance(image, (list, tuple)) and image else image
            width, height = getattr(first, "size", (None, None))
        height, width = height or self.resolution, width or self.resolution
        if prior_strength is not None and (height, width) != (self.resolution, self.resolution):
            raise WordpaintError(f"the prior drafts {self.resolution} x {self.resolution} px pictures only, got {height} x {width}: "
                                 f"drop the size or pass prior_strength=None")
        prompts = self._validate(prompt, steps, guidance, sampler, num_images_per_prompt, height, width, seed, plans)
        inits = None if image is None else self._init_images(image, len(prompts), height, width)  # (P, C, H, W)
        negs = self._negative_prompts(negative_prompt, len(prompts))  # one per prompt, or None
        contrasts = self._contrast_prompts(clip_guidance_contrast, prompts, clip_guidance)  # P lists of texts, or None
        refs, has_ref = (None, [False] * len(prompts)) if reference is None else self._references(reference, len(prompts), height, width)
        _check_int("batch_size", batch_size, 1, 4096)
        if seed is None:
            seed = random.randrange(2**31)
        planner_name = "given" if plans is not None else getattr(self.planner, "name", None)
        texts, plans, warnings = self._condition(prompts, seed, plans)
        layouts = [self._layout(pl, height, width) for pl in plans] if refs is None else list(refs)
        jobs = [(p, t, pl, lay, k) for k, (p, t, pl, lay) in enumerate(zip(prompts, texts, plans, layouts))
                for _ in range(num_images_per_prompt)]
        sigmas = self.model.sigmas(steps, schedule)
        # checked before any drawing
        refine_sigmas = None if refine is None else strength_sigmas(sigmas, refine, name="refine_strength")
        if inits is not None:
            sigmas = strength_sigmas(sigmas, strength)
        elif prior_strength == 0:
            sigmas = sigmas[-1:]  # no step: the draft itself, decoded
        elif prior_strength is not None:
            sigmas = strength_sigmas(sigmas, prior_strength, name="prior_strength")
        sampling = dict(guidance_scale=guidance, sampler=sampler, layout_guidance_scale=layout_guidance,
                        text_guidance_scale=text_guidance, guidance_interval=interval, clip_guidance_scale=clip_guidance,
                        autoguidance_scale=autoguidance, expert_sigma=expert_sigma)
        embeds, embed_source = self._image_embeds(image_embed, prompts)  # (P, D) or None
        images, meta = [], []
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            seeds = [seed + start + i for i in range(len(chunk))]
            lays = [lay for _, _, _, lay, _ in chunk]
            lay = None if lays[0] is None else torch.stack(lays)  # (B, C_l, H, W) for a layout model
            regions = None
            if regional_prompts:
                f = self.vae_factor
                regions = regions_for([pl for _, _, pl, _, _ in chunk], height=height // f, width=width // f)
            init = None if inits is None else inits[[k for *_, k in chunk]]
            batch = dict(height=height, width=width, layouts=lay, regions=regions, show_progress=show_progress,
                         image_embeds=None if embeds is None else embeds[[k for *_, k in chunk]],
                         negative_prompts=None if negs is None else [negs[k] for *_, k in chunk],
                         clip_contrast=None if contrasts is None else [contrasts[k] for *_, k in chunk])
            chunk_texts = [t for _, t, _, _, _ in chunk]
            x = self.sample_batch(chunk_texts, seeds=seeds, sigmas=sigmas, init=init, from_prior=prior_strength is not None,
                                  **batch, **sampling)
            if refine is not None:  # img2img of the (B, C, H, W) finished pictures (re-encoded by a latent pipeline)
                x = self.sample_batch(chunk_texts, seeds=[s + REFINE_SEED_OFFSET for s in seeds], sigmas=refine_sigmas, init=x,
                                      **batch, **{**sampling, "expert_sigma": math.inf if self.expert is not None else None})
            if detail:
                x = self._detail(x, [pl for _, _, pl, _, _ in chunk], seeds=seeds, steps=steps, schedule=schedule,
                                 strength=detail_strength, regional_prompts=regional_prompts, **sampling)
            if restore:  # last: a refine pass re-encodes its input, which would undo the restorer's work
                x = self.restorer.restore(x, self.text_encoder.encode(chunk_texts).pooled)
            images += to_pil(x)
            for (p, t, pl, _, k), s in zip(chunk, seeds):
                m = {"prompt": p, "seed": s, "num_inference_steps": steps, "guidance_scale": guidance, "sampler": sampler,
                     "sigma_schedule": schedule, "guidance_interval": list(interval) if interval else None,
                     "layout_guidance_scale": layout_guidance, "text_guidance_scale": text_guidance, "regional_prompts": regional_prompts,
                     **({"clip_guidance_scale": clip_guidance} if clip_guidance else {}),
                     **({"clip_guidance_contrast": contrasts[k]} if contrasts is not None and contrasts[k] else {}),
                     **({"autoguidance_scale": autoguidance} if autoguidance else {}),
                     **({"expert_sigma": expert_sigma} if expert_sigma is not None else {}),
                     **({"refine_strength": refine} if refine is not None else {}),
                     **({"restore": True} if restore else {}),
                     **({"init_image": True, "strength": strength} if inits is not None else {}),
                     **({"prior_strength": prior_strength} if prior_strength is not None else {}),
                     **({"reference": True} if has_ref[k] else {}),
                     **({"image_embed": embed_source} if embed_source else {}),
                     **({"negative_prompt": negs[k]} if negs is not None else {}),
                     **({"detail": True, "detail_strength": detail_strength} if detail else {}),
                     "height": height, "width": width,
                     "wordpaint_version": wordpaint.__version__}
                if pl is not None:
                    m.update(planner=planner_name, conditioning_prompt=t, plan=pl.to_dict())
                meta.append(m)
        return TextToImageOutput(images, meta, warnings)

    def _negative_prompts(self, negative_prompt, n: int) -> list[str] | None:
        """``negative_prompt`` as one string per prompt (``n``), checked like a prompt, or None."""
        if negative_prompt is None:
            return None
        negs = [negative_prompt] if isinstance(negative_prompt, str) else negative_prompt
        if not isinstance(negs, (list, tuple)) or len(negs) not in (1, n) or not all(isinstance(t, str) for t in negs):
            raise WordpaintError(f"negative_prompt must be a string or a list of {n} strings (one per prompt), got {negative_prompt!r:.60}")
        self._check_texts("negative_prompt", negs)
        return list(negs) * n if len(negs) == 1 else list(negs)

    def _check_texts(self, name: str, texts) -> None:
        """Check each of ``texts`` as a prompt; the error names the option (``name``) it came from."""
        for t in texts:
            try:
                self.text_encoder.check_prompt(t)
            except WordpaintError as e:
                raise WordpaintError(f"{name}: {e}") from None

    def _contrast_prompts(self, contrast, prompts: list[str], clip_guidance: float) -> list[list[str]] | None:
        """``clip_guidance_contrast`` as one list of texts per prompt (each checked like a prompt), or None."""
        n = len(prompts)
        if contrast == "default":
            styles = self.defaults.get("clip_contrast_styles")
            lists = [style_contrasts(p, styles) for p in prompts] if clip_guidance and styles else []
            return lists if any(lists) else None
        if contrast is None:
            return None
        ok = isinstance(contrast, (list, tuple)) and len(contrast) > 0
        per_prompt = ok and all(isinstance(c, (list, tuple)) for c in contrast)
        lists = [list(c) for c in contrast] if per_prompt else [list(contrast)] * n if ok else []
        if not ok or len(lists) != n or not all(isinstance(t, str) for c in lists for t in c):
            raise WordpaintError(f"clip_guidance_contrast must be a non-empty list of strings, or {n} lists of strings (one "
                                 f"per prompt), got {contrast!r:.80}")
        self._check_texts("clip_guidance_contrast", {t for c in lists for t in c})
        return lists if any(lists) else None

    def _image_embeds(self, image_embed, prompts: list[str]) -> tuple[torch.Tensor | None, str | None]:
        """((P, D) image vectors for the prompts or None, where they came from: "prior" / "given" / None)."""
        dim = getattr(self.model.config, "image_embed_dim", 0)
        if image_embed is None:
            return None, None
        if isinstance(image_embed, str):
            if image_embed != "prior":
                raise WordpaintError(f"image_embed must be 'prior', None or a tensor, got {image_embed!r}")
            if not dim or self.embed_prior is None:
                return None, None
            with torch.no_grad():
                pooled = self.text_encoder.encode(prompts).pooled
                return self.embed_prior.embed(pooled.to(module_device(self.embed_prior))).cpu(), "prior"
        if not dim:
            raise WordpaintError("image_embed conditions an image-embedding model (image_embed_dim > 0); this model reads none")
        if not isinstance(image_embed, torch.Tensor) or image_embed.shape[-1] != dim or image_embed.ndim not in (1, 2) \
                or (image_embed.ndim == 2 and len(image_embed) not in (1, len(prompts))):
            raise WordpaintError(f"image_embed must be a ({dim},) tensor or one row per prompt ({len(prompts)}, {dim}), "
                                 f"got {getattr(image_embed, 'shape', type(image_embed).__name__)}")
        if not torch.isfinite(image_embed).all():
            raise WordpaintError("image_embed has NaN or infinite values")
        return image_embed.float().reshape(-1, dim).expand(len(prompts), dim).cpu(), "given"

    def sample_batch(self, prompts: list[str], *, seeds: list[int], sigmas: torch.Tensor, guidance_scale: float,
                       sampler: str, height: int, width: int, layouts: torch.Tensor | None = None,
                       layout_guidance_scale: float | None = None, text_guidance_scale: float | None = None,
                       guidance_interval: tuple[float, float] | None = None, regions: Regions | None = None,
                       clip_guidance_scale: float = 0.0, autoguidance_scale: float = 0.0, expert_sigma: float | None = None,
                       init: torch.Tensor | None = None,
                       from_prior: bool = False, image_embeds: torch.Tensor | None = None,
                       negative_prompts: list[str] | None = None, clip_contrast: list[list[str]] | None = None,
                       show_progress: bool = False, decode: bool = True) -> torch.Tensor:
        """The generation loop for one batch: encode, build the guided denoiser, integrate.
        ``layouts`` (B, LAYOUT_CHANNELS, H, W) conditions a layout model (the unconditional half
        of guidance gets none). ``layout_guidance_scale`` guides the layout apart from the text,
        ``text_guidance_scale`` the text apart from the layout (see :func:`guide`; a third model
        pass, none for the text at 0). Outside ``guidance_interval`` (sigma range) a step
        runs the conditional batch alone. ``regions`` (:func:`regions_for`) replaces the full
        pass's estimate inside each object's mask by a pass on that object's own text. ``init``
        (B, C, H, W) pixels in [-1, 1] start the chain at ``init + sigmas[0] * noise`` (img2img;
        encoded to latents first by a latent pipeline) instead of at pure noise; ``from_prior`` starts
        it at ``draft + sigmas[0] * noise`` with the prior's draft of each prompt. ``image_embeds``
        (B, D) condition an image-embedding model (the unconditional half gets none).
        ``negative_prompts`` (B strings) replace the unconditional half's empty text.
        ``clip_contrast`` (B lists of texts) makes the guide's classifier guidance (K + 1)-way per image
        (an empty list: the plain guidance).
        ``autoguidance_scale`` a adds a * (D_cond - D_weak) with D_weak the ``autoguide`` model's
        conditional estimate, at every step (not in regions mode). ``expert_sigma`` s runs the
        ``expert`` in place of the model at every step with sigma <= s (its every pass). Returns
        (B, C, H, W) images in [-1, 1] (decoded from latents by a latent pipeline; with ``decode``
        False a latent pipeline returns the sampled latents, (B, C_z, H/f, W/f))."""
        model = self.model
        sigmas = sigmas.cpu()  # samplers step on the CPU's copy; the model gets each sigma on its device
        cond = self.text_encoder.encode(prompts)
        b = len(prompts)
        h, w = height // self.vae_factor, width // self.vae_factor  # the grid the model denoises
        # per-image generators: image k's noise depends on its seed only
        noise = torch.stack([torch.randn(model.config.in_channels, h, w, generator=torch.Generator().manual_seed(s)) for s in seeds])
        if from_prior:  # the VE forward process x = x0 + sigma * eps from the prior's (B, C, h, w) draft
            if self.prior is None:
                raise WordpaintError("from_prior needs a pipeline with a prior")
            x = self.prior.draft(cond.pooled.to(module_device(self.prior))).cpu() + noise * sigmas[0]
        elif init is None:
            x = noise * (1 + sigmas[0] ** 2) ** 0.5  # VP prior N(0, 1) seen in the VE view
        else:  # the VE forward process x = x0 + sigma * eps from the given picture
            z = self.vae.encode(init).cpu() if self.vae is not None else init
            x = z + noise * sigmas[0]
        # noise, text states and layouts are made on the CPU (same seed, same noise on any
        # device) and moved to the model's device; the images come back on the CPU
        device = module_device(model)
        x = x.to(device)
        if layouts is not None:
            layouts = layouts.to(device)
        if layouts is None or layout_guidance_scale == guidance_scale:
            layout_guidance_scale = None  # the layout is guided with the text: the usual two passes
        if layouts is None or text_guidance_scale == guidance_scale:
            text_guidance_scale = None
        # the passes each guided step runs, stacked on the batch: "full" (text + layout), "text"
        # (text, no layout) for separate layout guidance, "layout" (layout, no text) for separate
        # text guidance, "none" (neither); "full" is skipped when the text's weight is 0
        passes = ((["full"] if text_guidance_scale != 0 else []) + (["text"] if layout_guidance_scale is not None else [])
                  + (["layout"] if text_guidance_scale is not None else []) + (["none"] if guidance_scale != 1.0 else []))
        unc = self.text_encoder.encode([""] * b if negative_prompts is None else negative_prompts)
        text = {"full": cond, "text": cond, "layout": unc, "none": unc}
        # the first pass ("full", or "layout" at g_t = 0) runs alone at g = 1 and outside the interval;
        # region passes (one row per object, after the B rows of each pass) ride along with it
        lo, hi = guidance_interval or (0.0, math.inf)
        r_text = self.text_encoder.encode(regions.texts) if regions is not None else None
        L = max(t.hidden_states.shape[1] for t in (cond, unc, r_text) if t is not None)

        if regions is not None and layouts is None:
            raise WordpaintError("regions need the batch's layouts (a layout model)")
        if regions is not None and autoguidance_scale:
            raise WordpaintError("autoguidance_scale does not combine with regions")
        if expert_sigma is not None and self.expert is None:
            raise WordpaintError("expert_sigma needs a pipeline with an expert")

        if image_embeds is not None:
            image_embeds = image_embeds.to(device)

        def batch_inputs(ps: list[str]) -> tuple:
            """(text states, mask, layouts, image vectors) for passes ``ps`` stacked on the batch, region rows last."""
            n = L if len(ps) > 1 or regions is not None else text[ps[0]].hidden_states.shape[1]  # one pass: unpadded
            states = [_pad(text[p].hidden_states, n) for p in ps]
            mask = [_pad(text[p].attention_mask, n) for p in ps]
            lays = None
            if layouts is not None:  # the full and layout passes see the layout; each region row its image's
                lays = [layouts if p in ("full", "layout") else torch.zeros_like(layouts) for p in ps]
            embs = None
            if image_embeds is not None:  # with the text: the full and text passes see it
                embs = [image_embeds if p in ("full", "text") else torch.zeros_like(image_embeds) for p in ps]
            if regions is not None:
                states.append(_pad(r_text.hidden_states, n))
                mask.append(_pad(r_text.attention_mask, n))
                lays.append(layouts[regions.index.to(device)])
                if embs is not None:
                    embs.append(image_embeds[regions.index.to(device)])
            return (torch.cat(states).to(device), torch.cat(mask).to(device), None if lays is None else torch.cat(lays),
                    None if embs is None else torch.cat(embs))

        single, guided = batch_inputs(passes[:1]), batch_inputs(passes) if len(passes) > 1 else None
        if regions is not None:
            r_index, r_weight, keep = regions.index.to(device), regions.weight.to(device), regions.keep.to(device)

        def blend(full: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
            """(B, C, H, W): the full prompt's estimate outside the objects' masks, each object's own inside."""
            return full * keep + torch.zeros_like(full).index_add_(0, r_index, region * r_weight)

        # pixels live in [-1, 1], so the x0 estimate is clamped there; latents have no such bound
        clamp = (lambda d: d) if self.vae is not None else (lambda d: d.clamp(-1, 1))

        def denoiser(xs: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            g = len(passes) > 1 and lo <= float(sigma) <= hi
            ps, inputs = (passes, guided) if g else (passes[:1], single)
            xin = torch.cat([xs] * len(ps) + ([xs[r_index]] if regions is not None else []))
            # the low-noise expert takes the model's place (every pass) at the last, low-noise steps
            net = self.expert if expert_sigma is not None and float(sigma) <= expert_sigma else model
            out = net.denoise(xin, sigma, *inputs)
            d = dict(zip(ps, out[: len(ps) * b].chunk(len(ps))))
            if regions is not None:
                d[ps[0]] = blend(d[ps[0]], out[len(ps) * b :])
            x0 = d[ps[0]] if not g else guide(d, guidance_scale=guidance_scale, layout_guidance_scale=layout_guidance_scale,
                                               text_guidance_scale=text_guidance_scale)
            if clip_guidance_scale and clip_lo <= float(sigma) <= clip_hi:
                # classifier guidance (Dhariwal & Nichol 2021) in the VE view: the score gains
                # s * grad log p(text | x_sigma), so D(x) = x + sigma^2 * score moves by sigma^2 times it
                x0 = x0 + clip_guidance_scale * sigma**2 * self.guide.guidance_grad(xs, sigma, clip_text, clip_against, against_mask)
            if autoguidance_scale:
                # autoguidance (Karras et al. 2024): a weaker model's conditional estimate has the
                # strong one's errors, magnified; stepping away from it along (D - D_weak) sharpens
                # what guidance towards the text alone blurs. (B, C, h, w) each
                x0 = x0 + autoguidance_scale * (d[ps[0]] - self.autoguide.denoise(xs, sigma, *single))
            return clamp(x0)

        if clip_guidance_scale:  # __call__ has checked that there is a guide
            clip_text = self.guide.embed_text_features(cond.pooled.to(device))  # (B, embed_dim)
            clip_against = against_mask = None  # (B, K, embed_dim), (B, K): the texts each prompt is told apart from
            if clip_contrast is not None and any(clip_contrast):
                k = max(len(texts) for texts in clip_contrast)
                padded = [texts + [""] * (k - len(texts)) for texts in clip_contrast]  # "" rows are masked out
                flat = self.text_encoder.encode([t for texts in padded for t in texts]).pooled.to(device)
                clip_against = self.guide.embed_text_features(flat).reshape(b, k, -1)
                against_mask = torch.tensor([[j < len(texts) for j in range(k)] for texts in clip_contrast], device=device)
            clip_lo, clip_hi = self.guide.config.sigma_min, self.guide.config.sigma_max  # the levels it was trained on

        fn = SAMPLERS[sampler]
        gen = torch.Generator().manual_seed(seeds[0] + 7919)
        x0 = fn(denoiser, x, sigmas, generator=gen, disable_progress=not show_progress)
        return (self.vae.decode(x0) if self.vae is not None and decode else x0).cpu()


@dataclass
class Regions:
    """Per-object passes of a batch (R objects over B images): ``texts`` (R,) each object's own
    phrase, ``index`` (R,) its image, ``weight`` (R, 1, H, W) its share of each pixel, ``keep``
    (B, 1, H, W) the full prompt's share (1 outside every object's mask)."""

    texts: list[str]
    index: torch.Tensor
    weight: torch.Tensor
    keep: torch.Tensor


def style_contrasts(prompt: str, styles) -> list[str]:
    """``prompt`` in each other style of ``styles``: its first "in STYLE style" with STYLE among
    ``styles`` (case-insensitive) swapped for each of the others ("fox in twemoji style" ->
    ["fox in noto style", "fox in openmoji style"]); [] when it asks for none of them."""
    names = [str(st).lower() for st in styles]
    for m in re.finditer(r"\bin (\w+) style\b", prompt, flags=re.IGNORECASE):
        if m.group(1).lower() in names:
            return [prompt[: m.start(1)] + other + prompt[m.end(1) :] for other in names if other != m.group(1).lower()]
    return []


def object_text(phrase: str, background: str | None) -> str:
    """The text that names one planned object on its own ("a green cross on a black background"):
    what its regional-prompt pass and its detail-pass crop are conditioned on."""
    from wordpaint.data.captions import BG_FRAMES, _article

    return f"{_article(phrase)} {phrase}" + (BG_FRAMES[0].format(bg=background) if background else "")


def regions_for(plans: list, *, height: int, width: int, margin: float = 0.04) -> Regions | None:
    """:class:`Regions` of a batch's plans on the model's (height, width) grid: one per planned
    object (one per distinct phrase of an image), its box grown by ``margin`` (canvas fractions: the shape's anti-aliased edge and the
    background just around it), with the plan's background named too ("a green cross on a
    black background"). Where grown boxes overlap the objects share the pixel equally. None when
    no plan has an object."""
    from wordpaint.text.layout import box_coverage, layout_from_plan

    # objects of one image with the same phrase ("three red stars") see the same text and layout,
    # so one pass serves them all: their masks are summed into one region
    regions: dict[tuple[int, str], np.ndarray] = {}
    for i, plan in enumerate(plans):
        if plan is None or not plan.objects:
            continue
        for o, lo in zip(plan.objects, layout_from_plan(plan)[0]):
            x0, y0, x1, y1 = lo.box
            cov = box_coverage((x0 - margin, y0 - margin, x1 + margin, y1 + margin), height, width)
            key = (i, object_text(o.phrase, plan.background))
            regions[key] = regions.get(key, 0) + cov
    if not regions:
        return None
    texts = [t for _, t in regions]
    index_t = torch.tensor([i for i, _ in regions])  # (R,)
    mask = torch.stack([torch.from_numpy(m.astype(np.float32))[None] for m in regions.values()])  # (R, 1, H, W)
    total = torch.zeros(len(plans), 1, height, width).index_add_(0, index_t, mask)  # (B, 1, H, W)
    weight = mask / total.clamp(min=1)[index_t]
    return Regions(texts, index_t, weight, keep=1 - total.clamp(max=1))


def strength_sigmas(sigmas: torch.Tensor, strength: float, *, name: str = "strength") -> torch.Tensor:
    """The tail of ``sigmas`` (steps+1,) an img2img chain of ``strength`` runs: its last
    ``int(steps * strength)`` steps (diffusers' convention); ``name`` is the option the error names."""
    steps = len(sigmas) - 1
    run = min(int(steps * strength), steps)
    if run < 1:
        raise WordpaintError(f"{name} {strength} runs no step of {steps}: raise {name} or num_inference_steps "
                             f"(steps x {name} must be >= 1)")
    return sigmas[steps - run :]


@dataclass
class DetailCrop:
    """One object to redraw: image ``image``'s object ``obj``, the square crop of ``side`` pixels at
    (``x0``, ``y0``), the crop's own ``plan`` (boxes in crop fractions, text naming the object),
    and ``mask`` (side, side): how much of each crop pixel the redrawn crop replaces."""

    image: int
    obj: int
    x0: int
    y0: int
    side: int
    plan: object
    mask: torch.Tensor


def detail_crops(plans: list, *, height: int, width: int, max_side: float = DETAIL_MAX_SIDE, fill: float = DETAIL_FILL,
                 margin: float = DETAIL_MARGIN) -> list[DetailCrop]:
    """The crops of the detail pass: one per planned object whose box side is at most ``max_side``
    (canvas fractions), a square of side ``box side / fill`` centred on it (shifted inside the
    canvas, at most the canvas), so that after enlarging to the model's resolution the object is
    as large as its large objects (sizes from the square each object is drawn in, as the layout
    draws it). The crop's plan keeps every object with at least half its box
    inside the crop (clipped), so neighbours stay what they are, and the object's text (as
    regional prompts name it, with the background). The mask is the object's box grown by
    ``margin``, anti-aliased: only the object and the background just around it are replaced."""
    from wordpaint.text.layout import box_coverage, layout_from_plan
    from wordpaint.text.plan import PlanObject, ScenePlan

    crops = []
    for i, plan in enumerate(plans):
        if plan is None or not plan.objects:
            continue
        # the square each object is drawn in (the layout's), not the plan's box, decides its size
        for j, (o, drawn) in enumerate(zip(plan.objects, layout_from_plan(plan)[0])):
            bx0, by0, bx1, by1 = drawn.box
            if max(bx1 - bx0, by1 - by0) > max_side:
                continue
            side = min(height, width, max(1, round(max((bx1 - bx0) * width, (by1 - by0) * height) / fill)))
            x0 = min(max(round((bx0 + bx1) / 2 * width - side / 2), 0), width - side)
            y0 = min(max(round((by0 + by1) / 2 * height - side / 2), 0), height - side)

            def to_crop(box: tuple) -> tuple[float, float, float, float]:
                return ((box[0] * width - x0) / side, (box[1] * height - y0) / side,
                        (box[2] * width - x0) / side, (box[3] * height - y0) / side)

            objs = []
            for k, n in enumerate(plan.objects):
                cx0, cy0, cx1, cy1 = to_crop(n.box)
                clipped = (max(cx0, 0.0), max(cy0, 0.0), min(cx1, 1.0), min(cy1, 1.0))
                inside = max(clipped[2] - clipped[0], 0) * max(clipped[3] - clipped[1], 0)
                if k == j or inside >= 0.5 * (cx1 - cx0) * (cy1 - cy0):
                    objs.append(PlanObject(n.phrase, n.shape, n.color, n.size, clipped))
            grown = to_crop((bx0 - margin, by0 - margin, bx1 + margin, by1 + margin))
            mask = torch.from_numpy(box_coverage(grown, side, side).astype(np.float32))
            crops.append(DetailCrop(i, j, x0, y0, side, ScenePlan(object_text(o.phrase, plan.background), objs, plan.background,
                                                                 plan.style), mask))
    return crops


def guide(d: dict[str, torch.Tensor], *, guidance_scale: float, layout_guidance_scale: float | None = None,
          text_guidance_scale: float | None = None) -> torch.Tensor:
    """Classifier-free guidance on denoised estimates ``d`` (each (B, C, H, W)) by what their pass
    saw: "full" text and layout, "text" the text alone, "layout" the layout alone, "none" neither
    ("none" is left out at g = 1, "full" at g_t = 0).

    With neither extra scale this is the usual ``none + g * (full - none)``. ``layout_guidance_scale``
    gives the layout's own direction its own weight, as InstructPix2Pix guides image and text apart:
    ``none + g * (text - none) + g_l * (full - text)``; ``text_guidance_scale`` does the same for the
    text: ``none + g * (layout - none) + g_t * (full - layout)``. Either at g gives the usual formula
    back. Why: the layout carries each box's colour and shape, the text only names them, so a
    text that binds a colour to the wrong object can be weighted down (g_t < g) or left out (0)."""
    def cfg(cond: torch.Tensor) -> torch.Tensor:
        return cond if "none" not in d else d["none"] + guidance_scale * (cond - d["none"])

    if layout_guidance_scale is not None:
        return cfg(d["text"]) + layout_guidance_scale * (d["full"] - d["text"])
    if text_guidance_scale is not None:
        base = cfg(d["layout"])
        return base if text_guidance_scale == 0 else base + text_guidance_scale * (d["full"] - d["layout"])
    return cfg(d["full"])


def _pad(t: torch.Tensor, L: int) -> torch.Tensor:
    """Right-pad dim 1 of (B, l, ...) to L with zeros / False."""
    if t.shape[1] == L:
        return t
    pad = torch.zeros((t.shape[0], L - t.shape[1], *t.shape[2:]), dtype=t.dtype)
    return torch.cat([t, pad], dim=1)


# -- component files ---------------------------------------------------------------------------
def _check_same_latents(old, new) -> None:
    """Raise unless two autoencoders map images to the same latents: equal encoder and
    quant_conv weights (compared at the stored precision of either) and scaling_factor."""
    if not math.isclose(old.config.scaling_factor, new.config.scaling_factor, rel_tol=1e-3):
        raise WordpaintError(f"the new autoencoder's scaling_factor {new.config.scaling_factor:.4g} differs from the pipeline's "
                             f"{old.config.scaling_factor:.4g}: the diffusion model was trained on the old latents")
    a, b = old.state_dict(), new.state_dict()
    for key in (k for k in a if k.startswith(("vae.encoder.", "vae.quant_conv."))):
        if key not in b or a[key].shape != b[key].shape:
            raise WordpaintError(f"the new autoencoder's encoder has a different architecture ({key}): its latents are not the pipeline's")
        # a bundled fp16 copy of an encoder equals its fp32 source after rounding both to fp16
        if not torch.equal(a[key].half(), b[key].half()):
            raise WordpaintError("the new autoencoder's encoder weights differ from the pipeline's: the diffusion model was trained on "
                                 "the old latents (fine-tune the decoder only, recipe emoji_ae_decoder, or pass allow_new_latents)")


def save_model(model, folder: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> None:
    """``config.json`` (config + family + version) and ``model.safetensors`` for one model.
    ``dtype=torch.int8`` stores the parameters' matrices and kernels as int8 with a scale per
    output channel (:func:`wordpaint.io.quantize_int8`) and the rest as float16: about half of
    float16's bytes; :func:`load_model` turns them back into float32."""
    folder = Path(folder)
    cfg = {"family": family_of(model.config), "wordpaint_version": wordpaint.__version__, **model.config.to_dict()}
    write_json(folder / "config.json", cfg)
    if dtype == torch.int8:
        state = quantize_int8(model.state_dict(), names={n for n, _ in model.named_parameters()})
    else:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    metadata = {"wordpaint_version": wordpaint.__version__, "family": cfg["family"], "weights": str(dtype).removeprefix("torch.")}
    save_safetensors(folder / "model.safetensors", state, metadata=metadata)


def load_config(folder: str | os.PathLike):
    folder = Path(folder)
    cfg = read_json(folder / "config.json", what="model config")
    family = cfg.get("family")
    if family not in FAMILIES:
        raise ModelLoadError(f"{folder}/config.json names unknown model family {family!r}; expected one of: {', '.join(FAMILIES)}")
    try:
        return FAMILIES[family][0].from_dict(cfg)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"invalid model config {folder}/config.json: {e}") from None


def component_folder(source: str | Path, component: str) -> Path:
    """The folder of ``component`` in ``source``: ``source`` itself when it is a model folder, or
    the folder its ``model_index.json`` names when it is a pipeline folder (a diffusion run's
    ``pipeline/``; for ``autoguide`` and ``expert``, that folder's own one, or else its diffusion model)."""
    source = Path(source)
    index = source / "model_index.json"
    if (source / "config.json").is_file() or not index.is_file():
        return source  # a model folder; load_model names what is missing otherwise
    try:
        names = json.loads(index.read_text())
    except (OSError, ValueError) as e:
        raise WordpaintError(f"cannot read {index}: {e}") from None
    # an autoguide or an expert is another run's diffusion model: from a pipeline folder, take that
    # folder's own autoguide / expert where it has one (copying it from pipeline to pipeline), else its model
    key = INDEX_KEYS[component]
    if component in ("autoguide", "expert") and not isinstance(names.get(key), str):
        key = "model"
    if not isinstance(names.get(key), str):
        raise WordpaintError(f"{source} is a pipeline folder without a {component} component ({index} has no {key!r})")
    return source / names[key]


def load_model(folder: str | os.PathLike):
    """Rebuild a model from its folder, checking every weight's name and shape."""
    folder = Path(folder)
    config = load_config(folder)
    model = build_model(config, empty=True)
    state, int8 = dequantize_int8(load_safetensors(folder / "model.safetensors"), source=str(folder / "model.safetensors"))
    load_state_dict_strict(model, state, source=str(folder / "model.safetensors"))
    # save_pretrained writes it as int8 again, so that replacing another component of an int8
    # pipeline does not quietly double this one's file
    model.stored_int8 = int8
    return model.float().eval()
