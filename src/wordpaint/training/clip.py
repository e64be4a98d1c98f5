"""Train and evaluate wordpaint-clip on every corpus the project has: emoji and icons (a folder
built by ``wordpaint data build emoji``), shapes-world scenes and Fashion-MNIST class captions.

Tower features are computed once and cached in ``OUT/cache`` (safetensors, one file per corpus,
keyed by what went in), so a rerun or a resumed run only trains the heads (about a minute).

``augment=K`` adds K softened copies of every training image (a random Gaussian blur and a little
pixel noise, :func:`soften`): the towers are frozen, so augmentation has to happen before the
features are cached, and each epoch draws one view per image. Generated pictures are softer than
the real ones the heads learn from; a judge that has only seen sharp pictures reads blur as a style
(Twemoji -> Noto) and loses details it could still see (``benchmarks/emoji_style_judge.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wordpaint.errors import WordpaintError


@dataclass
class Corpus:
    """Images (uint8 (N, 3, H, W) per chunk or paths) with caption alternatives and labels."""

    name: str
    images: list  # uint8 (3, H, W) tensors
    captions: list[list[str]]  # alternatives per image; training draws one per epoch, eval uses the last
    split: list[str]
    meta: list[dict] = field(default_factory=list)
    key: str = ""  # fingerprint of the content, for the feature cache


def emoji_corpus(folder: str | os.PathLike, *, kinds: tuple[str, ...] = ("emoji", "icon")) -> Corpus:
    """The built emoji/icon folder (rows of the given ``kinds``): alternatives (stored caption, short caption)."""
    from wordpaint.data.emoji import short_caption
    from wordpaint.data.imagefolder import load_imagefolder

    rows, images, _ = load_imagefolder(folder, kinds=tuple(kinds))
    captions = [[r["text"], short_caption(r["name"], r["style"])] if "name" in r and "style" in r else [r["text"]] for r in rows]
    manifest = Path(folder, "manifest.json")
    key = hashlib.sha256(Path(folder, "metadata.jsonl").read_bytes() + (manifest.read_bytes() if manifest.is_file() else b"")
                         + ",".join(kinds).encode()).hexdigest()
    return Corpus("emoji", images, captions, [r.get("split", "train") for r in rows], rows, key)


def shapes_corpus(n: int, *, seed: int = 0, size: int = 48) -> Corpus:
    """``n`` shapes-world scenes with their grammar captions."""
    from wordpaint.data.shapes import render_scene
    from wordpaint.data.stream import ShapesStream

    stream = ShapesStream(size=size, seed=seed, split="all")
    images, captions = [], []
    for i in range(n):
        ex = stream.example(i)
        images.append(torch.from_numpy(render_scene(ex.scene, size)).permute(2, 0, 1).contiguous())
        captions.append([ex.caption])
    return Corpus("shapes", images, captions, ["train"] * n, [{}] * n, f"shapes:{n}:{seed}:{size}")


def fashion_corpus(n_train: int, n_test: int) -> Corpus:
    """Fashion-MNIST: the first ``n_train`` training images (all six caption phrasings as
    alternatives) and the first ``n_test`` test images (split "test")."""
    from wordpaint.data.fashion_mnist import CLASS_PHRASES, TEMPLATES, load_fashion_mnist

    images, captions, split, meta = [], [], [], []
    for s, n in (("train", n_train), ("test", n_test)):
        x, y = load_fashion_mnist(s)
        for img, label in zip(x[:n], y[:n]):
            images.append(torch.from_numpy(img)[None].expand(3, -1, -1).contiguous())
            captions.append([t.format(CLASS_PHRASES[label]) for t in TEMPLATES[1:]] + [TEMPLATES[0].format(CLASS_PHRASES[label])])
            split.append(s)
            meta.append({"label": int(label)})
    return Corpus("fashion", images, captions, split, meta, f"fashion:{n_train}:{n_test}")


# ----------------------------------------------------------------------------- features


def soften(images: list[torch.Tensor], *, seed: int, blur: tuple[float, float] = (0.5, 1.5),
           noise: float = 0.03) -> list[torch.Tensor]:
    """Softened copies of uint8 (3, H, W) images: a Gaussian blur of radius ~ U(``blur``) pixels
    (PIL's radius, as ``emoji_style_judge.py`` uses), then Gaussian pixel noise of std ~ U(0,
    ``noise``) (fraction of the 0-255 range). Deterministic in ``seed``."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    out = []
    for img in images:
        radius, std = rng.uniform(*blur), rng.uniform(0, noise) * 255
        pil = Image.fromarray(img.permute(1, 2, 0).numpy()).filter(ImageFilter.GaussianBlur(float(radius)))
        arr = np.asarray(pil, dtype=np.float32) + rng.normal(0, std, size=(img.shape[1], img.shape[2], 3)).astype(np.float32)
        out.append(torch.from_numpy(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).permute(2, 0, 1).contiguous())
    return out


