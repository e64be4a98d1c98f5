"""How compact can the low-noise expert be? The expert is the bundled UNet plus a fine-tuning
delta; stored as a low-rank delta (LoRA extracted after the fact by truncated SVD of each weight's
change, as kohya's extract script does) it might fit the 4 MB the 40 MB bundle limit leaves.

    python benchmarks/expert_delta_rank.py --expert runs/lownoise_expert/pipeline --ranks 4 8 16 32

For each rank r: the parameters and fp16 megabytes of the delta (r x (out + in) per 2-D or
convolution weight, in x k x k flattened; other tensors' full change), the share of the delta's
squared norm kept, and, on 64 real dev-cell latents noised to the bundle's last sampling level
(sigma 0.17), how far the truncated expert's estimate is from the full expert's, as a share of the
full expert's change over the base: 0 = the full expert, 1 = the base UNet. Prints JSON and writes it.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))


def truncated(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, int]:
    """(the rank-``rank`` SVD approximation of ``delta`` (reshaped to out x rest for convolutions),
    the parameters that approximation takes to store); 1-D tensors are kept whole."""
    if delta.ndim < 2:
        return delta, delta.numel()
    m = delta.reshape(delta.shape[0], -1).float()
    r = min(rank, *m.shape)
    if r * sum(m.shape) >= m.numel():  # low rank would not be smaller: keep it whole
        return delta, delta.numel()
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    return ((u[:, :r] * s[:r]) @ vh[:r]).reshape(delta.shape).to(delta.dtype), r * sum(m.shape)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--expert", required=True)
    ap.add_argument("--ranks", nargs="+", type=int, default=[4, 8, 16, 32])
    ap.add_argument("--data", default="data/emoji")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "emoji_embed" / "lownoise_expert" / "delta_rank.json"))
    args = ap.parse_args()

    from tune_emoji import dev_set
    from wordpaint import TextToImagePipeline
    from wordpaint.pipelines.text_to_image import component_folder, load_model

    pipe = TextToImagePipeline.from_pretrained(args.model)
    expert = load_model(component_folder(args.expert, "expert")).eval()
    base_state, expert_state = pipe.model.state_dict(), expert.state_dict()
    deltas = {k: expert_state[k] - base_state[k] for k in base_state if base_state[k].is_floating_point()}
    total = sum(float((d.float() ** 2).sum()) for d in deltas.values())

    # 64 dev cells' real latents noised to sigma 0.17 (seeded), with their captions and the prior's vectors
    names, vocab, cells, prompts, by_cell = dev_set(args.data, 22)
    cells, prompts = cells[:64], prompts[:64]
    pix = torch.stack([by_cell[c] for c in cells]).float() / 127.5 - 1  # (64, 3, 64, 64) uint8 -> [-1, 1]
    sigma = torch.tensor(0.1694)
    with torch.no_grad():
        z = pipe.vae.encode(pix)
        x = z + sigma * torch.randn(z.shape, generator=torch.Generator().manual_seed(0))
        cond = pipe.text_encoder.encode(prompts)
        vec = pipe.embed_prior.embed(cond.pooled)
        inputs = (cond.hidden_states, cond.attention_mask, None, vec)
        d_base, d_full = pipe.model.denoise(x, sigma, *inputs), expert.denoise(x, sigma, *inputs)
    change = float((d_full - d_base).norm())
    rows = []
    for rank in args.ranks:
        state, params, kept = dict(expert_state), 0, 0.0
        for k, d in deltas.items():
            approx, n = truncated(d, rank)
            state[k] = base_state[k] + approx
            params += n
            kept += float((approx.float() ** 2).sum())
        trunc = copy.deepcopy(expert)  # the expert's architecture, the truncated weights
        trunc.load_state_dict(state)
        with torch.no_grad():
            d_trunc = trunc.denoise(x, sigma, *inputs)
        rows.append({"rank": rank, "delta_parameters": params, "delta_megabytes_fp16": round(params * 2 / 2**20, 2),
                     "delta_norm_kept": round(kept / total, 4),
                     "estimate_gap_share": round(float((d_trunc - d_full).norm()) / change, 4)})
        print(json.dumps(rows[-1]), flush=True)
    doc = {"model": args.model, "expert": args.expert, "sigma": 0.1694, "cells": len(cells),
           "expert_change_over_base (norm of the estimate difference)": round(change, 4), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
