"""``wordpaint eval report``: one folder with every figure of a suite, its exact settings and
package versions, a Markdown summary, sample grids and plots.

Suites:
- ``shapes``: compositional accuracy on the built-in prompts (exact scorer) + a per-task bar chart.
- ``fashion``: a text-conditioned Fashion-MNIST model: FID / KID / precision / recall
  (EfficientNet-Lite0 features) of generated vs real test images next to the real-train vs
  real-test floor, and CAS next to the same CNN trained on real images.
- ``emoji``: a latent model of the emoji corpus: for each of the 240 evaluation concepts, its
  seen (concept, style) cells and the 120 held-out ones, generated from "NAME in STYLE style";
  concept accuracy (240-way, top-1 and top-5) and style accuracy (3-way) by wordpaint-clip zero-shot, CLIP-score,
  FID / KID (EfficientNet-Lite0) against the real images of the same cells, the concept and style
  accuracy of a judge that shares nothing with EfficientNet-Lite0 (the concept and style of each
  image's nearest real picture in pixels, among every real image of the suite's concepts), the
  style judge's confusion counts, and a sample sheet with the prompt under each image.
"""

from __future__ import annotations

import os
import platform
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from wordpaint.errors import check_choice
from wordpaint.io import atomic_path, write_json, write_text

