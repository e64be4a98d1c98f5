"""Speed-quality curves of the samplers: quality and wall time per image against the number of
steps, for DDIM, DPM-Solver++(2M) and Euler, on one trained model.

    python benchmarks/sampler_curves.py [--model DIR] [--steps 1,2,4,8,16,32,64] [--per-task 10]
    python benchmarks/sampler_curves.py --suite fashion --model DIR [--n-per-class 30] [--n-real 2000]

shapes (default): compositional accuracy (exact scorer) on a fixed subset of the built-in
evaluation set (``--per-task`` per task), one sample each at seed 0. fashion: FID and KID
(EfficientNet-Lite0 features) of ``--n-per-class`` images per class against ``--n-real`` real
test images; few samples bias FID upwards, so compare the points of one curve (KID is unbiased).
Every cell sees the same prompts and the same initial noise. Seconds per image count generation
only (batch 32). Writes ``OUT.json`` and ``OUT.png`` (default benchmarks/results/sampler_curves[_fashion]).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="pipeline folder (default: the bundled model)")
    ap.add_argument("--steps", default="1,2,4,8,16,32,64")
    ap.add_argument("--samplers", default="ddim,dpmpp_2m,euler")
    ap.add_argument("--suite", default="shapes", choices=("shapes", "fashion"))
    ap.add_argument("--per-task", type=int, default=10, help="shapes: prompts per task")
    ap.add_argument("--n-per-class", type=int, default=30, help="fashion: generated images per class and cell")
    ap.add_argument("--n-real", type=int, default=2000, help="fashion: real test images")
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.out = args.out or str(Path(__file__).parent / "results" / ("sampler_curves" + ("" if args.suite == "shapes" else "_fashion")))

    import torch

    from wordpaint import TextToImagePipeline, __version__

    pipe = TextToImagePipeline.from_pretrained(args.model)
    cell = shapes_cell(pipe, args) if args.suite == "shapes" else fashion_cell(pipe, args)
    rows = []
    for sampler in args.samplers.split(","):
        for steps in map(int, args.steps.split(",")):
            row = {"sampler": sampler, "steps": steps, **cell(sampler, steps)}
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "per_task"}), flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    what = (f"built-in compositional_v1, {args.per_task} per task, 1 sample, seed 0" if args.suite == "shapes" else
            f"Fashion-MNIST captions 'a photo of ...', {args.n_per_class} per class, seed 0; {args.n_real} real test images")
    result = {"suite": args.suite, "model": args.model or "bundled shapes48", "prompts": what,
              "guidance_scale": args.guidance if args.guidance is not None else pipe.defaults["guidance_scale"],
              "sigma_schedule": pipe.defaults["sigma_schedule"], "rows": rows, "torch_threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "wordpaint_version": __version__}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, label = (("overall", "compositional accuracy (overall)") if args.suite == "shapes" else
                  ("KID (EfficientNet-Lite0)", "KID (EfficientNet-Lite0), lower is better"))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for sampler in args.samplers.split(","):
        r = [x for x in rows if x["sampler"] == sampler]
        a1.plot([x["steps"] for x in r], [x[key] for x in r], marker="o", label=sampler)
        a2.plot([x["seconds_per_image"] for x in r], [x[key] for x in r], marker="o", label=sampler)
    a1.set_xscale("log", base=2)
    a2.set_xscale("log")
    a1.set_xlabel("sampling steps")
    a2.set_xlabel("seconds per image (batch 32, this machine)")
    for a in (a1, a2):
        a.set_ylabel(label)
        a.grid(alpha=0.3)
        a.legend()
    fig.suptitle(f"wordpaint sampler curves ({args.suite} model)")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


def shapes_cell(pipe, args):
    """(sampler, steps) -> compositional accuracy of the fixed prompt subset, and seconds per image."""
    from wordpaint.eval.compositional import evaluate_compositional
    from wordpaint.eval.prompts import load_prompts, subset

    prompts = subset(load_prompts(), args.per_task)

    def cell(sampler: str, steps: int) -> dict:
        t0 = time.perf_counter()
        summary, _, _ = evaluate_compositional(pipe, prompts, samples_per_prompt=1, seed=0, num_inference_steps=steps,
                                               guidance_scale=args.guidance, sampler=sampler, show_progress=False)
        return {"overall": summary["overall"], "per_task": summary["per_task"],
                "seconds_per_image": (time.perf_counter() - t0) / summary["n_images"], "n_images": summary["n_images"]}

    return cell


def fashion_cell(pipe, args):
    """(sampler, steps) -> FID and KID (EfficientNet-Lite0) against fixed real test images."""
    import warnings

    import numpy as np
    import torch

    from wordpaint.data.fashion_mnist import CLASSES, caption, from_model_images, load_fashion_mnist
    from wordpaint.eval import metrics as M

    xte, _ = load_fashion_mnist("test")
    idx = np.random.default_rng(0).choice(len(xte), min(args.n_real, len(xte)), replace=False)
    real, _ = M.extract(torch.from_numpy(xte[idx].copy()).unsqueeze(1), show_progress=True, what="real test images")
    prompts = [caption(c) for c in range(len(CLASSES))]

    def cell(sampler: str, steps: int) -> dict:
        t0 = time.perf_counter()
        out = pipe(prompts, num_images_per_prompt=args.n_per_class, seed=0, num_inference_steps=steps,
                   guidance_scale=args.guidance, sampler=sampler, batch_size=32)
        dt = time.perf_counter() - t0
        gen = from_model_images(out.images)  # (N, 28, 28) uint8
        fake, _ = M.extract(gen.unsqueeze(1), what="generated images")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", M.FewSamplesWarning)  # stated in the report: few samples, compare within the curve
            fid = M.fid_from_features(real, fake)
            kid = M.kid_from_features(real, fake, subsets=50, subset_size=min(1000, len(fake)), seed=0)
        return {f"FID ({M.FEATURES_NAME})": fid, f"KID ({M.FEATURES_NAME})": kid[0], "seconds_per_image": dt / len(gen),
                "n_images": len(gen)}

    return cell


if __name__ == "__main__":
    main()
