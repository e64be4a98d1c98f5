"""Choose the Fashion-MNIST suite's sampling settings on a *dev* split, never on the test set.

    python benchmarks/tune_fashion.py --model DIR [--n-per-class 200] [--settings 6:1 6:1.5 6:2 6:3]

For each ``steps:guidance`` setting: generate ``--n-per-class`` images per class (seed 7; the
suite uses seed 0), train the fixed CAS classifier (:mod:`wordpaint.eval.cas`) on them and score
it on real *training* images 50,000-60,000 (the suite's CAS is scored on the real test set and its
real reference trains on images 0-10,000, so neither overlaps). Few generated images lower the
accuracy against the suite's 1,000 per class; compare the rows with one another. Writes JSON
(default benchmarks/results/tune_fashion.json) with seconds per image at batch 64.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="pipeline folder of a Fashion-MNIST model (recipe fashion32)")
    ap.add_argument("--n-per-class", type=int, default=200)
    ap.add_argument("--settings", nargs="+", default=["6:1", "6:1.5", "6:2", "6:3"], help="steps:guidance ...")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "tune_fashion.json"))
    args = ap.parse_args()

    import torch

    from wordpaint import TextToImagePipeline
    from wordpaint.data.fashion_mnist import CLASSES, caption, from_model_images, load_fashion_mnist, to_model_images
    from wordpaint.eval.cas import CASConfig, accuracy, train_classifier

    pipe = TextToImagePipeline.from_pretrained(args.model)
    xtr, ytr = load_fashion_mnist("train")
    x_dev, y_dev = to_model_images(xtr[50000:60000]), torch.from_numpy(ytr[50000:60000])
    prompts = [caption(c) for c in range(len(CLASSES))]
    labels = torch.arange(len(CLASSES)).repeat_interleave(args.n_per_class)
    rows = []
    for spec in args.settings:
        steps, g = spec.split(":")
        t0 = time.perf_counter()
        res = pipe(prompts, num_images_per_prompt=args.n_per_class, seed=7, num_inference_steps=int(steps),
                   guidance_scale=float(g), batch_size=64, show_progress=True)
        sec = (time.perf_counter() - t0) / len(res.images)
        gen = to_model_images(from_model_images(res.images).numpy())
        acc = accuracy(train_classifier(gen, labels, config=CASConfig(seed=0), show_progress=True), x_dev, y_dev)
        rows.append({"num_inference_steps": int(steps), "guidance_scale": float(g), "dev_CAS": round(acc, 4),
                     "seconds_per_image": round(sec, 4)})
        print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: r["dev_CAS"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": args.model, "n_per_class": args.n_per_class, "generation_seed": 7,
                                          "dev_split": "real Fashion-MNIST training images 50000-60000",
                                          "rows": rows, "best": best}, indent=2) + "\n")
    print("best:", json.dumps(best))


if __name__ == "__main__":
    main()
