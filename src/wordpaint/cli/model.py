"""``wordpaint model info|replace``: inspect a pipeline folder, or swap one of its components."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


DTYPES = ("float32", "float16")


def add_parser(sub) -> None:
    p = sub.add_parser("model", help="inspect or edit a pipeline folder", description="Inspect a pipeline folder or replace one of its components.")
    s = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    i = s.add_parser("info", help="components, sizes, parameter counts and defaults of a pipeline")
    i.add_argument("model", nargs="?", default=None, help="pipeline folder or bundled name (shapes, emoji, fashion; default shapes)")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")
    i.set_defaults(func=run_info)
    r = s.add_parser("replace", help="write a copy of a pipeline with one component replaced",
                     description="Write a copy of MODEL with one component replaced, e.g. the autoencoder by a decoder fine-tuned "
                                 "with the emoji_ae_decoder recipe. A new autoencoder must encode as the old one did.")
    r.add_argument("model", help="pipeline folder or bundled name (shapes, emoji, fashion)")
    r.add_argument("--component", required=True, choices=("autoencoder", "diffusion", "guide", "prior", "embed_prior", "autoguide",
                                                            "expert", "restorer"),
                   help="which component to replace (guide: add or replace the noised wordpaint-clip used by --clip-guidance; "
                   "prior: add or replace the latent prior used by --prior-strength; embed_prior: add or replace the "
                   "text -> image-vector prior of an image-embedding model; autoguide: add or replace the weaker diffusion model "
                   "used by --autoguidance, e.g. from a shorter run of the same recipe; expert: add or replace the low-noise "
                   "diffusion model used by --expert-sigma, e.g. from the emoji64_embed_lownoise_expert recipe; restorer: add or "
                   "replace the text-conditioned pixel network used by --restore, e.g. from the emoji_restorer recipe)")
    r.add_argument("--from", dest="source", required=True, help="the new component's folder (config.json + model.safetensors), "
                                                                "or a pipeline folder holding it, e.g. the pipeline/ folder of an autoencoder or diffusion run")
    r.add_argument("--out", required=True, help="where to write the new pipeline folder (may be MODEL itself: written atomically)")
    r.add_argument("--dtype", default="float32", choices=DTYPES, help="weight precision of the written files (float16 halves them)")
    r.add_argument("--int8", default="", metavar="COMPONENT[,COMPONENT...]",
                   help="components to store as int8 weights with a scale per output channel (e.g. diffusion,expert: half of "
                   "float16's bytes; loaded back as float32, measured in the README); components loaded from int8 stay int8")
    r.add_argument("--allow-new-latents", action="store_true", help="accept an autoencoder whose encoder differs (the diffusion model must then be retrained)")
    r.set_defaults(func=run_replace)


def _load_pipeline(name: str | None):
    from wordpaint.pipelines.text_to_image import TextToImagePipeline

    return TextToImagePipeline.from_pretrained(name, planner=None)


def run_info(args: argparse.Namespace) -> int:
    from wordpaint.pipelines.text_to_image import BUNDLED_MODELS, family_of

    pipe = _load_pipeline(args.model)
    folder = Path(BUNDLED_MODELS.get(args.model or "shapes", args.model))
    info = {"folder": str(folder), "resolution": pipe.resolution, "defaults": pipe.defaults,
            "text_encoder": pipe.text_encoder.to_config_dict().get("name_or_path"), "components": {}}
    for name, model in pipe.components().items():
        if model is None:
            continue
        files = folder / name
        info["components"][name] = {
            "family": family_of(model.config),
            "parameters": sum(p.numel() for p in model.parameters()),
            "megabytes": round(sum(f.stat().st_size for f in files.iterdir()) / 2**20, 2) if files.is_dir() else None,
            "int8": bool(getattr(model, "stored_int8", False)),
            "config": model.config.to_dict(),
        }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['folder']}: {info['resolution']} px, text encoder {info['text_encoder']}")
    for name, c in info["components"].items():
        print(f"  {name:<11} {c['family']:<12} {c['parameters'] / 1e6:7.2f} M parameters  {c['megabytes']} MB" + ("  (int8 weights)" if c["int8"] else ""))
    print("  defaults:   " + ", ".join(f"{k}={v}" for k, v in info["defaults"].items()))
    return 0


def run_replace(args: argparse.Namespace) -> int:
    import torch

    from wordpaint.pipelines.text_to_image import component_folder, load_model

    pipe = _load_pipeline(args.model)
    new = pipe.with_component(args.component, load_model(component_folder(args.source, args.component)),
                              allow_new_latents=args.allow_new_latents)
    int8 = tuple(n.strip() for n in args.int8.split(",") if n.strip())
    new.save_pretrained(args.out, dtype=getattr(torch, args.dtype), int8=int8)
    stored = new.int8_components(int8)
    print(f"wrote {args.out} ({args.component} from {args.source}, {args.dtype}" + (f"; int8: {', '.join(stored)}" if stored else "") + ")")
    return 0
