"""How much an image-embedding UNet (``image_embed_dim``) reads its image vector: its x0 error on
training images with each picture's own EfficientNet-Lite0 vector against the error with none, at
a few noise levels (same images, captions, noise). A model that uses the vector errs much less
with it where the noise hides the picture (large sigma); one that ignores it, the same.

    python benchmarks/embed_uptake.py --model runs/emoji64_embed/pipeline --data data/emoji --out benchmarks/results/emoji_embed/uptake.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a pipeline folder whose diffusion model has image_embed_dim > 0")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--n", type=int, default=256, help="training emoji drawn (seed 0)")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.3, 1.0, 3.0, 10.0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch

    from wordpaint import TextToImagePipeline
    from wordpaint.data.imagefolder import ImageFolderStream, caption_alternatives
    from wordpaint.training.train import image_embeds

    pipe = TextToImagePipeline.from_pretrained(args.model)
    model = pipe.model.float()
    if not getattr(model.config, "image_embed_dim", 0):
        raise SystemExit(f"{args.model}: its diffusion model reads no image vector (image_embed_dim = 0)")
    stream = ImageFolderStream(args.data, size=64, seed=0, kinds=("emoji",), autoencoder=pipe.vae, show_progress=False)
    idx = torch.randperm(len(stream), generator=torch.Generator().manual_seed(0))[: args.n].tolist()
    x0 = stream.data[idx]  # (n, 4, 16, 16) latents
    vectors = image_embeds([stream.images[i] for i in idx]).float()  # (n, 1280): each picture's own
    enc = pipe.text_encoder.encode([caption_alternatives(stream.rows[i])[-1] for i in idx])  # "NAME in STYLE style"
    gen, rows = torch.Generator().manual_seed(1), []
    with torch.no_grad():
        for sigma in args.sigmas:
            xs = x0 + sigma * torch.randn(x0.shape, generator=gen)
            err = {}
            for name, vec in (("own_vector", vectors), ("no_vector", None)):
                d = torch.cat([model.denoise(xs[i : i + 64], torch.tensor(sigma), enc.hidden_states[i : i + 64], enc.attention_mask[i : i + 64],
                                             None, None if vec is None else vec[i : i + 64]) for i in range(0, len(idx), 64)])
                err[name] = float(((d - x0) ** 2).mean())
            rows.append({"sigma": sigma, "x0_mse_own_vector": round(err["own_vector"], 6), "x0_mse_no_vector": round(err["no_vector"], 6),
                         "relative_change": round(err["own_vector"] / err["no_vector"] - 1, 4)})
            print(json.dumps(rows[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "images": len(idx), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
