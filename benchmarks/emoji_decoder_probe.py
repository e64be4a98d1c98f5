"""Where does the emoji model lose its pictures: the decoder's sensitivity to latent errors, and the
UNet's one-step estimate from real latents, judged as generated pictures are.

    python benchmarks/emoji_decoder_probe.py --data data/emoji [--model emoji] [--vae DIR] [--out FILE]

On the dev cells of ``tune_emoji.py`` (training images): each picture's latent z0 is (a) decoded
after adding Gaussian noise of std ``delta`` (latents have unit variance): how much latent error
the decoder tolerates; and (b) noised to ``z0 + sigma * eps`` and denoised in one conditional
UNet step (prompt + the embedding prior's image vector, no guidance), then decoded: the estimate
the sampler's last steps return when the chain is on the right picture. Each set is judged by
wordpaint-clip (concept 240-way, style 3-way, as the report judges) with PSNR to the real
picture. ``--vae`` decodes with another autoencoder (a folder, or a pipeline folder's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--vae", default=None, help="an autoencoder folder (or pipeline folder) to decode with instead")
    ap.add_argument("--concepts", type=int, default=100)
    ap.add_argument("--deltas", nargs="+", type=float, default=[0.0, 0.1, 0.2, 0.4])
    ap.add_argument("--sigmas", nargs="+", type=float, default=[0.17, 0.34, 0.74, 1.39])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "emoji_decoder_probe.json"))
    args = ap.parse_args()

    import torch

    from tune_emoji import dev_set, judge_dev
    from wordpaint import TextToImagePipeline
    from wordpaint.data.imagefolder import model_inputs
    from wordpaint.images import to_pil
    from wordpaint.models.clip import WordpaintClip
    from wordpaint.pipelines.text_to_image import component_folder, load_model

    pipe = TextToImagePipeline.from_pretrained(args.model)
    if args.vae:
        pipe = pipe.with_component("autoencoder", load_model(component_folder(args.vae, "autoencoder")))
    clip = WordpaintClip.from_pretrained()
    names, vocab, cells, prompts, by_cell = dev_set(args.data, args.concepts)
    real = [by_cell[c] for c in cells]
    x = model_inputs(real)  # (N, 3, 64, 64) in [-1, 1]
    rows = []

    def record(probe: str, value: float, decoded: torch.Tensor) -> None:
        mse = ((decoded - x) ** 2).mean(dim=(1, 2, 3)).clamp(min=1e-10)
        psnr = float((10 * torch.log10(4 / mse)).mean())  # pixels in [-1, 1]: peak-to-peak 2
        row = {"probe": probe, "value": value, "psnr_db": round(psnr, 2), **judge_dev(clip, to_pil(decoded), cells, vocab, names, real)}
        row.pop("style_confusion")
        rows.append(row)
        print(json.dumps(row), flush=True)

    def batched(fn, *tensors, n: int = 100) -> torch.Tensor:
        return torch.cat([fn(*(t[i : i + n] for t in tensors)) for i in range(0, len(tensors[0]), n)])

    with torch.no_grad():
        z0 = batched(pipe.vae.encode, x)  # (N, 4, 16, 16), unit variance
        eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
        for delta in args.deltas:
            record("decode(z0 + delta * eps)", delta, batched(pipe.vae.decode, z0 + delta * eps))
        cond = pipe.text_encoder.encode(prompts)
        embeds, _ = pipe._image_embeds("prior", prompts)  # (N, 1280) from the embedding prior
        for sigma in args.sigmas:
            est = batched(lambda z, e, h, m, v: pipe.model.denoise(z + sigma * e, torch.tensor(sigma), h, m, None, v),
                          z0, eps, cond.hidden_states, cond.attention_mask, embeds)
            record("decode(D(z0 + sigma * eps)): one conditional step", sigma, batched(pipe.vae.decode, est))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "vae": args.vae, "judge": "bundled wordpaint-clip",
                                          "dev": f"{args.concepts} of 240 dev concepts (seed 7) x 3 styles", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
