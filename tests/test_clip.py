"""wordpaint-clip: the contrastive loss, save/load, CLIP-score through torchmetrics, zero-shot
classification, retrieval metrics, and the image-folder reader it trains from."""

import json

import pytest
import torch
from PIL import Image

from wordpaint.data.imagefolder import SkippedFileWarning, load_imagefolder
from wordpaint.errors import ModelLoadError, WordpaintError
from wordpaint.models.clip import ClipConfig, ClipModel, WordpaintClip
from wordpaint.training.clip import Corpus, evaluate_clip, recall_at
from helpers import fit

TINY = ClipConfig(hidden_dim=32, embed_dim=16, dropout=0.0)


def test_loss_falls_when_pairs_are_learnable():
    torch.manual_seed(0)
    n = 64
    img, txt = torch.randn(n, 1280), torch.randn(n, 384)
    model = ClipModel(TINY)
    batch = {"image_features": img, "text_features": txt}
    first, last = fit(model, lambda step: model(batch), steps=150)
    assert last < 0.2 * first
    # a caption repeated in the batch is a positive for every image that has it (soft targets)
    ids = torch.tensor([0, 0, 1, 2])
    b = {"image_features": img[:4], "text_features": txt[[0, 0, 1, 2]], "text_ids": ids}
    with torch.no_grad():
        logits = model.logit_scale.exp() * model.embed_image_features(b["image_features"]) @ model.embed_text_features(b["text_features"]).T
        target = torch.tensor([[.5, .5, 0, 0], [.5, .5, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        want = (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.T.log_softmax(1)).sum(1).mean()) / 2
        assert model(b).item() == pytest.approx(want.item(), rel=1e-5)


def test_recall_at():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.1, 0.2, 0.3]])
    r = recall_at(sim, ks=(1, 2))
    assert r == {"recall@1": pytest.approx(2 / 3), "recall@2": 1.0}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "model"
    WordpaintClip(ClipModel(TINY)).save_pretrained(path)
    return WordpaintClip.from_pretrained(path)


def test_retrieval_is_reported_per_kind(clip):
    # emoji held-out cells and icon test names are separate retrieval sets; training rows are in neither
    rows = ([{"kind": "emoji", "split": "heldout"}] * 3 + [{"kind": "icon", "split": "test"}] * 5
            + [{"kind": "emoji", "split": "train"}, {"kind": "icon", "split": "train"}])
    caps = [[f"caption {i}"] for i in range(len(rows))]
    c = Corpus("emoji", [None] * len(rows), caps, [r["split"] for r in rows], rows)
    res = evaluate_clip(clip, [c], {"emoji": torch.randn(len(rows), 1280)})
    assert res["retrieval_heldout"]["pairs"] == 3 and res["retrieval_icons_test"]["pairs"] == 5
    assert 0 <= res["retrieval_icons_test"]["image_to_text"]["recall@1"] <= 1


def test_round_trip_and_scores(clip, tmp_path):
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    s = clip.score(x, ["a red apple", "a fox"])
    assert s.shape == (2,) and (s.abs() <= 100).all()
    clip.save_pretrained(tmp_path / "again")
    again = WordpaintClip.from_pretrained(tmp_path / "again", text_encoder=clip.text_encoder)
    assert torch.equal(again.score(x, ["a red apple", "a fox"]), s)
    # torchmetrics' CLIPScore, fed by wordpaint-clip, gives the mean of the same scores
    metric = clip.clip_score_metric()
    metric.update(list(x), ["a red apple", "a fox"])
    assert metric.compute().item() == pytest.approx(max(s.mean().item(), 0.0), abs=1e-3)
    probs = clip.classify(x, ["apple", "fox", "cat"])
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(1), torch.ones(2))


def test_bad_input(clip, tmp_path):
    with pytest.raises(ModelLoadError, match="no wordpaint-clip model"):
        WordpaintClip.from_pretrained(tmp_path / "nothing")
    with pytest.raises(WordpaintError, match="one text per image"):
        clip.score(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), ["only one"])
    with pytest.raises(WordpaintError, match="at least one label"):
        clip.classify(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), [])


