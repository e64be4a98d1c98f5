"""Choose sampling defaults on a *dev* prompt set (seed 7, not the built-in evaluation set).

    python benchmarks/tune_sampling.py --model DIR [--per-task 8] [--samplers dpmpp_2m:10,ddpm:20]
    python benchmarks/tune_sampling.py --settings dpmpp_2m:10:3:none dpmpp_2m:10:3:0,1.2
    python benchmarks/tune_sampling.py --plans ground_truth --guidance 3,5,7 --samplers dpmpp_2m:6
    python benchmarks/tune_sampling.py --settings dpmpp_2m:6:3:none dpmpp_2m:6:1:none:5   # layout guidance 5
    python benchmarks/tune_sampling.py --plans ground_truth --settings dpmpp_2m:6:3:none:none:0   # text guidance 0: layout alone
    python benchmarks/tune_sampling.py --plans ground_truth --settings dpmpp_2m:6:3:none --regional both
    python benchmarks/tune_sampling.py --plans ground_truth --settings dpmpp_2m:6:3:none --regional on --sizes 48,56,64,72

Sweeps sampler (with its step count), guidance scale and sigma spacing (a grid), or explicit
``sampler:steps:guidance:interval[:layout_guidance[:text_guidance]]`` settings (``none`` for an unset scale), space-separated (interval ``none`` or ``LO,HI`` in
sigma as in ``wordpaint generate --guidance-interval``, ``inf`` allowed; the schedule is the first of ``--schedules``), 2 samples per prompt, and writes the
overall compositional accuracy and seconds per image (batch 16) of each setting. ``--plans
ground_truth`` draws the dev prompts' sampled shapes-world layouts instead of the pipeline's
planner (layout models only), as the plan ablation's ground-truth row does. ``--sizes`` draws
each setting at each image side (the plans, in canvas fractions, stay the same).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--per-task", type=int, default=8)
    ap.add_argument("--guidance", default="1.5,3,5")
    ap.add_argument("--schedules", default="trailing,karras")
    ap.add_argument("--samplers", default="dpmpp_2m:10", help="comma-separated sampler:steps")
    ap.add_argument("--settings", nargs="+", default=None, help="sampler:steps:guidance:interval[:layout_guidance[:text_guidance]] ... (replaces the grid)")
    ap.add_argument("--plans", choices=("planner", "ground_truth"), default="planner",
                    help="layouts to draw: the pipeline's planner, or the dev prompts' ground-truth scenes")
    ap.add_argument("--regional", choices=("off", "on", "both"), default="off",
                    help="regional prompts (each object's box conditioned on its own phrase): off, on, or each setting both ways")
    ap.add_argument("--detail", default="off", help="comma-separated detail-pass strengths to try, 'off' for none (e.g. off,0.3,0.5; default off)")
    ap.add_argument("--sizes", default=None, help="comma-separated image sides in pixels (default: the model's resolution)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tune_sampling.json"))
    args = ap.parse_args()

    from wordpaint import TextToImagePipeline
    from wordpaint.cli.options import parse_interval
    from wordpaint.eval.compositional import evaluate_compositional, ground_truth_plan
    from wordpaint.eval.prompts import generate_prompt_set

    pipe = TextToImagePipeline.from_pretrained(args.model)
    dev = generate_prompt_set(per_task=args.per_task, seed=7)
    plans = None
    if args.plans == "ground_truth":  # the same per-prompt seeds as benchmarks/plan_ablation.py
        plans = [ground_truth_plan(p, seed=100 + i, size=pipe.resolution) for i, p in enumerate(dev)]
    schedules = args.schedules.split(",")
    if args.settings:
        grid = []
        for spec in args.settings:
            sampler, steps, g, iv, *extra = spec.split(":")
            lg, tg = ([None if v == "none" else float(v) for v in extra] + [None, None])[:2]
            grid.append((sampler, int(steps), schedules[0], float(g), parse_interval(iv), lg, tg))
    else:
        grid = [(sampler, int(steps), sched, g, None, None, None) for sampler, steps in (x.split(":") for x in args.samplers.split(","))
                for sched in schedules for g in map(float, args.guidance.split(","))]
    rows = []
    regional = {"off": [False], "on": [True], "both": [False, True]}[args.regional]
    sizes = [int(v) for v in args.sizes.split(",")] if args.sizes else [pipe.resolution]
    details = [None if v == "off" else float(v) for v in args.detail.split(",")]
    for (sampler, steps, sched, g, interval, lg, tg), rp, size, dt in ((x, r, z, d) for x in grid for r in regional for z in sizes for d in details):
        extra = {"detail": False} if dt is None else {"detail": True, "detail_strength": dt}
        summary, _, _ = evaluate_compositional(pipe, dev, samples_per_prompt=2, seed=100, guidance_scale=g, sampler=sampler,
                                               sigma_schedule=sched, num_inference_steps=steps, guidance_interval=interval,
                                               layout_guidance_scale=lg, text_guidance_scale=tg, plans=plans, regional_prompts=rp,
                                               size=size, show_progress=False, **extra)
        row = {"sampler": sampler, "num_inference_steps": steps, "sigma_schedule": sched, "guidance_scale": g,
               "guidance_interval": list(interval) if interval else None, "layout_guidance_scale": lg, "text_guidance_scale": tg,
               "regional_prompts": rp, "size": size, "detail_strength": dt, "overall": round(summary["overall"], 4), "seconds_per_image": round(summary["seconds"] / summary["n_images"], 4),
               "per_task": {k: round(v, 3) for k, v in summary["per_task"].items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = max(rows, key=lambda r: r["overall"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"dev_prompts": "generate_prompt_set(per_task=%d, seed=7)" % args.per_task,
                                          "plans": args.plans,
                                          "samples_per_prompt": 2, "rows": rows, "best": best}, indent=2) + "\n")
    print("best:", json.dumps(best))


if __name__ == "__main__":
    main()
