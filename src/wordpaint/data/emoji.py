"""The emoji and icon corpus: named, tagged 64x64 images from packaged sets (issue 4).

Sources are ordinary npm packages, installed with npm into a cache folder and pinned to exact
versions so a rebuild reads the same bytes:

========  =========================  ======  ==============================================
style     package                    format  licence of the artwork
========  =========================  ======  ==============================================
noto      emoji-datasource-google    PNG 64  Apache-2.0 (Noto Emoji)
twemoji   emoji-datasource-twitter   PNG 64  CC-BY-4.0 (Twemoji)
openmoji  openmoji                   SVG     CC-BY-SA-4.0 (OpenMoji)
fluent    @iconify-json/             SVG     MIT (Fluent Emoji Flat, Microsoft); opt-in,
          fluent-emoji-flat                  the icons.json bodies expanded to SVG files
lucide    lucide-static              SVG     ISC (Lucide icons)
tabler    @tabler/icons              SVG     MIT (Tabler icons)
========  =========================  ======  ==============================================

Emoji names and keywords come from ``emojibase-data`` (CLDR annotations). One *concept* is one
emoji (its Unicode code points without FE0F) across styles, so "fox in twemoji style" and "fox in
openmoji style" are two cells of the style x concept grid. ``emoji_heldout.json`` (shipped with
the package, fixed) keeps one style of each of 120 concepts out of training: those cells measure
generalisation to combinations never seen.

Output (``DIR``): ``images/<style>/<key>.png`` (64x64 RGB composited on white),
``metadata.jsonl`` (Hugging Face imagefolder convention: ``file_name``, ``text`` + name, keywords,
category, style, source, licence, concept, split), ``manifest.json`` (package versions, settings,
per-file source and output SHA-256, skipped files with the reason) and a dataset card
``README.md`` with the licences. Rebuilding is idempotent: unchanged files are not rasterised
again and the manifest comes out identical.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from wordpaint.errors import WordpaintError, check_choice
from wordpaint.io import atomic_path, cache_root, write_json, write_text

BUILDER_VERSION = 1  # bump when the rendering of an image changes (forces a re-rasterise)


@dataclass(frozen=True)
class Source:
    style: str
    kind: str  # "emoji" or "icon"
    package: str
    version: str
    licence: str


SOURCES: dict[str, Source] = {
    s.style: s
    for s in (
        Source("noto", "emoji", "emoji-datasource-google", "16.0.0", "Apache-2.0 (Noto Emoji artwork, Google)"),
        Source("twemoji", "emoji", "emoji-datasource-twitter", "16.0.0", "CC-BY-4.0 (Twemoji artwork, Twitter/X)"),
        Source("openmoji", "emoji", "openmoji", "17.0.0", "CC-BY-SA-4.0 (OpenMoji)"),
        Source("fluent", "emoji", "@iconify-json/fluent-emoji-flat", "1.2.6", "MIT (Fluent Emoji Flat artwork, Microsoft)"),
        Source("lucide", "icon", "lucide-static", "1.62.0", "ISC (Lucide icons)"),
        Source("tabler", "icon", "@tabler/icons", "3.51.0", "MIT (Tabler icons)"),
    )
}
# the style x concept grid (held-out cells, evaluation vocabularies, the bundled models' data);
# fluent is an extra emoji style a build can add (--styles ...,fluent) that the grid does not use
EMOJI_STYLES = ("noto", "twemoji", "openmoji")
ALL_EMOJI_STYLES = tuple(s for s, src in SOURCES.items() if src.kind == "emoji")
ICON_STYLES = tuple(s for s, src in SOURCES.items() if src.kind == "icon")
KEYWORDS = ("emojibase-data", "17.0.0")  # CLDR names and keywords for every emoji
DEFAULT_CACHE = cache_root() / "npm"
HELDOUT_FILE = Path(__file__).with_name("emoji_heldout.json")


@dataclass
class Item:
    """One source image before rasterising."""

    style: str
    concept: str  # emoji: code points without FE0F ("1F98A"); icon: "<style>:<name>"
    name: str
    keywords: list[str]
    category: str
    path: Path
    fmt: str  # "png" or "svg"


def concept_of(hexcode: str) -> str:
    """Canonical concept key of an emoji: upper-case code points without the FE0F selector."""
    return "-".join(p for p in hexcode.upper().split("-") if p and p != "FE0F")


def short_caption(name: str, style: str) -> str:
    """The generation prompt and zero-shot label of an emoji: "fox in twemoji style"."""
    return f"{name} in {style} style"


def reference_style(styles, style: str, *, order: tuple[str, ...] = EMOJI_STYLES) -> str | None:
    """The style a reference for a (concept, ``style``) cell is taken from, given the concept's
    available ``styles``: the next one after ``style`` in ``order`` (cyclically) that it has,
    never ``style`` itself; None when it has no other. Deterministic, so every report and dev
    run shows a reference model the same pictures."""
    k = order.index(style) if style in order else -1
    for other in order[k + 1 :] + order[: k + 1]:
        if other != style and other in styles:
            return other
    return None


def reference_cells(available, cells) -> list[tuple[str, str] | None]:
    """For each (concept, style) of ``cells``, the cell of ``available`` (the training cells,
    (concept, style) pairs) its reference is taken from: the same concept in
    :func:`reference_style`'s style, or None when the concept has no other style there."""
    styles: dict[str, set[str]] = {}
    for c, s in available:
        styles.setdefault(c, set()).add(s)
    picks = [(c, reference_style(styles.get(c, ()), s)) for c, s in cells]
    return [None if other is None else (c, other) for c, other in picks]