def test_imagefolder_skips_bad_lines_and_files_by_name(tmp_path):
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "a.png")  # fully transparent -> white
    (tmp_path / "b.png").write_bytes(b"not a png")
    lines = [{"file_name": "a.png", "text": "a thing"}, {"file_name": "b.png", "text": "broken"},
             {"file_name": "a.png"}, {"file_name": "a.png", "text": "x", "split": "heldout"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\nnot json\n")
    with pytest.warns(SkippedFileWarning) as rec:
        rows, images, skipped = load_imagefolder(tmp_path, size=16, splits=("train",))
    assert [r["text"] for r in rows] == ["a thing"]
    assert images[0].shape == (3, 16, 16) and images[0].min() == 255
    reasons = " | ".join(f"{s['file']}: {s['reason']}" for s in skipped)
    assert "b.png: unreadable image" in reasons and "no text for a.png" in reasons and ":5: not JSON" in reasons
    assert len(rec) == 3
    with pytest.raises(WordpaintError, match="no metadata.jsonl"):
        load_imagefolder(tmp_path / "missing")


def test_concept_accuracy_top1_and_top5_from_ranks():
    from wordpaint.training.clip import concept_style_accuracy

    vocab = [f"c{j}" for j in range(8)]
    names = {c: f"thing {c}" for c in vocab}

    class OneHotClip:  # concept j's text embedding is the j-th unit vector, in every style
        def embed_texts(self, texts):
            return torch.eye(8)[[int(t.split()[1][1:]) for t in texts]]

    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])  # concept j ranks j-th
    images = torch.stack([scores, scores, scores])
    acc = concept_style_accuracy(OneHotClip(), images, ["c0", "c3", "c6"], ["noto"] * 3, vocab, names)
    # c0 ranks first (top-1 and top-5), c3 fourth (top-5 only), c6 seventh (neither)
    assert acc["concept_accuracy"] == pytest.approx(1 / 3) and acc["concept_top5_accuracy"] == pytest.approx(2 / 3)
    # every style's caption embeds alike here, so the judge takes every picture for the first style
    assert acc["style_accuracy"] == 1.0 and acc["style_confusion"] == {"noto": {"noto": 3, "twemoji": 0, "openmoji": 0}}
    acc = concept_style_accuracy(OneHotClip(), images, ["c0", "c3", "c6"], ["twemoji", "twemoji", "noto"], vocab, names)
    assert acc["style_accuracy"] == pytest.approx(1 / 3)
    assert acc["style_confusion"] == {"noto": {"noto": 1, "twemoji": 0, "openmoji": 0}, "twemoji": {"noto": 2, "twemoji": 0, "openmoji": 0}}
    assert "judged_styles" not in acc  # per image only when asked (training logs keep the counts)
    per = concept_style_accuracy(OneHotClip(), images, ["c0", "c3", "c6"], ["twemoji", "twemoji", "noto"], vocab, names, per_image=True)
    assert per["judged_styles"] == ["noto"] * 3 and per["style_confusion"] == acc["style_confusion"]


def test_soften_blurs_deterministically():
    from wordpaint.training.clip import soften

    torch.manual_seed(0)
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    img[:, ::2] = 255  # stripes one pixel wide: all high frequency
    a, b = soften([img, img], seed=3), soften([img, img], seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # same seed, same copies
    assert not torch.equal(soften([img], seed=4)[0], a[0])  # another seed, another blur and noise
    assert a[0].shape == img.shape and a[0].dtype == torch.uint8
    # a blur of at least 0.5 px flattens one-pixel stripes: row-to-row contrast falls well below 255
    contrast = (a[0][:, 1:].float() - a[0][:, :-1].float()).abs().mean()
    assert contrast < 0.5 * 255
    # no noise and no blur range: the image comes back unchanged
    assert torch.equal(soften([img], seed=0, blur=(0.0, 0.0), noise=0.0)[0], img)


def test_train_with_softened_copies(tmp_path):
    from wordpaint.training.clip import train_clip

    with pytest.raises(WordpaintError, match="augment must be a whole number"):
        train_clip(tmp_path / "bad", emoji_dir=None, shapes=8, fashion=0, fashion_test=0, augment=-1)
    m = train_clip(tmp_path / "run", emoji_dir=None, shapes=16, fashion=0, fashion_test=0, epochs=2, batch_size=8,
                   augment=1, config=TINY, log=lambda *a: None)
    assert m["training"]["augment"] == 1 and m["training"]["images"] == 16
    cached = sorted((tmp_path / "run" / "cache").glob("shapes-*.safetensors"))
    assert len(cached) == 2  # the pictures as they are and one softened copy, cached apart
    from wordpaint.io import load_safetensors

    plain, soft = (load_safetensors(p)["features"] for p in cached)
    assert plain.shape == soft.shape == (16, 1280) and not torch.allclose(plain, soft)


def test_clip_eval_cli_reports_sharp_and_blurred_real_cells(clip, tmp_path, capsys):
    from wordpaint.cli.main import main

    # a four-picture emoji folder: two held-out cells and two seen cells of evaluation concepts
    cells = [("1F004", "mahjong red dragon", "noto", "heldout"), ("1F305", "sunrise", "twemoji", "heldout"),
             ("1F004", "mahjong red dragon", "openmoji", "train"), ("1F305", "sunrise", "noto", "train")]
    lines = []
    for i, (concept, name, style, split) in enumerate(cells):
        Image.new("RGB", (64, 64), (40 * i, 200, 255 - 40 * i)).save(tmp_path / f"{i}.png")
        lines.append({"file_name": f"{i}.png", "text": f"{name} in {style} style", "name": name, "style": style,
                      "kind": "emoji", "concept": concept, "split": split})
    (tmp_path / "metadata.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    model = tmp_path / "clip"
    clip.save_pretrained(model)
    assert main(["clip", "eval", "--model", str(model), "--data", str(tmp_path), "--fashion-test", "0", "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["retrieval_heldout"]["pairs"] == 2
    for key in ("real_heldout_cells", "real_heldout_cells_blur1px", "real_seen_cells", "real_seen_cells_blur1px"):
        assert metrics[key]["images"] == 2 and 0 <= metrics[key]["style_accuracy"] <= 1
    capsys.readouterr()
    assert main(["clip", "eval", "--model", str(model), "--fashion-test", "0", "--out", str(tmp_path / "none")]) != 0
    assert "no data" in capsys.readouterr().err
