"""Fashion-MNIST: loader, stream, a tiny text-conditioned training run, and the CAS classifier."""

import numpy as np
import pytest
import torch

from wordpaint.errors import WordpaintError


@pytest.fixture(scope="module")
def fm():
    from wordpaint.data.fashion_mnist import load_fashion_mnist

    try:
        return load_fashion_mnist("train"), load_fashion_mnist("test")
    except WordpaintError as e:
        pytest.skip(str(e))  # CI installs dataset-fashion-mnist


def test_loader_shapes_and_missing_folder(fm, tmp_path):
    from wordpaint.data.fashion_mnist import load_fashion_mnist

    (xtr, ytr), (xte, yte) = fm
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28) and xtr.dtype == np.uint8
    assert sorted(np.bincount(yte)) == [1000] * 10
    with pytest.raises(WordpaintError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("test", root=tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(WordpaintError, match="t10k-images"):
        load_fashion_mnist("test", root=tmp_path)


def test_model_frame_round_trip(fm):
    from wordpaint.data.fashion_mnist import from_model_images, to_model_images
    from wordpaint.images import to_pil

    (xtr, _), _ = fm
    x = to_model_images(xtr[:5])  # (5, 1, 32, 32) in [-1, 1], black border
    assert x.shape == (5, 1, 32, 32) and (x[:, :, :2] == -1).all()
    assert (from_model_images(to_pil(x)).numpy() == xtr[:5]).all()


def test_stream_is_a_pure_function_of_step(fm):
    from wordpaint.data.fashion_mnist import FashionMNISTStream

    s = FashionMNISTStream(seed=3, cond_drop_prob=0.1)
    x1, c1 = s.batch(5, 8)
    x2, c2 = FashionMNISTStream(seed=3, cond_drop_prob=0.1).batch(5, 8)
    assert torch.equal(x1, x2) and c1 == c2
    assert x1.shape == (8, 1, 32, 32) and x1.min() >= -1 and x1.max() <= 1
    assert (x1[:, :, :2] == -1).all()  # black padding rows
    assert any(c.endswith(("T-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")) for c in c1)


def test_tiny_text_conditioned_training_run(fm, tmp_path):
    from wordpaint import TextToImagePipeline
    from wordpaint.training.train import train

    out = train("tiny_fashion", tmp_path / "run", show_progress=False)
    pipe = TextToImagePipeline.from_pretrained(out)
    img = pipe("a photo of a bag", num_inference_steps=2, seed=0).images[0]
    assert img.mode == "L" and img.size == (32, 32)


def test_cas_classifier_learns_real_data(fm):
    from wordpaint.eval.cas import CASConfig, accuracy, train_classifier
    from wordpaint.data.fashion_mnist import to_model_images

    (xtr, ytr), (xte, yte) = fm
    cfg = CASConfig(epochs=2, batch_size=64)
    model = train_classifier(to_model_images(xtr[:1500]), torch.from_numpy(ytr[:1500]), config=cfg)
    acc = accuracy(model, to_model_images(xte[:1000]), torch.from_numpy(yte[:1000]))
    assert acc > 0.45  # chance is 0.1; 48 optimizer steps only
    # labels shuffled: nothing to learn, accuracy near chance
    shuffled = torch.from_numpy(np.random.default_rng(0).permutation(ytr[:1500]))
    bad = accuracy(train_classifier(to_model_images(xtr[:1500]), shuffled, config=cfg), to_model_images(xte[:1000]), torch.from_numpy(yte[:1000]))
    assert bad < 0.3


def test_cas_bad_input():
    from wordpaint.eval.cas import train_classifier

    with pytest.raises(WordpaintError, match="NaN"):
        train_classifier(torch.full((4, 1, 8, 8), float("nan")), torch.zeros(4, dtype=torch.long))
    with pytest.raises(WordpaintError, match="labels"):
        train_classifier(torch.zeros(4, 1, 8, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(WordpaintError, match="square"):
        train_classifier(torch.zeros(4, 1, 8, 12), torch.zeros(4, dtype=torch.long))
    from wordpaint.eval.cas import classification_accuracy_score

    with pytest.raises(WordpaintError, match=r"real test images are \(1, 28, 28\)"):
        z = lambda *s: torch.zeros(*s)  # noqa: E731
        classification_accuracy_score(z(4, 1, 32, 32), z(4).long(), z(4, 1, 32, 32), z(4).long(), z(4, 1, 28, 28), z(4).long())


def test_eval_report_fashion_suite(fm, tmp_path, capsys):
    """The whole suite end to end on a tiny model and tiny sizes: every figure is written."""
    import json

    from wordpaint.cli.main import main
    from wordpaint.training.train import train

    model = train("tiny_fashion", tmp_path / "run", show_progress=False)
    code = main(["eval", "report", "--model", str(model), "--suite", "fashion", "--out", str(tmp_path / "rep"),
                 "--n-per-class", "3", "--n-real", "40", "--cas-epochs", "1", "--steps", "2"])
    assert code == 0
    res = json.loads((tmp_path / "rep" / "results.json").read_text())
    g, f = res["figures"]["generated_vs_test"], res["figures"]["real_train_vs_test_floor"]
    assert g["FID (EfficientNet-Lite0)"] > f["FID (EfficientNet-Lite0)"] > 0  # an untrained model is far from the floor
    assert 0 <= res["cas"]["CAS"] <= 1 and res["versions"]["torch"]
    assert (tmp_path / "rep" / "samples.png").is_file() and "CAS" in (tmp_path / "rep" / "summary.md").read_text()
    assert any("2000" in w for w in res["warnings"])  # too few samples for FID: said in the report
    code = main(["eval", "report", "--model", str(model), "--suite", "nope", "--out", str(tmp_path / "x")])
    assert code == 2


def test_bundled_fashion_model_draws_the_class_it_is_asked_for(fm):
    """Each of four prompted classes lies nearer (pixel L2) to its own real class mean than to the
    other three; the model's defaults (16 steps, guidance 1, chosen on a dev split) are read back."""
    from wordpaint import TextToImagePipeline
    from wordpaint.data.fashion_mnist import caption, from_model_images

    (xtr, ytr), _ = fm
    pipe = TextToImagePipeline.from_pretrained("fashion")
    assert pipe.defaults["num_inference_steps"] == 16 and pipe.defaults["guidance_scale"] == 1.0
    classes = [1, 5, 8, 9]  # trouser, sandal, bag, ankle boot
    out = pipe([caption(c) for c in classes], num_images_per_prompt=2, num_inference_steps=8, seed=0)
    gen = from_model_images(out.images).float().reshape(len(classes), 2, -1).mean(1)  # (4, 784)
    means = torch.stack([torch.from_numpy(xtr[ytr == c][:500]).float().mean(0).flatten() for c in classes])
    assert torch.cdist(gen, means).argmin(1).tolist() == [0, 1, 2, 3]
