"""Picture of what an option changes: the first built-in prompts of a task (not picked), each
drawn without it (top row) and with it (bottom row), same seed, same plan; the scorer's verdict
is written under each image.

    python benchmarks/regional_sheet.py [--task color_attr] [--n 8] [--out docs/regional_prompts.png]
    python benchmarks/regional_sheet.py --compare detail --out docs/detail_pass.png

``--compare regional``: regional prompts off / on (the model's default size). ``--compare detail``:
the detail pass off / on, with ground-truth layouts (the first prompts, of any task, whose
layout has a small object), regional prompts at 56 px, as in the README's table.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--compare", choices=("regional", "detail"), default="regional")
    ap.add_argument("--task", default="color_attr", help="--compare regional: the task whose prompts are drawn")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/regional_prompts.png")
    args = ap.parse_args()

    from wordpaint import TextToImagePipeline
    from wordpaint.eval.compositional import ground_truth_plan
    from wordpaint.eval.prompts import load_prompts
    from wordpaint.eval.report import sample_sheet
    from wordpaint.eval.scorer import score_image
    from wordpaint.images import pil_to_array
    from wordpaint.pipelines.text_to_image import detail_crops

    pipe = TextToImagePipeline.from_pretrained(args.model)
    if args.compare == "regional":
        prompts = [p for p in load_prompts() if p["task"] == args.task][: args.n]
        plans, common = None, {}
        names, option = ("usual", "regional"), "regional_prompts"
    else:  # ground-truth layouts as in benchmarks/plan_ablation.py (plan i from seed i)
        items = [(p, ground_truth_plan(p, seed=i, size=pipe.resolution)) for i, p in enumerate(load_prompts())]
        items = [(p, pl) for p, pl in items if detail_crops([pl], height=56, width=56)][: args.n]
        prompts, plans = [p for p, _ in items], [pl for _, pl in items]
        common = dict(regional_prompts=True, height=56, width=56)
        names, option = ("one pass", "detail"), "detail"
    pictures = []
    for on in (False, True):
        out = pipe([p["prompt"] for p in prompts], seed=args.seed, plans=plans, **common, **{option: on})
        for p, img in zip(prompts, out.images):
            ok = score_image(pil_to_array(img), p["spec"])["correct"]
            pictures.append((img, f"{names[on]}: {'right' if ok else 'WRONG'} - {p['prompt']}"))
    sample_sheet(pictures, Path(args.out), cols=args.n, scale=3 if args.compare == "detail" else 2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
