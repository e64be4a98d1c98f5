"""Time the smollm2 planner on 210 prompts (every other built-in prompt + the 60 paraphrases) and
keep its plans, so two checkouts can be compared for speed and for identical plans.

    git worktree add /tmp/wp_before <commit>
    PYTHONPATH=/tmp/wp_before/src python benchmarks/planner_compare.py --label before --out /tmp/before.json
    python benchmarks/planner_compare.py --label after --out /tmp/after.json --against /tmp/before.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", required=True)
    ap.add_argument("--dtype", default="float32", choices=("auto", "float32", "bfloat16"))
    ap.add_argument("--out", required=True, help="JSON: timings and every plan")
    ap.add_argument("--against", default=None, help="an earlier --out file: count identical plans")
    args = ap.parse_args()

    from wordpaint.eval.prompts import PARAPHRASE, load_prompts
    from wordpaint.text.planners import SmolLM2Planner

    prompts = [p["prompt"] for p in load_prompts()][::2] + [p["prompt"] for p in load_prompts(PARAPHRASE)]
    planner = SmolLM2Planner(dtype=args.dtype)
    planner.plan("a red circle")  # warm-up
    passes0 = getattr(planner.lm, "passes", None)
    secs, plans = [], []
    for p in prompts:
        t = time.perf_counter()
        plans.append(planner.plan(p).to_dict())
        secs.append(time.perf_counter() - t)
    s = sorted(secs)
    res = {"label": args.label, "dtype": args.dtype, "n_prompts": len(prompts), "p50_s": s[len(s) // 2],
           "p95_s": s[int(0.95 * (len(s) - 1))], "mean_s": sum(s) / len(s),
           "passes_per_plan": None if passes0 is None else (planner.lm.passes - passes0) / len(prompts), "plans": plans}
    if args.against:
        before = json.loads(Path(args.against).read_text())["plans"]
        res["identical_plans"] = sum(a == b for a, b in zip(before, plans))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "plans"}))


if __name__ == "__main__":
    main()
