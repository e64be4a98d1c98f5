"""What a latent pipeline's sampler hands its decoder, paired with the picture it should draw.

A decoder is trained on the encoder's latents, but at generation time it decodes the sampler's
output: latents with the diffusion model's own errors (soft detail, smeared texture), which a
decoder trained on clean latents renders as smears (``benchmarks/emoji_decoder_probe.py``). This
module makes training pairs for a decoder that should decode what the sampler really returns:
each training picture is encoded, noised to sigma_s and denoised by the pipeline's own sampler
and sampling settings (SDEdit, Meng et al. 2022, at ``strength`` s: the last s of the steps),
so the result is a sampled latent whose content is still that picture's. The pairs (sampled
latent -> real picture) are read by an autoencoder recipe with ``data.decoder_inputs`` and
``decoder_input_share`` (:class:`~wordpaint.models.autoencoder.AutoencoderConfig`).

    python -m wordpaint.training.decoder_inputs --model emoji --data data/emoji --out runs/decoder_inputs.safetensors

The file holds ``latents`` (N, K, C, h, w) float16 (K sampled latents per picture, scaled as the
diffusion model sees them), ``strengths`` (N, K) and, in its metadata, the pictures'
``file_names`` (their rows in the image folder's ``metadata.jsonl``) and the settings used.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from wordpaint.errors import WordpaintError

STRENGTHS = (0.3, 0.4, 0.5, 0.6)  # of 10 trailing steps: from sigma 0.52 / 0.74 / 1.01 / 1.39 (the emoji bundle)


@torch.no_grad()
def sampled_latents(pipe, images: torch.Tensor, prompts: list[str], *, strengths: tuple[float, ...] = STRENGTHS,
                    per_image: int = 2, seed: int = 0, batch_size: int = 64, show_progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """((N, K, C, h, w) sampled latents, (N, K) strengths) for ``images`` (N, 3, H, W) in [-1, 1]
    and their ``prompts``: the pipeline's sampler at its default settings (steps, guidance, guide,
    image vector from its embedding prior, low-noise expert at its expert_sigma) run from each
    picture's latent noised to the strength's sigma. Picture i's k-th latent uses strength
    ``strengths[(i + k) % len(strengths)]`` (every strength equally often), seed
    ``seed + k * N + i``: a pure function of the arguments."""
    from tqdm.auto import tqdm

    from wordpaint.pipelines.text_to_image import strength_sigmas

    if pipe.vae is None:
        raise WordpaintError("decoder inputs need a latent pipeline (one with an autoencoder component)")
    if len(images) != len(prompts):
        raise WordpaintError(f"{len(images)} images but {len(prompts)} prompts")
    d = pipe.defaults
    full = pipe.model.sigmas(d["num_inference_steps"], d["sigma_schedule"])
    n, h = len(images), images.shape[-1]
    out = torch.zeros(n, per_image, pipe.model.config.in_channels, h // pipe.vae_factor, h // pipe.vae_factor, dtype=torch.float16)
    used = torch.zeros(n, per_image)
    jobs = [(i, k, strengths[(i + k) % len(strengths)]) for k in range(per_image) for i in range(n)]
    by_strength: dict[float, list[tuple[int, int]]] = {}
    for i, k, s in jobs:
        by_strength.setdefault(s, []).append((i, k))
    bar = tqdm(total=len(jobs), desc="sampled latents", disable=not show_progress)
    for s, items in by_strength.items():
        sigmas = strength_sigmas(full, s)
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            ps = [prompts[i] for i, _ in chunk]
            embeds, _ = pipe._image_embeds("prior", ps)
            z = pipe.sample_batch(ps, seeds=[seed + k * n + i for i, k in chunk], sigmas=sigmas, guidance_scale=d["guidance_scale"],
                                  sampler=d["sampler"], height=h, width=h, init=images[[i for i, _ in chunk]],
                                  guidance_interval=d.get("guidance_interval"), clip_guidance_scale=(d.get("clip_guidance_scale") or 0.0)
                                  if pipe.guide is not None else 0.0, image_embeds=embeds, decode=False,
                                  expert_sigma=d.get("expert_sigma") if pipe.expert is not None else None)
            for (i, k), zi in zip(chunk, z):
                out[i, k], used[i, k] = zi.half(), s
            bar.update(len(chunk))
    bar.close()
    return out, used


def save_decoder_inputs(path: str | os.PathLike, latents: torch.Tensor, strengths: torch.Tensor, file_names: list[str], *,
                        settings: dict) -> None:
    """Write the pairs' file atomically (safetensors; file names and settings in its metadata)."""
    from wordpaint.io import save_safetensors

    save_safetensors(path, {"latents": latents, "strengths": strengths},
                     metadata={"file_names": json.dumps(file_names), "settings": json.dumps(settings)})


