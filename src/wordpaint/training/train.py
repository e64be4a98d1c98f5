"""Training loop for registered model families, on accelerate (one process on a CPU, many on
GPUs with ``accelerate launch``).

Outputs in ``--out``: ``recipe.json``, ``metrics.jsonl`` (loss, speed, quick compositional
scores), ``samples/step-N.png``, ``checkpoints/step-N/`` (model, EMA, optimizer, state; written
atomically) and ``pipeline/`` (the EMA weights as a loadable pipeline folder). Batches are a
pure function of (seed, step, rank), so resuming from a checkpoint loses and repeats no step.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import torch

import wordpaint
from wordpaint.errors import WordpaintError
from wordpaint.io import atomic_dir, load_safetensors, load_state_dict_strict, read_json, save_safetensors, write_json

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
REQUIRED = ("model", "batch_size", "max_steps", "lr")


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def load_recipe(name_or_path: str) -> dict:
    """A recipe by name (``src/wordpaint/recipes/NAME.json``) or by path to a JSON file."""
    path = Path(name_or_path)
    if not path.suffix == ".json":
        path = RECIPES_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise WordpaintError(f"unknown recipe {name_or_path!r}; expected one of: {', '.join(list_recipes())} or a .json path")
    recipe = read_json(path, what="recipe")
    missing = [k for k in REQUIRED if k not in recipe]
    if missing:
        raise WordpaintError(f"recipe {path} lacks {', '.join(missing)}")
    return recipe


class EMA:
    """Exponential moving average of a model's parameters with warm-up
    (decay_t = min(decay, (1 + t) / (10 + t))), so short runs are not dominated by the random
    initialisation. Hand-written rather than diffusers' EMAModel because the average must live
    in a plain module that saves to safetensors and loads into a pipeline unchanged."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        ema_p = list(self.module.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in model.parameters()], 1 - d)


