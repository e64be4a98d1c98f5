"""Image folders in the Hugging Face imagefolder convention: ``metadata.jsonl`` lines with
``file_name`` and ``text`` (plus any other fields) beside the images. Reads the emoji corpus and a
user's own folder alike."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from wordpaint.errors import WordpaintError


class SkippedFileWarning(UserWarning):
    """A metadata line or image that was left out, with the file named."""


def load_imagefolder(folder: str | os.PathLike, *, size: int | None = None,
                     splits: tuple[str, ...] | None = None, kinds: tuple[str, ...] | None = None,
                     keep=None) -> tuple[list[dict], list[torch.Tensor], list[dict]]:
    """(metadata rows, uint8 (3, H, W) images, skipped) of ``folder``.

    Lines that are not JSON objects, lack ``file_name`` or a non-empty ``text``, or name an image
    that cannot be read are skipped with a :class:`SkippedFileWarning` naming the line or file,
    and returned in ``skipped``. ``size`` resizes (antialiased) images of another size; ``splits``
    keeps rows whose ``split`` (default "train") is listed, ``kinds`` rows whose ``kind`` (default
    "emoji") is listed; ``keep(row)`` filters further."""
    import numpy as np
    from PIL import Image

    from wordpaint.images import on_white

    folder = Path(folder)
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise WordpaintError(f"no metadata.jsonl in {folder} (an image folder needs one line per image: "
                             '{"file_name": ..., "text": ...}; build the emoji corpus with `wordpaint data build emoji`)')
    rows, images, skipped = [], [], []

    def skip(where: str, reason: str) -> None:
        skipped.append({"file": where, "reason": reason})
        warnings.warn(f"skipped {where}: {reason}", SkippedFileWarning, stacklevel=3)

    for n, line in enumerate(meta.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            skip(f"{meta}:{n}", f"not JSON ({e.msg})")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
            skip(f"{meta}:{n}", "no file_name")
            continue
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            skip(f"{meta}:{n}", f"no text for {row['file_name']}")
            continue
        if (splits is not None and row.get("split", "train") not in splits) or (kinds is not None and row.get("kind", "emoji") not in kinds) \
                or (keep is not None and not keep(row)):
            continue
        path = folder / row["file_name"]
        try:
            with Image.open(path) as im:
                im.load()
                img = im.convert("RGBA")
        except (OSError, ValueError) as e:
            skip(str(path), f"unreadable image ({type(e).__name__}: {e})")
            continue
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.LANCZOS)
        rows.append(row)
        images.append(torch.from_numpy(np.asarray(on_white(img)).copy()).permute(2, 0, 1).contiguous())
    if not rows:
        raise WordpaintError(f"no usable images in {folder} ({len(skipped)} skipped)")
    return rows, images, skipped


def caption_alternatives(row: dict) -> list[str]:
    """Captions an image may be trained with: the stored ``text`` and, for a corpus row with a
    name and a style (the emoji builder's), the short prompt form "fox in twemoji style"."""
    from wordpaint.data.emoji import short_caption

    if "name" in row and "style" in row:
        return [row["text"], short_caption(row["name"], row["style"])]
    return [row["text"]]


def model_inputs(images: list, autoencoder=None, *, show_progress: bool = False) -> torch.Tensor:
    """(N, C, h, w) what a diffusion model sees of uint8 (3, H, W) images: pixels in [-1, 1], or
    with an ``autoencoder`` its scaled latents (encoded 128 at a time, returned on the CPU)."""
    x = torch.stack(images).float() / 127.5 - 1  # (N, 3, H, W) in [-1, 1]
    if autoencoder is None:
        return x
    from tqdm.auto import tqdm

    chunks = range(0, len(x), 128)
    return torch.cat([autoencoder.encode(x[i : i + 128]).cpu() for i in tqdm(chunks, desc="encode latents", disable=not show_progress)])


class ImageFolderStream:
    """Endless (image, caption) training batches from an image folder, read once into memory.

    Example ``i`` is a pure function of (seed, i): epoch ``i // N`` visits the N images in a
    permutation drawn from (seed, epoch), the caption is one of :func:`caption_alternatives`
    and is dropped ('' for classifier-free guidance) with ``cond_drop_prob``. With an
    ``autoencoder`` (a :class:`~wordpaint.models.autoencoder.AutoencoderModel`) the stream gives
    its scaled latents instead of pixels, encoded once up front (the autoencoder is frozen).
    With ``references`` it also gives, through :meth:`layouts`, each example's reference: the
    model input of another image of the same ``concept`` in a different ``style`` (drawn per
    example), or zeros when the concept has no other style here, when the caption was dropped, or
    with ``reference_drop_prob``; so a reference model also learns to draw from text alone.
    ``style_repeats`` ({style: k}) puts each row of those styles k times into every epoch's
    permutation (data rebalancing: more passes over a style the model draws worst); without it
    the order is exactly the unweighted one."""

    def __init__(self, folder: str | os.PathLike, *, size: int = 64, seed: int = 0, splits: tuple[str, ...] = ("train",),
                 kinds: tuple[str, ...] | None = None, cond_drop_prob: float = 0.0, autoencoder=None,
                 references: bool = False, reference_drop_prob: float = 0.0, style_repeats: dict[str, int] | None = None,
                 show_progress: bool = True):
        self.rows, images, self.skipped = load_imagefolder(folder, size=size, splits=tuple(splits), kinds=kinds)
        self.pool = repeat_pool(self.rows, style_repeats or {})  # (M,) row indices an epoch permutes; M >= N
        self.seed, self.cond_drop_prob, self.reference_drop_prob = seed, cond_drop_prob, reference_drop_prob
        self.captions = [caption_alternatives(r) for r in self.rows]
        self.images = images  # uint8 (3, H, W) each: the real images, for FID during training
        self.data = model_inputs(images, autoencoder, show_progress=show_progress)  # (N, C, h, w)
        self.references = reference_candidates(self.rows) if references else None
        self._epoch: tuple[int, object] = (-1, None)  # (epoch, its permutation): drawn once per epoch

    def __len__(self) -> int:
        return len(self.data)

    def index(self, i: int) -> int:
        import numpy as np

        n = len(self.pool)
        if self._epoch[0] != i // n:
            self._epoch = (i // n, np.random.default_rng([self.seed, i // n]).permutation(n))
        return int(self.pool[self._epoch[1][i % n]])

    def _example(self, i: int) -> tuple[int, str]:
        """(row, caption) of example ``i``; the caption is '' when dropped."""
        import numpy as np

        j = self.index(i)
        r = np.random.default_rng([self.seed, i, 1])
        alts = self.captions[j]
        cap = alts[int(r.integers(len(alts)))]
        return j, "" if r.random() < self.cond_drop_prob else cap

    def batch(self, step: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, list[str]]:
        """Batch ``step`` for ``rank``: examples (step * world + rank) * B ... + B - 1."""
        from wordpaint.data.stream import batch_indices

        idx, caps = zip(*(self._example(i) for i in batch_indices(step, batch_size, rank=rank, world_size=world_size)))
        return self.data[list(idx)], list(caps)

    def batch_rows(self, step: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> list[int]:
        """The rows (indices into :attr:`rows` and :attr:`images`) of :meth:`batch`'s examples."""
        from wordpaint.data.stream import batch_indices

        return [self.index(i) for i in batch_indices(step, batch_size, rank=rank, world_size=world_size)]

    def layouts(self, step: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """(B, C, h, w) the references of :meth:`batch`'s examples (zeros where there is none)."""
        import numpy as np

        from wordpaint.data.stream import batch_indices

        if self.references is None:
            raise WordpaintError("this image-folder stream was built without references=True")
        out = torch.zeros(batch_size, *self.data.shape[1:])
        for k, i in enumerate(batch_indices(step, batch_size, rank=rank, world_size=world_size)):
            j, cap = self._example(i)
            r = np.random.default_rng([self.seed, i, 2])
            if cap and self.references[j] and r.random() >= self.reference_drop_prob:
                out[k] = self.data[self.references[j][int(r.integers(len(self.references[j])))]]
        return out


def repeat_pool(rows: list[dict], style_repeats: dict[str, int]) -> list[int]:
    """Row indices, each row of a style in ``style_repeats`` repeated that many times (in row order)."""
    if not isinstance(style_repeats, dict):
        raise WordpaintError(f"style_repeats must be a mapping of style to repeats, e.g. {{\"twemoji\": 2}}, got {style_repeats!r}")
    styles = {r.get("style") for r in rows}
    for style, k in style_repeats.items():
        if style not in styles:
            raise WordpaintError(f"style_repeats names style {style!r}, which no training row has; styles here: "
                                 f"{sorted(s for s in styles if s is not None)}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 100:
            raise WordpaintError(f"style_repeats[{style!r}] must be an integer in [1, 100], got {k!r}")
    return [j for j, r in enumerate(rows) for _ in range(style_repeats.get(r.get("style"), 1))]


def reference_candidates(rows: list[dict]) -> list[list[int]]:
    """For each row, the indices of the rows of the same ``concept`` in another ``style`` (rows
    without a concept or style have none): what a reference model may be shown for it."""
    from collections import defaultdict

    by_concept: dict = defaultdict(list)
    for k, r in enumerate(rows):
        if r.get("concept") is not None and r.get("style") is not None:
            by_concept[r["concept"]].append(k)
    return [[k for k in by_concept.get(r.get("concept"), []) if rows[k].get("style") != r.get("style")]
            if r.get("style") is not None else [] for r in rows]
