"""A low-noise expert for the emoji model, measured on the dev cells (eDiff-I's ensemble of expert
denoisers, Balaji et al. 2022, cut to two).

    python benchmarks/expert_emoji.py --expert runs/lownoise_expert/pipeline --switch 0 0.2 0.4 0.6 --out FILE
    python benchmarks/expert_emoji.py --expert runs/lownoise_expert/pipeline --switch 0 --refine 0.3 0.4 --out FILE

The pipeline gets the expert as its ``expert`` component (a copy of its UNet fine-tuned only on low
noise levels, recipe ``emoji64_embed_lownoise_expert``) and draws with ``expert_sigma`` S: the
pipeline's UNet denoises every step above sigma S, the expert every step at or below it; S = 0
leaves every step to the pipeline's UNet (the bundle as shipped). ``--refine`` S adds rows drawn
with ``refine_strength`` S instead (SDXL's refiner: img2img of each finished picture at strength S,
every step by the expert; ``--refine-by model``: by the pipeline's UNet, no expert needed).
``--guidance-interval`` changes
where guidance applies for every row (e.g. ``none``: the expert's last step guided too). Everything
else is the pipeline's defaults (sampler, steps, guidance, guide, the embedding prior's vector);
the cells, seed and judge are ``tune_emoji.py``'s (100 dev concepts x 3 styles, seed 0,
wordpaint-clip zero-shot).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    from tune_emoji import add_dev_args, dev_sweep

    ap = argparse.ArgumentParser()
    add_dev_args(ap, out=str(Path(__file__).parent / "results" / "emoji_embed" / "lownoise_expert" / "tune_dev.json"))
    ap.add_argument("--expert", default=None,
                    help="the expert: a diffusion model folder, or a run's pipeline folder holding one (default: the model's own)")
    ap.add_argument("--switch", nargs="+", type=float, default=[0.0, 0.2, 0.4], metavar="SIGMA",
                    help="hand the steps at or below this sigma to the expert (0: none)")
    ap.add_argument("--refine", nargs="*", type=float, default=[], metavar="S", help="rows with a refine pass at these strengths")
    ap.add_argument("--refine-by", default="expert", choices=("expert", "model"), help="who draws the refine pass")
    ap.add_argument("--guidance-interval", default=None, metavar="LO,HI|none", help="for every row (default: the model's)")
    args = ap.parse_args()
    if any(s < 0 for s in args.switch):
        raise SystemExit(f"--switch: sigmas must be >= 0, got {args.switch}")

    from wordpaint import TextToImagePipeline
    from wordpaint.cli.options import parse_interval
    from wordpaint.pipelines.text_to_image import INDEX_KEYS, check_interval, component_folder, load_model

    pipe = TextToImagePipeline.from_pretrained(args.model)
    if args.expert is not None:
        pipe = pipe.with_component("expert", load_model(component_folder(args.expert, "expert")))
    if pipe.expert is None and (any(args.switch) or (args.refine and args.refine_by == "expert")):
        raise SystemExit(f"{args.model} has no expert component: pass --expert")
    # the same pipeline without its expert: refine passes by the model
    parts = {INDEX_KEYS[folder]: m for folder, m in pipe.components().items() if folder != "expert"}
    plain = TextToImagePipeline(text_encoder=pipe.text_encoder, defaults=dict(pipe.defaults), planner=pipe.planner, **parts)
    interval = parse_interval(args.guidance_interval)
    if interval != "default":
        pipe.defaults["guidance_interval"] = check_interval(interval)
    # the levels the sampler calls the denoiser at (the schedule's last entry, 0, is never called)
    called = pipe.model.sigmas(pipe.defaults["num_inference_steps"], pipe.defaults["sigma_schedule"])[:-1].tolist()

    def draw(value: tuple[str, float], prompts: list[str]) -> list:
        kind, v = value
        if kind == "switch":
            return pipe(prompts, seed=0, batch_size=64, expert_sigma=v or None).images
        return (pipe if args.refine_by == "expert" else plain)(prompts, seed=0, batch_size=64, expert_sigma=None, refine_strength=v).images

    def row(value: tuple[str, float]) -> dict:
        kind, v = value
        if kind == "switch":
            return {"switch_sigma": v, "expert_sigmas": [round(c, 4) for c in called if c <= v]}
        return {"refine_strength": v, "refined_by": args.refine_by}

    dev_sweep(pipe, [("switch", s) for s in args.switch] + [("refine", r) for r in args.refine], draw=draw, row=row,
              data=args.data, concepts=args.concepts, out=args.out, meta={"model": args.model, "expert": args.expert or "the model's own"})


if __name__ == "__main__":
    main()
