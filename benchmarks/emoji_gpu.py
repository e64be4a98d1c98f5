"""Train the emoji UNet on a borrowed GPU that has no copy of the corpus or the text encoder.

The GPU machines lent to this project hold PyTorch, transformers and accelerate but none of
wordpaint's packaged data (the emoji PNGs, the MiniLM weights, EfficientNet-Lite0), and what
travels to them is capped at 64 MiB. The UNet's frozen inputs are fixed functions of the
corpus, so they are computed here once and packed:

    python benchmarks/emoji_gpu.py pack --data data/emoji --out gpu_pack          # on this machine, 1.3 min
    python benchmarks/emoji_gpu.py train --pack gpu_pack --out OUT --time-limit 420  # on the GPU
    python benchmarks/emoji_gpu.py assemble --weights OUT --out runs/emoji_gpu/diffusion  # back here

The pack (55.7 MB for the emoji corpus) holds what the trainer's :class:`~wordpaint.training.train.StepBatches`
would give the UNet: the training emoji's latents under the bundled autoencoder (float16), their
EfficientNet-Lite0 image vectors (float16, as the trainer keeps them), each row's two captions
as token ids, and MiniLM in float16 with its vocabulary cut to the tokens those captions use
(the token states it gives differ from the full float32 encoder's by what float16 weights cost,
printed by ``pack``). ``train`` rebuilds the captions' token states once on the GPU and then
draws every batch on the GPU: the same per-epoch permutations, caption choice, caption dropout
(0.1) and image-vector dropout (0.1) as the CPU trainer, from torch generators instead of
numpy ones (so not the same examples step for step). The loss is the model's own
(``loss = model(batch)``); bf16 autocast, fused AdamW, EMA, the trainer's ``lr_at`` schedule.
The number of steps is fixed after a timing probe so the cosine schedule ends at the time limit;
it is written to ``result.json`` with everything else needed to rerun it (``--max-steps``).
The EMA weights come back as float32 safetensors shards (each under the tool's 16 MiB limit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SHARD_BYTES = 14 * 2**20  # < 16 MiB: the largest file the device tool brings back


# -- pack (here, on the CPU) -----------------------------------------------------------------------
def pack(data: str, out: str, *, autoencoder: str, model: str, size: int = 64) -> None:
    """Write pack.safetensors + text_encoder.safetensors + pack.json under ``out``: the ``size`` px
    emoji of the image folder ``data`` as the ``autoencoder``'s latents, for the diffusion
    config in folder ``model``."""
    from wordpaint.io import save_safetensors, write_json
    from wordpaint.pipelines.text_to_image import load_config
    from wordpaint.text.encoder import TextEncoder
    from wordpaint.training.train import image_folder_stream, image_embeds

    config = load_config(model)
    enc = TextEncoder()
    tensors, meta = {}, {}
    for split in ("train", "heldout"):
        d = {"folder": data, "kinds": ["emoji"], "splits": [split], "autoencoder": autoencoder, "size": size}
        _, stream = image_folder_stream(d, config, torch.device("cpu"), seed=0, cond_drop_prob=0.0, show_progress=True)
        tensors[f"{split}_latents"] = stream.data.half()  # (N, 4, 16, 16)
        if config.image_embed_dim:  # (N, 1280) float16, as the trainer keeps them
            tensors[f"{split}_image_embeds"] = image_embeds(stream.images, dim=config.image_embed_dim, show_progress=True)
        meta[f"{split}_captions"] = stream.captions  # [[corpus caption, short prompt], ...] per row
        meta[f"{split}_files"] = [r["file_name"] for r in stream.rows]
    captions = sorted({c for split in ("train", "heldout") for alts in meta[f"{split}_captions"] for c in alts} | {""})
    where = {c: i for i, c in enumerate(captions)}
    for split in ("train", "heldout"):
        tensors[f"{split}_caption_index"] = torch.tensor([[where[c] for c in alts] for alts in meta.pop(f"{split}_captions")],
                                                         dtype=torch.int32)  # (N, 2)
    ids = enc.tokenizer(captions, add_special_tokens=True)["input_ids"]
    vocab = sorted({t for seq in ids for t in seq} | {enc.tokenizer.pad_token_id})
    remap = {t: i for i, t in enumerate(vocab)}
    L = max(len(s) for s in ids)
    tok = torch.zeros(len(ids), L, dtype=torch.int32)
    for i, seq in enumerate(ids):
        tok[i, : len(seq)] = torch.tensor([remap[t] for t in seq], dtype=torch.int32)
    tensors["caption_ids"], tensors["caption_lengths"] = tok, torch.tensor([len(s) for s in ids], dtype=torch.int32)
    # MiniLM with its vocabulary cut to `vocab`, float16 (the full float32 model is 90 MB)
    state = {k: v.half() for k, v in enc.model.state_dict().items()}
    state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"][torch.tensor(vocab)]
    cfg = enc.model.config.to_dict()
    cfg["vocab_size"], cfg["pad_token_id"] = len(vocab), remap[enc.tokenizer.pad_token_id]
    os.makedirs(out, exist_ok=True)
    save_safetensors(Path(out) / "pack.safetensors", {k: v.contiguous() for k, v in tensors.items()})
    save_safetensors(Path(out) / "text_encoder.safetensors", state)
    info = {"text_encoder_config": cfg, "empty_caption": where[""], "captions": captions, "diffusion_config": config.to_dict(),
            "train_files": meta["train_files"], "heldout_files": meta["heldout_files"], "data": data, "autoencoder": autoencoder}
    write_json(Path(out) / "pack.json", info)
    # what float16 weights and the cut vocabulary cost against the encoder the pipeline uses
    states, mask = caption_states(Path(out), info, tensors, torch.device("cpu"), only=list(range(0, len(captions), 97)))
    ref = enc.encode([captions[i] for i in range(0, len(captions), 97)])
    n = ref.hidden_states.shape[1]
    diff = (states[:, :n] - ref.hidden_states).abs().max().item()
    print(f"packed {len(tensors['train_latents'])} training + {len(tensors['heldout_latents'])} held-out emoji, {len(captions)} captions "
          f"(<= {L} tokens, {len(vocab)} token types); float16 encoder vs the pipeline's: max |token state diff| {diff:.2e} "
          f"(states are ~{ref.hidden_states.abs().mean().item():.2f} in mean size); sizes "
          + ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in sorted(Path(out).iterdir())))


def caption_states(folder: Path, info: dict, p: dict, device: torch.device, *, dtype=torch.float32, only: list[int] | None = None):
    """(M, L, 384) token states and (M, L) mask of the captions of the pack in ``folder`` (``info``,
    ``p``: what :func:`read_pack` returns): the cut MiniLM run on each group of equal token count
    without padding, as :class:`~wordpaint.text.encoder.TextEncoder` does (padding changes BERT's
    outputs in the last bits)."""
    from transformers import BertConfig, BertModel

    from wordpaint.io import load_safetensors

    bert = BertModel(BertConfig(**info["text_encoder_config"]), add_pooling_layer=True)
    state = {k: v.float() for k, v in load_safetensors(folder / "text_encoder.safetensors").items()}
    missing, unexpected = bert.load_state_dict(state, strict=False)
    if [k for k in missing if "position_ids" not in k] or unexpected:
        raise SystemExit(f"text encoder weights do not match: missing {missing}, unexpected {unexpected}")
    bert = bert.to(device=device, dtype=dtype).eval()
    ids, lengths = p["caption_ids"].long().cpu(), p["caption_lengths"].long().cpu()
    rows = torch.arange(len(ids)) if only is None else torch.tensor(only)
    L = int(lengths[rows].max())
    states = torch.zeros(len(rows), L, bert.config.hidden_size)
    mask = torch.zeros(len(rows), L, dtype=torch.long)
    with torch.no_grad():
        for n in lengths[rows].unique().tolist():
            sel = (lengths[rows] == n).nonzero().flatten()
            for chunk in sel.split(1024):
                x = ids[rows[chunk], :n].to(device)
                h = bert(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state.float().cpu()
                states[chunk, :n], mask[chunk, :n] = h, 1
    return states, mask


def read_pack(folder: Path) -> tuple[dict, dict]:
    """(pack.json, pack.safetensors tensors) of a folder ``pack`` wrote, or a clear exit."""
    from wordpaint.io import load_safetensors, read_json

    names = ("pack.json", "pack.safetensors", "text_encoder.safetensors")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise SystemExit(f"{folder} is not a training pack (missing {', '.join(missing)}); make one with: "
                         f"python benchmarks/emoji_gpu.py pack --data data/emoji --out {folder}")
    return read_json(folder / "pack.json", what="training pack manifest"), load_safetensors(folder / "pack.safetensors")


# -- train (on the GPU) ----------------------------------------------------------------------------
def save_shards(model: torch.nn.Module, out: Path, prefix: str) -> list[str]:
    """float32 state dict in files under SHARD_BYTES, each written atomically (a kill leaves whole files)."""
    from wordpaint.io import save_safetensors

    shards, cur, size = [], {}, 0
    for k, v in model.state_dict().items():
        n = v.numel() * 4
        if cur and size + n > SHARD_BYTES:
            shards.append(cur)
            cur, size = {}, 0
        cur[k], size = v.float(), size + n
    shards.append(cur)
    names = []
    for i, s in enumerate(shards):
        name = f"{prefix}-{i + 1:02d}-of-{len(shards):02d}.safetensors"
        save_safetensors(out / name, s)
        names.append(name)
    return names


def train(pack_dir: str, out: str, *, time_limit: float, batch_size: int, lr: float, warmup_steps: int, seed: int,
          ema_decay: float, max_steps: int | None, log_every: int, eval_every: int) -> None:
    from wordpaint.io import write_json
    from wordpaint.models.diffusion import DiffusionConfig
    from wordpaint.models.registry import build_model
    from wordpaint.training.train import EMA, lr_at

    t0 = time.time()
    folder, out = Path(pack_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = dev.type == "cuda"
    torch.manual_seed(seed)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    info, p = read_pack(folder)
    states, mask = caption_states(folder, info, p, dev)
    p = {k: v.to(dev) for k, v in p.items()}
    states, mask = states.to(dev), mask.to(dev)  # (M, L, 384), (M, L)
    t_text = time.time() - t0
    config = DiffusionConfig.from_dict(info["diffusion_config"])
    model = build_model(config).to(dev).train()
    ema = EMA(model, ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, fused=cuda)
    n = len(p["train_latents"])
    g_cpu = torch.Generator().manual_seed(seed)
    g_dev = torch.Generator(device=dev).manual_seed(seed + 1)
    order = torch.empty(0, dtype=torch.long)

    def batch(rows: torch.Tensor, split: str, gen: torch.Generator, *, drop: bool = True) -> dict:
        b = len(rows)
        alt = torch.randint(2, (b,), generator=gen, device=dev)
        cap = p[f"{split}_caption_index"][rows, alt].long()
        dropped = (torch.rand(b, generator=gen, device=dev) < config.cond_drop_prob) if drop else torch.zeros(b, dtype=torch.bool, device=dev)
        cap = torch.where(dropped, torch.full_like(cap, info["empty_caption"]), cap)
        keep = ~dropped & ((torch.rand(b, generator=gen, device=dev) >= config.image_embed_drop_prob) if drop else True)
        out = {"pixel_values": p[f"{split}_latents"][rows].float(), "encoder_hidden_states": states[cap], "encoder_attention_mask": mask[cap]}
        if config.image_embed_dim:  # zeroed where dropped: text alone, or (with the caption) unconditional
            out["image_embed"] = p[f"{split}_image_embeds"][rows].float() * keep.unsqueeze(1)
        return out

    # fixed validation draws (the EMA's loss on 1,024 training rows and the 120 held-out cells, same
    # noise and timesteps each time): a smooth curve against wall time, not a quality figure
    g_val = torch.Generator(device=dev)

    @torch.no_grad()
    def val_loss(split: str) -> float:
        rows = torch.arange(min(1024, len(p[f"{split}_latents"])), device=dev)
        g_val.manual_seed(1234)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            return float(ema.module(batch(rows, split, g_val, drop=False), generator=g_val))

    recipe = {"lr": lr, "warmup_steps": warmup_steps, "max_steps": max_steps or 10**9}
    log = open(out / "train_log.jsonl", "a")
    step, t_train, losses, probe = 0, time.time(), [], None
    deadline = t0 + time_limit
    last_save = time.time()
    while step < recipe["max_steps"]:
        while len(order) < batch_size:  # per-epoch permutations, concatenated
            order = torch.cat([order, torch.randperm(n, generator=g_cpu)])
        rows, order = order[:batch_size].to(dev, non_blocking=True), order[batch_size:]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, recipe)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(batch(rows, "train", g_dev), generator=g_dev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model, step)
        losses.append(loss.detach())
        step += 1
        if step == 20 and cuda:
            torch.cuda.synchronize()
            probe = time.time()
        if step == 120 and max_steps is None:  # fix the schedule so it ends at the time limit
            if cuda:
                torch.cuda.synchronize()
            dt = (time.time() - probe) / 100 if probe else (time.time() - t_train) / 120
            reserve = 25.0  # final validation + saving
            recipe["max_steps"] = max(step + 1, step + int((deadline - reserve - time.time()) / dt))
            print(f"{dt * 1000:.1f} ms/step at batch {batch_size}: {recipe['max_steps']} steps fit the time limit", flush=True)
        if step % log_every == 0 or step == recipe["max_steps"]:
            rec = {"step": step, "loss": float(torch.stack(losses).mean()), "lr": lr_at(step - 1, recipe),
                   "wall_s": round(time.time() - t0, 1)}
            losses = []
            if step % eval_every == 0 or step == recipe["max_steps"]:
                rec.update(val_train=val_loss("train"), val_heldout=val_loss("heldout"))
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
        if time.time() - last_save > 120:
            save_shards(ema.module, out, "ema")
            last_save = time.time()
        if time.time() > deadline:
            print("time limit reached before the schedule ended", flush=True)
            break
    names = save_shards(ema.module, out, "ema")
    wall = time.time() - t_train
    result = {"steps": step, "max_steps": recipe["max_steps"], "batch_size": batch_size, "lr": lr, "warmup_steps": warmup_steps,
              "seed": seed, "ema_decay": ema_decay, "schedule": "linear warm-up, cosine to 10% (wordpaint.training.train.lr_at)",
              "mixed_precision": "bf16" if cuda else "no", "train_wall_s": round(wall, 1), "text_states_s": round(t_text, 1),
              "images_per_s": round(step * batch_size / wall, 1), "device": torch.cuda.get_device_name() if cuda else "cpu",
              "torch": torch.__version__, "shards": names, "examples_seen": step * batch_size,
              "epochs": round(step * batch_size / n, 1), "train_rows": n,
              "final_val_train": val_loss("train"), "final_val_heldout": val_loss("heldout"),
              "diffusion_config": info["diffusion_config"]}  # what assemble builds the shards into
    write_json(out / "result.json", result)
    print(json.dumps(result), flush=True)


# -- assemble (back here) --------------------------------------------------------------------------
def assemble(weights: str, out: str) -> None:
    """The returned EMA shards -> a diffusion component folder (config.json + model.safetensors,
    float32) that ``wordpaint model replace --component diffusion --from`` and ``--init-from`` read;
    the config is the one the pack was made for (``result.json``'s ``diffusion_config``)."""
    from wordpaint.io import load_safetensors, load_state_dict_strict, read_json
    from wordpaint.models.registry import build_model
    from wordpaint.models.diffusion import DiffusionConfig
    from wordpaint.pipelines.text_to_image import save_model

    if not (Path(weights) / "result.json").is_file():
        raise SystemExit(f"{weights} has no result.json: give the folder `train --out` wrote")
    res = read_json(Path(weights) / "result.json", what="training result")
    state = {}
    for name in res["shards"]:
        state.update(load_safetensors(Path(weights) / name))
    if "diffusion_config" not in res:
        raise SystemExit(f"{weights}/result.json names no diffusion_config: train it again with this script")
    m = build_model(DiffusionConfig.from_dict(res["diffusion_config"]), empty=True)
    load_state_dict_strict(m, state, source=weights)
    save_model(m.float(), out)
    print(f"wrote {out} ({res['steps']} steps at batch {res['batch_size']} on {res['device']})")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("--data", default="data/emoji")
    a.add_argument("--autoencoder", default=str(ROOT / "src/wordpaint/weights/emoji64/autoencoder"))
    a.add_argument("--model", default=str(ROOT / "src/wordpaint/weights/emoji64/diffusion"), help="diffusion folder whose config is trained")
    a.add_argument("--size", type=int, default=64, help="picture size the autoencoder takes")
    a.add_argument("--out", required=True)
    t = sub.add_parser("train")
    t.add_argument("--pack", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--time-limit", type=float, default=420.0, help="seconds from start to the last step")
    t.add_argument("--batch-size", type=int, default=512)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--warmup-steps", type=int, default=300)
    t.add_argument("--seed", type=int, default=3)
    t.add_argument("--ema-decay", type=float, default=0.9995)
    t.add_argument("--max-steps", type=int, default=None, help="fixed schedule length (default: what fits the time limit)")
    t.add_argument("--log-every", type=int, default=100)
    t.add_argument("--eval-every", type=int, default=500)
    s = sub.add_parser("assemble")
    s.add_argument("--weights", required=True, help="the folder train wrote (result.json + ema shards)")
    s.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        pack(args.data, args.out, autoencoder=args.autoencoder, model=args.model, size=args.size)
    elif args.cmd == "train":
        train(args.pack, args.out, time_limit=args.time_limit, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
              seed=args.seed, ema_decay=args.ema_decay, max_steps=args.max_steps, log_every=args.log_every, eval_every=args.eval_every)
    else:
        assemble(args.weights, args.out)


if __name__ == "__main__":
    main()
