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
import sys
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
    from tune_emoji import add_dev_args, dev_sweep

    ap = argparse.ArgumentParser()
    add_dev_args(ap, out=str(Path(__file__).parent / "results" / "emoji_embed" / "vector_guidance" / "tune_dev.json"))
    ap.add_argument("--ratio", nargs="+", type=float, default=[1.0, 1.5, 2.0], help="the vector's guidance over the text's (1: as shipped)")
    args = ap.parse_args()
    if any(r < 0 for r in args.ratio):
        raise SystemExit(f"--ratio must be >= 0, got {args.ratio}")

    from wordpaint import TextToImagePipeline

    pipe = TextToImagePipeline.from_pretrained(args.model)
    if not getattr(pipe.model.config, "image_embed_dim", 0) or pipe.embed_prior is None:
        raise SystemExit(f"{args.model} is not an image-vector model with an embedding prior")
    plain = pipe.model.denoise

    def draw(r: float, prompts: list[str]) -> list:
        pipe.model.denoise = VectorGuidance(plain, r)  # an instance attribute: the pipeline's loop calls it
        try:
            return pipe(prompts, seed=0, batch_size=64).images
        finally:
            pipe.model.denoise = plain

    dev_sweep(pipe, args.ratio, draw=draw, row=lambda r: {"vector_ratio": r, "vector_guidance_scale": r * pipe.defaults["guidance_scale"]},
              data=args.data, concepts=args.concepts, out=args.out, meta={"model": args.model})


if __name__ == "__main__":
    main()