def widen_conv_in(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Start a layout model from a prompt-only one: the UNet's first convolution gets zero
    weights for the new layout input channels (as ControlNet zero-initialises its new inputs), so
    training starts from exactly the old model's behaviour. Other weights pass unchanged."""
    key = "unet.conv_in.weight"
    target = model.state_dict().get(key)
    w = weights.get(key)
    if w is None or target is None or w.shape == target.shape or w.shape[0] != target.shape[0] or w.shape[2:] != target.shape[2:] \
            or w.shape[1] > target.shape[1]:
        return weights
    pad = w.new_zeros(w.shape[0], target.shape[1] - w.shape[1], *w.shape[2:])  # (out, new in, k, k)
    return {**weights, key: torch.cat([w, pad], dim=1)}


def lr_at(step: int, recipe: dict) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak at max_steps."""
    peak, warm, total = recipe["lr"], recipe.get("warmup_steps", 0), recipe["max_steps"]
    if step < warm:
        return peak * (step + 1) / warm
    frac = min(1.0, (step - warm) / max(1, total - warm))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _checkpoints(out: Path) -> list[Path]:
    ck = out / "checkpoints"
    return sorted((p for p in ck.glob("step-*") if re.fullmatch(r"step-\d+", p.name)), key=lambda p: int(p.name[5:])) if ck.is_dir() else []


def train(recipe_name: str, out: str | os.PathLike, *, resume: bool = False, max_steps: int | None = None,
          init_from: str | os.PathLike | None = None, show_progress: bool = True) -> Path:
    """Train ``recipe_name`` into ``out``; returns the exported pipeline folder. ``init_from``
    starts a new run from a pipeline folder's weights (model and EMA; fresh optimizer)."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from wordpaint.data.stream import make_stream
    from wordpaint.eval.compositional import aggregate, evaluate_compositional
    from wordpaint.eval.prompts import load_prompts, subset
    from wordpaint.images import make_grid, save_png
    from wordpaint.models.registry import build_config, build_model
    from wordpaint.pipelines.text_to_image import TextToImagePipeline, load_model, save_model
    from wordpaint.text.encoder import TextEncoder, TextEncoderConfig

    recipe = load_recipe(recipe_name)
    if max_steps is not None:
        recipe["max_steps"] = max_steps
    out = Path(out)
    existing = _checkpoints(out)
    if existing and not resume:
        raise WordpaintError(f"{out} already holds checkpoints (latest {existing[-1].name}); pass --resume to continue or choose a new --out")

    accelerator = Accelerator()
    torch.manual_seed(recipe.get("seed", 0))
    text_encoder = TextEncoder(TextEncoderConfig(**recipe.get("text_encoder", {})))
    mcfg = dict(recipe["model"])
    config = build_config(family=mcfg.pop("family", "diffusion"), preset=mcfg.pop("preset", None), **mcfg.pop("overrides", {}), **mcfg)
    model = build_model(config)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe.get("weight_decay", 0.0))
    ema = EMA(model, recipe.get("ema_decay", 0.999))
    step = 0
    if init_from is not None and not existing:
        src = Path(init_from) / "diffusion" / "model.safetensors"
        weights = widen_conv_in(load_safetensors(src), model)
        load_state_dict_strict(model, weights, source=str(src))
        load_state_dict_strict(ema.module, weights, source=str(src))
    if existing:
        ck = existing[-1]
        state = read_json(ck / "state.json", what="training state")
        load_state_dict_strict(model, load_safetensors(ck / "model.safetensors"), source=str(ck))
        load_state_dict_strict(ema.module, load_safetensors(ck / "ema.safetensors"), source=str(ck))
        opt.load_state_dict(torch.load(ck / "optimizer.pt", weights_only=True))  # tensors and numbers only
        step = int(state["step"])
        if accelerator.is_main_process:
            print(f"resumed from {ck} at step {step}")
    model, opt = accelerator.prepare(model, opt)
    ema.module.to(accelerator.device)
    text_encoder.to(accelerator.device)

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "recipe.json", {**recipe, "wordpaint_version": wordpaint.__version__, "resolved_model_config": config.to_dict(), "parameters": n_params})
    data = recipe.get("data", {})
    layouts = bool(getattr(config, "layout_channels", 0))
    stream = make_stream(data.get("name", "shapes"), size=config.resolution, seed=recipe.get("seed", 0), split=data.get("split", "train"),
                         cond_drop_prob=config.cond_drop_prob, layout_drop_prob=config.layout_drop_prob if layouts else None)
    eval_prompts = subset(load_prompts(), recipe.get("eval", {}).get("prompts_per_task", 4))
    gen = torch.Generator()

    def ema_pipeline() -> TextToImagePipeline:
        # a layout model is sampled and scored as it is meant to be used: plan, then draw
        return TextToImagePipeline(text_encoder=text_encoder, model=ema.module, planner="rules" if layouts else None)

    def log(rec: dict) -> None:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")

    def save_checkpoint() -> None:
        unwrapped = accelerator.unwrap_model(model)
        with atomic_dir(out / "checkpoints" / f"step-{step:07d}") as tmp:
            save_safetensors(tmp / "model.safetensors", unwrapped.state_dict())
            save_safetensors(tmp / "ema.safetensors", ema.module.state_dict())
            torch.save(opt.state_dict(), tmp / "optimizer.pt")
            write_json(tmp / "state.json", {"step": step, "wordpaint_version": wordpaint.__version__})
        for old in _checkpoints(out)[: -recipe.get("keep_checkpoints", 2)]:
            shutil.rmtree(old, ignore_errors=True)
        ema_pipeline().save_pretrained(out / "pipeline")

    bs = recipe["batch_size"]
    total = recipe["max_steps"]
    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not (show_progress and accelerator.is_main_process))
    t_last, n_last, losses = time.perf_counter(), step, []
    model.train()
    while step < total:
        images, captions = stream.batch(step, bs, rank=accelerator.process_index, world_size=accelerator.num_processes)
        enc = text_encoder.encode(captions)
        batch = {"pixel_values": images.to(accelerator.device), "encoder_hidden_states": enc.hidden_states.to(accelerator.device),
                 "encoder_attention_mask": enc.attention_mask.to(accelerator.device)}
        if layouts:
            batch["layout"] = stream.layouts(step, bs, rank=accelerator.process_index, world_size=accelerator.num_processes).to(accelerator.device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, recipe)
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
        bar.update(1)
        if not accelerator.is_main_process:
            continue
        if step % recipe.get("log_every", 25) == 0 or step == total:
            dt = time.perf_counter() - t_last
            rec = {"step": step, "loss": sum(losses) / len(losses), "lr": lr_at(step - 1, recipe),
                   "images_per_s": (step - n_last) * bs * accelerator.num_processes / dt, "time": time.time()}
            bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{rec['images_per_s']:.1f}")
            log(rec)
            t_last, n_last, losses = time.perf_counter(), step, []
        if step % recipe.get("sample_every", 250) == 0 or step == total:
            s = recipe.get("samples", {})
            res = ema_pipeline()(s.get("prompts", ["a red circle"]), num_images_per_prompt=4, seed=0,
                                 num_inference_steps=s.get("num_inference_steps", 10), guidance_scale=s.get("guidance_scale", 3.0))
            save_png(make_grid(res.images, cols=8, scale=2), out / "samples" / f"step-{step:07d}.png")
        if data.get("name", "shapes") == "shapes" and (step % recipe.get("eval_every", 500) == 0 or step == total):
            e = recipe.get("eval", {})
            summary, _, _ = evaluate_compositional(ema_pipeline(), eval_prompts, samples_per_prompt=1, seed=0,
                                                   num_inference_steps=e.get("num_inference_steps", 10),
                                                   guidance_scale=e.get("guidance_scale", 3.0), show_progress=False)
            log({"step": step, "eval": summary, "time": time.time()})
            bar.write(f"step {step}: quick compositional overall {summary['overall']:.3f} " + " ".join(f"{k}={v:.2f}" for k, v in summary["per_task"].items()))
        if step % recipe.get("checkpoint_every", 100) == 0 or step == total:
            save_checkpoint()
    bar.close()
    accelerator.wait_for_everyone()
    return out / "pipeline"
