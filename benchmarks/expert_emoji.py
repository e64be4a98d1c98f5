"""A low-noise expert for the emoji model, measured on the dev cells before the pipeline grows a
component for it (eDiff-I's ensemble of expert denoisers, Balaji et al. 2022, cut to two).

    python benchmarks/expert_emoji.py --expert runs/lownoise_expert/pipeline --switch 0 0.2 0.4 0.6 --out FILE

The pipeline's UNet denoises every step above sigma S, the expert (a copy of it fine-tuned only on
low noise levels, recipe ``emoji64_embed_lownoise_expert``) every step at or below S; S = 0 leaves
every step to the pipeline's UNet (the bundle as shipped). Everything else is the pipeline's
defaults (sampler, steps, guidance, guide, the embedding prior's vector); the cells, seed and judge
are ``tune_emoji.py``'s (100 dev concepts x 3 styles, seed 0, wordpaint-clip zero-shot).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


class SigmaSwitch:
    """The denoiser ``plain`` above sigma ``switch`` and ``expert`` at or below it (both
    ``denoise(x, sigma, *inputs)`` callables); records the sigmas each one was called at (rounded),
    so a row says which steps the expert took."""

    def __init__(self, plain, expert, switch: float):
        self.denoisers, self.switch = {"model": plain, "expert": expert}, switch
        self.calls: dict[str, set[float]] = {"model": set(), "expert": set()}

    def denoise(self, x, sigma, *args):
        who = "expert" if float(sigma) <= self.switch else "model"
        self.calls[who].add(round(float(sigma), 4))
        return self.denoisers[who](x, sigma, *args)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="emoji", help="the pipeline (default: the bundled emoji model)")
    ap.add_argument("--expert", required=True, help="the expert: a diffusion model folder, or a run's pipeline folder holding one")
    ap.add_argument("--switch", nargs="+", type=float, default=[0.0, 0.2, 0.4], metavar="SIGMA",
                    help="hand the steps at or below this sigma to the expert (0: none)")
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--concepts", type=int, default=100, help="dev concepts drawn (x 3 styles); the vocabulary stays 240")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "emoji_embed" / "lownoise_expert" / "tune_dev.json"))
    args = ap.parse_args()
    if any(s < 0 for s in args.switch):
        raise SystemExit(f"--switch: sigmas must be >= 0, got {args.switch}")

    from tune_emoji import dev_set, judge_dev
    from wordpaint import TextToImagePipeline
    from wordpaint.models.clip import WordpaintClip
    from wordpaint.pipelines.text_to_image import component_folder, load_model

    pipe = TextToImagePipeline.from_pretrained(args.model)
    expert = load_model(component_folder(args.expert, "diffusion")).to(next(pipe.model.parameters()).dtype)
    plain = pipe.model.denoise
    clip = WordpaintClip.from_pretrained()
    names, vocab, cells, prompts, by_cell = dev_set(args.data, args.concepts)
    real = [by_cell[c] for c in cells]
    rows = []
    for s in args.switch:
        switch = SigmaSwitch(plain, expert.denoise, s)  # the unpatched denoiser, whatever ran before
        pipe.model.denoise = switch.denoise  # an instance attribute: the pipeline's loop calls it
        t0 = time.perf_counter()
        try:
            ims = pipe(prompts, seed=0, batch_size=64).images
        finally:
            pipe.model.denoise = plain
        row = {"switch_sigma": s, "expert_sigmas": sorted(switch.calls["expert"], reverse=True),
               **judge_dev(clip, ims, cells, vocab, names, real), "seconds_per_image": round((time.perf_counter() - t0) / len(prompts), 4)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "expert": args.expert, "judge": "bundled wordpaint-clip",
                                          "defaults": pipe.defaults, "dev": f"{args.concepts} of 240 dev concepts (seed 7) x 3 styles",
                                          "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
