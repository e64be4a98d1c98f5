"""Seconds per training step of a recipe's model, eager against channels_last and torch.compile.

One step = the model's loss on a batch of the recipe's shape, backward, gradient clipping, AdamW
and the EMA update, as ``wordpaint train`` runs it. The batch is random tensors of the shapes the
recipe's task makes (latents, MiniLM token states of ``--tokens`` tokens, the image vector), so
no data, autoencoder or text encoder is needed and only the model's arithmetic is timed. Each
variant gets a fresh model with the same seed; the losses of its first steps are recorded so that
a variant which computes something else shows it.

    python benchmarks/train_step_speed.py --recipe emoji64_embed_scratch --steps 20 \
        --out benchmarks/results/train_step_speed/emoji64_embed_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from wordpaint.models.registry import build_model
from wordpaint.training.train import EMA, load_recipe, recipe_model_config


def make_batch(config, batch_size: int, tokens: int, gen: torch.Generator) -> dict:
    """Random tensors of the shapes a text-to-image batch of ``config`` has."""
    res = config.resolution
    batch = {
        "pixel_values": torch.randn(batch_size, config.in_channels, res, res, generator=gen),
        "encoder_hidden_states": torch.randn(batch_size, tokens, config.cross_attention_dim, generator=gen),
        "encoder_attention_mask": torch.ones(batch_size, tokens, dtype=torch.bool),
    }
    if config.image_embed_dim:
        batch["image_embed"] = torch.randn(batch_size, config.image_embed_dim, generator=gen)
    return batch


def time_variant(name: str, recipe: dict, *, steps: int, warmup: int, tokens: int, seed: int = 0) -> dict:
    """Median seconds per step of one variant ("eager", "channels_last", "compile",
    "compile+channels_last"), with its compile time (the first step's excess) and first losses."""
    torch.manual_seed(seed)
    config = recipe_model_config(recipe)
    model = build_model(config).train()
    if "channels_last" in name:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, recipe.get("ema_decay", 0.999), warmup=True)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe.get("weight_decay", 0.0))
    if "compile" in name:
        model.unet = torch.compile(model.unet)
    gen = torch.Generator().manual_seed(seed)
    batch = make_batch(config, recipe["batch_size"], tokens, gen)
    if "channels_last" in name:
        batch["pixel_values"] = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
    times, losses = [], []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        gen.manual_seed(seed * 1_000_003 + step)
        loss = model(batch, generator=gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.get("grad_clip") or float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model, step)
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
        print(f"{name}: step {step} {times[-1]:.3f} s loss {losses[-1]:.4f}", flush=True)
    timed = times[warmup:]
    med = statistics.median(timed)
    return {"variant": name, "median_s_per_step": med, "mean_s_per_step": statistics.fmean(timed),
            "images_per_s": recipe["batch_size"] / med, "first_step_s": times[0],
            "compile_overhead_s": max(times[0] - med, 0.0) if "compile" in name else None, "losses_first_steps": losses[:4]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="emoji64_embed_scratch")
    ap.add_argument("--variants", default="eager,channels_last,compile,compile+channels_last")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens in the first)")
    ap.add_argument("--tokens", type=int, default=16, help="text tokens per caption ('fox in twemoji style' is 7; corpus captions ~15-25)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    rows = [time_variant(v, recipe, steps=args.steps, warmup=args.warmup, tokens=args.tokens) for v in args.variants.split(",")]
    base = next((r["median_s_per_step"] for r in rows if r["variant"] == "eager"), None)
    for r in rows:
        r["speedup_vs_eager"] = base / r["median_s_per_step"] if base else None
        print(f"{r['variant']:>24}: {r['median_s_per_step']:.3f} s/step ({r['images_per_s']:.1f} img/s)"
              + (f", x{r['speedup_vs_eager']:.2f} vs eager" if base else ""))
    result = {"recipe": args.recipe, "batch_size": recipe["batch_size"], "tokens": args.tokens, "steps": args.steps,
              "warmup": args.warmup, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
