"""Compositional evaluation on the shapes world: generate for each prompt, score exactly,
aggregate per task (GenEval's six), overall (mean of the six) and held-out-pair accuracy."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from wordpaint.data.captions import TASKS
from wordpaint.eval.scorer import score_image
from wordpaint.images import make_grid, pil_to_array
from wordpaint.io import write_json, write_text


def aggregate(records: list[dict]) -> dict:
    """Per-task accuracy, overall = mean over the tasks present, held-out and seen-pair accuracy."""
    per_task = {}
    for t in TASKS:
        rs = [r["correct"] for r in records if r["task"] == t]
        if rs:
            per_task[t] = float(np.mean(rs))
    held = [r["correct"] for r in records if r["held_out"]]
    seen = [r["correct"] for r in records if not r["held_out"] and r["task"] in ("colors", "color_attr", "position", "counting")]
    return {
        "per_task": per_task,
        "overall": float(np.mean(list(per_task.values()))) if per_task else float("nan"),
        "held_out_pairs": float(np.mean(held)) if held else None,
        "seen_pairs_same_tasks": float(np.mean(seen)) if seen else None,
        "n_images": len(records),
        "n_held_out_images": len(held),
    }


def evaluate_compositional(
    pipe,
    prompts: list[dict],
    *,
    samples_per_prompt: int = 4,
    seed: int = 0,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    sampler: str | None = None,
    sigma_schedule: str | None = None,
    guidance_interval: tuple[float, float] | None | str = "default",
    layout_guidance_scale: float | None | str = "default",
    text_guidance_scale: float | None | str = "default",
    batch_size: int = 32,
    plans: list | None = None,
    regional_prompts: bool = False,
    size: int | None = None,
    show_progress: bool = True,
    **options,
) -> tuple[dict, list[dict], list]:
    """Generate ``samples_per_prompt`` images per prompt and score them. ``plans`` (one
    ScenePlan per prompt) replaces the pipeline's planner, e.g. with ground-truth layouts.
    ``size`` draws square images of that side instead of the model's training resolution.
    ``options`` go to the pipeline's call as they are (e.g. ``detail=True``).

    Returns (summary, per-image records, images). Prompt j's samples use seeds
    seed + j * samples_per_prompt + k, so any subset reproduces the same images."""
    from tqdm.auto import tqdm

    records, images = [], []
    t0 = time.perf_counter()
    per_batch = max(1, batch_size // samples_per_prompt)
    bar = None
    for start in range(0, len(prompts), per_batch):
        chunk = prompts[start : start + per_batch]
        # image k of prompt j gets seed + j * K + k: the pipeline numbers images from its seed
        out = pipe([p["prompt"] for p in chunk], num_images_per_prompt=samples_per_prompt, seed=seed + start * samples_per_prompt,
                   num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, sampler=sampler,
                   sigma_schedule=sigma_schedule, guidance_interval=guidance_interval,
                   layout_guidance_scale=layout_guidance_scale, text_guidance_scale=text_guidance_scale, batch_size=batch_size,
                   plans=None if plans is None else plans[start : start + per_batch], regional_prompts=regional_prompts,
                   height=size, width=size, **options)
        for n, (img, meta) in enumerate(zip(out.images, out.metadata)):
            p = chunk[n // samples_per_prompt]
            s = score_image(pil_to_array(img), p["spec"])
            records.append({"prompt": p["prompt"], "task": p["task"], "held_out": bool(p.get("held_out")),
                            "seed": meta["seed"], "correct": s["correct"], "detected": s["objects"], "background": s["background"]})
            images.append(img)
        if bar is None:  # opened after the first batch, so a setting the pipeline refuses fails before any progress output
            bar = tqdm(total=len(prompts) * samples_per_prompt, desc="eval", unit="img", disable=not show_progress)
        bar.update(len(out.images))
    if bar is not None:
        bar.close()
    summary = aggregate(records)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary, records, images


def ground_truth_plan(item: dict, *, seed: int = 0, size: int = 64):
    """The upper-bound plan of an evaluation prompt: a shapes-world scene sampled for its spec
    (exactly what a training layout looks like), with only the attributes the prompt names."""
    from wordpaint.data.captions import scene_for
    from wordpaint.text.layout import layout_from_example
    from wordpaint.text.plan import PlanObject, ScenePlan

    spec = item["spec"]
    scene = scene_for(spec, np.random.default_rng([seed, 17]), size=size, exclude=frozenset())
    objects, background = layout_from_example(spec, scene)
    objs = [PlanObject(" ".join(w for w in (o.color, o.shape) if w), o.shape, o.color, None, o.box) for o in objects]
    return ScenePlan(item["prompt"], objs, background, "flat")


def markdown_table(summary: dict, *, title: str = "Compositional accuracy (shapes world v1)") -> str:
    rows = [f"### {title}", "", "| task | accuracy |", "|---|---|"]
    rows += [f"| {t} | {v:.3f} |" for t, v in summary["per_task"].items()]
    rows.append(f"| **overall** (mean of tasks) | **{summary['overall']:.3f}** |")
    if summary.get("held_out_pairs") is not None:
        rows.append(f"| held-out colour-shape pairs ({summary['n_held_out_images']} images) | {summary['held_out_pairs']:.3f} |")
        rows.append(f"| seen pairs, same tasks | {summary['seen_pairs_same_tasks']:.3f} |")
    return "\n".join(rows) + "\n"


def write_report(out_dir: str | os.PathLike, summary: dict, records: list[dict], images: list, *, settings: dict, grid_cols: int = 16, grid_max: int = 192) -> dict[str, Path]:
    """results.json (summary, settings, per-image records), results.md and samples.png."""
    out = Path(out_dir)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "grid": out / "samples.png"}
    write_json(paths["json"], {"summary": summary, "settings": settings, "records": records})
    write_text(paths["markdown"], markdown_table(summary) + "\n" + "\n".join(f"- {k}: `{v}`" for k, v in settings.items()) + "\n")
    # a grid with a spread of tasks: take images evenly across the run
    idx = np.linspace(0, len(images) - 1, min(grid_max, len(images))).round().astype(int)
    grid = make_grid([images[i] for i in idx], cols=grid_cols, scale=2, marks=[records[i]["correct"] for i in idx])
    from wordpaint.images import save_png

    save_png(grid, paths["grid"])
    return paths
