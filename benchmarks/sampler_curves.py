"""Speed-quality curves of the samplers: compositional accuracy and wall time per image against
the number of steps, for DDIM, DPM-Solver++(2M) and Euler, on one trained shapes model.

    python benchmarks/sampler_curves.py [--model DIR] [--steps 1,2,4,8,16,32,64] [--per-task 10]

Writes benchmarks/results/sampler_curves.json and .png. The prompts are a fixed subset of the
built-in evaluation set (``--per-task`` per task), one sample each at seed 0, so every cell of
the curve sees the same prompts and the same initial noise.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="pipeline folder (default: the bundled model)")
    ap.add_argument("--steps", default="1,2,4,8,16,32,64")
    ap.add_argument("--samplers", default="ddim,dpmpp_2m,euler")
    ap.add_argument("--per-task", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sampler_curves"))
    args = ap.parse_args()

    import torch

    from wordpaint import TextToImagePipeline, __version__
    from wordpaint.eval.compositional import evaluate_compositional
    from wordpaint.eval.prompts import load_prompts, subset

    pipe = TextToImagePipeline.from_pretrained(args.model)
    prompts = subset(load_prompts(), args.per_task)
    rows = []
    for sampler in args.samplers.split(","):
        for steps in map(int, args.steps.split(",")):
            t0 = time.perf_counter()
            summary, _, _ = evaluate_compositional(pipe, prompts, samples_per_prompt=1, seed=0, num_inference_steps=steps,
                                                   guidance_scale=args.guidance, sampler=sampler, show_progress=False)
            dt = time.perf_counter() - t0
            row = {"sampler": sampler, "steps": steps, "overall": summary["overall"], "per_task": summary["per_task"],
                   "seconds_per_image": dt / summary["n_images"], "n_images": summary["n_images"]}
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "per_task"}), flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"model": args.model or "bundled shapes48", "prompts": f"built-in compositional_v1, {args.per_task} per task, 1 sample, seed 0",
              "guidance_scale": args.guidance if args.guidance is not None else pipe.defaults["guidance_scale"],
              "sigma_schedule": pipe.defaults["sigma_schedule"], "rows": rows, "torch_threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "wordpaint_version": __version__}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for sampler in args.samplers.split(","):
        r = [x for x in rows if x["sampler"] == sampler]
        a1.plot([x["steps"] for x in r], [x["overall"] for x in r], marker="o", label=sampler)
        a2.plot([x["seconds_per_image"] for x in r], [x["overall"] for x in r], marker="o", label=sampler)
    a1.set_xscale("log", base=2)
    a1.set_xlabel("sampling steps")
    a2.set_xlabel("seconds per image (batch 32, this machine)")
    for a in (a1, a2):
        a.set_ylabel("compositional accuracy (overall)")
        a.grid(alpha=0.3)
        a.legend()
    fig.suptitle("wordpaint sampler curves (shapes model, exact scorer)")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
