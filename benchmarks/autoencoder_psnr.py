"""Reconstruction PSNR of a pipeline's autoencoder as it is stored (e.g. the fp16 bundle), on an
image folder's held-out rows, per split and kind: the figure the training run's quick evaluation
gives for its fp32 EMA weights (``AutoencoderTask.evaluate``), for the weights users load.

    python benchmarks/autoencoder_psnr.py --model emoji --data data/emoji [--out FILE]

``--model`` is a bundled model name or a pipeline folder; its autoencoder is loaded as the pipeline
loads it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--kinds", nargs="+", default=["emoji", "icon"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "autoencoder_psnr.json"))
    args = ap.parse_args()

    import torch

    from wordpaint import TextToImagePipeline
    from wordpaint.data.imagefolder import load_imagefolder
    from wordpaint.eval.metrics import psnr_by_group
    from wordpaint.images import to_uint8

    vae = TextToImagePipeline.from_pretrained(args.model).vae.eval()
    rows, images, _ = load_imagefolder(args.data, size=vae.config.resolution, splits=("heldout", "test"), kinds=tuple(args.kinds))
    x = torch.stack(images).float() / 127.5 - 1  # (N, 3, H, W) in [-1, 1]
    with torch.no_grad():
        rec = torch.cat([vae.reconstruct(x[i : i + 64]) for i in range(0, len(x), 64)])
    groups = [f"{r.get('split', 'train')}_{r.get('kind', 'emoji')}" for r in rows]
    figures = psnr_by_group(list(to_uint8(x)), list(to_uint8(rec)), groups)  # dB, as the training run's evaluation
    result = {"model": args.model, "compute_dtype": str(next(vae.parameters()).dtype).removeprefix("torch."),
              **{k: round(v, 3) if k.startswith("psnr") else v for k, v in figures.items()}}
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
