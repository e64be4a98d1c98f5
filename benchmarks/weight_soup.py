"""Interpolate the weights of two pipeline folders of the same architecture ("model soup"):
``out = (1 - alpha) * base + alpha * other`` for every tensor of the generator component; the text
encoder and model_index.json are copied from ``base``.

Why: a continuation leg (``--init-from``) whose EMA warm-up restarted exported an average of only
its last ~80 steps; the EMA with the warm-up off keeps 0.999^steps of the starting weights. An
interpolation of the starting bundle with the leg's export approximates that export without
retraining (exactly for a leg that moves linearly), so it tells in 5 minutes whether keeping part
of the bundle in the average helps.

    python benchmarks/weight_soup.py --base src/wordpaint/weights/shapes48 --other runs/multisize/pipeline --alpha 0.5 --out /tmp/soup50
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from wordpaint.io import atomic_dir, read_json, save_safetensors


def soup(base: Path, other: Path, *, alpha: float, out: Path) -> dict:
    """Write ``out``: ``base``'s folder with its generator weights moved ``alpha`` of the way to ``other``'s."""
    comp = read_json(base / "model_index.json", what="pipeline manifest")["model"]
    cfg_b = read_json(base / comp / "config.json", what="model config")
    cfg_o = read_json(other / comp / "config.json", what="model config")
    # sampling defaults may differ between a run's export and the bundle; the architecture may not
    differ = {k for k in cfg_b.keys() | cfg_o.keys() if cfg_b.get(k) != cfg_o.get(k)} - {"num_inference_steps"}
    if differ:
        sys.exit(f"the two models differ in {sorted(differ)}; a soup needs the same architecture")
    mixed, meta = {}, None
    with safe_open(base / comp / "model.safetensors", "pt") as fb, safe_open(other / comp / "model.safetensors", "pt") as fo:
        if set(fb.keys()) != set(fo.keys()):
            sys.exit("the two models have different tensor names")
        meta = fb.metadata()
        for k in fb.keys():
            a, b = fb.get_tensor(k), fo.get_tensor(k)
            mixed[k] = torch.lerp(a.float(), b.float(), alpha).contiguous()  # float32: the soup is evaluated, not shipped
    with atomic_dir(out) as tmp:
        shutil.copytree(base, tmp, dirs_exist_ok=True)
        save_safetensors(tmp / comp / "model.safetensors", mixed, metadata=meta)
        (tmp / "soup.json").write_text(json.dumps({"base": str(base), "other": str(other), "alpha": alpha}, indent=2))
    return {"tensors": len(mixed), "out": str(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--other", type=Path, required=True)
    ap.add_argument("--alpha", type=float, required=True, help="0 = base, 1 = other")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if not 0.0 <= args.alpha <= 1.0:
        sys.exit(f"--alpha must be in [0, 1], got {args.alpha}")
    for d in (args.base, args.other):
        if not (d / "model_index.json").is_file():
            sys.exit(f"{d} is not a pipeline folder (no model_index.json)")
    print(soup(args.base, args.other, alpha=args.alpha, out=args.out))


if __name__ == "__main__":
    main()
