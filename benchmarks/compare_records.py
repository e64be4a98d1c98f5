"""Compare the per-image records of two plan_ablation runs on the same prompts and seeds: which
images flipped, per task, and which backgrounds were drawn where a prompt names one.

    python benchmarks/compare_records.py RUN_A/records_builtin_ground_truth.jsonl RUN_B/records_builtin_ground_truth.jsonl

Prints a table and, with --out, writes it as JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path


def read(path: Path) -> dict:
    """(prompt, seed) -> record."""
    try:
        return {(r["prompt"], r["seed"]): r for r in map(json.loads, path.read_text().splitlines())}
    except (OSError, json.JSONDecodeError, KeyError) as e:
        sys.exit(f"cannot read records {path}: {e}")


def compare(a: dict, b: dict) -> dict:
    """Per task: (a right, b right) counts; backgrounds named by the prompt -> drawn, for each run."""
    from wordpaint.eval.prompts import load_prompts

    specs = {p["prompt"]: p["spec"] for p in load_prompts()}
    if a.keys() != b.keys():
        sys.exit("the two runs drew different prompts or seeds; compare runs of the same set and --seed")
    flips: dict = collections.defaultdict(collections.Counter)
    backgrounds = {"a": collections.Counter(), "b": collections.Counter()}
    bg_right = {"a": 0, "b": 0}
    for k, ra in a.items():
        rb = b[k]
        flips[ra["task"]][f"{'right' if ra['correct'] else 'wrong'}->{'right' if rb['correct'] else 'wrong'}"] += 1
        asked = specs.get(k[0], {}).get("background")
        if asked:
            for run, r in (("a", ra), ("b", rb)):
                backgrounds[run][f"{asked}->{r['background']}"] += 1
                bg_right[run] += r["background"] == asked
    return {"flips": {t: dict(c) for t, c in flips.items()}, "backgrounds": {r: dict(c) for r, c in backgrounds.items()},
            "backgrounds_right": bg_right, "backgrounds_named": sum(backgrounds["a"].values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    res = compare(read(args.a), read(args.b))
    print(f"A = {args.a}\nB = {args.b}\n\n| task | right->right | right->wrong | wrong->right | wrong->wrong |\n|---|---|---|---|---|")
    for t, c in res["flips"].items():
        print(f"| {t} | " + " | ".join(str(c.get(k, 0)) for k in ("right->right", "right->wrong", "wrong->right", "wrong->wrong")) + " |")
    n = res["backgrounds_named"]
    for run in ("a", "b"):
        print(f"\nbackgrounds right, run {run.upper()}: {res['backgrounds_right'][run]} / {n}; asked->drawn: "
              + ", ".join(f"{k} {v}" for k, v in sorted(res["backgrounds"][run].items())))
    if args.out:
        from wordpaint.io import write_json

        write_json(args.out, {"a": str(args.a), "b": str(args.b), **res})


if __name__ == "__main__":
    main()
