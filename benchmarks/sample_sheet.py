"""A sample sheet for the README: a few prompts, several seeds each, prompt written beside its row.

    python benchmarks/sample_sheet.py [--model DIR] [--out docs/samples.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

PROMPTS = [
    "a red circle to the left of a blue square",
    "three yellow crosses",
    "a green star and an orange circle",
    "a blue triangle above a pink cross",
    "two purple squares on a black background",
    "a cyan star",  # held-out pair: never seen in training
    "a purple triangle",  # held-out pair
    "a yellow square below a red star on a white background",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs" / "samples.png"))
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--scale", type=int, default=2)
    args = ap.parse_args()

    from wordpaint import TextToImagePipeline
    from wordpaint.images import label_font, save_png

    pipe = TextToImagePipeline.from_pretrained(args.model)
    out = pipe(PROMPTS, num_images_per_prompt=args.seeds, seed=0)
    size = pipe.resolution * args.scale
    label_w, pad = 330, 4
    sheet = Image.new("RGB", (label_w + args.seeds * (size + pad), len(PROMPTS) * (size + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, prompt in enumerate(PROMPTS):
        y = pad + r * (size + pad)
        draw.text((6, y + size // 2 - 6), prompt, fill=(0, 0, 0), font=label_font(11))
        for c in range(args.seeds):
            im = out.images[r * args.seeds + c].resize((size, size), Image.NEAREST)
            sheet.paste(im, (label_w + c * (size + pad), y))
    save_png(sheet, args.out, metadata={"prompts": PROMPTS, "seeds": f"0..{len(PROMPTS) * args.seeds - 1}", **{k: v for k, v in out.metadata[0].items() if k not in ("prompt", "seed")}})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
