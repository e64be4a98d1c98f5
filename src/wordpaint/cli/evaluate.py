"""``wordpaint eval compositional --model DIR``: generate, score exactly, write JSON/Markdown/PNG."""

from __future__ import annotations

import argparse
import platform

from wordpaint.cli.options import add_guide_options, add_model_option, add_sampling_options


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a model", description="Evaluate a model.")
    s = p.add_subparsers(dest="suite", required=True, metavar="SUITE")
    c = s.add_parser("compositional", help="shapes-world compositional accuracy (GenEval's six tasks, exact scorer)")
    add_model_option(c)
    c.add_argument("--prompts", default=None, help="JSONL of {prompt, spec}; default: the built-in 300 prompts (50 per task)")
    c.add_argument("--samples-per-prompt", type=int, default=4)
    c.add_argument("--seed", type=int, default=0)
    add_sampling_options(c)
    c.add_argument("--limit-per-task", type=int, default=None, help="use only the first N prompts of each task")
    c.add_argument("--planner", default="default",
                   help="scene planner: default (the model's own, rules for the bundled model), rules, smollm2, openai or none")
    c.add_argument("--size", type=int, default=None, help="draw at this side in pixels (default: the model's resolution)")
    c.add_argument("--regional-prompts", action="store_true",
                   help="layout models: each planned object's box conditioned on its own phrase (about twice the time)")
    c.add_argument("--detail", action=argparse.BooleanOptionalAction, default=None,
                   help="layout models: redraw each small planned object in an enlarged crop (default: the model's)")
    c.add_argument("--detail-strength", type=float, default=None, metavar="S", help="--detail: strength in (0, 1] (default: the model's)")
    c.add_argument("--out", default="eval-compositional", help="folder for results.json, results.md, samples.png")
    c.set_defaults(func=run_compositional)
    r = s.add_parser("report", help="a full report folder for a suite (shapes, fashion, emoji): JSON, Markdown, grids, plots")
    add_model_option(r)
    r.add_argument("--suite", required=True, help="shapes, fashion or emoji")
    r.add_argument("--out", default="eval-report", help="report folder")
    r.add_argument("--seed", type=int, default=0)
    add_sampling_options(r)
    add_guide_options(r)
    r.add_argument("--clip-contrast-styles", default=None, metavar="STYLE,STYLE,...|none",
                   help="with clip guidance: contrast each prompt that asks for one of these styles ('... in twemoji style') "
                   "with itself in the others (none = plain clip guidance; default: the model's)")
    r.add_argument("--samples-per-prompt", type=int, default=4, help="shapes: samples per prompt")
    r.add_argument("--limit-per-task", type=int, default=None, help="shapes: first N prompts of each task")
    r.add_argument("--n-per-class", type=int, default=1000, help="fashion: generated images per class (10 classes)")
    r.add_argument("--n-real", type=int, default=10000, help="fashion: real images per set for FID/KID")
    r.add_argument("--cas-epochs", type=int, default=10, help="fashion: epochs of the CAS classifier")
    r.add_argument("--data", default="data/emoji", help="emoji: the corpus folder (`wordpaint data build emoji`)")
    r.add_argument("--clip", default=None, help="emoji: a wordpaint-clip folder (default: the bundled one)")
    r.add_argument("--samples-per-cell", type=int, default=2, help="emoji: images per (concept, style) cell")
    r.add_argument("--limit-concepts", type=int, default=None, help="emoji: only the first N of the 240 evaluation concepts")
    r.add_argument("--reference", default=None, metavar="other-style",
                   help="emoji, reference models: show each cell its concept's training image in another style (never the "
                   "cell's own image)")
    r.add_argument("--image-embed", default=None, choices=("prior", "none"),
                   help="emoji, image-embedding models: draw with the embedding prior's vector (default, when the model "
                   "has one) or from the text alone")
    r.set_defaults(func=run_report)


