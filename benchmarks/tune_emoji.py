"""Choose the emoji model's sampling defaults on a *dev* concept set, not the evaluation one.

    python benchmarks/tune_emoji.py --data data/emoji [--settings dpmpp_2m:10:3 dpmpp_2m:10:6 ...]
    python benchmarks/tune_emoji.py --data data/emoji --prior runs/prior/pipeline --settings dpmpp_2m:10:3:3:off dpmpp_2m:10:3:3:0.5

Dev set: 240 emoji concepts drawn with seed 7 from the training split, excluding the 240
evaluation concepts of ``emoji_heldout.json`` and every concept with a held-out cell, each in all
three styles (these cells are training images, like the report's "seen" cells). The first
``--concepts`` of them are drawn once per style and setting ("NAME in STYLE style", seed 0) and
judged as the report judges: wordpaint-clip zero-shot, concept 240-way over the dev vocabulary,
style 3-way. Writes JSON with one row per ``sampler:steps:guidance[:clip_guidance[:prior_strength]]``
setting (prior_strength ``off``: from noise; 0: the prior's draft itself, no diffusion step).
``--from-real 0.1 0.3 ...`` starts every cell from its own real picture (img2img at each strength)
instead of noise: the noise level at which a picture's style stops surviving the model's chain.
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


def dev_set(data: str, concepts: int) -> tuple[dict[str, str], list[str], list[tuple[str, str]], list[str], dict]:
    """The dev cells every dev benchmark draws and judges: ({concept: name} of all 240, that
    vocabulary, the first ``concepts`` concepts x the three styles as (concept, style) cells, their
    prompts "NAME in STYLE style", and {cell: its real training picture})."""
    from wordpaint.data.emoji import EMOJI_STYLES, short_caption
    from wordpaint.data.imagefolder import load_imagefolder

    names = dev_concepts(data)
    vocab = list(names)
    cells = [(c, s) for c in vocab[:concepts] for s in EMOJI_STYLES]
    want = set(cells)
    found, images, _ = load_imagefolder(data, size=64, splits=("train",), kinds=("emoji",),
                                        keep=lambda r: (r.get("concept"), r.get("style")) in want)
    by_cell = dict(zip([(r["concept"], r["style"]) for r in found], images))
    return names, vocab, cells, [short_caption(names[c], s) for c, s in cells], by_cell


def judge_dev(clip, images, cells: list[tuple[str, str]], vocab: list[str], names: dict[str, str], real: list) -> dict:
    """The dev set's figures for one image per (concept, style) cell: wordpaint-clip zero-shot concept
    (top-1, top-5 over ``vocab``) and style accuracy, CLIP-score, and how often an image's nearest
    real dev picture (``real``, in cell order) in pixels is of its own concept, and of its own style:
    a judge that shares nothing with EfficientNet-Lite0 (wordpaint-clip's tower), chance 1 / the
    concepts drawn; and the style judge's confusion counts."""
    import numpy as np

    from wordpaint.data.emoji import short_caption
    from wordpaint.eval.metrics import pixel_nearest
    from wordpaint.training.clip import concept_style_accuracy

    emb = clip.model.embed_image_features(clip.image_features(images, show_progress=False))
    acc = concept_style_accuracy(clip, emb, [c for c, _ in cells], [s for _, s in cells], vocab, names)
    score = float(100 * (emb * clip.embed_texts([short_caption(names[c], s) for c, s in cells])).sum(-1).clamp(min=0).mean())
    # per image: is its nearest real dev picture of its own concept, of its own style
    hits = [(cells[j][0] == c, cells[j][1] == s) for j, (c, s) in zip(pixel_nearest(images, real).tolist(), cells)]
    nn_concept, nn_style = (round(float(v), 4) for v in np.mean(hits, axis=0))
    return {"concept_accuracy": round(acc["concept_accuracy"], 4), "concept_top5_accuracy": round(acc["concept_top5_accuracy"], 4),
            "style_accuracy": round(acc["style_accuracy"], 4), "clip_score": round(score, 2),
            "pixel_nn_concept_accuracy": nn_concept, "pixel_nn_style_accuracy": nn_style,
            "style_confusion": acc["style_confusion"]}


def add_dev_args(ap: argparse.ArgumentParser, *, out: str) -> None:
    """The options every dev-cell sweep shares: --model, --data, --concepts, --out (default ``out``)."""
    ap.add_argument("--model", default="emoji", help="the pipeline (default: the bundled emoji model)")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--concepts", type=int, default=100, help="dev concepts drawn (x 3 styles); the vocabulary stays 240")
    ap.add_argument("--out", default=out)


def dev_sweep(pipe, values: list, *, draw, row, data: str, concepts: int, out: str, meta: dict) -> list[dict]:
    """Draw the dev cells once per value (``draw(value, prompts)`` -> one PIL image per prompt, seed 0),
    judge them (:func:`judge_dev`), print each row (``row(value)`` first, then the figures and seconds
    per image) as JSON, and write all rows with ``meta`` and the pipeline's defaults to ``out``."""
    from wordpaint.models.clip import WordpaintClip

    clip = WordpaintClip.from_pretrained()
    names, vocab, cells, prompts, by_cell = dev_set(data, concepts)
    real = [by_cell[c] for c in cells]
    rows = []
    for value in values:
        t0 = time.perf_counter()
        ims = draw(value, prompts)
        rows.append({**row(value), **judge_dev(clip, ims, cells, vocab, names, real),
                     "seconds_per_image": round((time.perf_counter() - t0) / len(prompts), 4)})
        print(json.dumps(rows[-1]), flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({**meta, "judge": "bundled wordpaint-clip", "defaults": pipe.defaults,
                                     "dev": f"{concepts} of 240 dev concepts (seed 7) x 3 styles", "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--concepts", type=int, default=100, help="dev concepts drawn (x 3 styles); the vocabulary stays 240")
    ap.add_argument("--settings", nargs="+", default=["dpmpp_2m:10:3"],
                    help="sampler:steps:guidance[:clip_guidance[:prior_strength|off]] ... (clip guidance needs a guide, "
                    "prior strength a prior)")
    ap.add_argument("--guide", default=None, help="a noised wordpaint-clip folder to attach as the pipeline's guide")
    ap.add_argument("--prior", default=None, help="a latent prior folder to attach as the pipeline's prior")
    ap.add_argument("--autoguide", default=None, help="a weaker diffusion model folder (or pipeline folder) to attach as "
                    "the pipeline's autoguide")
    ap.add_argument("--autoguidance", nargs="+", type=float, default=None,
                    help="autoguidance scales to try with every setting (needs an autoguide; default: the pipeline's)")
    ap.add_argument("--guidance-interval", nargs="+", default=None, metavar="LO,HI|none",
                    help="guidance intervals (sigma ranges) to try with every setting; none guides every step (default: the pipeline's)")
    ap.add_argument("--sigma-schedule", nargs="+", default=None, choices=("trailing", "karras"),
                    help="sigma schedules to try with every setting (default: the pipeline's)")
    ap.add_argument("--embed-prior", default=None, help="an embedding prior folder to attach (an image-embedding model)")
    ap.add_argument("--image-embed", nargs="+", default=["prior"], choices=("prior", "none", "oracle"),
                    help="image-embedding models: the vector each setting is drawn with: the embedding prior's prediction, "
                    "none (text alone), or oracle (the dev cell's own picture's vector: an upper bound, not a generator)")
    ap.add_argument("--references", action="store_true",
                    help="also judge the real images of the dev cells and their autoencoder round trips (the ceiling of "
                    "anything this autoencoder decodes)")
    ap.add_argument("--reference-style", action="store_true",
                    help="a reference model: show each dev cell its concept's training image in the next style (never the "
                    "cell's own image), as `eval report --reference other-style` does")
    ap.add_argument("--negative-styles", default=None, metavar="STYLE=OTHER,...",
                    help="each cell's negative prompt is its concept in another style, e.g. noto=twemoji,twemoji=noto,"
                    "openmoji=noto (styles not named get none); every setting is run with and without it")
    ap.add_argument("--negative-without-concept", action="store_true",
                    help="--negative-styles: the negative prompt names the other style only ('noto style'), not the concept")
    ap.add_argument("--clip-contrast-styles", action="store_true",
                    help="also run every setting with clip_guidance_contrast = the cell's concept in the other two styles "
                    "(the guide's classifier guidance over the three styles of the concept; needs clip guidance > 0)")
    ap.add_argument("--from-real", nargs="+", type=float, default=None, metavar="STRENGTH",
                    help="img2img instead of drawing from noise: each dev cell starts from its own real picture noised to "
                    "each of these strengths (0 < s <= 1; 1 keeps nothing), so a row says how much of the picture's style "
                    "survives the model's last s of the chain: where along the noise levels a style is lost")
    ap.add_argument("--end-sigma", nargs="+", type=float, default=None, metavar="SIGMA",
                    help="end each chain at this noise level instead of 0 and decode the still-noisy latent (the bundled "
                    "decoder was trained on noised latents): the schedule keeps its sigmas above SIGMA, then steps to SIGMA; "
                    "0 is the usual chain (default: 0 only)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tune_emoji.json"))
    ap.add_argument("--clip", default=None, help="the judge: a wordpaint-clip folder (default: the bundled one)")
    args = ap.parse_args()

    from wordpaint import TextToImagePipeline
    from wordpaint.data.emoji import EMOJI_STYLES, reference_cells, short_caption
    from wordpaint.models.clip import WordpaintClip

    pipe = TextToImagePipeline.from_pretrained(args.model)
    from wordpaint.pipelines.text_to_image import component_folder, load_model

    for name in ("guide", "prior", "embed_prior", "autoguide"):
        if getattr(args, name):  # a model folder, or a pipeline folder holding it (an autoguide: that folder's UNet)
            pipe = pipe.with_component(name, load_model(component_folder(getattr(args, name), name)))
    embeds = bool(getattr(pipe.model.config, "image_embed_dim", 0))
    clip = WordpaintClip.from_pretrained(args.clip)
    names, vocab, cells, prompts, by_cell = dev_set(args.data, args.concepts)
    negatives = [None]
    if args.negative_styles:
        other = dict(pair.split("=") for pair in args.negative_styles.split(","))
        if not set(other) | set(other.values()) <= set(EMOJI_STYLES):
            raise SystemExit(f"--negative-styles: styles must be among {EMOJI_STYLES}, got {args.negative_styles!r}")
        neg_text = (lambda c, st: f"{st} style") if args.negative_without_concept else (lambda c, st: short_caption(names[c], st))
        negatives.append([neg_text(c, other[s]) if s in other else "" for c, s in cells])
    # the guide's contrast texts: the folder's default; or none (plain clip guidance), then each
    # cell's concept in the other styles
    contrasts = ["default"] if not args.clip_contrast_styles else \
        [None, [[short_caption(names[c], o) for o in EMOJI_STYLES if o != s] for c, s in cells]]
    rows = []

    def judge(images) -> dict:
        return judge_dev(clip, images, cells, vocab, names, [by_cell[c] for c in cells])

    import torch

    from wordpaint.data.imagefolder import model_inputs
    from wordpaint.images import to_pil

    x = model_inputs([by_cell[c] for c in cells])  # (N, 3, 64, 64) in [-1, 1], in cell order
    # dev concepts have all three styles: every cell gets its concept in the next style
    extra = {"reference": to_pil(model_inputs([by_cell[p] for p in reference_cells(by_cell, cells)]))} if args.reference_style else {}
    if args.references:
        with torch.no_grad():
            recon = torch.cat([pipe.vae.reconstruct(x[i : i + 128]) for i in range(0, len(x), 128)])
        for name, batch in (("real images", x), ("autoencoder round trip", recon)):
            row = {"reference": name, **judge(to_pil(batch))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    vectors = {"prior": "prior", "none": None}  # the pipeline's image_embed for each --image-embed mode
    if embeds and "oracle" in args.image_embed:
        from wordpaint.eval.metrics import extract

        vectors["oracle"] = extract([by_cell[c] for c in cells])[0].float()  # (N, 1280): each cell's own picture
    autoguidance = args.autoguidance or ["default"]
    from wordpaint.cli.options import parse_interval  # same parser and messages as generate / eval report
    intervals = ["default"] if not args.guidance_interval else [parse_interval(v) for v in args.guidance_interval]
    schedules = args.sigma_schedule or [None]
    real = to_pil(x) if args.from_real else None  # --from-real: each cell's own picture (PIL) starts its chain
    full_sigmas = pipe.model.sigmas  # the model's own schedule; --end-sigma wraps it

    def ending_at(end: float):
        """The model's sigmas cut at ``end``: (k+1,) those above it, then ``end`` (0: unchanged)."""
        def sigmas(*a, **kw):
            s = full_sigmas(*a, **kw)
            return s if end <= 0 else torch.cat([s[s > end], s.new_tensor([end])])
        return sigmas

    for spec, mode, negative, ag, interval, schedule, contrast, strength, end in [
            (spec, mode, neg, ag, iv, sch, con, st, e) for spec in args.settings for mode in (args.image_embed if embeds else ["prior"])
            for neg in negatives for ag in autoguidance for iv in intervals for sch in schedules for con in contrasts
            for st in (args.from_real or [None]) for e in (args.end_sigma or [0.0])]:
        pipe.model.sigmas = ending_at(end)
        sampler, steps, g, *rest = spec.split(":")
        cg = float(rest[0]) if rest else 0.0
        prior = rest[1] if len(rest) > 1 else "off"
        if contrast not in (None, "default") and not cg:
            continue  # contrast texts shape clip guidance: nothing to run without it
        t0 = time.perf_counter()
        images = pipe(prompts, seed=0, sampler=sampler, num_inference_steps=int(steps), guidance_scale=float(g), batch_size=64,
                      clip_guidance_scale=cg, prior_strength=None if prior == "off" else float(prior), show_progress=False,
                      negative_prompt=negative, clip_guidance_contrast=contrast, autoguidance_scale=ag, guidance_interval=interval, sigma_schedule=schedule,
                      **({"image_embed": vectors[mode]} if embeds else {}),
                      **({"image": real, "strength": strength} if strength is not None else {}), **extra).images
        secs = time.perf_counter() - t0
        row = {"sampler": sampler, "num_inference_steps": int(steps), "guidance_scale": float(g), "clip_guidance_scale": cg,
               "prior_strength": prior, "autoguidance_scale": pipe.defaults["autoguidance_scale"] if ag == "default" else ag,
               "guidance_interval": pipe.defaults["guidance_interval"] if interval == "default" else interval,
               "sigma_schedule": schedule or pipe.defaults["sigma_schedule"],
               "reference": "other-style" if args.reference_style else None,
               **({"from_real_strength": strength} if strength is not None else {}),
               **({"end_sigma": end} if args.end_sigma else {}),
               **({"negative_styles": args.negative_styles if negative else None,
                   "negative_without_concept": bool(negative) and args.negative_without_concept} if args.negative_styles else {}),
               "clip_guidance_contrast": (pipe.defaults["clip_contrast_styles"] if contrast == "default" else
                                          "other styles" if contrast else None) if cg else None,
               **({"image_embed": mode} if embeds else {}), **judge(images), "seconds_per_image": round(secs / len(prompts), 4)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "guide": args.guide, "prior": args.prior, "embed_prior": args.embed_prior,
                                          "autoguide": args.autoguide, "judge": args.clip or "bundled wordpaint-clip", "dev": f"{args.concepts} of 240 dev concepts (seed 7) x {len(EMOJI_STYLES)} styles",
                                          "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
