"""Where the bundled emoji model's Twemoji pictures are taken for Noto, by emoji category: is the
loss spread over every kind of picture, or held in a few categories, and does it fall where even
the autoencoder's round trip of the real picture is taken for Noto?

    python benchmarks/emoji_style_by_category.py --model emoji --data data/emoji --out benchmarks/results/emoji64/style_by_category.json

Draws the emoji suite's seen cells exactly as ``wordpaint eval report --suite emoji`` does (same
cells, order, seed and samples per cell, so its totals are the report's), then judges, for every
Twemoji cell, its real picture, the autoencoder's round trip of it (through the restorer too where the
pipeline restores by default) and its generated pictures
(wordpaint-clip zero-shot, 3-way style with the cell's concept, as the report judges), and counts
the pictures taken for Noto per category; last, how many of the generated ones taken for Noto are
of cells whose round trip is taken for Noto too.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--samples-per-cell", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "emoji64" / "style_by_category.json"))
    args = ap.parse_args()

    import torch

    from wordpaint import TextToImagePipeline
    from wordpaint.data.emoji import EMOJI_STYLES, HELDOUT_FILE, short_caption
    from wordpaint.data.imagefolder import load_imagefolder, model_inputs
    from wordpaint.images import to_pil
    from wordpaint.io import write_json
    from wordpaint.models.clip import WordpaintClip
    from wordpaint.training.clip import concept_style_accuracy

    t0 = time.perf_counter()
    names = {v["concept"]: v["name"] for v in json.loads(HELDOUT_FILE.read_text())["eval_concepts"]}
    order = list(names)
    # the report's load: both splits, its seen cells are the train rows, in this order
    rows, images, _ = load_imagefolder(args.data, splits=("train", "heldout"),
                                       keep=lambda r: r.get("concept") in names and r.get("style") in EMOJI_STYLES)
    seen = [(r, im) for r, im in zip(rows, images) if r["split"] != "heldout"]
    pipe = TextToImagePipeline.from_pretrained(args.model)
    k = args.samples_per_cell
    res = pipe([short_caption(names[r["concept"]], r["style"]) for r, _ in seen], num_images_per_prompt=k, seed=args.seed,
               batch_size=64, show_progress=True, image_embed="prior")
    tw = [i for i, (r, _) in enumerate(seen) if r["style"] == "twemoji"]
    concepts = [seen[i][0]["concept"] for i in tw]
    x = model_inputs([seen[i][1] for i in tw])  # (N, 3, 64, 64) in [-1, 1]
    with torch.no_grad():
        recon = torch.cat([pipe.vae.reconstruct(x[j : j + 128]) for j in range(0, len(x), 128)])
        if pipe.defaults["restore"]:  # the round trip as the pipeline delivers it: restored, given the cell's prompt
            recon = pipe.restorer.restore(recon, pipe.text_encoder.encode([short_caption(names[c], "twemoji") for c in concepts]).pooled)
        recon = to_pil(recon)
    clip = WordpaintClip.from_pretrained(None)

    def judged(pictures: list, cell_concepts: list[str]) -> list[str]:
        emb = clip.model.embed_image_features(clip.image_features(pictures, show_progress=False))
        return concept_style_accuracy(clip, emb, cell_concepts, ["twemoji"] * len(cell_concepts), order, names,
                                      per_image=True)["judged_styles"]

    real_j = judged(to_pil(x), concepts)
    recon_j = judged(recon, concepts)
    gen_j = judged([res.images[i * k + j] for i in tw for j in range(k)], [c for c in concepts for _ in range(k)])
    per_cell = [gen_j[n * k : (n + 1) * k].count("noto") for n in range(len(tw))]  # generated pictures taken for Noto, per cell
    categories = Counter(seen[i][0]["category"] for i in tw)
    table = []
    for cat, n in categories.most_common():
        idx = [n_ for n_, i in enumerate(tw) if seen[i][0]["category"] == cat]
        table.append({"category": cat, "cells": n, "real_taken_for_noto": sum(real_j[j] == "noto" for j in idx),
                      "round_trip_taken_for_noto": sum(recon_j[j] == "noto" for j in idx),
                      "generated_taken_for_noto": sum(per_cell[j] for j in idx), "generated": n * k})
    rt_noto = [recon_j[j] == "noto" for j in range(len(tw))]
    out = {"model": args.model, "data": args.data, "seed": args.seed, "samples_per_cell": k, "twemoji_cells": len(tw),
           "restore": bool(pipe.defaults["restore"]),
           "judge": "bundled wordpaint-clip", "by_category": table,
           "totals": {"real_taken_for_noto": real_j.count("noto"), "round_trip_taken_for_noto": sum(rt_noto),
                      "generated_taken_for_noto": sum(per_cell), "generated": len(gen_j)},
           "generated_taken_for_noto_where_the_round_trip_is_too": sum(c for c, r in zip(per_cell, rt_noto) if r),
           "generated_on_cells_whose_round_trip_is_taken_for_noto": k * sum(rt_noto),
           "cells_with_every_picture_taken_for_noto": sorted(names[concepts[j]] for j, c in enumerate(per_cell) if c == k),
           "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{'category':<20} cells  real  round trip  generated (taken for Noto)")
    for row in table:
        print(f"{row['category']:<20} {row['cells']:>5} {row['real_taken_for_noto']:>5} {row['round_trip_taken_for_noto']:>11} "
              f"{row['generated_taken_for_noto']:>6} of {row['generated']}")
    t = out["totals"]
    print(f"{'all':<20} {len(tw):>5} {t['real_taken_for_noto']:>5} {t['round_trip_taken_for_noto']:>11} "
          f"{t['generated_taken_for_noto']:>6} of {t['generated']}")
    print(f"generated pictures taken for Noto on cells whose round trip is taken for Noto too: "
          f"{out['generated_taken_for_noto_where_the_round_trip_is_too']} of {out['generated_on_cells_whose_round_trip_is_taken_for_noto']}")
    write_json(Path(args.out), out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
