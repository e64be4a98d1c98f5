"""Picture of what regional prompts change: the first built-in prompts of a task (not picked),
each drawn with the usual conditioning (top row) and with regional prompts (bottom row), same
seed, same plan; the scorer's verdict is written under each image.

    python benchmarks/regional_sheet.py [--task color_attr] [--n 8] [--out docs/regional_prompts.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--task", default="color_attr")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/regional_prompts.png")
    args = ap.parse_args()

    from wordpaint import TextToImagePipeline
    from wordpaint.eval.prompts import load_prompts
    from wordpaint.eval.report import sample_sheet
    from wordpaint.eval.scorer import score_image
    from wordpaint.images import pil_to_array

    pipe = TextToImagePipeline.from_pretrained(args.model)
    prompts = [p for p in load_prompts() if p["task"] == args.task][: args.n]
    pictures = []
    for regional in (False, True):
        out = pipe([p["prompt"] for p in prompts], seed=args.seed, regional_prompts=regional)
        for p, img in zip(prompts, out.images):
            ok = score_image(pil_to_array(img), p["spec"])["correct"]
            pictures.append((img, f"{'regional' if regional else 'usual'}: {'right' if ok else 'WRONG'} - {p['prompt']}"))
    sample_sheet(pictures, Path(args.out), cols=args.n, scale=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
