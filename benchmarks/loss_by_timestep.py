"""A diffusion model's denoising error at fixed timesteps, in x0 space (comparable across t), on
its training data: where along the noise levels a model is well or badly trained.

    python benchmarks/loss_by_timestep.py --model src/wordpaint/weights/shapes48 --recipe shapes_multisize_layout
    python benchmarks/loss_by_timestep.py --model src/wordpaint/weights/emoji64 --recipe emoji64_pooled --data data/emoji

Why: the "trailing" sigma schedule's first sampling step is always t = T-1 (pure noise), and the
log-normal noise levels the recipes train on reach t >= 990 for ~0.03% of samples. At t = T-1 the
best possible x0 estimate is the conditional mean image, and its error is the data's conditional
variance; an error well above that of t = 990 (also nearly pure noise) says the step is untrained.
Writes JSON with --out.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import torch


def x0_errors(model, task, *, timesteps: list[int], batches: int, batch_size: int, seed: int) -> dict[int, float]:
    """Mean squared x0 error at each timestep over ``batches`` training batches (same noise for every t)."""
    from wordpaint.training.train import StepBatches

    data = StepBatches(task, batch_size)
    sums = {t: 0.0 for t in timesteps}
    with torch.no_grad():
        for k in range(batches):
            batch = task.to_device(data[10_000 + k])  # steps far from a short leg's own batches
            x0 = batch["pixel_values"]
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + k))
            for t in timesteps:
                # the model's own denoiser (VE view x = x0 + sigma * eps) at timestep t's sigma
                sigma = model.log_sigmas[t].exp()
                x0_hat = model.denoise(x0 + sigma * noise, sigma, batch["encoder_hidden_states"], batch["encoder_attention_mask"],
                                       batch.get("layout"))
                sums[t] += float((x0_hat - x0).pow(2).mean())
    return {t: s / batches for t, s in sums.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="pipeline folder")
    ap.add_argument("--recipe", required=True, help="the recipe whose training data to use")
    ap.add_argument("--data", default=None, help="image folder for an imagefolder recipe")
    ap.add_argument("--timesteps", default="0,250,500,750,900,950,990,999")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from wordpaint.pipelines.text_to_image import TextToImagePipeline
    from wordpaint.training.train import TextToImageTask, load_recipe

    pipe = TextToImagePipeline.from_pretrained(args.model, planner=None)
    model = pipe.model.eval()
    recipe = load_recipe(args.recipe)
    recipe["data"] = {k: v for k, v in recipe["data"].items() if k != "sizes"}  # the model's own size
    if args.data:
        recipe["data"]["folder"] = args.data
    acc = SimpleNamespace(device=torch.device("cpu"), process_index=0, num_processes=1)
    task = TextToImageTask(recipe, model.config, acc, show_progress=False)
    # condition dropout as in training (10% empty captions) is part of the stream; it is kept
    ts = [int(t) for t in args.timesteps.split(",")]
    errs = x0_errors(model, task, timesteps=ts, batches=args.batches, batch_size=args.batch_size, seed=args.seed)
    print(f"{args.model}: x0 MSE by timestep ({args.batches} x {args.batch_size} training images)")
    for t, e in errs.items():
        print(f"  t={t:4d} sigma={float(model.log_sigmas[t].exp()):10.3f}  {e:.4f}")
    if args.out:
        from wordpaint.io import write_json

        write_json(args.out, {"model": args.model, "recipe": args.recipe, "batches": args.batches, "batch_size": args.batch_size,
                              "x0_mse": {str(t): e for t, e in errs.items()}})


if __name__ == "__main__":
    main()
