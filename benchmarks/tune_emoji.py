"""Choose the emoji model's sampling defaults on a *dev* concept set, not the evaluation one.

    python benchmarks/tune_emoji.py --data data/emoji [--settings dpmpp_2m:10:3 dpmpp_2m:10:6 ...]

Dev set: 240 emoji concepts drawn with seed 7 from the training split, excluding the 240
evaluation concepts of ``emoji_heldout.json`` and every concept with a held-out cell, each in all
three styles (these cells are training images, like the report's "seen" cells). The first
``--concepts`` of them are drawn once per style and setting ("NAME in STYLE style", seed 0) and
judged as the report judges: wordpaint-clip zero-shot, concept 240-way over the dev vocabulary,
style 3-way. Writes JSON with one row per ``sampler:steps:guidance`` setting.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path


def dev_concepts(data: str, *, n: int = 240, seed: int = 7) -> dict[str, str]:
    """{concept: name} of ``n`` training concepts outside the evaluation and held-out lists."""
    from wordpaint.data.emoji import EMOJI_STYLES, HELDOUT_FILE

    spec = json.loads(HELDOUT_FILE.read_text())
    excluded = {v["concept"] for v in spec["eval_concepts"]}
    rows = [json.loads(line) for line in (Path(data) / "metadata.jsonl").read_text().splitlines() if line.strip()]
    excluded |= {r["concept"] for r in rows if r.get("split") == "heldout"}
    styles: dict[str, set[str]] = {}
    names: dict[str, str] = {}
    for r in rows:
        if r.get("kind") == "emoji" and r.get("split") == "train" and r.get("concept") not in excluded:
            styles.setdefault(r["concept"], set()).add(r["style"])
            names[r["concept"]] = r["name"]
    pool = sorted(c for c, s in styles.items() if set(EMOJI_STYLES) <= s)
    return {c: names[c] for c in random.Random(seed).sample(pool, n)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--concepts", type=int, default=100, help="dev concepts drawn (x 3 styles); the vocabulary stays 240")
    ap.add_argument("--settings", nargs="+", default=["dpmpp_2m:10:3"],
                    help="sampler:steps:guidance[:clip_guidance] ... (clip guidance needs --guide)")
    ap.add_argument("--guide", default=None, help="a noised wordpaint-clip folder to attach as the pipeline's guide")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tune_emoji.json"))
    args = ap.parse_args()

    from wordpaint import TextToImagePipeline
    from wordpaint.data.emoji import EMOJI_STYLES, short_caption
    from wordpaint.models.clip import WordpaintClip
    from wordpaint.training.clip import concept_style_accuracy

    pipe = TextToImagePipeline.from_pretrained(args.model)
    if args.guide:
        from wordpaint.pipelines.text_to_image import load_model

        pipe = pipe.with_component("guide", load_model(args.guide))
    clip = WordpaintClip.from_pretrained()
    names = dev_concepts(args.data)
    vocab = list(names)
    cells = [(c, s) for c in vocab[: args.concepts] for s in EMOJI_STYLES]
    prompts = [short_caption(names[c], s) for c, s in cells]
    rows = []
    for spec in args.settings:
        sampler, steps, g, *rest = spec.split(":")
        cg = float(rest[0]) if rest else 0.0
        t0 = time.perf_counter()
        res = pipe(prompts, seed=0, sampler=sampler, num_inference_steps=int(steps), guidance_scale=float(g), batch_size=64,
                   clip_guidance_scale=cg, show_progress=False)
        secs = time.perf_counter() - t0
        emb = clip.model.embed_image_features(clip.image_features(res.images, show_progress=False))
        acc = concept_style_accuracy(clip, emb, [c for c, _ in cells], [s for _, s in cells], vocab, names)
        score = float(100 * (emb * clip.embed_texts(prompts)).sum(-1).clamp(min=0).mean())
        row = {"sampler": sampler, "num_inference_steps": int(steps), "guidance_scale": float(g), "clip_guidance_scale": cg,
               "concept_accuracy": round(acc["concept_accuracy"], 4), "style_accuracy": round(acc["style_accuracy"], 4),
               "clip_score": round(score, 2), "seconds_per_image": round(secs / len(prompts), 4)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "guide": args.guide, "dev": f"{args.concepts} of 240 dev concepts (seed 7) x {len(EMOJI_STYLES)} styles",
                                          "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