def run_compositional(args: argparse.Namespace) -> int:
    import torch

    import wordpaint
    from wordpaint.errors import WordpaintError
    from wordpaint.eval.compositional import evaluate_compositional, markdown_table, write_report
    from wordpaint.eval.prompts import load_prompts, subset
    from wordpaint.pipelines.text_to_image import TextToImagePipeline

    if args.samples_per_prompt < 1:
        raise WordpaintError(f"--samples-per-prompt must be >= 1, got {args.samples_per_prompt}")
    prompts = load_prompts(args.prompts)
    if args.limit_per_task is not None:
        prompts = subset(prompts, args.limit_per_task)
    if args.detail_strength is not None and args.detail is False:
        raise WordpaintError("--detail-strength is an option of --detail, not of --no-detail")
    detail = {k: v for k, v in (("detail", args.detail), ("detail_strength", args.detail_strength)) if v is not None}
    pipe = TextToImagePipeline.from_pretrained(args.model, planner=None if args.planner == "none" else args.planner)
    summary, records, images = evaluate_compositional(
        pipe, prompts, samples_per_prompt=args.samples_per_prompt, seed=args.seed,
        num_inference_steps=args.steps, guidance_scale=args.guidance, sampler=args.sampler,
        sigma_schedule=args.schedule, size=args.size, regional_prompts=args.regional_prompts, **detail)
    settings = {
        "model": args.model or "shapes (bundled)", "prompts": args.prompts or "built-in compositional_v1 (50 per task)",
        "n_prompts": len(prompts), "samples_per_prompt": args.samples_per_prompt, "seed": args.seed,
        "planner": getattr(pipe.planner, "name", None) if pipe.planner is not None else "none (prompt only)",
        "num_inference_steps": args.steps or pipe.defaults["num_inference_steps"],
        "guidance_scale": args.guidance if args.guidance is not None else pipe.defaults["guidance_scale"],
        "sampler": args.sampler or pipe.defaults["sampler"],
        "sigma_schedule": args.schedule or pipe.defaults["sigma_schedule"],
        "size": args.size or pipe.resolution, "regional_prompts": args.regional_prompts,
        "detail_strength": detail.get("detail_strength", pipe.defaults["detail_strength"])
        if detail.get("detail", pipe.defaults["detail"]) else None, "wordpaint_version": wordpaint.__version__,
        "torch": torch.__version__, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }
    paths = write_report(args.out, summary, records, images, settings=settings)
    print(markdown_table(summary))
    for k, p in paths.items():
        print(f"wrote {p}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from wordpaint.errors import WordpaintError, check_choice
    from wordpaint.eval.report import SUITES, write_suite_report
    from wordpaint.pipelines.text_to_image import TextToImagePipeline

    check_choice("suite", args.suite, SUITES)
    for name in ("samples_per_prompt", "n_per_class", "n_real", "cas_epochs", "samples_per_cell"):
        if getattr(args, name) < 1:
            raise WordpaintError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.reference is not None and args.suite != "emoji":
        raise WordpaintError("--reference is an option of the emoji suite")
    if args.image_embed is not None and args.suite != "emoji":
        raise WordpaintError("--image-embed is an option of the emoji suite")
    if args.reference is not None:
        from wordpaint.eval.report import EMOJI_REFERENCES

        check_choice("--reference", args.reference, EMOJI_REFERENCES)
    pipe = TextToImagePipeline.from_pretrained(args.model)
    if args.reference is not None and not pipe.model.config.reference_image:
        raise WordpaintError("--reference needs a model trained with reference pictures (reference_image = true, e.g. the "
                             "emoji64_ref recipe)")
    # every suite samples with the folder's defaults, so sampler and schedule are set there
    from wordpaint.sampling.samplers import SAMPLERS, SIGMA_SCHEDULES

    for option, key, value, choices in (("--sampler", "sampler", args.sampler, SAMPLERS),
                                        ("--schedule", "sigma_schedule", args.schedule, SIGMA_SCHEDULES)):
        if value is not None:
            check_choice(option, value, choices)
            pipe.defaults[key] = value
    if args.clip_guidance is not None:
        if args.clip_guidance and pipe.guide is None:
            raise WordpaintError("--clip-guidance needs a model with a guide (a noised wordpaint-clip component)")
        pipe.defaults["clip_guidance_scale"] = args.clip_guidance
    if args.clip_contrast_styles is not None:
        styles = [] if args.clip_contrast_styles == "none" else [st.strip() for st in args.clip_contrast_styles.split(",") if st.strip()]
        if args.clip_contrast_styles != "none" and len(styles) < 2:
            raise WordpaintError(f"--clip-contrast-styles needs at least two styles (or none), got {args.clip_contrast_styles!r}")
        pipe.defaults["clip_contrast_styles"] = styles or None
    if args.autoguidance is not None:
        if args.autoguidance and pipe.autoguide is None:
            raise WordpaintError("--autoguidance needs a model with an autoguide (a weaker diffusion model component)")
        pipe.defaults["autoguidance_scale"] = args.autoguidance
    if args.expert_sigma is not None:
        from wordpaint.cli.options import parse_expert_sigma
        from wordpaint.pipelines.text_to_image import check_expert_sigma

        expert_sigma = check_expert_sigma(parse_expert_sigma(args.expert_sigma))
        if expert_sigma is not None and pipe.expert is None:
            raise WordpaintError("--expert-sigma needs a model with an expert (a low-noise diffusion model component)")
        pipe.defaults["expert_sigma"] = expert_sigma
    if args.restore is not None:
        if args.restore == "on" and pipe.restorer is None:
            raise WordpaintError("--restore needs a model with a restorer (a text-conditioned pixel network component)")
        pipe.defaults["restore"] = args.restore == "on"
    if args.refine_strength is not None:
        from wordpaint.cli.options import parse_refine_strength
        from wordpaint.pipelines.text_to_image import check_strength

        pipe.defaults["refine_strength"] = check_strength("--refine-strength", parse_refine_strength(args.refine_strength), off="off")
    if args.guidance_interval is not None:
        from wordpaint.cli.options import parse_interval
        from wordpaint.pipelines.text_to_image import check_interval

        pipe.defaults["guidance_interval"] = check_interval(parse_interval(args.guidance_interval))
    if args.prior_strength is not None:
        from wordpaint.cli.options import parse_prior_strength

        strength = parse_prior_strength(args.prior_strength)
        if strength is not None and pipe.prior is None:
            raise WordpaintError("--prior-strength needs a model with a prior (a latent_prior component)")
        pipe.defaults["prior_strength"] = strength
    common = dict(seed=args.seed, steps=args.steps, guidance=args.guidance)
    if args.suite == "shapes":
        kw = dict(samples_per_prompt=args.samples_per_prompt, limit_per_task=args.limit_per_task, **common)
    elif args.suite == "emoji":
        kw = dict(data=args.data, clip=args.clip, samples_per_cell=args.samples_per_cell, limit_concepts=args.limit_concepts,
                  reference=args.reference, image_embed=args.image_embed or "prior", **common)
    else:
        kw = dict(n_per_class=args.n_per_class, n_real=args.n_real, cas_epochs=args.cas_epochs, **common)
    paths = write_suite_report(pipe, args.suite, args.out, model_name=args.model or "shapes (bundled)", **kw)
    print(paths["markdown"].read_text())
    print(f"wrote {paths['dir']}")
    return 0