def caption(name: str, keywords: list[str], style: str) -> str:
    """The stored caption: name, up to three keywords that add words, and the style."""
    extra = [k for k in keywords if k.lower() not in name.lower()][:3]
    return f"{name} ({', '.join(extra)}) in {style} style" if extra else short_caption(name, style)


# ----------------------------------------------------------------------------- fetching packages


def fetch_packages(specs: list[tuple[str, str]], cache: Path, *, log: Callable[[str], None] = print) -> dict[str, Path | str]:
    """Install ``(package, version)`` pairs with npm into ``cache``; returns package -> its folder,
    or -> an error message for a package that could not be installed (the build goes on without it)."""
    cache.mkdir(parents=True, exist_ok=True)
    result: dict[str, Path | str] = {}
    missing = []
    for pkg, version in specs:
        folder = cache / "node_modules" / pkg
        if _installed_version(folder) == version:
            result[pkg] = folder
        else:
            missing.append((pkg, version))
    if missing:
        npm = shutil.which("npm")
        if npm is None:
            for pkg, version in missing:
                result[pkg] = f"npm not found: install Node.js and npm (apt-get install npm), then rerun; needed for {pkg}@{version}"
            return result
        # one at a time (a bad package does not sink the others), saved to the cache's own
        # package.json so a later install does not prune the packages already there
        for pkg, version in missing:
            log(f"npm install {pkg}@{version} -> {cache}")
            proc = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--save-exact", "--prefix", str(cache), f"{pkg}@{version}"],
                capture_output=True, text=True,
            )
            folder = cache / "node_modules" / pkg
            if proc.returncode == 0 and _installed_version(folder) == version:
                result[pkg] = folder
            else:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                result[pkg] = f"npm install {pkg}@{version} failed (exit {proc.returncode}): {tail[0]}"
    return result


