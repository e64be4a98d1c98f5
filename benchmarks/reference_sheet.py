"""Picture of a reference model at work: for held-out (concept, style) cells of the emoji
suite (never trained on; the first of the 120, not picked) and as many seen cells, the reference
it is shown (the concept's training image in the next style), what it draws from "NAME in STYLE
style" with that reference, what it draws from the text alone, and the real image of the cell.

    python benchmarks/reference_sheet.py --model runs/emoji_ref_bundle [--n 6] [--out docs/emoji_reference.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a pipeline folder whose model has reference_image")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--n", type=int, default=6, help="cells of each kind (held-out, seen)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/emoji_reference.png")
    args = ap.parse_args()

    from wordpaint import TextToImagePipeline
    from wordpaint.data.emoji import EMOJI_STYLES, HELDOUT_FILE, reference_cells, short_caption
    from wordpaint.data.imagefolder import load_imagefolder, model_inputs
    from wordpaint.eval.report import sample_sheet
    from wordpaint.images import to_pil

    pipe = TextToImagePipeline.from_pretrained(args.model)
    names = {v["concept"]: v["name"] for v in json.loads(HELDOUT_FILE.read_text())["eval_concepts"]}
    rows, images, _ = load_imagefolder(args.data, splits=("train", "heldout"),
                                       keep=lambda r: r.get("concept") in names and r.get("style") in EMOJI_STYLES)
    pil = dict(zip([(r["concept"], r["style"], r["split"]) for r in rows], to_pil(model_inputs(images))))
    train = {(c, s): im for (c, s, split), im in pil.items() if split == "train"}
    held = [(c, s) for c, s, split in pil if split == "heldout"][: args.n]
    seen = [cell for cell, p in zip(train, reference_cells(train, list(train))) if p is not None][: args.n]
    pictures = []
    for kind, cells in (("held-out", held), ("seen", seen)):
        prompts = [short_caption(names[c], s) for c, s in cells]
        picks = reference_cells(train, cells)
        refs = [train[p] for p in picks]
        drawn = pipe(prompts, seed=args.seed, reference=refs).images
        text_only = pipe(prompts, seed=args.seed).images
        for (c, s), p, pick, a, b in zip(cells, prompts, picks, drawn, text_only):
            real = pil[(c, s, "heldout" if kind == "held-out" else "train")]
            pictures += [(train[pick], f"reference: {pick[1]}"), (a, f"{kind}: {p}"), (b, "text alone"), (real, "real")]
    sample_sheet(pictures, Path(args.out), cols=8)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
