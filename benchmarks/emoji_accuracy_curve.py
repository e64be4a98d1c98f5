"""Concept and style accuracy of each emoji bundle against the training minutes behind it (issue 4).

Issue 4 asks for concept accuracy >= 0.6 and style accuracy >= 0.9 on seen cells from a recipe
of <= 2 h on 2 cores. The bundle got there as a chain of legs; this script puts every bundle's
emoji-suite report (seed 0, judged by the bundled wordpaint-clip ``clip_v3``) on one axis: the
wall minutes of all the training its components had had by then (autoencoder and decoder legs,
guide, prior, UNet legs, expert, restorer; minutes as recorded in the README and training log,
legs 4-6 on a slower machine). Three whole recipes from scratch are drawn apart: the 86-min one of
session 33 (its pipeline was not kept; judged by ``clip_v2``, the judge of its day) and the 2-hour
one of session 53 (``emoji64_embed_2h``: autoencoder 30.5 + image-vector UNet 75.2 + its image
vectors 3.4, which that run read from a cache + prior 5; judged by ``clip_v3``), and the same
recipe with a quarter-size UNet on more steps (``emoji64_embed_2h_small``, session 54).

    python benchmarks/emoji_accuracy_curve.py --out benchmarks/results/emoji_embed/accuracy_curve

Writes ``accuracy_curve.json`` (every point, its report folder and its figures) and
``accuracy_curve.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "results" / "emoji_embed"
# components other than the UNet legs, in minutes: the autoencoder (emoji_ae) and its first four
# decoder legs (22 + 36 + 38 + 26), the noised-clip guide, the embedding prior
BASE = 30.5 + 22 + 36 + 38 + 26 + 17 + 5
# (label, minutes added since the previous point, report folder under results/emoji_embed)
CHAIN = [
    ("UNet legs 1-2", 46.4 + 75.5, "leg2/report_judge_clip_v3"),
    ("leg 3", 37.0, "leg3/report_judge_clip_v3"),
    ("leg 4", 96.9, "leg4/report_judge_clip_v3"),
    ("leg 5", 94.2, "leg5/report_judge_clip_v3"),
    ("leg 6 + noise-robust decoder", 74.9 + 26 + 13.5, "leg6/report_decoder_noise_half"),
    ("leg 7", 52.9, "leg7/report_bundle39"),
    ("leg 8", 81.0, "leg8/report_bundle40"),
    ("leg 9", 77.3, "leg9/report_bundle41"),
    ("leg 10", 76.3, "leg10/report_bundle42"),
    ("leg 11", 73.2, "leg11/report_bundle43"),
    ("leg 12", 76.7, "leg12/report_bundle44"),
    ("leg 13", 78.8, "leg13_lowsigma/report_bundle45"),
    ("leg 14", 57.0, "leg14_twemoji2/report_bundle45"),
    ("leg 15", 54.3, "leg15_twemoji2/report_bundle46"),
    ("leg 16", 46.6, "leg16_twemoji3/report_bundle47"),
    ("leg 17", 47.2, "leg17_twemoji3/report_bundle47"),
    ("leg 18", 46.7, "leg18_twemoji4/report_bundle48"),
    ("leg 19", 46.7, "leg19_twemoji4/report"),
    ("leg 20", 47.0, "leg20_twemoji6/report_bundle49"),
    ("+ low-noise expert (int8)", 19.6, "int8/report_expert02"),
    ("+ restorer (round trips and sampled latents, two legs)", 9.9 + 33.2 + 24.1, "restorer_sampled/leg2/report"),
]
# whole recipes from scratch: (label, minutes, report folder)
RECIPES = [
    ("86-min recipe (clip_v2)", 30.5 + 50 + 5, "scratch_full/report_embed_prior"),  # autoencoder + UNet + prior
    ("2-h recipe (clip_v3)", 30.5 + 75.2 + 3.4 + 5, "recipe_2h/report_seed0"),  # emoji64_embed_2h, session 53
    # emoji64_embed_2h_small, session 54: its run 66.8 min from start to exit, image vectors included
    ("2-h recipe, quarter-size UNet (clip_v3)", 30.5 + 66.8 + 5, "recipe_2h_small/report_seed0"),
]


def figures(folder: Path) -> dict:
    """The seen and held-out accuracies of one report folder's results.json."""
    d = json.loads((folder / "results.json").read_text())
    seen, held = d["figures"]["seen_cells"], d["figures"]["heldout_cells"]
    return {"judge": d["settings"].get("judge"), "seed": d["settings"].get("seed"),
            "seen_concept": seen["concept_accuracy"], "seen_style": seen["style_accuracy"],
            "heldout_concept": held["concept_accuracy"], "heldout_style": held["style_accuracy"],
            "seen_fid": seen["FID (EfficientNet-Lite0)"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for accuracy_curve.json and accuracy_curve.png")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    points, minutes = [], BASE
    for label, added, rel in CHAIN:
        minutes += added
        points.append({"label": label, "minutes": round(minutes, 1), "report": f"benchmarks/results/emoji_embed/{rel}", **figures(ROOT / rel)})
    recipes = [{"label": label, "minutes": round(m, 1), "report": f"benchmarks/results/emoji_embed/{rel}", **figures(ROOT / rel)}
               for label, m, rel in RECIPES]
    first_06 = next((p for p in points if p["seen_concept"] >= 0.6), None)
    first_09 = next((p for p in points if p["seen_style"] >= 0.9), None)
    result = {"base_minutes": BASE, "points": points, "whole_recipes": recipes,
              "first_seen_concept_at_0.6": first_06 and {"label": first_06["label"], "minutes": first_06["minutes"]},
              "first_seen_style_at_0.9": first_09 and {"label": first_09["label"], "minutes": first_09["minutes"]}}
    (out / "accuracy_curve.json").write_text(json.dumps(result, indent=2) + "\n")
    for p in recipes + points:
        print(f"{p['minutes']:7.1f} min  seen concept {p['seen_concept']:.3f} style {p['seen_style']:.3f}  "
              f"held-out concept {p['heldout_concept']:.3f}  FID {p['seen_fid']:.1f}  {p['label']}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    xs = [p["minutes"] for p in points]
    for key, name, style in (("seen_concept", "seen concept", "o-"), ("seen_style", "seen style", "s-"),
                             ("heldout_concept", "held-out concept", "^--")):
        ax.plot(xs, [p[key] for p in points], style, label=name, markersize=4)
    for r, marker in zip(recipes, ("kx", "k+", "k1")):
        ax.plot([r["minutes"]] * 2, [r["seen_concept"], r["seen_style"]], marker, markersize=8, label=f"{r['label']}: concept, style")
    ax.axhline(0.6, color="tab:blue", lw=0.8, ls=":")
    ax.axhline(0.9, color="tab:orange", lw=0.8, ls=":")
    ax.axvline(120, color="red", lw=1, ls="--", label="2 h target")
    ax.set_xlabel("training wall minutes of all the bundle's components (2 cores)")
    ax.set_ylabel("wordpaint-clip zero-shot accuracy (seed 0)")
    ax.set_title("Emoji bundles: accuracy against training time (targets dotted)")
    ax.set_ylim(0, 1)
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "accuracy_curve.png", dpi=120)
    print(f"wrote {out / 'accuracy_curve.json'} and {out / 'accuracy_curve.png'}")


if __name__ == "__main__":
    main()
