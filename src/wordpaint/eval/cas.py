"""Classification Accuracy Score (Ravuri & Vinyals 2019): train a fixed small CNN only on
generated images (labelled by the class each was prompted with), test it on real test images.
The same CNN trained on real images of the same number gives the reference.

The CNN and its training schedule are fixed here, so CAS figures are comparable across models.
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
    """(B, 1, H, W) in [-1, 1] -> (B, classes) logits: two conv blocks and a linear head (~0.1M parameters)."""

    def __init__(self, classes: int = 10, channels: int = 1):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
            torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
            torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        )
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Dropout(0.2), torch.nn.Linear(64, classes))

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
    g = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # init and dropout
    model = SmallCNN(classes, images.shape[1])
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
    if real_train.shape[0] < n:
        raise WordpaintError(f"need at least {n} real training images for the reference, got {real_train.shape[0]}")
    cas = accuracy(train_classifier(generated, generated_labels, config=config, show_progress=show_progress), real_test, real_test_labels)
    ref = accuracy(train_classifier(real_train[:n], real_train_labels[:n], config=config, show_progress=show_progress), real_test, real_test_labels)
    return {"CAS": cas, "real_data_accuracy": ref, "n_train": n, "n_test": int(real_test.shape[0]), "classifier": "SmallCNN", **asdict(config)}