def load_decoder_inputs(path: str | os.PathLike) -> tuple[torch.Tensor, list[str], dict]:
    """((N, K, C, h, w) latents, their pictures' file names, settings) from :func:`save_decoder_inputs`'s file,
    with a clear error for a missing or corrupt file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WordpaintError(f"decoder inputs file {path} not found: make it with "
                             f"python -m wordpaint.training.decoder_inputs --model PIPELINE --data FOLDER --out {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            latents = f.get_tensor("latents")
        names, settings = json.loads(meta["file_names"]), json.loads(meta.get("settings", "{}"))
    except Exception as e:  # safetensors / json / a missing key: all mean the same to the user
        raise WordpaintError(f"decoder inputs file {path} is not a valid pairs file ({type(e).__name__}: {e})") from None
    if latents.ndim != 5 or len(names) != len(latents):
        raise WordpaintError(f"decoder inputs file {path}: expected (N, K, C, h, w) latents for N file names, "
                             f"got {tuple(latents.shape)} for {len(names)}")
    return latents, names, settings


def latents_for_rows(path: str | os.PathLike | None, share: float, *, option: str, file_names: list[str],
                     latent_shape: tuple[int, int, int]) -> tuple[list[int], torch.Tensor] | None:
    """For a recipe that trains on sampled latents (a decoder's ``decoder_input_share``, a restorer's
    ``sampled_share``, named by ``option``): None when neither the file (``data.decoder_inputs``) nor
    the share is set; else (the positions in ``file_names`` the file holds latents for, their
    (F, K, C, h, w) latents in that order). Clear errors for one without the other, a missing or
    corrupt file, and latents that are not ``latent_shape`` (C, h, w)."""
    if not path and not share:
        return None
    if not path or not share:
        raise WordpaintError(f"data.decoder_inputs (--decoder-inputs FILE) and {option} go together: the file gives the "
                             "sampled latents, the share how many pictures are decoded from them")
    latents, names, _ = load_decoder_inputs(path)
    where = {n: i for i, n in enumerate(names)}
    found = [j for j, n in enumerate(file_names) if n in where]
    if found and tuple(latents.shape[2:]) != tuple(latent_shape):
        raise WordpaintError(f"decoder inputs file {path} holds {tuple(latents.shape[2:])} latents; the autoencoder's are "
                             f"{tuple(latent_shape)}")
    return found, latents[[where[file_names[j]] for j in found]]


def main(argv: list[str] | None = None) -> None:
    from wordpaint import TextToImagePipeline
    from wordpaint.data.emoji import short_caption
    from wordpaint.data.imagefolder import load_imagefolder, model_inputs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="emoji", help="the latent pipeline whose sampler makes the latents")
    ap.add_argument("--data", required=True, help="an emoji image folder (wordpaint data build emoji)")
    ap.add_argument("--kinds", default="emoji", help="comma-separated kinds of pictures to pair (default: emoji)")
    ap.add_argument("--per-image", type=int, default=2, help="sampled latents per picture (K)")
    ap.add_argument("--strengths", default=",".join(map(str, STRENGTHS)), help="SDEdit strengths, used in turn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        strengths = tuple(float(v) for v in args.strengths.split(","))
    except ValueError:
        raise SystemExit(f"--strengths must be comma-separated numbers in (0, 1], got {args.strengths!r}") from None
    if not all(0 < s <= 1 for s in strengths) or not 1 <= args.per_image <= 16:
        raise SystemExit("--strengths must be in (0, 1] and --per-image in [1, 16]")
    pipe = TextToImagePipeline.from_pretrained(args.model, planner=None)
    rows, images, _ = load_imagefolder(args.data, size=pipe.resolution, splits=("train",), kinds=tuple(args.kinds.split(",")))
    if not rows:
        raise SystemExit(f"no training pictures of kinds {args.kinds} in {args.data}")
    if any("name" not in r or "style" not in r for r in rows):
        raise SystemExit(f"{args.data}: every row needs a name and a style to be prompted (an emoji folder)")
    prompts = [short_caption(r["name"], r["style"]) for r in rows]
    latents, used = sampled_latents(pipe, model_inputs(images), prompts, strengths=strengths, per_image=args.per_image, seed=args.seed)
    settings = {"model": args.model, "strengths": list(strengths), "per_image": args.per_image, "seed": args.seed,
                "sampling": {k: pipe.defaults.get(k) for k in ("sampler", "num_inference_steps", "sigma_schedule", "guidance_scale",
                                                               "clip_guidance_scale", "guidance_interval", "expert_sigma")}, "image_embed": "prior"}
    save_decoder_inputs(args.out, latents, used, [r["file_name"] for r in rows], settings=settings)
    print(f"wrote {len(rows)} x {args.per_image} sampled latents to {args.out}")


if __name__ == "__main__":
    main()
