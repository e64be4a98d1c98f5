"""FID vs wall time of the emoji latent model's recipe (issue 4): reads the run folders of the
autoencoder (``emoji_ae``) and the UNet (``emoji64``), writes a JSON and a PNG.

The x axis is training wall time on the machine that ran the recipe, the autoencoder's time
first; FID (EfficientNet-Lite0 features) is the quick figure the training loop logs (300 images
generated from the short prompts of 300 fixed training images, against those images; few
samples bias FID upwards, so compare points of the curve, not other papers' numbers).

    python benchmarks/emoji_curve.py --ae runs/emoji_ae --unet runs/emoji64 --out benchmarks/results/emoji64

A continuation leg (``--leg runs/emoji64_leg2``, repeatable) is drawn after the UNet, its wall time
added to the recipe's; ``--base curve.json`` starts from an earlier output of this script instead of
the two first run folders (which need not be kept); with ``--unet`` it supplies only the
autoencoder's part, for another UNet trained on the same autoencoder:

    python benchmarks/emoji_curve.py --base benchmarks/results/emoji64/curve.json --leg runs/emoji64_leg2 --out benchmarks/results/emoji64

A run stopped and resumed (``--time-limit``, SIGTERM, ``--resume``) counts only its training
segments: the trainer logs ``{"started": ...}`` at each start, and the time from a segment's last
record to the next start is left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def training_clock(run: str, recs: list[dict]) -> Callable[[float], float]:
    """Seconds a run had trained at wall time ``t``. Runs logged with ``{"started": ...}`` records
    count from the first start and leave out each pause (a segment's last record to the next
    start); older runs start at their first loss record minus the time its earlier steps took."""
    starts = [i for i, r in enumerate(recs) if "started" in r]
    if not starts:
        first = next(r for r in recs if "loss" in r)
        batch = json.loads((Path(run) / "recipe.json").read_text())["batch_size"]
        t0 = first["time"] - first["step"] * batch / first["images_per_s"]
        return lambda t: t - t0
    t0 = recs[starts[0]]["time"]
    pauses = [(recs[i]["time"], recs[i]["time"] - recs[i - 1]["time"]) for i in starts[1:]]  # (resumed at, seconds paused)
    return lambda t: t - t0 - sum(gap for at, gap in pauses if at <= t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ae", help="autoencoder run folder")
    ap.add_argument("--unet", help="latent UNet run folder")
    ap.add_argument("--base", help="an earlier curve.json to extend (instead of --ae/--unet)")
    ap.add_argument("--leg", action="append", default=[], help="a continuation run folder of the UNet (repeatable, in order)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.ae and not args.unet:
        ap.error("--ae needs --unet (the UNet trained on that autoencoder)")
    if not (args.ae or args.base):
        ap.error("give --ae and --unet, or --base (with --unet: only the autoencoder's part is taken from it)")
    from wordpaint.io import atomic_path, write_json

    if args.base and not args.unet:
        doc = json.loads(Path(args.base).read_text())
    else:
        if args.ae:
            ae = read_metrics(Path(args.ae))
            ca = training_clock(args.ae, ae)
            ae_minutes = ca(ae[-1]["time"]) / 60
            psnr = [{"step": r["step"], "minutes": ca(r["time"]) / 60, **r["eval"]} for r in ae if "eval" in r]
        else:  # another UNet on the same autoencoder: its part of the curve comes from --base
            base = json.loads(Path(args.base).read_text())
            ae_minutes, psnr = base["autoencoder_minutes"], base["autoencoder_psnr"]
        unet = read_metrics(Path(args.unet))
        cu = training_clock(args.unet, unet)
        unet_minutes = cu(unet[-1]["time"]) / 60
        fid = [{"step": r["step"], "minutes": ae_minutes + cu(r["time"]) / 60, **r["eval"]} for r in unet if "eval" in r]
        doc = {"autoencoder_minutes": ae_minutes, "unet_minutes": unet_minutes, "total_minutes": ae_minutes + unet_minutes,
               "autoencoder_psnr": psnr, "fid_curve": fid, "legs": [],
               "note": "FID (EfficientNet-Lite0 features), 300 generated vs 300 real training images of the same prompts, 10 dpmpp_2m steps, guidance 3"}
    for leg in args.leg:
        recs = read_metrics(Path(leg))
        cl = training_clock(leg, recs)
        start, name = doc["total_minutes"], Path(leg).name
        if any(done["run"] == name for done in doc.get("legs", [])):
            ap.error(f"{args.base} already holds the leg {name}")
        doc["fid_curve"] += [{"step": r["step"], "minutes": start + cl(r["time"]) / 60, "leg": name, **r["eval"]}
                             for r in recs if "eval" in r]
        minutes = cl(recs[-1]["time"]) / 60
        doc.setdefault("legs", []).append({"run": name, "start_minutes": start, "minutes": minutes})
        doc["total_minutes"] = start + minutes
    psnr, fid = doc["autoencoder_psnr"], doc["fid_curve"]
    out = Path(args.out)
    write_json(out / "curve.json", doc)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot([p["minutes"] for p in psnr], [p["psnr_heldout_emoji"] for p in psnr], "o-", label="held-out emoji")
    if psnr and "psnr_test_icon" in psnr[0]:
        ax1.plot([p["minutes"] for p in psnr], [p["psnr_test_icon"] for p in psnr], "s-", label="test icons")
    ax1.axhline(28, color="grey", ls="--", lw=0.8)
    ax1.set(xlabel="wall time (min)", ylabel="PSNR (dB)", title="autoencoder reconstruction")
    ax1.legend()
    ax2.plot([p["minutes"] for p in fid], [p["fid_efficientnet_lite0"] for p in fid], "o-")
    for leg in doc.get("legs", []):  # a dotted line where each continuation leg starts
        ax2.axvline(leg["start_minutes"], color="grey", ls=":", lw=0.8)
        ax2.annotate(leg["run"], (leg["start_minutes"], ax2.get_ylim()[1]), fontsize=7, va="top", ha="right",
                     rotation=90)  # upright, left of its line: close legs' names do not overlap
    ax2.set(xlabel="wall time incl. autoencoder (min)", ylabel="FID (EfficientNet-Lite0, 300)", title="latent UNet")
    fig.tight_layout()
    with atomic_path(out / "curve.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    print(json.dumps({k: v for k, v in doc.items() if k != "note"}, indent=1))
    print(f"wrote {out / 'curve.json'} and {out / 'curve.png'}")


if __name__ == "__main__":
    main()
