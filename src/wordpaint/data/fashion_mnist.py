"""Fashion-MNIST (70k 28x28 grayscale images, 10 classes) from Debian's ``dataset-fashion-mnist``.

Read straight from the package's IDX files; nothing is downloaded. Captions name the class in
several phrasings ("a photo of an ankle boot", ...) for text-conditioned training.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from typing import TYPE_CHECKING

from wordpaint.data.stream import batch_indices
from wordpaint.errors import WordpaintError, check_choice

if TYPE_CHECKING:
    import torch

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
# the noun phrase used in captions, with its article
CLASS_PHRASES = ("a T-shirt", "a pair of trousers", "a pullover", "a dress", "a coat", "a sandal", "a shirt", "a sneaker",
                 "a bag", "an ankle boot")
TEMPLATES = ("a photo of {}", "{}", "a picture of {}", "a grayscale photo of {}", "a product photo of {}", "an image of {}")
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def _read_idx(path: Path, *, ndim: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise WordpaintError(f"cannot read {path}: {e}") from None
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim or len(data) < 4 + 4 * ndim:
        raise WordpaintError(f"{path} is not an IDX file of {ndim} dimensions (magic {magic:#x})")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise WordpaintError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {body.size}")
    return body.reshape(shape)


def load_fashion_mnist(split: str = "train", *, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) int64) of ``split`` ("train": 60k, "test": 10k)."""
    check_choice("split", split, _FILES)
    root = Path(root or os.environ.get("WORDPAINT_FASHION_MNIST", DEFAULT_DIR))
    img_name, lab_name = _FILES[split]
    if not (root / img_name).is_file():
        raise WordpaintError(
            f"Fashion-MNIST not found in {root}; install it with `apt-get install dataset-fashion-mnist` "
            "(or point WORDPAINT_FASHION_MNIST at a folder with the four IDX .gz files)"
        )
    images = _read_idx(root / img_name, ndim=3)
    labels = _read_idx(root / lab_name, ndim=1).astype(np.int64)
    if len(images) != len(labels):
        raise WordpaintError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def caption(label: int, rng: np.random.Generator | None = None) -> str:
    """A caption for class ``label``; ``rng`` picks a phrasing (None: the first, "a photo of ...")."""
    t = TEMPLATES[0] if rng is None else TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return t.format(CLASS_PHRASES[label])


PAD = 2  # 28 + 2 * 2 = 32: a size the UNet's down-sampling divides


def to_model_images(images: np.ndarray) -> "torch.Tensor":
    """(N, 28, 28) uint8 -> (N, 1, 32, 32) float in [-1, 1], zero (black) padded like the data's border."""
    import torch

    x = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True)).float().div(127.5).sub(1).unsqueeze(1)
    return torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD), value=-1.0)


def from_model_images(images: list) -> "torch.Tensor":
    """Generated 32 px PIL images -> (N, 28, 28) uint8 in the data's frame (the padding
    ``to_model_images`` adds is the data's black border, so it is cut off again)."""
    import torch

    x = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()) for im in images])
    return x[:, PAD:-PAD, PAD:-PAD]


class FashionMNISTStream:
    """Endless (image, caption) batches from the training split, in a fresh seeded order each
    epoch; batch ``step`` is a pure function of (seed, step), like the shapes stream."""

    def __init__(self, *, size: int = 32, seed: int = 0, split: str = "train", cond_drop_prob: float = 0.0):
        if size != 28 + 2 * PAD:
            raise WordpaintError(f"Fashion-MNIST images are {28 + 2 * PAD} px in training, got size {size}")
        self.images, self.labels = load_fashion_mnist(split)
        self.seed, self.cond_drop_prob = seed, cond_drop_prob
        self._perm: tuple[int, np.ndarray] | None = None

    def _index(self, i: int) -> int:
        n = len(self.labels)
        epoch = i // n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(n))
        return int(self._perm[1][i % n])

    def batch(self, step: int, batch_size: int, *, rank: int = 0, world_size: int = 1):
        indices = batch_indices(step, batch_size, rank=rank, world_size=world_size)
        idx = [self._index(i) for i in indices]
        captions = []
        for i, k in zip(indices, idx):
            rng = np.random.default_rng([self.seed, i, 1])
            captions.append("" if rng.random() < self.cond_drop_prob else caption(int(self.labels[k]), rng))
        return to_model_images(self.images[idx]), captions
