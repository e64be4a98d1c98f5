"""Image helpers: tensor <-> PIL, PNG with generation metadata, sample grids."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from wordpaint.io import atomic_path


def on_white(img: Image.Image) -> Image.Image:
    """RGB copy of ``img`` with any transparency (RGBA, LA, P with a transparent index)
    composited on opaque white: the one convention for transparent inputs everywhere."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def to_uint8(x):
    """Tensor in [-1, 1] -> uint8 tensor (same shape, on the CPU), as the images are saved."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to("cpu").byte()


def to_pil(x) -> list[Image.Image]:
    """(B, 3, H, W) or (B, 1, H, W) tensor in [-1, 1] -> list of RGB or grayscale ("L") PIL images."""
    arr = to_uint8(x).permute(0, 2, 3, 1).numpy()
    if arr.shape[-1] == 1:
        return [Image.fromarray(a[..., 0], "L") for a in arr]
    return [Image.fromarray(a, "RGB") for a in arr]


def save_png(image: Image.Image, path: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """Write a PNG atomically; ``metadata`` goes into a ``wordpaint`` text chunk as JSON."""
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    if metadata:
        info.add_text("wordpaint", json.dumps(metadata, sort_keys=True))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return path


def read_png_metadata(path: str | os.PathLike) -> dict:
    with Image.open(path) as im:
        raw = im.text.get("wordpaint") if hasattr(im, "text") else None
    return json.loads(raw) if raw else {}


def make_grid(images: list[Image.Image], *, cols: int, scale: int = 1, pad: int = 2, marks: list[bool | None] | None = None) -> Image.Image:
    """Tile images into a grid (upscaled by ``scale``, nearest); ``marks`` draws a green (pass) or
    red (fail) bar under each image."""
    if not images:
        raise ValueError("make_grid needs at least one image")
    w, h = images[0].size
    w, h = w * scale, h * scale
    bar = 4 if marks is not None else 0
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + bar + pad) + pad), (40, 40, 40))
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        x, y = pad + c * (w + pad), pad + r * (h + bar + pad)
        grid.paste(im.resize((w, h), Image.NEAREST), (x, y))
        if marks is not None and marks[i] is not None:
            colour = (40, 200, 60) if marks[i] else (220, 40, 40)
            grid.paste(Image.new("RGB", (w, bar), colour), (x, y + h))
    return grid


def pil_to_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@lru_cache(maxsize=None)
def label_font(size: int = 10):
    """A font for labels on pictures: DejaVu Sans where the system has it (PIL's built-in default
    runs letters together at 10 px: "noto style" reads "notostyle"), else PIL's default."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size)


def draw_boxes(image: Image.Image, boxes: list[tuple[str, tuple[float, float, float, float]]], *, scale: int = 4) -> Image.Image:
    """``image`` enlarged ``scale`` times with labelled boxes (label, (x0, y0, x1, y1) in 0..1) on
    top: how a scene plan lines up with what was drawn."""
    from PIL import ImageDraw

    big = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(big)
    for k, (label, (x0, y0, x1, y1)) in enumerate(boxes):
        colour = ((255, 64, 64), (64, 160, 255), (64, 200, 64), (255, 160, 0))[k % 4]
        r = [x0 * big.width, y0 * big.height, x1 * big.width - 1, y1 * big.height - 1]
        draw.rectangle(r, outline=colour, width=max(1, scale // 2))
        draw.text((r[0] + 2, max(0, r[1] - 11)), label, fill=colour, font=label_font())
    return big
