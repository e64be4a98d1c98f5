"""One-step denoising accuracy of a model on real shapes-world scenes, per noise level.

    python benchmarks/denoise_check.py [--model DIR] [--n 64]

For held-out training-distribution scenes x0 (stream seed 123) with their captions, adds noise
at sigma (VE view, x = x0 + sigma * eps), asks the model for x0, and reports the mean squared
error next to two baselines: the best constant image (the batch mean) and the linear shrink
x / (1 + sigma^2) (the optimal denoiser for unit-variance Gaussian data). Separates "the network
cannot denoise" from "the sampler cannot turn good denoising into clean samples".
Writes benchmarks/results/denoise_check.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "denoise_check.json"))
    args = ap.parse_args()

    from wordpaint import TextToImagePipeline
    from wordpaint.data.stream import ShapesStream

    pipe = TextToImagePipeline.from_pretrained(args.model)
    m = pipe.model
    x0, caps = ShapesStream(size=pipe.resolution, seed=123).batch(0, args.n)
    enc = pipe.text_encoder.encode(caps)
    g = torch.Generator().manual_seed(0)
    rows = []
    with torch.no_grad():
        for sig in (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0):
            x = x0 + sig * torch.randn(x0.shape, generator=g)
            d = m.denoise(x, torch.full((args.n,), sig), enc.hidden_states, enc.attention_mask)
            row = {"sigma": sig, "model_mse": (d - x0).pow(2).mean().item(),
                   "shrink_baseline_mse": (x / (1 + sig**2) - x0).pow(2).mean().item(),
                   "mean_image_baseline_mse": (x0.mean(0, keepdim=True) - x0).pow(2).mean().item()}
            rows.append(row)
            print(json.dumps({k: round(v, 5) for k, v in row.items()}))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": args.model or "bundled", "n": args.n, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