def _installed_version(folder: Path) -> str | None:
    try:
        return json.loads((folder / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


# ----------------------------------------------------------------------------- reading sources


def emoji_labels(folder: Path) -> dict[str, tuple[str, list[str], str]]:
    """concept -> (CLDR name, keywords, group name) from emojibase-data."""
    data = json.loads((folder / "en" / "data.json").read_text())
    groups = {g["order"]: g["message"] for g in json.loads((folder / "en" / "messages.json").read_text())["groups"]}
    return {
        concept_of(e["hexcode"]): (e["label"], list(e.get("tags") or []), groups.get(e.get("group"), ""))
        for e in data
        if "label" in e
    }


def read_source(style: str, folder: Path, labels: dict) -> list[Item]:
    """The items of one style's package, base forms only (no skin-tone variants)."""
    check_choice("style", style, SOURCES)
    items: list[Item] = []
    if style in ("noto", "twemoji"):
        sub = {"noto": "google", "twemoji": "twitter"}[style]
        for e in json.loads((folder / "emoji.json").read_text()):
            if not e.get(f"has_img_{sub}") or e.get("category") == "Component":
                continue
            concept = concept_of(e["unified"])
            name, keywords, group = labels.get(concept, (e["name"].lower(), [], e.get("category", "")))
            items.append(Item(style, concept, name, keywords, group or e.get("category", ""),
                              folder / "img" / sub / "64" / e["image"], "png"))
    elif style == "openmoji":
        for e in json.loads((folder / "data" / "openmoji.json").read_text()):
            if e.get("skintone") not in ("", None) or e.get("group") == "component":
                continue
            concept = concept_of(e["hexcode"])
            tags = [t.strip() for t in f"{e.get('tags', '')},{e.get('openmoji_tags', '')}".split(",") if t.strip()]
            name, keywords, group = labels.get(concept, (e["annotation"], tags, e.get("group", "")))
            items.append(Item(style, concept, name, keywords or tags, group or e.get("group", ""),
                              folder / "color" / "svg" / f"{e['hexcode']}.svg", "svg"))
    elif style == "fluent":
        # Iconify JSON: SVG bodies in one icons.json, chars.json maps code points -> icon name.
        # Each body is written once as a standalone SVG file beside the package, so hashing,
        # rasterising and skipped-file reports work on files as for the other styles.
        data = json.loads((folder / "icons.json").read_text())
        chars = json.loads((folder / "chars.json").read_text())
        svg_dir = folder / "wordpaint-svg"
        svg_dir.mkdir(exist_ok=True)
        seen: set[str] = set()
        for hexcode, name in sorted(chars.items()):
            concept = concept_of(hexcode)
            icon = data["icons"].get(name)
            if icon is None or concept in seen or any(t in concept.split("-") for t in _SKIN_TONES):
                continue
            seen.add(concept)
            label, keywords, group = labels.get(concept, (name.replace("-", " "), [], ""))
            if group == "component":
                continue
            w, h = icon.get("width", data.get("width", 16)), icon.get("height", data.get("height", 16))
            svg = f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}">{icon["body"]}</svg>'
            path = svg_dir / f"{concept.lower()}.svg"
            if not path.is_file() or path.read_text() != svg:
                with atomic_path(path) as tmp:
                    tmp.write_text(svg)
            items.append(Item(style, concept, label, keywords, group or "emoji", path, "svg"))
    elif style == "lucide":
        tags = json.loads((folder / "tags.json").read_text())
        for svg in sorted((folder / "icons").glob("*.svg")):
            items.append(Item(style, f"lucide:{svg.stem}", svg.stem.replace("-", " "), list(tags.get(svg.stem, [])),
                              "icon", svg, "svg"))
    elif style == "tabler":
        meta = json.loads((folder / "icons.json").read_text())
        for svg in sorted((folder / "icons" / "outline").glob("*.svg")):
            m = meta.get(svg.stem, {})
            items.append(Item(style, f"tabler:{svg.stem}", svg.stem.replace("-", " "), [str(t) for t in m.get("tags", [])],
                              f"icon: {m['category']}" if m.get("category") else "icon", svg, "svg"))
    return items


_SKIN_TONES = ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF")


def load_heldout() -> dict[str, str]:
    """The fixed held-out cells: concept -> the style kept out of training."""
    return {c["concept"]: c["style"] for c in json.loads(HELDOUT_FILE.read_text())["cells"]}


def split_of(item: Item, heldout: dict[str, str]) -> str:
    """``heldout`` for the fixed (concept, style) cells; icons keep a fixed 5% ``test`` split (by
    name hash) for retrieval; everything else is ``train``."""
    if heldout.get(item.concept) == item.style:
        return "heldout"
    if SOURCES[item.style].kind == "icon" and int(hashlib.sha1(item.concept.encode()).hexdigest(), 16) % 20 == 0:
        return "test"
    return "train"


# ----------------------------------------------------------------------------- rasterising


def rasterise(path: str, fmt: str, size: int) -> bytes:
    """PNG bytes of ``path`` as a ``size`` x ``size`` RGB image composited on white. Raises
    ValueError for a file that cannot be decoded."""
    from PIL import Image

    from wordpaint.images import on_white

    if fmt == "svg":
        import resvg_py

        png = bytes(resvg_py.svg_to_bytes(svg_path=path, width=size, height=size, skip_system_fonts=True))
        img = Image.open(io.BytesIO(png))
    else:
        img = Image.open(path)
    img.load()
    img = img.convert("RGBA")  # resize with alpha, then composite
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    on_white(img).save(buf, format="PNG", optimize=False)  # no text chunks: same pixels -> same bytes
    return buf.getvalue()


def _rasterise_job(job: tuple[str, str, int]) -> tuple[bytes | None, str | None]:
    try:
        return rasterise(*job), None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a skipped file, named in the manifest
        return None, f"{type(e).__name__}: {e}".strip()[:300]


def rasterise_many(jobs: list[tuple[str, str, int]], *, workers: int = 2, timeout: float = 10.0,
                   progress: Callable[[int], None] | None = None) -> list[tuple[bytes | None, str | None]]:
    """Rasterise ``(path, fmt, size)`` jobs in worker processes. A file that takes longer than
    ``timeout`` seconds is skipped (its worker pool is replaced) and the rest go on."""
    results: list[tuple[bytes | None, str | None]] = [(None, "not run")] * len(jobs)
    pending = list(range(len(jobs)))
    # fork: workers need no re-import of __main__ (spawn fails under `python -` or a notebook);
    # they only run PIL and resvg, never torch, so inherited thread pools are never touched
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    while pending:
        pool = ctx.Pool(max(1, workers))
        try:
            handles = [(i, pool.apply_async(_rasterise_job, (jobs[i],))) for i in pending]
            pending = []
            for k, (i, h) in enumerate(handles):
                try:
                    results[i] = h.get(timeout=timeout)
                except multiprocessing.TimeoutError:
                    results[i] = (None, f"timed out after {timeout:g} s")
                    pending = [j for j, _ in handles[k + 1:]]  # a stuck worker: restart the pool for the rest
                    break
                finally:
                    if progress:
                        progress(1)
        finally:
            pool.terminate()
            pool.join()
    return results


# ----------------------------------------------------------------------------- the build


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_emoji(out: str | os.PathLike, *, styles: list[str] | tuple[str, ...] = EMOJI_STYLES,
                icons: list[str] | tuple[str, ...] = ICON_STYLES, cache: str | os.PathLike | None = None,
                size: int = 64, workers: int = 2, timeout: float = 10.0, limit: int | None = None,
                package_dirs: dict[str, str | os.PathLike] | None = None,
                log: Callable[[str], None] = print) -> dict:
    """Build (or update) the corpus in ``out``; returns the manifest.

    ``styles``/``icons`` pick sources (see :data:`SOURCES`); ``limit`` keeps the first N items of
    each style (for tests); ``package_dirs`` maps a package name to an already unpacked folder
    instead of fetching it. Missing packages and undecodable files are reported and listed in the
    manifest's ``skipped``; the rest of the build continues."""
    from tqdm.auto import tqdm

    wanted = list(styles) + list(icons)
    for s in styles:
        check_choice("emoji style", s, ALL_EMOJI_STYLES)
    for s in icons:
        check_choice("icon set", s, ICON_STYLES)
    if not wanted:
        raise WordpaintError("nothing to build: give at least one of --styles / --icons")
    if not 16 <= size <= 512:
        raise WordpaintError(f"size must be in 16..512, got {size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = [(SOURCES[s].package, SOURCES[s].version) for s in wanted]
    if styles:
        specs.append(KEYWORDS)
    given = {k: Path(v) for k, v in (package_dirs or {}).items()}
    to_fetch = [sp for sp in specs if sp[0] not in given]
    folders: dict[str, Path | str] = dict(given)
    if to_fetch:
        folders.update(fetch_packages(to_fetch, Path(cache) if cache else DEFAULT_CACHE, log=log))

    skipped: list[dict] = []
    labels: dict = {}
    if styles:
        kw = folders.get(KEYWORDS[0])
        if isinstance(kw, Path):
            try:
                labels = emoji_labels(kw)
            except (OSError, ValueError, KeyError) as e:
                kw = f"unreadable package in {kw}: {e}"
        if not labels:
            skipped.append({"source": f"{KEYWORDS[0]}@{KEYWORDS[1]}", "reason": f"{kw}; emoji keep their package names"})
            log(f"warning: {kw}; emoji keep their package names, without keywords")
    items: list[Item] = []
    for s in wanted:
        folder = folders.get(SOURCES[s].package)
        if not isinstance(folder, Path):
            skipped.append({"source": f"{SOURCES[s].package}@{SOURCES[s].version}", "reason": str(folder)})
            log(f"warning: skipping style {s!r}: {folder}")
            continue
        try:
            got = read_source(s, folder, labels)
        except (OSError, ValueError, KeyError) as e:
            skipped.append({"source": f"{SOURCES[s].package}@{SOURCES[s].version}", "reason": f"unreadable package: {e}"})
            log(f"warning: skipping style {s!r}: unreadable package in {folder}: {e}")
            continue
        items.extend(got[:limit] if limit else got)

    previous = _previous_files(out / "manifest.json")
    heldout = load_heldout()
    records, files, jobs, job_items = [], {}, [], []
    for it in items:
        rel = f"images/{it.style}/{it.concept.split(':')[-1].lower()}.png"
        try:
            src_sha = _sha256(it.path.read_bytes())
        except OSError as e:
            skipped.append({"file": str(it.path), "reason": f"unreadable: {e.strerror or e}"})
            continue
        prev = previous.get(rel)
        if prev and prev["source_sha256"] == src_sha and prev.get("builder") == [BUILDER_VERSION, size] \
                and (out / rel).is_file() and _sha256((out / rel).read_bytes()) == prev["sha256"]:
            files[rel] = prev  # unchanged: keep the image already there
        else:
            jobs.append((str(it.path), it.fmt, size))
            job_items.append((it, rel, src_sha))
        records.append((it, rel))
    log(f"{len(items)} images from {len(wanted)} sources: {len(jobs)} to rasterise, {len(files)} unchanged")
    with tqdm(total=len(jobs), desc="rasterise", unit="img", disable=not jobs) as bar:
        results = rasterise_many(jobs, workers=workers, timeout=timeout, progress=bar.update)
    failed = set()
    for (it, rel, src_sha), (png, err) in zip(job_items, results):
        if png is None:
            skipped.append({"file": str(it.path), "reason": err})
            log(f"warning: skipped {it.path}: {err}")
            failed.add(rel)
            continue
        with atomic_path(out / rel) as tmp:
            tmp.write_bytes(png)
        files[rel] = {"source": str(it.path.name), "source_sha256": src_sha, "sha256": _sha256(png),
                      "builder": [BUILDER_VERSION, size]}

    lines, counts = [], {}
    for it, rel in records:
        if rel in failed:
            continue
        src = SOURCES[it.style]
        split = split_of(it, heldout)
        counts.setdefault(it.style, {}).setdefault(split, 0)
        counts[it.style][split] += 1
        lines.append(json.dumps({
            "file_name": rel, "text": caption(it.name, it.keywords, it.style), "name": it.name,
            "keywords": it.keywords, "category": it.category, "style": it.style, "kind": src.kind,
            "concept": it.concept, "split": split, "source": f"{src.package}@{src.version}", "licence": src.licence,
        }, ensure_ascii=False))
    # images of items no longer in the build are removed, so the folder matches its metadata
    keep = {rel for _, rel in records} - failed
    for png in out.glob("images/*/*.png"):
        if png.relative_to(out).as_posix() not in keep:
            png.unlink()
    write_text(out / "metadata.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    manifest = {
        "dataset": "wordpaint-emoji", "builder_version": BUILDER_VERSION, "size": size,
        "sources": {s: {"package": SOURCES[s].package, "version": SOURCES[s].version, "licence": SOURCES[s].licence,
                        "built": isinstance(folders.get(SOURCES[s].package), Path)} for s in wanted},
        "keywords": f"{KEYWORDS[0]}@{KEYWORDS[1]}" if styles else None,
        "counts": counts, "images": len(lines), "heldout_cells": len(heldout),
        "skipped": skipped, "files": dict(sorted((k, v) for k, v in files.items() if k in keep)),
    }
    write_json(out / "manifest.json", manifest)
    write_text(out / "README.md", dataset_card(manifest))
    log(f"wrote {len(lines)} images, metadata.jsonl, manifest.json and README.md to {out}"
        + (f"; skipped {len(skipped)} (listed in manifest.json)" if skipped else ""))
    return manifest


def _previous_files(path: Path) -> dict:
    try:
        return json.loads(path.read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}


def dataset_card(manifest: dict) -> str:
    """The dataset card: sources, versions, licences, counts and held-out cells."""
    rows = []
    for style, s in manifest["sources"].items():
        c = manifest["counts"].get(style, {})
        rows.append(f"| {style} | {s['package']}@{s['version']} | {s['licence']} | {c.get('train', 0)} | "
                    f"{c.get('heldout', 0) + c.get('test', 0)} |" + ("" if s["built"] else " (package missing)"))
    return "\n".join([
        "# wordpaint-emoji", "",
        f"{manifest['images']} images, {manifest['size']}x{manifest['size']} RGB on white, built by "
        "`wordpaint data build emoji` from packaged emoji and icon sets. Each image keeps the licence of its "
        "source artwork (column *licence*, also in every metadata line); attribution is required for "
        "Twemoji (CC-BY-4.0) and OpenMoji (CC-BY-SA-4.0, share-alike).", "",
        "| style | package | licence | train | held-out/test |", "|---|---|---|---:|---:|", *rows, "",
        f"Names and keywords: {manifest['keywords'] or 'package names only'} (CLDR annotations).",
        f"Held-out cells: {manifest['heldout_cells']} (concept, style) pairs never in `train` "
        "(`split: heldout`); icons keep a fixed 5% `test` split.",
        f"Skipped files: {len(manifest['skipped'])} (see manifest.json).", "",
    ])