def image_features(corpus: Corpus, cache: Path, *, view: int = 0, seed: int = 0) -> torch.Tensor:
    """(N, 1280) EfficientNet-Lite0 features of the corpus, cached by its fingerprint. ``view`` 0
    is the images as they are; view k > 0 their :func:`soften` copies (seeded by ``seed`` and k)."""
    from wordpaint.eval.metrics import extract
    from wordpaint.io import load_safetensors, save_safetensors

    key = corpus.key if view == 0 else f"{corpus.key}:soften-v1:{seed}:{view}"
    path = cache / f"{corpus.name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.safetensors"
    if path.is_file():
        feats = load_safetensors(path)["features"]
        if len(feats) == len(corpus.images):
            return feats
    images = corpus.images if view == 0 else soften(corpus.images, seed=seed * 1000 + view)
    what = f"{corpus.name} images" + (f" (softened copy {view})" if view else "")
    feats = extract(images, show_progress=True, what=what)[0].float()
    save_safetensors(path, {"features": feats})
    return feats


def text_features(clip_text_encoder, texts: list[str]) -> torch.Tensor:
    """(T, 384) pooled MiniLM features, in chunks with a progress bar."""
    from tqdm.auto import trange

    out = []
    for s in trange(0, len(texts), 256, desc="text features", leave=False):
        out.append(clip_text_encoder.encode(texts[s : s + 256]).pooled)
    return torch.cat(out) if out else torch.zeros(0, 384)


def load_corpora(*, emoji_dir: str | os.PathLike | None, kinds: tuple[str, ...], shapes: int, fashion: int, fashion_test: int,
                 seed: int = 0) -> list[Corpus]:
    """The corpora ``train_clip`` and ``eval_clip`` read (those asked for; at least one)."""
    corpora = []
    if emoji_dir is not None:
        corpora.append(emoji_corpus(emoji_dir, kinds=kinds))
    if shapes:
        corpora.append(shapes_corpus(shapes, seed=seed))
    if fashion or fashion_test:
        corpora.append(fashion_corpus(fashion, fashion_test))
    if not corpora:
        raise WordpaintError("no data: give --data (an emoji folder), --shapes N or --fashion N")
    return corpora


# ----------------------------------------------------------------------------- training


