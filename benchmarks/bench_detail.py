"""What the detail pass costs: seconds per image with and without ``detail=True`` on the bundled
layout model, timed in turns (median of ``--reps``), on the built-in prompts with their
ground-truth plans (the mix of small, medium and large objects the evaluation draws; prompts spread
evenly over the six tasks).

    python benchmarks/bench_detail.py [--prompts 60] [--reps 3] [--out benchmarks/results/detail_speed.json]

Also counts how many objects the pass redraws per image (those with a box side <= DETAIL_MAX_SIDE).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompts", type=int, default=60, help="N built-in prompts, evenly spread over the set (all six tasks)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "detail_speed.json"))
    args = ap.parse_args()

    from wordpaint import TextToImagePipeline
    from wordpaint.eval.compositional import ground_truth_plan
    from wordpaint.eval.prompts import load_prompts
    from wordpaint.io import write_json
    from wordpaint.pipelines.text_to_image import DETAIL_STRENGTH, detail_crops

    pipe = TextToImagePipeline.from_pretrained(args.model, planner=None)
    every = load_prompts()
    step = max(1, len(every) // args.prompts)
    index = list(range(0, len(every), step))[: args.prompts]
    items = [every[i] for i in index]
    # plan i of the built-in set from seed i, as benchmarks/plan_ablation.py --seed 0 draws it
    plans = [ground_truth_plan(every[i], seed=i, size=pipe.resolution) for i in index]
    prompts = [p["prompt"] for p in items]
    settings = {"48 px": dict(), "48 px, regional prompts": dict(regional_prompts=True),
                "56 px, regional prompts": dict(regional_prompts=True, height=56, width=56)}
    rows = []
    for name, kw in settings.items():
        size = kw.get("height", pipe.resolution)
        redrawn = len(detail_crops(plans, height=size, width=size)) / len(plans)
        times = {False: [], True: []}
        pipe(prompts[:2], plans=plans[:2], seed=0, detail=True, **kw)  # warm-up
        for _ in range(args.reps):
            for detail in (False, True):
                t = time.perf_counter()
                pipe(prompts, plans=plans, seed=0, batch_size=args.batch_size, detail=detail, **kw)
                times[detail].append((time.perf_counter() - t) / len(prompts))
        off, on = statistics.median(times[False]), statistics.median(times[True])
        row = {"setting": name, "seconds_per_image": round(off, 4), "seconds_per_image_detail": round(on, 4),
               "ratio": round(on / off, 3), "objects_redrawn_per_image": round(redrawn, 3)}
        rows.append(row)
        print(row, flush=True)
    write_json(args.out, {"model": args.model or "shapes (bundled)", "prompts": f"{len(prompts)} built-in (every {step}th), ground-truth plans",
                          "batch_size": args.batch_size, "detail_strength": DETAIL_STRENGTH, "reps": args.reps,
                          "defaults": pipe.defaults, "machine": platform.processor() or platform.machine(),
                          "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
