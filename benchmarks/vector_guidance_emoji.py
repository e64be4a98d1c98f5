"""Guidance toward the image vector apart from the text, measured on the dev cells before the
pipeline grows an option for it.

    python benchmarks/vector_guidance_emoji.py --ratio 1 1.5 2 --out FILE

The image-vector UNet (unCLIP's decoder) reads the caption and the embedding prior's vector, and
was trained to draw without the vector alone too (``image_embed_drop_prob``), so its estimate
splits three ways: D_none (neither), D_text (caption, no vector), D_full (both). The pipeline's
classifier-free guidance is D_none + g (D_full - D_none); this script draws with
D_none + g (D_text - D_none) + r g (D_full - D_text): the text's share at the usual scale g, the
vector's at r times it (r = 1: the pipeline as shipped; Kandinsky and unCLIP guide both together).
The vector carries each cell's style (what EfficientNet-Lite0 sees of the picture), so r > 1 asks
whether pushing harder along it turns the Twemoji pictures that come out Noto-shaded. One more
UNet pass per guided step. Cells, seed and judge are ``tune_emoji.py``'s (100 dev concepts x 3
styles, seed 0, wordpaint-clip zero-shot); everything else is the pipeline's defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))


class VectorGuidance:
    """Wraps ``denoise(x, sigma, states, mask, layout, image_embed)``: on a guided call (the batch's
    first half with the vector, its second half without: (2B, C, h, w)) the first half's estimate
    becomes D_text + ratio (D_full - D_text), with D_text one more pass without the vector; any
    other call (the unguided last step) passes through."""

    def __init__(self, denoise, ratio: float):
        self.plain, self.ratio = denoise, ratio

    def __call__(self, x, sigma, states, mask, layout=None, image_embed=None):
        out = self.plain(x, sigma, states, mask, layout, image_embed)
        if self.ratio == 1 or image_embed is None or x.shape[0] % 2:
            return out
        b = x.shape[0] // 2
        if not bool((image_embed[b:] == 0).all()) or bool((image_embed[:b] == 0).all(dim=1).any()):
            return out  # not the (with vector, without) pair of a guided step
        d_text = self.plain(x[:b], sigma, states[:b], mask[:b], None if layout is None else layout[:b], image_embed[b:])
        return torch.cat([d_text + self.ratio * (out[:b] - d_text), out[b:]])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="emoji", help="the pipeline (default: the bundled emoji model)")
    ap.add_argument("--ratio", nargs="+", type=float, default=[1.0, 1.5, 2.0], help="the vector's guidance over the text's (1: as shipped)")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--concepts", type=int, default=100, help="dev concepts drawn (x 3 styles); the vocabulary stays 240")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "emoji_embed" / "vector_guidance" / "tune_dev.json"))
    args = ap.parse_args()
    if any(r < 0 for r in args.ratio):
        raise SystemExit(f"--ratio must be >= 0, got {args.ratio}")

    from tune_emoji import dev_set, judge_dev

    from wordpaint import TextToImagePipeline
    from wordpaint.models.clip import WordpaintClip

    pipe = TextToImagePipeline.from_pretrained(args.model)
    if not getattr(pipe.model.config, "image_embed_dim", 0) or pipe.embed_prior is None:
        raise SystemExit(f"{args.model} is not an image-vector model with an embedding prior")
    plain = pipe.model.denoise
    clip = WordpaintClip.from_pretrained()
    names, vocab, cells, prompts, by_cell = dev_set(args.data, args.concepts)
    real = [by_cell[c] for c in cells]
    rows = []
    for r in args.ratio:
        pipe.model.denoise = VectorGuidance(plain, r)  # an instance attribute: the pipeline's loop calls it
        t0 = time.perf_counter()
        try:
            ims = pipe(prompts, seed=0, batch_size=64).images
        finally:
            pipe.model.denoise = plain
        row = {"vector_ratio": r, "vector_guidance_scale": r * pipe.defaults["guidance_scale"],
               **judge_dev(clip, ims, cells, vocab, names, real), "seconds_per_image": round((time.perf_counter() - t0) / len(prompts), 4)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "judge": "bundled wordpaint-clip", "defaults": pipe.defaults,
                                          "dev": f"{args.concepts} of 240 dev concepts (seed 7) x 3 styles", "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
