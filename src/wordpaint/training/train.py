"""Training loop for registered model families, on accelerate (one process on a CPU, many on
GPUs with ``accelerate launch``).

Outputs in ``--out``: ``recipe.json``, ``metrics.jsonl`` (loss, speed, quick compositional
scores), ``samples/step-N.png``, ``checkpoints/step-N/`` (model, EMA, optimizer, state; written
atomically) and ``pipeline/`` (the EMA weights as a loadable pipeline folder). Batches are a
pure function of (seed, step, rank), so resuming from a checkpoint loses and repeats no step.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import torch

import wordpaint
from wordpaint.errors import WordpaintError, check_choice
from wordpaint.io import atomic_dir, dequantize_int8, load_safetensors, load_state_dict_strict, read_json, save_safetensors, write_json

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
REQUIRED = ("model", "batch_size", "max_steps", "lr")


def recipe_model_config(recipe: dict):
    """The model config a recipe's ``model`` section names: family, size preset, overrides."""
    from wordpaint.models.registry import build_config

    mcfg = dict(recipe["model"])
    return build_config(family=mcfg.pop("family", "diffusion"), preset=mcfg.pop("preset", None), **mcfg.pop("overrides", {}), **mcfg)


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def _recipe_path(name_or_path: str, *, relative_to: Path | None = None) -> Path:
    """A shipped recipe's file by name, or a ``.json`` path (relative to ``relative_to``, the
    folder of the recipe that extends it, when given and not absolute)."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = RECIPES_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise WordpaintError(f"unknown recipe {name_or_path!r}; expected one of: {', '.join(list_recipes())} or a .json path")
    elif relative_to is not None and not path.is_absolute():
        path = relative_to / path
    return path


def merge_recipe(base: dict, child: dict) -> dict:
    """``child`` over ``base``: nested sections (``model``, ``data``, ``eval``, ...) merge key by
    key, any other value (numbers, strings, lists) is replaced whole."""
    out = dict(base)
    for key, value in child.items():
        out[key] = merge_recipe(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_recipe(name_or_path: str) -> dict:
    """A recipe by name (``src/wordpaint/recipes/NAME.json``) or by path to a JSON file.

    ``"extends": NAME`` (or a path, relative to the recipe's folder) starts from that recipe and
    applies this one's keys over it (:func:`merge_recipe`), so a continuation leg states only what
    it changes; chains are followed, and the resolved recipe (what ``recipe.json`` of a run
    records) has no ``extends``."""
    chain: list[Path] = []
    path = _recipe_path(name_or_path)
    layers = []
    while True:
        if path.resolve() in chain:
            raise WordpaintError(f"recipe {path} extends itself through: {' -> '.join(p.stem for p in chain)}")
        chain.append(path.resolve())
        layer = read_json(path, what="recipe")
        layers.append(layer)
        base = layer.get("extends")
        if base is None:
            break
        if not isinstance(base, str):
            raise WordpaintError(f"recipe {path}: extends must be a recipe name or a .json path, got {base!r}")
        path = _recipe_path(base, relative_to=path.parent)
    recipe: dict = {}
    for layer in reversed(layers):  # the root first, each extending recipe over it
        recipe = merge_recipe(recipe, {k: v for k, v in layer.items() if k != "extends"})
    missing = [k for k in REQUIRED if k not in recipe]
    if missing:
        raise WordpaintError(f"recipe {chain[0]} lacks {', '.join(missing)}")
    return recipe


class EMA:
    """Exponential moving average of a model's parameters with warm-up
    (decay_t = min(decay, (1 + t) / (10 + t))), so short runs are not dominated by the random
    initialisation. Hand-written rather than diffusers' EMAModel because the average must live
    in a plain module that saves to safetensors and loads into a pipeline unchanged."""

    def __init__(self, model: torch.nn.Module, decay: float, *, warmup: bool = True):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup = decay, warmup

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        ema_p = list(self.module.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in model.parameters()], 1 - d)


def _widen_input(weights: dict[str, torch.Tensor], model: torch.nn.Module, key: str) -> dict[str, torch.Tensor]:
    """``weights`` with ``key`` (a weight whose dim 1 is its input) zero-padded on dim 1 to the
    ``model``'s wider input, when only that dim differs: the new inputs start with no effect."""
    target = model.state_dict().get(key)
    w = weights.get(key)
    if w is None or target is None or w.shape == target.shape or w.shape[0] != target.shape[0] or w.shape[2:] != target.shape[2:] \
            or w.shape[1] > target.shape[1]:
        return weights
    pad = w.new_zeros(w.shape[0], target.shape[1] - w.shape[1], *w.shape[2:])  # (out, new in, ...)
    return {**weights, key: torch.cat([w, pad], dim=1)}


def widen_conv_in(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Start a layout model from a prompt-only one: the UNet's first convolution gets zero
    weights for the new layout input channels (as ControlNet zero-initialises its new inputs), so
    training starts from exactly the old model's behaviour. Other weights pass unchanged."""
    return _widen_input(weights, model, "unet.conv_in.weight")


def widen_class_embedding(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Start an image-embedding model from a pooled-text one: the class-embedding MLP's first
    layer gets zero weights for the image vector's inputs, so training starts from exactly the
    old model's behaviour."""
    return _widen_input(weights, model, "unet.class_embedding.linear_1.weight")


def zero_new_class_embedding(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Start a pooled-text model from one without it: the new class-embedding MLP keeps its
    random first layer and gets a zero last layer, so its output (added to the timestep
    embedding) starts at 0 and training starts from exactly the old model's behaviour. Weights
    that already have it pass unchanged."""
    own = model.state_dict()
    new = [k for k in own if k.startswith("unet.class_embedding.") and k not in weights]
    if not new:
        return weights
    return {**weights, **{k: own[k].detach().clone() if ".linear_1." in k else torch.zeros_like(own[k]) for k in new}}


def _new_modules(weights: dict[str, torch.Tensor], model: torch.nn.Module, prefix: str, *, zero: bool) -> dict[str, torch.Tensor]:
    """``weights`` plus the ``model``'s own tensors under ``prefix`` that ``weights`` lacks
    (zeros with ``zero``, else the model's fresh initialisation)."""
    own = model.state_dict()
    return {**weights, **{k: torch.zeros_like(own[k]) if zero else own[k].detach().clone()
                          for k in own if k.startswith(prefix) and k not in weights}}


def zero_new_layout_residuals(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Start a ``layout_residuals`` model from a layout model without them: the new convolutions
    keep their zero initialisation, so training starts from exactly the old model's behaviour."""
    return _new_modules(weights, model, "layout_residuals.", zero=True)


def keep_new_repa_head(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Start a REPA model from one without the head: the head keeps its random initialisation
    (it feeds only the alignment loss, so the denoiser's outputs start unchanged)."""
    return _new_modules(weights, model, "repa_head.", zero=False)


def keep_new_decoder_layers(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Start an autoencoder with ``decoder_extra_layers`` from one with fewer: the added resnets
    keep their initialisation (last convolution zeroed: the identity), so the decoder starts from
    exactly the old one's outputs."""
    if getattr(getattr(model, "config", None), "decoder_extra_layers", 0) == 0:
        return weights
    return _new_modules(weights, model, "vae.decoder.up_blocks.", zero=False)


def keep_new_discriminator(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Start an adversarial decoder fine-tune from an autoencoder without a critic: the critic keeps
    its fresh initialisation (it feeds only the loss; the decoder's outputs start unchanged)."""
    return _new_modules(weights, model, "discriminator.", zero=False)


def load_init_weights(model: torch.nn.Module, folder: str | os.PathLike, *, component: str) -> dict[str, torch.Tensor]:
    """Load the ``model.safetensors`` of ``component`` in ``folder`` (a pipeline folder, or the
    model's own folder: :func:`~wordpaint.pipelines.text_to_image.component_folder`) into ``model`` for ``--init-from``,
    strictly, after the adaptations that start a larger model from a smaller one's exact outputs (a
    wider conv_in or class-embedding input, a zeroed pooled-text MLP, zeroed layout residuals, a
    fresh REPA head, identity decoder layers, a fresh critic); returns the weights loaded."""
    from wordpaint.pipelines.text_to_image import component_folder

    src = component_folder(folder, component) / "model.safetensors"
    weights, _ = dequantize_int8(load_safetensors(src), source=str(src))  # an int8-stored pipeline starts a run in float32
    for adapt in (widen_conv_in, widen_class_embedding, zero_new_class_embedding, zero_new_layout_residuals, keep_new_repa_head,
                  keep_new_decoder_layers, keep_new_discriminator):
        weights = adapt(weights, model)
    load_state_dict_strict(model, weights, source=str(src))
    return weights


def lr_at(step: int, recipe: dict) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak at max_steps."""
    peak, warm, total = recipe["lr"], recipe.get("warmup_steps", 0), recipe["max_steps"]
    if step < warm:
        return peak * (step + 1) / warm
    frac = min(1.0, (step - warm) / max(1, total - warm))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def param_groups(model: torch.nn.Module, multipliers: dict[str, float]) -> list[dict]:
    """AdamW parameter groups: the parameters whose name starts with a prefix of ``multipliers``
    train at that multiple of the schedule's learning rate (``lr_mult``), the rest at 1x. For
    zero-initialised new inputs (ControlNet-style residuals) that the base rate grows too slowly
    to matter within a short CPU leg."""
    if not isinstance(multipliers, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                                     for v in multipliers.values()):
        raise WordpaintError(f"lr_multipliers must map parameter-name prefixes to numbers > 0, got {multipliers!r}")
    named = list(model.named_parameters())
    for n, _ in named:
        hits = [k for k in multipliers if n.startswith(k)]
        if len(hits) > 1:
            raise WordpaintError(f"lr_multipliers: parameter {n!r} starts with more than one prefix ({', '.join(map(repr, hits))})")
    rest = [p for n, p in named if not any(n.startswith(k) for k in multipliers)]
    groups = [{"params": rest, "lr_mult": 1.0}] if rest else []
    for prefix, mult in multipliers.items():
        params = [p for n, p in named if n.startswith(prefix)]
        if not params:
            raise WordpaintError(f"lr_multipliers: no parameter of this model starts with {prefix!r}")
        groups.append({"params": params, "lr_mult": float(mult)})
    return groups


def _to_device(cpu: dict, device: torch.device) -> dict:
    """A batch's tensors on ``device`` (non-blocking: from pinned memory when on a GPU)."""
    return {k: v.to(device, non_blocking=True) for k, v in cpu.items()}


class StepBatches(torch.utils.data.Dataset):
    """Item k = the CPU half of training batch k. Batches are pure functions of the step, so
    DataLoader workers can render them ahead of the accelerator (the shapes world renders ~1,500
    images/s per core, fewer than a GPU trains on) and a resumed run starts at any step."""

    def __init__(self, task, batch_size: int):
        self.stream, self.bs, self.rank, self.world = task.stream, batch_size, task.rank, task.world
        self.layouts = bool(getattr(task, "layouts", False))
        self.object_maps = bool(getattr(task.config, "object_loss_weight", 0.0))
        self.text = isinstance(task, (TextToImageTask, GuideTask))  # tasks that read captions (PriorTask is a GuideTask; a restorer's batch is made apart)
        self.repa_targets = getattr(task, "repa_targets", None)
        self.image_embeds = getattr(task, "image_embeds", None)
        self.decoder_inputs = getattr(task, "decoder_inputs", None)  # (N, K, C, h, w) for a decoder trained on sampled latents
        self.decoded = getattr(task, "decoded", None)  # (N, 2, 3, H, W) a restorer's inputs: clean and noisy round trips
        # (F, K, 3, H, W) and (N,): a restorer's decoded sampled latents of the F pictures that have
        # them, and each picture's row among them (-1: none, e.g. an icon)
        self.sampled_decoded, self.sampled_slot = getattr(task, "sampled_decoded", None), getattr(task, "sampled_slot", None)
        self.embed_drop, self.seed = getattr(task.config, "image_embed_drop_prob", 0.0), getattr(task, "seed", 0)
        self.config = task.config

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int) -> dict:
        """Images (B, C, H, W); for a text task captions, and where trained layouts (B, 13, H, W)
        and object maps (B, 1, H, W) of the same examples."""
        where = dict(rank=self.rank, world_size=self.world)
        images, captions = self.stream.batch(step, self.bs, **where)
        if self.decoder_inputs is not None:  # one of each picture's K sampled latents, a pure function of (seed, step, rank)
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step * self.world + self.rank + 104_729)
            rows = self.stream.batch_rows(step, self.bs, **where)
            pick = torch.randint(self.decoder_inputs.shape[1], (len(rows),), generator=gen)
            return {"pixel_values": images, "decoder_input": self.decoder_inputs[rows, pick].float()}
        if self.decoded is not None:
            return self._restorer_batch(step, images, captions, where)
        if not self.text:
            return {"pixel_values": images}
        out = {"pixel_values": images, "captions": captions}
        if self.layouts:
            out["layout"] = self.stream.layouts(step, self.bs, **where)
        if self.object_maps:
            out["object_map"] = self.stream.object_maps(step, self.bs, **where)
        if self.repa_targets is not None:
            out["repa_target"] = self.repa_targets[self.stream.batch_rows(step, self.bs, **where)].float()
        if self.image_embeds is not None:
            out["image_embed"] = self._image_embed(step, captions, where)
        return out

    def _restorer_batch(self, step: int, images: torch.Tensor, captions: list[str], where: dict) -> dict:
        """A restorer's batch: each picture's clean or (with the config's noisy_share) noisy round
        trip, or (with sampled_share, where it has them) one of its decoded sampled latents, as
        ``decoded``, and the picture as ``pixel_values``, both cut to one random crop_size crop
        (B, 3, c, c); a pure function of (seed, step, rank)."""
        cfg = self.config
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step * self.world + self.rank + 15_485_863)
        rows = self.stream.batch_rows(step, self.bs, **where)
        noisy = (torch.rand(len(rows), generator=gen) < cfg.noisy_share).long()
        c, side = cfg.crop_size, images.shape[-1]
        oy, ox = torch.randint(0, side - c + 1, (2,), generator=gen).tolist()
        crop = (..., slice(oy, oy + c), slice(ox, ox + c))
        decoded = self.decoded[rows, noisy]  # (B, 3, H, W)
        if self.sampled_decoded is not None:  # drawn last: a recipe without sampled inputs keeps its batches exactly
            slot = self.sampled_slot[torch.as_tensor(rows)]  # (B,)
            take = (torch.rand(len(rows), generator=gen) < cfg.sampled_share) & (slot >= 0)
            pick = torch.randint(self.sampled_decoded.shape[1], (len(rows),), generator=gen)
            decoded = torch.where(take.view(-1, 1, 1, 1), self.sampled_decoded[slot.clamp(min=0), pick], decoded)
        return {"pixel_values": images[crop], "decoded": decoded[crop].float(), "captions": captions}

    def _image_embed(self, step: int, captions: list[str], where: dict) -> torch.Tensor:
        """(B, D) the examples' image vectors, zeroed where the caption was dropped (the
        unconditional branch) and, independently, with image_embed_drop_prob (text alone): a pure
        function of (seed, step, rank), like the rest of the batch."""
        emb = self.image_embeds[self.stream.batch_rows(step, self.bs, **where)].float()  # (B, D)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step * self.world + self.rank + 7_919)
        keep = (torch.rand(len(captions), generator=gen) >= self.embed_drop) & torch.tensor([c != "" for c in captions])
        return emb * keep.unsqueeze(1).float()


class TextToImageTask:
    """Training a text-conditioned diffusion model: on pixels (the shapes world, Fashion-MNIST)
    or on the latents of a frozen autoencoder (an image folder such as the emoji corpus, with
    ``data.autoencoder`` naming the autoencoder folder)."""

    def __init__(self, recipe: dict, config, accelerator, *, show_progress: bool = True):
        from wordpaint.data.stream import make_stream
        from wordpaint.eval.prompts import load_prompts, subset
        from wordpaint.text.encoder import TextEncoder, TextEncoderConfig

        self.recipe, self.config, self.device = recipe, config, accelerator.device
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.text_encoder = TextEncoder(TextEncoderConfig(**recipe.get("text_encoder", {}))).to(self.device)
        data = recipe.get("data", {})
        self.data_name = data.get("name", "shapes")
        self.layouts = bool(config.layout_channels)
        self.vae = None
        seed = recipe.get("seed", 0)
        if self.data_name == "imagefolder":
            if "folder" not in data:
                raise WordpaintError("an imagefolder recipe needs data.folder (or pass --data DIR)")
            self.vae, self.stream = image_folder_stream(data, config, self.device, seed=seed, cond_drop_prob=config.cond_drop_prob,
                                                        show_progress=show_progress)
        else:
            self.stream = make_stream(self.data_name, size=config.resolution, seed=seed, split=data.get("split", "train"),
                                      cond_drop_prob=config.cond_drop_prob, layout_drop_prob=config.layout_drop_prob if self.layouts else None,
                                      text_drop_prob=config.text_drop_prob if self.layouts else 0.0, sizes=data.get("sizes"),
                                      silhouettes=config.layout_silhouettes)  # from_dict: only a layout model has it
        bad = [s for s in getattr(self.stream, "sizes", ()) if s % config.downsample_factor]
        if bad:
            raise WordpaintError(f"data.sizes must be multiples of {config.downsample_factor} for this model, got {bad}")
        if config.object_loss_weight and not hasattr(self.stream, "object_maps"):
            raise WordpaintError(f"object_loss_weight needs true object boxes, which dataset {self.data_name!r} lacks; it trains on: shapes")
        self.repa_targets = None  # REPA: (N, 1280, h, w) float16 features of every training image, by row
        if config.repa_weight:
            if not hasattr(self.stream, "batch_rows"):
                raise WordpaintError(f"repa_weight needs an image folder (its targets are features of a fixed set of training images); "
                                     f"dataset {self.data_name!r} is drawn afresh every step")
            grid = config.resolution // config.downsample_factor
            self.repa_targets = repa_targets(self.stream.images, grid=grid, dim=config.repa_dim, show_progress=show_progress)
        self.seed, self.image_embeds = seed, None  # unCLIP-style conditioning: (N, 1280) pooled features, by row
        if getattr(config, "image_embed_dim", 0):
            if not hasattr(self.stream, "batch_rows"):
                raise WordpaintError(f"image_embed_dim needs an image folder (the vectors are features of a fixed set of training images); "
                                     f"dataset {self.data_name!r} is drawn afresh every step")
            self.image_embeds = image_embeds(self.stream.images, dim=config.image_embed_dim, show_progress=show_progress)
        # quick evaluation: exact compositional scores on the shapes world; FID on an image folder
        self.fid_samples = int(recipe.get("eval", {}).get("fid_samples", 0)) if self.data_name == "imagefolder" else 0
        self.can_evaluate = self.data_name == "shapes" or self.fid_samples > 0
        self.eval_prompts = subset(load_prompts(), recipe.get("eval", {}).get("prompts_per_task", 4)) if self.data_name == "shapes" else []
        self._real = None  # (indices, features) of the real images FID compares with, computed once

    def to_device(self, cpu: dict) -> dict:
        """A :class:`StepBatches` item -> the model's batch: captions encoded (on the text
        encoder's device), tensors moved to the device."""
        enc = self.text_encoder.encode(cpu.pop("captions"))
        return {**_to_device(cpu, self.device), "encoder_hidden_states": enc.hidden_states.to(self.device),
                "encoder_attention_mask": enc.attention_mask.to(self.device)}

    def pipeline(self, module):
        from wordpaint.pipelines.text_to_image import TextToImagePipeline

        # a layout model is sampled and scored as it is meant to be used: plan, then draw (a
        # reference model is sampled from text alone here: its layout input stays empty)
        planned = self.layouts and not self.config.reference_image
        return TextToImagePipeline(text_encoder=self.text_encoder, model=module, vae=self.vae, planner="rules" if planned else None)

    def sample_grid(self, module):
        from wordpaint.images import make_grid

        s = self.recipe.get("samples", {})
        res = self.pipeline(module)(s.get("prompts", ["a red circle"]), num_images_per_prompt=4, seed=0,
                                    num_inference_steps=s.get("num_inference_steps", 10), guidance_scale=s.get("guidance_scale", 3.0))
        return make_grid(res.images, cols=8, scale=2 if self.vae is None else 1)

    def evaluate(self, module) -> dict:
        from wordpaint.eval.compositional import evaluate_compositional

        e = self.recipe.get("eval", {})
        if self.fid_samples:
            return self._fid(module, e)
        summary, _, _ = evaluate_compositional(self.pipeline(module), self.eval_prompts, samples_per_prompt=1, seed=0,
                                               num_inference_steps=e.get("num_inference_steps", 10),
                                               guidance_scale=e.get("guidance_scale", 3.0), show_progress=False)
        return summary

    def _fid(self, module, e: dict) -> dict:
        """FID and KID (EfficientNet-Lite0 features) of ``fid_samples`` images generated from the
        short prompts of as many fixed training images, against those real images: a cheap,
        consistent curve over training (few samples bias FID upwards; compare points, not papers)."""
        import numpy as np

        from wordpaint.data.emoji import short_caption
        from wordpaint.eval.metrics import FewSamplesWarning, extract, fid_from_features, kid_from_features

        rows = self.stream.rows
        if self._real is None:
            idx = np.random.default_rng(1234).choice(len(rows), size=min(self.fid_samples, len(rows)), replace=False)
            self._real = (idx, extract([self.stream.images[i] for i in idx])[0])
        idx, real = self._real
        prompts = [short_caption(rows[i]["name"], rows[i]["style"]) if "name" in rows[i] else rows[i]["text"] for i in idx]
        res = self.pipeline(module)(prompts, seed=0, num_inference_steps=e.get("num_inference_steps", 10),
                                    guidance_scale=e.get("guidance_scale", 3.0), batch_size=64)
        fake = extract(res.images)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FewSamplesWarning)  # known and stated: the sample count is logged with the figure
            kid, _ = kid_from_features(real, fake, subsets=20, subset_size=len(idx))
            fid = fid_from_features(real, fake)
        return {"fid_efficientnet_lite0": fid, "kid_efficientnet_lite0": kid, "n": len(idx)}

    @staticmethod
    def describe(rec: dict) -> str:
        if "fid_efficientnet_lite0" in rec:
            return f"FID (EfficientNet-Lite0, {rec['n']} samples) {rec['fid_efficientnet_lite0']:.2f}, KID {rec['kid_efficientnet_lite0']:.4f}"
        return f"quick compositional overall {rec['overall']:.3f} " + " ".join(f"{k}={v:.2f}" for k, v in rec["per_task"].items())

    def export(self, module, path: Path) -> None:
        self.pipeline(module).save_pretrained(path)


def _clean_image_features(images: list[torch.Tensor], *, grid: int, dim: int, option: str, show_progress: bool) -> torch.Tensor:
    """(N, 1280, grid, grid) float16 EfficientNet-Lite0 feature maps of the uint8 (3, H, W) training
    ``images``, computed once (the images are fixed) and kept in wordpaint's cache, so a resume or
    a second run on the same images reads them back; ``dim`` is the model's ``option``, checked."""
    from wordpaint.eval.metrics import FEATURE_DIM, cached_feature_maps

    if dim != FEATURE_DIM:
        raise WordpaintError(f"{option} must be {FEATURE_DIM} (EfficientNet-Lite0's feature channels, what the trainer computes), got {dim}")
    return cached_feature_maps(images, grid=grid, dtype=torch.float16, show_progress=show_progress, what="training images")


def repa_targets(images: list[torch.Tensor], *, grid: int, dim: int = 1280, show_progress: bool = False) -> torch.Tensor:
    """(N, dim, grid, grid) float16: EfficientNet-Lite0's feature maps of the uint8 (3, H, W)
    ``images``, pooled to the UNet's mid-block ``grid``: REPA's alignment targets. float16 halves
    the memory (the emoji corpus: 6,148 x 1280 x 4 x 4 ~ 250 MB); only their direction is used."""
    return _clean_image_features(images, grid=grid, dim=dim, option="repa_dim", show_progress=show_progress)


def image_embeds(images: list[torch.Tensor], *, dim: int = 1280, show_progress: bool = False) -> torch.Tensor:
    """(N, dim) float16: EfficientNet-Lite0's pooled features of the uint8 (3, H, W) ``images``:
    the image vectors an ``image_embed_dim`` model is conditioned on (and an embedding prior
    learns to predict from text)."""
    return _clean_image_features(images, grid=1, dim=dim, option="image_embed_dim", show_progress=show_progress).flatten(1)


def image_folder_stream(data: dict, config, device: torch.device, *, seed: int, cond_drop_prob: float, show_progress: bool,
                        what: str = "model") -> tuple:
    """(autoencoder or None, :class:`~wordpaint.data.imagefolder.ImageFolderStream`) for a recipe's
    image-folder ``data`` section, checked against the (in_channels, resolution) ``config`` reads."""
    from wordpaint.data.imagefolder import ImageFolderStream
    from wordpaint.pipelines.text_to_image import load_model

    refs = bool(getattr(config, "reference_image", False))  # a guide's or prior's config has no layout input
    if getattr(config, "layout_channels", 0) and not refs:
        raise WordpaintError("an image folder has no planned layouts: a layout model trains on the shapes world "
                             "(or set reference_image to condition on another style of the same concept)")
    vae = load_model(data["autoencoder"]).to(device) if data.get("autoencoder") else None
    stream = ImageFolderStream(data["folder"], size=data.get("size", 64), seed=seed, splits=tuple(data.get("splits", ["train"])),
                               kinds=tuple(data["kinds"]) if data.get("kinds") else None, cond_drop_prob=cond_drop_prob,
                               autoencoder=vae, references=refs, reference_drop_prob=config.layout_drop_prob if refs else 0.0,
                               style_repeats=data.get("style_repeats"), show_progress=show_progress)
    want = (config.in_channels, config.resolution, config.resolution)
    if tuple(stream.data.shape[1:]) != want:
        raise WordpaintError(f"the data gives {tuple(stream.data.shape[1:])} training inputs, the {what} takes {want}"
                             + ("" if vae else "; a latent model needs data.autoencoder"))
    return vae, stream


@torch.no_grad()
def pooled_texts(text_encoder, texts: list[str], *, show_progress: bool = False) -> torch.Tensor:
    """(N, text_dim) pooled text features of ``texts`` on the CPU, 256 texts at a time: the frozen
    text tower run once per distinct caption, not on every batch (it would take half of each step)."""
    from tqdm.auto import trange

    chunks = [text_encoder.encode(texts[i : i + 256]).pooled.cpu()
              for i in trange(0, len(texts), 256, desc="caption features", leave=False, disable=not show_progress)]
    return torch.cat(chunks)


def caption_table(text_encoder, captions: list[list[str]], *, show_progress: bool = False) -> tuple[dict[str, int], torch.Tensor]:
    """(caption -> row index, (N_captions, text_dim) pooled features) of every distinct caption in
    ``captions`` (each training row's alternatives), sorted: a batch looks its captions up."""
    distinct = sorted({c for alts in captions for c in alts})
    return {c: i for i, c in enumerate(distinct)}, pooled_texts(text_encoder, distinct, show_progress=show_progress)


def export_component(module, path: Path) -> None:
    """``module``, in eval mode, written atomically as a component folder (config.json + model.safetensors)."""
    from wordpaint.pipelines.text_to_image import save_model

    with atomic_dir(path) as tmp:
        save_model(module.eval(), tmp)


def _image_folder_data(recipe: dict, what: str) -> dict:
    """The recipe's ``data`` section, which must name an image folder (``what`` recipe trains on one)."""
    data = recipe.get("data", {})
    if data.get("name") != "imagefolder" or "folder" not in data:
        raise WordpaintError(f"{what} recipe trains on an image folder: data.name = 'imagefolder' and data.folder (or --data DIR)")
    return data


class AutoencoderTask:
    """Training an image autoencoder on an image folder; the quick evaluation is reconstruction
    PSNR on the folder's held-out rows (split ``heldout``/``test``), per kind."""

    def __init__(self, recipe: dict, config, accelerator, *, show_progress: bool = True):
        from wordpaint.data.imagefolder import ImageFolderStream, load_imagefolder

        data = _image_folder_data(recipe, "an autoencoder")
        self.recipe, self.config, self.device = recipe, config, accelerator.device
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        kinds = tuple(data["kinds"]) if data.get("kinds") else None
        self.stream = ImageFolderStream(data["folder"], size=config.resolution, seed=recipe.get("seed", 0), kinds=kinds,
                                        splits=tuple(data.get("splits", ["train"])), style_repeats=data.get("style_repeats"),
                                        show_progress=show_progress)
        # eval_kinds: the rows evaluated, by default those trained on (an emoji-only decoder leg
        # can still report the icons' PSNR with eval_kinds = ["emoji", "icon"])
        eval_kinds = tuple(data["eval_kinds"]) if data.get("eval_kinds") else kinds
        rows, images, _ = load_imagefolder(data["folder"], size=config.resolution, splits=tuple(data.get("eval_splits", ["heldout", "test"])),
                                           kinds=eval_kinds)
        self.eval_images = torch.stack(images).float() / 127.5 - 1  # (M, 3, H, W)
        self.eval_groups = [f"{r.get('split', 'train')}_{r.get('kind', 'image')}" for r in rows]
        self.can_evaluate = True
        self.decoder_inputs, self.seed = self._decoder_inputs(data, config), recipe.get("seed", 0)

    def _decoder_inputs(self, data: dict, config) -> torch.Tensor | None:
        """(N, K, C, h, w) the sampled latents of ``data.decoder_inputs``, in the stream's row order,
        for a recipe with ``decoder_input_share``; None without (each needs the other)."""
        from wordpaint.training.decoder_inputs import latents_for_rows

        names = [r["file_name"] for r in self.stream.rows]
        got = latents_for_rows(data.get("decoder_inputs"), getattr(config, "decoder_input_share", 0.0),
                               option="the autoencoder's decoder_input_share", file_names=names,
                               latent_shape=(config.latent_channels, config.latent_resolution, config.latent_resolution))
        if got is None:
            return None
        found, latents = got
        if len(found) < len(names):
            have = set(found)
            missing = [n for j, n in enumerate(names) if j not in have]
            raise WordpaintError(f"decoder inputs file {data['decoder_inputs']} has no sampled latents for {len(missing)} of the "
                                 f"{len(names)} training pictures (first: {', '.join(missing[:3])}); remake it for this folder and these kinds")
        return latents  # every row found, so in row order

    def to_device(self, cpu: dict) -> dict:
        return _to_device(cpu, self.device)

    def _reconstruct(self, module, x: torch.Tensor) -> torch.Tensor:
        module.eval()
        return torch.cat([module.reconstruct(x[i : i + 64].to(self.device)).cpu() for i in range(0, len(x), 64)])

    def sample_grid(self, module):
        from wordpaint.images import make_grid, to_pil

        x = self.eval_images[:: max(1, len(self.eval_images) // 16)][:16]
        return make_grid(to_pil(x) + to_pil(self._reconstruct(module, x)), cols=16, scale=2)

    def evaluate(self, module) -> dict:
        """Mean PSNR (dB, uint8 images) of reconstructions, overall and per held-out group."""
        from wordpaint.eval.metrics import psnr_by_group
        from wordpaint.images import to_uint8

        real, rec = to_uint8(self.eval_images), to_uint8(self._reconstruct(module, self.eval_images))
        return psnr_by_group(list(real), list(rec), self.eval_groups)

    @staticmethod
    def describe(rec: dict) -> str:
        return " ".join(f"{k}={v:.2f}" for k, v in rec.items() if k.startswith("psnr"))

    def export(self, module, path: Path) -> None:
        """The autoencoder as a component folder, with ``scaling_factor`` measured on (up to)
        2,048 training images so its latents have unit variance."""
        from wordpaint.models.autoencoder import latent_scale
        from wordpaint.pipelines.text_to_image import save_model

        module.eval()
        if module.config.train_encoder:  # a frozen encoder keeps the scale the diffusion model was trained with
            module.config.scaling_factor = latent_scale(module, self.stream.data[:: max(1, len(self.stream) // 2048)].to(self.device))
        with atomic_dir(path) as tmp:
            save_model(module, tmp)


class GuideTask:
    """Training a noised wordpaint-clip (:mod:`wordpaint.models.noised_clip`), the guide of
    ``clip_guidance_scale``, on the same inputs the diffusion model denoises: an image folder's
    latents under ``data.autoencoder`` (or its pixels), each with its pooled caption. The quick
    evaluation is zero-shot retrieval on the folder's held-out rows at a few noise levels."""

    SIGMAS = (0.1, 1.0, 3.0)
    WHAT = "guide"  # in error messages

    def __init__(self, recipe: dict, config, accelerator, *, show_progress: bool = True):
        from wordpaint.data.imagefolder import caption_alternatives, load_imagefolder, model_inputs
        from wordpaint.text.encoder import TextEncoder, TextEncoderConfig

        data = _image_folder_data(recipe, f"a {self.WHAT}")
        self.recipe, self.config, self.device = recipe, config, accelerator.device
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.text_encoder = TextEncoder(TextEncoderConfig(**recipe.get("text_encoder", {}))).to(self.device)
        # every caption kept: the guide learns the text, there is no unconditional input to learn
        self.vae, self.stream = image_folder_stream(data, config, self.device, seed=recipe.get("seed", 0), cond_drop_prob=0.0,
                                                    show_progress=show_progress, what=self.WHAT)
        # the frozen text tower runs once per distinct caption, not on every batch (it would take
        # half of each step): (N_captions, text_dim) pooled features and a caption -> row index
        self.caption_index, self.caption_features = caption_table(self.text_encoder, self.stream.captions, show_progress=show_progress)
        rows, images, _ = load_imagefolder(data["folder"], size=data.get("size", 64), splits=("heldout",),
                                           kinds=tuple(data["kinds"]) if data.get("kinds") else None)
        self.can_evaluate = len(rows) > 1
        if self.can_evaluate:
            self.eval_images = images  # uint8 (3, H, W) each
            with torch.no_grad():
                self.eval_x0 = model_inputs(images, self.vae)
            # the short prompt form ("fox in twemoji style") where a row has one, else its text
            self.eval_text = self._pooled([caption_alternatives(r)[-1] for r in rows], False)

    def _pooled(self, texts: list[str], show_progress: bool) -> torch.Tensor:
        return pooled_texts(self.text_encoder, texts, show_progress=show_progress)

    def to_device(self, cpu: dict) -> dict:
        """Latents (or pixels) as ``x0``, pooled captions, and caption ids (equal caption, equal id)."""
        ids = torch.tensor([self.caption_index[c] for c in cpu["captions"]])
        return {"x0": cpu["pixel_values"].to(self.device), "text_features": self.caption_features[ids].to(self.device),
                "text_ids": ids.to(self.device)}

    def sample_grid(self, module):
        return None  # a guide draws nothing

    @torch.no_grad()
    def evaluate(self, module) -> dict:
        """Held-out image -> text recall@1 among the held-out captions, at each of ``SIGMAS``."""
        module.eval()
        txt = module.embed_text_features(self.eval_text.to(self.device))
        gen, out = torch.Generator().manual_seed(0), {"n": len(txt)}
        for sigma in self.SIGMAS:
            x = self.eval_x0 + sigma * torch.randn(self.eval_x0.shape, generator=gen)
            img = module.embed_noisy(x.to(self.device), torch.tensor(sigma))
            out[f"recall1_sigma{sigma:g}"] = float(((img @ txt.T).argmax(1).cpu() == torch.arange(len(txt))).float().mean())
        return out

    @staticmethod
    def describe(rec: dict) -> str:
        return f"held-out recall@1 of {rec['n']}: " + " ".join(f"{k.split('_')[1]}={v:.3f}" for k, v in rec.items() if k != "n")

    def export(self, module, path: Path) -> None:
        export_component(module, path)


class PriorTask(GuideTask):
    """Training a latent prior (:mod:`wordpaint.models.latent_prior`): the same inputs as a guide
    (an image folder's latents, each with its pooled caption, the text tower run once per caption).
    The quick evaluation is the draft's mean squared error on the folder's held-out rows (captions
    never trained on: how it generalises) and on as many training rows (how well it fits), with
    the latents' variance for scale; the sample grid decodes the recipe's sample prompts' drafts."""

    WHAT = "prior"

    def __init__(self, recipe: dict, config, accelerator, *, show_progress: bool = True):
        super().__init__(recipe, config, accelerator, show_progress=show_progress)
        from wordpaint.data.imagefolder import caption_alternatives

        n = min(len(self.stream), 512)
        self.fit_x0 = self.stream.data[:n]  # the first training rows (file order), with their short prompts
        # their pooled features were computed with every training caption: looked up, not encoded again
        self.fit_text = self.caption_features[[self.caption_index[caption_alternatives(r)[-1]] for r in self.stream.rows[:n]]]

    def sample_grid(self, module):
        from wordpaint.images import make_grid, to_pil

        prompts = self.recipe.get("samples", {}).get("prompts")
        if not prompts or self.vae is None:
            return None
        with torch.no_grad():
            z = module.eval().draft(self._pooled(prompts, False).to(self.device))
            return make_grid(to_pil(self.vae.decode(z).cpu()), cols=8)

    @torch.no_grad()
    def evaluate(self, module) -> dict:
        module.eval()
        out = {}
        for name, x0, text in (("heldout", getattr(self, "eval_x0", None), getattr(self, "eval_text", None)),
                               ("train", self.fit_x0, self.fit_text)):
            if x0 is not None:
                z = module.draft(text.to(self.device)).cpu()
                out[f"{name}_mse"], out[f"{name}_var"] = float(((z - x0) ** 2).mean()), float(x0.var())
        return out

    @staticmethod
    def describe(rec: dict) -> str:
        return " ".join(f"{k} mse={rec[k + '_mse']:.4f} (var {rec[k + '_var']:.3f})" for k in ("train", "heldout") if k + "_mse" in rec)


class EmbedPriorTask(GuideTask):
    """Training an embedding prior (:mod:`wordpaint.models.embed_prior`): an image folder's
    pictures as their pooled EfficientNet-Lite0 vectors (computed once, by row, the vectors an
    ``image_embed_dim`` UNet is trained on), each with its pooled caption. The quick evaluation is
    the mean cosine similarity of the predicted to the true vector on the folder's held-out rows
    (captions never trained on) and on as many training rows, and held-out retrieval: how often a
    held-out caption's prediction is closest to its own picture's vector among the held-out ones."""

    WHAT = "embedding prior"

    def __init__(self, recipe: dict, config, accelerator, *, show_progress: bool = True):
        if _image_folder_data(recipe, f"an {self.WHAT}").get("autoencoder"):
            raise WordpaintError("an embedding prior reads the pictures themselves: drop data.autoencoder (--autoencoder)")
        super().__init__(recipe, config, accelerator, show_progress=show_progress)
        from wordpaint.data.imagefolder import caption_alternatives

        self.image_embeds = image_embeds(self.stream.images, dim=config.embed_dim, show_progress=show_progress)  # (N, D) by row
        self.eval_embeds = image_embeds(self.eval_images, dim=config.embed_dim) if self.can_evaluate else None
        n = min(len(self.stream), 512)
        self.fit_embeds = self.image_embeds[:n]
        self.fit_text = self.caption_features[[self.caption_index[caption_alternatives(r)[-1]] for r in self.stream.rows[:n]]]

    def to_device(self, cpu: dict) -> dict:
        ids = torch.tensor([self.caption_index[c] for c in cpu["captions"]])
        return {"text_features": self.caption_features[ids].to(self.device), "image_embed": cpu["image_embed"].to(self.device)}

    @torch.no_grad()
    def evaluate(self, module) -> dict:
        module.eval()
        out = {}
        for name, target, text in (("heldout", self.eval_embeds, getattr(self, "eval_text", None)), ("train", self.fit_embeds, self.fit_text)):
            if target is None:
                continue
            pred = module.embed(text.to(self.device)).cpu()  # (n, D) unit vectors
            target = torch.nn.functional.normalize(target.float(), dim=-1)
            out[f"{name}_cos"] = float((pred * target).sum(-1).mean())
            out[f"{name}_recall1"] = float(((pred @ target.T).argmax(1) == torch.arange(len(pred))).float().mean())
        return out

    @staticmethod
    def describe(rec: dict) -> str:
        return " ".join(f"{k} cos={rec[k + '_cos']:.3f} recall@1={rec[k + '_recall1']:.3f}" for k in ("train", "heldout") if k + "_cos" in rec)


def decode_chunk(device: torch.device) -> int:
    """Pictures per autoencoder decode call: 16 on a CPU (fastest there: larger batches run slower
    per picture), 256 on a GPU."""
    return 16 if device.type == "cpu" else 256


@torch.no_grad()
def round_trips(vae, x: torch.Tensor, *, latent_noise: float = 0.0, seed: int = 0, show_progress: bool = False) -> torch.Tensor:
    """(N, 2, 3, H, W) float16 on the CPU: the autoencoder's round trip of each (N, 3, H, W) picture
    in [-1, 1] from its latent, and from its latent plus Gaussian noise of a std drawn per picture
    uniformly in [0, ``latent_noise``] (scaled latent units; drawn from ``seed``): a restorer's
    training inputs. Decoded :func:`decode_chunk` pictures at a time."""
    from tqdm.auto import trange

    from wordpaint.models.config import module_device

    n = decode_chunk(module_device(vae))
    gen = torch.Generator().manual_seed(seed + 86_028_121)
    out = torch.empty(len(x), 2, *x.shape[1:], dtype=torch.float16)
    for i in trange(0, len(x), n, desc="round trips", leave=False, disable=not show_progress):
        z = vae.encode(x[i : i + n]).cpu()  # (b, C_z, h, w) scaled
        level = torch.rand(len(z), 1, 1, 1, generator=gen) * latent_noise
        noisy = z + level * torch.randn(z.shape, generator=gen)
        out[i : i + n, 0] = vae.decode(z).cpu().half()
        out[i : i + n, 1] = vae.decode(noisy).cpu().half()
    return out


class RestorerTask:
    """Training a restorer (:mod:`wordpaint.models.restorer`): an image folder's pictures as the
    targets, their round trips through the frozen autoencoder ``data.autoencoder`` (clean and from a
    noisy latent, decoded once up front) as the inputs, with ``sampled_share`` also latents the
    diffusion model's sampler returned for them (``data.decoder_inputs``, decoded once up front),
    each with its pooled caption. The quick evaluation is PSNR (dB) of the round trip and of the
    restored round trip against the picture on the folder's held-out rows (split
    ``heldout``/``test``), per style or kind."""

    def __init__(self, recipe: dict, config, accelerator, *, show_progress: bool = True):
        from wordpaint.data.imagefolder import ImageFolderStream, caption_alternatives, load_imagefolder, model_inputs
        from wordpaint.pipelines.text_to_image import load_model
        from wordpaint.text.encoder import TextEncoder, TextEncoderConfig

        data = _image_folder_data(recipe, "a restorer")
        if not data.get("autoencoder"):
            raise WordpaintError("a restorer learns to mend an autoencoder's round trips: name the autoencoder with "
                                 "data.autoencoder (or --autoencoder DIR)")
        self.recipe, self.config, self.device = recipe, config, accelerator.device
        self.rank, self.world, self.seed = accelerator.process_index, accelerator.num_processes, recipe.get("seed", 0)
        self.vae = load_model(data["autoencoder"]).to(self.device)
        if self.vae.config.resolution != config.resolution:
            raise WordpaintError(f"the autoencoder draws {self.vae.config.resolution} px pictures, the restorer's resolution is {config.resolution}")
        self.text_encoder = TextEncoder(TextEncoderConfig(**recipe.get("text_encoder", {}))).to(self.device)
        if self.text_encoder.dim != config.text_dim:
            raise WordpaintError(f"the text encoder gives pooled text of width {self.text_encoder.dim}, the restorer reads {config.text_dim}")
        kinds = tuple(data["kinds"]) if data.get("kinds") else None
        self.stream = ImageFolderStream(data["folder"], size=config.resolution, seed=self.seed, kinds=kinds,
                                        splits=tuple(data.get("splits", ["train"])), style_repeats=data.get("style_repeats"),
                                        show_progress=show_progress)
        self.decoded = round_trips(self.vae, self.stream.data, latent_noise=config.latent_noise, seed=self.seed,
                                   show_progress=show_progress)
        self.sampled_decoded, self.sampled_slot = self._sampled_decodes(data, config, show_progress=show_progress)
        self.caption_index, self.caption_features = caption_table(self.text_encoder, self.stream.captions, show_progress=show_progress)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the stream above has already warned about every skipped line and file
            try:
                rows, images, _ = load_imagefolder(data["folder"], size=config.resolution, splits=("heldout", "test"), kinds=kinds)
            except WordpaintError:
                raise WordpaintError(f"a restorer's quick evaluation reads the folder's held-out rows (split heldout or test); "
                                     f"{data['folder']} has none") from None
        self.eval_images = model_inputs(images)  # (M, 3, H, W) in [-1, 1]
        # clean round trips only (reconstruct is no_grad): a noisy copy would be decoded and thrown away
        n = decode_chunk(self.device)
        self.eval_round_trips = torch.cat([self.vae.reconstruct(self.eval_images[i : i + n].to(self.device)).cpu()
                                           for i in range(0, len(self.eval_images), n)])
        self.eval_text = pooled_texts(self.text_encoder, [caption_alternatives(r)[-1] for r in rows])
        self.eval_groups = [r.get("style", r.get("kind", "image")) for r in rows]
        self.can_evaluate = True

    def _sampled_decodes(self, data: dict, config, *, show_progress: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """((F, K, 3, H, W) float16 decodes of the K sampled latents from ``data.decoder_inputs`` of
        the F training pictures the file has them for; (N,) long: each of the stream's rows' index
        among those F, -1 where it has none) for a recipe with ``sampled_share``; (None, None)
        without. Only the F are kept: the icons of the emoji folder have none, and zeros for them
        held ~340 MB."""
        from tqdm.auto import trange

        from wordpaint.training.decoder_inputs import latents_for_rows

        want = (self.vae.config.latent_channels, self.vae.config.latent_resolution, self.vae.config.latent_resolution)
        got = latents_for_rows(data.get("decoder_inputs"), config.sampled_share, option="the restorer's sampled_share",
                               file_names=[r["file_name"] for r in self.stream.rows], latent_shape=want)
        if got is None:
            return None, None
        found, latents = got  # (F,) row positions, (F, K, C, h, w) scaled latents
        if not found:
            raise WordpaintError(f"decoder inputs file {data['decoder_inputs']} has sampled latents for none of the training "
                                 f"pictures of {data['folder']}: remake it for this folder")
        k, side = latents.shape[1], config.resolution
        flat = latents.flatten(0, 1)  # (F * K, C, h, w): picture-major
        out = torch.empty(len(flat), 3, side, side, dtype=torch.float16)
        n = decode_chunk(self.device)
        with torch.no_grad():
            for i in trange(0, len(flat), n, desc="sampled decodes", leave=False, disable=not show_progress):
                out[i : i + n] = self.vae.decode(flat[i : i + n].float().to(self.device)).cpu().half()
        slot = torch.full((len(self.stream.rows),), -1, dtype=torch.long)
        slot[torch.tensor(found)] = torch.arange(len(found))
        return out.view(len(found), k, 3, side, side), slot

    def to_device(self, cpu: dict) -> dict:
        ids = torch.tensor([self.caption_index[c] for c in cpu["captions"]])
        return {"decoded": cpu["decoded"].to(self.device), "pixel_values": cpu["pixel_values"].to(self.device),
                "text_features": self.caption_features[ids].to(self.device)}

    def _restore(self, module, idx) -> torch.Tensor:
        module.eval()
        return module.restore(self.eval_round_trips[idx].to(self.device), self.eval_text[idx].to(self.device)).cpu()

    def sample_grid(self, module):
        """Rows of 16 held-out pictures: real, round trip, restored round trip."""
        from wordpaint.images import make_grid, to_pil

        idx = list(range(0, len(self.eval_images), max(1, len(self.eval_images) // 16)))[:16]
        return make_grid(to_pil(self.eval_images[idx]) + to_pil(self.eval_round_trips[idx]) + to_pil(self._restore(module, idx)),
                         cols=16, scale=2)

    def evaluate(self, module) -> dict:
        """Mean PSNR (dB, uint8 pictures) of the round trip and of the restored round trip, overall
        and per group (style, or kind)."""
        from wordpaint.eval.metrics import psnr_by_group
        from wordpaint.images import to_uint8

        real = list(to_uint8(self.eval_images))
        out = {}
        for name, x in (("round_trip", self.eval_round_trips), ("restored", self._restore(module, list(range(len(real)))))):
            out.update({f"{k}_{name}": v for k, v in psnr_by_group(real, list(to_uint8(x)), self.eval_groups).items()})
        return out

    @staticmethod
    def describe(rec: dict) -> str:
        return " ".join(f"{k}={v:.2f}" for k, v in rec.items() if k.startswith("psnr") and k.endswith("_restored")) + \
            f" (round trip {rec.get('psnr_round_trip', float('nan')):.2f})"

    def export(self, module, path: Path) -> None:
        export_component(module, path)


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM / SIGINT to the training process: a scheduler or a terminal
    signals the whole process group, and a worker killed by it makes PyTorch raise in the middle
    of a step instead of letting the loop finish it and save. The loop shuts its workers down."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _StopRequest:
    """Why a run should stop before ``max_steps``: a wall-clock budget (``time_limit`` minutes
    from ``t_start``) or SIGTERM / SIGINT. Handlers only set a flag, so a step is never cut in
    half; the training loop asks :meth:`wanted` between steps."""

    def __init__(self, t_start: float, time_limit: float | None) -> None:
        self.deadline = None if time_limit is None else t_start + 60.0 * time_limit
        self.time_limit, self.signal_name = time_limit, None

    def wanted(self) -> bool:
        return self.signal_name is not None or (self.deadline is not None and time.perf_counter() >= self.deadline)

    @property
    def reason(self) -> str:
        return f"signal {self.signal_name}" if self.signal_name else f"time limit of {self.time_limit:g} min"

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the final checkpoint
        self.signal_name = signal.Signals(signum).name

    @contextlib.contextmanager
    def on_signals(self):
        """Catch SIGTERM and SIGINT while the loop runs (main thread only, where Python allows
        handlers); the previous handlers come back afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _checkpoints(out: Path) -> list[Path]:
    ck = out / "checkpoints"
    return sorted((p for p in ck.glob("step-*") if re.fullmatch(r"step-\d+", p.name)), key=lambda p: int(p.name[5:])) if ck.is_dir() else []


def train(recipe_name: str, out: str | os.PathLike, *, resume: bool = False, max_steps: int | None = None,
          init_from: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
          autoencoder: str | os.PathLike | None = None, workers: int | None = None, mixed_precision: str | None = None,
          time_limit: float | None = None, decoder_inputs: str | os.PathLike | None = None, show_progress: bool = True) -> Path:
    """Train ``recipe_name`` into ``out``; returns the exported pipeline folder. ``init_from``
    starts a new run from a pipeline folder's weights (model and EMA; fresh optimizer); ``data``,
    ``autoencoder`` and ``decoder_inputs`` replace the recipe's image folder, autoencoder folder
    and sampled-latents file (:mod:`wordpaint.training.decoder_inputs`). ``workers``
    (recipe ``num_workers``, default 0) DataLoader processes render batches ahead;
    ``mixed_precision`` (recipe ``mixed_precision``: no, bf16, fp16; default no) is accelerate's
    autocast, for GPUs (bf16 is slower than fp32 on most CPUs).

    The run stops early, with a checkpoint and ``pipeline/`` written so that ``resume=True``
    continues it exactly, after the step that passes ``time_limit`` minutes of wall time (counted
    from this call; leave a margin for the final save) or on SIGTERM / Ctrl-C (a second Ctrl-C
    interrupts at once): a job under ``timeout``, a batch scheduler or a leased GPU machine ends
    with its work kept."""
    t_start = time.perf_counter()
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from wordpaint.images import save_png
    from wordpaint.models.registry import build_model

    recipe = load_recipe(recipe_name)
    if max_steps is not None:
        recipe["max_steps"] = max_steps
    for key, value in (("folder", data), ("autoencoder", autoencoder), ("decoder_inputs", decoder_inputs)):
        if value is not None:
            recipe["data"] = {**recipe.get("data", {}), key: str(value)}
    out = Path(out)
    existing = _checkpoints(out)
    if existing and not resume:
        raise WordpaintError(f"{out} already holds checkpoints (latest {existing[-1].name}); pass --resume to continue or choose a new --out")

    for key, value in (("num_workers", workers), ("mixed_precision", mixed_precision)):
        if value is not None:
            recipe[key] = value
    if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)) or not time_limit >= 0):
        raise WordpaintError(f"time_limit must be a number of minutes >= 0, got {time_limit!r}")
    precision = recipe.get("mixed_precision", "no")
    check_choice("mixed_precision", precision, ("no", "bf16", "fp16"))
    n_workers = recipe.get("num_workers", 0)
    if not isinstance(n_workers, int) or isinstance(n_workers, bool) or n_workers < 0:
        raise WordpaintError(f"num_workers must be an integer >= 0, got {n_workers!r}")
    accelerator = Accelerator(mixed_precision=precision)
    if accelerator.device.type == "cuda":  # TF32 for the fp32 matmuls and convolutions left
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(recipe.get("seed", 0))
    config = recipe_model_config(recipe)
    from wordpaint.pipelines.text_to_image import COMPONENT_FAMILIES, component_folder

    # its folder in a pipeline: the first of its family (a diffusion model's is "diffusion", not "autoguide")
    component = next((folder for folder, family in COMPONENT_FAMILIES.items() if family == config.family), "diffusion")
    # what a resumed run was started with (its recipe as first resolved), read once
    started = read_json(out / "recipe.json", what="training recipe") if existing else None
    if component == "autoencoder" and not config.train_encoder:
        # a frozen encoder keeps the latent scale the diffusion model was trained with: from the
        # --init-from autoencoder, or on resume from the run's own resolved config
        if existing:
            config.scaling_factor = float(started["resolved_model_config"]["scaling_factor"])
        elif init_from is not None:
            config.scaling_factor = float(read_json(component_folder(init_from, component) / "config.json", what="autoencoder config")["scaling_factor"])
        else:
            raise WordpaintError("train_encoder=false fine-tunes an existing autoencoder's decoder: pass --init-from a pipeline folder with an autoencoder, or an autoencoder's folder")
    model = build_model(config)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(param_groups(model, recipe.get("lr_multipliers", {})), lr=recipe["lr"], weight_decay=recipe.get("weight_decay", 0.0))
    # an --init-from leg starts from trained weights, which the warm-up (there to forget a random
    # initialisation) would forget as fast: at step 700 the average would span ~80 steps. Such a
    # leg averages at the full decay from its first step; a resumed run keeps what it started with.
    warmup = started.get("ema_warmup", True) if started is not None else recipe.get("ema_warmup", init_from is None)
    if not isinstance(warmup, bool):
        raise WordpaintError(f"ema_warmup must be true or false, got {warmup!r}")
    recipe["ema_warmup"] = warmup
    ema = EMA(model, recipe.get("ema_decay", 0.999), warmup=warmup)
    step = 0
    if init_from is not None and not existing:
        weights = load_init_weights(model, init_from, component=component)
        load_state_dict_strict(ema.module, weights, source=str(init_from))
    if existing:
        ck = existing[-1]
        state = read_json(ck / "state.json", what="training state")
        load_state_dict_strict(model, load_safetensors(ck / "model.safetensors"), source=str(ck))
        load_state_dict_strict(ema.module, load_safetensors(ck / "ema.safetensors"), source=str(ck))
        # tensors and numbers only; read onto the CPU (a GPU run's checkpoint resumes anywhere),
        # load_state_dict moves the state to the parameters' device
        opt.load_state_dict(torch.load(ck / "optimizer.pt", weights_only=True, map_location="cpu"))
        step = int(state["step"])
        if accelerator.is_main_process:
            print(f"resumed from {ck} at step {step}")
    model, opt = accelerator.prepare(model, opt)
    ema.module.to(accelerator.device)

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "recipe.json", {**recipe, "wordpaint_version": wordpaint.__version__, "resolved_model_config": config.to_dict(), "parameters": n_params})
    # what is trained decides the batches, the sample grid, the quick evaluation and the export
    task_cls = {"autoencoder": AutoencoderTask, "guide": GuideTask, "prior": PriorTask, "embed_prior": EmbedPriorTask,
                "restorer": RestorerTask}.get(component, TextToImageTask)
    task = task_cls(recipe, config, accelerator, show_progress=show_progress)

    def log(rec: dict) -> None:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")

    if accelerator.is_main_process:
        # with the "stopped" record at the end, these mark the run's segments, so that wall-time
        # curves of a run stopped and resumed (benchmarks/emoji_curve.py) leave the pauses out
        log({"step": step, "started": "resume" if existing else "init_from" if init_from is not None else "fresh", "time": time.time()})

    def save_checkpoint() -> None:
        unwrapped = accelerator.unwrap_model(model)
        with atomic_dir(out / "checkpoints" / f"step-{step:07d}") as tmp:
            save_safetensors(tmp / "model.safetensors", unwrapped.state_dict())
            save_safetensors(tmp / "ema.safetensors", ema.module.state_dict())
            torch.save(opt.state_dict(), tmp / "optimizer.pt")
            write_json(tmp / "state.json", {"step": step, "wordpaint_version": wordpaint.__version__})
        for old in _checkpoints(out)[: -recipe.get("keep_checkpoints", 2)]:
            shutil.rmtree(old, ignore_errors=True)
        task.export(ema.module, out / "pipeline")

    gen = torch.Generator()
    bs = recipe["batch_size"]
    total = recipe["max_steps"]
    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not (show_progress and accelerator.is_main_process))
    t_last, n_last, losses, terms = time.perf_counter(), step, [], {}
    model.train()
    loader = iter(torch.utils.data.DataLoader(StepBatches(task, bs), batch_size=None, sampler=range(step, total), num_workers=n_workers,
                                              prefetch_factor=4 if n_workers else None, pin_memory=accelerator.device.type == "cuda",
                                              worker_init_fn=_ignore_stop_signals if n_workers else None))
    first_step, stop = step, _StopRequest(t_start, time_limit)
    with stop.on_signals():
        while step < total:
            # collective: a process whose clock or signal says stop stops every process at this step
            if step > first_step and stop.wanted():
                accelerator.set_trigger()
            if accelerator.check_trigger():
                break
            batch = task.to_device(next(loader))
            for g in opt.param_groups:
                g["lr"] = lr_at(step, recipe) * g.get("lr_mult", 1.0)  # a checkpoint from before lr_multipliers has none
            # timesteps and noise of step k depend on (seed, k) only: resuming repeats nothing
            gen.manual_seed(recipe.get("seed", 0) * 1_000_003 + step * accelerator.num_processes + accelerator.process_index)
            loss = model(batch, generator=gen)
            if not torch.isfinite(loss):
                raise WordpaintError(f"loss became {loss.item()} at step {step}; lower the learning rate (now {recipe['lr']})")
            accelerator.backward(loss)
            if recipe.get("grad_clip"):
                accelerator.clip_grad_norm_(model.parameters(), recipe["grad_clip"])
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.update(accelerator.unwrap_model(model), step)
            step += 1
            losses.append(loss.item())
            for k, v in getattr(accelerator.unwrap_model(model), "loss_terms", {}).items():  # a loss of several terms
                terms.setdefault(k, []).append(v)
            bar.update(1)
            if not accelerator.is_main_process:
                continue
            if step % recipe.get("log_every", 25) == 0 or step == total:
                dt = time.perf_counter() - t_last
                rec = {"step": step, "loss": sum(losses) / len(losses), **{k: sum(v) / len(v) for k, v in terms.items()},
                       "lr": lr_at(step - 1, recipe), "images_per_s": (step - n_last) * bs * accelerator.num_processes / dt,
                       "time": time.time()}
                bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{rec['images_per_s']:.1f}")
                log(rec)
                t_last, n_last, losses, terms = time.perf_counter(), step, [], {}
            if step % recipe.get("sample_every", 250) == 0 or step == total:
                grid = task.sample_grid(ema.module)
                if grid is not None:
                    save_png(grid, out / "samples" / f"step-{step:07d}.png")
            if task.can_evaluate and (step % recipe.get("eval_every", 500) == 0 or step == total):
                rec = task.evaluate(ema.module)
                log({"step": step, "eval": rec, "time": time.time()})
                bar.write(f"step {step}: {task.describe(rec)}")
            if step % recipe.get("checkpoint_every", 100) == 0 or step == total:
                save_checkpoint()
    bar.close()
    if step < total and accelerator.is_main_process:
        if not (out / "checkpoints" / f"step-{step:07d}").is_dir():
            save_checkpoint()
        log({"step": step, "stopped": stop.reason, "time": time.time()})
        print(f"stopped at step {step} of {total} ({stop.reason}); checkpoint and {out / 'pipeline'} written, "
              f"continue with --resume", file=sys.stderr)
    accelerator.wait_for_everyone()
    return out / "pipeline"
