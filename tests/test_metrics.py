"""Metrics: parity with an independent numpy/scipy reference, a sanity ladder on real images,
and the documented input conversions and errors."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from wordpaint.errors import WordpaintError
from wordpaint.eval import metrics as M


# -- independent reference (numpy / scipy only) ---------------------------------------------------
def ref_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def ref_kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018)."""
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    m, n = len(a), len(b)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


@pytest.fixture(scope="module")
def feats():
    rng = np.random.default_rng(0)
    d = 32
    a = rng.normal(size=(400, d)) @ rng.normal(size=(d, d)) * 0.3 + 1.0
    b = rng.normal(size=(350, d)) @ rng.normal(size=(d, d)) * 0.35 + 1.2
    return a, b


def test_fid_matches_scipy_reference(feats):
    a, b = feats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.FewSamplesWarning)
        ours = M.fid_from_features(torch.from_numpy(a), torch.from_numpy(b))
    ref = ref_fid(a, b)
    assert ref > 1.0
    assert abs(ours - ref) / ref < 1e-6


def test_kid_matches_numpy_reference(feats):
    a, b = feats
    # one subset holding every sample = the exact unbiased estimate
    a = a[: len(b)]  # equal sizes: the single subset then holds every sample of both sets
    mean, _ = M.kid_from_features(torch.from_numpy(a), torch.from_numpy(b), subsets=1, subset_size=10_000)
    ref = ref_kid(a, b)
    assert abs(mean - ref) / abs(ref) < 1e-6


def test_fid_of_a_set_with_itself_is_zero_and_warns_on_few_samples(feats):
    a, _ = feats
    with pytest.warns(M.FewSamplesWarning, match="2000"):
        v = M.fid_from_features(torch.from_numpy(a), torch.from_numpy(a))
    assert abs(v) < 1e-6


def test_precision_recall_extremes():
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.normal(size=(200, 8)))
    far = a + 100.0
    assert M.precision_recall_from_features(a, a.clone()) == (1.0, 1.0)
    assert M.precision_recall_from_features(a, far) == (0.0, 0.0)
    # a generated set collapsed onto a few real points: precise, but poor recall
    collapsed = a[:5].repeat(40, 1) + 1e-6
    p, r = M.precision_recall_from_features(a, collapsed)
    assert p == 1.0 and r < 0.2


def test_inception_style_score_bounds():
    uniform = torch.zeros(100, 10)
    assert M.inception_style_score(uniform, splits=2)[0] == pytest.approx(1.0)
    confident = torch.eye(10).repeat(10, 1) * 50  # each class equally often, each image certain
    assert M.inception_style_score(confident, splits=2)[0] == pytest.approx(10.0, rel=1e-3)


def test_diversity_is_zero_for_copies_and_grows_with_spread():
    g = torch.ones(4, 6)
    assert M.diversity_from_features([g]) == 0.0
    assert M.diversity_from_features([torch.eye(6) * 2]) > M.diversity_from_features([torch.eye(6)])


def test_psnr_ssim():
    a = torch.rand(2, 3, 16, 16)
    assert M.ssim(a, a) == pytest.approx(1.0)
    noisy = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    assert 10 < M.psnr(a, noisy) < 30
    with pytest.raises(WordpaintError, match="differs in size"):
        M.psnr([a[0]], [torch.rand(3, 8, 8)])


# -- inputs --------------------------------------------------------------------------------------
def test_input_conversions_are_documented_ones():
    gray = Image.fromarray(np.full((10, 12), 77, np.uint8), mode="L")
    rgba = Image.new("RGBA", (5, 5), (255, 0, 0, 0))  # fully transparent -> white
    out = M.to_uint8_images([gray, rgba, torch.full((1, 4, 4), 0.5)])
    assert out[0].shape == (3, 10, 12) and int(out[0].min()) == int(out[0].max()) == 77
    assert out[1].min().item() == 255
    assert out[2].shape == (3, 4, 4) and out[2][0, 0, 0].item() == 128


@pytest.mark.parametrize(
    "bad, match",
    [
        ([], "no images"),
        ([torch.full((3, 4, 4), float("nan"))], "NaN"),
        ([torch.full((3, 4, 4), 2.0)], r"\[0, 1\]"),
        ([torch.zeros(4, 4, 4)], "C = 1 or 3"),
        ("a.png", "list"),
    ],
)
def test_bad_images_are_clear_errors(bad, match):
    with pytest.raises(WordpaintError, match=match):
        M.to_uint8_images(bad)


def test_bad_features_are_clear_errors():
    with pytest.raises(WordpaintError, match="at least 2"):
        M.fid_from_features(torch.zeros(1, 4), torch.zeros(5, 4))
    with pytest.raises(WordpaintError, match="same D"):
        M.kid_from_features(torch.zeros(5, 4), torch.zeros(5, 3))
    with pytest.raises(WordpaintError, match="NaN"):
        M.fid_from_features(torch.full((5, 4), float("nan")), torch.zeros(5, 4))


def test_empty_image_folder(tmp_path):
    with pytest.raises(WordpaintError, match="no .png"):
        M.load_image_folder(tmp_path)
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(WordpaintError, match="x.png"):
        M.load_image_folder(tmp_path)


