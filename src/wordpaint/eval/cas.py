"""Classification Accuracy Score (Ravuri & Vinyals 2019): train a fixed small CNN only on
generated images (labelled by the class each was prompted with), test it on real test images.
The same CNN trained on real images of the same number gives the reference.

The CNN and its training schedule are fixed here, so CAS figures are comparable across models.
The head was chosen on real data only, before any generated image was classified: trained on
10,000 real Fashion-MNIST training images and validated on training images 50,000-60,000, the
global-average-pooled head reached 0.873 and the flattened head of :class:`SmallCNN` 0.902 (the
90-92% usually quoted for a small CNN), so the flattened head is the one used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from wordpaint.errors import WordpaintError


@dataclass(frozen=True)
class CASConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    seed: int = 0


class SmallCNN(torch.nn.Module):
    """(B, C, S, S) in [-1, 1] -> (B, classes) logits: two conv blocks (S -> S/4) and a two-layer
    head over the flattened (64, S/4, S/4) map (~0.55M parameters at S = 32)."""

    def __init__(self, classes: int = 10, channels: int = 1, size: int = 32):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
            torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
            torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        )
        # flattened rather than globally pooled: where the garment's mass sits (sleeves, heel,
        # strap) is what separates shirt from T-shirt or sandal from sneaker
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.3), torch.nn.Linear(64 * (size // 4) ** 2, 128),
                                        torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _check(images: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise WordpaintError(f"{what}: images must be a (N, C, H, W) tensor")
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        raise WordpaintError(f"{what}: labels must be a (N,) tensor matching the images")
    if images.shape[0] == 0:
        raise WordpaintError(f"{what}: no images")
    if not torch.isfinite(images).all():
        raise WordpaintError(f"{what}: images contain NaN or inf")


def train_classifier(images: torch.Tensor, labels: torch.Tensor, *, classes: int = 10, config: CASConfig = CASConfig(),
                     show_progress: bool = False) -> SmallCNN:
    """Train :class:`SmallCNN` on (N, C, H, W) images in [-1, 1] with integer labels."""
    from tqdm.auto import trange

    _check(images, labels, "classifier training set")
    if images.shape[-2] != images.shape[-1] or images.shape[-1] % 4:
        raise WordpaintError(f"classifier training set: images must be square with a side divisible by 4, got {tuple(images.shape[-2:])}")
    g = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # init and dropout
    model = SmallCNN(classes, images.shape[1], images.shape[-1])
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = images.shape[0]
    steps = config.epochs * ((n + config.batch_size - 1) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
    model.train()
    for _ in trange(config.epochs, disable=not show_progress, desc="CAS classifier", leave=False):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, config.batch_size):
            idx = perm[s : s + config.batch_size]
            x = images[idx]
            # light augmentation: random 2-px shifts (fixed by the seed)
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 512) -> float:
    _check(images, labels, "test set")
    model.eval()
    correct = 0
    for s in range(0, images.shape[0], batch_size):
        correct += int((model(images[s : s + batch_size]).argmax(1) == labels[s : s + batch_size]).sum())
    return correct / images.shape[0]


def classification_accuracy_score(generated: torch.Tensor, generated_labels: torch.Tensor, real_train: torch.Tensor,
                                  real_train_labels: torch.Tensor, real_test: torch.Tensor, real_test_labels: torch.Tensor, *,
                                  config: CASConfig = CASConfig(), show_progress: bool = False) -> dict:
    """CAS (trained on generated) next to the same CNN trained on as many real images, both
    tested on the real test set."""
    n = generated.shape[0]
    for what, imgs in {"real training images": real_train, "real test images": real_test}.items():
        if isinstance(imgs, torch.Tensor) and isinstance(generated, torch.Tensor) and imgs.shape[1:] != generated.shape[1:]:
            raise WordpaintError(f"{what} are {tuple(imgs.shape[1:])} but the generated images are {tuple(generated.shape[1:])}: "
                                 "bring them to one size and channel count first")
    if real_train.shape[0] < n:
        raise WordpaintError(f"need at least {n} real training images for the reference, got {real_train.shape[0]}")
    cas = accuracy(train_classifier(generated, generated_labels, config=config, show_progress=show_progress), real_test, real_test_labels)
    ref = accuracy(train_classifier(real_train[:n], real_train_labels[:n], config=config, show_progress=show_progress), real_test, real_test_labels)
    return {"CAS": cas, "real_data_accuracy": ref, "n_train": n, "n_test": int(real_test.shape[0]), "classifier": "SmallCNN", **asdict(config)}
