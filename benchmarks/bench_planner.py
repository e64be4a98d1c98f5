"""How fast does the smollm2 planner plan, and does its weight precision change the plans?

    python benchmarks/bench_planner.py [--dtypes float32,bfloat16] [--repeats 2] [--out benchmarks/results/planner.json]

Plans every built-in compositional prompt (300) and every paraphrase (60) with the SmolLM2 planner
in each precision, uncached, after one warm-up. The precisions take turns, ``--repeats`` rounds,
so a change in the machine's speed during the run hits all of them alike. Reports per set and
precision: plan accuracy (each plan drawn exactly and scored: what a perfect generator would
get), validity, latency p50 / p95 / mean over the prompts (each prompt's median over the rounds),
and how many plans differ from the first precision's. ``--baseline DIR`` also times the planner
of another checkout (``git worktree add DIR COMMIT``) in its own process, for before/after figures,
and counts the plans that differ from its plans.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from plan_ablation import percentile, plan_accuracy, plan_all  # noqa: E402


def baseline_run(folder: str, sets: dict[str, list[dict]]) -> tuple[dict[str, list[float]], dict[str, list[dict]]]:
    """Per-prompt planning seconds and plans (as dicts) of the smollm2 planner in another checkout,
    run in a child process (its own ``wordpaint`` import) with its default settings."""
    code = ("import json, sys, time, torch; torch.set_num_threads(%d)\n"
            "from wordpaint.text.planners import SmolLM2Planner\n"
            "sets = json.load(sys.stdin); p = SmolLM2Planner(); p.plan('a red circle'); out, plans = {}, {}\n"
            "for k, ps in sets.items():\n"
            "    out[k], plans[k] = [], []\n"
            "    for q in ps:\n"
            "        t = time.perf_counter(); plans[k].append(p.plan(q).to_dict()); out[k].append(time.perf_counter() - t)\n"
            "print(json.dumps([out, plans]))\n") % torch.get_num_threads()
    env = {**os.environ, "PYTHONPATH": str(Path(folder) / "src"), "HF_HUB_OFFLINE": "1"}
    prompts = {k: [p["prompt"] for p in v] for k, v in sets.items()}
    res = subprocess.run([sys.executable, "-c", code], input=json.dumps(prompts), capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"baseline in {folder} failed:\n{res.stderr[-2000:]}")
    secs, plans = json.loads(res.stdout.strip().splitlines()[-1])
    return secs, plans


def _cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo): planner latency depends on it (memory
    bandwidth, bf16 instructions) more than on anything else."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--baseline", default=None, help="another checkout's root: time its smollm2 planner too")
    ap.add_argument("--out", default="benchmarks/results/planner.json")
    args = ap.parse_args()
    if args.repeats < 1:
        sys.exit(f"--repeats must be >= 1, got {args.repeats}")

    from wordpaint.eval.prompts import PARAPHRASE, load_prompts
    from wordpaint.io import write_json
    from wordpaint.text.plan import is_valid
    from wordpaint.text.planners import SmolLM2Planner, _cpu_has_bf16

    dtypes = args.dtypes.split(",")
    sets = {"builtin": load_prompts(), "paraphrase": load_prompts(PARAPHRASE)}
    planners = {d: SmolLM2Planner(dtype=d) for d in dtypes}
    for p in planners.values():
        p.plan("a red circle")  # warm-up
    secs: dict = {d: {k: [] for k in sets} for d in dtypes}
    secs["baseline"] = {k: [] for k in sets}
    plans: dict = {d: {} for d in dtypes}
    passes: dict = {d: {} for d in dtypes}  # model passes per plan, per set
    for r in range(args.repeats):
        runs = dtypes + (["baseline"] if args.baseline else [])
        for d in runs:
            print(f"round {r + 1}/{args.repeats}: {d}", flush=True)
            if d == "baseline":
                run_secs, plans["baseline"] = baseline_run(args.baseline, sets)
                for k, v in run_secs.items():
                    secs[d][k].append(v)
                continue
            for k, prompts in sets.items():
                p0 = planners[d].lm.passes
                plans[d][k], s = plan_all(planners[d], prompts)
                passes[d][k] = (planners[d].lm.passes - p0) / len(prompts)
                secs[d][k].append(s)

    results: dict = {"settings": {**vars(args), "machine": platform.processor() or platform.machine(), "cpu": _cpu_model(),
                                  "cpu_has_bf16": _cpu_has_bf16(), "torch_threads": torch.get_num_threads(),
                                  "torch": torch.__version__}, "sets": {}}
    for k, prompts in sets.items():
        out: dict = {}
        for d in dtypes + (["baseline"] if args.baseline else []):
            per_prompt = [statistics.median(xs) for xs in zip(*secs[d][k])]
            e = {"latency_p50_s": percentile(per_prompt, 0.5), "latency_p95_s": percentile(per_prompt, 0.95),
                 "latency_mean_s": statistics.fmean(per_prompt),
                 "total_s_per_round": [round(sum(xs), 2) for xs in secs[d][k]]}
            if d != "baseline":
                e["plan_accuracy"] = plan_accuracy(plans[d][k], prompts, 48)["overall"]
                e["validity"] = sum(is_valid(p) for p in plans[d][k]) / len(prompts)
                e["plans_differing_from_" + dtypes[0]] = sum(a.to_dict() != b.to_dict() for a, b in zip(plans[d][k], plans[dtypes[0]][k]))
                e["model_passes_per_plan"] = passes[d][k]
                if args.baseline:
                    e["plans_differing_from_baseline"] = sum(a.to_dict() != b for a, b in zip(plans[d][k], plans["baseline"][k]))
            out[d] = e
            print(f"[{k}] {d}: " + ", ".join(f"{n} {v:.3f}" if isinstance(v, float) else f"{n} {v}" for n, v in e.items()), flush=True)
        results["sets"][k] = out
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