def train_clip(out: str | os.PathLike, *, emoji_dir: str | os.PathLike | None, kinds: tuple[str, ...] = ("emoji", "icon"), shapes: int = 3000, fashion: int = 6000,
               fashion_test: int = 2000, epochs: int = 40, batch_size: int = 1024, lr: float = 1e-3,
               weight_decay: float = 0.05, seed: int = 0, augment: int = 0, config=None, log=print) -> dict:
    """Train the heads on every corpus given; writes ``OUT/model`` (config.json + model.safetensors),
    ``OUT/metrics.json`` and returns the metrics (retrieval and zero-shot accuracies). ``augment``:
    softened copies per training image (module docstring); each epoch draws one view per image."""
    from tqdm.auto import trange

    from wordpaint.io import write_json
    from wordpaint.models.clip import ClipConfig, ClipModel, WordpaintClip

    out = Path(out)
    cache = out / "cache"
    if not isinstance(augment, int) or augment < 0:
        raise WordpaintError(f"augment must be a whole number of copies >= 0, got {augment!r}")
    corpora = load_corpora(emoji_dir=emoji_dir, kinds=kinds, shapes=shapes, fashion=fashion, fashion_test=fashion_test, seed=seed)
    torch.manual_seed(seed)
    model = ClipModel(config or ClipConfig())
    clip = WordpaintClip(model)
    feats = {c.name: image_features(c, cache) for c in corpora}
    # (1 + augment) views per corpus; only the training rows of the copies are ever used, but the
    # whole corpus is softened so the cache is keyed by the corpus alone
    views = {c.name: [feats[c.name]] + [image_features(c, cache, view=k, seed=seed) for k in range(1, augment + 1)] for c in corpora}
    texts = sorted({t for c in corpora for alts in c.captions for t in alts})
    log(f"{sum(len(c.images) for c in corpora)} images, {len(texts)} distinct captions")
    tfeats = text_features(clip.text_encoder, texts)
    tindex = {t: i for i, t in enumerate(texts)}

    # training rows: (image feature row, caption alternatives as text indices)
    img_rows, alt_rows = [], []
    for c in corpora:
        for i, (alts, sp) in enumerate(zip(c.captions, c.split)):
            if sp == "train":
                img_rows.append(torch.stack([v[i] for v in views[c.name]]))  # (1 + augment, 1280)
                alt_rows.append([tindex[t] for t in alts])
    X = torch.stack(img_rows, 1)  # (1 + augment, n, 1280)
    n = X.shape[1]
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    model.train().requires_grad_(True)
    rng = np.random.default_rng(seed)
    bar = trange(epochs, desc="train wordpaint-clip")
    for epoch in bar:
        perm = torch.from_numpy(rng.permutation(n))
        pick = torch.tensor([alts[rng.integers(len(alts))] for alts in alt_rows])
        # without copies nothing is drawn, so the data order is that of runs from before ``augment`` (clip_v2 retrains bit for bit)
        view = torch.from_numpy(rng.integers(len(X), size=n)) if len(X) > 1 else torch.zeros(n, dtype=torch.long)
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            loss = model({"image_features": X[view[idx], idx], "text_features": tfeats[pick[idx]], "text_ids": pick[idx]})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", temp=f"{1 / model.logit_scale.exp().item():.4f}")
    model.eval().requires_grad_(False)
    clip.save_pretrained(out / "model")
    metrics = evaluate_clip(clip, corpora, feats)
    metrics["training"] = {"images": n, "captions": len(texts), "epochs": epochs, "batch_size": batch_size, "lr": lr,
                           "seed": seed, "augment": augment, "corpora": {c.name: len(c.images) for c in corpora}}
    write_json(out / "metrics.json", metrics)
    return metrics


# ----------------------------------------------------------------------------- evaluation


def eval_clip(model: str | os.PathLike | None, out: str | os.PathLike, *, emoji_dir: str | os.PathLike | None,
              kinds: tuple[str, ...] = ("emoji", "icon"), fashion_test: int = 2000, cache: str | os.PathLike | None = None) -> dict:
    """:func:`evaluate_clip` for a saved wordpaint-clip (default: the bundled one) on the real
    held-out data; writes ``OUT/metrics.json``. Tower features are cached in ``cache`` (default
    ``OUT/cache``; a training run's cache is reused when it saw the same data)."""
    from wordpaint.io import write_json
    from wordpaint.models.clip import WordpaintClip

    clip = WordpaintClip.from_pretrained(model)
    corpora = load_corpora(emoji_dir=emoji_dir, kinds=kinds, shapes=0, fashion=0, fashion_test=fashion_test)
    cache = Path(cache) if cache is not None else Path(out) / "cache"
    metrics = evaluate_clip(clip, corpora, {c.name: image_features(c, cache) for c in corpora})
    metrics["model"] = str(model) if model is not None else "bundled"
    write_json(Path(out) / "metrics.json", metrics)
    return metrics


