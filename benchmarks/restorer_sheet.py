"""A side-by-side sheet of what the emoji model's restorer changes: the same pictures (same prompts,
seeds and latents) decoded plainly and through the restorer, one pair per prompt, the setting
under each picture.

    python benchmarks/restorer_sheet.py --model emoji --out benchmarks/results/emoji_embed/restorer/side_by_side.png

The prompts are the first concepts of the emoji suite's evaluation list, a different few in each
style (some may be held-out cells); seed 0, not picked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--per-style", type=int, default=4, help="prompts per emoji style")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "emoji_embed" / "restorer" / "side_by_side.png"))
    args = ap.parse_args()

    from wordpaint import TextToImagePipeline
    from wordpaint.data.emoji import EMOJI_STYLES, HELDOUT_FILE, short_caption
    from wordpaint.errors import WordpaintError
    from wordpaint.eval.report import sample_sheet

    pipe = TextToImagePipeline.from_pretrained(args.model)
    if pipe.restorer is None:
        raise WordpaintError(f"{args.model} has no restorer to compare with")
    names = [v["name"] for v in json.loads(HELDOUT_FILE.read_text())["eval_concepts"]][: args.per_style * len(EMOJI_STYLES)]
    prompts = [short_caption(n, s) for k, s in enumerate(EMOJI_STYLES) for n in names[k :: len(EMOJI_STYLES)][: args.per_style]]
    plain = pipe(prompts, seed=args.seed, restore=False, batch_size=64).images
    restored = pipe(prompts, seed=args.seed, restore=True, batch_size=64).images
    pictures = [pair for p, a, b in zip(prompts, plain, restored) for pair in ((a, f"{p} (decoded)"), (b, f"{p} (restored)"))]
    sample_sheet(pictures, Path(args.out), cols=8, scale=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
