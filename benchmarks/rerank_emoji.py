"""Best-of-K for the emoji model on the dev set of ``tune_emoji.py``: draw K pictures per cell
(different seeds) and keep the one the pipeline's guide (the noised wordpaint-clip on latents, a
network apart from the judge's EfficientNet-Lite0 tower) scores highest for the prompt at its
lowest noise level, as DALL-E reranked its samples with CLIP. Judged by wordpaint-clip zero-shot
and by the nearest real picture in pixels; best-of-1 is the first draw alone.

    python benchmarks/rerank_emoji.py --model emoji --data data/emoji --k 4 --out benchmarks/results/emoji_embed/rerank_dev.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--concepts", type=int, default=100)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch

    from tune_emoji import dev_concepts, judge_dev
    from wordpaint import TextToImagePipeline
    from wordpaint.data.emoji import EMOJI_STYLES, short_caption
    from wordpaint.data.imagefolder import load_imagefolder
    from wordpaint.models.clip import WordpaintClip

    pipe = TextToImagePipeline.from_pretrained(args.model)
    if pipe.guide is None or pipe.vae is None:
        raise SystemExit(f"{args.model}: best-of-K here needs a latent pipeline with a guide")
    clip = WordpaintClip.from_pretrained()
    names = dev_concepts(args.data)
    vocab = list(names)
    cells = [(c, s) for c in vocab[: args.concepts] for s in EMOJI_STYLES]
    prompts = [short_caption(names[c], s) for c, s in cells]
    found, real, _ = load_imagefolder(args.data, size=64, splits=("train",), kinds=("emoji",),
                                      keep=lambda r: (r.get("concept"), r.get("style")) in set(cells))
    by_cell = dict(zip([(r["concept"], r["style"]) for r in found], real))
    refs = [by_cell[c] for c in cells]

    # the latents the pipeline decodes, caught on their way to the decoder (batch order = image order)
    caught: list[torch.Tensor] = []
    decode = pipe.vae.decode
    pipe.vae.decode = lambda z: (caught.append(z.detach().cpu()), decode(z))[1]
    draws, scores, t0 = [], [], time.perf_counter()
    with torch.no_grad():
        text = pipe.guide.embed_text_features(pipe.text_encoder.encode(prompts).pooled)  # (N, E)
        sigma = torch.tensor(pipe.guide.config.sigma_min)
        for k in range(args.k):
            caught.clear()
            draws.append(pipe(prompts, seed=100_000 * k, batch_size=64).images)
            z = torch.cat(caught)
            scores.append((pipe.guide.embed_noisy(z, sigma) * text).sum(-1))  # (N,) cosine: both are unit vectors
    secs = time.perf_counter() - t0
    scores = torch.stack(scores)  # (K, N)

    rows = []
    for k in sorted({1, 2, args.k}):
        best = scores[:k].argmax(0).tolist()
        row = {"best_of": k, **judge_dev(clip, [draws[b][i] for i, b in enumerate(best)], cells, vocab, names, refs)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "dev": f"{args.concepts} of 240 dev concepts (seed 7) x {len(EMOJI_STYLES)} styles",
                                          "k": args.k, "seconds_per_draw": round(secs / (args.k * len(prompts)), 4), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
