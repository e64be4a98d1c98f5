"""Export the shapes world as a Hugging Face imagefolder: ``images/*.png`` + ``metadata.jsonl``
(``file_name``, ``text``, plus the ground truth of every image)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from PIL import Image

from wordpaint.data.captions import ground_truth
from wordpaint.data.shapes import render_scene
from wordpaint.data.stream import ShapesStream
from wordpaint.errors import WordpaintError
from wordpaint.io import atomic_dir


def export_shapes(out: str | os.PathLike, *, n: int, size: int = 48, seed: int = 0, split: str = "train", show_progress: bool = True) -> Path:
    """Write ``n`` examples of the stream (same seed, same images as training sees)."""
    from tqdm.auto import tqdm

    if not isinstance(n, int) or n < 1:
        raise WordpaintError(f"--n must be an integer >= 1, got {n!r}")
    stream = ShapesStream(size=size, seed=seed, split=split)
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        lines = []
        for i in tqdm(range(n), desc="export", unit="img", disable=not show_progress):
            ex = stream.example(i)
            name = f"images/{i:06d}.png"
            Image.fromarray(render_scene(ex.scene, size)).save(tmp / name)
            lines.append(json.dumps({"file_name": name, "text": ex.caption, **ground_truth(ex)}))
        (tmp / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return Path(out)
