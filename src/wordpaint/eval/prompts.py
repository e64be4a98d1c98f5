"""The built-in compositional evaluation prompts (shapes world v1).

``compositional_v1.jsonl`` is generated once by :func:`generate_prompt_set` and committed, so
the benchmark does not drift when the caption grammar changes. Each line:
{"prompt", "task", "spec", "held_out"}. About a third of the prompts of tasks that name
colours use a held-out colour-shape pair.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from wordpaint.data.captions import TASKS, caption_for, sample_spec, spec_pairs
from wordpaint.data.shapes import HELD_OUT_PAIRS
from wordpaint.errors import WordpaintError

BUILTIN = Path(__file__).resolve().parent / "prompts" / "compositional_v1.jsonl"
COLORED_TASKS = ("colors", "color_attr", "position", "counting")


def generate_prompt_set(*, per_task: int = 50, seed: int = 2026) -> list[dict]:
    """Deterministic prompt set: ``per_task`` distinct prompts per task."""
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for task in TASKS:
        seen: set[str] = set()
        i = 0
        while len(seen) < per_task:
            held = task in COLORED_TASKS and i % 3 == 0
            spec = sample_spec(rng, task, exclude=HELD_OUT_PAIRS, held_out=held, p_size=0.0)
            text = caption_for(spec, rng)
            i += 1
            if text in seen:
                continue
            seen.add(text)
            spec["objects"] = [{"shape": o["shape"], "color": o["color"]} for o in spec["objects"]]
            out.append({"prompt": text, "task": task, "spec": spec, "held_out": bool(spec_pairs(spec) & HELD_OUT_PAIRS)})
    return out


def load_prompts(path: str | os.PathLike | None = None) -> list[dict]:
    """Load a prompt file (JSONL of {"prompt", "spec", ...}); None loads the built-in set."""
    path = Path(path) if path else BUILTIN
    if not path.is_file():
        raise WordpaintError(f"prompt file not found: {path}")
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise WordpaintError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(d, dict) or not isinstance(d.get("prompt"), str) or not isinstance(d.get("spec"), dict):
            raise WordpaintError(f"{path}:{n}: each line needs a string 'prompt' and an object 'spec'")
        task = d["spec"].get("task")
        if task not in TASKS:
            raise WordpaintError(f"{path}:{n}: unknown task {task!r}; expected one of: {', '.join(TASKS)}")
        d.setdefault("task", task)
        d.setdefault("held_out", bool(spec_pairs(d["spec"]) & HELD_OUT_PAIRS))
        items.append(d)
    if not items:
        raise WordpaintError(f"prompt file {path} holds no prompts")
    return items


def subset(prompts: list[dict], per_task: int) -> list[dict]:
    """The first ``per_task`` prompts of each task (for quick scores during training)."""
    counts: dict[str, int] = {}
    out = []
    for p in prompts:
        if counts.get(p["task"], 0) < per_task:
            counts[p["task"]] = counts.get(p["task"], 0) + 1
            out.append(p)
    return out


if __name__ == "__main__":  # regenerate the committed file: python -m wordpaint.eval.prompts
    BUILTIN.parent.mkdir(parents=True, exist_ok=True)
    BUILTIN.write_text("".join(json.dumps(p) + "\n" for p in generate_prompt_set()))
    print(f"wrote {BUILTIN}")
