"""``wordpaint generate PROMPT -o out.png``: draw a prompt with the bundled (or a given) model."""

from __future__ import annotations

import argparse
from pathlib import Path

from wordpaint.cli.options import (add_guide_options, add_model_option, add_sampling_options, parse_interval,
                                   parse_expert_sigma, parse_prior_strength, parse_refine_strength,
                                   parse_restore)
from wordpaint.errors import WordpaintError


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate images from a prompt", description="Generate images from a text prompt.")
    p.add_argument("prompt", help="what to draw, e.g. 'a red circle to the left of a blue square'")
    p.add_argument("-o", "--output", default="wordpaint.png", help="PNG path; with --n > 1, -0, -1, ... are added before .png")
    add_model_option(p)
    add_sampling_options(p)
    add_guide_options(p)
    p.add_argument("--negative-prompt", default=None, metavar="TEXT",
                   help="what guidance steers away from: encoded in place of the empty text of its unconditional half "
                   "(no effect at --guidance 1)")
    p.add_argument("--layout-guidance", type=float, default=None, metavar="SCALE",
                   help="layout models: guide the plan's layout with its own scale, apart from the text "
                   "(one more model pass per step; default: with the text, at --guidance)")
    p.add_argument("--text-guidance", type=float, default=None, metavar="SCALE",
                   help="layout models: guide the text with its own scale, apart from the plan's layout; 0 draws "
                   "from the layout alone (default: with the layout, at --guidance)")
    p.add_argument("--regional-prompts", action="store_true",
                   help="layout models: condition each planned object's box on its own phrase ('a green cross'), the rest "
                   "on the whole prompt (fewer colours bound to the wrong object; one more model pass per object)")
    p.add_argument("--detail", action=argparse.BooleanOptionalAction, default=None,
                   help="layout models: redraw each small planned object in an enlarged crop around it (img2img, then pasted "
                   "back inside its box; one more batch of model passes) (default: the model's; on for the bundled shapes model)")
    p.add_argument("--detail-strength", type=float, default=None, metavar="S",
                   help="--detail: how much of each crop is redrawn, in (0, 1] (default: the model's, 0.5)")
    p.add_argument("--init-image", default=None, metavar="PNG",
                   help="img2img: start from this picture instead of noise (resized to --size if that is given)")
    p.add_argument("--strength", type=float, default=None, metavar="S",
                   help="--init-image: how far up the noise schedule the picture is taken, in (0, 1]; 1 keeps nothing of it (default 0.8)")
    p.add_argument("--reference", default=None, metavar="PNG",
                   help="reference models (reference_image, e.g. the emoji64_ref recipe): redraw this picture's subject as the "
                   "prompt asks, e.g. an emoji in another style (resized to the canvas)")
    p.add_argument("--clip-contrast", action="append", default=None, metavar="TEXT",
                   help="with clip guidance: a text the guide tells the prompt apart from (repeat for more, e.g. the same "
                   "subject in the other styles); the guidance then climbs log p(prompt | picture) against them")
    p.add_argument("--image-embed", default=None, metavar="prior|none|PNG",
                   help="image-embedding models (unCLIP-style): the image vector the picture is drawn to match: prior (predicted "
                   "from the prompt by the model's embedding prior; the default), none (text alone), or a picture's own vector "
                   "(variations of that picture)")
    p.add_argument("--seed", type=int, default=0, help="random seed; image k uses seed + k (default 0)")
    p.add_argument("--n", type=int, default=1, help="number of images")
    p.add_argument("--size", type=int, default=None, help="height and width in pixels (default: the model's resolution)")
    p.add_argument("--planner", default=None, help="plan the scene first with this backend: rules, smollm2 (local LLM) or "
                   "openai (an OpenAI-compatible server, see --planner-url); none to draw from the prompt alone "
                   "(default: the model's, rules for the bundled layout model)")
    p.add_argument("--planner-url", default=None, help="openai planner: server base URL, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--planner-model", default=None, help="openai planner: model name the server expects")
    p.add_argument("--planner-dtype", default=None, choices=("auto", "float32", "bfloat16"),
                   help="smollm2 planner: weight precision; auto is bfloat16 on CPUs with bf16 instructions "
                   "(faster, same plan accuracy), else float32 (default: auto)")
    p.add_argument("--show-plan", action="store_true", help="print the scene plan as JSON and save OUTPUT-plan.png with its boxes")
    p.set_defaults(func=run)