SUITES = ("shapes", "fashion", "emoji")


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("wordpaint", "torch", "diffusers", "transformers", "torchmetrics", "numpy", "scipy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    out["machine"] = f"{platform.machine()}, {torch.get_num_threads()} threads"
    return out


def _bar_chart(values: dict[str, float], path: Path, *, title: str, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(list(values), list(values.values()), color="#4a7bd0")
    for i, v in enumerate(values.values()):
        ax.text(i, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def shapes_suite(pipe, out: Path, *, samples_per_prompt: int, seed: int, steps: int | None, guidance: float | None,
                 limit_per_task: int | None, show_progress: bool) -> dict:
    from wordpaint.eval.compositional import evaluate_compositional, markdown_table, write_report
    from wordpaint.eval.prompts import load_prompts, subset

    prompts = load_prompts()
    if limit_per_task is not None:
        prompts = subset(prompts, limit_per_task)
    summary, records, images = evaluate_compositional(pipe, prompts, samples_per_prompt=samples_per_prompt, seed=seed,
                                                      num_inference_steps=steps, guidance_scale=guidance, show_progress=show_progress)
    settings = {"prompts": "built-in compositional_v1", "n_prompts": len(prompts), "samples_per_prompt": samples_per_prompt, "seed": seed}
    write_report(out / "compositional", summary, records, images, settings=settings)  # per-image records kept there
    _bar_chart(summary["per_task"], out / "per_task.png", title="Compositional accuracy per task (exact scorer)", ylabel="accuracy")
    return {"summary": summary, "markdown": markdown_table(summary), "settings": settings}


def fashion_suite(pipe, out: Path, *, n_per_class: int, n_real: int, seed: int, steps: int | None, guidance: float | None,
                  cas_epochs: int, show_progress: bool) -> dict:
    from wordpaint.data.fashion_mnist import CLASSES, caption, from_model_images, load_fashion_mnist, to_model_images
    from wordpaint.eval import metrics as M
    from wordpaint.eval.cas import CASConfig, classification_accuracy_score
    from wordpaint.images import make_grid, save_png

    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    prompts = [caption(c) for c in range(len(CLASSES))]
    t0 = time.perf_counter()
    res = pipe(prompts, num_images_per_prompt=n_per_class, seed=seed, num_inference_steps=steps, guidance_scale=guidance,
               batch_size=64, show_progress=show_progress)
    gen_seconds = time.perf_counter() - t0
    labels = torch.arange(len(CLASSES)).repeat_interleave(n_per_class)
    gen = from_model_images(res.images)  # (N, 28, 28) uint8
    rng = np.random.default_rng(seed)
    real_idx = rng.choice(len(xtr), min(n_real, len(xtr)), replace=False)
    test_idx = rng.choice(len(xte), min(n_real, len(xte)), replace=False)
    as_imgs = lambda a: torch.from_numpy(np.array(a)).unsqueeze(1)  # (N, 1, 28, 28) uint8  # noqa: E731
    f_train, _ = M.extract(as_imgs(xtr[real_idx]), show_progress=show_progress, what="real train images")
    f_test, _ = M.extract(as_imgs(xte[test_idx]), show_progress=show_progress, what="real test images")
    f_gen, l_gen = M.extract(as_imgs(gen.numpy()), show_progress=show_progress, what="generated images")
    name = M.FEATURES_NAME
    figures = {"generated_vs_test": {}, "real_train_vs_test_floor": {}}
    with warnings.catch_warnings(record=True) as notes:  # small-sample warnings go into the report too
        warnings.simplefilter("always", M.FewSamplesWarning)
        for key, (a, b) in {"generated_vs_test": (f_test, f_gen), "real_train_vs_test_floor": (f_test, f_train)}.items():
            kid = M.kid_from_features(a, b, subsets=50, subset_size=min(1000, len(a), len(b)), seed=seed)
            p, r = M.precision_recall_from_features(a, b)
            figures[key] = {f"FID ({name})": M.fid_from_features(a, b), f"KID ({name})": kid[0], f"KID std ({name})": kid[1],
                            f"precision ({name}, k=3)": p, f"recall ({name}, k=3)": r}
    if len(l_gen) >= 10:
        figures["generated_vs_test"][f"IS-style ({name} ImageNet head)"] = M.inception_style_score(l_gen)[0]
    figures["diversity (mean pairwise feature distance within a class)"] = M.diversity_from_features(
        [f_gen[labels == c] for c in range(len(CLASSES))]) if n_per_class >= 2 else None
    n_gen = len(gen)
    cas = classification_accuracy_score(to_model_images(gen.numpy()), labels, to_model_images(xtr[:n_gen]), torch.from_numpy(ytr[:n_gen]),
                                        to_model_images(xte), torch.from_numpy(yte), config=CASConfig(epochs=cas_epochs, seed=seed),
                                        show_progress=show_progress)
    order = [k * n_per_class + j for j in range(min(n_per_class, 8)) for k in range(len(CLASSES))]
    save_png(make_grid([res.images[i].convert("RGB") for i in order], cols=len(CLASSES), scale=2), out / "samples.png")
    g, f = figures["generated_vs_test"], figures["real_train_vs_test_floor"]
    md = [f"### Fashion-MNIST suite ({n_per_class} generated images per class, {len(test_idx)} real test images)", "",
          "| figure | generated vs real test | real train vs real test (floor) |", "|---|---|---|"]
    md += [f"| {k} | {g[k]:.4g} | {f[k]:.4g} |" for k in f]
    md += ["", f"CAS (SmallCNN trained on {cas['n_train']} generated images, tested on {cas['n_test']} real): **{cas['CAS']:.3f}**; "
           f"the same CNN trained on {cas['n_train']} real images: {cas['real_data_accuracy']:.3f}", ""]
    warn = sorted({str(w.message) for w in notes})
    md += [f"> warning: {w}" for w in warn]
    settings = {"n_per_class": n_per_class, "n_real": len(test_idx), "seed": seed, "prompts": prompts, "generation_seconds": round(gen_seconds, 1)}
    return {"figures": figures, "cas": cas, "warnings": warn, "markdown": "\n".join(md), "settings": settings}


EMOJI_REFERENCES = ("other-style",)
EMOJI_IMAGE_EMBEDS = ("prior", "none")


def emoji_suite(pipe, out: Path, *, data: str | os.PathLike, clip=None, samples_per_cell: int, seed: int, steps: int | None,
                guidance: float | None, limit_concepts: int | None, show_progress: bool, reference: str | None = None,
                image_embed: str = "prior") -> dict:
    """The emoji suite (module docstring). ``reference="other-style"`` (a reference model) shows
    each cell the training image of its concept in another style (:func:`reference_cells`),
    never the cell's own image: seen and held-out cells are then drawn the same way. An
    image-embedding model draws with its embedding prior's vectors (``image_embed="prior"``, when
    the pipeline has one) or from the text alone (``"none"``); the settings say which was used."""
    import json as _json

    from wordpaint.data.emoji import EMOJI_STYLES, HELDOUT_FILE, reference_cells, short_caption
    from wordpaint.data.imagefolder import load_imagefolder, model_inputs
    from wordpaint.images import to_pil
    from wordpaint.eval import metrics as M
    from wordpaint.models.clip import WordpaintClip
    from wordpaint.training.clip import concept_style_accuracy

    judge = "bundled wordpaint-clip" if clip is None else str(clip) if not isinstance(clip, WordpaintClip) else "given wordpaint-clip"
    clip = clip if isinstance(clip, WordpaintClip) else WordpaintClip.from_pretrained(clip)
    vocab = _json.loads(HELDOUT_FILE.read_text())["eval_concepts"]
    names = {v["concept"]: v["name"] for v in vocab}
    order = list(names)
    chosen = set(order[:limit_concepts] if limit_concepts else order)
    rows, images, _ = load_imagefolder(data, splits=("train", "heldout"),
                                       keep=lambda r: r.get("concept") in chosen and r.get("style") in EMOJI_STYLES)
    cells = {"seen": [], "heldout": []}  # (concept, style, real image)
    for r, im in zip(rows, images):
        cells["heldout" if r["split"] == "heldout" else "seen"].append((r["concept"], r["style"], im))
    everything = cells["seen"] + cells["heldout"]  # the nearest-picture judge's references: every style of every concept
    name = M.FEATURES_NAME
    figures, pictures, settings = {}, [], {"samples_per_cell": samples_per_cell, "seed": seed, "concepts": len(chosen),
                                             "concept_vocabulary": len(order), "styles": list(EMOJI_STYLES), "data": str(data),
                                             "judge": judge}
    if reference is not None:
        check_choice("reference", reference, EMOJI_REFERENCES)
        train = {(r["concept"], r["style"]): im for r, im in zip(rows, images) if r["split"] != "heldout"}

        def references(items) -> list:
            """One PIL picture (or None: the concept has no other style) per cell of ``items``."""
            picks = reference_cells(train, [(c, st) for c, st, _ in items])
            return [None if p is None else to_pil(model_inputs([train[p]]))[0] for p in picks]

        settings["reference"] = reference
    check_choice("image_embed", image_embed, EMOJI_IMAGE_EMBEDS)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always", M.FewSamplesWarning)
        for which, items in cells.items():
            if not items:
                continue
            prompts = [short_caption(names[c], st) for c, st, _ in items]
            extra = {}
            if reference is not None:
                extra["reference"] = references(items)
                settings[f"{which}_cells_without_reference"] = sum(p is None for p in extra["reference"])
            res = pipe(prompts, num_images_per_prompt=samples_per_cell, seed=seed, num_inference_steps=steps,
                       guidance_scale=guidance, batch_size=64, show_progress=show_progress,
                       image_embed="prior" if image_embed == "prior" else None, **extra)
            if getattr(pipe.model.config, "image_embed_dim", 0):  # which vector drew the images: the pipeline's own record
                settings["image_embed"] = res.metadata[0].get("image_embed", "none (text alone)")
            rep = lambda xs: [x for x in xs for _ in range(samples_per_cell)]  # noqa: E731  (prompt-major, like the images)
            gen_feats = clip.image_features(res.images, show_progress=show_progress)
            real_feats = clip.image_features([im for *_, im in items], show_progress=show_progress)
            gen_emb, real_emb = clip.model.embed_image_features(gen_feats), clip.model.embed_image_features(real_feats)
            acc = concept_style_accuracy(clip, gen_emb, rep([c for c, _, _ in items]), rep([st for _, st, _ in items]), order, names)
            real_acc = concept_style_accuracy(clip, real_emb, [c for c, _, _ in items], [st for _, st, _ in items], order, names)
            text = clip.embed_texts(prompts)  # (cells, E); the generated images repeat each prompt samples_per_cell times
            # CLIP-score as torchmetrics' CLIPScore defines it: mean of max(100 x cosine, 0)
            clip_score = float(100 * (gen_emb * text.repeat_interleave(samples_per_cell, 0)).sum(-1).clamp(min=0).mean())
            real_score = float(100 * (real_emb * text).sum(-1).clamp(min=0).mean())
            # the CLIP image tower is EfficientNet-Lite0 too: its pooled features are the FID features
            kid = M.kid_from_features(real_feats.double(), gen_feats.double(), subsets=50,
                                      subset_size=min(1000, len(real_feats), len(gen_feats)), seed=seed)
            # a second judge that shares nothing with EfficientNet-Lite0: the concept of each image's
            # nearest real picture in pixels among every real image of the suite's concepts
            nearest = M.pixel_nearest(res.images, [im for _, _, im in everything], what="generated images")
            hits = [(everything[j][0] == c, everything[j][1] == st)
                    for j, (c, st) in zip(nearest.tolist(), rep([(c, st) for c, st, _ in items]))]  # (concept, style) per image
            nn_acc, nn_style = (float(v) for v in np.mean(hits, axis=0))
            figures[f"{which}_cells"] = {
                "cells": len(items), "images": len(res.images),
                "concept_accuracy": acc["concept_accuracy"], "concept_top5_accuracy": acc["concept_top5_accuracy"],
                "style_accuracy": acc["style_accuracy"], "real_images_concept_accuracy": real_acc["concept_accuracy"], "real_images_style_accuracy": real_acc["style_accuracy"],
                "clip_score (wordpaint-clip)": clip_score, "real_images_clip_score (wordpaint-clip)": real_score,
                f"FID ({name})": M.fid_from_features(real_feats.double(), gen_feats.double()), f"KID ({name})": kid[0],
                "nearest_real_concept_accuracy (pixels)": nn_acc, "nearest_real_style_accuracy (pixels)": nn_style,
                "style_confusion (true -> judged)": acc["style_confusion"],
            }
            pictures += [(res.images[i * samples_per_cell], prompts[i]) for i in range(0, len(items), max(1, len(items) // 12))][:12]
    settings["generation_and_scoring_seconds"] = round(time.perf_counter() - t0, 1)
    sample_sheet(pictures, out / "samples.png")
    md = [f"### Emoji suite ({len(chosen)} concepts, {samples_per_cell} sample(s) per cell; accuracy by wordpaint-clip zero-shot)", "",
          "| cells | images | concept acc. (240-way) | concept top-5 | style acc. (3-way) | real images: concept / style "
          f"| CLIP-score (generated / real) | FID ({name}) | KID ({name}) | nearest real picture (pixels): concept / style |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for k, f in figures.items():
        md.append(f"| {k} | {f['images']} | {f['concept_accuracy']:.3f} | {f['concept_top5_accuracy']:.3f} | {f['style_accuracy']:.3f} | {f['real_images_concept_accuracy']:.3f} / "
                  f"{f['real_images_style_accuracy']:.3f} | {f['clip_score (wordpaint-clip)']:.1f} / {f['real_images_clip_score (wordpaint-clip)']:.1f} "
                  f"| {f[f'FID ({name})']:.2f} | {f[f'KID ({name})']:.4f} | {f['nearest_real_concept_accuracy (pixels)']:.3f} / "
                  f"{f['nearest_real_style_accuracy (pixels)']:.3f} |")
    md += ["", "Style judged by wordpaint-clip (generated images; each row a prompted style, its images by the style they were taken for):", ""]
    for k, f in figures.items():
        md.append(f"- {k}: " + "; ".join(f"{t} -> " + ", ".join(f"{j} {n}" for j, n in row.items())
                                        for t, row in f["style_confusion (true -> judged)"].items()))
    warn = sorted({str(w.message) for w in notes})
    md += [""] + [f"> warning: {w}" for w in warn]
    return {"figures": figures, "warnings": warn, "markdown": "\n".join(md), "settings": settings}


def sample_sheet(pictures: list, path: Path, *, cols: int = 6, scale: int = 2) -> None:
    """A PNG of (PIL image, caption) pairs with the caption written under each image."""
    from PIL import Image, ImageDraw

    from wordpaint.images import label_font

    if not pictures:
        return
    w, h = pictures[0][0].size
    cw, ch = w * scale + 40, h * scale + 34
    rows = (len(pictures) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cw, rows * ch), "white")
    draw = ImageDraw.Draw(sheet)
    font = label_font(10)
    for k, (im, text) in enumerate(pictures):
        x, y = (k % cols) * cw, (k // cols) * ch
        sheet.paste(im.convert("RGB").resize((w * scale, h * scale), Image.Resampling.NEAREST), (x + 20, y + 2))
        words, lines = text.split(), [""]
        for word in words:  # wrap at ~24 characters, two lines at most
            lines[-1:] = [lines[-1] + " " + word] if len(lines[-1]) + len(word) < 24 else [lines[-1], word]
        for j, line in enumerate(lines[:2]):
            draw.text((x + 4, y + h * scale + 4 + 12 * j), line.strip(), fill="black", font=font)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def write_suite_report(pipe, suite: str, out: str | os.PathLike, *, model_name: str, show_progress: bool = True, **kw) -> dict[str, Path]:
    """Run ``suite`` and write results.json (figures + settings + versions), summary.md and pictures."""
    check_choice("suite", suite, SUITES)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if suite == "shapes":
        res = shapes_suite(pipe, out, show_progress=show_progress, **kw)
    elif suite == "emoji":
        res = emoji_suite(pipe, out, show_progress=show_progress, **kw)
    else:
        res = fashion_suite(pipe, out, show_progress=show_progress, **kw)
    sampling = {"num_inference_steps": kw.get("steps") or pipe.defaults["num_inference_steps"],
                "guidance_scale": kw.get("guidance") if kw.get("guidance") is not None else pipe.defaults["guidance_scale"],
                "sampler": pipe.defaults["sampler"], "sigma_schedule": pipe.defaults["sigma_schedule"],
                "clip_guidance_scale": pipe.defaults["clip_guidance_scale"],
                **({"guidance_interval": list(pipe.defaults["guidance_interval"])} if pipe.defaults["guidance_interval"] else {}),
                **({"autoguidance_scale": pipe.defaults["autoguidance_scale"]} if pipe.defaults["autoguidance_scale"] else {}),
                **({"expert_sigma": pipe.defaults["expert_sigma"]} if pipe.defaults["expert_sigma"] is not None else {}),
                **({"refine_strength": pipe.defaults["refine_strength"], "refined_by": "expert" if pipe.expert is not None else "model"}
                   if pipe.defaults["refine_strength"] is not None else {}),
                **({"clip_contrast_styles": pipe.defaults["clip_contrast_styles"]}
                   if pipe.defaults["clip_contrast_styles"] and pipe.defaults["clip_guidance_scale"] else {}),
                **({"prior_strength": pipe.defaults["prior_strength"]} if pipe.defaults["prior_strength"] is not None else {}),
                **({"restore": True} if pipe.defaults["restore"] else {})}
    doc = {"suite": suite, "model": model_name, **{k: v for k, v in res.items() if k != "markdown"}, "sampling": sampling,
           "versions": package_versions(), "seconds": round(time.perf_counter() - t0, 1)}
    write_json(out / "results.json", doc)
    lines = [f"# wordpaint eval report: {suite}", "", f"model: `{model_name}`", "", res["markdown"], "",
             "Settings: " + ", ".join(f"{k}={v}" for k, v in {**sampling, **{k: v for k, v in res['settings'].items() if k != 'prompts'}}.items()),
             "", "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()), ""]
    write_text(out / "summary.md", "\n".join(lines))
    return {"json": out / "results.json", "markdown": out / "summary.md", "dir": out}
