"""The built-in compositional evaluation prompts (shapes world v1).

``compositional_v1.jsonl`` is generated once by :func:`generate_prompt_set` and committed, so
the benchmark does not drift when the caption grammar changes. Each line:
{"prompt", "task", "spec", "held_out"}. About a third of the prompts of tasks that name
colours use a held-out colour-shape pair.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from wordpaint.data.captions import TASKS, caption_for, sample_spec, spec_pairs
from wordpaint.data.shapes import HELD_OUT_PAIRS
from wordpaint.errors import WordpaintError

BUILTIN = Path(__file__).resolve().parent / "prompts" / "compositional_v1.jsonl"
PARAPHRASE = Path(__file__).resolve().parent / "prompts" / "paraphrase_v1.jsonl"
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
            text = re.sub(r"\ba (?=[aeiou])", "an ", text)
            if text in seen:
                continue
            seen.add(text)
            spec["objects"] = [{"shape": o["shape"], "color": o["color"]} for o in spec["objects"]]
            out.append({"prompt": text, "task": task, "spec": spec, "held_out": bool(spec_pairs(spec) & HELD_OUT_PAIRS)})
    return out


# Phrasings outside the caption grammar (the rules parser was not written for them): object
# order inverted by the relation word, attributes after the noun, counts after the noun, ...
_PARA = {
    "single_object": ("draw one {s}", "I would like to see a lone {s}", "just a single {s}, nothing else", "could you make a {s}?"),
    "colors": ("a {s} coloured {c}", "a {s} that is {c}", "paint a {s} in {c}", "one {s}, {c} in colour"),
    "two_object": ("both a {s} and a {s2}", "a {s} plus a {s2}", "one {s}, one {s2}", "a {s} as well as a {s2}"),
    "color_attr": ("a {s} in {c} and a {s2} in {c2}", "the {s} is {c} and the {s2} is {c2}", "a {c}-coloured {s} together with a {c2} {s2}"),
    "position": ("a {c2} {s2} with a {c} {s} {rel_side}", "a {c} {s} placed {rel_word} a {c2} {s2}", "put a {c} {s} {rel_word} a {c2} {s2}"),
    "counting": ("exactly {n} {ss}", "a group of {n} {c} {ss}", "{ss}, {n} of them", "{n} {c} {ss} in total"),
}
_SIDE = {"left_of": "to its left", "right_of": "to its right", "above": "over it", "below": "under it"}  # "a square with a circle to its left": circle left_of square
_REL_WORD = {"left_of": "further left than", "right_of": "further right than", "above": "higher up than", "below": "lower down than"}


def generate_paraphrase_set(*, per_task: int = 10, seed: int = 7) -> list[dict]:
    """Prompts of the six tasks in phrasings the caption grammar never produces, for testing
    planners beyond the grammar they were shown (specs follow the built-in set's format)."""
    from wordpaint.data.captions import NUMBER_WORDS, PLURALS

    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for task in TASKS:
        seen: set[str] = set()
        while len(seen) < per_task:
            spec = sample_spec(rng, task, exclude=HELD_OUT_PAIRS, p_size=0.0, p_background=0.0)
            objs = spec["objects"]
            if task in ("colors", "color_attr", "position"):  # these templates name the colours
                if any(o["color"] is None for o in objs):
                    continue
            templates = _PARA[task]
            tpl = templates[int(rng.integers(len(templates)))]
            o0, o1 = objs[0], objs[-1]
            if "{c}" in tpl and o0["color"] is None:
                continue
            if "{c}" not in tpl:  # the prompt names no colour, so the spec asks for none
                o0["color"] = None
            if len(objs) > 1 and "{c2}" not in tpl:
                o1["color"] = None
            text = tpl.format(s=o0["shape"], c=o0["color"], s2=o1["shape"], c2=o1["color"], ss=PLURALS[o0["shape"]],
                              n=NUMBER_WORDS.get(spec["count"] or 0, spec["count"]), rel_side=_SIDE.get(spec["relation"] or "", ""),
                              rel_word=_REL_WORD.get(spec["relation"] or "", ""))
            text = re.sub(r"\ba (?=[aeiou])", "an ", text)
            if text in seen:
                continue
            seen.add(text)
            spec["objects"] = [{"shape": o["shape"], "color": o["color"]} for o in objs]
            out.append({"prompt": text, "task": task, "spec": spec, "held_out": False})
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


if __name__ == "__main__":  # regenerate the committed files: python -m wordpaint.eval.prompts
    BUILTIN.parent.mkdir(parents=True, exist_ok=True)
    for path, items in ((BUILTIN, generate_prompt_set()), (PARAPHRASE, generate_paraphrase_set())):
        path.write_text("".join(json.dumps(p) + "\n" for p in items))
        print(f"wrote {path}")