def parse_image_embed(text: str):
    """``--image-embed``: "prior", None (for "none") or the (1280,) EfficientNet-Lite0 vector of a picture."""
    if text in ("prior", "none"):
        return None if text == "none" else "prior"
    from wordpaint.eval.metrics import extract
    from wordpaint.images import on_white

    return extract([on_white(read_image(text, option="--image-embed"))])[0][0].float()


def read_image(path: str, *, option: str = "--init-image"):
    """A PIL image from ``path``, fully read, or a clear error naming ``option`` and the file."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise WordpaintError(f"{option}: no such file: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise WordpaintError(f"{option}: cannot read {path} as an image ({e})") from None


def output_paths(output: str, n: int) -> list[Path]:
    path = Path(output)
    if path.suffix.lower() != ".png":
        raise WordpaintError(f"output must be a .png path, got {output!r}")
    if n == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{k}{path.suffix}") for k in range(n)]


def run(args: argparse.Namespace) -> int:
    paths = output_paths(args.output, args.n) if isinstance(args.n, int) and args.n >= 1 else None
    if paths is None:
        raise WordpaintError(f"--n must be an integer >= 1, got {args.n}")
    import json
    import sys

    from wordpaint.pipelines.text_to_image import TextToImagePipeline

    from wordpaint.text.planners import PLANNERS, get_planner

    if (args.planner_url or args.planner_model) and args.planner != "openai":
        raise WordpaintError("--planner-url and --planner-model are options of --planner openai")
    if args.planner_dtype is not None and args.planner != "smollm2":
        raise WordpaintError("--planner-dtype is an option of --planner smollm2")
    planner = "default"
    if args.planner == "none":
        planner = None
    elif args.planner is not None:
        options = {"url": args.planner_url, "model": args.planner_model} if args.planner == "openai" else {}
        if args.planner_dtype is not None:
            options["dtype"] = args.planner_dtype
        planner = get_planner(args.planner, **options)
    interval = parse_interval(args.guidance_interval)
    if args.strength is not None and args.init_image is None:
        raise WordpaintError("--strength is an option of --init-image")
    if args.detail_strength is not None and args.detail is False:
        raise WordpaintError("--detail-strength is an option of --detail, not of --no-detail")
    extra = {}
    if args.init_image is not None:
        extra["image"] = read_image(args.init_image)
        if args.strength is not None:
            extra["strength"] = args.strength
    if args.reference is not None:
        extra["reference"] = read_image(args.reference, option="--reference")
    if args.image_embed is not None:
        extra["image_embed"] = parse_image_embed(args.image_embed)
    if args.detail is not None:
        extra["detail"] = args.detail
    if args.detail_strength is not None:
        extra["detail_strength"] = args.detail_strength
    pipe = TextToImagePipeline.from_pretrained(args.model, planner=planner)
    if args.show_plan and pipe.planner is None:
        raise WordpaintError(f"--show-plan needs --planner (one of: {', '.join(PLANNERS)})")
    layout_guidance = "default" if args.layout_guidance is None else args.layout_guidance
    text_guidance = "default" if args.text_guidance is None else args.text_guidance
    out = pipe(args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance, sampler=args.sampler,
               sigma_schedule=args.schedule, guidance_interval=interval, layout_guidance_scale=layout_guidance,
               text_guidance_scale=text_guidance, regional_prompts=args.regional_prompts,
               clip_guidance_scale="default" if args.clip_guidance is None else args.clip_guidance, prior_strength=parse_prior_strength(args.prior_strength),
               autoguidance_scale="default" if args.autoguidance is None else args.autoguidance,
               expert_sigma=parse_expert_sigma(args.expert_sigma), refine_strength=parse_refine_strength(args.refine_strength),
               clip_guidance_contrast=args.clip_contrast, restore=parse_restore(args.restore),
               negative_prompt=args.negative_prompt, seed=args.seed, num_images_per_prompt=args.n, height=args.size,
               width=args.size, **extra)
    for w in out.warnings:
        print(f"wordpaint: warning: {w}", file=sys.stderr)
    for k, path in enumerate(paths):
        out.save(path, k)
        print(f"wrote {path}")
        if args.show_plan:
            from wordpaint.images import draw_boxes, save_png

            plan = out.metadata[k]["plan"]
            if k == 0:
                print(json.dumps(plan, indent=1))
            overlay = path.with_name(f"{path.stem}-plan.png")
            save_png(draw_boxes(out.images[k], [(o["phrase"], tuple(o["box"])) for o in plan["objects"]]), overlay)
            print(f"wrote {overlay}")
    return 0
