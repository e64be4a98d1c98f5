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
                     splits: tuple[str, ...] | None = None, keep=None) -> tuple[list[dict], list[torch.Tensor], list[dict]]:
    """(metadata rows, uint8 (3, H, W) images, skipped) of ``folder``.

    Lines that are not JSON objects, lack ``file_name`` or a non-empty ``text``, or name an image
    that cannot be read are skipped with a :class:`SkippedFileWarning` naming the line or file,
    and returned in ``skipped``. ``size`` resizes (antialiased) images of another size; ``splits``
    keeps rows whose ``split`` (default "train") is listed; ``keep(row)`` filters further."""
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
        if (splits is not None and row.get("split", "train") not in splits) or (keep is not None and not keep(row)):
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
