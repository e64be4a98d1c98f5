"""Two ways to get autoguidance's "weaker model" without shipping one, measured on the dev cells.

    python benchmarks/weightfree_guidance_emoji.py pag --settings mid:2:1 mid:2:2 mid:1:2 all:2:1 --out FILE
    python benchmarks/weightfree_guidance_emoji.py extrapolate --weak DIR --alpha 0.5 --out PIPELINE_DIR

``pag``: perturbed-attention guidance (Ahn et al. 2024): the weaker estimate is the model's own with
the self-attention maps of some blocks (``mid``, ``up`` or ``all``) replaced by the identity, so
each token keeps its own value; a setting is ``blocks:guidance:pag_scale`` and the pipeline's
``autoguidance_scale`` is the PAG scale. ``extrapolate``: weight-space extrapolation (ExPO, Zheng et
al. 2024), theta = theta_bundled + alpha * (theta_bundled - theta_weak), one UNet of the same size
and cost, written as a pipeline folder to judge with ``tune_emoji.py --model``. Neither helped the
bundled emoji model (README, "Autoguidance").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


class IdentityAttention:
    """A diffusers attention processor whose attention map is the identity: out(to_v(x))."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        x = attn.to_out[1](attn.to_out[0](attn.to_v(hidden_states)))  # (B, N, C)
        if attn.residual_connection:
            x = x + hidden_states
        return x / attn.rescale_output_factor


class PerturbedAttention:
    """``denoise`` of ``model`` with the self-attention (attn1) of the blocks under ``prefixes`` perturbed."""

    def __init__(self, model, prefixes: list[str]):
        self.model = model
        self.mods = [m for n, m in model.unet.named_modules() if type(m).__name__ == "Attention" and n.endswith("attn1")
                     and any(n.startswith(p) for p in prefixes)]

    def denoise(self, *args):
        old = [m.processor for m in self.mods]
        for m in self.mods:
            m.processor = IdentityAttention()
        try:
            return self.model.denoise(*args)
        finally:
            for m, p in zip(self.mods, old):
                m.processor = p


BLOCKS = {"mid": ["mid_block"], "up": ["up_blocks"], "all": ["down_blocks", "mid_block", "up_blocks"]}


def run_pag(args) -> None:
    from tune_emoji import dev_set, judge_dev
    from wordpaint import TextToImagePipeline
    from wordpaint.models.clip import WordpaintClip

    pipe = TextToImagePipeline.from_pretrained(args.model)
    clip = WordpaintClip.from_pretrained()
    names, vocab, cells, prompts, by_cell = dev_set(args.data, args.concepts)
    real = [by_cell[c] for c in cells]
    rows = []
    for spec in args.settings:
        blocks, g, s = spec.split(":")
        pipe.autoguide = PerturbedAttention(pipe.model, BLOCKS[blocks])  # stands in for a weaker model
        t0 = time.perf_counter()
        ims = pipe(prompts, seed=0, guidance_scale=float(g), autoguidance_scale=float(s), batch_size=64).images
        row = {"perturbed_self_attention": blocks, "guidance_scale": float(g), "pag_scale": float(s),
               **judge_dev(clip, ims, cells, vocab, names, real), "seconds_per_image": round((time.perf_counter() - t0) / len(prompts), 4)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "judge": "bundled wordpaint-clip", "clip_guidance_scale": pipe.defaults["clip_guidance_scale"],
                                          "dev": f"{args.concepts} of 240 dev concepts (seed 7) x 3 styles", "rows": rows}, indent=2) + "\n")


def run_extrapolate(args) -> None:
    from wordpaint import TextToImagePipeline
    from wordpaint.pipelines.text_to_image import load_model

    pipe = TextToImagePipeline.from_pretrained(args.model, planner=None)
    model = load_model(args.weak)  # the weaker UNet, loaded once: its weights, then the extrapolated ones
    weak = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict({k: v + args.alpha * (v - weak[k]) if v.is_floating_point() else v for k, v in pipe.model.state_dict().items()})
    pipe.with_component("diffusion", model).save_pretrained(args.out)
    print(f"wrote {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("pag")
    p.add_argument("--model", default="emoji")
    p.add_argument("--data", default="data/emoji")
    p.add_argument("--concepts", type=int, default=100)
    p.add_argument("--settings", nargs="+", default=["mid:2:1"], help="blocks:guidance:pag_scale (blocks: mid, up, all)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "emoji_embed" / "autoguide" / "pag_dev.json"))
    e = sub.add_parser("extrapolate")
    e.add_argument("--model", default="emoji")
    e.add_argument("--weak", required=True, help="the weaker UNet's folder (config.json + model.safetensors)")
    e.add_argument("--alpha", type=float, default=0.5)
    e.add_argument("--out", required=True)
    args = ap.parse_args()
    run_pag(args) if args.what == "pag" else run_extrapolate(args)


if __name__ == "__main__":
    main()