# -- sanity ladder on real images ------------------------------------------------------------------
@pytest.fixture(scope="module")
def fmnist():
    from wordpaint.data.fashion_mnist import load_fashion_mnist

    try:
        xtr, ytr = load_fashion_mnist("train")
        xte, yte = load_fashion_mnist("test")
    except WordpaintError as e:
        pytest.skip(str(e))  # CI installs dataset-fashion-mnist; this only skips on a bare dev box
    return xtr, ytr, xte, yte


def _as_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.copy()).unsqueeze(1).float() / 255  # (N, 1, 28, 28) in [0, 1]


def test_sanity_ladder_is_monotone(fmnist):
    """Real-vs-real is the floor; stronger noise, stronger blur and more class collapse each
    raise FID and KID (EfficientNet-Lite0 features)."""
    xtr, ytr, xte, yte = fmnist
    n = 160
    rng = np.random.default_rng(0)
    real = _as_tensor(xtr[rng.choice(len(xtr), n, replace=False)])
    test = _as_tensor(xte[:n])
    g = torch.Generator().manual_seed(0)

    def noisy(s):
        return (test + s * torch.randn(test.shape, generator=g)).clamp(0, 1)

    def blurred(k):
        return torch.nn.functional.avg_pool2d(test, k, stride=1, padding=k // 2, count_include_pad=False)

    def collapsed(frac):
        # replace a fraction of the images by copies of one class (ankle boots)
        boots = _as_tensor(xte[yte == 9][:n])
        m = int(frac * n)
        return torch.cat([boots[:m], test[m:]])

    fr, _ = M.extract(real)
    ft, _ = M.extract(test)
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.FewSamplesWarning)
        for name, ladder in {"noise": [noisy(s) for s in (0.1, 0.4)], "blur": [blurred(k) for k in (3, 9)],
                             "collapse": [collapsed(f) for f in (0.5, 0.95)]}.items():
            steps = [ft] + [M.extract(x)[0] for x in ladder]
            fids = [M.fid_from_features(fr, f) for f in steps]
            kids = [M.kid_from_features(fr, f, subsets=20, subset_size=200)[0] for f in steps]
            scores[name] = (fids, kids)
            assert all(a < b for a, b in zip(fids, fids[1:])), (name, fids)
            assert all(a < b for a, b in zip(kids, kids[1:])), (name, kids)


def test_pixel_nearest_finds_the_closest_picture_and_resizes_to_the_references():
    from wordpaint.eval.metrics import pixel_nearest

    g = torch.Generator().manual_seed(0)
    refs = [torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=g) for _ in range(5)]
    noisy = [(r.float() + 20 * torch.randn(r.shape, generator=g)).clamp(0, 255).byte() for r in refs[::-1]]
    assert pixel_nearest(noisy, refs).tolist() == [4, 3, 2, 1, 0]
    # a flat picture at twice the size is resized first, and finds the flat reference
    flat = [torch.full((3, 16, 16), v, dtype=torch.uint8) for v in (0, 128, 255)]
    assert pixel_nearest([torch.full((3, 32, 32), 120, dtype=torch.uint8)], flat).tolist() == [1]
    with pytest.raises(WordpaintError, match="must share one size"):
        pixel_nearest(flat[:1], [flat[0], torch.zeros(3, 8, 8, dtype=torch.uint8)])


def test_cached_feature_maps_are_kept_read_back_bit_for_bit_and_keyed_by_the_pixels(tmp_path, monkeypatch):
    monkeypatch.setenv("WORDPAINT_CACHE", str(tmp_path / "cache"))
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=g) for _ in range(3)]
    first = M.cached_feature_maps(images, grid=2)
    assert first.dtype == torch.float16 and first.shape == (3, 1280, 2, 2)
    assert torch.equal(first, M.feature_maps(images, grid=2, dtype=torch.float16))
    (kept,) = (tmp_path / "cache" / "features").iterdir()

    def no_compute(*a, **k):
        raise AssertionError("computed again instead of reading the cache")

    monkeypatch.setattr(M, "feature_maps", no_compute)
    assert torch.equal(M.cached_feature_maps(images, grid=2), first)           # read back
    changed = [im.clone() for im in images]
    changed[1][0, 0, 0] ^= 1                                                    # one pixel differs: a new key
    with pytest.raises(AssertionError, match="computed again"):
        M.cached_feature_maps(changed, grid=2)
    with pytest.raises(AssertionError, match="computed again"):
        M.cached_feature_maps(images, grid=1)                                   # so does a setting
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "another ISA")
    with pytest.raises(AssertionError, match="computed again"):
        M.cached_feature_maps(images, grid=2)                                   # and another CPU's floats
    monkeypatch.undo()
    monkeypatch.setenv("WORDPAINT_CACHE", str(tmp_path / "cache"))
    kept.write_bytes(b"not safetensors")                                        # a corrupt entry is recomputed
    with pytest.warns(UserWarning, match="ignoring the cached"):
        again = M.cached_feature_maps(images, grid=2)
    assert torch.equal(again, first)
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("WORDPAINT_CACHE", str(blocked))                        # cannot hold a cache: warn, go on
    with pytest.warns(UserWarning, match="could not keep"):
        assert torch.equal(M.cached_feature_maps(images, grid=2), first)


def test_building_the_extractor_leaves_the_global_random_state_alone():
    """Otherwise a training run that computes features (REPA targets, image vectors) would draw its
    later random numbers differently from the same run reading them from the cache."""
    state = torch.random.get_rng_state()
    M.EfficientNetLite0Features()
    assert torch.equal(torch.random.get_rng_state(), state)
