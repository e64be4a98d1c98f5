"""How wordpaint-clip's style judge treats degraded *real* emoji: is "Twemoji taken for Noto" a
property of the judge on soft pictures, or of the generated pictures?

    python benchmarks/emoji_style_judge.py --data data/emoji --out benchmarks/results/emoji_embed/style_judge.json

The real pictures of the emoji suite's seen cells (240 evaluation concepts, every training style)
are judged as the report judges generated ones (3-way style, wordpaint-clip zero-shot), as they
are, after the bundled autoencoder's round trip, and after a Gaussian blur of each radius; each
row gives style accuracy and the confusion counts (true -> judged).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--model", default="emoji", help="pipeline whose autoencoder makes the round trip")
    ap.add_argument("--blur", type=float, nargs="*", default=[0.5, 1.0, 1.5], help="Gaussian blur radii in pixels")
    ap.add_argument("--clip", default=None, help="the judge: a wordpaint-clip folder (default: the bundled one)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "emoji_embed" / "style_judge.json"))
    args = ap.parse_args()

    import torch
    from PIL import ImageFilter

    from wordpaint import TextToImagePipeline
    from wordpaint.data.emoji import EMOJI_STYLES, HELDOUT_FILE
    from wordpaint.data.imagefolder import load_imagefolder, model_inputs
    from wordpaint.images import to_pil
    from wordpaint.io import write_json
    from wordpaint.models.clip import WordpaintClip
    from wordpaint.training.clip import concept_style_accuracy

    names = {v["concept"]: v["name"] for v in json.loads(HELDOUT_FILE.read_text())["eval_concepts"]}
    order = list(names)
    rows, images, _ = load_imagefolder(args.data, size=64, splits=("train",), kinds=("emoji",),
                                       keep=lambda r: r.get("concept") in names and r.get("style") in EMOJI_STYLES)
    concepts, styles = [r["concept"] for r in rows], [r["style"] for r in rows]
    x = model_inputs(images)  # (N, 3, 64, 64) in [-1, 1]
    real = to_pil(x)  # (N,) PIL, composited as the report sees them
    clip = WordpaintClip.from_pretrained(args.clip)
    vae = TextToImagePipeline.from_pretrained(args.model).vae
    with torch.no_grad():
        recon = to_pil(torch.cat([vae.reconstruct(x[i : i + 128]) for i in range(0, len(x), 128)]))
    variants = {"real": real, "autoencoder round trip": recon}
    variants |= {f"Gaussian blur {r:g} px": [im.filter(ImageFilter.GaussianBlur(r)) for im in real] for r in args.blur}
    out = {"cells": len(rows), "concepts": len(order), "data": args.data, "model": args.model, "judge": args.clip or "bundled wordpaint-clip", "rows": []}
    for name, pics in variants.items():
        t0 = time.perf_counter()
        emb = clip.model.embed_image_features(clip.image_features(pics, show_progress=False))
        acc = concept_style_accuracy(clip, emb, concepts, styles, order, names)
        row = {"images": name, "concept_accuracy": round(acc["concept_accuracy"], 4), "style_accuracy": round(acc["style_accuracy"], 4),
               "style_confusion": acc["style_confusion"], "seconds": round(time.perf_counter() - t0, 1)}
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
    write_json(Path(args.out), out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