def recall_at(sim: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Recall@k of a (N, N) similarity matrix whose diagonal holds the true pairs."""
    ranks = (sim > sim.diagonal()[:, None]).sum(1)  # how many beat the true pair
    return {f"recall@{k}": float((ranks < k).float().mean()) for k in ks}


def evaluate_clip(clip, corpora: list[Corpus], feats: dict[str, torch.Tensor]) -> dict:
    """Retrieval on held-out real pairs (emoji held-out cells; icon test split, reported apart), zero-shot concept
    and style accuracy of real emoji (held-out cells vs training cells) over the 240-concept
    evaluation vocabulary, and zero-shot Fashion-MNIST accuracy on real test images."""
    m = clip.model
    res: dict = {}
    by = {c.name: c for c in corpora}
    if "emoji" in by:
        c, f = by["emoji"], feats["emoji"]
        # emoji: the held-out (concept, style) cells; icons: their test split (names never trained on)
        for key, kind, split in (("retrieval_heldout", "emoji", "heldout"), ("retrieval_icons_test", "icon", "test")):
            idx = [i for i, r in enumerate(c.meta) if r.get("kind", "emoji") == kind and c.split[i] == split]
            if idx:
                sim = m.embed_image_features(f[idx]) @ clip.embed_texts([c.captions[i][-1] for i in idx]).T  # (N, N)
                res[key] = {"pairs": len(idx), "image_to_text": recall_at(sim), "text_to_image": recall_at(sim.T)}
        res.update(emoji_zero_shot(clip, c, f))
    if "fashion" in by:
        from wordpaint.data.fashion_mnist import CLASS_PHRASES

        c, f = by["fashion"], feats["fashion"]
        test = [i for i, sp in enumerate(c.split) if sp == "test"]
        if test:
            probs = (m.embed_image_features(f[test]) @ clip.embed_texts([f"a photo of {p}" for p in CLASS_PHRASES]).T)
            labels = torch.tensor([c.meta[i]["label"] for i in test])
            res["fashion_zero_shot"] = {"images": len(test), "accuracy": float((probs.argmax(1) == labels).float().mean())}
    return res


def emoji_zero_shot(clip, corpus: Corpus, feats: torch.Tensor, *, blur: float = 1.0) -> dict:
    """Concept accuracy (240-way, prompts "<name> in <style> style" with the image's style) and
    style accuracy (3-way, with the image's concept) of real emoji, on held-out and seen cells, as
    they are and (``..._blur``) after a ``blur`` px Gaussian blur: how much the judge relies on
    sharpness that generated pictures lack (0 skips that row)."""
    from wordpaint.data.emoji import EMOJI_STYLES, HELDOUT_FILE
    from wordpaint.eval.metrics import extract

    vocab = json.loads(HELDOUT_FILE.read_text())["eval_concepts"]
    names = {v["concept"]: v["name"] for v in vocab}
    order = list(names)
    out = {}
    for which in ("heldout", "train"):
        idx = [i for i, r in enumerate(corpus.meta) if r.get("concept") in names and r.get("style") in EMOJI_STYLES
               and r.get("split") == which]
        if not idx:
            continue
        key = f"real_{'heldout_cells' if which == 'heldout' else 'seen_cells'}"
        truth = ([corpus.meta[i]["concept"] for i in idx], [corpus.meta[i]["style"] for i in idx])
        out[key] = concept_style_accuracy(clip, clip.model.embed_image_features(feats[idx]), *truth, order, names)
        if blur:
            soft = soften([corpus.images[i] for i in idx], seed=0, blur=(blur, blur), noise=0.0)  # a fixed blur, no noise
            emb = clip.model.embed_image_features(extract(soft)[0].float())
            out[f"{key}_blur{blur:g}px"] = concept_style_accuracy(clip, emb, *truth, order, names)
    return out


def concept_style_accuracy(clip, image_embeds: torch.Tensor, concepts: list[str], styles: list[str], vocab: list[str],
                           names: dict[str, str], *, per_image: bool = False) -> dict:
    """Zero-shot concept accuracy over ``vocab`` (top-1, and top-5: the true concept among the
    five best-scoring names, a finer measure of progress while top-1 is rare) and style accuracy
    over the emoji styles, with the style confusion counts (``{true style: {judged style: n}}``, one
    row per style present) that say which styles a model's pictures are taken for; with
    ``per_image``, also each image's judged style (``judged_styles``)."""
    from wordpaint.data.emoji import EMOJI_STYLES, short_caption

    text = {s: clip.embed_texts([short_caption(names[c], s) for c in vocab]) for s in EMOJI_STYLES}  # (V, E) per style
    col = {c: j for j, c in enumerate(vocab)}
    rank, style_ok, judged_styles = [], [], []
    confusion = {s: dict.fromkeys(EMOJI_STYLES, 0) for s in EMOJI_STYLES if s in set(styles)}
    for e, c, s in zip(image_embeds, concepts, styles):
        scores = text[s] @ e  # (V,)
        rank.append(int((scores > scores[col[c]]).sum()))  # 0 = the true concept scores best
        judged = EMOJI_STYLES[int(torch.stack([text[t][col[c]] @ e for t in EMOJI_STYLES]).argmax())]
        style_ok.append(judged == s)
        judged_styles.append(judged)
        confusion[s][judged] += 1
    rank = np.asarray(rank)
    return {"images": len(concepts), "concepts": len(vocab), "concept_accuracy": float(np.mean(rank == 0)),
            "concept_top5_accuracy": float(np.mean(rank < 5)), "style_accuracy": float(np.mean(style_ok)),
            "style_confusion": confusion, **({"judged_styles": judged_styles} if per_image else {})}
