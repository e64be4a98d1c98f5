"""Denoising loss of training runs side by side (e.g. a REPA or image-embedding leg and its control), from their
``metrics.jsonl``: a run trained with REPA logs ``loss_diffusion`` (the denoising term alone) and
``loss_repa`` (1 - cosine similarity of the alignment) beside the total; a plain run's ``loss``
is its denoising loss. Same seed and recipe apart from REPA means the same batches, timesteps and
noise at every step, so the curves differ only by what the alignment did to the model.

    python benchmarks/repa_curve.py --runs runs/emoji64_leg5 runs/emoji64_repa --out benchmarks/results/emoji_repa

Writes ``curve.json`` (per run: steps, denoising loss, alignment loss, mean denoising loss over
the last quarter of the steps, final FID when the run logged one) and ``curve.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_run(folder: Path) -> dict:
    """{steps, denoising, alignment, fid} of one run folder's metrics.jsonl."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    logged = [r for r in rows if "loss" in r]
    if not logged:
        raise SystemExit(f"{folder}/metrics.jsonl has no loss records")
    evals = [r for r in rows if "eval" in r and "fid_efficientnet_lite0" in r["eval"]]
    steps = [r["step"] for r in logged]
    denoising = [r.get("loss_diffusion", r["loss"]) for r in logged]
    tail = denoising[len(denoising) * 3 // 4 :]
    return {"steps": steps, "denoising": denoising, "alignment": [r.get("loss_repa") for r in logged],
            "denoising_last_quarter": sum(tail) / len(tail),
            "fid_efficientnet_lite0": {e["step"]: round(e["eval"]["fid_efficientnet_lite0"], 2) for e in evals}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", required=True, help="training run folders (each with metrics.jsonl)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {Path(r).name: read_run(Path(r)) for r in args.runs}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps(runs, indent=1) + "\n")
    aligned = {name: r for name, r in runs.items() if any(v is not None for v in r["alignment"])}
    fig, axes = plt.subplots(1, 2 if aligned else 1, figsize=(10 if aligned else 5.5, 3.6), squeeze=False)
    a = axes[0, 0]
    for name, r in runs.items():
        a.plot(r["steps"], r["denoising"], label=f"{name} (last quarter {r['denoising_last_quarter']:.4f})")
    a.set(xlabel="step", ylabel="denoising loss (v, MSE)", title="denoising term")
    a.legend(fontsize=7)
    if aligned:  # a second panel only when some run logged REPA's alignment term
        b = axes[0, 1]
        for name, r in aligned.items():
            b.plot(r["steps"], r["alignment"], label=name)
        b.set(xlabel="step", ylabel="1 - cosine similarity", title="REPA alignment term")
        b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=110)
    for name, r in runs.items():
        print(f"{name}: denoising loss over the last quarter {r['denoising_last_quarter']:.4f}; FID {r['fid_efficientnet_lite0']}")


if __name__ == "__main__":
    main()
