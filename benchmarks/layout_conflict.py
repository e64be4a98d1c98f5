"""Which input sets an object's colour on a layout model: the text or the layout?

    python benchmarks/layout_conflict.py [--model DIR] [--samples-per-prompt 2] [--out FILE]

The 50 built-in ``color_attr`` prompts ("a purple triangle beside a pink cross") are drawn from
their ground-truth plans twice: as they are, and with the two objects' colours swapped in the
layout only (the text still names the original colours). Each image is scored against the
text's spec and against the layout's. If colour errors came from the text overriding the layout
(a colour bleeding from one object's words to the other), swapped images would follow the text;
if they follow the layout, the errors come from how the layout itself is drawn. Default sampling
of the model folder (6 steps for the bundle); seed 0; writes JSON with the command. For the
unswapped images it also splits "both objects painted one colour" by the gap between the two
boxes and by the smaller object's area (each at its median): is it nearness or size?
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
from pathlib import Path

import numpy as np


def _split(values: list[float], flags: list[bool], correct: list[bool]) -> dict:
    """Rates of ``flags`` and ``correct`` at or below / above the median of ``values``."""
    v, f, c = np.asarray(values), np.asarray(flags, dtype=float), np.asarray(correct, dtype=float)
    med = float(np.median(v))
    return {"median": med, **{name: {"images": int(m.sum()), "painted_alike": float(f[m].mean()), "correct": float(c[m].mean())}
                              for name, m in (("at_or_below", v <= med), ("above", v > med))}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="pipeline folder of a layout model (default: bundled)")
    ap.add_argument("--samples-per-prompt", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "layout_conflict.json"))
    args = ap.parse_args()

    from wordpaint import TextToImagePipeline
    from wordpaint.eval.compositional import ground_truth_plan
    from wordpaint.eval.prompts import load_prompts
    from wordpaint.eval.scorer import score_image
    from wordpaint.images import pil_to_array
    from wordpaint.io import write_json

    pipe = TextToImagePipeline.from_pretrained(args.model, planner=None)
    if not pipe.model.config.layout_channels:
        sys.exit("this model reads no layout (layout_channels = 0)")
    prompts = [p for p in load_prompts() if p["task"] == "color_attr"]
    k = args.samples_per_prompt
    result = {"command": "python " + " ".join(sys.argv), "model": args.model or "bundled shapes48",
              "prompts": len(prompts), "samples_per_prompt": k, "seed": 0, "defaults": pipe.defaults}
    for swap in (False, True):
        plans, layout_specs = [], []
        for i, p in enumerate(prompts):
            plan = ground_truth_plan(p, seed=i, size=pipe.resolution)
            spec = copy.deepcopy(p["spec"])
            if swap:  # the two objects have different shapes: exchange their colours by shape
                a, b = (o["shape"] for o in spec["objects"])
                was = {o.shape: o.color for o in plan.objects}
                colour = {a: was[b], b: was[a]}
                plan = dataclasses.replace(plan, objects=[dataclasses.replace(o, color=colour[o.shape], phrase=f"{colour[o.shape]} {o.shape}")
                                                          for o in plan.objects])
                for o in spec["objects"]:
                    o["color"] = colour[o["shape"]]
            plans.append(plan)
            layout_specs.append(spec)
        out = pipe([p["prompt"] for p in prompts], num_images_per_prompt=k, seed=0, plans=plans, batch_size=32)
        text_ok = layout_ok = 0
        gaps, areas, alike, correct = [], [], [], []
        for n, img in enumerate(out.images):
            a = pil_to_array(img)
            by_text = score_image(a, prompts[n // k]["spec"])
            text_ok += by_text["correct"]
            layout_ok += score_image(a, layout_specs[n // k])["correct"]
            (x0, y0, x1, y1), (u0, v0, u1, v1) = (o.box for o in plans[n // k].objects)
            gaps.append(max(u0 - x1, x0 - u1, v0 - y1, y0 - v1, 0.0))  # canvas fractions; 0 = touching
            areas.append(min((x1 - x0) * (y1 - y0), (u1 - u0) * (v1 - v0)))
            det = by_text["objects"]
            alike.append(len(det) == 2 and det[0]["color"] == det[1]["color"])
            correct.append(by_text["correct"])
        row = {"images": len(out.images), "correct_by_the_text": text_ok / len(out.images), "correct_by_the_layout": layout_ok / len(out.images)}
        if not swap:
            row["painted_alike"] = float(np.mean(alike))
            row["by_box_gap"], row["by_smaller_area"] = _split(gaps, alike, correct), _split(areas, alike, correct)
        result["layout_swapped" if swap else "layout_agrees"] = row
        print(("layout swapped: " if swap else "layout agrees:  ") + " ".join(f"{key}={v:.3f}" if isinstance(v, float) else f"{key}={v}" for key, v in row.items()), flush=True)
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
